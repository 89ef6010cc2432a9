#!/usr/bin/env bash
# scripts/own-cluster.sh NAME COMMAND...: run COMMAND against a fresh local cluster of its own, with
# the real node: cluster state in .state/NAME/cluster (SOPHIA_CLUSTER_STATE), Pulumi state in
# .state/NAME/pulumi (PULUMI_BACKEND_URL, emptied first), the base and data-store images in the
# registry. The ports and the real node are machine-wide, so `make up`'s cluster, if running, is
# stopped for the run with its state kept, and resumed afterwards, stack and data as they were.
# Used by `make e2e` (scripts/e2e.sh) and `make bench-program` (bench/bench_program.py).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -ge 2 ] || { echo "usage: $0 NAME COMMAND..." >&2; exit 2; }
name=$1; shift
source toolchain/env.sh
toolchain/build.sh

# The make-up cluster's state, as cluster.sh finds it (the run below exports its own).
user_state="${SOPHIA_CLUSTER_STATE:-$PWD/.state/cluster}"
resume_user_cluster=0
if [ -d "$user_state" ]; then
  if toolchain/cluster.sh status >/dev/null 2>&1; then resume_user_cluster=1; fi
  echo "[$name] stopping the make-up cluster for the run (its state is kept)"
  toolchain/cluster.sh stop
fi

finish() {
  local rc=$?
  SOPHIA_CLUSTER_STATE="$PWD/.state/$name/cluster" toolchain/cluster.sh down || rc=1
  if [ "$resume_user_cluster" = 1 ]; then
    echo "[$name] resuming the make-up cluster"
    # With its own state: the run's SOPHIA_CLUSTER_STATE is still exported here, and `up` with it
    # started a fresh cluster of the run's instead (and left it running).
    SOPHIA_CLUSTER_STATE="$user_state" toolchain/cluster.sh up >/dev/null \
      || { echo "[$name] could not resume it: run make up" >&2; rc=1; }
  fi
  exit $rc
}
trap finish EXIT

export SOPHIA_CLUSTER_STATE="$PWD/.state/$name/cluster"
toolchain/cluster.sh down
toolchain/cluster.sh up
toolchain/image-build.sh base >/dev/null
toolchain/image-build.sh mirror "127.0.0.1:${SOPHIA_REGISTRY_PORT:-15000}"
rm -rf ".state/$name/pulumi"
export PULUMI_BACKEND_URL="file://$PWD/.state/$name/pulumi"
"$@"
