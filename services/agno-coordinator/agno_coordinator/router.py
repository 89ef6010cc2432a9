"""Which models may serve a request, in the order to try them. Pure: the table, the
providers that are configured, the request and the caller's limits in; a plan or a
reason why nothing fits out."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from agno_coordinator.complexity import Complexity, estimate_tokens
from agno_coordinator.table import ModelSpec, ModelTable, tier_name

NO_PROVIDER = "no model provider configured: set OPENAI_API_KEY or ANTHROPIC_API_KEY secret, or LOCAL_MODEL_URL"


LIMITS = ("context_window", "max_latency_ms", "max_cost_usd")  # checked in this order


class NoProvider(Exception):
    """Nothing to call at all (503)."""


class UnknownModel(Exception):
    """The caller named a model that is not in the table (404)."""


class NoRoute(Exception):
    """Models exist but none fits the caller's limits (422); `limit` names which."""

    def __init__(self, limit: str, detail: str):
        super().__init__(detail)
        self.limit = limit


@dataclass
class Limits:
    max_latency_ms: int | None = None
    max_cost_usd: float | None = None


@dataclass
class Plan:
    candidates: list[ModelSpec]  # first is the choice, the rest the fallback chain
    prompt_tokens: int
    completion_tokens: int  # the budget the estimate assumes
    complexity: Complexity
    unavailable: list[ModelSpec]  # an explicitly requested model whose provider is not configured

    def estimated_cost(self, spec: ModelSpec) -> float:
        return spec.cost(self.prompt_tokens, self.completion_tokens)


def completion_budget(body: dict[str, Any], default: int) -> int:
    for key in ("max_completion_tokens", "max_tokens"):
        if isinstance(body.get(key), int) and body[key] > 0:
            return body[key]
    return default


def plan(
    table: ModelTable,
    configured: Iterable[str],
    body: dict[str, Any],
    complexity: Complexity,
    limits: Limits,
    default_completion_tokens: int = 1024,
) -> Plan:
    configured = set(configured)
    if not configured:
        raise NoProvider(NO_PROVIDER)
    requested = body.get("model") or "auto"
    explicit = None if requested == "auto" else table.get(requested)
    if requested != "auto" and explicit is None:
        raise UnknownModel(
            f'model {requested!r} is not in the model table; GET /v1/models lists them, or ask for "auto"'
        )
    pool = [m for m in table.models if m.provider in configured]
    if not pool:
        raise NoProvider(f"{NO_PROVIDER} (the model table has no model for {', '.join(sorted(configured))})")

    prompt = estimate_tokens(body)
    completion = completion_budget(body, default_completion_tokens)
    result = Plan([], prompt, completion, complexity, [])
    cost = result.estimated_cost

    def breaks(spec: ModelSpec, limit: str) -> bool:
        if limit == "context_window":
            return prompt + completion > spec.context_window
        if limit == "max_latency_ms":
            return limits.max_latency_ms is not None and spec.latency_ms > limits.max_latency_ms
        return limits.max_cost_usd is not None and cost(spec) > limits.max_cost_usd

    def fits(spec: ModelSpec) -> str | None:
        """The first limit `spec` breaks, or None."""
        return next((limit for limit in LIMITS if breaks(spec, limit)), None)

    floor = complexity.tier
    if explicit is not None:
        # The caller's choice is honoured whatever the estimate says; only hard limits refuse it.
        if explicit.provider not in configured:
            result.unavailable.append(explicit)
            explicit = None
        elif broken := fits(explicit):
            raise NoRoute(broken, _limit_detail(broken, [explicit], prompt, completion, limits, cost))
        else:
            floor = max(floor, explicit.tier)  # fall back to something at least as able

    # Apply the limits one at a time so the answer can say which one left nothing.
    survivors = pool
    for limit in LIMITS:
        kept = [m for m in survivors if not breaks(m, limit)]
        if not kept and explicit is None:
            raise NoRoute(limit, _limit_detail(limit, survivors, prompt, completion, limits, cost))
        survivors = kept
    able = [m for m in survivors if m.tier >= floor]
    if not able and survivors and explicit is None:
        best = max(m.tier for m in survivors)
        if complexity.explicit:
            raise NoRoute(
                "complexity",
                f"X-Sophia-Complexity is {tier_name(complexity.tier)} but the best model "
                f"within the limits handles {tier_name(best)}",
            )
        # An estimate is a guess: rather than refuse, use the ablest models that fit.
        able = [m for m in survivors if m.tier == best]
    able.sort(key=lambda m: (cost(m), m.latency_ms, m.name))
    if explicit is not None:
        able = [explicit] + [m for m in able if m is not explicit]
    result.candidates = able
    return result


def _limit_detail(limit: str, models: list[ModelSpec], prompt: int, completion: int, limits: Limits, cost) -> str:
    if limit == "context_window":
        largest = max(models, key=lambda m: m.context_window)
        return (
            f"the request needs about {prompt + completion} tokens ({prompt} prompt + {completion} completion); "
            f"the largest context window available is {largest.context_window} ({largest.name})"
        )
    if limit == "max_latency_ms":
        fastest = min(models, key=lambda m: m.latency_ms)
        return (
            f"no available model answers within X-Sophia-Max-Latency-Ms={limits.max_latency_ms}; "
            f"the fastest is {fastest.name} at {fastest.latency_ms} ms"
        )
    cheapest = min(models, key=cost)
    return (
        f"no available model fits X-Sophia-Max-Cost-USD={limits.max_cost_usd}; the cheapest estimate is "
        f"{cost(cheapest):.6f} USD ({cheapest.name}, {prompt} prompt + {completion} completion tokens)"
    )
