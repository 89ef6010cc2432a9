"""orchestrator settings: env vars and secret files (field names are the variable names)."""

from __future__ import annotations

from sophia_chassis import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "orchestrator"
    mcp_context_url: str = "http://mcp-context"
    mcp_github_url: str = "http://mcp-github"
    mcp_hubspot_url: str = "http://mcp-hubspot"
    mcp_agents_url: str = "http://mcp-agents"
    agno_teams_url: str = "http://agno-teams"

    def url_of(self, service: str) -> str:
        return getattr(self, service.replace("-", "_") + "_url").rstrip("/")
