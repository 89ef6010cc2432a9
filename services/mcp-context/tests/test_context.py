"""mcp-context through real servers: Redis (redis-server on loopback), embedded Qdrant,
a fake OpenAI-compatible embeddings server, uvicorn for REST and MCP."""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from fastapi import FastAPI, Header, HTTPException, Request

from components.qdrant import SEED_COLLECTION
from mcp_context.cache import cache_key
from mcp_context.main import Settings, build_app
from sophia_testing.datastores import redis_server_at
from sophia_testing.servers import free_port, serve


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server_at() as url:
        yield url


def fake_openai(calls: list[dict[str, Any]], fail: dict[str, int]) -> FastAPI:
    """Speaks the embeddings API's request and response shapes; vectors derive from the text."""
    app = FastAPI()

    @app.post("/v1/embeddings")
    async def embeddings(request: Request, authorization: str = Header("")):
        if authorization != "Bearer test-key":
            raise HTTPException(401, "bad key")
        body = await request.json()
        calls.append(body)
        await asyncio.sleep(fail.get("delay", 0))
        if fail.get("status"):
            raise HTTPException(fail["status"], "upstream trouble")
        assert len(body["input"]) <= 2048
        data = []
        for index, text in enumerate(body["input"]):
            seed = hashlib.sha256(text.encode()).digest()
            data.append(
                {
                    "object": "embedding",
                    "index": index,
                    "embedding": [seed[i % 32] / 255.0 + 0.01 for i in range(body["dimensions"])],
                }
            )
        # Out of order on purpose: clients must use `index`.
        return {
            "object": "list",
            "data": list(reversed(data)),
            "model": body["model"],
            "usage": {"prompt_tokens": 1, "total_tokens": 1},
        }

    return app


@pytest.fixture(scope="module")
def local_app(redis_url: str) -> Iterator[tuple[str, FastAPI]]:
    app = build_app(Settings(redis_url=redis_url, embedding_provider="local"))
    with serve(app) as url:
        yield url, app


MEMORIES = [
    {
        "text": "The customer prefers to be contacted by email on Mondays.",
        "namespace": "crm",
        "user": "ana",
        "metadata": {"source": "hubspot"},
    },
    {"text": "A man is eating a piece of bread at the bakery.", "namespace": "notes", "user": "ana"},
    {
        "text": "The deployment pipeline failed because the Docker registry was down.",
        "namespace": "ops",
        "user": "bo",
        "metadata": {"source": "github"},
    },
    {"text": "Quarterly revenue grew by twelve percent.", "namespace": "crm", "user": "bo"},
]


def test_rest_memories_rank_semantically_and_filter(local_app) -> None:
    url, _ = local_app
    ids = httpx.post(f"{url}/memories/batch", json=MEMORIES).json()["ids"]
    assert len(ids) == 4
    top = httpx.post(f"{url}/memories/search", json={"query": "what did the man eat?", "top_k": 2}).json()["results"]
    assert top[0]["text"].startswith("A man is eating")
    assert top[0]["score"] > top[1]["score"]
    crm = httpx.post(f"{url}/memories/search", json={"query": "how should we reach the client", "namespace": "crm"})
    assert [r["namespace"] for r in crm.json()["results"]] == ["crm", "crm"]
    assert crm.json()["results"][0]["text"].startswith("The customer prefers")
    by_meta = httpx.post(f"{url}/memories/search", json={"query": "build broke", "metadata": {"source": "github"}})
    assert [r["user"] for r in by_meta.json()["results"]] == ["bo"]
    strict = httpx.post(f"{url}/memories/search", json={"query": "bread", "score_threshold": 0.99})
    assert strict.json()["results"] == []
    one = httpx.post(f"{url}/memories", json={"text": "Temporary note", "user": "cy"})
    assert one.status_code == 201
    memory_id = one.json()["id"]
    assert httpx.get(f"{url}/memories/{memory_id}").json()["user"] == "cy"
    assert httpx.delete(f"{url}/memories/{memory_id}").status_code == 204
    gone = httpx.get(f"{url}/memories/{memory_id}")
    assert gone.status_code == 404 and gone.headers["content-type"] == "application/problem+json"
    assert httpx.post(f"{url}/memories", json={"text": ""}).status_code == 422
    assert httpx.get(f"{url}/memories/not-an-id").status_code == 422  # ids are UUIDs
    assert httpx.post(f"{url}/memories/search", json={"query": "x", "metadata": {"source": 1.5}}).status_code == 422


