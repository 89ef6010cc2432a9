"""agno-teams settings: env vars and secret files (field names are the variable names)."""

from __future__ import annotations

from sophia_chassis import ServiceSettings
from sophia_chassis.auth import ServiceCredentials


class Settings(ServiceSettings):
    service_name: str = "agno-teams"
    # Models are reached only through agno-coordinator's OpenAI-compatible /v1.
    agno_coordinator_url: str | None = "http://agno-coordinator:8080"
    model_api_key: str | None = None  # secret file MODEL_API_KEY; else this service's token for agno-coordinator
    model_id: str = "auto"  # the coordinator routes "auto" by complexity, cost and latency
    model_timeout_seconds: float = 60.0
    model_max_retries: int = 2  # the OpenAI client's own retries (honours Retry-After)
    team_timeout_seconds: float = 180.0  # one whole team run, every model and tool call in it
    mcp_hubspot_url: str = "http://mcp-hubspot:8080"
    mcp_context_url: str = "http://mcp-context:8080"
    peer_timeout_seconds: float = 20.0
    peer_attempts: int = 3
    # Newest engagements read per type (notes, calls, emails, meetings) for one company or deal.
    max_engagements_per_type: int = 100
    support_namespace: str = "support"  # mcp-context namespace holding support signals

    def model_key(self) -> str | None:
        if self.model_api_key:
            return self.model_api_key
        token = ServiceCredentials(self.service_tokens_dir).headers("agno-coordinator", None).get("Authorization")
        return token.removeprefix("Bearer ") if token else None

    def model_missing(self) -> str | None:
        """Why no model can be called, or None when one can."""
        missing = [
            name
            for name, value in (
                ("AGNO_COORDINATOR_URL", self.agno_coordinator_url),
                ("MODEL_API_KEY (or a service token for agno-coordinator)", self.model_key()),
            )
            if not value
        ]
        return f"no model configured: set {' and '.join(missing)}" if missing else None
