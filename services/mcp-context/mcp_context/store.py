"""Memories in Qdrant. The collection is created exactly as the seed specifies (size from
the embedder; cosine; HNSW m=16, ef_construct=200, full_scan_threshold=10000; 2 segments,
2 optimization threads). A Qdrant server in the cluster (qdrant-client); Qdrant Edge, the
same Rust engine in-process, when no server URL is set."""

from __future__ import annotations

import shutil
import tempfile
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import qdrant_edge as edge
from qdrant_client import AsyncQdrantClient, models

HNSW = models.HnswConfigDiff(m=16, ef_construct=200, full_scan_threshold=10000)
OPTIMIZERS = models.OptimizersConfigDiff(default_segment_number=2, max_optimization_threads=2)
INDEXED_FIELDS = ("tenant", "namespace", "user")  # keyword indexes: the filters every search may carry


@dataclass
class Memory:
    text: str
    tenant: str  # from the caller's identity (sophia_chassis.auth), never from the request body
    namespace: str = "default"
    user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = field(default_factory=time.time)

    def payload(self) -> dict[str, Any]:
        return {
            "text": self.text,
            "tenant": self.tenant,
            "namespace": self.namespace,
            "user": self.user,
            "metadata": self.metadata,
            "created_at": self.created_at,
        }


def filter_conditions(
    tenant: str, namespace: str | None, user: str | None, metadata: dict[str, Any] | None
) -> list[tuple[str, Any]]:
    """(payload key, value) pairs that must all match; the tenant always does."""
    pairs = [("tenant", tenant)] + [(k, v) for k, v in (("namespace", namespace), ("user", user)) if v is not None]
    return pairs + [(f"metadata.{k}", v) for k, v in (metadata or {}).items()]


def owned(found: dict[str, Any] | None, tenant: str) -> dict[str, Any] | None:
    """Another tenant's memory is no memory at all (a 404, as for an id that never existed)."""
    return found if found is not None and found.get("tenant") == tenant else None


class MemoryStore(Protocol):
    collection: str

    async def ensure_collection(self) -> None: ...
    async def upsert(self, memories: list[Memory], vectors: list[list[float]]) -> None: ...
    async def search(
        self,
        vector: list[float],
        *,
        tenant: str,
        limit: int,
        score_threshold: float | None,
        namespace: str | None,
        user: str | None,
        metadata: dict[str, Any] | None,
    ) -> list[dict[str, Any]]: ...
    async def get(self, memory_id: str, tenant: str) -> dict[str, Any] | None: ...
    async def delete(self, memory_id: str, tenant: str) -> bool: ...
    async def ready(self) -> bool: ...
    async def close(self) -> None: ...


