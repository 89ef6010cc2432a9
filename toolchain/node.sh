# The real node of the local cluster (sourced by cluster.sh; uses its variables and helpers).
#
#   containerd (Debian) + runc (Debian) + CNI bridge/host-local/portmap/loopback (Debian)
#   kubelet + kube-proxy (toolchain: k8s.io/kubernetes), kube-router --run-firewall only
#   (toolchain: the NetworkPolicy controller), CoreDNS and metrics-server as pods (toolchain
#   images), a local
#   image registry (Debian's docker-registry, unpacked by toolchain/build.sh) on 127.0.0.1, and a socat forwarder so pods
#   reach the API server (which listens on 127.0.0.1 only) through the `kubernetes` Service.
#
# Networking stays on this machine: the node's address is on our own bridge, CoreDNS answers
# cluster.local only (no forward), and a mangle-table rule drops any forwarded packet that does
# not both enter and leave through the bridge (pods cannot reach the outside world).
# Every process, mount, network namespace, interface and iptables rule made here is removed by
# node_down.

# shellcheck source=node.env
source "$HERE/node.env"
# shellcheck source=tracing.env
source "$HERE/tracing.env"
# shellcheck source=monitoring.env
source "$HERE/monitoring.env"
# The local stack's monitoring images (toolchain/build.sh monitoring-images), imported like CoreDNS's.
MONITORING_IMAGES=(prometheus-operator prometheus-config-reloader prometheus alertmanager kube-state-metrics)
CTR=(ctr --address "$CONTAINERD_SOCK" --namespace k8s.io)
# Where pods reach the API server (the `kubernetes` Service's endpoint): the node's address on
# 443, the port the services' egress policy allows towards it (sophia:auth.api_server_ports).
API_NODE_PORT=443
CNI_BIN="${SOPHIA_CNI_BIN:-/usr/lib/cni}"

