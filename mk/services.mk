# The services themselves, run locally (no cluster), each on its manifest's dev_port.
.PHONY: dev
dev: bootstrap ## run every service locally (uvicorn), with a local Redis and PostgreSQL
	@scripts/dev.sh

# `make dev-<service>` (e.g. dev-mcp-github): that service alone, its callees' URLs pointed at
# the `make dev` ports; secrets are files in $SOPHIA_SECRETS_DIR (default .state/dev-secrets).
dev-%: bootstrap
	@scripts/dev.sh $*
