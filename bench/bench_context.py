"""mcp-context at the seed's shape (issue 14): 3072-dimension vectors from an OpenAI-compatible
embeddings server on loopback (deterministic vectors), 10 000 and 100 000 memories in the
embedded Qdrant shard, the index built aside by the service itself, then an open-loop load from a
separate process over 1000 held connections at 50, 100, 200 and 400 searches/s and at twice the
measured capacity. Prints offered vs served, p50/p95/p99, shed (503) and failed counts, recall
of the top 5 against an exact scan (numpy), RSS, and the embedding cache hit vs a miss of the
real local model. Bounded in time (BENCH_SIZES, BENCH_SECONDS, BENCH_INDEX_TIMEOUT; BENCH_RATES: the
open-loop rates before the 2x step)."""

from __future__ import annotations

import asyncio
import base64
import functools
import hashlib
import itertools
import multiprocessing as mp
import os
import re
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import uuid

import httpx
import numpy as np
from openloop import in_process, load_average, open_loop, percentile, result_of

DIMS = 3072  # text-embedding-3-large
SIZES = tuple(int(n) for n in os.environ.get("BENCH_SIZES", "10000,100000").split(","))
SECONDS = float(os.environ.get("BENCH_SECONDS", "15"))  # per load level
INDEX_TIMEOUT = float(os.environ.get("BENCH_INDEX_TIMEOUT", "1800"))
USERS = 1000  # connections held open
RATES = tuple(int(n) for n in os.environ.get("BENCH_RATES", "50,100,200,400").split(",") if n)
CLIENT_TIMEOUT = 10.0  # a user gives up after this long: counted as failed
TOPICS = [
    "invoice",
    "renewal",
    "deployment",
    "outage",
    "pricing",
    "onboarding",
    "churn risk",
    "meeting",
    "contract",
    "support ticket",
    "feature request",
    "quarterly review",
    "security review",
    "data export",
    "training",
]
QUERIES = [f"what happened with the {topic} for account {n}?" for topic in TOPICS for n in range(20)]


def memory_text(i: int) -> str:
    return f"Note {i}: the {TOPICS[i % len(TOPICS)]} for account {i % 997} was discussed with owner {i % 41}."


@functools.cache
def token_vector(token: str) -> np.ndarray:
    seed = int.from_bytes(hashlib.sha256(token.encode()).digest()[:8], "little")
    return np.random.default_rng(seed).standard_normal(DIMS).astype(np.float32)


def embed(text: str) -> np.ndarray:
    """Deterministic and meaningful enough: texts sharing words are near (a hashed bag of words)."""
    vector = np.sum([token_vector(t) for t in re.findall(r"[a-z0-9]+", text.lower())], axis=0)
    return (vector / np.linalg.norm(vector)).astype(np.float32)


def embeddings_server(port: int) -> None:
    """The OpenAI embeddings API's shapes (float or base64), on loopback."""
    from aiohttp import web

    async def embeddings(request: web.Request) -> web.Response:
        body = await request.json()
        texts = body["input"] if isinstance(body["input"], list) else [body["input"]]
        data = []
        for index, text in enumerate(texts):
            vector = embed(text)
            if body.get("encoding_format") == "base64":
                value: object = base64.b64encode(vector.tobytes()).decode()
            else:
                value = vector.tolist()
            data.append({"object": "embedding", "index": index, "embedding": value})
        return web.json_response({"object": "list", "data": data, "model": body["model"]})

    app = web.Application()
    app.router.add_post("/v1/embeddings", embeddings)
    web.run_app(app, host="127.0.0.1", port=port, print=None, access_log=None)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 120) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def rss(pid: int) -> str:
    """Resident memory of a process and of its children (the indexer), from /proc."""
    fields = {}
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            key, _, value = line.partition(":")
            fields[key] = value.strip()
    return f"RSS {fields['VmRSS']} (peak {fields['VmHWM']})"


