"""Hand the embedded shard over from pod to pod, so the local mcp-context rolls like the others,
and keep a sibling that takes it the moment its owner dies.

Qdrant Edge lets one process open a shard (a second gets "Can't init WAL: WouldBlock"), and
the local stack keeps it on a volume every pod of the Deployment mounts (one node). So:

- The owner holds an exclusive flock on `<QDRANT_PATH>/.owner.lock` while it owns the shard
  (the kernel drops it when the process dies: a crashed owner never blocks its successor), and
  writes `.owner.json` beside it: its address, revision and a random token, mode 0600. Only a
  process mounting the same volume can read the token, which is what authenticates a hand-over.
  It also holds a flock on that owner file for as long as it lives: the file's lock is free
  exactly when the process that wrote it is gone (a hand-over releases the shard's lock, never
  this one).
- A starting pod warms up first (the caller's `warm_up`: the model, the cache's connections),
  then takes the shard if it is free. If it is not: a pod of another revision (a rollout's
  successor: the Deployment's `pod-template-hash`) asks the owner (POST HANDOVER_PATH with the
  token; not routed by the gateway); a pod of the owner's revision (a sibling) follows.
- Asked, the owner holds new requests, closes the shard (after the write running, if any),
  releases the lock and answers; the successor takes the lock, opens the shard, publishes itself
  and starts serving. From then on the old owner forwards every data request it still gets
  (endpoint removal lags) to the owner named in the file, with the caller's headers (the owner
  authenticates them), and reports not-ready once that owner is.
- A follower forwards every data request to the owner and stays ready; it watches the owner
  file's lock and takes the shard when the owner's process is gone (its acknowledged writes are
  in the WAL). So a killed owner leaves the Service its sibling, serving within a shard load.
- Forwarding: a shed (503 with Retry-After, not run) is retried once after the Retry-After when
  that still fits FORWARD_BUDGET_SECONDS; a request the owner took and never answered (it died)
  is replayed when that is safe: reads and searches, and stores, which the forwarder gives an
  Idempotency-Key (the owner derives the memories' ids from it: a replay writes the same points).
- Requests already running are not waited for (under load they took seconds: every request
  held meanwhile): one that reaches the closed shard has not touched it, so its answer is
  dropped and the request, kept whole, is sent to whoever owns the shard once that is settled.
- Every wait is bounded: a starting pod that cannot get the shard in `acquire_seconds` fails
  its start (the owner keeps serving); an owner whose successor has not taken the lock after
  `take_back_seconds` takes it back and serves on.
"""

from __future__ import annotations

import asyncio
import contextlib
import enum
import fcntl
import hmac
import json
import os
import secrets
import time
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_context.store import EmbeddedMemoryStore, ShardClosed
from sophia_chassis.http import retry_after_seconds
from sophia_chassis.problems import problem, retry_after

HANDOVER_PATH = "/internal/shard/handover"
TOKEN_HEADER = "x-shard-token"
IDEMPOTENCY_HEADER = b"idempotency-key"
MOVED_HEADER = b"x-shard-moved"  # on an answer to a request that found the shard closed: replayed
REPLAYS = 3
TOO_LARGE = b"\0too large"  # _read_body's answer past the limit (compared by identity)
LOCK_FILE, OWNER_FILE = ".owner.lock", ".owner.json"
NOT_DATA = frozenset({"/healthz", "/readyz", "/metrics"})  # answered by whichever pod is asked
# Hop-by-hop (RFC 9110 7.6.1) and recomputed headers: not passed on in either direction.
HOP_BY_HOP = frozenset(
    {b"connection", b"keep-alive", b"proxy-connection", b"te", b"trailer", b"transfer-encoding", b"upgrade"}
)
POLL_SECONDS = 0.05
# A forwarded request is retried after the owner's Retry-After (a shed: not run) only if the answer
# still comes within this long of its arrival: half the platform's clients' 10 s per attempt, so the
# caller's own retry still has time.
FORWARD_BUDGET_SECONDS = 5.0
# Replays of a request the owner took and never answered (it died under it), when that is safe.
LOST_REPLAYS = 2
# Paths whose requests may be sent again after an unanswered attempt: searches and reads do not
# write; stores carry an Idempotency-Key (the owner derives the ids from it: the same points again).
SEARCH_PATHS = frozenset({"/memories/search"})
STORE_PATHS = frozenset({"/memories", "/memories/batch"})
WARM_UP_SECONDS = 20.0
log = structlog.get_logger()


