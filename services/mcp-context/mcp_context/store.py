"""Memories in Qdrant. The collection is created exactly as the seed specifies (size from
the embedder; cosine; HNSW m=16, ef_construct=200, full_scan_threshold=10000; 2 segments,
2 optimization threads). A server URL in the cluster; embedded local mode otherwise."""

from __future__ import annotations

import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from qdrant_client import AsyncQdrantClient, models

HNSW = models.HnswConfigDiff(m=16, ef_construct=200, full_scan_threshold=10000)
OPTIMIZERS = models.OptimizersConfigDiff(default_segment_number=2, max_optimization_threads=2)


@dataclass
class Memory:
    text: str
    namespace: str = "default"
    user: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    id: str = field(default_factory=lambda: str(uuid.uuid4()))
    created_at: float = field(default_factory=time.time)

    def payload(self) -> dict[str, Any]:
        return {"text": self.text, "namespace": self.namespace, "user": self.user, "metadata": self.metadata,
                "created_at": self.created_at}


class MemoryStore:
    def __init__(self, client: AsyncQdrantClient, collection: str, dimensions: int, payload_indexes: bool = True):
        self.client, self.collection, self.dimensions = client, collection, dimensions
        # Embedded Qdrant has no payload indexes; a server needs them for filtered search at scale.
        self.payload_indexes = payload_indexes

    async def ensure_collection(self) -> None:
        if await self.client.collection_exists(self.collection):
            return
        await self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE),
            hnsw_config=HNSW, optimizers_config=OPTIMIZERS)
        for key in ("namespace", "user") if self.payload_indexes else ():
            await self.client.create_payload_index(self.collection, key, models.PayloadSchemaType.KEYWORD)

    async def upsert(self, memories: list[Memory], vectors: list[list[float]]) -> None:
        await self.client.upsert(self.collection, points=[
            models.PointStruct(id=m.id, vector=v, payload=m.payload()) for m, v in zip(memories, vectors)])

    async def search(self, vector: list[float], *, limit: int, score_threshold: float | None, namespace: str | None,
                     user: str | None, metadata: dict[str, Any] | None) -> list[dict[str, Any]]:
        must = [models.FieldCondition(key=k, match=models.MatchValue(value=v))
                for k, v in (("namespace", namespace), ("user", user)) if v is not None]
        must += [models.FieldCondition(key=f"metadata.{k}", match=models.MatchValue(value=v))
                 for k, v in (metadata or {}).items()]
        result = await self.client.query_points(self.collection, query=vector, limit=limit,
                                                score_threshold=score_threshold,
                                                query_filter=models.Filter(must=must) if must else None,
                                                with_payload=True)
        return [{"id": str(p.id), "score": p.score, **(p.payload or {})} for p in result.points]

    async def get(self, memory_id: str) -> dict[str, Any] | None:
        points = await self.client.retrieve(self.collection, ids=[memory_id], with_payload=True)
        return {"id": str(points[0].id), **(points[0].payload or {})} if points else None

    async def delete(self, memory_id: str) -> bool:
        if await self.get(memory_id) is None:
            return False
        await self.client.delete(self.collection, points_selector=models.PointIdsList(points=[memory_id]))
        return True
