"""End to end, every hop real except the outside world: mcp-agents -> agno-coordinator
(routing to a fake OpenAI-compatible provider scripting the tool calls) -> mcp-github
(against a fake GitHub) -> mcp-context (real redis-server, embedded Qdrant), with task
state in a real PostgreSQL. The agent indexes a repository, searches it semantically and
answers from what it found. Once in-process, once with each service in its own process
exporting its spans over OTLP/HTTP, to check that one trace joins the four services."""

from __future__ import annotations

import json
import secrets
import time
from pathlib import Path

import httpx

from agno_coordinator.main import Settings as CoordinatorSettings
from agno_coordinator.main import build_app as build_coordinator
from mcp_agents.main import Settings as AgentsSettings
from mcp_agents.main import build_app as build_agents
from mcp_context.main import Settings as ContextSettings
from mcp_context.main import build_app as build_context
from mcp_github.main import Settings as GitHubSettings
from mcp_github.main import build_app as build_github
from sophia_testing.datastores import postgres_server, redis_server_at
from sophia_testing.github_fake import TOKEN, FakeGitHub, build_fake_github
from sophia_testing.openai_chat_fake import FakeChat, Reply, build_fake_chat
from sophia_testing.otlp_receiver import OtlpReceiver, ReceivedSpan, build_otlp_receiver, service_hops
from sophia_testing.servers import serve, serve_processes

REPO = {
    "README.md": "# Billing\nComputes invoices for every customer at the end of the month.\n",
    "src/billing/retry.py": "def backoff(attempt):\n    # exponential backoff with jitter for flaky payment gateways\n"
    "    return min(30, 2 ** attempt)\n",
    "src/billing/invoice.py": "class Invoice:\n    def total(self):\n        return sum(l.cents for l in self.lines)\n",
}
QUESTION = "How does the billing service retry a flaky payment gateway?"
ANSWER = "It backs off exponentially, capped at 30 s (src/billing/retry.py)."


def scripted_upstreams() -> tuple[FakeChat, FakeGitHub]:
    # The packaged model table's OpenAI models; `auto` routes to the cheapest that fits.
    provider = FakeChat(api_key="sk-integration", models=("gpt-4.1-mini", "gpt-4.1"))
    # What a model would do: index the repository, search it, answer.
    script = [
        Reply(tool_calls=[("github__index_repository", {"owner": "acme", "repo": "billing"})]),
        Reply(tool_calls=[("context__search_memories", {"query": "retry a flaky payment gateway", "top_k": 3})]),
        Reply(content=ANSWER),
    ]
    provider.responder = lambda body: script.pop(0)
    github = FakeGitHub(orgs={"acme"})
    github.add_repo("acme", "billing", REPO)
    return provider, github


def wait_for_outcome(agents: str, task_id: str) -> dict:
    deadline = time.monotonic() + 60
    while (task := httpx.get(f"{agents}/agents/tasks/{task_id}").json())["state"] not in ("succeeded", "failed"):
        assert time.monotonic() < deadline, task
        time.sleep(0.1)
    return task


def test_an_agent_indexes_a_repository_and_answers_from_it() -> None:
    provider, github = scripted_upstreams()

    with (
        postgres_server() as database,
        redis_server_at() as redis_url,
        serve(build_fake_chat(provider)) as provider_url,
        serve(build_fake_github(github)) as github_url,
        serve(
            build_context(
                ContextSettings(redis_url=redis_url, embedding_provider="local", qdrant_collection="integration")
            )
        ) as context_url,
        serve(
            build_github(
                GitHubSettings(
                    github_token=TOKEN, github_api_url=github_url, mcp_context_url=context_url, redis_url=redis_url
                )
            )
        ) as github_svc,
        serve(
            build_coordinator(
                CoordinatorSettings(openai_api_key="sk-integration", openai_base_url=f"{provider_url}/v1")
            )
        ) as coordinator,
        serve(
            build_agents(
                AgentsSettings(
                    database_url=database,
                    redis_url=redis_url,
                    agno_coordinator_url=coordinator,
                    mcp_context_url=context_url,
                    mcp_github_url=github_svc,
                    mcp_hubspot_url=None,
                )
            )
        ) as agents,
    ):
        task_id = httpx.post(
            f"{agents}/agents/tasks", json={"goal": QUESTION}, headers={"Idempotency-Key": "integration-1"}
        ).json()["id"]
        task = wait_for_outcome(agents, task_id)
        coordinator_metrics = httpx.get(f"{coordinator}/metrics").text

    assert task["state"] == "succeeded", task["error"]
    assert task["result"] == ANSWER and task["steps"] == 3
    # Every model call went through the coordinator to the provider, with the MCP tools offered.
    assert len(provider.requests) == 3
    offered = {t["function"]["name"] for t in provider.requests[0]["body"]["tools"]}
    assert {"github__index_repository", "github__get_file", "context__search_memories"} <= offered
    # mcp-github really walked the repository on (fake) GitHub ...
    assert any("/git/trees/" in path for _, path, _ in github.requests)
    # ... and the search the model asked for found the indexed file in mcp-context.
    tool_results = [m["content"] for m in provider.requests[2]["body"]["messages"] if m["role"] == "tool"]
    indexed, found = json.loads(tool_results[0]), tool_results[1]
    assert (indexed["status"], indexed["files_sent"], indexed["repository"]) == ("indexed", 3, "acme/billing")
    assert "exponential backoff with jitter" in found and "src/billing/retry.py" in found
    assert "coordinator_requests_total{" in coordinator_metrics and 'provider="openai"' in coordinator_metrics


