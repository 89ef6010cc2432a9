"""Settings from the environment and from secret files (one file per key, as the
platform mounts a service's Secret under $SOPHIA_SECRETS_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_SECRETS_DIR = "/var/run/secrets/sophia"


def secrets_dir() -> str | None:
    path = Path(os.environ.get("SOPHIA_SECRETS_DIR", DEFAULT_SECRETS_DIR))
    # pydantic-settings warns about a missing directory; a service without secrets has none.
    return str(path) if path.is_dir() else None


class ServiceSettings(BaseSettings):
    """Subclass per service; field names match env vars and secret file names (case-insensitive)."""

    model_config = SettingsConfigDict(case_sensitive=False, extra="ignore")

    service_name: str = "service"
    port: int = 8080
    log_level: str = "info"
    internal_api_token: str | None = None
    max_body_bytes: int = 1 << 20  # request bodies past this are refused (413) before any handler runs

    @classmethod
    def load(cls, **overrides):
        return cls(_secrets_dir=secrets_dir(), **overrides)
