"""Redis embedding cache: key = hash(model, text), TTL 24 h (the seed), one round trip
per batch. Redis being down degrades to no cache, never to an error; after a few failures a
breaker skips Redis for a while, so a hung Redis costs a few requests a timeout, not every
one. Vectors are stored as little-endian float32 bytes (what Qdrant keeps anyway): a quarter
of JSON's size and decoded without parsing, which is most of a hit's cost (bench-context).
Identical concurrent misses share one model run (single flight): a burst of the same query
would otherwise run the model once per request.

In front of Redis, a small LRU in the process (`local_entries` vectors, 12 KB each at 3072
dimensions): a search for a recent query then runs without a single await, so under load it is
not stretched by everything else the event loop has queued between its Redis round trip and
its answer (bench-context)."""

from __future__ import annotations

import asyncio
import hashlib
from collections import OrderedDict
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np
import redis.asyncio as redis
import structlog

from mcp_context.embeddings import Embedder
from sophia_chassis.http import CircuitBreaker, CircuitOpenError

CACHE_TTL_SECONDS = 86400
LOCAL_ENTRIES = 1024  # vectors kept in the process too (12 MB at 3072 dimensions)
# How long the breaker skips Redis after a few failures before one call tries it again.
BREAKER_RESET_SECONDS = 5.0
T = TypeVar("T")
log = structlog.get_logger()


def cache_key(model: str, text: str) -> str:
    return "emb:f32:" + hashlib.sha256(f"{model}\0{text}".encode()).hexdigest()


def encode_vector(vector: Sequence[float]) -> bytes:
    return np.asarray(vector, dtype="<f4").tobytes()


def decode_vector(raw: bytes) -> list[float]:
    return np.frombuffer(raw, dtype="<f4").tolist()


class CachedEmbedder:
    def __init__(
        self,
        inner: Embedder,
        client: redis.Redis | None,
        ttl: int = CACHE_TTL_SECONDS,
        breaker_reset_seconds: float = BREAKER_RESET_SECONDS,
        local_entries: int = LOCAL_ENTRIES,
    ):
        self.inner, self.client, self.ttl = inner, client, ttl
        self.local_entries = local_entries
        self._local: OrderedDict[str, list[float]] = OrderedDict()
        self.breaker = CircuitBreaker(failure_threshold=3, reset_timeout=breaker_reset_seconds)
        self.model, self.dimensions = inner.model, inner.dimensions
        self.hits = self.misses = 0
        self.model_runs = 0  # inner.embed calls (one per batch of distinct misses)
        # key -> (the run computing it, its index in that run's output)
        self._inflight: dict[str, tuple[asyncio.Task[list[list[float]]], int]] = {}

    async def embed(self, texts: Sequence[str]) -> list[list[float]]:
        keys = [cache_key(self.model, t) for t in texts]
        local = [self._local_get(k) for k in keys]
        remote = [i for i, v in enumerate(local) if v is None]
        if not remote:
            self.hits += len(texts)
            return local  # type: ignore[return-value]  # all found: no await at all
        cached: list[bytes | None] = [None] * len(texts)
        if self.client is not None:
            found = await self._guarded(self.client.mget([keys[i] for i in remote]), default=[None] * len(remote))
            for i, value in zip(remote, found, strict=True):
                cached[i] = value
        vectors: list[list[float]] = []
        for i, value in enumerate(cached):
            if local[i] is not None:
                vectors.append(local[i])  # type: ignore[arg-type]
            elif value is not None:
                vectors.append(decode_vector(value))
                self._local_put(keys[i], vectors[-1])
            else:
                vectors.append([])
        missing = [i for i in remote if cached[i] is None]
        self.hits += len(texts) - len(missing)
        self.misses += len(missing)
        if not missing:
            return vectors
        # Join runs already computing a key; one new run computes the rest (each distinct text once).
        new: dict[str, str] = {}
        for i in missing:
            if keys[i] not in self._inflight:
                new.setdefault(keys[i], texts[i])
        if new:
            run = asyncio.ensure_future(self._compute(list(new), list(new.values())))
            for n, key in enumerate(new):
                self._inflight[key] = (run, n)
        waits = {i: self._inflight[keys[i]] for i in missing}
        for i, (run, n) in waits.items():
            # Shielded: a caller that goes away does not cancel the run others are waiting for.
            vectors[i] = (await asyncio.shield(run))[n]
        return vectors

    async def _compute(self, keys: list[str], texts: list[str]) -> list[list[float]]:
        try:
            self.model_runs += 1
            # Rounded to float32 as the cache stores them, so a hit returns exactly what the miss did.
            fresh = [decode_vector(encode_vector(v)) for v in await self.inner.embed(texts)]
            for key, vector in zip(keys, fresh, strict=True):
                self._local_put(key, vector)
            if self.client is not None:
                pipe = self.client.pipeline(transaction=False)
                for key, vector in zip(keys, fresh, strict=True):
                    pipe.set(key, encode_vector(vector), ex=self.ttl)
                await self._guarded(pipe.execute(), default=None)
            return fresh
        finally:
            for key in keys:
                self._inflight.pop(key, None)

    def _local_get(self, key: str) -> list[float] | None:
        vector = self._local.get(key)
        if vector is not None:
            self._local.move_to_end(key)
        return vector

    def _local_put(self, key: str, vector: list[float]) -> None:
        if self.local_entries <= 0:
            return
        self._local[key] = vector
        self._local.move_to_end(key)
        while len(self._local) > self.local_entries:
            self._local.popitem(last=False)

    async def _guarded(self, call: Coroutine[Any, Any, T], default: T) -> T:
        """Run a Redis call unless the breaker is open; any Redis failure returns `default`."""
        try:
            self.breaker.before_call("redis")
        except CircuitOpenError:
            call.close()  # never awaited: close the coroutine so Python does not warn
            return default
        try:
            result = await call
        except (redis.RedisError, OSError) as exc:
            self.breaker.record_failure()
            log.warning("embedding_cache_unavailable", error=str(exc), breaker=self.breaker.state)
            return default
        self.breaker.record_success()
        return result

    async def ping(self) -> bool:
        return self.client is None or bool(await self.client.ping())
