# Source this file (bash/zsh): puts the hermetic toolchain on PATH and configures Pulumi to
# run offline against a file backend in the project, and kubectl/pulumi-kubernetes against
# the local control plane started by toolchain/cluster.sh.
#   source toolchain/env.sh
# Every variable can be overridden by setting it before sourcing.

_sophia_tc_here="$(cd "$(dirname "${BASH_SOURCE[0]:-$0}")" && pwd)"
SOPHIA_ROOT="${SOPHIA_ROOT:-$(cd "$_sophia_tc_here/.." && pwd)}"
# shellcheck source=versions.env
. "$_sophia_tc_here/versions.env"
SOPHIA_TOOLCHAIN_DIR="${SOPHIA_TOOLCHAIN_CACHE:-$HOME/.cache/sophia-toolchain}/$TOOLCHAIN_VERSION"
SOPHIA_TOOLCHAIN_BIN="$SOPHIA_TOOLCHAIN_DIR/bin"
# CRD manifests (toolchain/build.sh piece `crds`) the local stack applies.
SOPHIA_CRDS_DIR="$SOPHIA_TOOLCHAIN_DIR/share/crds"
export SOPHIA_ROOT SOPHIA_TOOLCHAIN_DIR SOPHIA_TOOLCHAIN_BIN SOPHIA_CRDS_DIR

case ":$PATH:" in
  *":$SOPHIA_TOOLCHAIN_BIN:"*) ;;
  *) export PATH="$SOPHIA_TOOLCHAIN_BIN:$PATH" ;;
esac

# Pulumi: local file backend in the project (.state/ is gitignored), no network.
mkdir -p "$SOPHIA_ROOT/.state/pulumi"
export PULUMI_BACKEND_URL="${PULUMI_BACKEND_URL:-file://$SOPHIA_ROOT/.state/pulumi}"
# Plugin cache and credentials live with the toolchain, not in ~/.pulumi.
export PULUMI_HOME="${PULUMI_HOME:-$SOPHIA_TOOLCHAIN_DIR/pulumi-home}"
export PULUMI_CONFIG_PASSPHRASE="${PULUMI_CONFIG_PASSPHRASE-local-only-not-a-secret}"
export PULUMI_SKIP_UPDATE_CHECK=true
export PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION=true
export PULUMI_SKIP_CONFIRMATIONS="${PULUMI_SKIP_CONFIRMATIONS:-false}"
export PULUMI_DIY_BACKEND_NO_LEGACY_WARNING=true
# Resource operations at once: the engine's default is 4 per core, 8 here, and each awaited workload
# (a Deployment until rolled out) holds one for its whole rollout, so the rest queued behind them
# (issue 18: the local stack's first up). The local cluster takes them all at once.
export PULUMI_PARALLEL="${PULUMI_PARALLEL:-64}"
# No automatic log: Pulumi 3.259 writes every engine log record, the verbose levels included (each
# resource's properties), JSON-encoded, gzip-compressed and encrypted, to $PULUMI_HOME/logs on every
# command, with no setting to turn it off. That was half the engine's CPU in a no-op `pulumi up`
# (issue 18, part 5) and 0.5 GB of disk here. A file where the directory would be makes the CLI run
# without it ("automatic logging unavailable"). `-v=N --logtostderr` still logs on request. Only in
# the toolchain's own PULUMI_HOME, never in one set before sourcing this.
if [ "$PULUMI_HOME" = "$SOPHIA_TOOLCHAIN_DIR/pulumi-home" ] && [ ! -f "$PULUMI_HOME/logs" ]; then
  mkdir -p "$PULUMI_HOME"
  rm -rf "$PULUMI_HOME/logs"
  echo "Pulumi's automatic logging is off here: see toolchain/env.sh" >"$PULUMI_HOME/logs"
fi

# Control plane (toolchain/cluster.sh writes it).
export KUBECONFIG="${KUBECONFIG:-$SOPHIA_ROOT/.state/kubeconfig}"

unset _sophia_tc_here
