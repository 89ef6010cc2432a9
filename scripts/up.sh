#!/usr/bin/env bash
# `make up`: deploy the local stack for real — build (or reuse) the hermetic toolchain,
# start the local cluster (control plane, a real node, simulated GPU nodes), make the
# third-party images from Debian packages, `pulumi up` the local stack (which builds every
# service's image), start the gateway, and print what answers through it.
# `make down` (scripts/up.sh down): destroy the stack and stop everything.
set -euo pipefail
cd "$(dirname "$0")/.."
source toolchain/env.sh
PY=.venv/bin/python
REGISTRY="127.0.0.1:${SOPHIA_REGISTRY_PORT:-15000}"

if [[ "${1:-up}" == "down" ]]; then
  if toolchain/cluster.sh status >/dev/null 2>&1; then
    $PY scripts/local_stack.py down
  else
    echo "[down] cluster not running; nothing to destroy"
  fi
  toolchain/cluster.sh down
  exit 0
fi

started=$SECONDS
STEPS=6
step() { # step N TITLE COMMAND...: run one step, then say how long it took
  local n=$1 title=$2 t0=$SECONDS; shift 2
  echo "[up] step $n/$STEPS: $title"
  "$@"
  echo "[up] step $n/$STEPS: $title done in $((SECONDS - t0))s"
}
images() {
  toolchain/image-build.sh base >/dev/null
  toolchain/image-build.sh mirror "$REGISTRY"
}
step 1 "toolchain (the first run on a machine builds it from source)" toolchain/build.sh
step 2 "local cluster (control plane, real node, simulated GPU nodes)" toolchain/cluster.sh up
step 3 "base and data-store images from Debian packages (once per machine)" images
step 4 "pulumi up --stack local (builds the services' images)" $PY scripts/local_stack.py up
step 5 "gateway (Traefik serving the stack's Gateway)" toolchain/cluster.sh gateway
step 6 "requests through the gateway" $PY scripts/local_stack.py report
echo "[up] done in $((SECONDS - started))s; KUBECONFIG=.state/kubeconfig, 'source toolchain/env.sh' for pulumi/kubectl"
