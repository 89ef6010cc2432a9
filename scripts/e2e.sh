#!/usr/bin/env bash
# `make e2e`: the real engine on a fresh local cluster of its own (scripts/own-cluster.sh: cluster
# state in .state/e2e/cluster, Pulumi state in .state/e2e/pulumi, `make up`'s cluster stopped for
# the run and resumed afterwards).
set -euo pipefail
cd "$(dirname "$0")/.."
exec scripts/own-cluster.sh e2e .venv/bin/python -m pytest -q -p no:cacheprovider e2e "$@"
