"""Graceful overload: bounded concurrency with a queue deadline, as a plain ASGI middleware.

At most `max_concurrent` requests to the limited paths run at once; the next ones wait in
arrival order, each for at most `queue_timeout` seconds. One that is still waiting then is
answered at once with 503 and `Retry-After`, without running: past capacity the service
sheds the excess quickly instead of letting a queue grow until every client times out, and
what it accepts still starts within the deadline. Clients in this repo retry after the
Retry-After (sophia_chassis.http).

The slots alone do not bound latency in an asyncio server: the event loop itself is the queue
(requests read, parsed and routed, continuations after each await), and past capacity it fills
with requests the slots have not seen yet, so every admitted request stretches and served
throughput collapses (bench-context: 40/s served of 400 offered). So the loop's lag is measured
too (how late a timer every `tick` seconds fires): while it exceeds `max_loop_lag` *and* the loop's
thread was busy on a CPU for at least `BUSY_SHARE` of the time, new requests are shed at the door,
which costs the least the loop can spend on them. A loop that runs late without running (the
machine's other processes had the cores) is not overloaded by its callers, and refusing them would
not make it faster: on a shared machine that shed healthy requests (seen in CI and in tests)."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia_chassis.problems import problem, retry_after

# The share of wall time the loop's thread must have run on a CPU for its lag to count as overload.
BUSY_SHARE = 0.5


class AdmissionControl:
    def __init__(
        self,
        app: ASGIApp,
        *,
        paths: Iterable[str],
        max_concurrent: int,
        queue_timeout: float,
        retry_after_seconds: float = 1.0,
        max_loop_lag: float | None = None,
        tick: float = 0.005,
        registry: CollectorRegistry | None = None,
    ):
        if max_concurrent < 1 or queue_timeout < 0:
            raise ValueError("max_concurrent must be >= 1 and queue_timeout >= 0")
        self.app, self.paths = app, frozenset(paths)
        self.max_concurrent, self.queue_timeout = max_concurrent, queue_timeout
        self.retry_after_seconds = retry_after_seconds
        self.max_loop_lag, self.tick = max_loop_lag, tick
        self.loop_lag = 0.0
        self.loop_busy = 0.0  # smoothed share of wall time the loop's thread ran on a CPU
        self._monitor: asyncio.Task[None] | None = None
        self.active = 0
        self.shed = 0
        self._waiters: deque[asyncio.Future[bool]] = deque()
        self._shed_counter = (
            Counter(
                "requests_shed_total", "Requests answered 503 because the service was at capacity", registry=registry
            )
            if registry is not None
            else None
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] not in self.paths:
            await self.app(scope, receive, send)
            return
        if self.max_loop_lag is not None and self._monitor is None:
            self._monitor = asyncio.get_running_loop().create_task(self._watch_loop())
        if self.overloaded or not await self._acquire():
            self.shed += 1
            if self._shed_counter is not None:
                self._shed_counter.inc()
            busy = problem(
                503,
                "Overloaded",
                f"the service is at capacity ({self.max_concurrent} requests running, the queue is full); "
                "retry after the Retry-After",
                headers=retry_after(self.retry_after_seconds),
            )
            await busy(scope, receive, send)
            return
        try:
            await self.app(scope, receive, send)
        finally:
            self._release()

    async def _watch_loop(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            started, cpu = loop.time(), time.thread_time()
            await asyncio.sleep(self.tick)
            now = loop.time()
            busy = min(1.0, (time.thread_time() - cpu) / (now - started)) if now > started else 1.0
            self.observe(max(0.0, now - started - self.tick), busy)

    def observe(self, late: float, busy: float) -> None:
        """One tick of the loop watcher: its timer fired `late` seconds late, and the loop's thread
        ran on a CPU for the share `busy` of the tick. Smoothed over ~10 ticks: one late timer is
        not overload."""
        self.loop_lag += 0.1 * (late - self.loop_lag)
        self.loop_busy += 0.1 * (busy - self.loop_busy)

    @property
    def overloaded(self) -> bool:
        """The loop runs late, and because it is busy (not because the OS ran other processes)."""
        return self.max_loop_lag is not None and self.loop_lag > self.max_loop_lag and self.loop_busy >= BUSY_SHARE

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
