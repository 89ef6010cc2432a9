"""Redis embedding cache: key = hash(model, text), TTL 24 h (the seed), one round trip
per batch. Redis being down degrades to no cache, never to an error. Vectors are stored
as little-endian float32 bytes (what Qdrant keeps anyway): a quarter of JSON's size and
decoded without parsing, which is most of a hit's cost (bench-context)."""

from __future__ import annotations

import hashlib
from typing import Sequence

import numpy as np
import redis.asyncio as redis
import structlog

from mcp_context.embeddings import Embedder

CACHE_TTL_SECONDS = 86400
log = structlog.get_logger()


def cache_key(model: str, text: str) -> str:
    return "emb:f32:" + hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()


def encode_vector(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vector(raw: bytes) -> list[float]:
    return np.frombuffer(raw, dtype="<f4").tolist()


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
        # Rounded to float32 as the cache stores them, so a hit returns exactly what the miss did.
        fresh = [decode_vector(encode_vector(v)) for v in await self.inner.embed([texts[i] for i in missing])] \
            if missing else []
        vectors: list[list[float]] = [decode_vector(v) if v is not None else [] for v in cached]
        for i, vector in zip(missing, fresh):
            vectors[i] = vector
        if fresh and self.client is not None:
            try:
                async with self.client.pipeline(transaction=False) as pipe:
                    for i, vector in zip(missing, fresh):
                        pipe.set(keys[i], encode_vector(vector), ex=self.ttl)
                    await pipe.execute()
            except (redis.RedisError, OSError) as exc:
                log.warning("embedding_cache_unavailable", error=str(exc))
        return vectors

    async def ping(self) -> bool:
        return self.client is None or bool(await self.client.ping())