def cpu_seconds(pid: int) -> float:
    """CPU time a process has used (all its threads), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Tally:
    def __init__(self) -> None:
        self.latencies: list[float] = []  # answered 200
        self.shed_latencies: list[float] = []  # answered 503
        self.failed = 0  # anything else: timeouts, errors
        self.sent = 0

    async def search(self, session, query: str, since: float) -> None:
        import aiohttp

        self.sent += 1
        try:
            async with session.post("/memories/search", json={"query": query, "top_k": 5}) as r:
                await r.read()
                if r.status == 200:
                    self.latencies.append(time.monotonic() - since)
                elif r.status == 503 and "Retry-After" in r.headers:
                    self.shed_latencies.append(time.monotonic() - since)
                else:
                    self.failed += 1
        except (TimeoutError, aiohttp.ClientError):
            self.failed += 1

    def result(self, elapsed: float, cpu: CpuWindow) -> dict:
        return {
            **cpu.result(),
            "served": len(self.latencies),
            "shed": len(self.shed_latencies),
            "failed": self.failed,
            "sent": self.sent,
            "elapsed": elapsed,
            "latencies": self.latencies,
            "shed_latencies": self.shed_latencies,
        }


class CpuWindow:
    """The CPU the service (`pid`) and this load generator used while the load ran (from when every
    connection is open to the last answer), in cores: on a shared machine a figure means little
    without them, and the generator shares the service's two cores."""

    def __init__(self, pid: int | None) -> None:
        self.pid = pid
        self.marks: dict[str, float] = {}

    def start(self) -> None:
        self.marks = {"wall": time.monotonic(), "gen": time.process_time()}
        if self.pid:
            self.marks["service"] = cpu_seconds(self.pid)

    def result(self) -> dict:
        if not self.marks:
            return {"cpu": float("nan"), "gen_cpu": float("nan")}
        wall = time.monotonic() - self.marks["wall"]
        service = (cpu_seconds(self.pid) - self.marks["service"]) / wall if self.pid else float("nan")
        return {"cpu": service, "gen_cpu": (time.process_time() - self.marks["gen"]) / wall}


async def _open_loop(url: str, users: int, rate: float, seconds: float, pid: int | None) -> dict:
    """`users` connections held open (one each), together offering `rate` searches/s (openloop)."""
    tally, cpu = Tally(), CpuWindow(pid)

    async def search(session, i: int, planned: float) -> None:
        await tally.search(session, QUERIES[i % len(QUERIES)], planned)

    await open_loop(url, users, rate, seconds, search, timeout=CLIENT_TIMEOUT, on_start=cpu.start)
    return tally.result(seconds, cpu)


async def _closed_loop(url: str, connections: int, seconds: float, pid: int | None) -> dict:
    """Each connection sends its next search when the last one answers: the most it serves."""
    import aiohttp

    tally, cpu = Tally(), CpuWindow(pid)
    deadline = time.monotonic() + seconds
    connector = aiohttp.TCPConnector(limit=connections)
    timeout = aiohttp.ClientTimeout(total=CLIENT_TIMEOUT)
    async with aiohttp.ClientSession(url, connector=connector, timeout=timeout) as session:

        async def worker(n: int) -> None:
            for i in itertools.count(n, connections):
                if time.monotonic() >= deadline:
                    return
                await tally.search(session, QUERIES[i % len(QUERIES)], time.monotonic())

        started = time.monotonic()
        cpu.start()
        await asyncio.gather(*(worker(n) for n in range(connections)))
        return tally.result(time.monotonic() - started, cpu)


async def _level(kind: str, url: str, n: int, rate: float, seconds: float, pid: int | None) -> dict:
    if kind == "open":
        return await _open_loop(url, n, rate, seconds, pid)
    return await _closed_loop(url, n, seconds, pid)


def wait_drained(url: str, timeout: float = 120) -> None:
    """The next level starts when the server answers /healthz promptly again."""
    deadline, prompt = time.monotonic() + timeout, 0
    with httpx.Client(base_url=url, timeout=timeout) as client:
        while prompt < 3 and time.monotonic() < deadline:
            started = time.perf_counter()
            client.get("/healthz")
            prompt = prompt + 1 if time.perf_counter() - started < 0.02 else 0
            time.sleep(0.2)


