"""A worker: takes tasks from the queue, runs each under its limits, records the outcome,
and acknowledges only then, so a worker that dies mid-task leaves it to be re-claimed."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

from mcp_agents.loop import Emit, LimitReached, Outcome
from mcp_agents.queue import Delivery, TaskQueue
from mcp_agents.store import Task, TaskStore
from sophia_chassis.tracing import consuming

log = structlog.get_logger()
Runner = Callable[[Task, Emit], Awaitable[Outcome]]
Observer = Callable[[str, float], Any]  # (outcome, seconds)


class Worker:
    def __init__(
        self,
        name: str,
        store: TaskStore,
        queue: TaskQueue,
        run: Runner,
        *,
        max_attempts: int = 3,
        on_finished: Observer = lambda outcome, seconds: None,
        block_ms: int = 1000,
    ):
        self.name, self.store, self.queue, self.run = name, store, queue, run
        self.max_attempts, self.on_finished, self.block_ms = max_attempts, on_finished, block_ms
        self.abandoned_after = queue.visibility_ms / 1000

    async def run_forever(self) -> None:
        while True:
            try:
                delivery = await self.queue.next(self.name, self.block_ms)
                if delivery:
                    await self.handle(delivery)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # Redis or PostgreSQL hiccup: wait and try again, never die
                log.warning("worker_error", worker=self.name, error=f"{type(exc).__name__}: {exc}")
                await asyncio.sleep(1)

    async def handle(self, delivery: Delivery) -> None:
        # The run continues the trace of the request that queued the task, under its request id.
        attributes = {
            "messaging.message.id": delivery.entry_id,
            "messaging.consumer.group.name": self.queue.group,
            "sophia.task.id": delivery.task_id or "",
            "sophia.task.reclaimed": delivery.reclaimed,
        }
        with consuming(delivery.fields, self.queue.stream, attributes):
            await self._handle(delivery)

    async def _handle(self, delivery: Delivery) -> None:
        task = await self.store.start(delivery.task_id, self.name, self.abandoned_after)
        if task is None:  # finished, unknown, or alive on another worker: this entry is a duplicate
            await self.queue.ack(delivery.entry_id)
            return
        await self.store.event(
            task.id, "started", {"worker": self.name, "attempt": task.attempts, "reclaimed": delivery.reclaimed}
        )
        if task.attempts > self.max_attempts:
            await self._finish(
                task,
                time.monotonic(),
                error=f"gave up after {self.max_attempts} attempts: the workers running it kept stopping",
            )
            await self.queue.ack(delivery.entry_id)
            return
        heartbeat = asyncio.create_task(self._heartbeat(task.id, delivery.entry_id))
        started = time.monotonic()
        steps = {"n": 0}

        async def emit(kind: str, data: dict[str, Any]) -> None:
            steps["n"] = max(steps["n"], data.get("step", 0))
            await self.store.event(task.id, kind, data)

        try:
            async with asyncio.timeout(task.time_limit_seconds):
                outcome = await self.run(task, emit)
            await self._finish(task, started, result=outcome.answer, steps=outcome.steps)
        except TimeoutError:
            await self._finish(
                task, started, error=f"time limit reached ({task.time_limit_seconds:g} s)", steps=steps["n"]
            )
        except LimitReached as exc:
            await self._finish(task, started, error=str(exc), steps=steps["n"])
        except asyncio.CancelledError:
            raise  # shutting down: not acknowledged, so another worker re-claims it
        except Exception as exc:
            await self._finish(task, started, error=f"{type(exc).__name__}: {exc}"[:500], steps=steps["n"])
        finally:
            heartbeat.cancel()
        await self.queue.ack(delivery.entry_id)

    async def _finish(
        self, task: Task, started: float, *, result: str | None = None, error: str | None = None, steps: int = 0
    ) -> None:
        await self.store.finish(task.id, result=result, error=error, steps=steps)
        self.on_finished("failed" if error else "succeeded", time.monotonic() - started)
        log.info(
            "task_finished",
            task=task.id,
            worker=self.name,
            state="failed" if error else "succeeded",
            error=error,
            steps=steps,
        )

    async def _heartbeat(self, task_id: str, entry_id: str) -> None:
        while True:
            await asyncio.sleep(self.abandoned_after / 3)
            try:
                await self.queue.heartbeat(self.name, entry_id)
                await self.store.touch(task_id)
            except Exception as exc:
                log.warning("heartbeat_failed", task=task_id, error=str(exc))


async def requeue_lost(store: TaskStore, queue: TaskQueue, interval_seconds: float) -> None:
    """Tasks unfinished and untouched for long (their stream entry evicted by Redis' LRU, or Redis
    was down at submit) are queued again; start() turns any duplicate into a no-op."""
    while True:
        await asyncio.sleep(interval_seconds)
        try:
            for task_id in await store.stale(3 * queue.visibility_ms / 1000):
                await queue.enqueue(task_id)
                await store.touch(task_id)
        except Exception as exc:
            log.warning("requeue_failed", error=str(exc))
