"""Graceful overload: bounded concurrency with a queue deadline, and a bounded turn of the event
loop, as a plain ASGI middleware.

At most `max_concurrent` requests to the limited paths run at once; the next ones wait in
arrival order, each for at most `queue_timeout` seconds. One that is still waiting then is
answered at once with 503 and `Retry-After`, without running: past capacity the service sheds the
excess quickly instead of letting a queue grow until every client times out, and what it accepts
still starts within the deadline. Clients in this repo retry after the Retry-After
(sophia_chassis.http).

The slots alone do not bound latency in an asyncio server: the event loop itself is the queue. A
request that needs no await (a warm search) runs to its end in one step, so it never waits for a
slot; past capacity every turn of the loop reads more requests than it can run, and each waits
behind all those read before it. So the loop's turns are bounded too: a timer every `tick` seconds
marks when the loop last came round to its timers; a request that reaches the door more than
`max_loop_lag` seconds after that mark, while the loop's thread was on a CPU for at least
`BUSY_SHARE` of that time, is shed at once (the cheapest thing the loop can do with it). Each turn
so runs at most ~`max_loop_lag` seconds of admitted work and refuses the rest: past capacity the
loop never idles and spends on refusals only what they cost, and what it runs waited at most about
two turns. A loop that is late without running (the machine's other processes had the cores) is
not overloaded by its callers, and refusing them would not make it faster: on a shared machine
that shed healthy requests (seen in CI and in tests).

Two designs came before (docs/performance-mcp-context.md has their figures): shedding everything
while a smoothed lag exceeded the bound (55 % of capacity served at twice it, quiet machine): the
smoothing reacts late both ways, the door staying open while the loop falls behind and shut after it
has caught up; and an AIMD rate steered by that smoothed lag, which inherits the delay. Bounding each turn needs no smoothing and no
rate: what the loop cannot run in this turn is refused in this turn.

The decision and its answer are a `Door`, shared with the HTTP server below the app
(sophia_chassis.server): a request read while the turn is already over its bound is refused there,
from a prebuilt answer, without a scope, a task or the app's middleware; what the server admits
still meets this middleware."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia_chassis.problems import problem, retry_after

# The share of wall time the loop's thread must have run on a CPU for its lateness to count as overload.
BUSY_SHARE = 0.5


class LoopTurn:
    """How long the event loop has been busy since it last came round to its timers.

    `start(loop)` arms a timer every `tick` seconds (a plain callback, run in the loop's timer
    phase: no task). Each firing marks a new turn; `overrun()` is how far the current turn is past
    `max_lag` (seconds, 0 when within it or when the loop's thread was mostly off the CPU)."""

    def __init__(self, max_lag: float, tick: float = 0.005, clock=time.perf_counter, cpu=time.thread_time):
        self.max_lag, self.tick = max_lag, tick
        self._clock, self._cpu = clock, cpu
        self._loop: asyncio.AbstractEventLoop | None = None
        self.mark(clock(), cpu())

    def start(self, loop: asyncio.AbstractEventLoop) -> None:
        """Idempotent per loop (an app may be served by several loops in turn, as in tests)."""
        if self._loop is loop:
            return
        self._loop = loop
        self.mark(self._clock(), self._cpu())
        loop.call_later(self.tick, self._fire, loop)

    def _fire(self, loop: asyncio.AbstractEventLoop) -> None:
        if self._loop is not loop:
            return  # a later loop took over
        self.mark(self._clock(), self._cpu())
        loop.call_later(self.tick, self._fire, loop)

    def mark(self, now: float, cpu: float) -> None:
        self._turn_started, self._turn_cpu = now, cpu

    @property
    def running(self) -> bool:
        """Its timer is armed (on the first limited request): before, `overrun` means nothing."""
        return self._loop is not None

    def overrun(self) -> float:
        elapsed = self._clock() - self._turn_started
        if elapsed <= self.max_lag:
            return 0.0
        if self._cpu() - self._turn_cpu < BUSY_SHARE * elapsed:
            return 0.0  # late, but not because this thread was working
        return elapsed - self.max_lag


class Door:
    """Whether a limited request is refused now, what it is answered and how sheds are counted:
    shared by `AdmissionControl` (in the app) and the HTTP server below it (sophia_chassis.server),
    so a shed is decided, answered and counted alike wherever it happens."""

    def __init__(
        self,
        paths: Iterable[str],
        *,
        max_concurrent: int,
        retry_after_seconds: float = 1.0,
        max_loop_lag: float | None = None,
        tick: float = 0.005,
        registry: CollectorRegistry | None = None,
    ):
        self.paths = frozenset(paths)
        self.raw_paths = frozenset(path.encode() for path in self.paths)  # as the request line has them
        self.turn = LoopTurn(max_loop_lag, tick) if max_loop_lag is not None else None
        self.shed = 0
        # Where a shed was answered: "server" below the app (sophia_chassis.server), "app" here.
        shed = (
            Counter(
                "requests_shed_total",
                "Requests answered 503 because the service was at capacity",
                ("where",),
                registry=registry,
            )
            if registry is not None
            else None
        )
        self._counters = {where: shed.labels(where) for where in ("server", "app")} if shed is not None else {}
        # Built once: a shed is the one answer that must cost next to nothing.
        answer = problem(
            503,
            "Overloaded",
            f"the service is at capacity ({max_concurrent} requests running, the queue is full); "
            "retry after the Retry-After",
            headers=retry_after(retry_after_seconds),
        )
        self.status, self.headers, self.body = answer.status_code, tuple(answer.raw_headers), bytes(answer.body)

    @property
    def overloaded(self) -> bool:
        """The loop's current turn has run past the bound, and because it is busy."""
        return self.turn is not None and self.turn.overrun() > 0

    def closed_to(self, raw_path: bytes) -> bool:
        """For the server below the app: a limited path while the turn is over its bound (never
        before the app's door has armed the turn's timer)."""
        return raw_path in self.raw_paths and self.turn is not None and self.turn.running and self.overloaded

    def count(self, where: str) -> None:
        self.shed += 1
        if self._counters:
            self._counters[where].inc()

    async def refuse(self, send: Send) -> None:
        """The 503 + Retry-After, as ASGI messages (headers copied: a layer outside may edit them)."""
        self.count("app")
        await send({"type": "http.response.start", "status": self.status, "headers": list(self.headers)})
        await send({"type": "http.response.body", "body": self.body})


class AdmissionControl:
    def __init__(
        self,
        app: ASGIApp,
        *,
        paths: Iterable[str] = (),
        max_concurrent: int,
        queue_timeout: float,
        retry_after_seconds: float = 1.0,
        max_loop_lag: float | None = None,
        tick: float = 0.005,
        registry: CollectorRegistry | None = None,
        door: Door | None = None,
    ):
        """`door`: one made by the caller (create_app, to hand it to the server too); else one is
        made from `paths`, `max_loop_lag`, `tick`, `retry_after_seconds` and `registry`."""
        if max_concurrent < 1 or queue_timeout < 0:
            raise ValueError("max_concurrent must be >= 1 and queue_timeout >= 0")
        self.app = app
        self.max_concurrent, self.queue_timeout = max_concurrent, queue_timeout
        self.door = door or Door(
            paths,
            max_concurrent=max_concurrent,
            retry_after_seconds=retry_after_seconds,
            max_loop_lag=max_loop_lag,
            tick=tick,
            registry=registry,
        )
        self.paths = self.door.paths
        self.active = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()

    @property
    def turn(self) -> LoopTurn | None:
        return self.door.turn

    @turn.setter
    def turn(self, turn: LoopTurn | None) -> None:
        self.door.turn = turn

    @property
    def shed(self) -> int:
        return self.door.shed

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.turn is not None:
            self.turn.start(asyncio.get_running_loop())
        if self.door.overloaded or not await self._acquire():
            await self.door.refuse(send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    @property
    def overloaded(self) -> bool:
        return self.door.overloaded

    async def _acquire(self) -> bool:
        """True once a slot is this request's; False when its queue deadline passed first."""
        if self.active < self.max_concurrent and not self._waiters:
            self.active += 1
            return True
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[bool] = loop.create_future()
        self._waiters.append(waiter)

        def expire() -> None:
            if not waiter.done():
                waiter.set_result(False)
                self._waiters.remove(waiter)

        timer = loop.call_later(self.queue_timeout, expire)
        try:
            return await waiter
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled() and waiter.result():
                self._release()  # the slot was handed over as the caller went away: pass it on
            elif waiter in self._waiters:
                self._waiters.remove(waiter)
            raise
        finally:
            timer.cancel()

    def _release(self) -> None:
        """Hand the slot to the longest waiter, or free it."""
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(True)
                return
        self.active -= 1

    @property
    def queued(self) -> int:
        return len(self._waiters)
