"""mcp-context: memories and embeddings over Qdrant with a Redis embedding cache,
served as REST and as an MCP server (streamable HTTP at /mcp) from one app.

Run with `uvicorn --factory mcp_context.main:build_app` (settings come from env and
the mounted secret files when the app is built, not at import)."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from typing import Annotated, Any
from uuid import UUID

import redis.asyncio as redis
import structlog
from fastapi import Depends, FastAPI, Header, HTTPException, Request, Response
from mcp.server.mcpserver import Context, MCPServer
from prometheus_client import Counter
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from qdrant_client import AsyncQdrantClient

from mcp_context.cache import CachedEmbedder
from mcp_context.embeddings import Embedder, MiniLMEmbedder, OpenAIEmbedder
from mcp_context.handoff import ShardHandoff, install, owner_url
from mcp_context.settings import Settings
from mcp_context.store import EmbeddedMemoryStore, Memory, MemoryStore, ServerMemoryStore
from sophia_chassis import create_app
from sophia_chassis.auth import Identity, require, tool_identity
from sophia_chassis.inputs import FiniteFloat, Int64, JsonObject, Name, Text
from sophia_chassis.mcp import McpEndpoint
from sophia_chassis.rotation import RotatedCredential, RotatedKeyAuth, redis_connection_class

log = structlog.get_logger()
# Feature flag (sophia_chassis.flags; declared in services/mcp-context/service.yaml, set per stack
# in sophia:flags): a memory stored several times (agents re-index, users repeat themselves) fills
# a search's top_k with copies; on, copies of one text collapse into the best-scoring one.
DEDUPE_FLAG = "memory-search-dedupe"
# With the flag on a search asks the store for this many times top_k, so that collapsing
# copies still leaves top_k distinct memories where the store has them.
DEDUPE_OVERFETCH = 3


# The edge's types, shared by the REST models and the MCP tools (one rule each).
MemoryText = Text(100_000, min_length=1)
# Models read at most 256 (MiniLM) or 8191 (OpenAI) tokens: a longer query only costs memory.
QueryText = Text(8_000, min_length=1)
Namespace = Name(200)
User = Name(200)
# Qdrant keeps payloads as JSON (serde_json, 128 levels at most); far less is plenty for metadata.
Metadata = JsonObject(max_depth=8, max_keys=64)
# A filter key is a payload path in Qdrant ("metadata.<key>"): dots or brackets would be paths.
FilterKey = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
FilterValue = Text(1000) | Int64 | bool  # what a Qdrant exact match compares
MetadataFilter = Annotated[dict[FilterKey, FilterValue], Field(max_length=16)]
TopK = Annotated[int, Field(ge=1, le=100)]
ScoreThreshold = Annotated[FiniteFloat, Field(ge=-1, le=1)]
# A store's Idempotency-Key (the IETF draft's header, as mcp-agents takes it): the same request with
# the same key stores the same points again (ids derived from tenant, key and item), not new ones.
IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", pattern=r"^[\x21-\x7e]{1,255}$")]
STORED_IDS = uuid.UUID("5b0e7c52-9a43-4c1e-b1d6-6f1d2c4a8e10")  # the uuid5 namespace of derived ids


class MemoryIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    text: MemoryText
    namespace: Namespace = "default"
    user: User | None = None
    metadata: Metadata = {}


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    query: QueryText
    top_k: TopK = 5
    score_threshold: ScoreThreshold | None = None
    namespace: Namespace | None = None
    user: User | None = None
    metadata: MetadataFilter | None = None


def build_embedder(settings: Settings) -> Embedder:
    if settings.embedding_provider == "openai":
        if settings.openai_api_key:
            return OpenAIEmbedder(settings.openai_api_key, settings.openai_base_url, settings.embedding_model)
        log.warning("openai_key_missing_using_local_embedder")
    return MiniLMEmbedder()


class ContextService:
    """The service's behaviour, shared by the REST routes and the MCP tools."""

    def __init__(self, settings: Settings):
        self.settings = settings
        client = None
        if settings.redis_url:
            # A blocking pool: under a burst, waiting for a free connection beats failing over to the
            # model, which costs far more CPU and feeds the burst (measured: throughput collapsed).
            # Timeouts are counted on this event loop, which stalls for hundreds of ms under a burst:
            # tight ones turned healthy calls into misses (seen in CI). A hung Redis is instead cut
            # off by the cache's breaker after a few timeouts.
            pool = redis.BlockingConnectionPool.from_url(
                settings.redis_url,
                password=settings.redis_password,
                max_connections=settings.redis_max_connections,
                timeout=10,
                socket_timeout=settings.redis_timeout_seconds,
                socket_connect_timeout=settings.redis_timeout_seconds,
                # Rotated passwords are read from the secret files at each new connection (no restart).
                connection_class=redis_connection_class(RotatedCredential(("REDIS_PASSWORD",))),
            )
            client = redis.Redis(connection_pool=pool)
        self.embedder = CachedEmbedder(
            build_embedder(settings),
            client,
            settings.embedding_cache_ttl_seconds,
            breaker_reset_seconds=settings.redis_breaker_reset_seconds,
            local_entries=settings.embedding_cache_local_entries,
        )
        self.store: MemoryStore
        if settings.qdrant_url:
            self.store = ServerMemoryStore(
                # The key per request from the secret files, the next one on a 401/403 (a rotation's
                # rolling window, components/qdrant.py).
                AsyncQdrantClient(
                    url=settings.qdrant_url,
                    auth=RotatedKeyAuth(
                        RotatedCredential(("QDRANT_API_KEY",), other="_NEXT", fallback=(settings.qdrant_api_key,))
                    ),
                ),
                settings.qdrant_collection,
                self.embedder.dimensions,
                replication_factor=settings.qdrant_replication_factor,
                write_consistency_factor=settings.qdrant_write_consistency_factor,
                shard_number=settings.qdrant_shard_number,
            )
        else:
            self.store = EmbeddedMemoryStore(
                settings.qdrant_path,
                settings.qdrant_collection,
                self.embedder.dimensions,
                index_min_points=settings.index_min_points,
                index_check_seconds=settings.index_check_seconds,
            )

    async def add(self, items: list[MemoryIn], tenant: str, idempotency_key: str | None = None) -> list[str]:
        memories = [
            Memory(text=i.text, tenant=tenant, namespace=i.namespace, user=i.user, metadata=i.metadata) for i in items
        ]
        if idempotency_key is not None:
            for n, (memory, item) in enumerate(zip(memories, items, strict=True)):
                memory.id = stored_id(tenant, idempotency_key, n, item)
        vectors = await self.embedder.embed([m.text for m in memories])
        await self.store.upsert(memories, vectors)
        return [m.id for m in memories]

    async def search(
        self,
        query: SearchIn,
        tenant: str,
        abandoned: Callable[[], Awaitable[bool]] | None = None,
        dedupe: bool = False,
    ) -> list[dict[str, Any]] | None:
        """None when `abandoned` says the caller has gone: under overload, clients that timed out
        would otherwise keep the store busy for nobody (measured in bench-context)."""
        [vector] = await self.embedder.embed([query.query])
        if abandoned is not None and await abandoned():
            return None
        limit = min(query.top_k * DEDUPE_OVERFETCH, 100) if dedupe else query.top_k
        results = await self.store.search(
            vector,
            tenant=tenant,
            limit=limit,
            score_threshold=query.score_threshold,
            namespace=query.namespace,
            user=query.user,
            metadata=query.metadata,
        )
        if dedupe:
            results = distinct_texts(results)[: query.top_k]
        return results


