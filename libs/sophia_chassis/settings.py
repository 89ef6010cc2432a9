"""Settings from the environment and from secret files (one file per key, as the
platform mounts a service's Secret under $SOPHIA_SECRETS_DIR)."""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import Field
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
    max_body_bytes: int = 1 << 20  # request bodies past this are refused (413) before any handler runs
    # Who may call (sophia_chassis.auth). `off` only for functional tests of other concerns.
    auth_mode: str = Field("required", pattern="^(required|off)$")
    api_keys: str | None = None  # secret file API_KEYS: JSON [{id, tenant, scopes, sha256, revoked}]
    oidc_issuer: str | None = None
    oidc_audience: str | None = None  # default: the service's name
    oidc_jwks_url: str | None = None
    oidc_tenant_claim: str = "tenant"
    # A token naming an unseen key id refetches the issuer's JWKS, at most this often.
    jwks_min_refresh_seconds: float = Field(30.0, ge=0)
    service_token_issuer: str | None = None  # the cluster's ServiceAccount token issuer
    service_token_jwks_url: str | None = None
    service_token_ca_file: str | None = None  # CA bundle for the JWKS URL (the API server's)
    service_token_jwks_token_file: str | None = None  # a token the JWKS URL accepts (the API server's audience)
    service_token_namespace: str | None = None  # callers' namespace (the platform's)
    allowed_callers: str = ""  # comma-separated service names (from the manifests' calls)
    service_tokens_dir: str | None = None  # where this service's tokens for its callees are mounted
    rate_limit_per_minute: int = Field(600, ge=1)
    rate_limit_burst: int = Field(60, ge=1)
    # Admission control of the routes a service names (create_app's limited_paths): this many run
    # at once; the next wait at most this long, then are answered 503 + Retry-After.
    max_concurrent_requests: int = Field(4, ge=1)
    queue_timeout_seconds: float = Field(0.05, ge=0)
    # ... and one that reaches them when the event loop's current turn has been busy this long
    # (seconds; 0: not watched) is shed at once (sophia_chassis.admission.LoopTurn).
    max_loop_lag_seconds: float = Field(0.02, ge=0)
    # Tracing (sophia_chassis.tracing): the OpenTelemetry collector's OTLP/HTTP base URL (none: no
    # tracing), and the share of traces started here that are kept (callers' decisions are followed).
    otel_exporter_otlp_endpoint: str | None = None
    trace_sample_ratio: float = Field(1.0, ge=0, le=1)
    # Feature flags (sophia_chassis.flags): the platform's flag file (a mounted ConfigMap), re-read
    # when it changes, checked at most this often. Unset: no flags, the code's defaults.
    flags_file: str | None = None
    # Which build this is (sophia_chassis.version): the package's version, the track it runs as.
    service_version: str = "0.0.0"
    service_track: str = Field("stable", pattern="^(stable|canary)$")
    flags_poll_seconds: float = Field(2.0, gt=0)

    @classmethod
    def load(cls, **overrides):
        return cls(_secrets_dir=secrets_dir(), **overrides)
