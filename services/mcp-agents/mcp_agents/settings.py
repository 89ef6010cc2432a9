"""mcp-agents settings: env vars and secret files (field names are the variable names)."""

from __future__ import annotations

from urllib.parse import quote

from pydantic import Field

from sophia_chassis import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "mcp-agents"
    redis_url: str = "redis://localhost:6379/0"
    redis_password: str | None = None  # secret file REDIS_PASSWORD (the service's ACL user)
    # PostgreSQL: a full URL, or libpq's PG* variables the platform sets (PGPASSWORD is a secret file).
    database_url: str | None = None
    pghost: str = "localhost"
    pgport: int = 5432
    pguser: str = "sophia"
    pgdatabase: str = "sophia"
    pgpassword: str | None = None
    agno_coordinator_url: str = "http://agno-coordinator:8080"
    mcp_context_url: str | None = "http://mcp-context:8080"
    mcp_github_url: str | None = "http://mcp-github:8080"
    mcp_hubspot_url: str | None = "http://mcp-hubspot:8080"
    workers: int = 2  # concurrent tasks per replica (each mostly waits on the model)
    visibility_timeout_seconds: float = 60.0  # a task unacknowledged this long is re-claimed
    max_attempts: int = 3
    default_max_steps: int = 8
    default_time_limit_seconds: float = 120.0
    model_timeout_seconds: float = 60.0
    database_wait_seconds: float = 3.0  # a request waits this long for PostgreSQL, then answers 503
    # GET /agents/tools answers the last listing and relists in the background once it is this old.
    tools_listing_max_age_seconds: float = Field(30.0, ge=0)

    def conninfo(self) -> str:
        if self.database_url:
            return self.database_url
        password = f":{quote(self.pgpassword, safe='')}" if self.pgpassword else ""
        return f"postgresql://{quote(self.pguser, safe='')}{password}@{self.pghost}:{self.pgport}/{self.pgdatabase}"

    def mcp_servers(self) -> dict[str, str]:
        urls = {"context": self.mcp_context_url, "github": self.mcp_github_url, "hubspot": self.mcp_hubspot_url}
        return {name: url for name, url in urls.items() if url}
