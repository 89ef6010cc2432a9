"""The embedded shard handed over between two real mcp-context processes (uvicorn, as the image
runs them) on one directory, as two pods of a rolling update on one volume: under a steady
stream of stores and searches nothing fails, and every memory is found from the new owner."""

from __future__ import annotations

import asyncio
import fcntl
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcp_context.handoff import HANDOVER_PATH, LOCK_FILE, OWNER_FILE, TOKEN_HEADER, ShardHandoff, State
from mcp_context.store import EmbeddedMemoryStore
from sophia_testing.datastores import redis_server_at
from sophia_testing.servers import free_port, serve_processes

NAME = "mcp-context"


@pytest.fixture(scope="module")
def redis_url() -> Iterator[str]:
    with redis_server_at() as url:
        yield url


def settings_env(data: Path, redis_url: str, **extra: str) -> dict[str, str]:
    return {
        "QDRANT_PATH": str(data),
        "EMBEDDING_PROVIDER": "local",
        "REDIS_URL": redis_url,
        "INDEX_CHECK_SECONDS": "0",
        **extra,
    }


class Load:
    """A steady stream of stores and searches at one URL from a thread, every answer recorded."""

    def __init__(self, url: str, workers: int = 4):
        self.url, self.workers = url, workers
        self.stored: list[tuple[str, str, float]] = []  # id, text, when it was answered
        self.failed: list[str] = []
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=lambda: asyncio.run(self._run()), daemon=True)

    async def _worker(self, client: httpx.AsyncClient, n: int) -> None:
        i = 0
        while not self._stop.is_set():
            text = f"note {n}-{i}: the renewal for account {i % 7} moved to {n}"
            for method, path, body in (
                ("POST", "/memories", {"text": text, "namespace": "handoff"}),
                ("POST", "/memories/search", {"query": f"renewal for account {i % 7}", "namespace": "handoff"}),
            ):
                self.sent += 1
                try:
                    answer = await client.request(method, f"{self.url}{path}", json=body)
                except httpx.HTTPError as exc:
                    self.failed.append(f"{path}: {type(exc).__name__} {exc}")
                    continue
                if not 200 <= answer.status_code < 300:
                    self.failed.append(f"{path}: {answer.status_code} {answer.text[:300]}")
                elif path == "/memories":
                    self.stored.append((answer.json()["id"], text, time.monotonic()))
            i += 1

    async def _run(self) -> None:
        async with httpx.AsyncClient(timeout=30) as client:
            await asyncio.gather(*(self._worker(client, n) for n in range(self.workers)))

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(60)


