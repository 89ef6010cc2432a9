"""mcp-context against hostile input (issue 12): nothing a caller sends can poison the store,
exhaust memory or answer 500; identical concurrent misses run the model once."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from mcp_context.main import Settings, build_app
from sophia_testing.datastores import redis_server_at
from sophia_testing.servers import serve

from .test_context import fake_openai

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def context_url() -> Iterator[str]:
    with serve(build_app(Settings(embedding_provider="local", qdrant_collection="hostile"))) as url:
        yield url


def raw(url: str, path: str, body: str) -> httpx.Response:
    """A body as sent on the wire: Python's json would not write NaN, lone surrogates or depth 200."""
    return httpx.post(f"{url}{path}", content=body.encode(), headers={"content-type": "application/json"})


def nested(depth: int) -> str:
    return '{"a":' * depth + "1" + "}" * depth


def assert_refused(response: httpx.Response, field: str) -> None:
    assert response.status_code == 422, response.text
    assert response.headers["content-type"] == PROBLEM
    assert any(field in e["field"] for e in response.json()["errors"]), response.json()


def test_a_memory_the_store_cannot_round_trip_is_refused_and_the_namespace_stays_searchable(context_url) -> None:
    url = context_url
    keep = httpx.post(f"{url}/memories", json={"text": "a healthy memory", "namespace": "poison"}).json()["id"]
    # Qdrant decodes payloads 127 levels deep at most: such a memory could never be read or deleted again.
    assert_refused(
        raw(url, "/memories", '{"text":"deep","namespace":"poison","metadata":' + nested(127) + "}"), "metadata"
    )
    assert_refused(raw(url, "/memories", '{"text":"x","metadata":' + nested(9) + "}"), "metadata")
    for bad in ("NaN", "Infinity", "-Infinity", str(2**64), '"a\\u0000b"', '"\\ud800"'):
        assert_refused(
            raw(url, "/memories", '{"text":"x","namespace":"poison","metadata":{"v":' + bad + "}}"), "metadata"
        )
    assert_refused(raw(url, "/memories", '{"text":"lone \\udc00 surrogate"}'), "text")
    assert_refused(raw(url, "/memories", '{"text":"nul \\u0000 byte"}'), "text")
    assert_refused(raw(url, "/memories", '{"text":"x","namespace":"a\\u0000b"}'), "namespace")
    assert_refused(raw(url, "/memories", '{"text":"x","user":"line\\nbreak"}'), "user")
    assert_refused(raw(url, "/memories/batch", "[]"), "body")
    ok = httpx.post(
        f"{url}/memories",
        json={"text": "nested fine", "namespace": "poison", "metadata": {"a": {"b": [1, 2.5, None, True]}}},
    )
    assert ok.status_code == 201
    # Every memory in the namespace reads, ranks and deletes.
    found = httpx.post(f"{url}/memories/search", json={"query": "memory", "namespace": "poison", "top_k": 100})
    assert found.status_code == 200 and {r["id"] for r in found.json()["results"]} == {keep, ok.json()["id"]}
    assert httpx.get(f"{url}/memories/{keep}").status_code == 200
    assert httpx.delete(f"{url}/memories/{keep}").status_code == 204


def test_searches_are_bounded_and_odd_filters_are_422s(context_url) -> None:
    url = context_url
    assert_refused(httpx.post(f"{url}/memories/search", json={"query": "q" * 8001}), "query")
    assert httpx.post(f"{url}/memories/search", json={"query": "q" * 8000}).status_code == 200
    for filters in ({"": "x"}, {"a.b": "x"}, {"a[0]": "x"}, {"k": 2**64}, {"k": "\u0000"}):
        assert_refused(httpx.post(f"{url}/memories/search", json={"query": "q", "metadata": filters}), "metadata")
    for body in ('{"query":"q","score_threshold":NaN}', '{"query":"q","top_k":1e400}', '{"query":"\\udfff"}'):
        assert raw(url, "/memories/search", body).status_code == 422
    assert_refused(httpx.post(f"{url}/memories/search", json={"query": "q", "unknown": 1}), "unknown")
    assert httpx.get(f"{url}/memories/%00").status_code == 422  # ids are UUIDs
    # Past the service's body limit the request is refused before anything reads it into memory.
    huge = httpx.post(f"{url}/memories/search", content=b'{"query":"' + b"q" * (17 << 20) + b'"}')
    assert huge.status_code == 413 and huge.headers["content-type"] == PROBLEM
    assert huge.headers["connection"] == "close"


def test_mcp_tools_apply_the_same_rules(context_url) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    deep: dict[str, Any] = {}
    cursor = deep
    for _ in range(130):
        cursor["a"] = {}
        cursor = cursor["a"]

    async def run():
        async with streamable_http_client(f"{context_url}/mcp") as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                return (
                    await session.call_tool(
                        "store_memory", {"text": "deep", "namespace": "mcp-poison", "metadata": deep}
                    ),
                    await session.call_tool("search_memories", {"query": "q" * 8001}),
                    await session.call_tool("search_memories", {"query": "q", "metadata": {"a.b": "x"}}),
                    await session.call_tool("search_memories", {"query": "deep", "namespace": "mcp-poison"}),
                )

    stored, long_query, odd_filter, search = asyncio.run(run())
    assert stored.is_error and "metadata" in str(stored.content)
    assert long_query.is_error and odd_filter.is_error
    assert not search.is_error


def test_identical_concurrent_misses_run_the_model_once() -> None:
    calls: list[dict[str, Any]] = []
    with redis_server_at() as redis_url, serve(fake_openai(calls, {"delay": 0.3})) as openai_url:
        app = build_app(
            Settings(
                redis_url=redis_url,
                embedding_provider="openai",
                openai_api_key="test-key",
                openai_base_url=f"{openai_url}/v1",
                qdrant_collection="single-flight",
                max_concurrent_requests=100,  # the whole burst in flight (admission control is tested apart)
                max_loop_lag_seconds=0,
            )
        )
        with serve(app) as url:

            async def burst() -> list[int]:
                async with httpx.AsyncClient(base_url=url, timeout=60) as client:
                    answers = await asyncio.gather(
                        *(client.post("/memories/search", json={"query": f"question {i % 5}"}) for i in range(100))
                    )
                return [a.status_code for a in answers]

            assert asyncio.run(burst()) == [200] * 100
    texts = [text for call in calls for text in call["input"]]
    # What reached the embeddings API: each distinct text once, however the requests interleaved.
    assert sorted(texts) == sorted(f"question {i}" for i in range(5))


def test_fuzz_mcp_context() -> None:
    from sophia_testing.fuzz import check, fuzz

    with serve(build_app(Settings(embedding_provider="local", qdrant_collection="fuzz"))) as url:
        check(fuzz("mcp-context", url))