def run_level(kind: str, url: str, n: int, seconds: float, rate: float = 0.0, pid: int | None = None) -> dict:
    """One load level from a separate process, so the generator does not share the server's loop.
    With `pid` (the service's), the result says how much CPU the service got meanwhile (CpuWindow)."""
    wait_drained(url)
    return result_of(*in_process(_level, kind, url, n, rate, seconds, pid), timeout=seconds + 300)


def sheds(url: str) -> dict[str, float]:
    """requests_shed_total by where the shed was answered (below the app: "server"; "app")."""
    counts: dict[str, float] = {}
    for line in httpx.get(f"{url}/metrics", timeout=30).text.splitlines():
        if line.startswith("requests_shed_total"):
            where = re.search(r'where="(\w+)"', line)
            counts[where.group(1) if where else "app"] = float(line.split()[-1])
    return counts


def refusal_cost(capacity_run: dict, overload: dict) -> str:
    """What a refusal costs the service, from its CPU: a served search costs what the capacity run
    spent per search; the rest of the overload step's CPU went to the refusals. With refusals at
    that share x of a search, at most (1 - 2x) / (1 - x) of capacity can be served at twice it,
    however well the door is kept (each second: s searches + (2C - s) refusals = C searches)."""
    search = capacity_run["cpu"] * capacity_run["elapsed"] / max(1, capacity_run["served"])
    refused = (overload["cpu"] * overload["elapsed"] - overload["served"] * search) / max(1, overload["shed"])
    x = refused / search
    ceiling = max(0.0, (1 - 2 * x) / (1 - x)) if x < 1 else 0.0
    return (
        f"the service's CPU per refusal ~{refused * 1000:.2f} ms against {search * 1000:.2f} ms per served search "
        f"(x = {x:.2f}): at twice capacity at most {ceiling:.0%} of it can be served by refusing in this process"
    )


def row(label: str, result: dict) -> str:
    lat = [x * 1000 for x in result["latencies"]]
    shed = [x * 1000 for x in result["shed_latencies"]]
    return (
        f"{label:>10} {result['sent'] / result['elapsed']:>8.1f} {result['served'] / result['elapsed']:>8.1f} "
        f"{percentile(lat, 0.5):>8.1f} "
        f"{percentile(lat, 0.95):>8.1f} {percentile(lat, 0.99):>8.1f} {result['shed']:>7} "
        f"{percentile(shed, 0.99):>11.1f} {result['failed']:>7} {result['cpu']:>5.2f} {result['gen_cpu']:>7.2f}"
    )


HEADER = (
    f"{'offered/s':>10} {'sent/s':>8} {'served/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'shed':>7} "
    f"{'shed p99 ms':>11} {'failed':>7} {'cpu':>5} {'gen cpu':>7}"
)


def seed_shard(path: str, count: int) -> tuple[list[str], np.ndarray]:
    """Write `count` memories straight into the shard the service will open (what the service
    would store from POST /memories/batch, without an hour of JSON), unindexed."""
    from mcp_context.store import EmbeddedMemoryStore, Memory

    ids = [str(uuid.UUID(int=i + 1)) for i in range(count)]
    vectors = np.empty((count, DIMS), dtype=np.float32)

    async def write() -> None:
        store = EmbeddedMemoryStore(path, "sophia-memories", DIMS, index_check_seconds=0)
        await store.ensure_collection()
        for start in range(0, count, 500):
            batch = range(start, min(count, start + 500))
            memories = [Memory(text=memory_text(i), tenant="default", namespace="bench", id=ids[i]) for i in batch]
            for i in batch:
                vectors[i] = embed(memory_text(i))
            await store.upsert(memories, [vectors[i] for i in batch])
        await store.close()

    asyncio.run(write())
    return ids, vectors


