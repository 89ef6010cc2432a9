"""The pure parts: the model table's validation, the complexity heuristic, the router's
choice, order and refusals."""

from __future__ import annotations

import json

import pytest

from agno_coordinator.complexity import Complexity, estimate, from_header
from agno_coordinator.router import NO_PROVIDER, Limits, NoProvider, NoRoute, UnknownModel, plan
from agno_coordinator.table import DEFAULT_TABLE, ModelTable, TableError, load_table

from .coordinator_data import TABLE, model, user

ALL = ("openai", "anthropic")


def table() -> ModelTable:
    return load_table(json.dumps(TABLE))


def names(p) -> list[str]:
    return [m.name for m in p.candidates]


# --- the table -------------------------------------------------------------------------


def test_the_packaged_table_loads_and_covers_every_provider() -> None:
    t = load_table()
    assert {m.provider for m in t.models} == {"openai", "anthropic", "local"}
    assert {m.tier for m in t.models} == {1, 2, 3}


def test_a_table_from_a_yaml_file_or_a_bare_json_list(tmp_path) -> None:
    path = tmp_path / "models.yaml"
    path.write_text(
        "models:\n  - {name: a, provider: local, upstream: q, input_usd_per_mtok: 0,\n"
        "     output_usd_per_mtok: 0, tier: 1, latency_ms: 10, context_window: 4096}\n"
    )
    assert load_table(str(path)).models[0].tier == 1
    assert [m.name for m in load_table(json.dumps(TABLE)).models] == ["mini", "haiku", "big", "sonnet"]


@pytest.mark.parametrize(
    "change, message",
    [
        ({"input_usd_per_mtok": -1}, "models.0.input_usd_per_mtok"),
        ({"tier": "extreme"}, "models.0.tier: Value error, tier must be low, medium, high or 1-3"),
        ({"tier": 4}, "models.0.tier"),
        ({"provider": "mistral"}, "models.0.provider"),
        ({"latency_ms": 0}, "models.0.latency_ms"),
        ({"contextwindow": 5}, "models.0.contextwindow: Extra inputs are not permitted"),
    ],
)
def test_a_bad_table_names_the_field(change: dict, message: str) -> None:
    bad = [{**TABLE[0], **change}]
    with pytest.raises(TableError, match="model table \\(inline JSON\\) is invalid") as err:
        load_table(json.dumps(bad))
    assert message in str(err.value)


def test_duplicate_names_missing_files_and_unreadable_yaml_are_refused(tmp_path) -> None:
    with pytest.raises(TableError, match="'mini' is used twice"):
        load_table(json.dumps([TABLE[0], TABLE[0]]))
    with pytest.raises(TableError, match="cannot be read"):
        load_table(str(tmp_path / "missing.yaml"))
    with pytest.raises(TableError, match="models: List should have at least 1 item"):
        load_table('{"models": []}')
    assert DEFAULT_TABLE.name == "models.yaml"


# --- complexity ------------------------------------------------------------------------


def test_a_short_question_is_low() -> None:
    c = estimate({"messages": user("What is the capital of France?")})
    assert (c.tier, c.explicit, c.signals) == (1, False, [])


def test_code_plus_a_reasoning_word_is_medium() -> None:
    c = estimate({"messages": user("Refactor this:\n```python\ndef f(x): return x\n```")})
    assert c.tier == 2 and c.signals == ["code", "reasoning (refactor)"]


def test_long_code_reasoning_and_tools_is_high() -> None:
    text = (
        "Analyze the architecture step by step and propose a design with trade-offs.\n```go\n"
        + "x := 1\n" * 1500
        + "```"
    )
    tools = [{"type": "function", "function": {"name": f"t{i}", "parameters": {}}} for i in range(2)]
    c = estimate({"messages": user(text), "tools": tools})
    assert c.tier == 3
    assert c.signals[0].startswith("long (") and "code" in c.signals and "2 tools" in c.signals


def test_only_the_last_user_turn_counts_for_reasoning_words_and_content_parts_are_read() -> None:
    messages = [
        {"role": "user", "content": "prove, derive and analyze this"},
        {"role": "assistant", "content": "ok"},
        {"role": "user", "content": [{"type": "text", "text": "thanks"}, {"type": "image_url"}]},
    ]
    assert estimate({"messages": messages}).tier == 1
    messages[-1]["content"][0]["text"] = "now debug and optimize the algorithm"
    assert estimate({"messages": messages}).tier == 2  # three reasoning words score 2


def test_the_estimate_is_deterministic() -> None:
    body = {"messages": user("Compare two designs and plan the rollout")}
    assert estimate(body) == estimate(body)


def test_the_header_overrides_and_is_validated() -> None:
    assert from_header("HIGH") == Complexity(3, True, ["header"])
    assert from_header("2").tier == 2
    with pytest.raises(ValueError, match="X-Sophia-Complexity must be"):
        from_header("urgent")


