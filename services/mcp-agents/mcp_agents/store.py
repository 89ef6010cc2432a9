"""Task records and their progress events in PostgreSQL: the source of truth.

Redis only distributes work (the platform's Redis is an LRU cache that may evict), so
what a client submitted, its state and its result live here. Connections go through
PgBouncer in transaction mode, hence no server-side prepared statements."""

from __future__ import annotations

import hashlib
import json
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import psycopg
from psycopg.rows import dict_row
from psycopg.types.json import Jsonb
from psycopg_pool import AsyncConnectionPool

from sophia_chassis.problems import DependencyUnavailable

SCHEMA = """
CREATE TABLE IF NOT EXISTS agent_tasks (
    id uuid PRIMARY KEY,
    tenant text NOT NULL,
    client_key text,
    request_hash text NOT NULL,
    goal text NOT NULL,
    max_steps int NOT NULL,
    time_limit_seconds double precision NOT NULL,
    state text NOT NULL DEFAULT 'queued',
    attempts int NOT NULL DEFAULT 0,
    worker text,
    result text,
    error text,
    steps int NOT NULL DEFAULT 0,
    created_at timestamptz NOT NULL DEFAULT now(),
    updated_at timestamptz NOT NULL DEFAULT now()
);
CREATE TABLE IF NOT EXISTS agent_task_events (
    task_id uuid NOT NULL REFERENCES agent_tasks(id) ON DELETE CASCADE,
    seq int NOT NULL,
    kind text NOT NULL,
    data jsonb NOT NULL,
    at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (task_id, seq)
);
-- Tenancy (added later): a task belongs to its submitter's tenant; idempotency keys are per tenant.
ALTER TABLE agent_tasks ADD COLUMN IF NOT EXISTS tenant text NOT NULL DEFAULT 'default';
ALTER TABLE agent_tasks ALTER COLUMN tenant DROP DEFAULT;
ALTER TABLE agent_tasks DROP CONSTRAINT IF EXISTS agent_tasks_client_key_key;
CREATE UNIQUE INDEX IF NOT EXISTS agent_tasks_tenant_client_key ON agent_tasks (tenant, client_key);
CREATE INDEX IF NOT EXISTS agent_tasks_queued ON agent_tasks (updated_at) WHERE state IN ('queued', 'running');
"""

TERMINAL = ("succeeded", "failed")


class IdempotencyConflict(ValueError):
    """The same client key was used before for a different request."""