def stored_id(tenant: str, key: str, index: int, item: MemoryIn) -> str:
    """The id of the `index`th memory of a store sent with an Idempotency-Key: the same for the same
    tenant, key and item (a retry writes the same point again), another for another item."""
    name = json.dumps([tenant, key, index, item.model_dump(mode="json")], sort_keys=True, separators=(",", ":"))
    return str(uuid.uuid5(STORED_IDS, name))


def distinct_texts(results: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The first (best-scoring) result of each text, in order."""
    seen: set[str] = set()
    kept = []
    for result in results:
        if result.get("text") not in seen:
            seen.add(result.get("text"))
            kept.append(result)
    return kept


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    service = ContextService(settings)
    mcp = MCPServer("mcp-context", instructions="Store and search long-term memories.")
    endpoint = McpEndpoint(mcp)

    @mcp.tool()
    async def store_memory(
        ctx: Context,
        text: MemoryText,
        namespace: Namespace = "default",
        user: User | None = None,
        metadata: Metadata | None = None,
    ) -> dict[str, str]:
        """Store a memory; returns its id."""
        who = tool_identity(ctx, "context:write", "store_memory")
        item = MemoryIn(text=text, namespace=namespace, user=user, metadata=metadata or {})
        [memory_id] = await service.add([item], who.tenant)
        return {"id": memory_id}

    @mcp.tool()
    async def search_memories(
        ctx: Context,
        query: QueryText,
        top_k: TopK = 5,
        namespace: Namespace | None = None,
        user: User | None = None,
        metadata: MetadataFilter | None = None,
    ) -> list[dict[str, Any]]:
        """Semantic search over stored memories, best match first; `metadata` filters by exact values."""
        who = tool_identity(ctx, "context:read", "search_memories")
        return await service.search(
            SearchIn(query=query, top_k=top_k, namespace=namespace, user=user, metadata=metadata),
            who.tenant,
            dedupe=flags.enabled(DEDUPE_FLAG, who),
        )

    @mcp.tool()
    async def delete_memory(ctx: Context, memory_id: UUID) -> dict[str, bool]:
        """Delete a memory by id."""
        who = tool_identity(ctx, "context:write", "delete_memory")
        return {"deleted": await service.store.delete(str(memory_id), who.tenant)}

    # A shard in a directory (the local stack's volume) may be wanted by a pod's successor: handed over.
    handoff: ShardHandoff | None = None

    async def warm_up() -> None:
        """What a first request would otherwise pay on a pod that serves at once (a rollout's
        successor, forwarded to from the moment it takes the shard): the model's first pass, and the
        cache's connections, as many as searches may run at once."""
        await service.embedder.inner.embed(["warm-up"])
        if service.embedder.client is not None:
            pings = [service.embedder.ping() for _ in range(settings.max_concurrent_requests)]
            await asyncio.gather(*pings, return_exceptions=True)  # Redis is optional (degraded)

    async def start() -> None:
        if handoff is not None:
            # Warmed up, then the shard: from its owner if a pod of another revision has it (a
            # rollout), or following an owner of this revision (a sibling) until it dies.
            await handoff.acquire(warm_up)
        else:
            await service.store.ensure_collection()
            if isinstance(service.store, EmbeddedMemoryStore):
                service.store.start_indexing()
        await endpoint.start()

    async def stop() -> None:
        await endpoint.stop()
        if service.embedder.client is not None:
            await service.embedder.client.aclose()
        if handoff is not None:
            await handoff.stop()  # no more watching, the shard closed, then the lock
        else:
            await service.store.close()

    async def redis_ready() -> bool:
        return await service.embedder.ping()

    async def qdrant_ready() -> bool:
        return await (handoff.ready() if handoff is not None else service.store.ready())

    app = create_app(
        settings,
        readiness={"qdrant": qdrant_ready},
        degraded={"redis": redis_ready},
        on_startup=[start],
        on_shutdown=[stop],
        # Past capacity a search is answered 503 + Retry-After within QUEUE_TIMEOUT_SECONDS (bench-context).
        limited_paths=("/memories/search",),
    )
    app.state.service = service
    if isinstance(service.store, EmbeddedMemoryStore) and settings.qdrant_path != ":memory:":
        handoff = ShardHandoff(
            service.store,
            owner_url(settings.pod_ip, settings.port),
            app.state.registry,
            revision=settings.pod_template_hash,
            acquire_seconds=settings.shard_acquire_seconds,
            take_back_seconds=settings.shard_take_back_seconds,
            max_body_bytes=settings.max_body_bytes,
        )
        install(app, handoff)
    app.state.handoff = handoff
    flags = app.state.flags
    requests_abandoned = Counter(
        "context_searches_abandoned_total",
        "Searches not run because their client had gone",
        registry=app.state.registry,
    )

    @app.post("/memories", status_code=201)
    async def add_memory(
        item: MemoryIn, key: IdempotencyKey = None, who: Identity = Depends(require("context:write"))
    ) -> dict[str, str]:
        return {"id": (await service.add([item], who.tenant, key))[0]}

    @app.post("/memories/batch", status_code=201)
    async def add_batch(
        items: Annotated[list[MemoryIn], Field(min_length=1, max_length=1000)],
        key: IdempotencyKey = None,
        who: Identity = Depends(require("context:write")),
    ) -> dict[str, list[str]]:
        return {"ids": await service.add(items, who.tenant, key)}

    @app.post("/memories/search")
    async def search(query: SearchIn, request: Request, who: Identity = Depends(require("context:read"))):
        results = await service.search(
            query, who.tenant, abandoned=request.is_disconnected, dedupe=flags.enabled(DEDUPE_FLAG, who)
        )
        if results is None:
            requests_abandoned.inc()
            return Response(status_code=499)  # nginx's "client closed request": nobody reads it
        return {"results": results}

    @app.get("/memories/{memory_id}")
    async def get_memory(  # ids are UUIDs: anything else is a 422
        memory_id: UUID, who: Identity = Depends(require("context:read"))
    ) -> dict[str, Any]:
        found = await service.store.get(str(memory_id), who.tenant)
        if found is None:
            raise HTTPException(404, f"no memory {memory_id}")
        return found

    @app.delete("/memories/{memory_id}", status_code=204)
    async def delete(memory_id: UUID, who: Identity = Depends(require("context:write"))) -> None:
        if not await service.store.delete(str(memory_id), who.tenant):
            raise HTTPException(404, f"no memory {memory_id}")

    @app.get("/embeddings/info", dependencies=[Depends(require("context:read"))])
    async def info() -> dict[str, Any]:
        return {
            "model": service.embedder.model,
            "dimensions": service.embedder.dimensions,
            "cache": {"hits": service.embedder.hits, "misses": service.embedder.misses},
            # The embedded shard's index (built aside and swapped in); a Qdrant server indexes itself.
            "index": service.store.index_status() if isinstance(service.store, EmbeddedMemoryStore) else None,
        }

    endpoint.attach(app)
    return app
