"""mcp-agents: accepts agent tasks, queues them on a Redis Stream shared by every replica's
workers, runs a tool-using loop over the MCP services through agno-coordinator, keeps
task state and results in PostgreSQL and streams progress as server-sent events.

Run with `uvicorn --factory mcp_agents.main:build_app`."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import uuid
from collections.abc import Callable
from typing import Annotated, Any

from fastapi import Depends, FastAPI, Header, Request, Response
from fastapi.responses import JSONResponse, StreamingResponse
from prometheus_client import Counter, Histogram
from pydantic import BaseModel, ConfigDict, Field, StringConstraints
from redis.asyncio import Redis

from mcp_agents.catalogue import ToolCatalogue
from mcp_agents.loop import ModelClient, Outcome, run_agent
from mcp_agents.queue import TaskQueue
from mcp_agents.settings import Settings
from mcp_agents.store import TERMINAL, IdempotencyConflict, Task, TaskStore
from mcp_agents.tools import Toolbox, list_tools
from mcp_agents.worker import Worker, requeue_lost
from sophia_chassis import create_app
from sophia_chassis.auth import Identity, ServiceCredentials, require
from sophia_chassis.inputs import FiniteFloat, Text
from sophia_chassis.problems import problem
from sophia_chassis.rotation import RotatedCredential, psycopg_connection_class, redis_connection_class

SSE_POLL_SECONDS = 0.2
SSE_KEEPALIVE_POLLS = 75  # a comment line every 15 s keeps proxies from closing an idle stream


class TaskIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    goal: Text(20_000, min_length=1) = Field(description="what the agent should find out or do")
    max_steps: int | None = Field(None, ge=1, le=25, description="model calls allowed (default 8)")
    time_limit_seconds: FiniteFloat | None = Field(None, gt=0, le=600, description="wall-clock limit (default 120)")


# Visible ASCII: the key is stored and compared as sent, and echoed in problems.
IdempotencyKey = Annotated[str, StringConstraints(pattern=r"^[\x21-\x7e]{1,200}$")]
EventSeq = Annotated[int, Field(ge=0, le=2**31 - 1)]  # PostgreSQL int


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    # Rotated credentials are read from the secret files at each new connection (no restart).
    redis = Redis.from_url(
        settings.redis_url,
        password=settings.redis_password,
        connection_class=redis_connection_class(RotatedCredential(("REDIS_PASSWORD",))),
    )
    store = TaskStore(
        settings.conninfo(),
        wait_seconds=settings.database_wait_seconds,
        connection_class=psycopg_connection_class(RotatedCredential(("PGUSER", "PGPASSWORD"))),
    )
    queue = TaskQueue(redis, visibility_timeout_seconds=settings.visibility_timeout_seconds)
    credentials = ServiceCredentials(settings.service_tokens_dir)
    model = ModelClient(
        f"{settings.agno_coordinator_url}",
        lambda tenant: credentials.headers("agno-coordinator", tenant),
        timeout=settings.model_timeout_seconds,
    )

    def headers_for(tenant: str) -> Callable[[str], dict[str, str]]:
        # The MCP servers are named by their part after "mcp-" (context, github, hubspot).
        return lambda server: credentials.headers(f"mcp-{server}", tenant)

    def toolbox(tenant: str) -> Toolbox:
        return Toolbox(settings.mcp_servers(), headers=headers_for(tenant))

    catalogue = ToolCatalogue(
        lambda tenant: list_tools(settings.mcp_servers(), headers_for(tenant)),
        max_age=settings.tools_listing_max_age_seconds,
    )

    running: list[asyncio.Task] = []

    async def run(task: Task, emit) -> Outcome:
        async with toolbox(task.tenant) as tools:
            if tools.unavailable:
                await emit("tools_unavailable", tools.unavailable)
            for name in tools.tools:
                tool_calls.labels(name, "offered")  # a labelled zero shows the tool exists
            return await run_agent(
                task.goal, model.acting_for(task.tenant), _Counted(tools), emit, max_steps=task.max_steps
            )

    async def start() -> None:
        await store.open()
        await queue.ensure_group()
        # Unique per process start: a restarted pod must not inherit a dead consumer's name.
        host = f"{socket.gethostname()}-{os.getpid()}-{uuid.uuid4().hex[:6]}"
        for n in range(settings.workers):
            worker = Worker(
                f"{host}-{n}",
                store,
                queue,
                run,
                max_attempts=settings.max_attempts,
                on_finished=lambda outcome, seconds: (tasks_total.labels(outcome).inc(), task_seconds.observe(seconds)),
            )
            running.append(asyncio.create_task(worker.run_forever(), name=worker.name))
        running.append(asyncio.create_task(requeue_lost(store, queue, settings.visibility_timeout_seconds)))

    async def stop() -> None:
        # Unfinished tasks stay unacknowledged in the stream: another replica re-claims them.
        for job in running:
            job.cancel()
        await asyncio.gather(*running, return_exceptions=True)
        await catalogue.close()
        await store.close()
        await model.aclose()
        await redis.aclose()

    async def redis_ready() -> bool:
        return bool(await redis.ping())

    # Tasks are recorded in PostgreSQL first: without Redis a submission still succeeds (requeue_lost
    # queues it once Redis is back) and the workers wait, so a Redis restart must not empty the Service.
    app = create_app(
        settings,
        readiness={"postgres": store.ping},
        degraded={"redis": redis_ready},
        on_startup=[start],
        on_shutdown=[stop],
    )
    registry = app.state.registry
    tasks_total = Counter("agents_tasks_total", "Agent tasks finished, by outcome", ["outcome"], registry=registry)
    submitted_total = Counter(
        "agents_tasks_submitted_total",
        "Task submissions, by whether they created a task",
        ["created"],
        registry=registry,
    )
    task_seconds = Histogram(
        "agents_task_duration_seconds",
        "Time from a worker taking a task to its outcome",
        buckets=(0.5, 1, 2.5, 5, 10, 30, 60, 120, 300, 600),
        registry=registry,
    )
    tool_calls = Counter(
        "agents_tool_calls_total",
        "MCP tool calls made by agents, by tool and outcome",
        ["tool", "outcome"],
        registry=registry,
    )

    class _Counted:
        def __init__(self, toolbox: Toolbox):
            self.toolbox = toolbox

        def openai_tools(self) -> list[dict[str, Any]]:
            return self.toolbox.openai_tools()

        async def call(self, name: str, arguments: dict[str, Any]) -> str:
            try:
                output = await self.toolbox.call(name, arguments)
            except Exception:
                tool_calls.labels(name, "error").inc()
                raise
            tool_calls.labels(name, "ok").inc()
            return output

    @app.post("/agents/tasks", status_code=202)
    async def submit(
        body: TaskIn,
        response: Response,
        idempotency_key: Annotated[IdempotencyKey | None, Header()] = None,
        who: Identity = Depends(require("agents:write")),
    ) -> dict[str, Any]:
        """Queue a task. The same `Idempotency-Key` returns the first task instead of a second one."""
        try:
            task, created = await store.submit(
                who.tenant,
                body.goal,
                body.max_steps or settings.default_max_steps,
                body.time_limit_seconds or settings.default_time_limit_seconds,
                idempotency_key,
            )
        except IdempotencyConflict as exc:
            return problem(409, "Idempotency key reused", str(exc))
        submitted_total.labels(str(created).lower()).inc()
        response.headers["Location"] = f"/agents/tasks/{task.id}"
        if created:
            await store.event(task.id, "queued", {"goal": task.goal})
            # Recorded in PostgreSQL: requeue_lost queues it once Redis is back.
            with contextlib.suppress(Exception):
                await queue.enqueue(task.id)
        else:
            response.status_code = 200
        return task.public()

    @app.get("/agents/tasks/{task_id}")
    async def get_task(task_id: str, who: Identity = Depends(require("agents:read"))):
        task = await store.get(task_id, who.tenant)
        if task is None:
            return problem(404, "No such task", f"no task {task_id!r}")
        return task.public()

    @app.get("/agents/tasks/{task_id}/events")
    async def events(
        task_id: str,
        request: Request,
        last_event_id: Annotated[EventSeq, Header()] = 0,
        who: Identity = Depends(require("agents:read")),
    ):
        """Progress as server-sent events (`id` is the event's sequence number, so a client
        reconnecting with Last-Event-ID resumes); the stream ends after the outcome."""
        if await store.get(task_id, who.tenant) is None:
            return problem(404, "No such task", f"no task {task_id!r}")

        async def stream():
            seq, idle = last_event_id, 0
            while not await request.is_disconnected():
                batch = await store.events_after(task_id, seq)
                for event in batch:
                    seq = event["seq"]
                    yield f"id: {seq}\nevent: {event['kind']}\ndata: {json.dumps(event)}\n\n"
                    if event["kind"] in TERMINAL:
                        return
                if batch:
                    idle = 0
                    continue
                idle += 1
                if idle % SSE_KEEPALIVE_POLLS == 0:
                    yield ": keep-alive\n\n"
                await asyncio.sleep(SSE_POLL_SECONDS)

        return StreamingResponse(
            stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"}
        )

    @app.get("/agents/tools")
    async def tools(who: Identity = Depends(require("agents:read"))) -> JSONResponse:
        """The tools an agent would be offered, and the MCP servers that could not be reached: as
        listed at most `TOOLS_LISTING_MAX_AGE_SECONDS` (30) ago, relisted in the background."""
        return JSONResponse(await catalogue.get(who.tenant))

    return app