node_need() {
  local b missing=()
  for b in kubelet kube-proxy kube-router registry coredns metrics-server pause; do
    [ -x "$SOPHIA_TOOLCHAIN_BIN/$b" ] || missing+=("$b")
  done
  for b in containerd containerd-shim-runc-v2 runc ctr iptables ipset socat; do
    command -v "$b" >/dev/null || missing+=("$b (Debian package)")
  done
  for b in bridge host-local portmap loopback; do
    [ -x "$CNI_BIN/$b" ] || missing+=("CNI plugin $b (Debian containernetworking-plugins)")
  done
  [ -f "$SHARE/images/pause.tar" ] && [ -f "$SHARE/images/coredns.tar" ] && [ -f "$SHARE/images/metrics-server.tar" ] \
    || missing+=("node images")
  [ -f "$SHARE/images/otel-collector.tar" ] && [ -f "$SHARE/images/jaeger.tar" ] || missing+=("tracing images")
  for b in "${MONITORING_IMAGES[@]}"; do [ -f "$SHARE/images/$b.tar" ] || missing+=("monitoring image $b"); done
  [ -f "$SHARE/monitoring/crds/monitoring.coreos.com_prometheuses.yaml" ] || missing+=("the Prometheus operator's CRDs")
  [ ${#missing[@]} -eq 0 ] || die "real node: missing ${missing[*]}; run toolchain/build.sh and scripts/bootstrap.sh"
}

# ------------------------------------------------------------------ network
node_net_up() {
  local clash
  clash="$(ip -4 -o route | awk -v b="$BRIDGE" '$0 !~ ("dev " b " ") && $1 ~ /^10\.245\./ {print}')"
  [ -z "$clash" ] || die "the pod network $POD_CIDR overlaps a route of this machine ($clash); set SOPHIA_POD_CIDR/SOPHIA_NODE_IP"
  if ! ip link show "$BRIDGE" >/dev/null 2>&1; then
    log "creating bridge $BRIDGE with the node address $NODE_IP"
    ip link add "$BRIDGE" type bridge
  fi
  ip addr replace "$NODE_IP/${POD_CIDR#*/}" dev "$BRIDGE"
  ip link set "$BRIDGE" up
  # Services (kube-proxy DNAT) between pods on the bridge need bridged traffic in iptables and
  # IP forwarding; the previous ip_forward value is restored by node_down.
  [ -f "$NODE/ip_forward.orig" ] || cat /proc/sys/net/ipv4/ip_forward >"$NODE/ip_forward.orig"
  echo 1 >/proc/sys/net/bridge/bridge-nf-call-iptables
  echo 1 >/proc/sys/net/ipv4/ip_forward
  # Forwarding is for pod-to-pod traffic on the bridge only; anything else is dropped before
  # the filter table (where kube-proxy and kube-router accept traffic) sees it.
  if ! iptables -t mangle -S SOPHIA-FORWARD >/dev/null 2>&1; then
    iptables -t mangle -N SOPHIA-FORWARD
    iptables -t mangle -A SOPHIA-FORWARD -i "$BRIDGE" -o "$BRIDGE" -j RETURN
    iptables -t mangle -A SOPHIA-FORWARD -m comment --comment "sophia: pods never leave the bridge" -j DROP
  fi
  iptables -t mangle -C FORWARD -j SOPHIA-FORWARD 2>/dev/null || iptables -t mangle -I FORWARD 1 -j SOPHIA-FORWARD
}

# The chains the kubelet (KUBE-FIREWALL, canaries), kube-proxy and kube-router leave behind
# (their own cleanup modes miss some), in both IP families: every KUBE-* chain and every rule
# that jumps to one, through iptables-restore, which rewrites only the tables it is given and
# keeps everyone else's rules. Skipped while any other kubelet, kube-proxy or kube-router runs
# on the machine: those chains might be theirs.
node_iptables_purge() {
  local cmd
  if pgrep -x kubelet >/dev/null || pgrep -x kube-proxy >/dev/null || pgrep -x kube-router >/dev/null; then
    log "another kubelet/kube-proxy/kube-router runs here: leaving KUBE-* iptables chains alone"
    return 0
  fi
  local rules
  for cmd in iptables ip6tables; do
    command -v "$cmd-save" >/dev/null || continue
    # Into a variable first: `save | grep -q` fails under pipefail when grep stops reading early.
    rules="$("$cmd-save")"
    grep -q -e '^:KUBE-' -e '-[jg] KUBE-' <<<"$rules" || continue
    awk '/^:KUBE-/ || /^-A KUBE-/ || (/^-A / && / -[jg] KUBE-/) {next} {print}' <<<"$rules" | "$cmd-restore"
    log "removed the KUBE-* chains of $cmd (kubelet, kube-proxy, kube-router)"
  done
}

node_net_down() {
  if iptables -t mangle -S SOPHIA-FORWARD >/dev/null 2>&1; then
    while iptables -t mangle -D FORWARD -j SOPHIA-FORWARD 2>/dev/null; do :; done
    iptables -t mangle -F SOPHIA-FORWARD && iptables -t mangle -X SOPHIA-FORWARD
    log "removed iptables chain mangle/SOPHIA-FORWARD"
  fi
  if ip link show "$BRIDGE" >/dev/null 2>&1; then
    ip link del "$BRIDGE" && log "removed bridge $BRIDGE"
  fi
  if [ -f "$NODE/ip_forward.orig" ]; then
    cat "$NODE/ip_forward.orig" >/proc/sys/net/ipv4/ip_forward
  fi
}

# ------------------------------------------------------------------ configs
node_configs() {
  mkdir -p "$NODE/cni/net.d" "$NODE/cni/ipam" "$NODE/containerd/certs.d/127.0.0.1:$REGISTRY_PORT" \
    "$NODE/kubelet" "$SOPHIA_TOOLCHAIN_DIR/registry" "$RUNC_ROOT"
  cat >"$NODE/cni/net.d/10-sophia.conflist" <<EOF
{
  "cniVersion": "1.0.0",
  "name": "sophia",
  "plugins": [
    {"type": "bridge", "bridge": "$BRIDGE", "isGateway": true, "ipMasq": false, "hairpinMode": true,
     "ipam": {"type": "host-local", "dataDir": "$NODE/cni/ipam",
              "ranges": [[{"subnet": "$POD_CIDR", "gateway": "$NODE_IP"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}}
  ]
}
EOF
  cat >"$NODE/containerd/config.toml" <<EOF
version = 2
root = "$NODE/containerd/root"
state = "$NODE/containerd/state"
disabled_plugins = ["io.containerd.snapshotter.v1.aufs", "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper", "io.containerd.snapshotter.v1.zfs"]
[grpc]
  address = "$CONTAINERD_SOCK"
[ttrpc]
  address = "$CONTAINERD_SOCK.ttrpc"
[debug]
  level = "warn"
[metrics]
  address = ""
[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "sophia.local/pause:$PAUSE_VERSION"
  # No CAP_SYS_RESOURCE here: without this every sandbox fails writing oom_score_adj.
  restrict_oom_score_adj = true
  disable_apparmor = true
  enable_selinux = false
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        BinaryName = "$(command -v runc)"
        Root = "$RUNC_ROOT"
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "$CNI_BIN"
    conf_dir = "$NODE/cni/net.d"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "$NODE/containerd/certs.d"
EOF
  # The local registry, and the public registries the stack's third-party images name: those
  # resolve to the local registry only (`server` replaces the upstream host, so nothing is ever
  # fetched from off this machine; toolchain/image-build.sh mirror fills it).
  local host
  for host in "127.0.0.1:$REGISTRY_PORT" docker.io ghcr.io; do
    mkdir -p "$NODE/containerd/certs.d/$host"
    cat >"$NODE/containerd/certs.d/$host/hosts.toml" <<EOF
server = "http://127.0.0.1:$REGISTRY_PORT"
[host."http://127.0.0.1:$REGISTRY_PORT"]
  capabilities = ["pull", "resolve"]
EOF
  done
  cat >"$NODE/kubelet-config.yaml" <<EOF
apiVersion: kubelet.config.k8s.io/v1beta1
kind: KubeletConfiguration
# cgroup v1 with a cgroup2 hierarchy beside it (hybrid): cgroupfs driver, and v1 allowed.
cgroupDriver: cgroupfs
failCgroupV1: false
failSwapOn: false
containerRuntimeEndpoint: unix://$CONTAINERD_SOCK
address: $NODE_IP
port: 10250
readOnlyPort: 0
healthzBindAddress: 127.0.0.1
healthzPort: 10248
tlsCertFile: $PKI/kubelet-serving.crt
tlsPrivateKeyFile: $PKI/kubelet-serving.key
authentication:
  anonymous: {enabled: false}
  webhook: {enabled: true}
  x509: {clientCAFile: $PKI/ca.crt}
authorization: {mode: Webhook}
clusterDomain: cluster.local
clusterDNS: [$CLUSTER_DNS]
# No host resolver in pods: nothing may resolve names off this machine.
resolvConf: ""
# Container logs under the node's state (not /var/log/pods), so "down" removes them with it.
podLogsDir: $NODE/pod-logs
serializeImagePulls: false
maxPods: 110
# How often each pod is synced, and so how soon a changed ConfigMap reaches its volume: the feature
# flags (sophia:flags) take effect within this plus the chassis' 2 s poll (default 1m).
syncFrequency: 10s
# No image GC (100 turns it off): the node's images are the platform's own, cached on purpose, and on
# a shared disk past the threshold the GC removed the sandbox image (containerd 1.6 does not pin it)
# as soon as no pod ran (after a destroy), so every later pod stayed ContainerCreating. The eviction
# thresholds below still guard the disk.
imageGCHighThresholdPercent: 100
imageGCLowThresholdPercent: 90
evictionHard: {memory.available: "200Mi", nodefs.available: "2%", imagefs.available: "2%"}
protectKernelDefaults: false
makeIPTablesUtilChains: true
EOF
  cat >"$NODE/kube-proxy-config.yaml" <<EOF
apiVersion: kubeproxy.config.k8s.io/v1alpha1
kind: KubeProxyConfiguration
clientConnection: {kubeconfig: $STATE/kube-proxy.kubeconfig}
hostnameOverride: $NODE_NAME
mode: iptables
clusterCIDR: $POD_CIDR
bindAddress: $NODE_IP
healthzBindAddress: 127.0.0.1:10256
metricsBindAddress: 127.0.0.1:10249
# NodePorts only on the node's bridge address, never on the machine's real interfaces.
nodePortAddresses: ["$NODE_IP/32"]
# Leave the host's conntrack sysctls alone.
conntrack: {maxPerCore: 0, min: 0, tcpEstablishedTimeout: 0s, tcpCloseWaitTimeout: 0s}
EOF
  cat >"$NODE/registry.yaml" <<EOF
version: 0.1
log: {level: warn}
storage:
  # A cache like Go's: kept across "make down", so images are pushed once per machine.
  filesystem: {rootdirectory: $SOPHIA_TOOLCHAIN_DIR/registry}
  delete: {enabled: true}
http:
  addr: 127.0.0.1:$REGISTRY_PORT
EOF
}

# The trace pipeline's images (toolchain/build.sh tracing-images), pushed to the local registry
# under the names the program gives them: their pods pull on every start (imagePullPolicy Always,
# as in dev and prod), and docker.io resolves to this registry only. Pushed once per build of the
# archive (a marker tag named after its checksum); the registry keeps them across "make down".
node_tracing_images() {
  local item tar ref repo marker
  wait_for registry 30 curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" || die "the registry did not start; see $LOGS/registry.log"
  for item in "otel-collector|otel/opentelemetry-collector:$COLLECTOR_VERSION" "jaeger|jaegertracing/jaeger:$JAEGER_VERSION"; do
    tar="$SHARE/images/${item%%|*}.tar" ref="${item#*|}" repo="${ref%%:*}"
    marker="sophia-$(sha256sum "$tar" | cut -c1-12)"
    curl -sfI "http://127.0.0.1:$REGISTRY_PORT/v2/$repo/manifests/$marker" >/dev/null && continue
    "${CTR[@]}" images import "$tar" >/dev/null
    "${CTR[@]}" images tag --force "docker.io/$ref" "127.0.0.1:$REGISTRY_PORT/$ref" >/dev/null
    "${CTR[@]}" images tag --force "docker.io/$ref" "127.0.0.1:$REGISTRY_PORT/$repo:$marker" >/dev/null
    "${CTR[@]}" images push --plain-http "127.0.0.1:$REGISTRY_PORT/$ref" >/dev/null
    "${CTR[@]}" images push --plain-http "127.0.0.1:$REGISTRY_PORT/$repo:$marker" >/dev/null
    log "pushed $ref (built from source by toolchain/build.sh) to the local registry"
  done
}

# ------------------------------------------------------------------ add-ons
kubernetes_endpoints_yaml() { # the API server for pods: kubernetes.default -> socat on the node IP
  cat <<EOF
apiVersion: v1
kind: Endpoints
metadata:
  name: kubernetes
  namespace: default
  labels: {endpointslice.kubernetes.io/skip-mirror: "true"}
subsets:
- addresses: [{ip: $NODE_IP}]
  ports: [{name: https, port: $API_NODE_PORT, protocol: TCP}]
---
apiVersion: discovery.k8s.io/v1
kind: EndpointSlice
metadata:
  name: kubernetes
  namespace: default
  labels: {kubernetes.io/service-name: kubernetes, endpointslice.kubernetes.io/managed-by: sophia-cluster-sh}
addressType: IPv4
endpoints:
- addresses: [$NODE_IP]
  conditions: {ready: true}
ports: [{name: https, port: $API_NODE_PORT, protocol: TCP}]
EOF
}

coredns_yaml() { # CoreDNS answers cluster.local (and reverse zones) only: no forward plugin.
  cat <<EOF
apiVersion: v1
kind: ServiceAccount
metadata: {name: coredns, namespace: kube-system}
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
metadata: {name: "system:coredns"}
rules:
- apiGroups: [""]
  resources: [endpoints, services, pods, namespaces]
  verbs: [list, watch]
- apiGroups: [discovery.k8s.io]
  resources: [endpointslices]
  verbs: [list, watch]
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
metadata: {name: "system:coredns"}
roleRef: {apiGroup: rbac.authorization.k8s.io, kind: ClusterRole, name: "system:coredns"}
subjects: [{kind: ServiceAccount, name: coredns, namespace: kube-system}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: coredns, namespace: kube-system}
data:
  Corefile: |
    .:53 {
        errors
        health :8080
        ready :8181
        kubernetes cluster.local in-addr.arpa ip6.arpa {
            pods insecure
        }
        cache 30
    }
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: coredns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  replicas: 1
  selector: {matchLabels: {k8s-app: kube-dns}}
  template:
    metadata: {labels: {k8s-app: kube-dns}}
    spec:
      serviceAccountName: coredns
      dnsPolicy: Default
      # Non-root, no capabilities: port 53 is opened to unprivileged users in the pod's own
      # network namespace (a safe sysctl). An added NET_BIND_SERVICE is not effective for a
      # non-root process under containerd 1.6 (no ambient capabilities).
      securityContext:
        runAsNonRoot: true
        runAsUser: 65532
        sysctls: [{name: net.ipv4.ip_unprivileged_port_start, value: "53"}]
      nodeSelector: {kubernetes.io/hostname: $NODE_NAME}
      containers:
      - name: coredns
        image: sophia.local/coredns:$COREDNS_VERSION
        imagePullPolicy: Never
        args: [-conf, /etc/coredns/Corefile]
        ports:
        - {name: dns, containerPort: 53, protocol: UDP}
        - {name: dns-tcp, containerPort: 53, protocol: TCP}
        securityContext:
          allowPrivilegeEscalation: false
          capabilities: {drop: [ALL]}
          readOnlyRootFilesystem: true
        resources:
          requests: {cpu: 50m, memory: 64Mi}
          limits: {memory: 170Mi}
        livenessProbe: {httpGet: {path: /health, port: 8080}, initialDelaySeconds: 10}
        readinessProbe: {httpGet: {path: /ready, port: 8181}}
        volumeMounts: [{name: config, mountPath: /etc/coredns, readOnly: true}]
      volumes: [{name: config, configMap: {name: coredns}}]
---
apiVersion: v1
kind: Service
metadata:
  name: kube-dns
  namespace: kube-system
  labels: {k8s-app: kube-dns}
spec:
  clusterIP: $CLUSTER_DNS
  selector: {k8s-app: kube-dns}
  ports:
  - {name: dns, port: 53, protocol: UDP}
  - {name: dns-tcp, port: 53, protocol: TCP}
EOF
}

# Storage: a StorageClass with no provisioner and a few hostPath PersistentVolumes under the
# node's state directory, bound on first use (what a local-path provisioner would make).
PV_COUNT="${SOPHIA_PV_COUNT:-4}"
storage_yaml() {
  local i
  cat <<EOF
apiVersion: storage.k8s.io/v1
kind: StorageClass
metadata: {name: sophia-local}
provisioner: kubernetes.io/no-provisioner
volumeBindingMode: WaitForFirstConsumer
reclaimPolicy: Retain
EOF
  for i in $(seq 0 $((PV_COUNT - 1))); do
    cat <<EOF
---
apiVersion: v1
kind: PersistentVolume
metadata: {name: sophia-local-pv$i, labels: {sophia.ai/local-volume: "true"}}
spec:
  capacity: {storage: 20Gi}
  accessModes: [ReadWriteOnce]
  persistentVolumeReclaimPolicy: Retain
  storageClassName: sophia-local
  hostPath: {path: $NODE/volumes/pv$i, type: Directory}
  nodeAffinity:
    required:
      nodeSelectorTerms:
      - matchExpressions: [{key: kubernetes.io/hostname, operator: In, values: [$NODE_NAME]}]
EOF
  done
}

node_ready() {
  [ "$(kc get node "$NODE_NAME" -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}')" = True ]
}
# metrics-server: upstream's own manifests (copied from its module by toolchain/build.sh) with a
# kustomize overlay: the local image, and kubelets reached on their InternalIP with a verified
# certificate (the cluster CA signs the kubelet's serving certificate) and only the real node
# scraped (kwok's simulated nodes have no kubelet to answer); half upstream's CPU request, as
# the 2-core node's budget is counted (docs/toolchain.md).
metrics_server_apply() {
  local dir="$NODE/metrics-server"
  rm -rf "$dir" && mkdir -p "$dir/base" && cp "$SHARE"/metrics-server/*.yaml "$dir/base/"
  cat >"$dir/kustomization.yaml" <<EOF
apiVersion: kustomize.config.k8s.io/v1beta1
kind: Kustomization
resources: [base]
images:
- {name: gcr.io/k8s-staging-metrics-server/metrics-server, newName: sophia.local/metrics-server, newTag: "$METRICS_SERVER_VERSION"}
patches:
- target: {kind: Deployment, name: metrics-server}
  patch: |-
    - op: replace
      path: /spec/template/spec/containers/0/args
      value:
      - --cert-dir=/tmp
      - --secure-port=10250
      - --kubelet-preferred-address-types=InternalIP
      - --kubelet-use-node-status-port
      - --kubelet-certificate-authority=/var/run/secrets/kubernetes.io/serviceaccount/ca.crt
      - --node-selector=sophia.ai/real-node=true
      - --metric-resolution=15s
    - {op: replace, path: /spec/template/spec/containers/0/imagePullPolicy, value: Never}
    - {op: replace, path: /spec/template/spec/containers/0/resources/requests/cpu, value: 50m}
    - {op: add, path: /spec/template/spec/nodeSelector/kubernetes.io~1hostname, value: $NODE_NAME}
EOF
  kc apply -k "$dir" >/dev/null
}

# The monitoring images are imported by their version tag (a new pin is a new tag, imported anew).
monitoring_images_import() {
  local img ref tag
  for img in "${MONITORING_IMAGES[@]}"; do
    case "$img" in
      prometheus-operator|prometheus-config-reloader) tag="$PROMETHEUS_OPERATOR_VERSION" ;;
      prometheus) tag="$PROMETHEUS_VERSION" ;;
      alertmanager) tag="$ALERTMANAGER_VERSION" ;;
      kube-state-metrics) tag="$KUBE_STATE_METRICS_VERSION" ;;
    esac
    ref="sophia.local/$img:$tag"
    if ! "${CTR[@]}" images ls -q | grep -qxF "$ref"; then
      "${CTR[@]}" images import "$SHARE/images/$img.tar" >/dev/null
      log "imported $ref into the node's containerd"
    fi
  done
}

# The Prometheus operator's CRDs beyond ServiceMonitor and PrometheusRule (which the stack applies
# itself): the kinds the operator watches, as kube-prometheus-stack's chart installs them in dev and
# prod. Server-side: the larger ones exceed client-side apply's annotation limit.
monitoring_crds_apply() {
  kc apply --server-side --force-conflicts -f "$SHARE/monitoring/crds" >/dev/null
}

coredns_ready() {
  [ "$(kc -n kube-system get deploy coredns -o jsonpath='{.status.readyReplicas}')" = 1 ]
}

# ------------------------------------------------------------------ up / down
node_up() {
  node_need
  local t0=$SECONDS
  mkdir -p "$NODE"
  # The kubelet links every container's log into /var/log/containers (a fixed path); remember
  # whether that directory was ours to make, so "down" removes it again.
  [ -d /var/log/containers ] || [ -f "$NODE/made-var-log-containers" ] || touch "$NODE/made-var-log-containers"
  node_net_up
  node_configs
  kubeconfig kubelet "$STATE/kubelet.kubeconfig"
  kubeconfig kube-proxy "$STATE/kube-proxy.kubeconfig"
  kubeconfig kube-router "$STATE/kube-router.kubeconfig"
  kubeconfig traefik "$STATE/traefik.kubeconfig"

  start registry serve "$NODE/registry.yaml"
  # Pods reach the API server through the kubernetes Service; it listens on 127.0.0.1 only.
  start_bin api-forwarder "$(command -v socat)" \
    "TCP-LISTEN:$API_NODE_PORT,bind=$NODE_IP,fork,reuseaddr" "TCP:127.0.0.1:$API_PORT"
  kubernetes_endpoints_yaml | kc apply -f - >/dev/null

  start_bin containerd "$(command -v containerd)" --config "$NODE/containerd/config.toml"
  wait_for containerd 60 "${CTR[@]}" version || die "containerd did not start; see $LOGS/containerd.log"
  local img
  for img in pause coredns metrics-server; do
    if ! "${CTR[@]}" images ls -q | grep -q "^sophia.local/$img:"; then
      "${CTR[@]}" images import "$SHARE/images/$img.tar" >/dev/null
      log "imported sophia.local/$img into the node's containerd"
    fi
  done
  node_tracing_images
  monitoring_images_import

  start kubelet --config="$NODE/kubelet-config.yaml" --kubeconfig="$STATE/kubelet.kubeconfig" \
    --root-dir="$NODE/kubelet" --hostname-override="$NODE_NAME" --node-ip="$NODE_IP" \
    --node-labels="sophia.ai/node-pool=cpu,sophia.ai/real-node=true" --v=1
  start kube-proxy --config="$NODE/kube-proxy-config.yaml" --v=1
  wait_for "node $NODE_NAME Ready" 120 node_ready || die "node not Ready; see $LOGS/kubelet.log"
  # NetworkPolicy: kube-router's policy controller only (routing and service proxy are off:
  # one node on one bridge needs no routing, and kube-proxy serves the Services).
  start kube-router --kubeconfig="$STATE/kube-router.kubeconfig" --hostname-override="$NODE_NAME" \
    --run-firewall=true --run-router=false --run-service-proxy=false --enable-cni=false \
    --service-cluster-ip-range="$SERVICE_CIDR" --health-port=0 --metrics-port=0 --v=1

  local i
  # hostPath volumes get no fsGroup: writable by the pods' non-root users (sticky, like /tmp).
  for i in $(seq 0 $((PV_COUNT - 1))); do mkdir -p "$NODE/volumes/pv$i" && chmod 1777 "$NODE/volumes/pv$i"; done
  storage_yaml | kc apply -f - >/dev/null
  coredns_yaml | kc apply -f - >/dev/null
  metrics_server_apply
  monitoring_crds_apply
  wait_for "CoreDNS" 120 coredns_ready || die "CoreDNS not ready; kubectl -n kube-system describe pod -l k8s-app=kube-dns"
  wait_for "registry 127.0.0.1:$REGISTRY_PORT" 30 curl -sf "http://127.0.0.1:$REGISTRY_PORT/v2/" \
    || die "registry did not start; see $LOGS/registry.log"
  log "real node $NODE_NAME ($NODE_IP) ready in $((SECONDS - t0))s"
}

node_down() {
  [ -d "$NODE" ] || return 0
  local id ns pid m
  stop kube-router
  "$SOPHIA_TOOLCHAIN_BIN/kube-router" --cleanup-config >/dev/null 2>&1 || true
  stop kubelet
  # Every container of this node: kill, delete (runc state lives in our RUNC_ROOT only).
  if [ -d "$RUNC_ROOT/k8s.io" ]; then
    for id in $(runc --root "$RUNC_ROOT/k8s.io" list -q 2>/dev/null); do
      runc --root "$RUNC_ROOT/k8s.io" kill "$id" KILL >/dev/null 2>&1 || true
    done
    sleep 1
    for id in $(runc --root "$RUNC_ROOT/k8s.io" list -q 2>/dev/null); do
      runc --root "$RUNC_ROOT/k8s.io" delete --force "$id" >/dev/null 2>&1 || true
    done
  fi
  # Sandbox network namespaces our containerd made (recorded in its sandboxes' specs).
  if pid_of containerd >/dev/null; then
    for ns in $("${CTR[@]}" containers ls -q 2>/dev/null | while read -r id; do
                 "${CTR[@]}" containers info "$id" 2>/dev/null | grep -o '/var/run/netns/cni-[0-9a-f-]*'; done | sort -u); do
      ip netns delete "$(basename "$ns")" 2>/dev/null && log "removed network namespace $(basename "$ns")"
    done
  fi
  stop containerd
  # containerd's shims for our socket (they outlive containerd by design).
  for pid in $(grep -las -- "$CONTAINERD_SOCK" /proc/[0-9]*/cmdline | cut -d/ -f3); do
    kill -9 "$pid" 2>/dev/null || true
  done
  stop kube-proxy
  "$SOPHIA_TOOLCHAIN_BIN/kube-proxy" --cleanup >/dev/null 2>&1 || true
  stop api-forwarder
  stop registry
  stop traefik
  # Mounts under the node's state (overlay rootfs, shm, secret/projected volumes, netns).
  for m in $(findmnt -rn -o TARGET | grep -F "$NODE/" | sort -r); do
    umount -l "$m" 2>/dev/null || true
  done
  # The kubelet's links to our containers' logs (the logs themselves are under $NODE).
  find /var/log/containers -maxdepth 1 -lname "$NODE/*" -delete 2>/dev/null || true
  [ -f "$NODE/made-var-log-containers" ] && rmdir /var/log/containers 2>/dev/null || true
  # The pods' cgroups (kubelet, cgroupfs driver: /kubepods in every v1 hierarchy).
  for m in /sys/fs/cgroup/*/kubepods; do
    [ -d "$m" ] && find "$m" -depth -type d -exec rmdir {} + 2>/dev/null || true
  done
  node_iptables_purge
  node_net_down
  log "real node stopped: processes, mounts, network namespaces, $BRIDGE and iptables rules removed"
}

# ------------------------------------------------------------------ gateway (Traefik)
# Traefik v3's Gateway API provider serves the stack's own Gateway and HTTPRoutes. The
# Gateway names the class `nginx` (NGINX Gateway Fabric in dev/prod, whose chart cannot be
# fetched here); locally that class is handed to Traefik's controller, so the Gateway and
# routes deployed are exactly prod's. Traefik runs on the host (a node component, like
# kube-proxy) and listens on 127.0.0.1 only; it reaches pods on the bridge.
GATEWAY_PORT="${SOPHIA_GATEWAY_PORT:-80}"
TRAEFIK_PING_PORT="${SOPHIA_TRAEFIK_PING_PORT:-18082}"

gatewayclass_yaml() {
  cat <<EOF2
apiVersion: gateway.networking.k8s.io/v1
kind: GatewayClass
metadata:
  name: nginx
  annotations:
    sophia.ai/note: "local cluster: the class prod's Gateway names, implemented by Traefik (toolchain/node.sh)"
spec:
  controllerName: traefik.io/gateway-controller
EOF2
}

gateway_crds_ready() { kc get crd gateways.gateway.networking.k8s.io httproutes.gateway.networking.k8s.io >/dev/null 2>&1; }

cmd_gateway() {
  [ -x "$SOPHIA_TOOLCHAIN_BIN/traefik" ] || die "traefik is not built; run toolchain/build.sh traefik"
  wait_for "Gateway API CRDs (applied by the stack)" 60 gateway_crds_ready || die "no Gateway API CRDs; run pulumi up first"
  # The standard channel's other kinds Traefik watches (the stack applies the four it uses).
  local gw
  gw="$(cd "$HERE/crds" && go mod download -json sigs.k8s.io/gateway-api | sed -n 's/.*"Dir": "\(.*\)",/\1/p')"
  kc apply --server-side -f "$gw/config/crd/standard/gateway.networking.k8s.io_grpcroutes.yaml" \
    -f "$gw/config/crd/standard/gateway.networking.k8s.io_backendtlspolicies.yaml" >/dev/null
  gatewayclass_yaml | kc apply -f - >/dev/null
  if ! pid_of traefik >/dev/null; then
    log "starting traefik (log $LOGS/traefik.log)"
    KUBECONFIG="$STATE/traefik.kubeconfig" setsid "$SOPHIA_TOOLCHAIN_BIN/traefik" \
      --entryPoints.web.address="127.0.0.1:$GATEWAY_PORT" \
      --entryPoints.ping.address="127.0.0.1:$TRAEFIK_PING_PORT" --ping=true --ping.entryPoint=ping \
      --providers.kubernetesGateway=true --providers.kubernetesGateway.statusAddress.ip=127.0.0.1 \
      --global.checkNewVersion=false --global.sendAnonymousUsage=false --log.level=INFO \
      >>"$LOGS/traefik.log" 2>&1 </dev/null &
    echo $! >"$PIDS/traefik.pid"
  else
    log "traefik already running (pid $(pid_of traefik))"
  fi
  wait_for "traefik" 60 curl -sf "http://127.0.0.1:$TRAEFIK_PING_PORT/ping" || die "traefik did not start; see $LOGS/traefik.log"
  # Remembered with the cluster's state: `up` after a `stop` (or a reboot) starts it again.
  touch "$STATE/gateway"
}
