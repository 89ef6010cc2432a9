"""Redis embedding cache: key = hash(model, text), TTL 24 h (the seed), one round trip
per batch. Redis being down degrades to no cache, never to an error."""

from __future__ import annotations

import hashlib
import json
from typing import Sequence

import redis.asyncio as redis
import structlog

from mcp_context.embeddings import Embedder

CACHE_TTL_SECONDS = 86400
log = structlog.get_logger()


def cache_key(model: str, text: str) -> str:
    return "emb:" + hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()


class CachedEmbedder:
    def __init__(self, inner: Embedder, client: redis.Redis | None, ttl: int = CACHE_TTL_SECONDS):
        self.inner, self.client, self.ttl = inner, client, ttl
        self.model, self.dimensions = inner.model, inner.dimensions
        self.hits = self.misses = 0

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        keys = [cache_key(self.model, t) for t in texts]
        cached: list[bytes | None] = [None] * len(texts)
        if self.client is not None and texts:
            try:
                cached = await self.client.mget(keys)
            except (redis.RedisError, OSError) as exc:
                log.warning("embedding_cache_unavailable", error=str(exc))
        missing = [i for i, value in enumerate(cached) if value is None]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        fresh = await self.inner.embed([texts[i] for i in missing]) if missing else []
        vectors: list[list[float]] = [json.loads(v) if v is not None else [] for v in cached]
        for i, vector in zip(missing, fresh):
            vectors[i] = vector
        if fresh and self.client is not None:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for i, vector in zip(missing, fresh):
                        pipe.set(keys[i], json.dumps(vector), ex=self.ttl)
                    await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                log.warning("embedding_cache_unavailable", error=str(exc))
        return vectors

    async def ping(self) -> bool:
        return self.client is None or bool(await self.client.ping())
