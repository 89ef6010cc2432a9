"""Tenancy with auth on, through real servers: the tenant comes from the caller's identity,
and tenant B can neither read, search, delete nor stream tenant A's data, over REST or MCP.
Service to service: mcp-agents, acting for a tenant, reaches agno-coordinator and mcp-context
with its own projected ServiceAccount token (a real issuer's JWT, audience the callee) and
sees only that tenant's memories; a token for another audience, or from a service the
manifests do not let call, is refused."""

from __future__ import annotations

import asyncio
import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from agno_coordinator.main import Settings as CoordinatorSettings
from agno_coordinator.main import build_app as build_coordinator
from mcp_agents.main import Settings as AgentsSettings
from mcp_agents.main import build_app as build_agents
from mcp_context.main import Settings as ContextSettings
from mcp_context.main import build_app as build_context
from sophia_chassis.auth import issue_key
from sophia_testing.datastores import postgres_server, redis_server_at
from sophia_testing.oidc_issuer import Issuer, running_issuer
from sophia_testing.openai_chat_fake import FakeChat, Reply, build_fake_chat
from sophia_testing.servers import serve

SCOPES = ["context:read", "context:write", "agents:read", "agents:write"]


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, dict]]:
    return {"a": issue_key("tenant-a", SCOPES), "b": issue_key("tenant-b", SCOPES)}