def test_a_store_sent_again_with_its_idempotency_key_stores_the_same_memories(local_app) -> None:
    """A retry after a lost answer (a client's, or a forwarding pod's: mcp_context.handoff) must not
    store a copy: with the same key the same ids (and points) again; another key or item, others."""
    url, _ = local_app
    item = {"text": "The renewal call moved to Thursday", "namespace": "idempotent"}
    first = httpx.post(f"{url}/memories", json=item, headers={"Idempotency-Key": "k-1"})
    again = httpx.post(f"{url}/memories", json=item, headers={"Idempotency-Key": "k-1"})
    assert first.status_code == again.status_code == 201 and first.json() == again.json()
    other_key = httpx.post(f"{url}/memories", json=item, headers={"Idempotency-Key": "k-2"}).json()["id"]
    other_item = httpx.post(f"{url}/memories", json={**item, "text": "Friday"}, headers={"Idempotency-Key": "k-1"})
    assert len({first.json()["id"], other_key, other_item.json()["id"]}) == 3
    found = httpx.post(f"{url}/memories/search", json={"query": item["text"], "namespace": "idempotent", "top_k": 10})
    assert sorted(r["id"] for r in found.json()["results"]) == sorted(
        [first.json()["id"], other_key, other_item.json()["id"]]
    )
    batch = [{"text": "one", "namespace": "idempotent"}, {"text": "one", "namespace": "idempotent"}]
    ids = httpx.post(f"{url}/memories/batch", json=batch, headers={"Idempotency-Key": "b-1"}).json()["ids"]
    assert len(set(ids)) == 2  # two items, two memories, even of the same text
    assert httpx.post(f"{url}/memories/batch", json=batch, headers={"Idempotency-Key": "b-1"}).json()["ids"] == ids
    bad = httpx.post(f"{url}/memories", json=item, headers={"Idempotency-Key": "x" * 256})
    assert bad.status_code == 422 and "Idempotency-Key" in bad.text


def test_embedded_memories_survive_a_restart_and_a_shard_of_another_size_is_refused(tmp_path: Path) -> None:
    from mcp_context.store import EmbeddedMemoryStore

    settings = Settings(embedding_provider="local", qdrant_path=str(tmp_path / "qdrant"))
    with serve(build_app(settings)) as url:
        memory_id = httpx.post(f"{url}/memories", json={"text": "Kept on disk", "namespace": "ops"}).json()["id"]
    with serve(build_app(settings)) as url:
        found = httpx.post(f"{url}/memories/search", json={"query": "kept on disk", "namespace": "ops"}).json()
        assert [r["id"] for r in found["results"]] == [memory_id]

    with pytest.raises(RuntimeError, match="QDRANT_PATH.*3072-d"):
        asyncio.run(EmbeddedMemoryStore(str(tmp_path / "qdrant"), "sophia-memories", 3072).ensure_collection())


def test_embedding_cache_uses_one_round_trip_and_the_seed_ttl(local_app, redis_url: str) -> None:
    import redis.asyncio as aioredis

    from mcp_context.cache import CachedEmbedder

    _, app = local_app
    client = redis.Redis.from_url(redis_url)
    texts = [f"cache probe number {i}" for i in range(5)]

    async def twice():
        cached = CachedEmbedder(app.state.service.embedder.inner, aioredis.Redis.from_url(redis_url))
        first = await cached.embed(texts)
        stats = client.info("commandstats")
        second = await cached.embed(texts)
        return cached, first, second, stats

    before = client.info("commandstats")
    cached, first, second, middle = asyncio.run(twice())
    calls = lambda stats, cmd: stats.get(f"cmdstat_{cmd}", {}).get("calls", 0)  # noqa: E731
    assert calls(middle, "mget") - calls(before, "mget") == 1  # one MGET for five texts
    assert calls(middle, "set") - calls(before, "set") == 5  # written in one pipeline
    assert 86000 < client.ttl(cache_key(cached.model, texts[0])) <= 86400
    assert len(client.get(cache_key(cached.model, texts[0]))) == 4 * cached.dimensions  # float32 bytes
    assert (cached.misses, cached.hits) == (5, 5) and first == second