@dataclass
class Task:
    id: str
    tenant: str
    goal: str
    max_steps: int
    time_limit_seconds: float
    state: str
    attempts: int
    worker: str | None
    result: str | None
    error: str | None
    steps: int
    client_key: str | None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Task:
        return cls(
            str(row["id"]),
            row["tenant"],
            row["goal"],
            row["max_steps"],
            row["time_limit_seconds"],
            row["state"],
            row["attempts"],
            row["worker"],
            row["result"],
            row["error"],
            row["steps"],
            row["client_key"],
            row["created_at"],
            row["updated_at"],
        )

    def public(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "goal": self.goal,
            "state": self.state,
            "result": self.result,
            "error": self.error,
            "steps": self.steps,
            "attempts": self.attempts,
            "worker": self.worker,
            "limits": {"max_steps": self.max_steps, "time_limit_seconds": self.time_limit_seconds},
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


def request_hash(goal: str, max_steps: int, time_limit_seconds: float) -> str:
    return hashlib.sha256(json.dumps([goal, max_steps, time_limit_seconds]).encode()).hexdigest()


class TaskStore:
    """PostgreSQL down is a DependencyUnavailable (503 + Retry-After) within `wait_seconds`,
    not a 30 s hang and a 500; when it is back the next request gets a connection at once."""

    def __init__(
        self,
        conninfo: str,
        *,
        min_size: int = 1,
        max_size: int = 5,
        wait_seconds: float = 3.0,
        connect_timeout: int = 3,
        connection_class: type[psycopg.AsyncConnection] = psycopg.AsyncConnection,
        **connect_kwargs: Any,
    ):
        self.wait_seconds = wait_seconds
        self.pool = AsyncConnectionPool(
            conninfo,
            min_size=min_size,
            max_size=max_size,
            open=False,
            # sophia_chassis.rotation's: each new connection logs in with the secret files' login.
            connection_class=connection_class,
            timeout=wait_seconds,  # the longest a request waits for a connection
            # A connection broken by a restart is found (and replaced) before it is handed out.
            check=AsyncConnectionPool.check_connection,
            # The pool's reconnect backoff doubles up to this, then starts over from the next
            # request: the default (5 min) left a recovered database unused for tens of seconds.
            reconnect_timeout=wait_seconds,
            kwargs={"prepare_threshold": None, "row_factory": dict_row, "connect_timeout": connect_timeout}
            | connect_kwargs,
        )

    @asynccontextmanager
    async def connection(self) -> AsyncIterator[psycopg.AsyncConnection]:
        try:
            async with self.pool.connection() as conn:
                yield conn
        except (psycopg.OperationalError, psycopg.InterfaceError) as exc:  # PoolTimeout is one too
            raise DependencyUnavailable("PostgreSQL", f"{type(exc).__name__}: {exc}"[:300], self.wait_seconds) from exc

    async def open(self) -> None:
        await self.pool.open(wait=True, timeout=15)
        async with self.connection() as conn:
            # Replicas start together: one migrates, the others wait on the lock.
            await conn.execute("SELECT pg_advisory_xact_lock(hashtext('agent_tasks_schema'))")
            await conn.execute(SCHEMA)

    async def close(self) -> None:
        await self.pool.close()

    async def ping(self) -> bool:
        async with self.connection() as conn:
            await conn.execute("SELECT 1")
        return True

    async def submit(
        self, tenant: str, goal: str, max_steps: int, time_limit_seconds: float, client_key: str | None
    ) -> tuple[Task, bool]:
        """The task, and whether it was created now (False: the tenant's earlier task with that client key)."""
        digest = request_hash(goal, max_steps, time_limit_seconds)
        async with self.connection() as conn:
            row = await (
                await conn.execute(
                    "INSERT INTO agent_tasks (id, tenant, client_key, request_hash, goal, max_steps, time_limit_seconds) "
                    "VALUES (%s, %s, %s, %s, %s, %s, %s) ON CONFLICT (tenant, client_key) DO NOTHING RETURNING *",
                    (uuid.uuid4(), tenant, client_key, digest, goal, max_steps, time_limit_seconds),
                )
            ).fetchone()
            if row:
                return Task.from_row(row), True
            row = await (
                await conn.execute(
                    "SELECT * FROM agent_tasks WHERE tenant = %s AND client_key = %s", (tenant, client_key)
                )
            ).fetchone()
        if row["request_hash"] != digest:
            raise IdempotencyConflict(
                f"Idempotency-Key {client_key!r} was used for a different task; use a new key for a new task"
            )
        return Task.from_row(row), False

    async def get(self, task_id: str, tenant: str | None = None) -> Task | None:
        """A task by id; with `tenant` (every request on behalf of a caller), only that tenant's:
        another tenant's task is as absent as one that never existed. Without: the workers' view."""
        try:
            uuid.UUID(task_id)
        except ValueError:
            return None
        async with self.connection() as conn:
            row = await (await conn.execute("SELECT * FROM agent_tasks WHERE id = %s", (task_id,))).fetchone()
        if row is None or (tenant is not None and row["tenant"] != tenant):
            return None
        return Task.from_row(row)

    async def start(self, task_id: str, worker: str, abandoned_after_seconds: float) -> Task | None:
        """Mark a task running on `worker`, counting the attempt. None when it is finished or another
        worker is running it (its heartbeat keeps `updated_at` fresh), so a task never runs twice at once."""
        async with self.connection() as conn:
            row = await (
                await conn.execute(
                    "UPDATE agent_tasks SET state = 'running', attempts = attempts + 1, worker = %s, updated_at = now() "
                    "WHERE id = %s AND (state = 'queued' OR (state = 'running' "
                    "AND updated_at < now() - make_interval(secs => %s))) RETURNING *",
                    (worker, task_id, abandoned_after_seconds),
                )
            ).fetchone()
        return Task.from_row(row) if row else None

    async def finish(
        self, task_id: str, *, result: str | None = None, error: str | None = None, steps: int = 0
    ) -> None:
        state = "failed" if error else "succeeded"
        async with self.connection() as conn:
            await conn.execute(
                "UPDATE agent_tasks SET state = %s, result = %s, error = %s, steps = %s, "
                "updated_at = now() WHERE id = %s",
                (state, result, error, steps, task_id),
            )
        await self.event(task_id, state, {"result": result, "error": error, "steps": steps})

    async def stale(self, older_than_seconds: float) -> list[str]:
        """Unfinished tasks untouched for a while: their queue entry may have been evicted from Redis."""
        async with self.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT id FROM agent_tasks WHERE state IN ('queued', 'running') "
                    "AND updated_at < now() - make_interval(secs => %s)",
                    (older_than_seconds,),
                )
            ).fetchall()
        return [str(r["id"]) for r in rows]

    async def touch(self, task_id: str) -> None:
        async with self.connection() as conn:
            await conn.execute("UPDATE agent_tasks SET updated_at = now() WHERE id = %s", (task_id,))

    async def event(self, task_id: str, kind: str, data: dict[str, Any]) -> int:
        async with self.connection() as conn:
            row = await (
                await conn.execute(
                    "INSERT INTO agent_task_events (task_id, seq, kind, data) VALUES (%s, "
                    "(SELECT coalesce(max(seq), 0) + 1 FROM agent_task_events WHERE task_id = %s), %s, %s) RETURNING seq",
                    (task_id, task_id, kind, Jsonb(data)),
                )
            ).fetchone()
        return row["seq"]

    async def events_after(self, task_id: str, seq: int) -> list[dict[str, Any]]:
        async with self.connection() as conn:
            rows = await (
                await conn.execute(
                    "SELECT seq, kind, data, at FROM agent_task_events WHERE task_id = %s AND seq > %s ORDER BY seq",
                    (task_id, seq),
                )
            ).fetchall()
        return [{"seq": r["seq"], "kind": r["kind"], "data": r["data"], "at": r["at"].isoformat()} for r in rows]
