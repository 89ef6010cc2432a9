"""The OpenAI-compatible front through a real uvicorn server, against two fake providers
on loopback: routing, pass-through of tools and tool calls, streaming, headers, refusals,
/v1/models, readiness and the accounting metrics."""

from __future__ import annotations

import json

import httpx
import pytest

from agno_coordinator.main import Settings, build_app
from agno_coordinator.router import NO_PROVIDER
from agno_coordinator.table import TableError
from sophia_testing.openai_chat_fake import FakeChat, Reply, build_fake_chat
from sophia_testing.servers import serve

from .coordinator_data import OPENAI_KEY, user

TOOLS = [
    {
        "type": "function",
        "function": {
            "name": "lookup_customer",
            "description": "find a customer",
            "parameters": {"type": "object", "properties": {"email": {"type": "string"}}, "required": ["email"]},
        },
    }
]


@pytest.fixture
def coordinator(make_settings):
    with serve(build_app(make_settings())) as url:
        yield url


def chat(url: str, body: dict, **headers) -> httpx.Response:
    return httpx.post(f"{url}/v1/chat/completions", json=body, headers=headers, timeout=15)


def metric(url: str, name: str, **labels) -> float:
    """One sample's value from /metrics (0 when absent)."""
    want = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("#") or not line.startswith(name):
            continue
        series, value = line.rsplit(" ", 1)
        inner = series[len(name) :].strip("{}")
        if ",".join(sorted(inner.split(","))) == want or (not labels and not inner):
            return float(value)
    return 0.0


def test_auto_routes_a_simple_request_to_the_cheapest_model(
    coordinator, openai_fake: FakeChat, anthropic_fake: FakeChat
) -> None:
    r = chat(coordinator, {"model": "auto", "messages": user("What is 2 + 2?")})
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["model"] == "mini" and body["choices"][0]["message"]["content"] == "echo: What is 2 + 2?"
    assert r.headers["X-Sophia-Model"] == "mini" and r.headers["X-Sophia-Provider"] == "openai"
    assert r.headers["X-Sophia-Fallbacks"] == "0" and r.headers["X-Sophia-Complexity"] == "low"
    usage = body["usage"]
    assert float(r.headers["X-Sophia-Cost-USD"]) == pytest.approx(
        (usage["prompt_tokens"] * 0.15 + usage["completion_tokens"] * 0.60) / 1e6, abs=1e-6
    )
    sent = openai_fake.requests[0]
    assert sent["body"]["model"] == "gpt-4o-mini" and sent["headers"]["authorization"] == f"Bearer {OPENAI_KEY}"
    assert anthropic_fake.requests == []


def test_a_hard_request_goes_to_a_high_tier_model_and_a_header_can_say_so(coordinator, openai_fake) -> None:
    hard = "Analyze this step by step, compare the designs and derive the trade-offs:\n```py\nx = 1\n```"
    r = chat(coordinator, {"messages": user(hard), "tools": TOOLS})  # no model: auto
    assert (r.headers["X-Sophia-Model"], r.headers["X-Sophia-Complexity"]) == ("big", "high")
    r = chat(coordinator, {"messages": user("hi")}, **{"X-Sophia-Complexity": "high"})
    assert r.headers["X-Sophia-Model"] == "big"
    assert [q["body"]["model"] for q in openai_fake.requests] == ["gpt-4o", "gpt-4o"]


def test_an_explicit_model_is_honoured(coordinator, anthropic_fake) -> None:
    r = chat(coordinator, {"model": "sonnet", "messages": user("hi")})
    assert r.status_code == 200 and r.json()["model"] == "sonnet" and r.headers["X-Sophia-Provider"] == "anthropic"
    assert anthropic_fake.requests[0]["body"]["model"] == "claude-sonnet"
    assert anthropic_fake.requests[0]["headers"]["authorization"] == "Bearer sk-ant-test"


