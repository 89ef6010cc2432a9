#!/usr/bin/env bash
# Build the hermetic toolchain from source (Go modules pinned by the wrapper modules in
# toolchain/*/go.mod + go.sum), once per machine, into
#   ~/.cache/sophia-toolchain/$TOOLCHAIN_VERSION/bin
# A piece whose binary exists and whose inputs (wrapper module + versions.env) are unchanged
# is reused ("cached"). Usage: toolchain/build.sh [piece ...]   (default: all pieces)
# Pieces: etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok
#         pulumi pulumi-language-python pulumi-resource-kubernetes
#         real node (pins in node.env): kubelet kube-proxy pause registry coredns traefik
#         kube-router metrics-server node-images
#         the local stack's trace pipeline (pins in tracing.env): jaeger otelcol tracing-images
#         monitoring (pins in monitoring.env): prometheus-operator prometheus alertmanager
#         kube-state-metrics monitoring-images
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=versions.env
source "$HERE/versions.env"
# shellcheck source=node.env
source "$HERE/node.env"
# shellcheck source=tracing.env
source "$HERE/tracing.env"
# shellcheck source=monitoring.env
source "$HERE/monitoring.env"
# shellcheck source=debian.env
source "$HERE/debian.env"
CACHE="${SOPHIA_TOOLCHAIN_CACHE:-$HOME/.cache/sophia-toolchain}/$TOOLCHAIN_VERSION"
BIN="$CACHE/bin" SRC="$CACHE/src" LOGS="$CACHE/logs"
mkdir -p "$BIN" "$SRC" "$LOGS"

command -v go >/dev/null || { echo "[toolchain] go is not installed" >&2; exit 1; }
# -mod=readonly: go.sum is committed; a build never edits or re-resolves the pins.
export GOFLAGS="-buildvcs=false -trimpath -mod=readonly"
export CGO_ENABLED="${CGO_ENABLED:-0}"
NICE=(nice -n "${TOOLCHAIN_NICE:-10}")

log() { echo "[toolchain] $*"; }

# Fingerprint of a piece's inputs: its wrapper module files, versions.env and this script's
# recipe for it.
fingerprint() {
  local dir="$1" piece="$2"
  {
    (cd "$HERE/$dir" && find . -type f \( -name '*.go' -o -name go.mod -o -name go.sum \) | LC_ALL=C sort | xargs sha256sum)
    # Contents only, never paths: a clone elsewhere (a git worktree) reuses the same cache.
    sha256sum <"$HERE/versions.env"
    declare -f "recipe_${piece//-/_}"
    # The real node's pieces also depend on node.env (empty for the control plane's pieces).
    local extra
    for extra in ${FP_EXTRA:-}; do sha256sum <"$extra"; done
  } | sha256sum | cut -c1-16
}

