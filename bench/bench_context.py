"""mcp-context under load on loopback: 10 000 stored memories, search at 50/200/1000
concurrent connections from a separate load-generator process, and embedding latency
for a cache hit vs a miss. Prints figures; bounded in time (a few minutes)."""

from __future__ import annotations

import asyncio
import multiprocessing as mp
import os
import shutil
import socket
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx

REPO = Path(__file__).resolve().parent.parent
MEMORIES = 10_000
LEVELS = (50, 200, 1000)
SECONDS_PER_LEVEL = 10
TOPICS = ["invoice", "renewal", "deployment", "outage", "pricing", "onboarding", "churn risk", "meeting", "contract",
          "support ticket", "feature request", "quarterly review", "security review", "data export", "training"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_http(url: str, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up")


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


async def _load(url: str, concurrency: int, seconds: float, queries: list[str]) -> dict:
    latencies: list[float] = []
    errors = 0
    deadline = time.monotonic() + seconds
    limits = httpx.Limits(max_connections=concurrency, max_keepalive_connections=concurrency)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        async def worker(n: int) -> None:
            nonlocal errors
            i = n
            while time.monotonic() < deadline:
                started = time.perf_counter()
                try:
                    r = await client.post("/memories/search", json={"query": queries[i % len(queries)], "top_k": 5})
                    if r.status_code != 200:
                        errors += 1
                    else:
                        latencies.append(time.perf_counter() - started)
                except httpx.HTTPError:
                    errors += 1
                i += concurrency

        started = time.monotonic()
        await asyncio.gather(*(worker(n) for n in range(concurrency)))
        elapsed = time.monotonic() - started
    return {"requests": len(latencies), "errors": errors, "elapsed": elapsed, "latencies": latencies}


def load_generator(url: str, concurrency: int, seconds: float, queries: list[str], out: mp.Queue) -> None:
    out.put(asyncio.run(_load(url, concurrency, seconds, queries)))


def main() -> int:
    redis_server = shutil.which("redis-server")
    if not redis_server:
        print("bench-context: redis-server is missing (scripts/bootstrap.sh installs it)")
        return 1
    redis_port, app_port = free_port(), free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'libs'}:{REPO / 'services' / 'mcp-context'}",
           "REDIS_URL": f"redis://127.0.0.1:{redis_port}/0", "EMBEDDING_PROVIDER": "local", "LOG_LEVEL": "warning",
           "SOPHIA_SECRETS_DIR": "/nonexistent"}
    procs = [subprocess.Popen([redis_server, "--port", str(redis_port), "--bind", "127.0.0.1", "--save", "",
                               "--appendonly", "no"], stdout=subprocess.DEVNULL)]
    procs.append(subprocess.Popen([sys.executable, "-m", "uvicorn", "--factory", "mcp_context.main:build_app",
                                   "--host", "127.0.0.1", "--port", str(app_port), "--log-level", "warning",
                                   "--backlog", "4096", "--limit-concurrency", "4096"],
                                  env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
    url = f"http://127.0.0.1:{app_port}"
    try:
        wait_http(f"{url}/readyz")
        t0 = time.perf_counter()
        texts = [f"Note {i}: the {TOPICS[i % len(TOPICS)]} for account {i % 997} was discussed with owner {i % 41}."
                 for i in range(MEMORIES)]
        with httpx.Client(base_url=url, timeout=300) as client:
            for start in range(0, MEMORIES, 500):
                batch = [{"text": t, "namespace": "bench"} for t in texts[start:start + 500]]
                client.post("/memories/batch", json=batch).raise_for_status()
        print(f"bench-context: stored {MEMORIES} memories in {time.perf_counter() - t0:.1f}s "
              "(local MiniLM embeddings, embedded Qdrant)")

        queries = [f"what happened with the {topic} for account {n}?" for topic in TOPICS for n in range(20)]
        # Warm the embedding cache so the load measures search, as repeated queries do in use.
        with httpx.Client(base_url=url, timeout=60) as client:
            for q in queries:
                client.post("/memories/search", json={"query": q, "top_k": 5}).raise_for_status()
        print(f"{'conns':>6} {'req/s':>8} {'p50 ms':>8} {'p95 ms':>8} {'p99 ms':>8} {'errors':>7}")
        for level in LEVELS:
            out: mp.Queue = mp.Queue()
            gen = mp.Process(target=load_generator, args=(url, level, SECONDS_PER_LEVEL, queries, out))
            gen.start()
            result = out.get(timeout=SECONDS_PER_LEVEL + 120)
            gen.join()
            lat = [x * 1000 for x in result["latencies"]]
            print(f"{level:>6} {result['requests'] / result['elapsed']:>8.0f} {percentile(lat, .5):>8.1f} "
                  f"{percentile(lat, .95):>8.1f} {percentile(lat, .99):>8.1f} {result['errors']:>7}")

        sys.path[:0] = [str(REPO / "libs"), str(REPO / "services" / "mcp-context")]
        import redis.asyncio as aioredis

        from mcp_context.cache import CachedEmbedder
        from mcp_context.embeddings import MiniLMEmbedder

        async def hit_vs_miss() -> tuple[float, float]:
            cached = CachedEmbedder(MiniLMEmbedder(), aioredis.Redis.from_url(env["REDIS_URL"]))
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

        miss, hit = asyncio.run(hit_vs_miss())
        print(f"bench-context: embedding one text, median of 50: miss {miss:.2f} ms (model), hit {hit:.2f} ms "
              f"(Redis) -> hit is {miss / hit:.0f}x faster (target >= 20x)")
    finally:
        for proc in reversed(procs):
            proc.terminate()
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()
    return 0


if __name__ == "__main__":
    sys.exit(main())
