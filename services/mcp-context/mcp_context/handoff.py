"""Hand the embedded shard over from pod to pod, so the local mcp-context rolls like the others.

Qdrant Edge lets one process open a shard (a second gets "Can't init WAL: WouldBlock"), and
the local stack keeps it on a volume both pods of a rolling update mount. So:

- The owner holds an exclusive flock on `<QDRANT_PATH>/.owner.lock` while it owns the shard
  (the kernel drops it when the process dies: a crashed owner never blocks its successor), and
  writes `.owner.json` beside it: its address and a random token, mode 0600. Only a process
  mounting the same volume can read the token, which is what authenticates a hand-over.
- A starting pod that cannot take the lock asks the owner (POST HANDOVER_PATH with the token;
  not routed by the gateway). The owner holds new requests, closes the shard (after the write
  running, if any), releases the lock and answers; the successor takes the lock, opens the
  shard, publishes itself and starts serving. From then on the old owner forwards every data
  request it still gets (endpoint removal lags) to the owner named in the file, with the
  caller's headers (the owner authenticates them), and reports not-ready once that owner is.
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
from dataclasses import dataclass
from pathlib import Path

import httpx
import structlog
from fastapi import FastAPI, Request, Response
from prometheus_client import CollectorRegistry, Counter
from starlette.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from mcp_context.store import EmbeddedMemoryStore, ShardClosed
from sophia_chassis.problems import problem, retry_after

HANDOVER_PATH = "/internal/shard/handover"
TOKEN_HEADER = "x-shard-token"
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
log = structlog.get_logger()


class State(enum.Enum):
    STARTING = "starting"
    OWNER = "owner"
    HANDING_OVER = "handing over"
    FORWARDING = "forwarding"


@dataclass(frozen=True)
class Owner:
    url: str
    token: str


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


class ShardHandoff:
    def __init__(
        self,
        store: EmbeddedMemoryStore,
        url: str,
        registry: CollectorRegistry,
        *,
        acquire_seconds: float = 30.0,
        take_back_seconds: float = 5.0,
        max_body_bytes: int = 16 << 20,
    ):
        self.store, self.url = store, url
        self.acquire_seconds, self.take_back_seconds = acquire_seconds, take_back_seconds
        self.max_body_bytes = max_body_bytes
        self.lock = DirectoryLock(store.root / LOCK_FILE)
        self.owner_file = store.root / OWNER_FILE
        self.token = secrets.token_urlsafe(32)
        self.state = State.STARTING
        self._settled = asyncio.Event()  # set while requests may go on (owner or forwarding)
        self._successor: asyncio.Task[None] | None = None
        self._client: httpx.AsyncClient | None = None
        self._owner_cache: tuple[tuple[int, int], Owner | None] | None = None
        self.forwarded = Counter(
            "context_requests_forwarded_total",
            "Requests a pod that handed its shard over passed on to the owner",
            registry=registry,
        )

    # ------------------------------------------------------------ the owner file
    def read_owner(self) -> Owner | None:
        try:
            st = self.owner_file.stat()
            key = (st.st_mtime_ns, st.st_size)
            if self._owner_cache is not None and self._owner_cache[0] == key:
                return self._owner_cache[1]
            data = json.loads(self.owner_file.read_text())
            owner = Owner(str(data["url"]), str(data["token"]))
        except (OSError, ValueError, KeyError, TypeError):
            return None
        self._owner_cache = (key, owner)
        return owner

    def _publish(self) -> None:
        """Name this process as the owner, atomically, readable only by the volume's user."""
        tmp = self.store.root / f"{OWNER_FILE}.{os.getpid()}"
        tmp.unlink(missing_ok=True)
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            json.dump({"url": self.url, "token": self.token, "pid": os.getpid()}, f)
        os.replace(tmp, self.owner_file)

    def _settle(self, state: State) -> None:
        self.state = state
        self._settled.set()

    async def _open(self) -> None:
        """With the lock held: open the shard, name this process, serve."""
        try:
            await self.store.ensure_collection()
        except BaseException:
            self.lock.release()
            raise
        self.store.start_indexing()
        self._publish()
        self._settle(State.OWNER)

    # ------------------------------------------------------------ the successor's side
    async def acquire(self) -> None:
        """At start-up: take the shard, asking its owner to hand it over; fail after acquire_seconds."""
        self.store.root.mkdir(parents=True, exist_ok=True)
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
            if owner is not None and owner.url != self.url and now >= next_ask:
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
        self.lock.release()
        self._successor = asyncio.create_task(self._await_successor(started))
        log.info("shard_handed_over", seconds=round(time.monotonic() - started, 3))
        return 200, "handed over"

    async def _await_successor(self, started: float) -> None:
        """Forward once the successor names itself; take the shard back if it never takes the lock."""
        while True:
            owner = self.read_owner()
            if owner is not None and owner.token != self.token:
                self._client = httpx.AsyncClient(timeout=httpx.Timeout(60.0, connect=2.0), follow_redirects=False)
                self._settle(State.FORWARDING)
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
        """Owner: the shard is open. Forwarding: ready until the owner is (then out of the Service,
        so the endpoints never go empty). Between: not ready."""
        if self.state is State.OWNER:
            return await self.store.ready()
        owner = self.read_owner()
        if self.state is State.FORWARDING and owner is not None and self._client is not None:
            with contextlib.suppress(httpx.HTTPError):
                if (await self._client.get(f"{owner.url}/readyz", timeout=1.5)).status_code == 200:
                    raise RuntimeError(f"the shard was handed over to {owner.url}, which is ready")
            return True
        return False

    async def stop(self) -> None:
        """After the store is closed (shutdown): give the lock up, stop waiting, close the client."""
        if self._successor is not None:
            self._successor.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._successor
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

    async def forward(self, scope: Scope, body: bytes, receive: Receive, send: Send) -> None:
        assert self._client is not None
        headers = [(k, v) for k, v in scope["headers"] if k not in HOP_BY_HOP and k not in (b"host", b"content-length")]
        target = scope.get("raw_path") or scope["path"].encode()
        if scope.get("query_string"):
            target += b"?" + scope["query_string"]
        deadline = time.monotonic() + self.acquire_seconds
        while True:
            owner = self.read_owner()
            try:
                if owner is None:
                    raise httpx.ConnectError("no owner named")
                request = self._client.build_request(
                    scope["method"], owner.url + target.decode("latin-1"), headers=headers, content=body
                )
                answer = await self._client.send(request, stream=True)
                break
            except (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout) as exc:
                # Nothing was sent: safe to try again, also for a write (the owner may be finishing its start).
                if time.monotonic() > deadline:
                    detail = f"the shard's owner does not answer ({exc})"
                    await problem(503, "Service Unavailable", detail, headers=retry_after(1))(scope, receive, send)
                    return
                await asyncio.sleep(POLL_SECONDS)
            except httpx.HTTPError as exc:
                await problem(502, "Bad Gateway", f"the shard's owner failed: {type(exc).__name__}")(
                    scope, receive, send
                )
                return
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
            if self.state is State.FORWARDING:
                await self.forward(scope, body, receive, send)
                return
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