# step PIECE VERSION WRAPPER_DIR OUTPUT...
step() {
  local piece="$1" version="$2" dir="$3"; shift 3
  local stamp="$BIN/.stamp-$piece" fp out ok=1
  fp="$(fingerprint "$dir" "$piece")"
  for out in "$@"; do [ -x "$BIN/$out" ] || [ -f "$BIN/$out" ] || ok=0; done
  if [ "$ok" = 1 ] && [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$fp" ]; then
    log "$piece $version ... cached"
    return 0
  fi
  local gotc="GOTOOLCHAIN_${piece//-/_}"
  export GOTOOLCHAIN="${!gotc:-$GOTOOLCHAIN_DEFAULT}"
  local start=$SECONDS logf="$LOGS/$piece.log" cpu=("?" "?") TIMEFORMAT='%U %S'
  log "$piece $version ... building (GOTOOLCHAIN=$GOTOOLCHAIN, log $logf)"
  # CPU time (user + system, compiler processes included) beside the wall time: on a machine
  # shared with other work the wall time says little; the CPU time is what the piece costs.
  # (The redirection inside the subshell: on the timed command it would swallow time's report.)
  if ! { time (cd "$HERE/$dir" && "recipe_${piece//-/_}" >"$logf" 2>&1); } 2>"$LOGS/$piece.cpu"; then
    tail -n 30 "$logf" >&2
    log "$piece $version ... FAILED after $((SECONDS - start))s (see $logf)"
    return 1
  fi
  read -r -a cpu <"$LOGS/$piece.cpu" || true
  BUILT_CPU=$((BUILT_CPU + ${cpu[0]%.*} + ${cpu[1]%.*}))
  echo "$fp" >"$stamp"
  log "$piece $version ... built in $((SECONDS - start))s (CPU ${cpu[0]%.*}s user + ${cpu[1]%.*}s system)"
}

# gobuild OUT PKG [LDFLAGS]: build into a temp file, then move into place atomically.
gobuild() {
  local out="$1" pkg="$2" ldflags="${3:-}"
  "${NICE[@]}" go build -ldflags "-s -w $ldflags" -o "$BIN/.$out.tmp" "$pkg"
  mv -f "$BIN/.$out.tmp" "$BIN/$out"
}

# A module's source directory. `go list -m` leaves Dir empty until the module is in the module
# cache, which on a fresh machine it is not (nothing has compiled it yet): download it first.
moddir() {
  go mod download "$1" && go list -m -f '{{.Dir}}' "$1" | grep . || { echo "moddir: no source for $1" >&2; return 1; }
}

# ---------------------------------------------------------------- recipes
recipe_etcd() {
  go mod download
  gobuild etcd go.etcd.io/etcd/server/v3 "-X go.etcd.io/etcd/api/v3/version.GitSHA=v$ETCD_VERSION"
}

k8s_ldflags() {
  local v="v$K8S_VERSION" minor
  minor="$(echo "$K8S_VERSION" | cut -d. -f2)"
  local p
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    printf -- '-X %s.gitVersion=%s -X %s.gitMajor=1 -X %s.gitMinor=%s -X %s.gitTreeState=clean ' \
      "$p" "$v" "$p" "$p" "$minor" "$p"
  done
}
recipe_kube_apiserver() { gobuild kube-apiserver k8s.io/kubernetes/cmd/kube-apiserver "$(k8s_ldflags)"; }
recipe_kube_controller_manager() { gobuild kube-controller-manager k8s.io/kubernetes/cmd/kube-controller-manager "$(k8s_ldflags)"; }
recipe_kube_scheduler() { gobuild kube-scheduler k8s.io/kubernetes/cmd/kube-scheduler "$(k8s_ldflags)"; }

recipe_kubectl() { gobuild kubectl k8s.io/kubernetes/cmd/kubectl "$(k8s_ldflags)"; }

recipe_kwok() {
  gobuild kwok sigs.k8s.io/kwok/cmd/kwok "-X sigs.k8s.io/kwok/pkg/consts.Version=$KWOK_VERSION"
  # kwok needs Stage objects describing the simulated node/pod lifecycles; these are the
  # defaults kwokctl uses (nodes become Ready and heartbeat through leases, pods become
  # Running/Ready, complete and delete), shipped in the kwok module itself.
  local st
  st="$(moddir sigs.k8s.io/kwok)/kustomize/stage" || return 1
  mkdir -p "$CACHE/share/kwok"
  for f in node/fast/node-initialize.yaml node/heartbeat-with-lease/node-heartbeat-with-lease.yaml \
           pod/fast/pod-ready.yaml pod/fast/pod-complete.yaml pod/fast/pod-delete.yaml; do
    cat "$st/$f"; echo "---"
  done >"$CACHE/share/kwok/stages.yaml"
}

# CRDs the local stack applies so its Gateway API and Prometheus-operator objects are
# accepted (and schema-checked) by the API server, though no controller runs locally.
recipe_crds() {
  local gw po dest="$CACHE/share/crds"
  gw="$(go mod download -json sigs.k8s.io/gateway-api | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  po="$(go mod download -json github.com/prometheus-operator/prometheus-operator | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  mkdir -p "$dest"
  cp -f "$gw"/config/crd/standard/gateway.networking.k8s.io_{gatewayclasses,gateways,httproutes,referencegrants}.yaml "$dest/"
  cp -f "$po"/example/prometheus-operator-crd/monitoring.coreos.com_{servicemonitors,prometheusrules}.yaml "$dest/"
  chmod 0644 "$dest"/*.yaml
}

recipe_pulumi() {
  gobuild pulumi github.com/pulumi/pulumi/pkg/v3/cmd/pulumi \
    "-X github.com/pulumi/pulumi/sdk/v3/go/common/version.Version=v$PULUMI_VERSION"
}

recipe_pulumi_language_python() {
  gobuild pulumi-language-python ./cmd/pulumi-language-python "-X main.version=$PULUMI_VERSION"
  # The exec shim and the Python dynamic-provider plugin (`pulumi.dynamic` resources run in
  # `pulumi-resource-pulumi-python`) are scripts shipped in the sdk module at the same version.
  local sdk
  sdk="$(moddir github.com/pulumi/pulumi/sdk/v3)" || return 1
  install -m 0755 "$sdk/python/cmd/pulumi-language-python-exec" "$BIN/pulumi-language-python-exec"
  install -m 0755 "$sdk/python/dist/pulumi-resource-pulumi-python" "$BIN/pulumi-resource-pulumi-python"
}

recipe_pulumi_resource_kubernetes() {
  # The command's main package embeds files made by its generate step, so build a scratch
  # copy of this wrapper module holding a writable copy of the command.
  local scratch="$SRC/pulumi-kubernetes" cmd
  [ -x "$BIN/pulumi" ] || { echo "build the pulumi piece first (it registers the plugin)"; return 1; }
  cmd="$(moddir github.com/pulumi/pulumi-kubernetes/provider/v4)/cmd/pulumi-resource-kubernetes" || return 1
  rm -rf "$scratch" && mkdir -p "$scratch/cmd"
  cp go.mod go.sum tools.go "$scratch/"
  cp -r "$cmd" "$scratch/cmd/" && chmod -R u+w "$scratch"
  (cd "$scratch/cmd/pulumi-resource-kubernetes" && VERSION="$PULUMI_KUBERNETES_VERSION" "${NICE[@]}" go run ./generate.go)
  (cd "$scratch" && gobuild pulumi-resource-kubernetes ./cmd/pulumi-resource-kubernetes \
    "-X github.com/pulumi/pulumi-kubernetes/provider/v4/pkg/version.Version=$PULUMI_KUBERNETES_VERSION")
  # Also register it in the toolchain's plugin cache (PULUMI_HOME, see env.sh), so
  # `pulumi plugin ls` lists it and PULUMI_IGNORE_AMBIENT_PLUGINS=true runs use it.
  PULUMI_HOME="$CACHE/pulumi-home" PULUMI_SKIP_UPDATE_CHECK=true "$BIN/pulumi" plugin install resource kubernetes \
    "v$PULUMI_KUBERNETES_VERSION" --file "$BIN/pulumi-resource-kubernetes" --reinstall
}

# ---------------------------------------------------------------- the real node
# kubelet and kube-proxy: the wrapper module toolchain/node (k8s.io/kubernetes at K8S_VERSION).
recipe_kubelet() { gobuild kubelet k8s.io/kubernetes/cmd/kubelet "$(k8s_ldflags)"; }
recipe_kube_proxy() { gobuild kube-proxy k8s.io/kubernetes/cmd/kube-proxy "$(k8s_ldflags)"; }

# The sandbox ("pause") binary: upstream's C source from the same k8s.io/kubernetes module,
# static, as build/pause/Makefile does (no registry.k8s.io here to pull the image from).
recipe_pause() {
  local src
  src="$(moddir k8s.io/kubernetes)/build/pause/linux/pause.c" || return 1
  "${NICE[@]}" gcc -Os -Wall -Werror -static -DVERSION="v$PAUSE_VERSION-sophia" -o "$BIN/.pause.tmp" "$src"
  strip "$BIN/.pause.tmp" && mv -f "$BIN/.pause.tmp" "$BIN/pause"
}

# upstream_build OUT MODULE VERSION PKG [LDFLAGS]: build PKG inside the upstream module itself
# (its own go.mod, go.sum and in-module replaces), downloaded at VERSION into the module cache.
upstream_build() {
  local out="$1" mod="$2" ver="$3" pkg="$4" ldflags="${5:-}" dir
  dir="$(GOFLAGS=-mod=mod go mod download -json "$mod@v$ver" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  [ -n "$dir" ] || { echo "no source for $mod@v$ver"; return 1; }
  (cd "$dir" && gobuild "$out" "$pkg" "$ldflags")
}
# The local image registry: Debian's docker-registry (distribution 2.8), not compiled. It is
# local-only plumbing (dev and prod push to a cloud registry), so its version does not have to
# match anything. Fetched with apt-get download (checked against the signed archive like any
# install) and unpacked into the cache: installing the package would start a system service on :5000.
recipe_registry() {
  local tmp
  tmp="$(mktemp -d)" || return 1
  if ! (cd "$tmp" && apt-get download -q "docker-registry=$REGISTRY_DEBIAN_VERSION"); then
    echo "apt-get download docker-registry=$REGISTRY_DEBIAN_VERSION failed: REGISTRY_DEBIAN_VERSION in" \
      "toolchain/debian.env must be a version apt knows (apt-get update; apt-cache policy docker-registry)"
    rm -rf "$tmp"; return 1
  fi
  dpkg-deb -x "$tmp"/docker-registry_*.deb "$tmp/x" && install -m 0755 "$tmp/x/usr/bin/docker-registry" "$BIN/.registry.tmp" \
    && mv -f "$BIN/.registry.tmp" "$BIN/registry"
  local rc=$?
  rm -rf "$tmp"
  return $rc
}

# CoreDNS with the plugins the node's Corefile uses (node.sh: errors, health, ready, kubernetes,
# cache), the rest of kubeadm's default Corefile, log and metadata, selected the way upstream documents
# it: plugin.cfg, then `go generate`, in a scratch copy of the module. Upstream's full list adds the
# cloud DNS back-ends (Route 53, Azure, Cloud DNS and their SDKs), etcd, dnstap, geoip, sign, ...
recipe_coredns() {
  local keep="metadata reload ready health prometheus errors log loadbalance cache kubernetes loop forward"
  local scratch="$SRC/coredns" n
  rm -rf "$scratch" && cp -r "$(moddir_at "$COREDNS_MODULE" "v$COREDNS_VERSION")" "$scratch" && chmod -R u+w "$scratch" || return 1
  # Filtered, not rewritten: plugin.cfg's order is the order the plugins run in.
  awk -F: -v keep="$keep" 'BEGIN { n = split(keep, k, " "); for (i = 1; i <= n; i++) want[k[i]] = 1 }
    /^#/ || !NF { print; next } ($1 in want) { print }' "$scratch/plugin.cfg" >"$scratch/plugin.cfg.keep" || return 1
  n="$(grep -cv -e '^#' -e '^$' "$scratch/plugin.cfg.keep")"
  [ "$n" = "$(wc -w <<<"$keep")" ] || { echo "coredns: plugin.cfg has $n of the plugins: $keep"; return 1; }
  mv "$scratch/plugin.cfg.keep" "$scratch/plugin.cfg"
  (cd "$scratch" && "${NICE[@]}" go generate coredns.go \
    && gobuild coredns . "-X github.com/coredns/coredns/coremain.GitCommit=v$COREDNS_VERSION")
}
# Traefik, in a scratch copy of its module whose go.mod points lego (its ACME client) at a scratch
# copy of lego's own version with toolchain/traefik/zz_gen_dns_providers.go in place of lego's DNS
# provider factory: the factory links every DNS service's SDK lego supports, a third of the build,
# for the ACME DNS-01 challenge the local gateway never uses (no ACME, plain HTTP on 127.0.0.1).
# Traefik selects nothing at build time itself (no build tags for providers or challenges).
recipe_traefik() {
  local scratch="$SRC/traefik" lego_ver
  rm -rf "$scratch" && mkdir -p "$scratch" || return 1
  cp -r "$(moddir_at "$TRAEFIK_MODULE" "v$TRAEFIK_VERSION")" "$scratch/traefik" || return 1
  lego_ver="$(cd "$scratch/traefik" && go list -m -f '{{.Version}}' github.com/go-acme/lego/v4)" || return 1
  cp -r "$(moddir_at github.com/go-acme/lego/v4 "$lego_ver")" "$scratch/lego" && chmod -R u+w "$scratch" || return 1
  cp zz_gen_dns_providers.go "$scratch/lego/providers/dns/zz_gen_dns_providers.go" || return 1
  (cd "$scratch/traefik" && go mod edit -replace github.com/go-acme/lego/v4=../lego \
    && gobuild traefik ./cmd/traefik "-X github.com/traefik/traefik/v3/pkg/version.Version=v$TRAEFIK_VERSION")
}
recipe_kube_router() {
  upstream_build kube-router "$KUBE_ROUTER_MODULE" "$KUBE_ROUTER_VERSION" ./cmd/kube-router \
    "-X github.com/cloudnativelabs/kube-router/v2/pkg/version.Version=v$KUBE_ROUTER_VERSION"
}

# metrics-server (the resource metrics API the HPAs read), and its upstream manifests, which
# node.sh applies through a kustomize overlay (local image, flags for this node).
recipe_metrics_server() {
  upstream_build metrics-server "$METRICS_SERVER_MODULE" "$METRICS_SERVER_VERSION" ./cmd/metrics-server \
    "-X k8s.io/client-go/pkg/version.gitVersion=v$METRICS_SERVER_VERSION"
  local dir dest="$CACHE/share/metrics-server"
  dir="$(GOFLAGS=-mod=mod go mod download -json "$METRICS_SERVER_MODULE@v$METRICS_SERVER_VERSION" | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  rm -rf "$dest" && mkdir -p "$dest" && cp "$dir"/manifests/base/*.yaml "$dest/" && chmod 0644 "$dest"/*.yaml
}

# scratch_image TAR REF BINARY PATH USER [BUILDAH-CONFIG-ARGS...]: an image from scratch holding
# one static binary at PATH (its entrypoint), run as USER, written as the docker-archive
# share/images/TAR under REF; node.sh imports these into the node's containerd (no registry to
# pull from). Every image piece below is made of these.
scratch_image() {
  local tar="$1" ref="$2" binary="$3" path="$4" user="$5" dest="$CACHE/share/images" c
  shift 5
  command -v buildah >/dev/null || { echo "buildah is not installed (apt-packages.txt)"; return 1; }
  mkdir -p "$dest"
  c="$(buildah from scratch)" || return 1
  buildah copy "$c" "$binary" "$path" >/dev/null || return 1
  buildah config --entrypoint "[\"$path\"]" --user "$user" "$@" "$c" || return 1
  rm -f "$dest/$tar"
  buildah commit --rm "$c" "docker-archive:$dest/$tar:$ref" || return 1
}

# The node's own pieces: the sandbox image, CoreDNS and metrics-server.
recipe_node_images() {
  scratch_image pause.tar "sophia.local/pause:$PAUSE_VERSION" "$BIN/pause" /pause 65535:65535 \
    && scratch_image coredns.tar "sophia.local/coredns:$COREDNS_VERSION" "$BIN/coredns" /coredns 65532:65532 \
      --port 53/udp \
    && scratch_image metrics-server.tar "sophia.local/metrics-server:$METRICS_SERVER_VERSION" \
      "$BIN/metrics-server" /metrics-server 65532:65532
}

# ---------------------------------------------------------------- the trace pipeline (tracing.env)
# Jaeger v2 inside its own module, with our main (toolchain/jaeger/main.go: only the components the
# local configuration names) in a scratch copy, under cmd/jaeger/ so Jaeger's internal packages are
# importable (the Collector builder cannot reach them from another module). Its UI (a React app
# built with npm, embedded at build time) is left out: the binary serves Jaeger's placeholder page
# there, and the query API as upstream's.
recipe_jaeger() {
  local scratch="$SRC/jaeger"
  rm -rf "$scratch" && cp -r "$(moddir_at "$JAEGER_MODULE" "v$JAEGER_MODULE_VERSION")" "$scratch" && chmod -R u+w "$scratch" || return 1
  mkdir -p "$scratch/cmd/jaeger/sophia" && cp main.go "$scratch/cmd/jaeger/sophia/" || return 1
  (cd "$scratch" && gobuild jaeger ./cmd/jaeger/sophia "-X $JAEGER_MODULE/internal/version.latestVersion=v$JAEGER_VERSION")
}
# The Collector: the distribution its builder generated into toolchain/tracing (manifest.yaml).
recipe_otelcol() { gobuild otelcol .; }

# Their images, from scratch with buildah, laid out as upstream's (entrypoint, user 10001) and
# named as the program names them (components/tracing.py), so the local stack runs the same
# objects as dev and prod; node.sh imports the docker-archives into the node's containerd.
recipe_tracing_images() {
  scratch_image otel-collector.tar "docker.io/otel/opentelemetry-collector:$COLLECTOR_VERSION" \
      "$BIN/otelcol" /otelcol 10001:10001 --cmd '--config=/etc/otelcol/config.yaml' \
    && scratch_image jaeger.tar "docker.io/jaegertracing/jaeger:$JAEGER_VERSION" \
      "$BIN/jaeger" /cmd/jaeger/jaeger-linux 10001:10001
}

# ---------------------------------------------------------------- monitoring (monitoring.env)
# Version stamps as upstream's promu sets them (prometheus/common/version).
prom_ldflags() { echo "-X github.com/prometheus/common/version.Version=$1 -X github.com/prometheus/common/version.Branch=HEAD -X github.com/prometheus/common/version.BuildUser=sophia-toolchain"; }

# The Prometheus operator and its config reloader, and the operator's CRDs beyond the two the
# stack applies itself (the `crds` piece): node.sh applies them, as kube-prometheus-stack's
# chart would, so the operator finds every kind it watches.
# The module replaces its API and client packages with ./pkg/apis/monitoring and ./pkg/client,
# nested modules its zip leaves out: it builds in a scratch copy holding those two modules at
# the same version (what the replaces point at in the repository's tree).
recipe_prometheus_operator() {
  local mod="$PROMETHEUS_OPERATOR_MODULE" ver="v$PROMETHEUS_OPERATOR_VERSION" scratch="$SRC/prometheus-operator" sub ld
  ld="$(prom_ldflags "$PROMETHEUS_OPERATOR_VERSION")"
  rm -rf "$scratch" && cp -r "$(moddir_at "$mod" "$ver")" "$scratch" || return 1
  for sub in pkg/apis/monitoring pkg/client; do
    mkdir -p "$(dirname "$scratch/$sub")" && cp -r "$(moddir_at "$mod/$sub" "$ver")" "$scratch/$sub" || return 1
  done
  chmod -R u+w "$scratch"
  (cd "$scratch" && gobuild prometheus-operator ./cmd/operator "$ld" \
    && gobuild prometheus-config-reloader ./cmd/prometheus-config-reloader "$ld") || return 1
  local dest="$CACHE/share/monitoring/crds" f
  rm -rf "$dest" && mkdir -p "$dest" || return 1
  for f in "$scratch"/example/prometheus-operator-crd/*.yaml; do
    case "$f" in *_servicemonitors.yaml|*_prometheusrules.yaml) continue ;; esac
    cp "$f" "$dest/" || return 1
  done
  chmod 0644 "$dest"/*.yaml
}
# moddir_at MODULE VERSION: its source in the module cache (downloaded first; verified against go.sum's
# checksum database on download).
moddir_at() {
  GOFLAGS=-mod=mod go mod download -json "$1@$2" | sed -n 's/.*"Dir": "\(.*\)",/\1/p' | grep . || { echo "no source for $1@$2" >&2; return 1; }
}

# Prometheus with Kubernetes service discovery only (the operator's configs use nothing else;
# half the build of every SD), and without the web UI's assets: they are built with npm, which
# the module does not ship; without the `builtinassets` tag the binary serves the UI from disk
# (absent here, so / answers 404) and the HTTP API, which is what the stack and the tests use.
recipe_prometheus() {
  # GOWORK=off: the module ships a go.work naming the UI's tool modules, which the module leaves out.
  GOWORK=off GOFLAGS="$GOFLAGS -tags=remove_all_sd,enable_kubernetes_sd" upstream_build prometheus "$PROMETHEUS_MODULE" \
    "$PROMETHEUS_MODULE_VERSION" ./cmd/prometheus "$(prom_ldflags "$PROMETHEUS_VERSION")"
}

# Alertmanager embeds its UI (ui/app/dist, built with npm and not in the module), so it builds in a
# scratch copy of the module where dist holds a one-line page pointing at the API (/api/v2).
recipe_alertmanager() {
  local dir scratch="$SRC/alertmanager" d
  dir="$(moddir_at "$ALERTMANAGER_MODULE" "v$ALERTMANAGER_VERSION")" || return 1
  rm -rf "$scratch" && cp -r "$dir" "$scratch" && chmod -R u+w "$scratch" || return 1
  for d in elm mantine; do
    mkdir -p "$scratch/ui/app/dist/$d"
    echo '<!doctype html><title>Alertmanager</title><p>Built without its web UI (npm); the API is at /api/v2.' \
      >"$scratch/ui/app/dist/$d/index.html" || return 1
  done
  (cd "$scratch" && gobuild alertmanager ./cmd/alertmanager "$(prom_ldflags "$ALERTMANAGER_VERSION")")
}

# The HPA series of the dashboards' "Replicas vs HPA" panel (kube-prometheus-stack runs it in dev/prod).
recipe_kube_state_metrics() {
  upstream_build kube-state-metrics "$KUBE_STATE_METRICS_MODULE" "$KUBE_STATE_METRICS_VERSION" . \
    "$(prom_ldflags "v$KUBE_STATE_METRICS_VERSION")"
}

# Their images, from scratch with buildah like node-images (its own piece: node-images' fingerprint
# is shared), imported into the node's containerd by node.sh.
recipe_monitoring_images() {
  local spec name
  for spec in "prometheus-operator:$PROMETHEUS_OPERATOR_VERSION" "prometheus-config-reloader:$PROMETHEUS_OPERATOR_VERSION" \
              "prometheus:$PROMETHEUS_VERSION" "alertmanager:$ALERTMANAGER_VERSION" \
              "kube-state-metrics:$KUBE_STATE_METRICS_VERSION"; do
    name="${spec%%:*}"
    scratch_image "$name.tar" "sophia.local/$spec" "$BIN/$name" "/bin/$name" 65534:65534 || return 1
  done
}

# ---------------------------------------------------------------- pieces
main() {
  exec 9>"$CACHE/.lock"
  if ! flock -n 9; then
    echo "[toolchain] another build is running; waiting for it"
    flock 9
  fi
  local all=(etcd kube-apiserver kube-controller-manager kube-scheduler kubectl kwok crds
             pulumi pulumi-language-python pulumi-resource-kubernetes
             kubelet kube-proxy pause registry coredns traefik kube-router metrics-server node-images
             jaeger otelcol tracing-images
             prometheus-operator prometheus alertmanager kube-state-metrics monitoring-images)
  [ $# -gt 0 ] && all=("$@")
  local node_fp="$HERE/node.env"
  local node_images_fp="$HERE/node.env $BIN/pause $BIN/coredns $BIN/metrics-server"
  local mon_fp="$HERE/monitoring.env"
  local mon_images_fp="$mon_fp $BIN/prometheus-operator $BIN/prometheus-config-reloader $BIN/prometheus $BIN/alertmanager $BIN/kube-state-metrics"
  local total=$SECONDS piece
  BUILT_CPU=0
  for piece in "${all[@]}"; do
    case "$piece" in
      etcd) step etcd "v$ETCD_VERSION" etcd etcd ;;
      kube-apiserver) step kube-apiserver "v$K8S_VERSION" k8s kube-apiserver ;;
      kube-controller-manager) step kube-controller-manager "v$K8S_VERSION" k8s kube-controller-manager ;;
      kube-scheduler) step kube-scheduler "v$K8S_VERSION" k8s kube-scheduler ;;
      kubectl) step kubectl "v$K8S_VERSION" k8s kubectl ;;
      kwok) step kwok "v$KWOK_VERSION" kwok kwok ../share/kwok/stages.yaml ;;
      crds) step crds "gateway-api v1.4.1, prometheus-operator v0.85.0" crds \
        ../share/crds/gateway.networking.k8s.io_httproutes.yaml ../share/crds/monitoring.coreos.com_servicemonitors.yaml ;;
      pulumi) step pulumi "v$PULUMI_VERSION" pulumi pulumi ;;
      pulumi-language-python) step pulumi-language-python "v$PULUMI_VERSION" pulumi \
        pulumi-language-python pulumi-language-python-exec pulumi-resource-pulumi-python ;;
      pulumi-resource-kubernetes) step pulumi-resource-kubernetes "v$PULUMI_KUBERNETES_VERSION" \
        pulumi-kubernetes pulumi-resource-kubernetes ;;
      kubelet) FP_EXTRA="$node_fp" step kubelet "v$K8S_VERSION" node kubelet ;;
      kube-proxy) FP_EXTRA="$node_fp" step kube-proxy "v$K8S_VERSION" node kube-proxy ;;
      pause) FP_EXTRA="$node_fp" step pause "$PAUSE_VERSION (k8s.io/kubernetes v$K8S_VERSION)" node pause ;;
      registry) FP_EXTRA="$HERE/debian.env" step registry "$REGISTRY_DEBIAN_VERSION (Debian docker-registry)" addons registry ;;
      coredns) FP_EXTRA="$node_fp" step coredns "v$COREDNS_VERSION" addons coredns ;;
      traefik) FP_EXTRA="$node_fp" step traefik "v$TRAEFIK_VERSION" traefik traefik ;;
      kube-router) FP_EXTRA="$node_fp" step kube-router "v$KUBE_ROUTER_VERSION" addons kube-router ;;
      metrics-server) FP_EXTRA="$node_fp" step metrics-server "v$METRICS_SERVER_VERSION" addons \
        metrics-server ../share/metrics-server/deployment.yaml ;;
      node-images) FP_EXTRA="$node_images_fp" step node-images "pause, coredns, metrics-server" addons \
        ../share/images/pause.tar ../share/images/coredns.tar ../share/images/metrics-server.tar ;;
      jaeger) FP_EXTRA="$HERE/tracing.env" step jaeger "v$JAEGER_VERSION (module v$JAEGER_MODULE_VERSION)" jaeger jaeger ;;
      otelcol) FP_EXTRA="$HERE/tracing.env" step otelcol "v$COLLECTOR_VERSION" tracing otelcol ;;
      tracing-images) FP_EXTRA="$HERE/tracing.env $BIN/jaeger $BIN/otelcol" step tracing-images \
        "jaeger, otel-collector" addons ../share/images/jaeger.tar ../share/images/otel-collector.tar ;;
      prometheus-operator) FP_EXTRA="$mon_fp" step prometheus-operator "v$PROMETHEUS_OPERATOR_VERSION" addons \
        prometheus-operator prometheus-config-reloader ../share/monitoring/crds/monitoring.coreos.com_prometheuses.yaml ;;
      prometheus) FP_EXTRA="$mon_fp" step prometheus "v$PROMETHEUS_VERSION" addons prometheus ;;
      alertmanager) FP_EXTRA="$mon_fp" step alertmanager "v$ALERTMANAGER_VERSION" addons alertmanager ;;
      kube-state-metrics) FP_EXTRA="$mon_fp" step kube-state-metrics "v$KUBE_STATE_METRICS_VERSION" addons kube-state-metrics ;;
      monitoring-images) FP_EXTRA="$mon_images_fp" step monitoring-images "operator, reloader, prometheus, alertmanager, kube-state-metrics" \
        addons ../share/images/prometheus.tar ../share/images/alertmanager.tar ../share/images/kube-state-metrics.tar \
        ../share/images/prometheus-operator.tar ../share/images/prometheus-config-reloader.tar ;;
      *) echo "[toolchain] unknown piece: $piece" >&2; return 2 ;;
    esac
  done
  log "all pieces ready in $BIN ($((SECONDS - total))s; CPU of the pieces built: ${BUILT_CPU}s)"
}

# Last line on purpose: bash has read the whole file before main runs, so editing this
# script while a build is running cannot derail that build.
main "$@"; exit $?
