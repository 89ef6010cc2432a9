"""Memories in Qdrant. The collection is created exactly as the seed specifies (size from
the embedder; cosine; HNSW m=16, ef_construct=200, full_scan_threshold=10000; 2 segments,
2 optimization threads), plus int8 scalar quantization searched with rescoring. A Qdrant
server in the cluster (qdrant-client); Qdrant Edge, the same Rust engine in-process, when no
server URL is set, indexed by a separate process and swapped in (`EmbeddedMemoryStore`)."""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import qdrant_edge as edge
import structlog
from qdrant_client import AsyncQdrantClient, models

HNSW = models.HnswConfigDiff(m=16, ef_construct=200, full_scan_threshold=10000)
OPTIMIZERS = models.OptimizersConfigDiff(default_segment_number=2, max_optimization_threads=2)
INDEXED_FIELDS = ("tenant", "namespace", "user")  # keyword indexes: the filters every search may carry
# int8 scalar quantization kept in RAM: a quarter of float32's bytes per scored vector, and the
# HNSW graph is built on it (10 000 x 3072-d: 26 s instead of 267 s, measured). Candidates are
# rescored with the original vectors, twice as many as asked for (recall measured in bench-context).
QUANTIZATION = models.ScalarQuantization(
    scalar=models.ScalarQuantizationConfig(type=models.ScalarType.INT8, quantile=0.99, always_ram=True)
)
HNSW_EF = 128
OVERSAMPLING = 2.0
SEARCH_PARAMS = models.SearchParams(
    hnsw_ef=HNSW_EF, quantization=models.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
)
log = structlog.get_logger()


