"""mcp-github settings: env vars and secret files (field names are the variable names)."""

from __future__ import annotations

from sophia_chassis import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "mcp-github"
    github_api_url: str = "https://api.github.com"
    github_token: str | None = None  # secret file GITHUB_TOKEN; unauthenticated (60 requests/h) without it
    github_timeout_seconds: float = 15.0
    github_attempts: int = 3
    github_backoff_max_seconds: float = 10.0
    # A rate-limit wait up to this long is slept through; a longer one is answered 429 + Retry-After.
    github_max_rate_limit_wait_seconds: float = 30.0
    mcp_context_url: str = "http://mcp-context:8080"
    redis_url: str | None = None  # index state; in-process without it
    redis_password: str | None = None
    index_max_file_bytes: int = 200_000
    index_max_files: int = 5000
    index_chunk_chars: int = 1500