def wait_for_index(url: str, count: int) -> tuple[float, float, float]:
    """The service indexes its shard aside by itself; while it does, /healthz is probed every
    50 ms: its slowest answer is the longest stall a request saw (the swap loads the new shard)."""
    started = time.monotonic()
    worst = 0.0
    with httpx.Client(base_url=url, timeout=60) as client:
        while time.monotonic() - started < INDEX_TIMEOUT:
            t = time.perf_counter()
            client.get("/healthz")
            worst = max(worst, time.perf_counter() - t)
            index = client.get("/embeddings/info").json()["index"]
            if index["builds"] >= 1 and index["indexed"] >= count:
                return time.monotonic() - started, index["last_build_seconds"], worst
            time.sleep(0.05)
    return float("nan"), float("nan"), worst


def http_protocol() -> str:
    """uvicorn's --http for mcp-context: the services' own (sophia_chassis.server), unless BENCH_HTTP
    names another (e.g. `httptools`, to measure a chassis from before it, put first on PYTHONPATH)."""
    if os.environ.get("BENCH_HTTP"):
        return os.environ["BENCH_HTTP"]
    from sophia_chassis.server import HTTP_PROTOCOL

    return HTTP_PROTOCOL


def measure(count: int, redis_url: str, embeddings_url: str) -> None:
    scratch = tempfile.mkdtemp(prefix="bench-context-")
    t0 = time.perf_counter()
    ids, vectors = seed_shard(scratch, count)
    print(f"\n== {count} memories of {DIMS} dimensions (seeded in {time.perf_counter() - t0:.0f}s)", flush=True)
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": redis_url,
        "EMBEDDING_PROVIDER": "openai",
        "OPENAI_API_KEY": "bench",
        "OPENAI_BASE_URL": embeddings_url,
        "QDRANT_PATH": scratch,
        "INDEX_CHECK_SECONDS": "1",
        "AUTH_MODE": "off",
        "LOG_LEVEL": "warning",
        "SOPHIA_SECRETS_DIR": "/nonexistent",
    }
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "uvicorn",
            "--factory",
            "mcp_context.main:build_app",
            "--http",
            http_protocol(),
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--log-level",
            "warning",
            "--backlog",
            "4096",
            "--limit-concurrency",
            "4096",
            "--timeout-keep-alive",
            "120",  # held-open user connections idle between searches
        ],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_http(f"{url}/readyz")
        waited, build, stall = wait_for_index(url, count)
        print(
            f"index: HNSW m=16 ef_construct=200 + int8 quantization, built aside by the service in {build}s "
            f"(ready {waited:.0f}s after start); slowest /healthz meanwhile {stall * 1000:.0f} ms "
            f"(load average {load_average()})",
            flush=True,
        )
        # Warm the embedding cache (one request per query), and read the answers for recall.
        found: list[list[str]] = []
        with httpx.Client(base_url=url, timeout=60) as client:
            for q in QUERIES:
                response = client.post("/memories/search", json={"query": q, "top_k": 5})
                while response.status_code == 503:  # shed: come back as told
                    time.sleep(float(response.headers["Retry-After"]))
                    response = client.post("/memories/search", json={"query": q, "top_k": 5})
                response.raise_for_status()
                found.append([r["id"] for r in response.json()["results"]])
        truth = np.argsort(-(vectors @ np.stack([embed(q) for q in QUERIES]).T), axis=0)[:5].T
        recall = np.mean([len(set(f) & {ids[i] for i in t}) / 5 for f, t in zip(found, truth, strict=True)])
        print(f"recall of the top 5 against an exact scan (numpy), {len(QUERIES)} queries: {recall:.3f}")

        capacity_run = run_level("closed", url, 16, SECONDS, pid=server.pid)
        capacity = capacity_run["served"] / capacity_run["elapsed"]
        print(
            f"capacity (closed loop, 16 connections): {capacity:.0f} searches/s served, "
            f"{capacity_run['shed']} shed, {capacity_run['failed']} failed; the service used "
            f"{capacity_run['cpu']:.2f} of a core, the load generator {capacity_run['gen_cpu']:.2f} "
            f"(load average {load_average()})",
            flush=True,
        )
        print(
            f"open loop: {USERS} connections held open, {SECONDS:.0f}s per level, client timeout {CLIENT_TIMEOUT:.0f}s; "
            "cpu: cores the service used meanwhile (1.00: all of one), gen cpu: the load generator's"
        )
        print(HEADER)
        for rate in (*RATES, round(2 * capacity)):
            shed_before = sheds(url)
            result = run_level("open", url, USERS, SECONDS, rate, pid=server.pid)
            shed_after = sheds(url)
            label = f"{rate}" if rate in RATES else f"2x={rate}"
            print(row(label, result), f" load {load_average()}", flush=True)
            if rate not in RATES:
                served = result["served"] / result["elapsed"]
                per_cpu = (served / result["cpu"]) / (capacity / capacity_run["cpu"])
                print(
                    f"at 2x capacity: served {served:.0f}/s = {served / capacity:.0%} of capacity; "
                    f"per second of the service's CPU, {per_cpu:.0%} of what it served at capacity"
                )
                print(refusal_cost(capacity_run, result))
                below, total = (
                    shed_after.get("server", 0) - shed_before.get("server", 0),
                    sum(shed_after.values()) - sum(shed_before.values()),
                )
                print(f"refused below the app (sophia_chassis.server): {below:.0f} of {total:.0f} sheds")
        print(f"mcp-context {rss(server.pid)}")
    finally:
        server.terminate()
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            server.kill()
        shutil.rmtree(scratch, ignore_errors=True)