# --- routing ---------------------------------------------------------------------------


def low() -> Complexity:
    return Complexity(1)


def test_auto_takes_the_cheapest_able_model_and_the_rest_as_fallbacks() -> None:
    p = plan(table(), ALL, {"messages": user("hi")}, low(), Limits())
    assert names(p) == ["mini", "haiku", "big", "sonnet"]
    p = plan(table(), ALL, {"model": "auto", "messages": user("hi")}, Complexity(3), Limits())
    assert names(p) == ["big", "sonnet"]


def test_only_configured_providers_are_candidates() -> None:
    assert names(plan(table(), ["anthropic"], {"messages": user("hi")}, low(), Limits())) == ["haiku", "sonnet"]


def test_an_explicit_model_goes_first_and_falls_back_to_equally_able_ones() -> None:
    p = plan(table(), ALL, {"model": "sonnet", "messages": user("hi")}, low(), Limits())
    assert names(p) == ["sonnet", "big"]
    p = plan(table(), ALL, {"model": "mini", "messages": user("hi")}, Complexity(3), Limits())
    assert names(p) == ["mini", "big", "sonnet"]  # the caller's choice beats the estimate


def test_an_explicit_model_whose_provider_is_missing_is_reported_and_replaced() -> None:
    p = plan(table(), ["openai"], {"model": "haiku", "messages": user("hi")}, low(), Limits())
    assert names(p) == ["mini", "big"] and [m.name for m in p.unavailable] == ["haiku"]


def test_unknown_model_and_no_provider() -> None:
    with pytest.raises(UnknownModel, match="'gpt-5' is not in the model table"):
        plan(table(), ALL, {"model": "gpt-5", "messages": user("hi")}, low(), Limits())
    with pytest.raises(NoProvider) as err:
        plan(table(), [], {"messages": user("hi")}, low(), Limits())
    assert str(err.value) == NO_PROVIDER
    with pytest.raises(NoProvider, match="no model for local"):
        plan(table(), ["local"], {"messages": user("hi")}, low(), Limits())


def test_latency_limit_filters_and_names_itself_when_nothing_is_fast_enough() -> None:
    assert names(plan(table(), ALL, {"messages": user("hi")}, low(), Limits(max_latency_ms=1200))) == ["mini", "haiku"]
    with pytest.raises(NoRoute) as err:
        plan(table(), ALL, {"messages": user("hi")}, low(), Limits(max_latency_ms=500))
    assert err.value.limit == "max_latency_ms" and "the fastest is mini at 900 ms" in str(err.value)


def test_cost_limit_uses_tokens_times_prices() -> None:
    body = {"messages": user("x" * 3990), "max_tokens": 1000}  # about 1000 prompt tokens
    p = plan(table(), ALL, body, low(), Limits())
    assert p.prompt_tokens == pytest.approx(1000, abs=10) and p.completion_tokens == 1000
    assert p.estimated_cost(p.candidates[0]) == pytest.approx((p.prompt_tokens * 0.15 + 1000 * 0.60) / 1e6)
    assert names(plan(table(), ALL, body, low(), Limits(max_cost_usd=0.005))) == ["mini", "haiku"]
    with pytest.raises(NoRoute) as err:
        plan(table(), ALL, body, low(), Limits(max_cost_usd=0.0001))
    assert (
        err.value.limit == "max_cost_usd"
        and "cheapest estimate is 0.00075" in str(err.value)
        and "(mini, " in str(err.value)
    )


def test_context_window_and_explicit_model_beyond_a_limit() -> None:
    big = {"messages": user("x" * 4 * 150_000)}
    assert names(plan(table(), ALL, big, low(), Limits())) == ["sonnet"]  # 200k window only
    with pytest.raises(NoRoute) as err:
        plan(table(), ALL, {"messages": user("x" * 4 * 250_000)}, low(), Limits())
    assert err.value.limit == "context_window" and "largest context window available is 200000" in str(err.value)
    with pytest.raises(NoRoute) as err:
        plan(table(), ALL, {"model": "big", "messages": user("hi")}, low(), Limits(max_latency_ms=1000))
    assert err.value.limit == "max_latency_ms"


def test_an_estimate_above_every_model_degrades_but_a_stated_complexity_refuses() -> None:
    cheap = [
        model("a", "openai", "gpt-4o-mini", 0.1, 0.1, "low", 100),
        model("b", "openai", "x", 0.2, 0.2, "medium", 100),
    ]
    t = load_table(json.dumps(cheap))
    assert names(plan(t, ALL, {"messages": user("hi")}, Complexity(3), Limits())) == ["b"]
    with pytest.raises(NoRoute) as err:
        plan(t, ALL, {"messages": user("hi")}, Complexity(3, explicit=True), Limits())
    assert err.value.limit == "complexity" and "handles medium" in str(err.value)