def test_seed_collection_config(redis_url: str, tmp_path: Path) -> None:

    calls: list[dict[str, Any]] = []
    with serve(fake_openai(calls, {})) as openai_url:
        app = build_app(
            Settings(
                redis_url=redis_url,
                embedding_provider="openai",
                openai_api_key="test-key",
                openai_base_url=f"{openai_url}/v1",
                qdrant_path=str(tmp_path / "qdrant"),
            )
        )
        with serve(app) as url:
            assert httpx.post(f"{url}/memories", json={"text": "hello"}).status_code == 201
    # The service has stopped and closed its embedded shard; read the configuration it persisted.
    config = json.loads((tmp_path / "qdrant" / "sophia-memories" / "edge_config.json").read_text())
    assert config["vectors"][""] == {"size": SEED_COLLECTION["vectors"]["size"], "distance": "Cosine"}
    assert SEED_COLLECTION["vectors"]["size"] == 3072
    hnsw = SEED_COLLECTION["hnsw_config"]
    assert {k: config["hnsw_config"][k] for k in hnsw} == hnsw
    assert (
        config["optimizers"]["default_segment_number"] == SEED_COLLECTION["optimizers_config"]["default_segment_number"]
    )
    assert calls[0]["model"] == "text-embedding-3-large" and calls[0]["dimensions"] == 3072


def fake_qdrant(created: dict[str, Any]) -> FastAPI:
    """Qdrant's REST shapes for what the service does at start-up against a server."""
    app = FastAPI()
    ok = lambda result: {"result": result, "status": "ok", "time": 0.0}  # noqa: E731

    @app.get("/")
    async def root():
        return {"title": "qdrant - vector search engine", "version": "1.20.0"}

    @app.get("/collections/{name}/exists")
    async def exists(name: str):
        return ok({"exists": name in created})

    @app.put("/collections/{name}")
    async def create(name: str, request: Request, api_key: str = Header("")):
        assert api_key == "q-key"
        created[name] = await request.json()
        return ok(True)

    @app.put("/collections/{name}/index")
    async def index(name: str, request: Request):
        created.setdefault(f"{name}/indexes", []).append((await request.json())["field_name"])
        return ok({"operation_id": 1, "status": "completed"})

    @app.post("/collections/{name}/points/query")
    async def query(name: str, request: Request):
        created.setdefault(f"{name}/queries", []).append(await request.json())
        return ok({"points": []})

    return app


def test_collection_is_created_on_a_qdrant_server_exactly_as_the_seed_says() -> None:
    created: dict[str, Any] = {}
    with serve(fake_qdrant(created)) as qdrant_url:
        calls: list[dict[str, Any]] = []
        with serve(fake_openai(calls, {})) as openai_url:
            app = build_app(
                Settings(
                    qdrant_url=qdrant_url,
                    qdrant_api_key="q-key",
                    embedding_provider="openai",
                    openai_api_key="test-key",
                    openai_base_url=f"{openai_url}/v1",
                    qdrant_replication_factor=2,
                    qdrant_shard_number=3,
                )
            )
            with serve(app):
                pass
    body = created["sophia-memories"]
    assert body["vectors"] == {"size": 3072, "distance": "Cosine"}
    # As the platform configures it on prod's three-node cluster: every shard on two nodes.
    assert (body["replication_factor"], body["shard_number"], body["write_consistency_factor"]) == (2, 3, 1)
    assert {k: body["hnsw_config"][k] for k in ("m", "ef_construct", "full_scan_threshold")} == SEED_COLLECTION[
        "hnsw_config"
    ]
    assert {
        k: body["optimizers_config"][k] for k in ("default_segment_number", "max_optimization_threads")
    } == SEED_COLLECTION["optimizers_config"]
    assert created["sophia-memories/indexes"] == ["tenant", "namespace", "user"]