def test_tools_and_tool_calls_pass_through_unchanged(coordinator, openai_fake: FakeChat) -> None:
    openai_fake.script("gpt-4o-mini", Reply(tool_calls=[("lookup_customer", {"email": "ana@example.com"})]))
    request = {
        "model": "mini",
        "messages": user("Who is ana@example.com?"),
        "tools": TOOLS,
        "tool_choice": "auto",
        "temperature": 0.2,
        "max_tokens": 200,
        "user": "agent-7",
        "metadata": {"team": "sales"},
    }
    r = chat(coordinator, request)
    choice = r.json()["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    call = choice["message"]["tool_calls"][0]
    assert call["function"]["name"] == "lookup_customer"
    assert json.loads(call["function"]["arguments"]) == {"email": "ana@example.com"}
    assert openai_fake.requests[0]["body"] == {**request, "model": "gpt-4o-mini"}  # only the model id changes


def test_streaming_passes_server_sent_events_through(coordinator, openai_fake: FakeChat) -> None:
    openai_fake.script("gpt-4o-mini", Reply(content="streamed words arrive in order"))
    with httpx.stream(
        "POST",
        f"{coordinator}/v1/chat/completions",
        timeout=15,
        json={"messages": user("stream please"), "stream": True},
    ) as r:
        assert r.status_code == 200 and r.headers["content-type"].startswith("text/event-stream")
        assert r.headers["X-Sophia-Model"] == "mini" and "X-Sophia-Cost-USD" not in r.headers
        lines = list(r.iter_lines())
    events = [line[len("data: ") :] for line in lines if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and lines.count("") == len(events)  # one blank line closes each event
    chunks = [json.loads(e) for e in events[:-1]]
    assert {c["model"] for c in chunks} == {"mini"} and {c["object"] for c in chunks} == {"chat.completion.chunk"}
    text = "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks)
    assert text.strip() == "streamed words arrive in order"
    usage = chunks[-1]["usage"]
    assert (
        metric(coordinator, "coordinator_tokens_total", model="mini", kind="completion") == usage["completion_tokens"]
    )
    assert metric(coordinator, "coordinator_requests_total", model="mini", provider="openai", outcome="ok") == 1


def test_a_provider_4xx_is_the_callers_answer_not_a_fallback(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", 400)
    r = chat(coordinator, {"messages": user("hi")})
    assert r.status_code == 400 and r.json()["error"]["message"] == "The server had an error"  # the provider's body
    assert r.headers["X-Sophia-Model"] == "mini" and anthropic_fake.requests == []
    assert len(openai_fake.requests) == 1  # no retry either
    assert metric(coordinator, "coordinator_requests_total", model="mini", provider="openai", outcome="rejected") == 1


def test_limits_that_nothing_fits_are_a_422_naming_the_limit(coordinator, openai_fake) -> None:
    slow = chat(coordinator, {"messages": user("hi")}, **{"X-Sophia-Max-Latency-Ms": "100"})
    poor = chat(coordinator, {"messages": user("hi")}, **{"X-Sophia-Max-Cost-USD": "0.0000001"})
    for r, limit in ((slow, "max_latency_ms"), (poor, "max_cost_usd")):
        assert r.status_code == 422 and r.headers["content-type"] == "application/problem+json"
        assert r.json()["limit"] == limit and r.json()["title"] == "No model within the limits"
    assert "X-Sophia-Max-Latency-Ms=100" in slow.json()["detail"]
    within = chat(coordinator, {"messages": user("hi")}, **{"X-Sophia-Max-Latency-Ms": "1000"})
    assert within.headers["X-Sophia-Model"] == "mini"
    assert openai_fake.requests and len(openai_fake.requests) == 1  # refusals never reached a provider


def test_bad_requests_and_unknown_models(coordinator) -> None:
    assert chat(coordinator, {"model": "gpt-9", "messages": user("hi")}).status_code == 404
    assert chat(coordinator, {"messages": []}).status_code == 400
    bad = chat(coordinator, {"messages": user("hi")}, **{"X-Sophia-Complexity": "extreme"})
    assert bad.status_code == 400 and "X-Sophia-Complexity must be" in bad.json()["detail"]
    bad = chat(coordinator, {"messages": user("hi")}, **{"X-Sophia-Max-Cost-USD": "cheap"})
    assert bad.status_code == 400 and "x-sophia-max-cost-usd" in bad.json()["detail"]
    raw = httpx.post(f"{coordinator}/v1/chat/completions", content=b"{not json", timeout=5)
    assert raw.status_code == 400


def test_models_lists_the_table_with_availability(make_settings) -> None:
    with serve(build_app(make_settings(anthropic_api_key=None))) as url:
        listed = httpx.get(f"{url}/v1/models").json()
        r = chat(url, {"model": "haiku", "messages": user("hi")})  # its provider has no key
    data = {m["id"]: m for m in listed["data"]}
    assert listed["object"] == "list" and list(data) == ["auto", "mini", "haiku", "big", "sonnet"]
    assert data["mini"]["available"] and data["mini"]["upstream"] == "gpt-4o-mini" and data["mini"]["tier"] == "medium"
    assert not data["haiku"]["available"] and not data["haiku"]["configured"]
    assert r.status_code == 200 and r.headers["X-Sophia-Model"] == "mini"
    assert r.headers["X-Sophia-Failed"] == "haiku@anthropic=unavailable" and r.headers["X-Sophia-Fallbacks"] == "1"


def test_no_provider_configured_is_a_503_saying_what_to_set() -> None:
    settings = Settings(openai_api_key=None, anthropic_api_key=None, local_model_url=None)
    with serve(build_app(settings)) as url:
        r = chat(url, {"messages": user("hi")})
        ready = httpx.get(f"{url}/readyz")
    assert r.status_code == 503 and r.json()["detail"] == NO_PROVIDER
    assert ready.status_code == 503 and NO_PROVIDER in ready.json()["checks"]["providers"]


def test_a_local_provider_needs_only_a_url(openai_url: str, openai_fake: FakeChat) -> None:
    openai_fake.api_key = None  # vLLM without --api-key
    table = json.dumps(
        [
            {
                "name": "local-small",
                "provider": "local",
                "upstream": "gpt-4o-mini",
                "input_usd_per_mtok": 0,
                "output_usd_per_mtok": 0,
                "tier": "low",
                "latency_ms": 300,
                "context_window": 8192,
            }
        ]
    )
    settings = Settings(
        openai_api_key=None, anthropic_api_key=None, local_model_url=openai_url, coordinator_models=table
    )
    with serve(build_app(settings)) as url:
        r = chat(url, {"messages": user("hi")})
        assert httpx.get(f"{url}/readyz").status_code == 200
    assert (
        r.status_code == 200
        and r.headers["X-Sophia-Provider"] == "local"
        and r.headers["X-Sophia-Cost-USD"] == "0.000000"
    )
    assert "authorization" not in openai_fake.requests[0]["headers"]


def test_with_the_packaged_table_the_cheap_tier_goes_to_the_stacks_vllm(openai_url: str, openai_fake: FakeChat) -> None:
    """What a stack with a GPU pool deploys: the packaged model table, OPENAI_API_KEY from ESC and
    LOCAL_MODEL_URL pointing at vLLM (served under the model's Hugging Face id, no API key)."""
    from agno_coordinator.table import load_table

    [local] = [m for m in load_table().models if m.provider == "local"]
    vllm = FakeChat(api_key=None, models=(local.upstream,))
    openai_fake.models = ("gpt-4.1-mini", "gpt-4.1")
    with serve(build_fake_chat(vllm)) as vllm_base:
        settings = Settings(
            openai_api_key=OPENAI_KEY,
            openai_base_url=openai_url,
            anthropic_api_key=None,
            local_model_url=f"{vllm_base}/v1",
        )
        with serve(build_app(settings)) as url:
            cheap = chat(url, {"model": "auto", "messages": user("What is 2 + 2?")})
            hard = chat(url, {"model": "auto", "messages": user("hi")}, **{"X-Sophia-Complexity": "high"})
    assert cheap.status_code == 200, cheap.text
    assert (cheap.headers["X-Sophia-Provider"], cheap.headers["X-Sophia-Model"]) == ("local", local.name)
    assert [r["body"]["model"] for r in vllm.requests] == [local.upstream]
    assert "authorization" not in vllm.requests[0]["headers"]
    # A request beyond the local model's tier still goes to a provider that is trusted with it.
    assert hard.status_code == 200 and hard.headers["X-Sophia-Provider"] == "openai"
    assert len(vllm.requests) == 1


def test_a_bad_model_table_stops_the_service_at_startup() -> None:
    with pytest.raises(TableError, match=r"models\.0\.latency_ms"):
        build_app(
            Settings(
                coordinator_models='[{"name": "x", "provider": "openai", "upstream": "x", '
                '"input_usd_per_mtok": 1, "output_usd_per_mtok": 1, "tier": 1, '
                '"latency_ms": "fast", "context_window": 1000}]'
            )
        )


def test_usage_and_cost_are_exported_as_metrics(coordinator) -> None:
    before = metric(coordinator, "coordinator_cost_usd_total", model="mini")
    responses = [chat(coordinator, {"messages": user(f"question {i}")}) for i in range(3)]
    prompt = sum(r.json()["usage"]["prompt_tokens"] for r in responses)
    completion = sum(r.json()["usage"]["completion_tokens"] for r in responses)
    cost = sum(float(r.headers["X-Sophia-Cost-USD"]) for r in responses)
    assert metric(coordinator, "coordinator_requests_total", model="mini", provider="openai", outcome="ok") == 3
    assert metric(coordinator, "coordinator_tokens_total", model="mini", kind="prompt") == prompt
    assert metric(coordinator, "coordinator_tokens_total", model="mini", kind="completion") == completion
    assert metric(coordinator, "coordinator_cost_usd_total", model="mini") - before == pytest.approx(cost, abs=1e-5)
    assert metric(coordinator, "coordinator_provider_up", provider="openai") == 1
    assert metric(coordinator, "coordinator_provider_up", provider="anthropic") == 1
    assert 'provider="local"' not in httpx.get(f"{coordinator}/metrics").text  # not configured, not exported
    assert httpx.get(f"{coordinator}/readyz").json() == {"status": "ready", "checks": ["providers"]}


def test_the_official_openai_client_talks_to_it(coordinator, openai_fake: FakeChat) -> None:
    """What agno-teams and agents use (Agno's OpenAI models are built on this SDK)."""
    import openai  # pinned in requirements-services.txt: a missing SDK must fail, not skip

    client = openai.OpenAI(base_url=f"{coordinator}/v1", api_key="unused", max_retries=0)
    openai_fake.script(
        "gpt-4o-mini",
        Reply(tool_calls=[("lookup_customer", {"email": "ana@example.com"})]),
        Reply(content="one two three"),
    )
    done = client.chat.completions.create(model="auto", messages=user("who is ana?"), tools=TOOLS)
    assert done.model == "mini" and done.choices[0].message.tool_calls[0].function.name == "lookup_customer"
    pieces = [
        c.choices[0].delta.content or ""
        for c in client.chat.completions.create(model="mini", messages=user("count"), stream=True)
        if c.choices
    ]
    assert "".join(pieces).strip() == "one two three"
    assert [m.id for m in client.models.list()][:2] == ["auto", "mini"]
    with pytest.raises(openai.UnprocessableEntityError):
        client.chat.completions.create(model="auto", messages=user("hi"), extra_headers={"X-Sophia-Max-Cost-USD": "0"})