def auth(keys, who: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {keys[who][0]}"}


@pytest.fixture(scope="module")
def cluster() -> Iterator[Issuer]:
    with running_issuer() as issuer:
        yield issuer


def auth_settings(keys, cluster: Issuer, allowed_callers: str) -> dict[str, Any]:
    return {
        "auth_mode": "required",
        "api_keys": json.dumps([entry for _, entry in keys.values()]),
        "service_token_issuer": cluster.url,
        "service_token_jwks_url": cluster.jwks_url,
        "service_token_namespace": "sophia",
        "allowed_callers": allowed_callers,
    }


@pytest.fixture(scope="module")
def context_url(keys, cluster) -> Iterator[str]:
    settings = ContextSettings(
        embedding_provider="local", qdrant_collection="tenancy", **auth_settings(keys, cluster, "mcp-agents")
    )
    with serve(build_context(settings)) as url:
        yield url


def test_memories_are_the_callers_tenants_over_rest(context_url, keys):
    a, b = auth(keys, "a"), auth(keys, "b")
    text = "Tenant A's secret plan: launch the blue product in May."
    # A body naming another tenant is refused: the tenant is the caller's, there is no field for it.
    smuggled = httpx.post(f"{context_url}/memories", json={"text": text, "tenant": "tenant-b"}, headers=a)
    assert smuggled.status_code == 422 and "tenant" in smuggled.text
    created = httpx.post(f"{context_url}/memories", json={"text": text}, headers=a)
    assert created.status_code == 201
    memory_id = created.json()["id"]
    assert httpx.get(f"{context_url}/memories/{memory_id}", headers=a).json()["tenant"] == "tenant-a"

    for namespace in (None, "default"):
        query = {"query": "secret plan blue product", **({"namespace": namespace} if namespace else {})}
        assert httpx.post(f"{context_url}/memories/search", json=query, headers=b).json() == {"results": []}
        found = httpx.post(f"{context_url}/memories/search", json=query, headers=a).json()["results"]
        assert [r["id"] for r in found] == [memory_id]
    assert httpx.get(f"{context_url}/memories/{memory_id}", headers=b).status_code == 404
    assert httpx.delete(f"{context_url}/memories/{memory_id}", headers=b).status_code == 404
    assert httpx.get(f"{context_url}/memories/{memory_id}", headers=a).status_code == 200  # still there
    assert httpx.get(f"{context_url}/memories/{memory_id}").status_code == 401


async def mcp_call(url: str, headers: dict[str, str], tool: str, arguments: dict[str, Any]) -> Any:
    async with create_mcp_http_client(headers=headers) as http:
        async with streamable_http_client(f"{url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1]) as session:
                await session.initialize()
                result = await session.call_tool(tool, arguments)
    if result.is_error:
        return {"error": " ".join(getattr(c, "text", "") for c in result.content)}
    return result.structured_content.get("result", result.structured_content)


def test_memories_are_the_callers_tenants_over_mcp(context_url, keys):
    a, b = auth(keys, "a"), auth(keys, "b")
    stored = asyncio.run(mcp_call(context_url, a, "store_memory", {"text": "Tenant A's MCP note about the red launch"}))
    memory_id = stored["id"]
    hits_b = asyncio.run(
        mcp_call(context_url, b, "search_memories", {"query": "red launch note", "namespace": "default"})
    )
    assert hits_b == []
    assert asyncio.run(mcp_call(context_url, b, "delete_memory", {"memory_id": memory_id})) == {"deleted": False}
    hits_a = asyncio.run(mcp_call(context_url, a, "search_memories", {"query": "red launch note"}))
    assert memory_id in [h["id"] for h in hits_a]


def test_mcp_endpoint_refuses_unauthenticated_and_write_tools_need_the_write_scope(keys, cluster):
    read_only_key, read_only = issue_key("tenant-a", ["context:read"])
    table = [entry for _, entry in keys.values()] + [read_only]
    settings = ContextSettings(
        embedding_provider="local",
        qdrant_collection="tenancy-scopes",
        **(auth_settings(keys, cluster, "") | {"api_keys": json.dumps(table)}),
    )
    with serve(build_context(settings)) as url:
        refused = httpx.post(f"{url}/mcp", json={"jsonrpc": "2.0", "id": 1, "method": "initialize"})
        assert refused.status_code == 401 and refused.headers["content-type"] == "application/problem+json"
        headers = {"Authorization": f"Bearer {read_only_key}"}
        denied = asyncio.run(mcp_call(url, headers, "store_memory", {"text": "should not be stored"}))
        assert "context:write" in denied["error"]
        assert asyncio.run(mcp_call(url, headers, "search_memories", {"query": "anything"})) == []


# --- mcp-agents: tasks and their event streams ------------------------------------------------


@pytest.fixture(scope="module")
def datastores() -> Iterator[tuple[str, str]]:
    with postgres_server() as database, redis_server_at() as redis_url:
        yield database, redis_url


@pytest.fixture(scope="module")
def model() -> Iterator[tuple[FakeChat, str]]:
    fake = FakeChat(api_key="sk-provider", models=("gpt-4.1-mini", "gpt-4.1"))
    with serve(build_fake_chat(fake)) as url:
        yield fake, url


@pytest.fixture(scope="module")
def coordinator_url(model, keys, cluster) -> Iterator[str]:
    _, provider = model
    settings = CoordinatorSettings(
        openai_api_key="sk-provider", openai_base_url=f"{provider}/v1", **auth_settings(keys, cluster, "mcp-agents")
    )
    with serve(build_coordinator(settings)) as url:
        yield url


def tokens_dir(tmp: Path, cluster: Issuer, caller: str, audiences: dict[str, str]) -> str:
    """What the kubelet mounts: one projected token file per callee."""
    tmp.mkdir(parents=True, exist_ok=True)
    for file, audience in audiences.items():
        (tmp / file).write_text(cluster.service_token(caller, audience=audience))
    return str(tmp)


@pytest.fixture(scope="module")
def agents_url(datastores, coordinator_url, context_url, keys, cluster, tmp_path_factory) -> Iterator[str]:
    database, redis_url = datastores
    tokens = tokens_dir(
        tmp_path_factory.mktemp("tokens"),
        cluster,
        "mcp-agents",
        {"agno-coordinator": "agno-coordinator", "mcp-context": "mcp-context"},
    )
    settings = AgentsSettings(
        database_url=database,
        redis_url=redis_url,
        agno_coordinator_url=coordinator_url,
        mcp_context_url=context_url,
        mcp_github_url=None,
        mcp_hubspot_url=None,
        model_timeout_seconds=10,
        service_tokens_dir=tokens,
        **auth_settings(keys, cluster, ""),
    )
    with serve(build_agents(settings)) as url:
        yield url


def wait_for(url: str, headers: dict[str, str], task_id: str, timeout: float = 30) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = httpx.get(f"{url}/agents/tasks/{task_id}", headers=headers).json()
        if task["state"] in ("succeeded", "failed"):
            return task
        time.sleep(0.1)
    raise AssertionError(f"task {task_id} still {task['state']}")


def events_of(url: str, headers: dict[str, str], task_id: str) -> tuple[int, list[dict]]:
    with httpx.stream("GET", f"{url}/agents/tasks/{task_id}/events", headers=headers, timeout=30) as response:
        if response.status_code != 200:
            return response.status_code, []
        lines = [line for line in response.iter_lines() if line.startswith("data: ")]
    return 200, [json.loads(line[len("data: ") :]) for line in lines]


def test_tasks_and_their_streams_are_the_submitting_tenants(agents_url, context_url, model, keys):
    fake, _ = model
    a, b = auth(keys, "a"), auth(keys, "b")
    httpx.post(
        f"{context_url}/memories", json={"text": "Tenant B renews with Initech in June."}, headers=b
    ).raise_for_status()
    httpx.post(
        f"{context_url}/memories", json={"text": "Tenant A renews with Globex in March."}, headers=a
    ).raise_for_status()
    script = [
        Reply(tool_calls=[("context__search_memories", {"query": "Who renews, and when?", "top_k": 10})]),
        Reply(content="Globex renews in March."),
    ]
    fake.responder = lambda body: script.pop(0) if script else Reply(content="done")
    key = f"same-key-{uuid.uuid4().hex[:6]}"
    submitted = httpx.post(
        f"{agents_url}/agents/tasks", json={"goal": "Who renews, and when?"}, headers={**a, "Idempotency-Key": key}
    )
    assert submitted.status_code == 202, submitted.text
    task_id = submitted.json()["id"]
    task = wait_for(agents_url, a, task_id)
    assert task["state"] == "succeeded", task

    # B: the same id is no task, no stream; the same idempotency key is B's own new task.
    assert httpx.get(f"{agents_url}/agents/tasks/{task_id}", headers=b).status_code == 404
    assert events_of(agents_url, b, task_id) == (404, [])
    own = httpx.post(
        f"{agents_url}/agents/tasks", json={"goal": "Who renews, and when?"}, headers={**b, "Idempotency-Key": key}
    )
    assert own.status_code == 202 and own.json()["id"] != task_id

    status, events = events_of(agents_url, a, task_id)
    assert status == 200 and events[-1]["kind"] == "succeeded"
    # The agent searched memories acting for tenant A: A's memory, never B's.
    result = next(e for e in events if e["kind"] == "tool_result")["data"]
    assert result["ok"] and "Globex" in result["output"] and "Initech" not in result["output"]
    assert httpx.get(f"{agents_url}/agents/tasks/{task_id}").status_code == 401


def test_service_tokens_for_another_audience_or_caller_are_refused(
    context_url, coordinator_url, keys, cluster, tmp_path
):
    wrong = tokens_dir(tmp_path / "wrong", cluster, "mcp-agents", {"mcp-context": "mcp-github"})
    stranger = tokens_dir(tmp_path / "stranger", cluster, "mcp-hubspot", {"mcp-context": "mcp-context"})
    right = tokens_dir(tmp_path / "right", cluster, "mcp-agents", {"mcp-context": "mcp-context"})
    from sophia_chassis.auth import ServiceCredentials

    for folder, status in ((wrong, 401), (stranger, 403), (right, 200)):
        headers = ServiceCredentials(folder).headers("mcp-context", "tenant-a")
        answer = httpx.post(f"{context_url}/memories/search", json={"query": "renews"}, headers=headers)
        assert answer.status_code == status, answer.text
    # The coordinator's /v1 takes mcp-agents' token for it, and nobody's without one.
    model_headers = ServiceCredentials(
        tokens_dir(tmp_path / "model", cluster, "mcp-agents", {"agno-coordinator": "agno-coordinator"})
    ).headers("agno-coordinator", "tenant-a")
    assert httpx.get(f"{coordinator_url}/v1/models", headers=model_headers).status_code == 200
    assert httpx.get(f"{coordinator_url}/v1/models").status_code == 401
    assert httpx.get(f"{coordinator_url}/v1/models", headers=auth(keys, "a")).status_code == 403  # no models:use