def test_a_search_whose_client_has_gone_is_not_run() -> None:
    """Under overload, clients time out; their searches must not keep the store busy for nobody."""
    created: dict[str, Any] = {}
    calls: list[dict[str, Any]] = []
    fail = {"delay": 0.6}  # the embedding outlasts the first client's patience
    with serve(fake_qdrant(created)) as qdrant_url, serve(fake_openai(calls, fail)) as openai_url:
        app = build_app(
            Settings(
                qdrant_url=qdrant_url,
                qdrant_api_key="q-key",
                embedding_provider="openai",
                openai_api_key="test-key",
                openai_base_url=f"{openai_url}/v1",
                qdrant_collection="abandon",
            )
        )
        with serve(app) as url:
            with pytest.raises(httpx.TimeoutException):
                httpx.post(f"{url}/memories/search", json={"query": "anyone there?"}, timeout=0.2)
            time.sleep(0.8)
            metrics = httpx.get(f"{url}/metrics").text
            fail["delay"] = 0
            answered = httpx.post(f"{url}/memories/search", json={"query": "still here"}, timeout=10)
    assert "context_searches_abandoned_total 1.0" in metrics
    assert answered.status_code == 200 and answered.json() == {"results": []}
    assert len(calls) == 2 and len(created["abandon/queries"]) == 1  # only the waiting caller's search ran


def test_openai_embedder_batches_within_api_limits_and_keeps_order() -> None:
    from mcp_context.embeddings import OpenAIEmbedder

    calls: list[dict[str, Any]] = []
    with serve(fake_openai(calls, {})) as openai_url:
        # Few dimensions: the batching is under test, and 2500 x 3072 floats of JSON take ~25 s.
        embedder = OpenAIEmbedder("test-key", f"{openai_url}/v1", dimensions=16)
        texts = [f"text {i}" for i in range(2500)]

        async def both():
            return await embedder.embed(texts), await embedder.embed(["text 2499"])

        vectors, single = asyncio.run(both())
    assert [len(c["input"]) for c in calls[:2]] == [2048, 452]
    assert len(vectors) == 2500 and vectors[2499] == single[0] and len(single[0]) == 16
    assert all(c["dimensions"] == 16 and c["model"] == "text-embedding-3-large" for c in calls)


def test_embedding_provider_failure_is_a_clear_problem(redis_url: str) -> None:
    calls: list[dict[str, Any]] = []
    with serve(fake_openai(calls, {"status": 500})) as openai_url:
        app = build_app(
            Settings(
                embedding_provider="openai",
                openai_api_key="test-key",
                openai_base_url=f"{openai_url}/v1",
                qdrant_collection="failing",
            )
        )
        with serve(app) as url:
            response = httpx.post(f"{url}/memories", json={"text": "hello"})
    assert response.status_code == 502 and response.json()["title"] == "Upstream error"
    assert len(calls) == 3  # retried before giving up


def test_redis_outage_degrades_to_no_cache(redis_url: str) -> None:
    port = free_port()  # nothing listens here: Redis is "down"
    app = build_app(Settings(redis_url=f"redis://127.0.0.1:{port}/0", qdrant_collection="no-cache"))
    with serve(app) as url:
        assert httpx.post(f"{url}/memories", json={"text": "still works"}).status_code == 201
        found = httpx.post(f"{url}/memories/search", json={"query": "still works"}).json()["results"]
        ready = httpx.get(f"{url}/readyz")
    assert found[0]["text"] == "still works"
    # The cache is optional: reported, not a reason to leave the Service.
    assert ready.status_code == 200 and list(ready.json()["degraded"]) == ["redis"]


def test_a_hung_redis_is_skipped_after_a_few_timeouts() -> None:
    """A Redis that accepts connections but never answers: the breaker stops every search
    from waiting out the timeout. Deterministic on a loaded machine: the breaker stays open for
    the whole test (a long reset), and each search embeds through the fake OpenAI, not the CPU model."""
    import socket

    listener = socket.create_server(("127.0.0.1", 0))  # the kernel completes connects; nothing replies
    accepted: list[socket.socket] = []
    listener.settimeout(0.05)

    def accept_pending() -> int:
        while True:
            try:
                accepted.append(listener.accept()[0])
            except TimeoutError:
                return len(accepted)

    port = listener.getsockname()[1]
    try:
        with serve(fake_openai([], {})) as openai_url:
            app = build_app(
                Settings(
                    redis_url=f"redis://127.0.0.1:{port}/0",
                    redis_timeout_seconds=0.3,
                    redis_breaker_reset_seconds=600,
                    qdrant_collection="hung-redis",
                    embedding_provider="openai",
                    openai_api_key="test-key",
                    openai_base_url=f"{openai_url}/v1",
                )
            )
            with serve(app) as url:
                for i in range(3):  # each waits out one timeout, then the breaker opens
                    assert httpx.post(f"{url}/memories/search", json={"query": f"q{i}"}).status_code == 200
                connections = accept_pending()
                started = time.monotonic()
                for i in range(10):
                    assert httpx.post(f"{url}/memories/search", json={"query": f"later {i}"}).status_code == 200
                elapsed = time.monotonic() - started
                assert accept_pending() == connections  # Redis was not tried again
                assert app.state.service.embedder.breaker.state == "open"
                assert elapsed < 10 * 0.3  # without the breaker each search waits 0.3 s or more
    finally:
        for conn in accepted:
            conn.close()
        listener.close()


