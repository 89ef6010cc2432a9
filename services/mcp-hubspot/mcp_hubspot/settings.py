"""mcp-hubspot settings: env vars and secret files (field names are the variable names)."""

from __future__ import annotations

from sophia_chassis import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "mcp-hubspot"
    hubspot_api_url: str = "https://api.hubapi.com"
    hubspot_access_token: str | None = None  # secret file HUBSPOT_ACCESS_TOKEN (private app)
    hubspot_timeout_seconds: float = 20.0
    hubspot_attempts: int = 3
    hubspot_backoff_max_seconds: float = 10.0  # the longest Retry-After slept through
    # /readyz asks HubSpot at most this often (probes every few seconds would spend the API quota).
    hubspot_ready_cache_seconds: float = 30.0
