#!/usr/bin/env bash
# `make dev`: every service that has code, running locally with uvicorn on its own port
# (8101, 8102, ... in folder order), a local redis-server if none answers on 6379, and
# each service's callees' URLs pointed at the local ports. Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
  pids+=($!)
  echo "[dev] redis-server on 127.0.0.1:6379"
fi

port=8100 env_urls=()
declare -A ports
for dir in services/*/; do
  name=$(basename "$dir"); pkg=${name//-/_}; port=$((port + 1))
  [[ -f "$dir$pkg/main.py" ]] || continue
  ports[$name]=$port
  env_urls+=("$(echo "${name^^}" | tr - _)_URL=http://127.0.0.1:$port")
done
for name in "${!ports[@]}"; do
  pkg=${name//-/_}
  env "${env_urls[@]}" PORT="${ports[$name]}" REDIS_URL="redis://127.0.0.1:6379/0" SOPHIA_SECRETS_DIR="${SOPHIA_SECRETS_DIR:-.state/dev-secrets}" \
    PYTHONPATH="libs:services/$name" $PY -m uvicorn --factory "$pkg.main:build_app" --host 127.0.0.1 --port "${ports[$name]}" &
  pids+=($!)
  echo "[dev] $name on http://127.0.0.1:${ports[$name]} (MCP at /mcp where it has one)"
done
[[ ${#ports[@]} -gt 0 ]] || { echo "[dev] no service has code yet"; exit 1; }
wait