def hit_vs_miss(redis_url: str) -> None:
    """The cache-miss figure uses the real local model (MiniLM), as before."""
    import redis.asyncio as aioredis

    from mcp_context.cache import CachedEmbedder
    from mcp_context.embeddings import MiniLMEmbedder

    async def run() -> tuple[float, float]:
        cached = CachedEmbedder(MiniLMEmbedder(), aioredis.Redis.from_url(redis_url), local_entries=0)
        await cached.embed(["warm-up"])
        misses, hits = [], []
        for i in range(50):
            text = f"a fresh sentence number {i} about {TOPICS[i % len(TOPICS)]}"
            t = time.perf_counter()
            await cached.embed([text])
            misses.append(time.perf_counter() - t)
            t = time.perf_counter()
            await cached.embed([text])
            hits.append(time.perf_counter() - t)
        return statistics.median(misses) * 1000, statistics.median(hits) * 1000

    miss, hit = asyncio.run(run())
    print(
        f"\nbench-context: embedding one text, median of 50: miss {miss:.2f} ms (model), hit {hit:.2f} ms "
        f"(Redis) -> hit is {miss / hit:.0f}x faster (target >= 20x)"
    )


def main() -> int:
    redis_server = shutil.which("redis-server")
    if not redis_server:
        print("bench-context: redis-server is missing (scripts/bootstrap.sh installs it)")
        return 1
    redis_port, embeddings_port = free_port(), free_port()
    redis_proc = subprocess.Popen(
        [redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    fake = mp.Process(target=embeddings_server, args=(embeddings_port,), daemon=True)
    fake.start()
    redis_url = f"redis://127.0.0.1:{redis_port}/0"
    print(
        f"bench-context: {os.cpu_count()} cores, load average {load_average()} at start; mcp-context in one "
        f"uvicorn process, embedded Qdrant Edge, embeddings from an OpenAI-compatible server on loopback "
        f"({DIMS} dimensions), Redis cache; sizes {', '.join(map(str, SIZES))}"
    )
    from mcp_context.settings import Settings

    defaults = Settings()
    print(
        f"admission control: {defaults.max_concurrent_requests} searches at once, queue deadline "
        f"{defaults.queue_timeout_seconds * 1000:.0f} ms (MAX_CONCURRENT_REQUESTS, QUEUE_TIMEOUT_SECONDS)"
    )
    try:
        for count in SIZES:
            measure(count, redis_url, f"http://127.0.0.1:{embeddings_port}/v1")
        hit_vs_miss(redis_url)
    finally:
        fake.terminate()
        redis_proc.terminate()
        redis_proc.wait(10)
    return 0


if __name__ == "__main__":
    sys.exit(main())
