"""End to end, every hop real except the outside world: mcp-agents -> agno-coordinator
(routing to a fake OpenAI-compatible provider scripting the tool calls) -> mcp-github
(against a fake GitHub) -> mcp-context (real redis-server, embedded Qdrant), with task
state in a real PostgreSQL. The agent indexes a repository, searches it semantically and
answers from what it found."""

from __future__ import annotations

import json
import time

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
from sophia_testing.servers import serve

REPO = {
    "README.md": "# Billing\nComputes invoices for every customer at the end of the month.\n",
    "src/billing/retry.py": "def backoff(attempt):\n    # exponential backoff with jitter for flaky payment gateways\n"
    "    return min(30, 2 ** attempt)\n",
    "src/billing/invoice.py": "class Invoice:\n    def total(self):\n        return sum(l.cents for l in self.lines)\n",
}
QUESTION = "How does the billing service retry a flaky payment gateway?"
ANSWER = "It backs off exponentially, capped at 30 s (src/billing/retry.py)."


def test_an_agent_indexes_a_repository_and_answers_from_it() -> None:
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
        deadline = time.monotonic() + 60
        while (task := httpx.get(f"{agents}/agents/tasks/{task_id}").json())["state"] not in ("succeeded", "failed"):
            assert time.monotonic() < deadline, task
            time.sleep(0.1)
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