class ServerMemoryStore:
    """A Qdrant server through qdrant-client: what runs in the cluster."""

    def __init__(self, client: AsyncQdrantClient, collection: str, dimensions: int):
        self.client, self.collection, self.dimensions = client, collection, dimensions

    async def ensure_collection(self) -> None:
        if await self.client.collection_exists(self.collection):
            return
        await self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE),
            hnsw_config=HNSW,
            optimizers_config=OPTIMIZERS,
        )
        for key in INDEXED_FIELDS:
            await self.client.create_payload_index(self.collection, key, models.PayloadSchemaType.KEYWORD)

    async def upsert(self, memories: list[Memory], vectors: list[list[float]]) -> None:
        await self.client.upsert(
            self.collection,
            points=[
                models.PointStruct(id=m.id, vector=v, payload=m.payload())
                for m, v in zip(memories, vectors, strict=True)
            ],
        )

    async def search(
        self,
        vector: list[float],
        *,
        tenant: str,
        limit: int,
        score_threshold: float | None,
        namespace: str | None,
        user: str | None,
        metadata: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        must = [
            models.FieldCondition(key=k, match=models.MatchValue(value=v))
            for k, v in filter_conditions(tenant, namespace, user, metadata)
        ]
        result = await self.client.query_points(
            self.collection,
            query=vector,
            limit=limit,
            score_threshold=score_threshold,
            query_filter=models.Filter(must=must) if must else None,
            with_payload=True,
        )
        return [{"id": str(p.id), "score": p.score, **(p.payload or {})} for p in result.points]

    async def get(self, memory_id: str, tenant: str) -> dict[str, Any] | None:
        points = await self.client.retrieve(self.collection, ids=[memory_id], with_payload=True)
        return owned({"id": str(points[0].id), **(points[0].payload or {})} if points else None, tenant)

    async def delete(self, memory_id: str, tenant: str) -> bool:
        # Only the tenant is read: deleting never depends on decoding the rest of what was stored.
        points = await self.client.retrieve(self.collection, ids=[memory_id], with_payload=["tenant"])
        if owned(points[0].payload if points else None, tenant) is None:
            return False
        await self.client.delete(self.collection, points_selector=models.PointIdsList(points=[memory_id]))
        return True

    async def ready(self) -> bool:
        return await self.client.collection_exists(self.collection)

    async def close(self) -> None:
        await self.client.close()


class EmbeddedMemoryStore:
    """Qdrant Edge: a shard directory per collection under `path`, or a temporary one for
    ":memory:". Its calls are a few ms of Rust that hold the GIL (measured), so they run on the
    event loop; a thread would add a hop and free nothing. The shard is never optimized in
    process: optimize() holds the GIL for seconds (10 s for 10 000 points, measured), which would
    freeze the service. Unindexed segments are searched exactly, ~2 ms over 10 000 points."""

    def __init__(self, path: str, collection: str, dimensions: int):
        self.collection, self.dimensions = collection, dimensions
        self._scratch = tempfile.mkdtemp(prefix="mcp-context-") if path == ":memory:" else None
        self.path = Path(self._scratch or path) / collection
        self.shard: edge.EdgeShard | None = None

    def config(self) -> edge.EdgeConfig:
        return edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=self.dimensions, distance=edge.Distance.Cosine),
            hnsw_config=edge.HnswIndexConfig(
                m=HNSW.m, ef_construct=HNSW.ef_construct, full_scan_threshold=HNSW.full_scan_threshold
            ),
            optimizers=edge.EdgeOptimizersConfig(default_segment_number=OPTIMIZERS.default_segment_number),
            payload_memory=edge.Memory.Cached,
        )

    async def ensure_collection(self) -> None:
        if self.shard is not None:
            return
        if (self.path / "edge_config.json").exists():
            try:  # Qdrant Edge checks the vector size against the segments on disk
                self.shard = edge.EdgeShard.load(str(self.path), self.config())
            except Exception as exc:  # the bindings raise a bare Exception
                raise RuntimeError(
                    f"QDRANT_PATH: cannot open the embedded Qdrant shard at {self.path} for "
                    f"{self.dimensions}-d vectors ({exc}). It was made by another embedder or is in use by "
                    "another process: point QDRANT_PATH at another directory, or delete this one."
                ) from exc
            return
        self.shard = edge.EdgeShard.create(str(self.path), self.config())
        for key in INDEXED_FIELDS:
            self.shard.update(edge.UpdateOperation.create_field_index(key, edge.PayloadSchemaType.Keyword))

    def _shard(self) -> edge.EdgeShard:
        if self.shard is None:
            raise RuntimeError("the embedded Qdrant shard is not open; ensure_collection() runs at start-up")
        return self.shard

    async def upsert(self, memories: list[Memory], vectors: list[list[float]]) -> None:
        self._shard().update(
            edge.UpdateOperation.upsert_points(
                [edge.Point(m.id, v, m.payload()) for m, v in zip(memories, vectors, strict=True)]
            )
        )

    async def search(
        self,
        vector: list[float],
        *,
        tenant: str,
        limit: int,
        score_threshold: float | None,
        namespace: str | None,
        user: str | None,
        metadata: dict[str, Any] | None,
    ) -> list[dict[str, Any]]:
        must = [
            edge.FieldCondition(key=k, match=edge.MatchValue(v))
            for k, v in filter_conditions(tenant, namespace, user, metadata)
        ]
        points = self._shard().search(
            edge.SearchRequest(
                query=edge.Query.Nearest(vector),
                limit=limit,
                score_threshold=score_threshold,
                filter=edge.Filter(must=must) if must else None,
                with_payload=True,
            )
        )
        return [{"id": str(p.id), "score": p.score, **(p.payload or {})} for p in points]

    async def get(self, memory_id: str, tenant: str) -> dict[str, Any] | None:
        records = self._shard().retrieve([memory_id], with_payload=True, with_vector=False)
        return owned({"id": str(records[0].id), **(records[0].payload or {})} if records else None, tenant)

    async def delete(self, memory_id: str, tenant: str) -> bool:
        # Only the tenant is read: deleting never depends on decoding the rest of what was stored.
        records = self._shard().retrieve([memory_id], with_payload=["tenant"], with_vector=False)
        if owned(records[0].payload if records else None, tenant) is None:
            return False
        self._shard().update(edge.UpdateOperation.delete_points([memory_id]))
        return True

    async def ready(self) -> bool:
        return self.shard is not None

    async def close(self) -> None:
        if self.shard is not None:
            self.shard.close()
            self.shard = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)
