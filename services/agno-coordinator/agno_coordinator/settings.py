"""agno-coordinator settings: env vars and secret files (field names are the variable names)."""

from __future__ import annotations

from sophia_chassis import ServiceSettings


class Settings(ServiceSettings):
    service_name: str = "agno-coordinator"
    # Providers: OpenAI-compatible base URLs (the part before /chat/completions).
    openai_api_key: str | None = None  # secret file OPENAI_API_KEY
    openai_base_url: str = "https://api.openai.com/v1"
    anthropic_api_key: str | None = None  # secret file ANTHROPIC_API_KEY
    anthropic_base_url: str = "https://api.anthropic.com/v1/"  # Anthropic's OpenAI SDK compatibility
    local_model_url: str | None = None  # the self-hosted vLLM on the GPU pool, e.g. http://vllm:8000/v1
    local_model_api_key: str | None = None  # only if vLLM runs with --api-key
    # The model table: a YAML/JSON file path or the JSON itself; the packaged models.yaml otherwise.
    coordinator_models: str | None = None
    provider_timeout_seconds: float = 120.0  # a long answer takes a while; a hung one must not take forever
    provider_connect_timeout_seconds: float = 5.0
    provider_attempts: int = 2  # per model, for 5xx, 429 and connection errors; timeouts fall back at once
    provider_backoff_seconds: float = 0.5
    provider_backoff_max_seconds: float = 4.0
    provider_max_retry_wait_seconds: float = 5.0  # a 429 asking for longer falls back instead of waiting
    breaker_failure_threshold: int = 5
    breaker_reset_seconds: float = 30.0
    default_completion_tokens: int = 1024  # the cost estimate's output size when max_tokens is unset
    max_body_bytes: int = 8 << 20  # long conversations with tool schemas