class State(enum.Enum):
    STARTING = "starting"
    OWNER = "owner"
    HANDING_OVER = "handing over"
    FORWARDING = "forwarding"  # handed the shard over: passes requests on, leaves the Service
    FOLLOWING = "following"  # a sibling of the owner's revision: passes requests on, stays


PASSING_ON = (State.FORWARDING, State.FOLLOWING)


@dataclass(frozen=True)
class Owner:
    url: str
    token: str
    revision: str = ""


class DirectoryLock:
    """An exclusive flock on one file, held while its descriptor is open."""

    def __init__(self, path: Path):
        self.path = path
        self._fd: int | None = None

    def try_acquire(self) -> bool:
        fd = os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(fd)
            return False
        self._fd = fd
        return True

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing the only descriptor drops the lock
            self._fd = None


def replayable(method: str, path: str, headers: list[tuple[bytes, bytes]]) -> bool:
    """May this request be sent again after the owner took it and never answered?"""
    if method in ("GET", "HEAD", "OPTIONS", "DELETE"):  # RFC 9110 9.2.2: idempotent methods
        return True
    if method == "POST" and path in SEARCH_PATHS:
        return True
    return method == "POST" and path in STORE_PATHS and any(k == IDEMPOTENCY_HEADER for k, _ in headers)


