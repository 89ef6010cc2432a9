"""The fuzzer over mcp-agents' OpenAPI, on a real PostgreSQL and redis-server. The event
stream (it stays open until a task ends) is left out: the fuzzer reads whole answers."""

from __future__ import annotations

from mcp_agents.main import Settings, build_app
from sophia_testing.fuzz import check, fuzz
from sophia_testing.servers import free_port, serve


def test_fuzz_mcp_agents(database_url: str, redis_url: str) -> None:
    settings = Settings(
        database_url=database_url,
        redis_url=redis_url,
        agno_coordinator_url=f"http://127.0.0.1:{free_port()}",
        mcp_context_url=None,
        mcp_github_url=None,
        mcp_hubspot_url=None,
        workers=0,
    )
    with serve(build_app(settings)) as url:
        check(fuzz("mcp-agents", url, skip=("GET /agents/tasks/{task_id}/events",)))
