"""An MCP client (the official SDK, streamable HTTP) lists and calls mcp-github's tools;
readiness names the dependency that is down."""

from __future__ import annotations

import asyncio
import json

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_context.main import Settings as ContextSettings
from mcp_context.main import build_app as build_context
from mcp_github.main import Settings, build_app
from sophia_testing.github_fake import TOKEN, FakeGitHub
from sophia_testing.servers import free_port, serve

TOOLS = {"list_repositories", "get_file", "search_code", "recent_commits", "pull_requests", "index_repository"}


def payload(result) -> object:
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content.get("result", result.structured_content)
    return json.loads(result.content[0].text)


def test_mcp_client_lists_and_calls_every_tool(fake: FakeGitHub, github_url: str) -> None:
    with serve(build_context(ContextSettings(embedding_provider="local", qdrant_collection="mcp-tools"))) as context:
        app = build_app(Settings(github_token=TOKEN, github_api_url=github_url, mcp_context_url=context))
        with serve(app) as url:

            async def session_run():
                async with streamable_http_client(f"{url}/mcp") as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        tools = {t.name for t in (await session.list_tools()).tools}
                        calls = {
                            "repos": await session.call_tool("list_repositories", {"owner": "acme"}),
                            "file": await session.call_tool(
                                "get_file", {"owner": "acme", "repo": "billing", "path": "src/billing/invoice.py"}
                            ),
                            "search": await session.call_tool(
                                "search_code", {"query": "Invoice total", "repo": "acme/billing"}
                            ),
                            "commits": await session.call_tool("recent_commits", {"owner": "acme", "repo": "billing"}),
                            "pulls": await session.call_tool("pull_requests", {"owner": "acme", "repo": "billing"}),
                            "index": await session.call_tool("index_repository", {"owner": "acme", "repo": "billing"}),
                            "missing": await session.call_tool(
                                "get_file", {"owner": "acme", "repo": "billing", "path": "nope.md"}
                            ),
                        }
                        return tools, calls

            tools, calls = asyncio.run(session_run())
        found = httpx.post(
            f"{context}/memories/search", json={"query": "invoice total in cents", "namespace": "github:acme/billing"}
        ).json()
    assert tools == TOOLS
    assert [r["full_name"] for r in payload(calls["repos"])] == ["acme/billing"]
    assert "class Invoice" in payload(calls["file"])["text"]
    assert [h["path"] for h in payload(calls["search"])] == ["src/billing/invoice.py"]
    assert payload(calls["commits"])[0]["message"] == "initial import"
    assert payload(calls["pulls"]) == []
    assert payload(calls["index"])["files_sent"] == 3
    assert calls["missing"].is_error and "404" in str(calls["missing"].content)
    assert found["results"][0]["metadata"]["path"] == "src/billing/invoice.py"


def test_readiness_reports_github_and_mcp_context_without_leaving_the_service(
    fake: FakeGitHub, github_url: str
) -> None:
    down = f"http://127.0.0.1:{free_port()}"
    with serve(
        build_app(Settings(github_token=TOKEN, github_api_url=github_url, mcp_context_url=down, github_attempts=1))
    ) as url:
        degraded = httpx.get(f"{url}/readyz")
        alive = httpx.get(f"{url}/healthz")
        metrics = httpx.get(f"{url}/metrics").text
    assert alive.status_code == 200
    # mcp-context down degrades indexing; reads from GitHub still work, so the pod stays in its Service.
    assert degraded.status_code == 200 and set(degraded.json()["degraded"]) == {"mcp-context"}
    assert 'dependency_up{dependency="mcp-context"} 0.0' in metrics
