"""Usage and cost accounting as Prometheus metrics in the app's registry."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

from agno_coordinator.providers import Provider
from agno_coordinator.table import ModelSpec


class ProviderUp(Collector):
    """coordinator_provider_up{provider}: 1 while the breaker lets calls through. Read at
    scrape time, so it cannot drift from the breakers. Unconfigured providers are left
    out: an intentionally absent provider is not an outage to alert on."""

    def __init__(self, providers: Iterable[Provider]):
        self.providers = list(providers)

    def collect(self):
        gauge = GaugeMetricFamily(
            "coordinator_provider_up", "Provider configured and its breaker not open", labels=["provider"]
        )
        for p in self.providers:
            if p.configured:
                gauge.add_metric([p.name], 1.0 if p.up else 0.0)
        yield gauge


class Accounting:
    def __init__(self, registry: CollectorRegistry, providers: Iterable[Provider]):
        self.requests = Counter(
            "coordinator_requests_total",
            "Calls to a model, by outcome",
            ("model", "provider", "outcome"),
            registry=registry,
        )
        self.tokens = Counter(
            "coordinator_tokens_total",
            "Tokens used, as the provider reported them (estimated when it did not)",
            ("model", "kind"),
            registry=registry,
        )
        self.cost = Counter(
            "coordinator_cost_usd_total", "Spend in USD from the model table's prices", ("model",), registry=registry
        )
        self.fallbacks = Counter(
            "coordinator_fallbacks_total",
            "Moves to the next model after a provider failed",
            ("from_provider", "reason"),
            registry=registry,
        )
        registry.register(ProviderUp(providers))

    def attempt(self, spec: ModelSpec, outcome: str) -> None:
        self.requests.labels(spec.name, spec.provider, outcome).inc()

    def fallback(self, spec: ModelSpec, reason: str) -> None:
        self.fallbacks.labels(spec.provider, reason).inc()

    def usage(self, spec: ModelSpec, prompt_tokens: int, completion_tokens: int) -> float:
        """Counts the tokens and their cost; returns the cost in USD."""
        cost = spec.cost(prompt_tokens, completion_tokens)
        self.tokens.labels(spec.name, "prompt").inc(prompt_tokens)
        self.tokens.labels(spec.name, "completion").inc(completion_tokens)
        self.cost.labels(spec.name).inc(cost)
        return cost


def usage_tokens(usage: Any) -> tuple[int, int] | None:
    """(prompt, completion) from an OpenAI `usage` object, or None when it is missing."""
    if not isinstance(usage, dict):
        return None
    prompt, completion = usage.get("prompt_tokens"), usage.get("completion_tokens")
    if not isinstance(prompt, int) or not isinstance(completion, int):
        return None
    return prompt, completion