def test_mcp_client_lists_and_calls_the_tools(local_app) -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    url, _ = local_app

    async def session_run():
        async with streamable_http_client(f"{url}/mcp") as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                tools = {t.name for t in (await session.list_tools()).tools}
                stored = await session.call_tool("store_memory", {"text": "Sophia's MCP memory works", "user": "mcp"})
                found = await session.call_tool(
                    "search_memories", {"query": "does the MCP memory work?", "user": "mcp"}
                )
                return tools, stored, found

    tools, stored, found = asyncio.run(session_run())
    assert tools == {"store_memory", "search_memories", "delete_memory"}
    assert not stored.is_error and not found.is_error
    assert "Sophia's MCP memory works" in str(found.structured_content or found.content)


def test_a_burst_beyond_the_redis_pool_waits_for_the_cache_instead_of_running_the_model(redis_url: str) -> None:
    """Measured in bench-context: failing over to the model when the pool was busy made every
    hit a model run and throughput collapsed. A burst now queues for a connection."""
    app = build_app(
        Settings(
            redis_url=redis_url,
            embedding_provider="local",
            redis_max_connections=2,
            qdrant_collection="burst",
            max_concurrent_requests=300,  # all 200 in flight at once (admission control is tested apart)
            max_loop_lag_seconds=0,
            embedding_cache_local_entries=0,  # every hit through Redis's pool
        )
    )
    with serve(app) as url:
        queries = [f"burst question {i}" for i in range(4)]
        for q in queries:  # warm the cache
            httpx.post(f"{url}/memories/search", json={"query": q}).raise_for_status()
        embedder = app.state.service.embedder
        misses_before = embedder.misses

        async def burst() -> list[int]:
            limits = httpx.Limits(max_connections=300)  # more requests in flight than redis-py's default pool
            async with httpx.AsyncClient(base_url=url, timeout=30, limits=limits) as client:
                answers = await asyncio.gather(
                    *(client.post("/memories/search", json={"query": queries[i % 4]}) for i in range(200))
                )
            return [a.status_code for a in answers]

        assert asyncio.run(burst()) == [200] * 200
        assert embedder.misses == misses_before  # 200 hits through 2 connections, no model runs


def test_the_index_is_built_aside_swapped_in_and_finds_what_the_exact_scan_finds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """An HNSW graph with int8 quantization, built by a child process on a copy of the shard;
    writes made during the build are replayed into it; the same top 5 as the exact scan."""
    import numpy as np

    from mcp_context import store as store_module
    from mcp_context.store import EmbeddedMemoryStore, Memory

    # A few KB of vectors: let the graph, not the full-scan fallback, answer filtered searches.
    monkeypatch.setattr(store_module, "HNSW", store_module.HNSW.model_copy(update={"full_scan_threshold": 1}))
    rng = np.random.default_rng(7)
    dims, count = 64, 600
    centers = rng.standard_normal((12, dims))
    vectors = centers[rng.integers(0, 12, count)] + 0.5 * rng.standard_normal((count, dims))
    queries = centers[rng.integers(0, 12, 25)] + 0.5 * rng.standard_normal((25, dims))

    async def scenario() -> None:
        store = EmbeddedMemoryStore(str(tmp_path / "q"), "idx", dims, index_min_points=100, index_check_seconds=0)
        await store.ensure_collection()
        memories = [Memory(text=f"m{i}", tenant="t") for i in range(count)]
        await store.upsert(memories, vectors.tolist())
        assert store.needs_index() and store.index_status()["indexed"] == 0
        late = Memory(text="written during the build", tenant="t")

        async def build_while_writing(directory: Path) -> None:
            await asyncio.gather(store_module.run_indexer(directory), store.upsert([late], [queries[0].tolist()]))
            assert await store.delete(memories[0].id, "t")

        assert await store.build_index(build_while_writing)
        status = store.index_status()
        assert status["indexed"] >= count - 1 and status["builds"] == 1 and not store.needs_index()
        assert await store.get(late.id, "t") is not None and await store.get(memories[0].id, "t") is None
        search = dict(tenant="t", limit=5, score_threshold=None, namespace=None, user=None, metadata=None)
        for q in queries:
            indexed = [r["id"] for r in await store.search(q.tolist(), **search)]
            exact = [r["id"] for r in await store.search(q.tolist(), exact=True, **search)]
            assert indexed == exact
        await store.close()
        # A restart opens the indexed generation through the collection's link; the old one is gone.
        again = EmbeddedMemoryStore(str(tmp_path / "q"), "idx", dims)
        await again.ensure_collection()
        assert again.index_status()["indexed"] >= count - 1
        assert [p.name for p in sorted((tmp_path / "q").iterdir())] == [".idx.gen-2", "idx"]
        await again.close()

    asyncio.run(scenario())


