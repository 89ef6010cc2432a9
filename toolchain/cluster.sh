#!/usr/bin/env bash
# Local Kubernetes control plane built by toolchain/build.sh:
#   etcd + kube-apiserver + kube-controller-manager + kube-scheduler + kwok,
# all on 127.0.0.1, with simulated (kwok) nodes: a CPU pool and GPU pool(s).
#
#   toolchain/cluster.sh up       start (or keep) everything; waits for /readyz and Ready nodes
#   toolchain/cluster.sh status   show processes, API health and nodes
#   toolchain/cluster.sh stop     stop everything, keep the cluster state (`up` resumes it)
#   toolchain/cluster.sh down     stop everything and delete the cluster state
#   toolchain/cluster.sh gateway  start Traefik for the stack's Gateway (after `pulumi up`)
#   toolchain/cluster.sh nodes    add (or keep) the simulated nodes the knobs below describe to a
#                                 running cluster, e.g. prod's shape for e2e/test_stack_shapes.py
#
# State (certs, etcd data, logs, pids, the node's volumes) lives in <repo>/.state/cluster, or
# in SOPHIA_CLUSTER_STATE (`make e2e` keeps its own cluster apart from `make up`'s); the admin
# kubeconfig is written to <repo>/.state/kubeconfig on every `up`. Both are gitignored.
#
# Knobs (environment):
#   SOPHIA_APISERVER_PORT (16443)  SOPHIA_ETCD_PORT (12379, peer +1)
#   SOPHIA_KCM_PORT (16257)  SOPHIA_SCHEDULER_PORT (16259)  SOPHIA_KWOK_PORT (16080)
#   SOPHIA_REAL_NODE (1): also start a real node (kubelet + kube-proxy + containerd/runc + CNI
#     bridge, CoreDNS, kube-router's NetworkPolicy controller) named sophia-node, whose pods
#     really run; 0 = simulated nodes only, as before. See docs/toolchain.md ("The real node").
#   SOPHIA_NODE_IP (10.245.0.1), SOPHIA_POD_CIDR (10.245.0.0/16): the node's address, on the
#     CNI bridge sophia-cni0 (the kernel here has no dummy interfaces); pods get addresses
#     from the same /16. SOPHIA_REGISTRY_PORT (15000): the local image registry on 127.0.0.1.
#   SOPHIA_CPU_NODES (2, or 0 with the real node): simulated CPU pool size, nodes kwok-cpu-N
#     labelled sophia.ai/node-pool=cpu
#   SOPHIA_GPU_POOLS ("local-gpu:1:1"): space-separated NAME:NODES:GPUS_PER_NODE[:ARCH]; nodes
#     kwok-gpu-NAME-N get nvidia.com/gpu capacity, taint nvidia.com/gpu=present:NoSchedule and
#     labels sophia.ai/gpu=true, sophia.ai/gpu-pool=NAME (as the GPU component's k3s flags do),
#     kubernetes.io/arch=ARCH (amd64; GH200 is arm64)
#   SOPHIA_ZONES (none): space-separated zone names; the simulated nodes of each pool are labelled
#     topology.kubernetes.io/zone round-robin over them
set -euo pipefail

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
# shellcheck source=env.sh
source "$HERE/env.sh"
ROOT="$SOPHIA_ROOT"
STATE="${SOPHIA_CLUSTER_STATE:-$ROOT/.state/cluster}"
PKI="$STATE/pki" LOGS="$STATE/logs" PIDS="$STATE/pids"
ADMIN_KUBECONFIG="$ROOT/.state/kubeconfig"
SHARE="$SOPHIA_TOOLCHAIN_DIR/share"

