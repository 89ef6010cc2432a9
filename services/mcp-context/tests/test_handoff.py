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

from mcp_context.handoff import (
    HANDOVER_PATH,
    LOCK_FILE,
    OWNER_FILE,
    TOKEN_HEADER,
    DirectoryLock,
    ShardHandoff,
    State,
)
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


def revision_env(data: Path, redis_url: str, revision: str) -> dict[str, str]:
    """A pod's settings with its Deployment revision (the pod-template-hash label, downward API)."""
    return settings_env(data, redis_url, POD_TEMPLATE_HASH=revision)


def test_a_sibling_follows_the_owner_and_takes_the_shard_the_moment_the_owner_is_killed(
    tmp_path: Path, redis_url: str
) -> None:
    """Two pods of one revision (the local stack's two replicas): the second follows the first,
    ready, passing every data request on; when the owner is killed outright (kill -9: no hand-over,
    no close) the follower takes the shard, recovers its acknowledged writes from the WAL and serves
    on: nothing sent to it fails. A third pod of that revision then follows the new owner."""
    data = tmp_path / "qdrant"
    for d in "abc":
        (tmp_path / d).mkdir()
    with serve_processes({NAME: revision_env(data, redis_url, "r1")}, tmp_path / "a") as first:
        a = first[NAME]
        with serve_processes({NAME: revision_env(data, redis_url, "r1")}, tmp_path / "b") as second:
            b = second[NAME]
            assert [e["event"] for e in events(b.log)] == ["shard_following"]
            assert [e["event"] for e in events(a.log)] == ["shard_taken"]  # not asked: a sibling
            assert httpx.get(f"{b.url}/readyz").status_code == 200  # in the Service beside the owner
            with Load(b.url) as load:
                wait_for(lambda: len(load.stored) >= 20, 60, "stores through the follower")
                assert forwarded(b.url) >= len(load.stored)  # every answer so far came from the owner
                os.kill(a.pid, signal.SIGKILL)
                killed_at = time.monotonic()
                wait_for(lambda: len([s for s in load.stored if s[2] > killed_at]) >= 20, 60, "stores after the kill")
            assert load.failed == [], load.failed[:5]
            assert [e["event"] for e in events(b.log)] == ["shard_following", "shard_taken"]
            assert events(b.log)[-1]["how"] == "owner gone (following)"
            assert json.loads((data / OWNER_FILE).read_text())["url"] == b.url
            assert_all_found(b.url, load.stored)  # the dead owner's acknowledged writes too
            with serve_processes({NAME: revision_env(data, redis_url, "r1")}, tmp_path / "c") as third:
                c = third[NAME]
                assert [e["event"] for e in events(c.log)] == ["shard_following"]
                memory_id, text, _ = load.stored[-1]
                assert httpx.get(f"{c.url}/memories/{memory_id}").json()["text"] == text
                assert [e["event"] for e in events(b.log)] == ["shard_following", "shard_taken"]  # still owner


