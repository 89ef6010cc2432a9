# The services themselves, run locally (no cluster), each on its manifest's dev_port.
.PHONY: dev
dev: bootstrap ## run every service locally (uvicorn), with a local Redis and PostgreSQL
	@scripts/dev.sh

# `make dev-<service>` (e.g. dev-mcp-github): that service alone, its callees' URLs pointed at
# the `make dev` ports; secrets are files in $SOPHIA_SECRETS_DIR (default .state/dev-secrets).
dev-%: bootstrap
	@scripts/dev.sh $*

# Traces of `make dev` without a trace store: an OTLP/HTTP receiver on 127.0.0.1:4318 printing each
# trace as a tree; start the services with OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318.
# With TASK=<agent task id> or TRACE=<trace id>: that trace, read from the local stack's Jaeger.
.PHONY: traces
traces: bootstrap ## print the traces of `make dev` (OTLP/HTTP on 127.0.0.1:4318); TASK=/TRACE=: from the local stack's Jaeger
	@source toolchain/env.sh && .venv/bin/python scripts/traces.py $(if $(TASK),--task $(TASK)) $(if $(TRACE),--trace $(TRACE))
