"""mcp-agents through real uvicorn servers: a real PostgreSQL and redis-server, a real
mcp-context as the MCP peer, and the fake OpenAI-compatible server standing in for
agno-coordinator with scripted tool calls."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from mcp_agents.main import Settings, build_app
from mcp_context.main import Settings as ContextSettings
from mcp_context.main import build_app as build_context
from sophia_testing.openai_chat_fake import FakeChat, Reply, build_fake_chat
from sophia_testing.servers import serve


@pytest.fixture(scope="module")
def context_url(redis_root: str) -> Iterator[str]:
    with serve(
        build_context(
            ContextSettings(redis_url=redis_root, embedding_provider="local", qdrant_collection="agents-tests")
        )
    ) as url:
        httpx.post(
            f"{url}/memories/batch",
            json=[
                {"text": "Acme Corp renews its contract in March and prefers email.", "namespace": "crm"},
                {"text": "The staging cluster runs on two GPU nodes.", "namespace": "ops"},
            ],
        ).raise_for_status()
        yield url


@pytest.fixture
def model() -> Iterator[tuple[FakeChat, str]]:
    fake = FakeChat(api_key=None, models=("auto",))
    with serve(build_fake_chat(fake)) as url:
        yield fake, url


def agents_settings(
    database_url: str, redis_url: str, coordinator: str, context: str | None, **overrides: Any
) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        agno_coordinator_url=coordinator,
        mcp_context_url=context,
        mcp_github_url=None,
        mcp_hubspot_url=None,
        model_timeout_seconds=10,
        **overrides,
    )


def wait_for(url: str, task_id: str, states: tuple[str, ...] = ("succeeded", "failed"), timeout: float = 60) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = httpx.get(f"{url}/agents/tasks/{task_id}").json()
        if task["state"] in states:
            return task
        time.sleep(0.05)
    raise AssertionError(f"task {task_id} still {task['state']}")


def sse_events(url: str, last_event_id: int | None = None) -> list[dict[str, Any]]:
    headers = {"Last-Event-ID": str(last_event_id)} if last_event_id is not None else {}
    events = []
    with httpx.stream("GET", url, headers=headers, timeout=20) as response:
        assert response.headers["content-type"].startswith("text/event-stream")
        for line in response.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[6:]))
    return events


def test_a_task_runs_the_tool_loop_over_mcp_and_streams_progress(database_url, redis_url, context_url, model) -> None:
    fake, coordinator = model
    fake.script(
        "auto",
        Reply(tool_calls=[("context__search_memories", {"query": "When does Acme renew?"})]),
        Reply(content="Acme renews in March (from the CRM memory)."),
    )
    with serve(build_app(agents_settings(database_url, redis_url, coordinator, context_url))) as url:
        tools = httpx.get(f"{url}/agents/tools").json()
        assert {t["name"] for t in tools["tools"]} >= {"context__search_memories", "context__store_memory"}

        submitted = httpx.post(
            f"{url}/agents/tasks", json={"goal": "When does Acme renew?"}, headers={"Idempotency-Key": "acme-1"}
        )
        assert submitted.status_code == 202 and submitted.headers["location"].endswith(submitted.json()["id"])
        task_id = submitted.json()["id"]
        events = sse_events(f"{url}/agents/tasks/{task_id}/events")
        task = wait_for(url, task_id)
        assert task["state"] == "succeeded" and task["result"] == "Acme renews in March (from the CRM memory)."
        assert task["steps"] == 2 and task["attempts"] == 1

        assert [e["kind"] for e in events] == ["queued", "started", "tool_call", "tool_result", "answer", "succeeded"]
        assert events[3]["data"]["ok"] and "March" in events[3]["data"]["output"]
        # The model really received the tool's answer from mcp-context, and was offered the tools.
        second = fake.requests[1]["body"]
        assert second["model"] == "auto" and any(
            t["function"]["name"] == "context__search_memories" for t in second["tools"]
        )
        tool_message = next(m for m in second["messages"] if m["role"] == "tool")
        assert "renews its contract in March" in tool_message["content"]

        # Resuming the stream after event 4 replays only what came after it.
        resumed = sse_events(f"{url}/agents/tasks/{task_id}/events", last_event_id=4)
        assert [e["seq"] for e in resumed] == [5, 6]

        # Same key, same body: the same task, not a second run.
        again = httpx.post(
            f"{url}/agents/tasks", json={"goal": "When does Acme renew?"}, headers={"Idempotency-Key": "acme-1"}
        )
        assert again.status_code == 200 and again.json()["id"] == task_id and len(fake.requests) == 2
        conflict = httpx.post(
            f"{url}/agents/tasks", json={"goal": "Something else"}, headers={"Idempotency-Key": "acme-1"}
        )
        assert conflict.status_code == 409 and "Idempotency-Key" in conflict.json()["detail"]

        metrics = httpx.get(f"{url}/metrics").text
        assert 'agents_tasks_total{outcome="succeeded"} 1.0' in metrics
        assert 'agents_tool_calls_total{outcome="ok",tool="context__search_memories"} 1.0' in metrics
        assert httpx.get(f"{url}/readyz").status_code == 200
        assert httpx.get(f"{url}/agents/tasks/00000000-0000-0000-0000-000000000000").status_code == 404


def answered(url: str) -> float:
    """The requests the service at `url` has answered, but for its own /metrics (for mcp-context: the
    MCP exchanges of every session opened to it)."""
    families = text_string_to_metric_families(httpx.get(f"{url}/metrics").text)
    return sum(
        sample.value
        for family in families
        if family.name == "http_requests"
        for sample in family.samples
        if sample.name == "http_requests_total" and sample.labels["route"] != "/metrics"
    )


def test_the_tool_listing_is_kept_and_relisted_behind_the_answer(database_url, redis_url, context_url, model) -> None:
    """GET /agents/tools opens sessions to the MCP servers for a tenant's first request only; once the
    listing is older than its max age, a request is answered the kept one at once and the servers are
    listed again in the background."""
    _, coordinator = model
    for max_age in (3600.0, 0.0):
        settings = agents_settings(
            database_url, redis_url, coordinator, context_url, tools_listing_max_age_seconds=max_age
        )
        with serve(build_app(settings)) as url:
            first = httpx.get(f"{url}/agents/tools").json()
            assert {t["name"] for t in first["tools"]} >= {"context__search_memories", "context__store_memory"}
            listed = answered(context_url)
            assert httpx.get(f"{url}/agents/tools").json() == first
            if max_age:
                assert all(httpx.get(f"{url}/agents/tools").json() == first for _ in range(5))
                assert answered(context_url) == listed  # from memory: no session opened
                continue
            deadline = time.monotonic() + 10
            while answered(context_url) == listed and time.monotonic() < deadline:
                time.sleep(0.05)
            assert answered(context_url) > listed  # listed again, behind the answer


def test_limits_end_a_run_with_a_clear_reason(database_url, redis_url, context_url, model) -> None:
    fake, coordinator = model
    # A model that never stops calling tools, and one that is too slow for the time limit.
    fake.responder = lambda body: Reply(tool_calls=[("context__search_memories", {"query": "anything"})])
    with serve(build_app(agents_settings(database_url, redis_url, coordinator, context_url))) as url:
        looping = httpx.post(f"{url}/agents/tasks", json={"goal": "loop forever", "max_steps": 3}).json()
        task = wait_for(url, looping["id"])
        assert task["state"] == "failed" and task["error"] == "step limit reached (3 steps) without an answer"
        assert task["steps"] == 3 and len(fake.requests) == 3

        fake.slow_seconds = 1.2
        fake.fail("auto", "timeout")
        slow = httpx.post(f"{url}/agents/tasks", json={"goal": "be slow", "time_limit_seconds": 0.5}).json()
        task = wait_for(url, slow["id"])
        assert task["state"] == "failed" and task["error"] == "time limit reached (0.5 s)"


def test_a_failing_coordinator_fails_the_task_with_the_reason(database_url, redis_url, model) -> None:
    fake, coordinator = model
    fake.fail("auto", 500, 500, 500, 500)
    settings = agents_settings(database_url, redis_url, coordinator, None)
    with serve(build_app(settings)) as url:
        task_id = httpx.post(f"{url}/agents/tasks", json={"goal": "anything"}).json()["id"]
        task = wait_for(url, task_id)
        assert task["state"] == "failed" and "500" in task["error"]
        assert len(fake.requests) == 2  # the model client's two attempts, then a clear failure


def test_a_task_left_by_a_stopped_replica_is_finished_by_another(database_url, redis_url, model) -> None:
    fake, coordinator = model
    fake.slow_seconds = 2
    fake.fail("auto", "timeout")  # the first replica is mid-call when it stops
    fake.script("auto", Reply(content="finished by the second replica"))
    settings = agents_settings(database_url, redis_url, coordinator, None, workers=1, visibility_timeout_seconds=0.6)
    with serve(build_app(settings)) as first:
        task_id = httpx.post(f"{first}/agents/tasks", json={"goal": "survive a crash"}).json()["id"]
        running = wait_for(first, task_id, states=("running",))
        deadline = time.monotonic() + 5
        while not fake.requests and time.monotonic() < deadline:
            time.sleep(0.02)
    with serve(build_app(settings)) as second:
        task = wait_for(second, task_id, timeout=15)
    assert task["state"] == "succeeded" and task["result"] == "finished by the second replica"
    assert task["attempts"] == 2 and task["worker"] != running["worker"]


def test_replicas_share_the_queue(database_url, redis_url, model) -> None:
    fake, coordinator = model
    fake.responder = lambda body: (time.sleep(0.05), Reply(content="ok"))[1]
    settings = agents_settings(database_url, redis_url, coordinator, None, workers=1)
    with serve(build_app(settings)) as one, serve(build_app(settings)) as two:
        ids = [
            httpx.post(f"{(one, two)[i % 2]}/agents/tasks", json={"goal": f"task {i}"}).json()["id"] for i in range(8)
        ]
        tasks = [wait_for(one, task_id) for task_id in ids]
    assert all(t["state"] == "succeeded" and t["attempts"] == 1 for t in tasks)
    assert len({t["worker"] for t in tasks}) == 2  # both replicas' workers took tasks


def test_a_redis_restart_degrades_but_submissions_succeed(database_url, model) -> None:
    """Redis gone: the pod stays ready (degraded, not out of the Service) and a task submitted
    meanwhile is accepted, recorded in PostgreSQL."""
    from contextlib import ExitStack

    from sophia_testing.datastores import redis_server_at

    _, coordinator = model
    redis_here = ExitStack()
    redis_url = redis_here.enter_context(redis_server_at())
    with redis_here, serve(build_app(agents_settings(database_url, redis_url, coordinator, None))) as url:
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
        redis_here.close()  # the redis-server stops
        ready = httpx.get(f"{url}/readyz")
        assert ready.status_code == 200 and ready.json()["status"] == "degraded", ready.text
        submitted = httpx.post(f"{url}/agents/tasks", json={"goal": "Still there?"}, timeout=30)
        assert submitted.status_code == 202, submitted.text
        assert httpx.get(f"{url}/agents/tasks/{submitted.json()['id']}").json()["state"] == "queued"