def test_a_rollout_beside_a_follower_hands_over_from_the_owner_under_load_and_only_with_the_token(
    tmp_path: Path, redis_url: str
) -> None:
    """Owner A and follower F of revision r1, then B of r2 (a rollout's pod): B warms up, then asks
    the owner (not the follower) for the shard. F must not take the lock A releases for its
    successor; it passes on to B from then on, as A does. Under load through F and through A
    (endpoint removal lags), nothing fails, and every memory is found from B."""
    data = tmp_path / "qdrant"
    for d in "afb":
        (tmp_path / d).mkdir()
    with serve_processes({NAME: revision_env(data, redis_url, "r1")}, tmp_path / "a") as first:
        a = first[NAME]
        # Only a process that can read the owner file (on the same volume) may ask.
        absent = httpx.post(f"{a.url}{HANDOVER_PATH}")
        assert absent.status_code == 401 and TOKEN_HEADER in absent.json()["detail"]
        assert httpx.post(f"{a.url}{HANDOVER_PATH}", headers={TOKEN_HEADER: "x" * 43}).status_code == 403
        assert httpx.get(f"{a.url}{HANDOVER_PATH}").status_code == 405
        assert [e["event"] for e in events(a.log)] == ["shard_taken"]  # still the owner
        with serve_processes({NAME: revision_env(data, redis_url, "r1")}, tmp_path / "f") as sibling:
            f = sibling[NAME]
            with Load(f.url, workers=2) as via_f, Load(a.url, workers=2) as via_a:
                wait_for(lambda: len(via_f.stored) >= 10 and len(via_a.stored) >= 10, 60, "stores before")
                with serve_processes({NAME: revision_env(data, redis_url, "r2")}, tmp_path / "b") as third:
                    b = third[NAME]  # answering: it has the shard (its start took it over)
                    taken_at = time.monotonic()
                    wait_for(
                        lambda: (
                            len([s for s in via_f.stored if s[2] > taken_at]) >= 10
                            and len([s for s in via_a.stored if s[2] > taken_at]) >= 10
                        ),
                        60,
                        "stores through both after the hand-over",
                    )
                    via_f.__exit__()
                    via_a.__exit__()
                    assert via_f.failed == [] and via_a.failed == [], (via_f.failed[:3], via_a.failed[:3])
                    assert [e["event"] for e in events(f.log)] == ["shard_following"]  # never took it
                    assert [e["event"] for e in events(a.log)] == [
                        "shard_taken",
                        "shard_handed_over",
                        "shard_forwarding",
                    ]
                    warmed, taken = [e for e in b.log_lines() if e.get("event") in ("warmed_up", "shard_taken")]
                    assert warmed["event"] == "warmed_up" and taken["how"] == "handed over"
                    # Warm before asking: the owner handed over after the successor had warmed up.
                    [handed] = [e for e in events(a.log) if e["event"] == "shard_handed_over"]
                    assert warmed["timestamp"] <= handed["timestamp"]
                    owner = json.loads((data / OWNER_FILE).read_text())
                    assert owner["url"] == b.url and owner["revision"] == "r2"
                    assert (data / OWNER_FILE).stat().st_mode & 0o777 == 0o600
                    # A leaves its Service once B is ready (never before: the endpoints never go empty);
                    # the follower stays.
                    assert httpx.get(f"{b.url}/readyz").status_code == 200
                    # (A asks B's /readyz within 1.5 s: on a loaded machine not always at the first try.)
                    wait_for(lambda: httpx.get(f"{a.url}/readyz").status_code == 503, 15, "A out of its Service")
                    assert httpx.get(f"{f.url}/readyz").status_code == 200
                    stored = via_f.stored + via_a.stored
                    assert len([s for s in stored if s[2] > taken_at]) >= 20 and len(stored) >= 40
                    assert_all_found(b.url, stored)
                    # ... and searched semantically there, stored before and after alike.
                    found = httpx.post(
                        f"{b.url}/memories/search",
                        json={"query": via_a.stored[-1][1], "namespace": "handoff", "top_k": 1},
                    ).json()["results"]
                    assert found[0]["id"] == via_a.stored[-1][0]
                    before = forwarded(f.url)
                    assert httpx.post(f"{f.url}/memories/search", json={"query": "renewal"}).status_code == 200
                    assert forwarded(f.url) == before + 1  # to B now
                    # What A answered after the hand-over went to B through A.
                    assert forwarded(a.url) >= len([s for s in via_a.stored if s[2] > taken_at]) >= 10


class FakeOwner:
    """An owner as the forwarder meets it over real HTTP/1.1 (asyncio streams): each request is
    recorded (method, path, headers) and answered by the next script step: "ok" (200), "shed"
    (503 with Retry-After `retry_after`, as admission control sheds) or "drop" (the connection
    closed without an answer, as when the owner is killed under the request)."""

    def __init__(self, script: list[str], retry_after: int = 1):
        self.script, self.retry_after = list(script), retry_after
        self.seen: list[tuple[str, str, dict[str, str], float]] = []

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        while True:
            try:
                head = await reader.readuntil(b"\r\n\r\n")
            except (asyncio.IncompleteReadError, ConnectionError):
                return  # the forwarder closed the connection
            line, *fields = head.decode("latin-1").split("\r\n")
            method, path, _ = line.split(" ", 2)
            headers = {k.strip().lower(): v.strip() for k, v in (f.split(":", 1) for f in fields if ":" in f)}
            await reader.readexactly(int(headers.get("content-length", "0")))
            self.seen.append((method, path, headers, time.monotonic()))
            step = self.script.pop(0) if self.script else "ok"
            if step == "drop":
                writer.close()
                return
            status, extra, body = (
                ("503 Service Unavailable", f"Retry-After: {self.retry_after}\r\n", b'{"title":"Overloaded"}')
                if step == "shed"
                else ("200 OK", "", b'{"results":[]}')
            )
            writer.write(
                f"HTTP/1.1 {status}\r\ncontent-type: application/json\r\n{extra}content-length: {len(body)}\r\n\r\n".encode()
                + body
            )
            await writer.drain()

    async def __aenter__(self) -> str:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self._server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *_: object) -> None:
        self._server.close()


