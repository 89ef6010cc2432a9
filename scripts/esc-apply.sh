#!/usr/bin/env bash
# Pushes the ESC environments in esc/ to Pulumi Cloud (needs the Pulumi CLI, logged in to the org
# that owns the sophia project; ESC_ORG=<org> if it isn't your default). Order: what is imported
# first. Each is checked offline first (esc-eval check); an existing environment keeps its
# rotators' state (the live credentials): `esc-eval graft` copies it into the pushed definition.
#   scripts/esc-apply.sh            push all
#   DRY_RUN=1 scripts/esc-apply.sh  print what would be pushed
set -euo pipefail
cd "$(dirname "$0")/.."
ESC_EVAL=.venv/bin/esc-eval
ENVS=(base dev-logins prod-logins dev prod)
org=${ESC_ORG:+$ESC_ORG/}

"$ESC_EVAL" check "${ENVS[@]/#/sophia/}"
if ! command -v pulumi >/dev/null; then
  [[ -n "${DRY_RUN:-}" ]] || { echo "esc-apply: the Pulumi CLI is needed (pulumi env ...)" >&2; exit 1; }
  pulumi() { return 1; }  # dry run without the CLI: every environment shows as new
fi
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
for env in "${ENVS[@]}"; do
  name="${org}sophia/$env"
  if pulumi env get "$name" --definition >"$tmp/live.yaml" 2>/dev/null; then
    "$ESC_EVAL" graft "$tmp/live.yaml" "esc/$env.yaml" >"$tmp/next.yaml"
    action=(pulumi env edit "$name" --file "$tmp/next.yaml")
  else
    cp "esc/$env.yaml" "$tmp/next.yaml"
    action=(pulumi env init "$name" --file "$tmp/next.yaml")
  fi
  if [[ -n "${DRY_RUN:-}" ]]; then
    echo "# ${action[*]}"; cat "$tmp/next.yaml"
  else
    "${action[@]}"
  fi
done
