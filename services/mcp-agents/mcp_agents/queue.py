"""The work queue: one Redis Stream read by a consumer group, so replicas share tasks and
a task whose worker died (never acknowledged, idle past the visibility timeout) is
claimed again by another worker with XAUTOCLAIM. A running worker heartbeats by
re-claiming its own entry, which resets the idle time. An entry carries, beside the task id,
the W3C trace context and request id of whoever queued it (sophia_chassis.tracing), so the
worker's run continues the submitting request's trace."""

from __future__ import annotations

from dataclasses import dataclass, field

from redis.asyncio import Redis
from redis.exceptions import ResponseError

from sophia_chassis.tracing import producing

STREAM = "agents:tasks"
GROUP = "workers"


@dataclass
class Delivery:
    entry_id: str
    task_id: str
    reclaimed: bool
    fields: dict[str, str] = field(default_factory=dict)  # the entry's, trace context included


class TaskQueue:
    def __init__(
        self, redis: Redis, *, visibility_timeout_seconds: float = 60.0, stream: str = STREAM, group: str = GROUP
    ):
        self.redis, self.stream, self.group = redis, stream, group
        self.visibility_ms = int(visibility_timeout_seconds * 1000)

    async def ensure_group(self) -> None:
        try:
            await self.redis.xgroup_create(self.stream, self.group, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    async def enqueue(self, task_id: str) -> str:
        with producing(self.stream) as context:
            entry = await self.redis.xadd(self.stream, {**context, "task_id": task_id})
        return entry.decode() if isinstance(entry, bytes) else entry

    async def next(self, consumer: str, block_ms: int = 1000) -> Delivery | None:
        """A task for `consumer`: first one abandoned by a dead worker, else a new one."""
        try:
            _, claimed, _ = await self.redis.xautoclaim(
                self.stream, self.group, consumer, min_idle_time=self.visibility_ms, start_id="0-0", count=1
            )
            if claimed:
                return self._delivery(claimed[0], reclaimed=True)
            read = await self.redis.xreadgroup(self.group, consumer, {self.stream: ">"}, count=1, block=block_ms)
        except ResponseError as exc:
            if "NOGROUP" not in str(exc):
                raise
            await self.ensure_group()  # the stream was evicted or deleted: recreate and carry on
            return None
        if not read:
            return None
        return self._delivery(read[0][1][0], reclaimed=False)

    @staticmethod
    def _delivery(entry, *, reclaimed: bool) -> Delivery:
        entry_id, fields = entry

        def decode(v):
            return v.decode() if isinstance(v, bytes) else v

        decoded = {decode(k): decode(v) for k, v in fields.items()}
        return Delivery(decode(entry_id), decoded.get("task_id"), reclaimed, decoded)

    async def heartbeat(self, consumer: str, entry_id: str) -> None:
        await self.redis.xclaim(self.stream, self.group, consumer, min_idle_time=0, message_ids=[entry_id], justid=True)

    async def ack(self, entry_id: str) -> None:
        async with self.redis.pipeline(transaction=True) as pipe:
            await pipe.xack(self.stream, self.group, entry_id).xdel(self.stream, entry_id).execute()

    async def pending(self) -> int:
        info = await self.redis.xpending(self.stream, self.group)
        return int(info["pending"])
