#!/usr/bin/env bash
# `make up`: bring up the local stack. Until the hermetic Pulumi engine and local
# control plane are available on this machine (toolchain/), it does what can be done
# offline and says so: validate the local stack's config and manifests and render
# every object it would deploy into render/local.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
echo "[up] validating the local stack and rendering its objects (no cluster needed)"
$PY -m infra.render --stack local --out render/local
echo "[up] done: config valid, objects written to render/local/."
echo "[up] NOT deployed: the local Pulumi engine and Kubernetes control plane are not built here yet;"
echo "[up] nothing was created in any cluster."