API_PORT="${SOPHIA_APISERVER_PORT:-16443}"
ETCD_PORT="${SOPHIA_ETCD_PORT:-12379}"
ETCD_PEER_PORT="$((ETCD_PORT + 1))"
KCM_PORT="${SOPHIA_KCM_PORT:-16257}"
SCHED_PORT="${SOPHIA_SCHEDULER_PORT:-16259}"
KWOK_PORT="${SOPHIA_KWOK_PORT:-16080}"
REAL_NODE="${SOPHIA_REAL_NODE:-1}"
if [ "$REAL_NODE" = 1 ]; then CPU_NODES="${SOPHIA_CPU_NODES:-0}"; else CPU_NODES="${SOPHIA_CPU_NODES:-2}"; fi
GPU_POOLS="${SOPHIA_GPU_POOLS:-local-gpu:1:1}"
read -ra ZONES <<<"${SOPHIA_ZONES:-}"
SERVICE_CIDR="10.96.0.0/16"
CLUSTER_DNS="10.96.0.10"
NODE_NAME="sophia-node"
NODE_IP="${SOPHIA_NODE_IP:-10.245.0.1}"
POD_CIDR="${SOPHIA_POD_CIDR:-10.245.0.0/16}"
BRIDGE="sophia-cni0"
REGISTRY_PORT="${SOPHIA_REGISTRY_PORT:-15000}"
NODE="$STATE/node"
CONTAINERD_SOCK="$NODE/containerd.sock"
RUNC_ROOT="$NODE/runc"
API_URL="https://127.0.0.1:$API_PORT"

log() { echo "[cluster] $*"; }
die() { echo "[cluster] ERROR: $*" >&2; exit 1; }

