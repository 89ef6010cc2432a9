"""Providers misbehaving, through real servers: 5xx retried then a fallback, 429 waited
out or fallen back from, timeouts, rejected keys, a breaker per provider that opens and
keeps requests off the failing one, streams that fail before their first byte, and
clear problems when everything is down."""

from __future__ import annotations

import json
import time

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import StreamingResponse

from agno_coordinator.main import build_app
from sophia_testing.openai_chat_fake import FakeChat
from sophia_testing.servers import serve

from .coordinator_data import user
from .test_coordinator_api import chat, metric


@pytest.fixture
def coordinator(make_settings):
    with serve(build_app(make_settings())) as url:
        yield url


def models_called(fake: FakeChat) -> list[str]:
    return [r["body"]["model"] for r in fake.requests]


def test_a_5xx_is_retried_on_the_same_provider(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", 503)
    r = chat(coordinator, {"messages": user("hi")})
    assert r.status_code == 200 and r.headers["X-Sophia-Model"] == "mini" and r.headers["X-Sophia-Fallbacks"] == "0"
    assert models_called(openai_fake) == ["gpt-4o-mini", "gpt-4o-mini"] and anthropic_fake.requests == []


def test_5xx_through_every_attempt_falls_back_to_the_next_model(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", 500, 502)
    r = chat(coordinator, {"messages": user("hi")})
    assert r.status_code == 200 and r.json()["model"] == "haiku" and r.headers["X-Sophia-Provider"] == "anthropic"
    assert r.headers["X-Sophia-Fallbacks"] == "1" and r.headers["X-Sophia-Failed"] == "mini@openai=server_error"
    assert models_called(openai_fake) == ["gpt-4o-mini"] * 2 and models_called(anthropic_fake) == ["claude-haiku"]
    assert metric(coordinator, "coordinator_fallbacks_total", from_provider="openai", reason="server_error") == 1
    assert (
        metric(coordinator, "coordinator_requests_total", model="mini", provider="openai", outcome="server_error") == 1
    )
    assert metric(coordinator, "coordinator_requests_total", model="haiku", provider="anthropic", outcome="ok") == 1


def test_a_429_within_the_wait_is_waited_out(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", 429)  # Retry-After: 1, below the 1.5 s the coordinator will wait
    started = time.monotonic()
    r = chat(coordinator, {"messages": user("hi")})
    assert time.monotonic() - started >= 0.95
    assert r.headers["X-Sophia-Model"] == "mini" and models_called(openai_fake) == ["gpt-4o-mini"] * 2
    assert anthropic_fake.requests == []


def test_a_429_asking_longer_than_the_wait_falls_back_at_once(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.retry_after_seconds = 20
    openai_fake.fail("gpt-4o-mini", 429)
    started = time.monotonic()
    r = chat(coordinator, {"messages": user("hi")})
    assert time.monotonic() - started < 1.0  # did not sleep 20 s, nor a second attempt
    assert r.headers["X-Sophia-Model"] == "haiku" and r.headers["X-Sophia-Failed"] == "mini@openai=rate_limited"
    assert models_called(openai_fake) == ["gpt-4o-mini"]
    assert metric(coordinator, "coordinator_fallbacks_total", from_provider="openai", reason="rate_limited") == 1


def test_a_timeout_falls_back_without_repeating_the_wait(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", "timeout")  # answers after 1 s; the coordinator waits 0.4 s
    started = time.monotonic()
    r = chat(coordinator, {"messages": user("hi")})
    assert time.monotonic() - started < 0.9
    assert r.headers["X-Sophia-Model"] == "haiku" and r.headers["X-Sophia-Failed"] == "mini@openai=timeout"
    assert models_called(openai_fake) == ["gpt-4o-mini"]


def test_a_rejected_key_falls_back_to_another_provider(make_settings, openai_fake, anthropic_fake) -> None:
    with serve(build_app(make_settings(openai_api_key="sk-revoked"))) as url:
        r = chat(url, {"messages": user("hi")})
    assert r.status_code == 200 and r.headers["X-Sophia-Model"] == "haiku"
    assert r.headers["X-Sophia-Failed"] == "mini@openai=auth"


def test_the_breaker_opens_per_provider_and_later_requests_skip_it(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", *[500] * 10)
    first = chat(coordinator, {"messages": user("one")})  # 2 failures on openai
    second = chat(coordinator, {"messages": user("two")})  # the 3rd opens openai's breaker
    assert [r.headers["X-Sophia-Model"] for r in (first, second)] == ["haiku", "haiku"]
    assert len(openai_fake.requests) == 3  # the open breaker stopped the 4th attempt
    assert metric(coordinator, "coordinator_provider_up", provider="openai") == 0
    assert metric(coordinator, "coordinator_provider_up", provider="anthropic") == 1

    later = [chat(coordinator, {"messages": user(f"later {i}")}) for i in range(3)]
    assert len(openai_fake.requests) == 3  # not touched again
    assert all(r.status_code == 200 and r.headers["X-Sophia-Model"] == "haiku" for r in later)
    assert all(r.headers["X-Sophia-Failed"] == "mini@openai=circuit_open" for r in later)
    assert models_called(anthropic_fake) == ["claude-haiku"] * 5
    assert metric(coordinator, "coordinator_fallbacks_total", from_provider="openai", reason="circuit_open") == 3
    assert httpx.get(f"{coordinator}/readyz").status_code == 200  # anthropic still serves


def test_the_breaker_half_opens_after_its_reset_time_and_closes_on_success(
    make_settings, openai_fake, anthropic_fake
) -> None:
    with serve(build_app(make_settings(breaker_reset_seconds=0.3))) as url:
        openai_fake.fail("gpt-4o-mini", 500, 500, 500)
        chat(url, {"messages": user("one")})
        chat(url, {"messages": user("two")})
        assert metric(url, "coordinator_provider_up", provider="openai") == 0
        time.sleep(0.35)
        assert metric(url, "coordinator_provider_up", provider="openai") == 1  # will try again
        r = chat(url, {"messages": user("three")})
    assert r.headers["X-Sophia-Model"] == "mini" and len(openai_fake.requests) == 4


def test_everything_failing_is_a_502_listing_each_attempt(coordinator, openai_fake, anthropic_fake) -> None:
    for fake, models in ((openai_fake, ("gpt-4o-mini", "gpt-4o")), (anthropic_fake, ("claude-haiku", "claude-sonnet"))):
        for m in models:
            fake.fail(m, 500, 500)
    r = chat(coordinator, {"messages": user("hi")}, **{"X-Sophia-Max-Latency-Ms": "1500"})  # mini, haiku only
    assert r.status_code == 502 and r.headers["content-type"] == "application/problem+json"
    problem = r.json()
    assert problem["title"] == "Upstream error" and problem["detail"].startswith("every model that fits failed: ")
    assert [(a["model"], a["reason"]) for a in problem["attempts"]] == [
        ("mini", "server_error"),
        ("haiku", "server_error"),
    ]
    assert "openai answered 500 (The server had an error)" in problem["attempts"][0]["detail"]
    # only moves to a next model count as fallbacks
    assert metric(coordinator, "coordinator_fallbacks_total", from_provider="openai", reason="server_error") == 1
    assert metric(coordinator, "coordinator_fallbacks_total", from_provider="anthropic", reason="server_error") == 0


def test_every_breaker_open_is_a_503_with_retry_after_and_not_ready(make_settings, openai_fake, anthropic_fake) -> None:
    with serve(build_app(make_settings(breaker_failure_threshold=1))) as url:
        for fake, models in (
            (openai_fake, ("gpt-4o-mini", "gpt-4o")),
            (anthropic_fake, ("claude-haiku", "claude-sonnet")),
        ):
            for m in models:
                fake.fail(m, 500)
        opened = chat(url, {"messages": user("hi")})
        calls = len(openai_fake.requests) + len(anthropic_fake.requests)
        shed = chat(url, {"messages": user("hi")})
        ready = httpx.get(f"{url}/readyz")
    assert opened.status_code == 502 and [a["model"] for a in opened.json()["attempts"]] == [
        "mini",
        "haiku",
        "big",
        "sonnet",
    ]
    assert calls == 2  # each breaker opened on its first failure; big and sonnet were never called
    assert shed.status_code == 503 and 25 <= int(shed.headers["Retry-After"]) <= 30  # the breakers' reset time
    assert {a["reason"] for a in shed.json()["attempts"]} == {"circuit_open"}
    assert len(openai_fake.requests) + len(anthropic_fake.requests) == calls
    assert ready.status_code == 503 and "circuit breaker is open" in ready.json()["checks"]["providers"]


def test_a_stream_falls_back_before_its_first_byte(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", 500, 500)
    with httpx.stream(
        "POST", f"{coordinator}/v1/chat/completions", timeout=15, json={"messages": user("stream it"), "stream": True}
    ) as r:
        assert r.status_code == 200 and r.headers["X-Sophia-Model"] == "haiku"
        assert r.headers["X-Sophia-Failed"] == "mini@openai=server_error"
        events = [line[6:] for line in r.iter_lines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]" and {json.loads(e)["model"] for e in events[:-1]} == {"haiku"}
    assert anthropic_fake.requests[0]["body"]["stream"] is True


def test_a_stream_whose_provider_hangs_before_answering_falls_back(coordinator, openai_fake, anthropic_fake) -> None:
    openai_fake.fail("gpt-4o-mini", "timeout")
    with httpx.stream(
        "POST", f"{coordinator}/v1/chat/completions", timeout=15, json={"messages": user("stream it"), "stream": True}
    ) as r:
        body = r.read().decode()
    assert r.headers["X-Sophia-Model"] == "haiku" and body.rstrip().endswith("data: [DONE]")


def broken_stream_provider() -> FastAPI:
    """A provider that starts a stream and dies mid-way (the connection drops)."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat_completions():
        async def events():
            chunk = {
                "id": "c1",
                "object": "chat.completion.chunk",
                "created": 0,
                "model": "gpt-4o-mini",
                "choices": [{"index": 0, "delta": {"role": "assistant", "content": "partial"}, "finish_reason": None}],
            }
            yield f"data: {json.dumps(chunk)}\n\n"
            raise RuntimeError("the GPU node went away")

        return StreamingResponse(events(), media_type="text/event-stream")

    return app


def test_a_stream_that_breaks_after_its_first_byte_ends_with_an_error_event(make_settings, anthropic_fake) -> None:
    with (
        serve(broken_stream_provider()) as broken,
        serve(build_app(make_settings(openai_base_url=f"{broken}/v1"))) as url,
    ):
        with httpx.stream(
            "POST", f"{url}/v1/chat/completions", timeout=15, json={"messages": user("stream it"), "stream": True}
        ) as r:
            events = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
        outcome = metric(url, "coordinator_requests_total", model="mini", provider="openai", outcome="stream_error")
    assert r.status_code == 200 and r.headers["X-Sophia-Model"] == "mini"
    assert events[0]["model"] == "mini" and events[0]["choices"][0]["delta"]["content"] == "partial"
    assert events[-1]["error"]["type"] == "upstream_error" and "openai stream broke" in events[-1]["error"]["message"]
    assert anthropic_fake.requests == []  # too late to fall back: the caller already had a byte
    assert outcome == 1
