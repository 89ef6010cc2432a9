#!/usr/bin/env bash
# `make dev`: every service, running locally with uvicorn on the `dev_port` its manifest
# (services/<name>/service.yaml) declares, a local redis-server and PostgreSQL if none answer
# on 6379 and 5432, and each service's callees' URLs pointed at those ports.
# `scripts/dev.sh <name>...` (`make dev-<name>`): only the services named.
# Ctrl-C stops them all.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=.venv/bin/python
pids=()
trap 'kill "${pids[@]}" 2>/dev/null; wait 2>/dev/null' EXIT INT TERM

# name -> dev_port of every service that declares one, read by the program's own manifest parser.
declare -A ports
while read -r name port; do ports[$name]=$port; done < <($PY -c '
from infra.discovery import discover
for spec in discover():
    if spec.dev_port is not None:
        print(spec.name, spec.dev_port)')
env_urls=()
for name in "${!ports[@]}"; do env_urls+=("$(echo "${name^^}" | tr - _)_URL=http://127.0.0.1:${ports[$name]}"); done
((${#ports[@]})) || { echo "[dev] no service declares a dev_port (services/<name>/service.yaml)"; exit 1; }
run=("$@")
((${#run[@]})) || mapfile -t run < <(printf '%s\n' "${!ports[@]}" | sort)
for name in "${run[@]}"; do
  [[ -n "${ports[$name]:-}" ]] || { echo "[dev] $name: no such service with a dev_port (known: ${!ports[*]})"; exit 1; }
done

if ! redis-cli -p 6379 ping >/dev/null 2>&1; then
  redis-server --port 6379 --bind 127.0.0.1 --save "" --appendonly no --daemonize no >/dev/null &
  pids+=($!)
  echo "[dev] redis-server on 127.0.0.1:6379"
fi

# mcp-agents keeps its tasks in PostgreSQL: a throwaway local cluster unless one answers on 5432.
DATABASE_URL=${DATABASE_URL:-postgresql://sophia@127.0.0.1:5432/postgres}
if ! pg_isready -q -h 127.0.0.1 -p 5432 2>/dev/null; then
  bin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
  data=$PWD/.state/dev-postgres run_as=()
  [[ $(id -u) -eq 0 ]] && run_as=(runuser -u postgres --)  # initdb refuses to run as root
  if [[ ! -f "$data/PG_VERSION" ]]; then
    mkdir -p "$data"
    if ((${#run_as[@]})); then chown postgres: "$data"; fi
    "${run_as[@]}" "$bin/initdb" -D "$data" -U sophia --auth=trust -E UTF8 >/dev/null
  fi
  "${run_as[@]}" "$bin/postgres" -D "$data" -p 5432 -h 127.0.0.1 -k "$data" >.state/dev-postgres.log 2>&1 &
  pids+=($!)
  until pg_isready -q -h 127.0.0.1 -p 5432; do
    kill -0 "${pids[-1]}" 2>/dev/null || { echo "[dev] postgres did not start: .state/dev-postgres.log"; exit 1; }
    sleep 0.1
  done
  echo "[dev] postgres on 127.0.0.1:5432 (data in .state/dev-postgres)"
fi

# Authentication on, as deployed: an API key for tenant `local`, and a local issuer in the
# cluster's place for the services' tokens to each other (scripts/dev_identity.py).
coproc IDENTITY { exec $PY scripts/dev_identity.py --secrets-dir "${SOPHIA_SECRETS_DIR:-.state/dev-secrets}"; }
pids+=("$IDENTITY_PID")
declare -A identity
while read -r line <&"${IDENTITY[0]}"; do
  [[ $line == ready ]] && break
  identity[${line%%=*}]=${line#*=}
done
[[ -n "${identity[SOPHIA_API_KEY]:-}" ]] || { echo "[dev] scripts/dev_identity.py did not start"; exit 1; }
echo "[dev] API key (tenant 'local', every scope): export SOPHIA_API_KEY=${identity[SOPHIA_API_KEY]}"

for name in "${run[@]}"; do
  allowed=ALLOWED_CALLERS_$(echo "${name^^}" | tr - _)
  auth_env=(SERVICE_TOKEN_ISSUER="${identity[SERVICE_TOKEN_ISSUER]}" SERVICE_TOKEN_JWKS_URL="${identity[SERVICE_TOKEN_JWKS_URL]}"
    SERVICE_TOKEN_NAMESPACE="${identity[SERVICE_TOKEN_NAMESPACE]}" ALLOWED_CALLERS="${identity[$allowed]:-}"
    SERVICE_TOKENS_DIR="$PWD/.state/dev-tokens/$name")
  # QDRANT_PATH: mcp-context keeps its memories across restarts of `make dev`.
  env "${env_urls[@]}" "${auth_env[@]}" PORT="${ports[$name]}" REDIS_URL="redis://127.0.0.1:6379/0" QDRANT_PATH="${QDRANT_PATH:-$PWD/.state/dev-qdrant}" DATABASE_URL="$DATABASE_URL" SOPHIA_SECRETS_DIR="${SOPHIA_SECRETS_DIR:-.state/dev-secrets}" \
    $PY -m uvicorn --factory "${name//-/_}.main:build_app" --http sophia_chassis.server:HttpProtocol --host 127.0.0.1 --port "${ports[$name]}" &
  pids+=($!)
  echo "[dev] $name on http://127.0.0.1:${ports[$name]} (MCP at /mcp where it has one)"
done
wait
