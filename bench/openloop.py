"""The benchmarks' open-loop load generator, run in a process of its own.

`users` connections are opened first and held; together they offer `rate` requests/s with
exponential think times (Poisson arrivals), whatever the server does: a slow answer does not slow
the offered load. Latency counts from each request's planned send, so a queue in front of the
server is measured, not hidden (no coordinated omission). `send(session, i, planned)` makes one
request (the benchmark's own, with its accounting); it returns when the request is finished.

`Client` is how a user of the platform calls it, as the repo's clients do
(sophia_chassis.http.ResilientClient, whose defaults it takes): an answer 429 or 503 with
Retry-After is retried after that long (at most `backoff_max`); an idempotent request is also
retried after a transport error or another 5xx, with exponential jitter; at most `attempts`
attempts. A request that is not idempotent is retried only when it was refused with Retry-After
(not run), never after a failure that may have done the work.
"""

from __future__ import annotations

import asyncio
import inspect
import itertools
import multiprocessing as mp
import os
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any

from tenacity import RetryCallState, wait_exponential_jitter

from sophia_chassis.http import ResilientClient, retry_after_seconds

_CLIENT_DEFAULTS = {
    name: p.default
    for name, p in inspect.signature(ResilientClient.__init__).parameters.items()
    if p.default != p.empty
}


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def load_average() -> str:
    return " ".join(f"{x:.2f}" for x in os.getloadavg())


Send = Callable[[Any, int, float], Awaitable[None]]


async def open_loop(
    url: str,
    users: int,
    rate: float,
    seconds: float,
    send: Send,
    *,
    timeout: float,
    headers: dict[str, str] | None = None,
    connect_path: str = "/healthz",
    stop: Any = None,
    seed: int = 7,
    on_start: Callable[[], None] | None = None,
) -> float:
    """Offer `rate` requests/s over `users` held connections for `seconds` (or until `stop`, a
    multiprocessing Event, is set); returns the seconds the load ran. `planned` is on
    time.monotonic()'s clock. `on_start` is called when every connection is open and the load starts."""
    import aiohttp

    rng = random.Random(seed)
    mean_think = users / rate
    opened = 0
    all_open = asyncio.Event()
    clock: dict[str, float] = {}

    async def user(n: int) -> None:
        nonlocal opened
        connector = aiohttp.TCPConnector(limit=1)
        client_timeout = aiohttp.ClientTimeout(total=timeout)
        async with aiohttp.ClientSession(url, connector=connector, timeout=client_timeout, headers=headers) as session:
            try:  # open the connection before the clock starts (any answer will do)
                async with session.get(connect_path) as r:
                    await r.read()
            except aiohttp.ClientError:
                pass
            opened += 1
            if opened == users:
                clock["started"] = time.monotonic()
                if on_start is not None:
                    on_start()
                all_open.set()
            await all_open.wait()
            deadline = clock["started"] + seconds
            planned = clock["started"] + rng.expovariate(1 / mean_think)  # memoryless: Poisson from the start
            for i in itertools.count(n, users):
                if planned >= deadline or (stop is not None and stop.is_set()):
                    return
                while (wait := planned - time.monotonic()) > 0:  # awake now and then to see `stop`
                    await asyncio.sleep(min(wait, 0.5))
                    if stop is not None and stop.is_set():
                        return
                await send(session, i, planned)
                planned += rng.expovariate(1 / mean_think)

    await asyncio.gather(*(user(n) for n in range(users)))
    return time.monotonic() - clock["started"]


@dataclass
class Answer:
    status: int  # 0: no answer (transport error or timeout)
    attempts: int
    refused: int  # answers 429/503 with Retry-After among the attempts (load shed, come back later)
    error: str = ""


def who_answered(body: bytes) -> str:
    """A failed answer, briefly: the service's problem (RFC 9457: its detail) or the proxy's text
    (the gateway's own 502/503, e.g. Traefik's 'no available server')."""
    import json

    try:
        problem = json.loads(body)
        return str(problem.get("detail") or problem.get("title"))[:60] if isinstance(problem, dict) else ""
    except ValueError:
        return "(gateway) " + body.decode(errors="replace").strip()[:40]


class Client:
    """One user's requests, retried as the repo's clients retry (see the module's docstring)."""

    def __init__(
        self,
        attempts: int = _CLIENT_DEFAULTS["attempts"],
        backoff_initial: float = _CLIENT_DEFAULTS["backoff_initial"],
        backoff_max: float = _CLIENT_DEFAULTS["backoff_max"],
    ):
        self.attempts, self.backoff_max = attempts, backoff_max
        self._exponential = wait_exponential_jitter(multiplier=backoff_initial, max=backoff_max)

    def _backoff(self, attempt: int) -> float:
        state = RetryCallState(None, None, (), {})
        state.attempt_number = attempt
        return self._exponential(state)

    async def request(
        self, session: Any, method: str, path: str, *, idempotent: bool, json: Any = None, headers: Any = None
    ) -> Answer:
        import aiohttp

        refused = 0
        last = Answer(0, 0, 0)
        for attempt in range(1, self.attempts + 1):
            wait: float | None = None
            try:
                async with session.request(method, path, json=json, headers=headers) as r:
                    body = await r.read()
                    status, retry_after = r.status, retry_after_seconds(r)
                if status < 500 and status != 429:
                    return Answer(status, attempt, refused)
                last = Answer(status, attempt, refused, f"HTTP {status} {who_answered(body)}")
                if status in (429, 503) and retry_after is not None:
                    refused += 1
                    last.refused = refused
                    wait = min(retry_after, self.backoff_max)
                elif not idempotent:
                    return last
            except (TimeoutError, aiohttp.ClientError) as exc:
                last = Answer(0, attempt, refused, type(exc).__name__)
                if not idempotent:
                    return last
            if attempt < self.attempts:
                await asyncio.sleep(wait if wait is not None else self._backoff(attempt))
        return last


def _run(target: Callable[..., Awaitable[Any]], args: tuple, out: mp.Queue) -> None:
    try:
        import uvloop

        uvloop.install()
    except ImportError:
        pass
    out.put(asyncio.run(target(*args)))


def in_process(target: Callable[..., Awaitable[Any]], *args: Any) -> tuple[mp.Process, mp.Queue]:
    """Start `target(*args)` (a coroutine function at module level) in a process of its own, so
    the generator shares no event loop or core time slice with the caller; (process, queue of
    its result)."""
    out: mp.Queue = mp.Queue()
    process = mp.Process(target=_run, args=(target, args, out))
    process.start()
    return process, out


def result_of(process: mp.Process, out: mp.Queue, timeout: float) -> Any:
    result = out.get(timeout=timeout)
    process.join()
    return result
