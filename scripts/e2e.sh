#!/usr/bin/env bash
# `make e2e`: the real engine on a fresh local cluster of its own. Its cluster state
# (.state/e2e/cluster) and Pulumi state (.state/e2e/pulumi) are apart from `make up`'s: the
# user's cluster, if running, is stopped with its state kept for the run (the ports and the
# real node are machine-wide) and resumed afterwards, stack and data as they were.
set -euo pipefail
cd "$(dirname "$0")/.."
source toolchain/env.sh
toolchain/build.sh

resume_user_cluster=0
if [ -d .state/cluster ]; then
  if toolchain/cluster.sh status >/dev/null 2>&1; then resume_user_cluster=1; fi
  echo "[e2e] stopping the make-up cluster for the run (its state is kept)"
  toolchain/cluster.sh stop
fi

finish() {
  local rc=$?
  SOPHIA_CLUSTER_STATE="$PWD/.state/e2e/cluster" toolchain/cluster.sh down || rc=1
  if [ "$resume_user_cluster" = 1 ]; then
    echo "[e2e] resuming the make-up cluster"
    toolchain/cluster.sh up >/dev/null || { echo "[e2e] could not resume it: run make up" >&2; rc=1; }
  fi
  exit $rc
}
trap finish EXIT

export SOPHIA_CLUSTER_STATE="$PWD/.state/e2e/cluster"
toolchain/cluster.sh down
toolchain/cluster.sh up
toolchain/image-build.sh base >/dev/null
toolchain/image-build.sh mirror "127.0.0.1:${SOPHIA_REGISTRY_PORT:-15000}"
rm -rf .state/e2e/pulumi
PULUMI_BACKEND_URL="file://$PWD/.state/e2e/pulumi" .venv/bin/python -m pytest -q -p no:cacheprovider e2e "$@"