need_bins() {
  local b missing=()
  for b in etcd kube-apiserver kube-controller-manager kube-scheduler kwok kubectl; do
    [ -x "$SOPHIA_TOOLCHAIN_BIN/$b" ] || missing+=("$b")
  done
  [ -f "$SHARE/kwok/stages.yaml" ] || missing+=("kwok stages")
  [ ${#missing[@]} -eq 0 ] || die "missing ${missing[*]} in $SOPHIA_TOOLCHAIN_BIN; run toolchain/build.sh (make toolchain)"
  command -v openssl >/dev/null || die "openssl is required to generate the cluster's certificates"
}

# ------------------------------------------------------------------ PKI and kubeconfigs
new_ca() { # new_ca NAME COMMON_NAME: a self-signed certificate authority
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -sha256 -keyout "$PKI/$1.key" -out "$PKI/$1.crt" -subj "/CN=$2" \
    -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
}

sign() { # sign NAME SUBJECT EXTENSIONS [CA]: a key and a certificate signed by CA (default: the cluster CA)
  local name="$1" subj="$2" ext="$3" ca="${4:-ca}"
  openssl req -new -newkey rsa:2048 -nodes -keyout "$PKI/$name.key" -out "$PKI/$name.csr" -subj "$subj" 2>/dev/null
  openssl x509 -req -in "$PKI/$name.csr" -CA "$PKI/$ca.crt" -CAkey "$PKI/$ca.key" -CAcreateserial \
    -days 3650 -sha256 -out "$PKI/$name.crt" -extfile <(printf '%b' "$ext") 2>/dev/null
  rm -f "$PKI/$name.csr"
}

gen_pki() {
  [ -f "$PKI/.done" ] && return 0
  log "generating certificates and keys in $PKI"
  rm -rf "$PKI" && mkdir -p "$PKI" && chmod 700 "$PKI"
  new_ca ca sophia-local-ca
  local client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  sign apiserver "/CN=kube-apiserver" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:127.0.0.1,IP:10.96.0.1,DNS:localhost,DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local\n"
  sign admin "/O=system:masters/CN=sophia-admin" "$client"
  sign controller-manager "/CN=system:kube-controller-manager" "$client"
  sign scheduler "/CN=system:kube-scheduler" "$client"
  sign kwok "/O=system:masters/CN=kwok-controller" "$client"
  openssl genrsa -out "$PKI/sa.key" 2048 2>/dev/null
  openssl rsa -in "$PKI/sa.key" -pubout -out "$PKI/sa.pub" 2>/dev/null
  chmod 600 "$PKI"/*.key
  touch "$PKI/.done"
}

gen_node_pki() { # the real node's certificates, on top of gen_pki's
  [ -f "$PKI/.node-done" ] && return 0
  local client="basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n"
  sign kubelet "/O=system:nodes/CN=system:node:$NODE_NAME" "$client"
  sign kubelet-serving "/CN=$NODE_NAME" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\nsubjectAltName=IP:$NODE_IP,DNS:$NODE_NAME\n"
  sign kube-proxy "/CN=system:kube-proxy" "$client"
  sign apiserver-kubelet-client "/O=system:masters/CN=kube-apiserver-kubelet-client" "$client"
  # kube-router (NetworkPolicy controller) and Traefik (Gateway API) run on the host as
  # trusted node components.
  sign kube-router "/O=system:masters/CN=kube-router" "$client"
  sign traefik "/O=system:masters/CN=traefik" "$client"
  chmod 600 "$PKI"/*.key
  touch "$PKI/.node-done"
}

# The aggregation layer's front proxy (the API server calling metrics-server as an extension
# API server): its own CA, as upstream advises, so no client certificate of the cluster CA can
# pass for the proxy and assert another user in its headers. Its own marker: kept clusters
# made before it get it on their next `up`.
gen_front_proxy_pki() {
  [ -f "$PKI/.front-proxy-done" ] && return 0
  new_ca front-proxy-ca sophia-front-proxy-ca
  sign front-proxy-client "/CN=front-proxy-client" \
    "basicConstraints=CA:FALSE\nkeyUsage=critical,digitalSignature,keyEncipherment\nextendedKeyUsage=clientAuth\n" front-proxy-ca
  chmod 600 "$PKI"/*.key
  touch "$PKI/.front-proxy-done"
}

kubeconfig() { # kubeconfig NAME OUTFILE
  local name="$1" out="$2" tmp
  tmp="$(mktemp "$out.XXXX")"
  cat >"$tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: sophia-local
  cluster:
    server: $API_URL
    certificate-authority-data: $(base64 -w0 <"$PKI/ca.crt")
users:
- name: $name
  user:
    client-certificate-data: $(base64 -w0 <"$PKI/$name.crt")
    client-key-data: $(base64 -w0 <"$PKI/$name.key")
contexts:
- name: sophia-local
  context:
    cluster: sophia-local
    user: $name
current-context: sophia-local
EOF
  chmod 600 "$tmp" && mv -f "$tmp" "$out"
}

# ------------------------------------------------------------------ processes
pid_of() { # prints the pid if the component is running
  local f="$PIDS/$1.pid" pid
  [ -f "$f" ] || return 1
  pid="$(cat "$f")"
  [ -n "$pid" ] && kill -0 "$pid" 2>/dev/null || return 1
  # The binary name, our state directory (in every node component's flags) or socat (api-forwarder).
  grep -qa -e "$1" -e "$STATE" -e socat "/proc/$pid/cmdline" 2>/dev/null || return 1
  echo "$pid"
}

start() { # start NAME ARGS... (binary is NAME in the toolchain)
  local name="$1"; shift
  start_bin "$name" "$SOPHIA_TOOLCHAIN_BIN/$name" "$@"
}

start_bin() { # start_bin NAME BINARY ARGS...
  local name="$1" bin="$2" pid; shift 2
  if pid="$(pid_of "$name")"; then
    log "$name already running (pid $pid)"
    return 0
  fi
  log "starting $name (log $LOGS/$name.log)"
  # setsid: own session, so `down` can stop it (and only it) by pid; survives the caller.
  setsid "$bin" "$@" >>"$LOGS/$name.log" 2>&1 </dev/null &
  echo $! >"$PIDS/$name.pid"
}

stop() {
  local name="$1" pid i
  if pid="$(pid_of "$name")"; then
    log "stopping $name (pid $pid)"
    kill "$pid" 2>/dev/null || true
    for i in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.2; done
    kill -9 "$pid" 2>/dev/null || true
  fi
  rm -f "$PIDS/$name.pid"
}

wait_for() { # wait_for WHAT SECONDS CMD...
  local what="$1" secs="$2" start=$SECONDS; shift 2
  until "$@" >/dev/null 2>&1; do
    if [ $((SECONDS - start)) -ge "$secs" ]; then
      log "timed out after ${secs}s waiting for $what"
      return 1
    fi
    sleep 1
  done
  log "$what ready after $((SECONDS - start))s"
}

kc() { "$SOPHIA_TOOLCHAIN_BIN/kubectl" --kubeconfig "$ADMIN_KUBECONFIG" "$@"; }

port_free_or_ours() { # fail early when someone else holds a port
  local port="$1" name="$2"
  pid_of "$name" >/dev/null && return 0
  if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
    die "127.0.0.1:$port (for $name) is in use by another process; set SOPHIA_*_PORT"
  fi
}

# ------------------------------------------------------------------ nodes
node_yaml() { # node_yaml NAME CPU MEMORY GPUS POOL_LABELS(k=v,...) TAINT(yes|no) [ARCH]
  local name="$1" cpu="$2" mem="$3" gpus="$4" labels="$5" taint="$6" arch="${7:-amd64}" kv
  cat <<EOF
apiVersion: v1
kind: Node
metadata:
  name: $name
  annotations:
    node.alpha.kubernetes.io/ttl: "0"
    kwok.x-k8s.io/node: fake
  labels:
    kubernetes.io/arch: $arch
    kubernetes.io/os: linux
    kubernetes.io/hostname: $name
    node.kubernetes.io/instance-type: simulated
    type: kwok
EOF
  IFS=, read -ra kv <<<"$labels"
  for l in "${kv[@]}"; do echo "    ${l%%=*}: \"${l#*=}\""; done
  echo "spec:"
  if [ "$taint" = yes ]; then
    cat <<EOF
  taints:
  - key: nvidia.com/gpu
    value: present
    effect: NoSchedule
EOF
  fi
  cat <<EOF
status:
  allocatable: &res
    cpu: "$cpu"
    memory: $mem
    pods: "110"
    ephemeral-storage: 200Gi
$( [ "$gpus" -gt 0 ] && echo "    nvidia.com/gpu: \"$gpus\"" )
  capacity: *res
  nodeInfo:
    architecture: $arch
    operatingSystem: linux
    kubeletVersion: v$K8S_VERSION
    kubeProxyVersion: v$K8S_VERSION
---
EOF
}

zone_label() { # zone_label INDEX: ",topology.kubernetes.io/zone=<zone>" round-robin, or nothing
  [ "${#ZONES[@]}" -gt 0 ] && echo ",topology.kubernetes.io/zone=${ZONES[$(($1 % ${#ZONES[@]}))]}"
  true
}

nodes_yaml() {
  local i pool name count gpus arch
  for i in $(seq 0 $((CPU_NODES - 1))); do
    node_yaml "kwok-cpu-$i" 16 64Gi 0 "sophia.ai/node-pool=cpu$(zone_label "$i")" no
  done
  for pool in $GPU_POOLS; do
    IFS=: read -r name count gpus arch <<<"$pool"
    for i in $(seq 0 $((${count:-1} - 1))); do
      node_yaml "kwok-gpu-$name-$i" 32 256Gi "${gpus:-1}" \
        "sophia.ai/node-pool=gpu,sophia.ai/gpu=true,sophia.ai/gpu-pool=$name,nvidia.com/gpu.present=true$(zone_label "$i")" \
        yes "${arch:-amd64}"
    done
  done
}

all_nodes_ready() {
  local want="$1" got
  got="$(kc get nodes -l type=kwok -o jsonpath='{range .items[*]}{.status.conditions[?(@.type=="Ready")].status}{"\n"}{end}' | grep -c '^True$')"
  [ "$got" -ge "$want" ]
}

# ------------------------------------------------------------------ commands
cmd_up() {
  need_bins
  mkdir -p "$STATE" "$LOGS" "$PIDS" "$STATE/etcd" "$STATE/kcm" "$STATE/scheduler"
  local t0=$SECONDS
  port_free_or_ours "$ETCD_PORT" etcd
  port_free_or_ours "$API_PORT" kube-apiserver
  port_free_or_ours "$KCM_PORT" kube-controller-manager
  port_free_or_ours "$SCHED_PORT" kube-scheduler
  port_free_or_ours "$KWOK_PORT" kwok
  gen_pki
  gen_front_proxy_pki
  [ "$REAL_NODE" = 1 ] && gen_node_pki
  # The API server's client certificate towards kubelets exists with the real node only (kwok's
  # simulated nodes have no kubelet to call).
  local kubelet_client=()
  [ "$REAL_NODE" = 1 ] && kubelet_client=(--kubelet-client-certificate="$PKI/apiserver-kubelet-client.crt"
    --kubelet-client-key="$PKI/apiserver-kubelet-client.key")
  kubeconfig admin "$ADMIN_KUBECONFIG"
  kubeconfig controller-manager "$STATE/controller-manager.kubeconfig"
  kubeconfig scheduler "$STATE/scheduler.kubeconfig"
  kubeconfig kwok "$STATE/kwok.kubeconfig"

  start etcd --name=sophia --data-dir="$STATE/etcd" \
    --listen-client-urls="http://127.0.0.1:$ETCD_PORT" --advertise-client-urls="http://127.0.0.1:$ETCD_PORT" \
    --listen-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-advertise-peer-urls="http://127.0.0.1:$ETCD_PEER_PORT" \
    --initial-cluster="sophia=http://127.0.0.1:$ETCD_PEER_PORT" \
    --quota-backend-bytes=2147483648 --unsafe-no-fsync=true --log-level=warn
  wait_for etcd 60 curl -sf "http://127.0.0.1:$ETCD_PORT/health" || die "etcd did not start; see $LOGS/etcd.log"

  start kube-apiserver --etcd-servers="http://127.0.0.1:$ETCD_PORT" \
    --bind-address=127.0.0.1 --advertise-address=127.0.0.1 --secure-port="$API_PORT" \
    --endpoint-reconciler-type=none \
    --tls-cert-file="$PKI/apiserver.crt" --tls-private-key-file="$PKI/apiserver.key" \
    --client-ca-file="$PKI/ca.crt" \
    --service-account-key-file="$PKI/sa.pub" --service-account-signing-key-file="$PKI/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --service-cluster-ip-range="$SERVICE_CIDR" \
    --authorization-mode=Node,RBAC --allow-privileged=true \
    --kubelet-preferred-address-types=InternalIP \
    "${kubelet_client[@]}" \
    --requestheader-client-ca-file="$PKI/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="$PKI/front-proxy-client.crt" --proxy-client-key-file="$PKI/front-proxy-client.key" \
    --enable-aggregator-routing=true \
    --cert-dir="$STATE/apiserver" --profiling=false
  wait_for "kube-apiserver (/readyz)" 180 kc get --raw=/readyz || die "kube-apiserver not ready; see $LOGS/kube-apiserver.log"

  start kube-controller-manager --kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authentication-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --authorization-kubeconfig="$STATE/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$KCM_PORT" --cert-dir="$STATE/kcm" \
    --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="$PKI/sa.key" --root-ca-file="$PKI/ca.crt" \
    --cluster-signing-cert-file="$PKI/ca.crt" --cluster-signing-key-file="$PKI/ca.key" \
    --service-cluster-ip-range="$SERVICE_CIDR" --profiling=false
  start kube-scheduler --kubeconfig="$STATE/scheduler.kubeconfig" \
    --authentication-kubeconfig="$STATE/scheduler.kubeconfig" \
    --authorization-kubeconfig="$STATE/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --secure-port="$SCHED_PORT" --cert-dir="$STATE/scheduler" \
    --leader-elect=false --profiling=false
  # kwok simulates kubelets for nodes annotated kwok.x-k8s.io/node=fake: node heartbeats through
  # leases, pods scheduled onto them go Running/Ready. Pod IPs are strings in status, nothing listens.
  start kwok --kubeconfig="$STATE/kwok.kubeconfig" --config="$SHARE/kwok/stages.yaml" \
    --manage-all-nodes=false --manage-nodes-with-annotation-selector=kwok.x-k8s.io/node=fake \
    --node-lease-duration-seconds=40 --cidr=10.244.0.1/16 --node-ip=10.240.0.1 \
    --server-address="127.0.0.1:$KWOK_PORT"
  wait_for kube-controller-manager 120 curl -skf "https://127.0.0.1:$KCM_PORT/healthz" \
    || die "kube-controller-manager not healthy; see $LOGS/kube-controller-manager.log"
  wait_for kube-scheduler 120 curl -skf "https://127.0.0.1:$SCHED_PORT/healthz" \
    || die "kube-scheduler not healthy; see $LOGS/kube-scheduler.log"
  wait_for kwok 60 curl -sf "http://127.0.0.1:$KWOK_PORT/healthz" || die "kwok not healthy; see $LOGS/kwok.log"

  nodes_yaml >"$STATE/nodes.yaml"
  kc apply -f "$STATE/nodes.yaml" >/dev/null
  local want
  want="$(grep -c '^kind: Node$' "$STATE/nodes.yaml" || true)"
  wait_for "$want kwok nodes Ready" 120 all_nodes_ready "$want" || die "nodes not Ready; see $LOGS/kwok.log"
  if [ "$REAL_NODE" = 1 ]; then node_up; fi
  # A cluster resumed after `stop` serves its stack's Gateway again, as it did before.
  if [ "$REAL_NODE" = 1 ] && [ -f "$STATE/gateway" ]; then cmd_gateway; fi
  # The default ServiceAccount must exist before pods can be created in a namespace.
  wait_for "default ServiceAccount" 60 kc -n default get serviceaccount default || true
  log "control plane up in $((SECONDS - t0))s: $API_URL, kubeconfig $ADMIN_KUBECONFIG"
  kc get nodes -L sophia.ai/node-pool,sophia.ai/gpu-pool
}

cmd_nodes() {
  local want
  nodes_yaml >"$STATE/extra-nodes.yaml"
  kc apply -f "$STATE/extra-nodes.yaml" >/dev/null
  want="$(kc get nodes -l type=kwok -o name | wc -l)"
  wait_for "$want kwok nodes Ready" 120 all_nodes_ready "$want" || die "nodes not Ready; see $LOGS/kwok.log"
  kc get nodes -L sophia.ai/node-pool,sophia.ai/gpu-pool,topology.kubernetes.io/zone,kubernetes.io/arch
}

cmd_status() {
  local n rc=0 pid
  local comps=(etcd kube-apiserver kube-controller-manager kube-scheduler kwok)
  [ "$REAL_NODE" = 1 ] && comps+=(api-forwarder registry containerd kubelet kube-proxy kube-router)
  for n in "${comps[@]}"; do
    if pid="$(pid_of "$n")"; then log "$n running (pid $pid)"; else log "$n NOT running"; rc=1; fi
  done
  if [ -f "$ADMIN_KUBECONFIG" ] && kc get --raw=/readyz >/dev/null 2>&1; then
    log "API server $API_URL ready (kubeconfig $ADMIN_KUBECONFIG)"
    kc version 2>/dev/null | sed 's/^/[cluster] /' || true
    kc get nodes -L sophia.ai/node-pool,sophia.ai/gpu-pool
  else
    log "API server $API_URL not reachable"
    rc=1
  fi
  return $rc
}

cmd_stop() {
  local n
  node_down
  for n in kwok kube-scheduler kube-controller-manager kube-apiserver etcd; do stop "$n"; done
}

cmd_down() {
  cmd_stop
  rm -rf "$STATE" "$ADMIN_KUBECONFIG"
  log "stopped; removed $STATE and $ADMIN_KUBECONFIG"
}

# shellcheck source=node.sh
source "$HERE/node.sh"

case "${1:-}" in
  up) cmd_up ;;
  stop) cmd_stop; log "stopped; state kept in $STATE" ;;
  down) cmd_down ;;
  status) cmd_status ;;
  gateway) cmd_gateway ;;
  nodes) cmd_nodes ;;
  *) echo "usage: $0 up|stop|down|status|gateway|nodes" >&2; exit 2 ;;
esac
