#!/usr/bin/env bash
# `make up`: deploy the local stack for real — build (or reuse) the hermetic toolchain,
# start the local control plane, `pulumi up` the local stack, print what runs.
# `make down` (scripts/up.sh down): destroy the stack and stop the control plane.
set -euo pipefail
cd "$(dirname "$0")/.."
source toolchain/env.sh
PY=.venv/bin/python

if [[ "${1:-up}" == "down" ]]; then
  if toolchain/cluster.sh status >/dev/null 2>&1; then
    $PY scripts/local_stack.py down
  else
    echo "[down] control plane not running; nothing to destroy"
  fi
  toolchain/cluster.sh down
  exit 0
fi

started=$SECONDS
step() { # step N TITLE COMMAND...: run one step, then say how long it took
  local n=$1 title=$2 t0=$SECONDS; shift 2
  echo "[up] step $n/3: $title"
  "$@"
  echo "[up] step $n/3: $title done in $((SECONDS - t0))s"
}
step 1 "toolchain (the first run on a machine builds it from source)" toolchain/build.sh
step 2 "local control plane" toolchain/cluster.sh up
step 3 "pulumi up --stack local" $PY scripts/local_stack.py up
echo "[up] done in $((SECONDS - started))s; KUBECONFIG=.state/kubeconfig, 'source toolchain/env.sh' for pulumi/kubectl"
