"""The model router against hostile input (issue 12): bodies the router would choke on are a
400 problem naming the field, never a 500, and never reach a provider."""

from __future__ import annotations

import httpx
import pytest

from agno_coordinator.main import build_app
from sophia_testing.servers import serve


@pytest.fixture
def coordinator(make_settings):
    with serve(build_app(make_settings())) as url:
        yield url


def post(url: str, raw: bytes) -> httpx.Response:
    return httpx.post(
        f"{url}/v1/chat/completions", content=raw, headers={"content-type": "application/json"}, timeout=30
    )


@pytest.mark.parametrize(
    "raw",
    [
        b'{"messages":' + b"[" * 100_000 + b"]" * 100_000 + b"}",  # past Python's recursion limit
        b'{"messages":[{"role":"user","content":"hi"}],"tools":[' + b'{"a":' * 40 + b"1" + b"}" * 40 + b"]}",
        b'{"messages":[{"role":"user","content":[{"type":"text","text":5}]}]}',
        b'{"messages":[{"role":"user","content":[{"type":"text","text":{"x":1}}]}]}',
        b'{"messages":[{"role":"user","content":[5]}]}',
        b'{"messages":[{"role":"user","content":"hi"}],"tools":5}',
        b'{"messages":[{"role":"user","content":"hi"}],"tools":[1,2]}',
        b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":NaN}',
        b'{"messages":[{"role":"user","content":"hi"}],"temperature":Infinity}',
        b'{"messages":[{"role":"user","content":"hi"}],"max_tokens":1e999}',
        b'{"messages":[{"role":"user","content":"\\ud800"}]}',
        b'{"messages":[{"role":"user","content":"a\\u0000b"}]}',
        b'{"messages":[{"role":"wizard","content":"hi"}]}',
        b'{"messages":["hi"]}',
        b'{"messages":[{"role":"user","content":"hi"}],"model":5}',
        b'{"messages":[{"role":"user","content":"hi"}],"stream":"yes"}',
        b"[]",
        b'"messages"',
    ],
)
def test_a_body_the_router_cannot_read_is_a_400_before_any_provider(coordinator, openai_fake, raw: bytes) -> None:
    answer = post(coordinator, raw)
    assert answer.status_code == 400, answer.text
    assert answer.headers["content-type"] == "application/problem+json"
    assert openai_fake.requests == []
