"""What the coordinator tests share: the provider keys, a model table and message helpers
(a module of its own, not conftest: a test importing `conftest` gets whichever conftest
module Python loaded first under that name)."""

from __future__ import annotations

OPENAI_KEY, ANTHROPIC_KEY = "sk-openai-test", "sk-ant-test"


def model(
    name: str,
    provider: str,
    upstream: str,
    price_in: float,
    price_out: float,
    tier: str,
    latency_ms: int,
    context_window: int = 128_000,
) -> dict:
    return dict(
        name=name,
        provider=provider,
        upstream=upstream,
        input_usd_per_mtok=price_in,
        output_usd_per_mtok=price_out,
        tier=tier,
        latency_ms=latency_ms,
        context_window=context_window,
    )


# Table names differ from upstream ids on purpose: the answer must carry the table name.
TABLE = [
    model("mini", "openai", "gpt-4o-mini", 0.15, 0.60, "medium", 900),
    model("haiku", "anthropic", "claude-haiku", 0.80, 4.00, "medium", 1200),
    model("big", "openai", "gpt-4o", 2.50, 10.00, "high", 2500),
    model("sonnet", "anthropic", "claude-sonnet", 3.00, 15.00, "high", 3000, 200_000),
]


def user(text: str) -> list[dict]:
    return [{"role": "user", "content": text}]