class ShardHandoff:
    def __init__(
        self,
        store: EmbeddedMemoryStore,
        url: str,
        registry: CollectorRegistry,
        *,
        revision: str = "",
        acquire_seconds: float = 30.0,
        take_back_seconds: float = 5.0,
        max_body_bytes: int = 16 << 20,
    ):
        self.store, self.url, self.revision = store, url, revision
        self.acquire_seconds, self.take_back_seconds = acquire_seconds, take_back_seconds
        self.max_body_bytes = max_body_bytes
        self.lock = DirectoryLock(store.root / LOCK_FILE)
        self.owner_file = store.root / OWNER_FILE
        self.token = secrets.token_urlsafe(32)
        self.state = State.STARTING
        self._settled = asyncio.Event()  # set while requests may go on (owner, forwarding, following)
        self._successor: asyncio.Task[None] | None = None
        self._watcher: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._owner_cache: tuple[tuple[int, int, int], Owner | None] | None = None
        self._published: int | None = None  # the descriptor holding this process's owner file's lock
        self.forwarded = Counter(
            "context_requests_forwarded_total",
            "Requests a pod that does not own the shard passed on to the owner",
            registry=registry,
        )
        self.forward_retries = Counter(
            "context_forward_retries_total",
            "Forwarded requests sent to the owner again: shed (after its Retry-After) or unanswered (replayed)",
            ("reason",),
            registry=registry,
        )

    # ------------------------------------------------------------ the owner file
    def read_owner(self) -> Owner | None:
        try:
            st = self.owner_file.stat()
            key = (st.st_ino, st.st_mtime_ns, st.st_size)
            if self._owner_cache is not None and self._owner_cache[0] == key:
                return self._owner_cache[1]
            data = json.loads(self.owner_file.read_text())
            owner = Owner(str(data["url"]), str(data["token"]), str(data.get("revision", "")))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._owner_cache = (key, owner)
        return owner

    def owner_alive(self) -> bool:
        """Is the process that wrote the owner file still running? It holds the file's lock while it
        lives (a hand-over keeps it): free means gone (or no file at all)."""
        try:
            fd = os.open(self.owner_file, os.O_RDONLY)
        except FileNotFoundError:
            return False
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            return True
        finally:
            os.close(fd)  # also drops this probe's lock
        return False

    def _publish(self) -> None:
        """Name this process as the owner, atomically, readable only by the volume's user; the new
        file locked for as long as this process lives."""
        tmp = self.store.root / f"{OWNER_FILE}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        fcntl.flock(fd, fcntl.LOCK_EX)
        data = {"url": self.url, "token": self.token, "revision": self.revision, "pid": os.getpid()}
        os.write(fd, json.dumps(data).encode())
        os.replace(tmp, self.owner_file)
        if self._published is not None:
            os.close(self._published)  # a file this process wrote before (taken back): replaced
        self._published = fd

    def _settle(self, state: State) -> None:
        self.state = state
        self._settled.set()

    async def _open(self) -> None:
        """With the lock held: open the shard, touch it once (its first search costs several times
        a warm one), name this process, serve."""
        try:
            await self.store.ensure_collection()
            probe = [1.0] + [0.0] * (self.store.dimensions - 1)
            await self.store.search(
                probe, tenant="\0warm-up", limit=1, score_threshold=None, namespace=None, user=None, metadata=None
            )
        except BaseException:
            await self.store.close()
            self.lock.release()
            raise
        self.store.start_indexing()
        self._publish()
        self._settle(State.OWNER)

    def _pass_on(self, state: State) -> None:
        """Forward from now on (FORWARDING or FOLLOWING), and take the shard if its owner dies."""
        if self._client is None:
            # Pods on one node connect in well under a second; a dead owner's address may not refuse at all.
            self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=1.0), follow_redirects=False)
        self._settle(state)
        if self._watcher is None or self._watcher.done():
            self._watcher = asyncio.create_task(self._watch_owner())

    async def _watch_owner(self) -> None:
        """Passing requests on: take the shard the moment the owner's process is gone (the kernel
        dropped its owner file's lock, and so the shard's)."""
        while self.state in PASSING_ON:
            await asyncio.sleep(POLL_SECONDS)
            if self.owner_alive() or not self.lock.try_acquire():
                continue  # alive, or another process (a sibling, a successor) took the shard first
            started = time.monotonic()
            was = self.state.value
            try:
                await self._open()
            except Exception as exc:  # the lock is released again; tried on the next round
                log.error("shard_take_over_failed", error=str(exc)[:500])
                await asyncio.sleep(1)
                continue
            log.warning("shard_taken", how=f"owner gone ({was})", seconds=round(time.monotonic() - started, 3))
            return

    # ------------------------------------------------------------ the successor's side
    async def acquire(self, warm_up: Callable[[], Awaitable[object]] | None = None) -> None:
        """At start-up: warm up, then take the shard (asking its owner to hand it over if that is of
        another revision), or follow an owner of this revision; fail after acquire_seconds."""
        self.store.root.mkdir(parents=True, exist_ok=True)
        if warm_up is not None:
            began = time.monotonic()
            try:  # bounded, and never fatal: a cold start is slower, not wrong
                await asyncio.wait_for(warm_up(), WARM_UP_SECONDS)
                log.info("warmed_up", seconds=round(time.monotonic() - began, 3))
            except Exception as exc:
                log.warning("warm_up_failed", error=f"{type(exc).__name__}: {exc}"[:300])
        started = time.monotonic()
        deadline, next_ask, asked = started + self.acquire_seconds, started, None
        while not self.lock.try_acquire():
            now = time.monotonic()
            if now > deadline:
                owner = self.read_owner()
                raise RuntimeError(
                    f"QDRANT_PATH: the embedded shard at {self.store.root} is owned by another process "
                    f"({owner.url if owner else 'unknown'}), which did not hand it over within "
                    f"{self.acquire_seconds:g} s (last answer: {asked}). Its owner keeps serving; this pod "
                    "tries again when restarted (SHARD_ACQUIRE_SECONDS bounds the wait)."
                )
            owner = self.read_owner()
            if owner is not None and owner.url != self.url:
                if self.revision and owner.revision == self.revision and self.owner_alive():
                    self._pass_on(State.FOLLOWING)
                    log.info("shard_following", owner=owner.url, revision=self.revision)
                    return
                if now >= next_ask:
                    asked, handed = await self._ask(owner, deadline - now)
                    # Handed over: the lock is free now; if it is taken back instead, ask again later.
                    next_ask = now + (self.take_back_seconds + 1 if handed else 0.5)
            await asyncio.sleep(POLL_SECONDS)
        how = "handed over" if asked else "free"
        await self._open()
        log.info("shard_taken", how=how, seconds=round(time.monotonic() - started, 3), url=self.url)

    async def _ask(self, owner: Owner, timeout: float) -> tuple[str, bool]:
        try:
            async with httpx.AsyncClient(timeout=max(1.0, min(timeout, 10.0))) as client:
                answer = await client.post(f"{owner.url}{HANDOVER_PATH}", headers={TOKEN_HEADER: owner.token})
        except httpx.HTTPError as exc:
            return f"{type(exc).__name__}: {exc}"[:200], False
        return f"{answer.status_code} {answer.text[:200]}", answer.status_code == 200

    # ------------------------------------------------------------ the owner's side
    async def hand_over(self) -> tuple[int, str]:
        if self.state is not State.OWNER:
            return 409, f"this process is {self.state.value}, not the owner"
        started = time.monotonic()
        self.state = State.HANDING_OVER
        self._settled.clear()  # new requests wait here
        await self.store.close()  # the shard's files are complete on disk (its WAL included)
        self.lock.release()  # the owner file stays locked: followers know this process lives
        self._successor = asyncio.create_task(self._await_successor(started))
        log.info("shard_handed_over", seconds=round(time.monotonic() - started, 3))
        return 200, "handed over"

    async def _await_successor(self, started: float) -> None:
        """Forward once the successor names itself; take the shard back if it never takes the lock."""
        while True:
            owner = self.read_owner()
            if owner is not None and owner.token != self.token:
                self._pass_on(State.FORWARDING)
                log.info("shard_forwarding", to=owner.url, seconds=round(time.monotonic() - started, 3))
                return
            if time.monotonic() - started > self.take_back_seconds and self.lock.try_acquire():
                try:
                    await self._open()
                except Exception as exc:  # the shard is untouched by anyone: try again shortly
                    log.error("shard_take_back_failed", error=str(exc)[:500])
                    await asyncio.sleep(1)
                    continue
                log.warning("shard_taken_back", seconds=round(time.monotonic() - started, 3))
                return
            await asyncio.sleep(POLL_SECONDS)

    async def ready(self) -> bool:
        """Owner: the shard is open. Following: ready (it serves through the owner, or takes the shard
        if the owner dies). Forwarding: ready until the owner is (then out of the Service, so the
        endpoints never go empty). Between: not ready."""
        if self.state is State.OWNER:
            return await self.store.ready()
        if self.state is State.FOLLOWING:
            return True
        owner = self.read_owner()
        if self.state is State.FORWARDING and owner is not None and self._client is not None:
            with contextlib.suppress(httpx.HTTPError):
                if (await self._client.get(f"{owner.url}/readyz", timeout=1.5)).status_code == 200:
                    raise RuntimeError(f"the shard was handed over to {owner.url}, which is ready")
            return True
        return False

    async def stop(self) -> None:
        """At shutdown (requests drained): stop watching and waiting, close the shard, give the lock
        up (last), close the client."""
        for task in (self._watcher, self._successor):
            if task is not None:
                task.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await task
        await self.store.close()
        self.lock.release()
        if self._client is not None:
            await self._client.aclose()

    # ------------------------------------------------------------ requests
    async def _read_body(self, receive: Receive) -> bytes | None:
        """The whole body, kept to be sent again; None if the client left; TOO_LARGE past the limit."""
        body = bytearray()
        while True:
            message = await receive()
            if message["type"] != "http.request":
                return None
            body += message.get("body", b"")
            if len(body) > self.max_body_bytes:
                return TOO_LARGE
            if not message.get("more_body", False):
                return bytes(body)

    async def forward(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        """Pass the request on to the owner and its answer back; False (nothing sent back) if this
        process took the shard meanwhile, so the request is served here."""
        assert self._client is not None
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP and k not in (b"host", b"content-length")]
        method, path = scope["method"], scope["path"]
        if method == "POST" and path in STORE_PATHS and not any(k == IDEMPOTENCY_HEADER for k, _ in headers):
            headers.append((IDEMPOTENCY_HEADER, uuid.uuid4().hex.encode()))  # so it can be replayed
        target = scope.get("raw_path") or path.encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        started = time.monotonic()
        deadline = started + self.acquire_seconds
        shed_retried = lost = 0
        while True:
            if self.state is State.OWNER:
                return False
            owner = self.read_owner()
            try:
                if owner is None or owner.url == self.url:
                    raise httpx.ConnectError("no other owner named")
                request = self._client.build_request(
                    method, owner.url + target.decode("latin-1"), headers=headers, content=body
                )
                answer = await self._client.send(request, stream=True)
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing was sent: safe to try again, also for a write (the owner may be finishing its
                # start, or gone and this process about to take the shard).
                if time.monotonic() > deadline:
                    detail = f"the shard's owner does not answer ({exc})"
                    await problem(503, "Service Unavailable", detail, headers=retry_after(1))(scope, receive, send)
                    return True
                await asyncio.sleep(POLL_SECONDS)
                continue
            except (httpx.ReadError, httpx.WriteError, httpx.RemoteProtocolError) as exc:
                # Sent, never answered: the owner went away under it. Again only where that is safe.
                if lost < LOST_REPLAYS and replayable(method, path, headers) and time.monotonic() < deadline:
                    lost += 1
                    self.forward_retries.labels("unanswered").inc()
                    log.warning("forward_replayed", path=path, error=type(exc).__name__)
                    await asyncio.sleep(POLL_SECONDS)
                    continue
                await problem(502, "Bad Gateway", f"the shard's owner failed: {type(exc).__name__}")(
                    scope, receive, send
                )
                return True
            except httpx.HTTPError as exc:
                await problem(502, "Bad Gateway", f"the shard's owner failed: {type(exc).__name__}")(
                    scope, receive, send
                )
                return True
            if answer.status_code == 503 and not shed_retried:
                wait = retry_after_seconds(answer)
                if wait is not None and time.monotonic() - started + wait <= FORWARD_BUDGET_SECONDS:
                    # Shed, not run (the owner is at capacity, or just started): once, after its Retry-After.
                    shed_retried += 1
                    self.forward_retries.labels("shed").inc()
                    log.info("forward_shed_retried", path=path, wait=wait, to=owner.url)
                    await answer.aclose()
                    await asyncio.sleep(wait)
                    continue
            break
        self.forwarded.inc()
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": answer.status_code,
                    "headers": [(k, v) for k, v in answer.headers.raw if k.lower() not in HOP_BY_HOP],
                }
            )
            async for chunk in answer.aiter_raw():
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        finally:
            await answer.aclose()
        return True

    async def _handle_handover(self, scope: Scope, receive: Receive, send: Send) -> None:
        token = next((v for k, v in scope["headers"] if k == TOKEN_HEADER.encode()), b"").decode("latin-1")
        if scope["method"] != "POST":
            await problem(405, "Method Not Allowed", "POST only", headers={"Allow": "POST"})(scope, receive, send)
        elif not token:
            await problem(401, "Unauthorized", f"the {TOKEN_HEADER} header is required")(scope, receive, send)
        elif not hmac.compare_digest(token.encode(), self.token.encode()):
            await problem(403, "Forbidden", f"the {TOKEN_HEADER} is not this owner's")(scope, receive, send)
        else:
            status, detail = await self.hand_over()
            answer = JSONResponse({"status": detail}) if status == 200 else problem(status, "Conflict", detail)
            await answer(scope, receive, send)

    async def serve(self, app: ASGIApp, scope: Scope, receive: Receive, send: Send) -> None:
        path = scope["path"]
        if path == HANDOVER_PATH:
            await self._handle_handover(scope, receive, send)
            return
        if path in NOT_DATA:
            await app(scope, receive, send)
            return
        body = await self._read_body(receive)
        if body is None:
            return  # the client left
        if body is TOO_LARGE:
            # The rest of the body is not read: the connection cannot be reused.
            detail = f"the request body exceeds {self.max_body_bytes} bytes; send less per request"
            await problem(413, "Content Too Large", detail, headers={"Connection": "close"})(scope, receive, send)
            return
        for _ in range(REPLAYS):
            while self.state in (State.STARTING, State.HANDING_OVER):
                await self._settled.wait()
            if self.state in PASSING_ON:
                if await self.forward(scope, body, receive, send):
                    return
                continue  # this process took the shard meanwhile: served here
            if not await self._run_here(app, scope, body, receive, send):
                return
        await problem(503, "Service Unavailable", "the shard kept moving", headers=retry_after(1))(scope, receive, send)

    async def _run_here(self, app: ASGIApp, scope: Scope, body: bytes, receive: Receive, send: Send) -> bool:
        """Serve the request here; True if it found the shard closed (nothing answered, nothing written)."""
        moved = False
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return {"type": "http.request", "body": body, "more_body": False}
            return await receive()

        async def send_unless_moved(message: Message) -> None:
            nonlocal moved
            if message["type"] == "http.response.start":
                moved = any(k == MOVED_HEADER for k, _ in message.get("headers", []))
            if not moved:
                await send(message)

        await app(scope, replay, send_unless_moved)
        return moved


class HandoffGate:
    """Outermost ASGI middleware: the hand-over endpoint, and every data request held, served or
    forwarded by the process's ShardHandoff."""

    def __init__(self, app: ASGIApp, handoff: ShardHandoff):
        self.app, self.handoff = app, handoff

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        await self.handoff.serve(self.app, scope, receive, send)


def install(app: FastAPI, handoff: ShardHandoff) -> None:
    """The gate, outermost (before auth, admission and metrics: a forwarded request is the owner's
    to count), and the answer marking a request that found the shard closed."""

    async def shard_closed(_: Request, exc: ShardClosed) -> Response:
        return problem(503, "Service Unavailable", str(exc), headers={MOVED_HEADER.decode(): "1", **retry_after(1)})

    app.add_exception_handler(ShardClosed, shard_closed)
    app.add_middleware(HandoffGate, handoff=handoff)


def owner_url(pod_ip: str, port: int) -> str:
    host = f"[{pod_ip}]" if ":" in pod_ip else pod_ip
    return f"http://{host}:{port}"