async def through_a_follower(tmp_path: Path, owner: FakeOwner, method: str, path: str) -> tuple[int, float]:
    """One request through a following ShardHandoff whose owner is `owner`; (status, seconds)."""
    from prometheus_client import CollectorRegistry

    async with owner as url:
        data = tmp_path / f"shard-{len(list(tmp_path.iterdir()))}"
        data.mkdir()
        (data / OWNER_FILE).write_text(json.dumps({"url": url, "token": "t", "revision": "r1"}))
        alive = os.open(data / OWNER_FILE, os.O_RDONLY)
        fcntl.flock(alive, fcntl.LOCK_EX)  # the owner's process lives (else the follower takes the shard)
        store = EmbeddedMemoryStore(str(data), "c", 4, index_check_seconds=0)
        handoff = ShardHandoff(store, "http://127.0.0.1:1", CollectorRegistry(), revision="r1")
        shard_lock = DirectoryLock(data / LOCK_FILE)
        assert shard_lock.try_acquire()  # the owner's, held here for it
        try:
            await handoff.acquire()
            assert handoff.state is State.FOLLOWING
            sent: list[dict] = []

            async def receive() -> dict:
                return {"type": "http.request", "body": b'{"query": "x"}', "more_body": False}

            async def send(message: dict) -> None:
                sent.append(message)

            started = time.monotonic()
            scope = {"type": "http", "method": method, "path": path, "headers": [], "query_string": b""}
            await handoff.serve(None, scope, receive, send)
            return sent[0]["status"], time.monotonic() - started
        finally:
            await handoff.stop()
            shard_lock.release()
            os.close(alive)


def test_the_forwarder_honours_one_shed_retry_after_within_its_budget(tmp_path: Path) -> None:
    """A cold owner sheds (503 + Retry-After: not run): the forwarder sends the request once more
    after the Retry-After, so the caller gets the answer; shed again, the caller gets the shed (its
    own retry decides); a Retry-After past the budget is passed back at once."""

    async def scenario() -> None:
        once = FakeOwner(["shed", "ok"])
        assert await through_a_follower(tmp_path, once, "POST", "/memories/search") == (200, pytest.approx(1, abs=0.5))
        assert len(once.seen) == 2 and once.seen[1][3] - once.seen[0][3] >= 1.0
        twice = FakeOwner(["shed", "shed", "ok"])
        assert (await through_a_follower(tmp_path, twice, "POST", "/memories/search"))[0] == 503
        assert len(twice.seen) == 2
        late = FakeOwner(["shed", "ok"], retry_after=30)
        status, seconds = await through_a_follower(tmp_path, late, "POST", "/memories/search")
        assert (status, len(late.seen)) == (503, 1) and seconds < 1

    asyncio.run(scenario())


def test_a_request_the_owner_took_and_never_answered_is_replayed_only_where_safe(tmp_path: Path) -> None:
    """The owner killed under a forwarded request: a search is sent again; a store too, with the
    Idempotency-Key the forwarder gave it (the same key both times: the owner stores the same
    points); an MCP call (it may have written) is answered 502, not repeated."""

    async def scenario() -> None:
        search = FakeOwner(["drop", "ok"])
        assert (await through_a_follower(tmp_path, search, "POST", "/memories/search"))[0] == 200
        assert len(search.seen) == 2
        store = FakeOwner(["drop", "ok"])
        assert (await through_a_follower(tmp_path, store, "POST", "/memories"))[0] == 200
        keys = [headers.get("idempotency-key") for _, _, headers, _ in store.seen]
        assert len(keys) == 2 and keys[0] and keys[0] == keys[1]
        mcp = FakeOwner(["drop", "ok"])
        assert (await through_a_follower(tmp_path, mcp, "POST", "/mcp"))[0] == 502
        assert len(mcp.seen) == 1

    asyncio.run(scenario())
