"""The queue and the task records against a real redis-server and a real PostgreSQL:
a dead worker's task is re-claimed, a live one's is not, submission is idempotent and a
task never runs on two workers at once."""

from __future__ import annotations

import asyncio

import pytest
from redis.asyncio import Redis

from mcp_agents.queue import TaskQueue
from mcp_agents.store import IdempotencyConflict, TaskStore


def test_a_dead_workers_task_is_reclaimed_and_a_live_ones_is_not(redis_url: str) -> None:
    async def scenario():
        redis = Redis.from_url(redis_url)
        queue = TaskQueue(redis, visibility_timeout_seconds=0.3)
        await queue.ensure_group()
        await queue.ensure_group()  # replicas all call it: the second is a no-op
        await queue.enqueue("task-dead")
        await queue.enqueue("task-live")
        dead = await queue.next("worker-dead", block_ms=100)
        live = await queue.next("worker-live", block_ms=100)
        assert (dead.task_id, dead.reclaimed, live.task_id) == ("task-dead", False, "task-live")
        assert await queue.next("worker-other", block_ms=100) is None  # nothing new, nothing idle yet
        for _ in range(4):  # the live worker heartbeats; the dead one is silent
            await asyncio.sleep(0.12)
            await queue.heartbeat("worker-live", live.entry_id)
        reclaimed = await queue.next("worker-other", block_ms=100)
        assert (reclaimed.task_id, reclaimed.reclaimed) == ("task-dead", True)
        assert await queue.next("worker-other", block_ms=100) is None  # the live one's task stays put
        await queue.ack(reclaimed.entry_id)
        await queue.ack(live.entry_id)
        assert await queue.pending() == 0 and await redis.xlen(queue.stream) == 0
        await redis.aclose()

    asyncio.run(scenario())


def test_a_queue_whose_stream_was_evicted_recreates_it(redis_url: str) -> None:
    async def scenario():
        redis = Redis.from_url(redis_url)
        queue = TaskQueue(redis)
        await queue.ensure_group()
        await redis.delete(queue.stream)  # what an LRU eviction of the stream looks like
        assert await queue.next("w", block_ms=50) is None
        await queue.enqueue("after-eviction")
        assert (await queue.next("w", block_ms=50)).task_id == "after-eviction"
        await redis.aclose()

    asyncio.run(scenario())


def test_submission_is_idempotent_by_client_key_and_runs_are_exclusive(database_url: str) -> None:
    async def scenario():
        store = TaskStore(database_url)
        await store.open()
        first, created = await store.submit("default", "summarise the billing repo", 5, 60, "key-1")
        again, created_again = await store.submit("default", "summarise the billing repo", 5, 60, "key-1")
        other, _ = await store.submit("default", "summarise the billing repo", 5, 60, None)
        unkeyed, _ = await store.submit("default", "summarise the billing repo", 5, 60, None)
        assert created and not created_again and again.id == first.id
        assert len({first.id, other.id, unkeyed.id}) == 3  # no key, no deduplication
        with pytest.raises(IdempotencyConflict, match="key-1"):
            await store.submit("default", "something else", 5, 60, "key-1")

        running = await store.start(first.id, "w1", abandoned_after_seconds=0.3)
        assert (running.state, running.attempts, running.worker) == ("running", 1, "w1")
        assert await store.start(first.id, "w2", abandoned_after_seconds=0.3) is None  # alive on w1
        await asyncio.sleep(0.4)  # w1 stops heartbeating
        taken = await store.start(first.id, "w2", abandoned_after_seconds=0.3)
        assert (taken.attempts, taken.worker) == (2, "w2")
        await store.finish(first.id, result="done", steps=2)
        assert await store.start(first.id, "w3", abandoned_after_seconds=0) is None  # finished stays finished
        assert (await store.get(first.id)).state == "succeeded"
        assert [e["kind"] for e in await store.events_after(first.id, 0)] == ["succeeded"]
        assert await store.get("not-a-uuid") is None
        await store.close()

    asyncio.run(scenario())


def test_a_task_whose_workers_keep_dying_fails_with_the_reason(database_url: str, redis_url: str) -> None:
    from mcp_agents.loop import Outcome
    from mcp_agents.worker import Worker

    async def scenario():
        redis = Redis.from_url(redis_url)
        store, queue = TaskStore(database_url), TaskQueue(redis, visibility_timeout_seconds=0.05)
        await store.open()
        await queue.ensure_group()
        task, _ = await store.submit("default", "crashes its worker", 5, 60, None)
        await queue.enqueue(task.id)
        ran: list[str] = []

        async def run(task, emit):
            ran.append(task.id)
            return Outcome("should not run", 1)

        for dead in ("w1", "w2", "w3"):  # three workers take it and die without acknowledging
            delivery = await queue.next(dead, block_ms=100)
            assert delivery.task_id == task.id and await store.start(task.id, dead, 0.05)
            await asyncio.sleep(0.1)
        worker = Worker("w4", store, queue, run, max_attempts=3)
        await worker.handle(await queue.next("w4", block_ms=100))
        final = await store.get(task.id)
        assert final.state == "failed" and final.error.startswith("gave up after 3 attempts") and not ran
        assert await queue.pending() == 0  # acknowledged: it will not come back
        await store.close()
        await redis.aclose()

    asyncio.run(scenario())
