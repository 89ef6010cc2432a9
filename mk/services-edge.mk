# The edge services (mcp-github, mcp-hubspot, orchestrator); run one alone with
# `make dev-<service>` (mk/services.mk).
.PHONY: test-edge

test-edge: bootstrap ## the edge services' tests only (mcp-github, mcp-hubspot, orchestrator)
	@$(PY) -m pytest -q services/mcp-github services/mcp-hubspot services/orchestrator
