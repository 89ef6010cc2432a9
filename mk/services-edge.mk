# The edge services (mcp-github, mcp-hubspot, orchestrator), one at a time, on the ports
# `make dev` gives them (docs/services.md), with their callees pointed at the `make dev`
# ports; secrets (GITHUB_TOKEN, HUBSPOT_ACCESS_TOKEN) are files in $SOPHIA_SECRETS_DIR.
.PHONY: dev-mcp-github dev-mcp-hubspot dev-orchestrator test-edge

EDGE_SECRETS ?= $(or $(SOPHIA_SECRETS_DIR),.state/dev-secrets)
EDGE_ENV = SOPHIA_SECRETS_DIR=$(EDGE_SECRETS) \
  MCP_CONTEXT_URL=http://127.0.0.1:8104 MCP_GITHUB_URL=http://127.0.0.1:8105 \
  MCP_HUBSPOT_URL=http://127.0.0.1:8106 MCP_AGENTS_URL=http://127.0.0.1:8103 AGNO_TEAMS_URL=http://127.0.0.1:8102
# $(1): service folder, $(2): port
edge-run = PORT=$(2) $(EDGE_ENV) \
  $(PY) -m uvicorn --factory $(subst -,_,$(1)).main:build_app --host 127.0.0.1 --port $(2)

dev-mcp-github: bootstrap ## run mcp-github alone on 127.0.0.1:8105 (REST /github, MCP /mcp)
	@$(call edge-run,mcp-github,8105)

dev-mcp-hubspot: bootstrap ## run mcp-hubspot alone on 127.0.0.1:8106 (REST /hubspot, MCP /mcp)
	@$(call edge-run,mcp-hubspot,8106)

dev-orchestrator: bootstrap ## run the legacy bridge alone on 127.0.0.1:8107 (/api/...)
	@$(call edge-run,orchestrator,8107)

test-edge: bootstrap ## the edge services' tests only (mcp-github, mcp-hubspot, orchestrator)
	@$(PY) -m pytest -q services/mcp-github services/mcp-hubspot services/orchestrator