FLOW = ("mcp-agents", "agno-coordinator", "mcp-github", "mcp-context")


def test_one_trace_spans_the_four_services_of_the_agent_flow(tmp_path: Path) -> None:
    """Each service in its own process, as deployed, exporting over OTLP/HTTP to a receiver that
    decodes the protobuf: the client's trace runs through the HTTP hops, the Redis Stream and the
    MCP calls, with every span's parent in the trace, and every service's log lines carry it."""
    provider, github = scripted_upstreams()
    receiver = OtlpReceiver()
    trace_id, client_span = secrets.token_hex(16), secrets.token_hex(8)
    (tmp_path / "secrets").mkdir()
    with (
        postgres_server() as database,
        redis_server_at() as redis_url,
        serve(build_fake_chat(provider)) as provider_url,
        serve(build_fake_github(github)) as github_url,
        serve(build_otlp_receiver(receiver)) as collector,
    ):
        common = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": collector,
            "OTEL_BSP_SCHEDULE_DELAY": "200",  # export every 0.2 s, not 5 s: the test waits less
            "TRACE_SAMPLE_RATIO": "0.5",  # the caller's sampled flag decides, not the ratio
            "SOPHIA_SECRETS_DIR": str(tmp_path / "secrets"),
            "REDIS_URL": redis_url,
        }
        services = {
            "mcp-context": {**common, "EMBEDDING_PROVIDER": "local", "QDRANT_COLLECTION": "traced"},
            "mcp-github": {**common, "GITHUB_TOKEN": TOKEN, "GITHUB_API_URL": github_url},
            "agno-coordinator": {
                **common,
                "OPENAI_API_KEY": "sk-integration",
                "OPENAI_BASE_URL": f"{provider_url}/v1",
            },
            "mcp-agents": {**common, "DATABASE_URL": database, "MCP_HUBSPOT_URL": ""},
        }
        with serve_processes(services, tmp_path) as running:
            agents = running["mcp-agents"].url
            submitted = httpx.post(
                f"{agents}/agents/tasks",
                json={"goal": QUESTION},
                headers={"Idempotency-Key": "traced-1", "traceparent": f"00-{trace_id}-{client_span}-01"},
            )
            task = wait_for_outcome(agents, submitted.json()["id"])
            assert task["state"] == "succeeded", task["error"]
            deadline = time.monotonic() + 20
            while not {s.service for s in receiver.trace(trace_id) if s.kind == "server"} >= set(FLOW):
                assert time.monotonic() < deadline, sorted({(s.service, s.name) for s in receiver.trace(trace_id)})
                time.sleep(0.2)
        # Stopped (SIGTERM): each flushed what it still held at shutdown.
        spans = receiver.trace(trace_id)
        logs = {name: service.log_lines() for name, service in running.items()}

    by_id = {s.span_id: s for s in spans}
    assert len(by_id) == len(spans), "a span id was reused"
    # One root: the client's span, which the submit request continued.
    (entry,) = [s for s in spans if s.parent_span_id not in by_id]
    assert (entry.service, entry.kind, entry.parent_span_id) == ("mcp-agents", "server", client_span)

    def ancestors(span: ReceivedSpan) -> list[ReceivedSpan]:
        chain = []
        while span.parent_span_id in by_id:
            span = by_id[span.parent_span_id]
            chain.append(span)
        return chain

    def one(service: str, kind: str, name: str) -> ReceivedSpan:
        found = [s for s in spans if (s.service, s.kind, s.name) == (service, kind, name)]
        assert found, f"no {kind} span {name!r} of {service}: {sorted({(s.service, s.kind, s.name) for s in spans})}"
        return found[0]

    # The queue hop: the worker's run is a child of the message the submit request sent.
    send = one("mcp-agents", "producer", "send agents:tasks")
    process = one("mcp-agents", "consumer", "process agents:tasks")
    assert send.parent_span_id == entry.span_id and process.parent_span_id == send.span_id
    assert process.attributes["sophia.task.id"] == task["id"]
    # Every hop into another service: a server span whose parent is the caller's client span, and
    # whose ancestry runs back through the worker's run to the submit request.
    hops = set()
    for parent, span in service_hops(spans):
        assert process in ancestors(span), span
        hops.add((parent.service, span.service))
    assert {("mcp-agents", "agno-coordinator"), ("mcp-agents", "mcp-github"), ("mcp-github", "mcp-context")} <= hops
    assert {("mcp-agents", "mcp-context")} <= hops  # the search_memories tool call
    # The tool call the model asked for, and the batch it made mcp-github send to mcp-context.
    tool_call = one("mcp-github", "server", "tools/call index_repository")
    batch = [s for s in spans if s.service == "mcp-context" and s.attributes.get("http.route") == "/memories/batch"]
    assert batch and all(tool_call in ancestors(s) for s in batch)
    # The data stores' spans sit in the trace too: Redis (the stream, the caches) and PostgreSQL.
    systems = {(s.service, s.attributes.get("db.system.name", s.attributes.get("db.system"))) for s in spans}
    assert {("mcp-agents", "redis"), ("mcp-agents", "postgresql"), ("mcp-context", "redis")} <= systems, systems

    # Every service's log lines of this work carry the trace id, beside a request id.
    for name in FLOW:
        traced = [line for line in logs[name] if line.get("trace_id") == trace_id]
        assert traced, f"no log line of {name} carries trace {trace_id}"
        assert all(line.get("request_id") and line.get("span_id") in by_id for line in traced), traced
    finished = [line for line in logs["mcp-agents"] if line.get("event") == "task_finished"]
    assert finished and finished[0]["trace_id"] == trace_id and finished[0]["span_id"] == process.span_id