class ShardClosed(RuntimeError):
    """The embedded shard is not open here: not yet, or handed over to another process."""


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

    def __init__(
        self,
        client: AsyncQdrantClient,
        collection: str,
        dimensions: int,
        *,
        replication_factor: int = 1,
        write_consistency_factor: int = 1,
        shard_number: int | None = None,
    ):
        self.client, self.collection, self.dimensions = client, collection, dimensions
        # A clustered Qdrant keeps each shard on `replication_factor` nodes: losing one loses nothing.
        self.replication_factor, self.write_consistency_factor = replication_factor, write_consistency_factor
        self.shard_number = shard_number

    async def ensure_collection(self) -> None:
        if await self.client.collection_exists(self.collection):
            return
        await self.client.create_collection(
            self.collection,
            vectors_config=models.VectorParams(size=self.dimensions, distance=models.Distance.COSINE),
            hnsw_config=HNSW,
            optimizers_config=OPTIMIZERS,
            quantization_config=QUANTIZATION,
            replication_factor=self.replication_factor,
            write_consistency_factor=self.write_consistency_factor,
            shard_number=self.shard_number,
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
            search_params=SEARCH_PARAMS,
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
    """Qdrant Edge: a shard per collection under `path` (or a temporary directory for ":memory:").
    Its calls are a few ms of Rust that hold the GIL (measured), so they run on the event loop;
    a thread would add a hop and free nothing.

    The shard is never optimized in this process: optimize() holds the GIL for the whole build
    (26 s for 10 000 3072-d points with quantization, measured), which would freeze the service.
    Instead `build_index` copies the shard aside, a child process (`mcp_context.indexer`) builds
    the HNSW graph and the quantized vectors there, and the indexed copy is loaded and swapped
    in; writes made meanwhile are journaled and replayed into it first. `path/<collection>` is a
    symlink to the live generation (`path/.<collection>.gen-<n>`); a plain directory from before
    is used as it is until its first swap. Points written after a build sit in an unindexed
    segment, searched exactly; a background task rebuilds once they are many
    (`index_min_points`, or a tenth of the shard)."""

    def __init__(
        self,
        path: str,
        collection: str,
        dimensions: int,
        *,
        index_min_points: int = 1000,
        index_check_seconds: float = 30.0,
    ):
        self.collection, self.dimensions = collection, dimensions
        self._scratch = tempfile.mkdtemp(prefix="mcp-context-") if path == ":memory:" else None
        self.root = Path(self._scratch or path)
        self.path = self.root / collection
        self.index_min_points, self.index_check_seconds = index_min_points, index_check_seconds
        self.shard: edge.EdgeShard | None = None
        self._live: Path | None = None  # the directory the open shard lives in
        self._write_lock = asyncio.Lock()
        self._journal: list[edge.UpdateOperation] | None = None  # writes made while a build runs
        self._building = False
        self._watcher: asyncio.Task[None] | None = None
        self.index_builds = 0
        self.last_build_seconds: float | None = None

    def config(self) -> edge.EdgeConfig:
        return edge.EdgeConfig(
            vectors=edge.EdgeVectorParams(size=self.dimensions, distance=edge.Distance.Cosine),
            hnsw_config=edge.HnswIndexConfig(
                m=HNSW.m, ef_construct=HNSW.ef_construct, full_scan_threshold=HNSW.full_scan_threshold
            ),
            quantization_config=edge.ScalarQuantizationConfig(
                type=edge.ScalarType.Int8,
                quantile=QUANTIZATION.scalar.quantile,
                always_ram=QUANTIZATION.scalar.always_ram,
            ),
            # The indexer indexes every segment it is given (1 KB: any); when it runs is needs_index's call.
            optimizers=edge.EdgeOptimizersConfig(
                default_segment_number=OPTIMIZERS.default_segment_number, indexing_threshold=1
            ),
            payload_memory=edge.Memory.Cached,
        )

    def _generation(self, n: int) -> Path:
        return self.root / f".{self.collection}.gen-{n}"

    def _generations(self) -> list[tuple[int, Path]]:
        found = []
        for p in self.root.glob(f".{self.collection}.gen-*"):
            suffix = p.name.rsplit("-", 1)[1]
            if suffix.isdigit():
                found.append((int(suffix), p))
        return sorted(found)

    def _point_to(self, target: Path) -> Path | None:
        """Make `path` name `target`, atomically when it is already a symlink. A plain directory
        there (from before generations, closed by now) is moved aside: where to is returned."""
        link = self.root / f".{self.collection}.link"
        link.unlink(missing_ok=True)
        link.symlink_to(target.name)
        moved = None
        if self.path.exists() and not self.path.is_symlink():
            moved = self.root / f".{self.collection}.gen-0"
            self.path.rename(moved)
        os.replace(link, self.path)
        return moved

    def _live_dir(self) -> Path | None:
        if (self.path / "edge_config.json").exists():
            return self.path.resolve()
        # Interrupted between moving a plain directory away and linking: the newest complete generation.
        for _, gen in reversed(self._generations()):
            if (gen / "edge_config.json").exists() and (gen / INDEXED_MARK).exists():
                self._point_to(gen)
                return gen
        return None

    async def ensure_collection(self) -> None:
        if self.shard is not None:
            return
        self.root.mkdir(parents=True, exist_ok=True)
        live = self._live_dir()
        if live is not None:
            try:  # Qdrant Edge checks the vector size against the segments on disk
                self.shard = edge.EdgeShard.load(str(live), self.config())
            except Exception as exc:  # the bindings raise a bare Exception
                raise RuntimeError(
                    f"QDRANT_PATH: cannot open the embedded Qdrant shard at {self.path} for "
                    f"{self.dimensions}-d vectors ({exc}). It was made by another embedder or is in use by "
                    "another process: point QDRANT_PATH at another directory, or delete this one."
                ) from exc
            self._live = live
            return
        first = self._generation(max((n for n, _ in self._generations()), default=0) + 1)
        self.shard = edge.EdgeShard.create(str(first), self.config())
        for key in INDEXED_FIELDS:
            self.shard.update(edge.UpdateOperation.create_field_index(key, edge.PayloadSchemaType.Keyword))
        self._point_to(first)
        self._live = first

    def _shard(self) -> edge.EdgeShard:
        if self.shard is None:
            raise ShardClosed("the embedded Qdrant shard is not open here (not yet, or handed over)")
        return self.shard

    async def _write(self, operation: edge.UpdateOperation) -> None:
        async with self._write_lock:
            self._shard().update(operation)
            if self._journal is not None:
                self._journal.append(operation)

    async def upsert(self, memories: list[Memory], vectors: list[list[float]]) -> None:
        await self._write(
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
        exact: bool = False,
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
                params=edge.SearchParams(exact=True) if exact else EDGE_SEARCH_PARAMS,
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
        await self._write(edge.UpdateOperation.delete_points([memory_id]))
        return True

    def index_status(self) -> dict[str, Any]:
        info = self._shard().info()
        return {
            "points": info.points_count,
            "indexed": info.indexed_vectors_count,
            "building": self._building,
            "builds": self.index_builds,
            "last_build_seconds": self.last_build_seconds,
        }

    def needs_index(self) -> bool:
        info = self._shard().info()
        unindexed = info.points_count - info.indexed_vectors_count
        return info.points_count >= self.index_min_points and unindexed >= max(
            self.index_min_points, info.points_count // 10
        )

    async def build_index(self, run: Callable[[Path], Any] | None = None) -> bool:
        """Index a copy of the shard in a child process and swap it in; False if a build runs."""
        if self._building:
            return False
        self._building = True
        started = time.monotonic()
        target = self._generation(max((n for n, _ in self._generations()), default=0) + 1)
        fresh: edge.EdgeShard | None = None
        try:
            async with self._write_lock:  # searches go on; writes wait for the copy (a disk copy, GIL released)
                self._shard().flush()
                live = self._live
                assert live is not None
                await asyncio.to_thread(shutil.copytree, live, target, ignore=shutil.ignore_patterns(INDEXED_MARK))
                self._journal = []
            await (run or run_indexer)(target)
            # Loading holds the GIL while the segments are read (~0.8 s for 10 000 3072-d points).
            fresh = edge.EdgeShard.load(str(target), self.config())
            async with self._write_lock:
                for operation in self._journal or []:
                    fresh.update(operation)
                old = self._shard()
                self.shard, self._live, self._journal = fresh, target, None
                fresh = None
                old.close()
                old_dir = self._point_to(target) or live
            await asyncio.to_thread(shutil.rmtree, old_dir, True)
        except BaseException:
            self._journal = None
            if fresh is not None:
                fresh.close()
            await asyncio.to_thread(shutil.rmtree, target, True)
            raise
        finally:
            self._building = False
        self.index_builds += 1
        self.last_build_seconds = round(time.monotonic() - started, 2)
        log.info("index_swapped_in", seconds=self.last_build_seconds, **self.index_status())
        return True

    def start_indexing(self) -> None:
        """Watch the shard and rebuild its index in the background when enough points are unindexed."""
        if self._watcher is None and self.index_check_seconds > 0:
            self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        while True:
            await asyncio.sleep(self.index_check_seconds)
            try:
                if self.needs_index():
                    await self.build_index()
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a failed build leaves the live shard as it was; tried again later
                log.warning("index_build_failed", error=str(exc)[:500])

    async def ready(self) -> bool:
        return self.shard is not None

    async def close(self) -> None:
        if self._watcher is not None:
            self._watcher.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._watcher
            self._watcher = None
        async with self._write_lock:  # a write running now finishes first; later ones find it closed
            if self.shard is not None:
                self.shard.close()
                self.shard = None
        if self._scratch is not None:
            shutil.rmtree(self._scratch, ignore_errors=True)


INDEXED_MARK = "INDEXED"  # written by the indexer into a generation it has built completely
EDGE_SEARCH_PARAMS = edge.SearchParams(
    hnsw_ef=HNSW_EF, quantization=edge.QuantizationSearchParams(rescore=True, oversampling=OVERSAMPLING)
)


async def run_indexer(directory: Path) -> None:
    """`python -m mcp_context.indexer <directory>` at a lower CPU priority than the service."""
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "mcp_context.indexer",
        str(directory),
        stdout=asyncio.subprocess.DEVNULL,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        _, err = await proc.communicate()
    except asyncio.CancelledError:
        proc.kill()
        await proc.wait()
        raise
    if proc.returncode != 0:
        raise RuntimeError(f"the indexer exited with {proc.returncode}: {err.decode(errors='replace')[-500:]}")