def test_a_recent_query_is_answered_from_the_process_without_a_redis_round_trip(redis_url: str) -> None:
    import redis.asyncio as aioredis

    from mcp_context.cache import CachedEmbedder

    class Counting:
        model, dimensions = "counting", 4

        async def embed(self, texts):
            return [[float(len(t)), 1.0, 0.0, 0.0] for t in texts]

    async def scenario() -> tuple[int, int, int, int]:
        client = aioredis.Redis.from_url(redis_url)
        cached = CachedEmbedder(Counting(), client, local_entries=2)
        stats = redis.Redis.from_url(redis_url).info("commandstats")
        before = stats.get("cmdstat_mget", {}).get("calls", 0)
        first = await cached.embed(["a", "bb"])
        again = await cached.embed(["a", "bb"])  # both in the process: no MGET
        await cached.embed(["ccc"])  # evicts the least recent ("a"): read back from Redis next
        assert await cached.embed(["a"]) == [first[0]] and again == first
        after = redis.Redis.from_url(redis_url).info("commandstats")["cmdstat_mget"]["calls"]
        await client.aclose()
        return after - before, cached.model_runs, cached.hits, cached.misses

    mgets, runs, hits, misses = asyncio.run(scenario())
    assert (mgets, runs) == (3, 2)  # "a, bb", "ccc", "a" again; the model ran for "a, bb" and "ccc"
    assert (hits, misses) == (3, 3)


def test_the_dedupe_flag_collapses_copies_of_a_memory_for_the_tenants_it_is_on_for(
    redis_url: str, tmp_path: Path
) -> None:
    """The feature flag memory-search-dedupe (sophia:flags), flipped in the flag file the platform
    mounts, changes the next search without a restart."""
    flags_file = tmp_path / "flags.json"
    flags_file.write_text(json.dumps({"flags": {"memory-search-dedupe": {"default": False}}}))
    settings = Settings(
        redis_url=redis_url, embedding_provider="local", flags_file=str(flags_file), flags_poll_seconds=0.1
    )
    copy = {"text": "The release train leaves every Tuesday.", "namespace": "dedupe"}
    other = {"text": "Releases are cut from the main branch.", "namespace": "dedupe"}
    query = {"query": "when does the release train leave", "top_k": 2, "namespace": "dedupe"}
    with serve(build_app(settings)) as url:
        httpx.post(f"{url}/memories/batch", json=[copy, copy, copy, other]).raise_for_status()
        off = httpx.post(f"{url}/memories/search", json=query).json()["results"]
        assert [r["text"] for r in off] == [copy["text"], copy["text"]]
        # On for this tenant (the tests' AUTH_MODE=off caller acts for tenant "default").
        flags_file.write_text(json.dumps({"flags": {"memory-search-dedupe": {"tenants": ["default"]}}}))
        time.sleep(0.3)
        on = httpx.post(f"{url}/memories/search", json=query).json()["results"]
        assert [r["text"] for r in on] == [copy["text"], other["text"]]
        metrics = httpx.get(f"{url}/metrics").text
    assert 'feature_flag_evaluations_total{flag="memory-search-dedupe",variant="on"} 1.0' in metrics
    assert 'feature_flag_evaluations_total{flag="memory-search-dedupe",variant="off"} 1.0' in metrics