def wait_for(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"not within {timeout} s: {what}"
        time.sleep(0.1)


def forwarded(url: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith("context_requests_forwarded_total "):
            return float(line.split()[1])
    raise AssertionError("no forwarded counter")


def events(log: Path) -> list[dict]:
    out = []
    for line in log.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            continue
    return [e for e in out if isinstance(e, dict) and str(e.get("event", "")).startswith("shard_")]


def assert_all_found(url: str, stored: list[tuple[str, str, float]]) -> None:
    with httpx.Client(timeout=30) as client:
        for memory_id, text, _ in stored:
            answer = client.get(f"{url}/memories/{memory_id}")
            assert answer.status_code == 200 and answer.json()["text"] == text, (memory_id, answer.text)


def test_a_successor_takes_the_shard_over_under_load_and_no_request_fails_and_only_with_the_token(
    tmp_path: Path, redis_url: str
) -> None:
    data = tmp_path / "qdrant"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with serve_processes({NAME: settings_env(data, redis_url)}, tmp_path / "a") as first:
        a = first[NAME]
        with Load(a.url) as load:
            wait_for(lambda: len(load.stored) >= 20, 60, "stores before the hand-over")
            # Only a process that can read the owner file (on the same volume) may ask.
            absent = httpx.post(f"{a.url}{HANDOVER_PATH}")
            assert absent.status_code == 401 and TOKEN_HEADER in absent.json()["detail"]
            assert httpx.post(f"{a.url}{HANDOVER_PATH}", headers={TOKEN_HEADER: "x" * 43}).status_code == 403
            assert httpx.get(f"{a.url}{HANDOVER_PATH}").status_code == 405
            assert [e["event"] for e in events(a.log)] == ["shard_taken"]  # still the owner
            with serve_processes({NAME: settings_env(data, redis_url)}, tmp_path / "b") as second:
                b = second[NAME]  # answering: it has the shard (its start took it over)
                taken_at = time.monotonic()
                before = len(load.stored)
                wait_for(lambda: len(load.stored) >= before + 20, 60, "stores through A after the hand-over")
                load.__exit__()
                assert load.failed == [], load.failed[:5]
                # Everything A answered after the hand-over went to B through A.
                assert forwarded(a.url) >= 40
                # A leaves its Service once B is ready (never before: the endpoints never go empty).
                assert httpx.get(f"{b.url}/readyz").status_code == 200
                assert httpx.get(f"{a.url}/readyz").status_code == 503
                assert json.loads((data / OWNER_FILE).read_text())["url"] == b.url
                assert (data / OWNER_FILE).stat().st_mode & 0o777 == 0o600
                after = [s for s in load.stored if s[2] > taken_at]
                assert len(after) >= 20 and len(load.stored) - len(after) >= 20
                assert_all_found(b.url, load.stored)
                # ... and searched semantically there, stored before and after alike.
                found = httpx.post(
                    f"{b.url}/memories/search",
                    json={"query": load.stored[-1][1], "namespace": "handoff", "top_k": 1},
                ).json()["results"]
                assert found[0]["id"] == load.stored[-1][0]
                assert [e["event"] for e in events(a.log)] == ["shard_taken", "shard_handed_over", "shard_forwarding"]
                [taken] = events(b.log)
                assert taken["event"] == "shard_taken" and taken["how"] == "handed over"


def test_a_crashed_owner_is_taken_over_without_a_hand_over(tmp_path: Path, redis_url: str) -> None:
    data = tmp_path / "qdrant"
    (tmp_path / "a").mkdir(), (tmp_path / "b").mkdir()
    with serve_processes({NAME: settings_env(data, redis_url)}, tmp_path / "a") as first:
        a = first[NAME]
        ids = [httpx.post(f"{a.url}/memories", json={"text": f"before the crash {i}"}).json()["id"] for i in range(30)]
        os.kill(a.pid, signal.SIGKILL)  # no flush, no close: the kernel drops its lock
        with serve_processes({NAME: settings_env(data, redis_url)}, tmp_path / "b") as second:
            b = second[NAME]
            assert_all_found(b.url, [(i, f"before the crash {n}", 0.0) for n, i in enumerate(ids)])
            [taken] = events(b.log)
            assert taken["how"] == "free"


def test_a_pod_that_cannot_get_the_shard_fails_its_start_and_the_owner_keeps_it(tmp_path: Path) -> None:
    """An owner that never answers (here: a process holding the lock, naming an address nobody
    listens at): the starting process gives up after SHARD_ACQUIRE_SECONDS with the reason."""
    data = tmp_path / "qdrant"
    data.mkdir()
    silent = f"http://127.0.0.1:{free_port()}"
    (data / OWNER_FILE).write_text(json.dumps({"url": silent, "token": "t"}))
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDWR | os.O_CREAT, 0o600); "
            "fcntl.flock(fd, fcntl.LOCK_EX); print('held', flush=True); time.sleep(120)",
            str(data / LOCK_FILE),
        ],
        stdout=subprocess.PIPE,
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == b"held\n"
        with pytest.raises(RuntimeError, match="exited") as failed:
            with serve_processes(
                {NAME: {"QDRANT_PATH": str(data), "EMBEDDING_PROVIDER": "local", "SHARD_ACQUIRE_SECONDS": "2"}},
                tmp_path,
            ):
                pass
        assert f"owned by another process ({silent}), which did not hand it over within 2 s" in str(failed.value)
        fd = os.open(data / LOCK_FILE, os.O_RDWR)
        with pytest.raises(BlockingIOError):  # still the holder's
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        os.close(fd)
    finally:
        holder.kill()
        holder.wait()


def test_an_owner_whose_successor_never_comes_takes_the_shard_back(tmp_path: Path) -> None:
    """Handed over, but nobody takes the lock: after take_back_seconds the owner reopens the shard,
    and the writes held meanwhile go on."""
    from prometheus_client import CollectorRegistry

    from mcp_context.store import Memory

    async def scenario() -> None:
        store = EmbeddedMemoryStore(str(tmp_path), "c", 4, index_check_seconds=0)
        handoff = ShardHandoff(store, "http://127.0.0.1:1", CollectorRegistry(), take_back_seconds=0.5)
        await handoff.acquire()
        await store.upsert([Memory(text="kept", tenant="t", id="00000000-0000-0000-0000-000000000001")], [[1, 0, 0, 0]])
        started = time.monotonic()
        assert await handoff.hand_over() == (200, "handed over")
        assert store.shard is None and handoff.state is State.HANDING_OVER
        assert (await handoff.hand_over())[0] == 409  # not the owner now

        async def held_write(scope, receive, send) -> None:
            await store.upsert([Memory(text="held", tenant="t")], [[0, 1, 0, 0]])

        async def receive() -> dict:
            return {"type": "http.request", "body": b"{}", "more_body": False}

        await handoff.serve(held_write, {"type": "http", "path": "/memories", "method": "POST"}, receive, None)
        assert 0.5 <= time.monotonic() - started < 5
        assert handoff.state is State.OWNER and await handoff.ready()
        assert store.index_status()["points"] == 2
        await store.close()
        await handoff.stop()

    asyncio.run(scenario())
