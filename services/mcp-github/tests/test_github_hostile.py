"""mcp-github against hostile input (issue 12): owners, repositories, refs and paths never
steer a call made with the organisation's token to another GitHub endpoint or query, over
REST or MCP. The fake captures every raw path and query it receives."""

from __future__ import annotations

import asyncio

import httpx
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_github.main import Settings, build_app
from sophia_testing.github_fake import TOKEN, FakeGitHub
from sophia_testing.servers import free_port, serve


def app_for(github_url: str):
    return build_app(
        Settings(github_token=TOKEN, github_api_url=github_url, mcp_context_url=f"http://127.0.0.1:{free_port()}")
    )


def test_rest_names_refs_and_paths_stay_inside_the_repository(fake: FakeGitHub, github_url: str) -> None:
    with serve(app_for(github_url)) as url:
        fake.targets.clear()
        base = f"{url}/github/repos"
        refused = [
            httpx.get(f"{base}/acme/billing/contents/%2e%2e/%2e%2e/%2e%2e/user/repos"),
            httpx.get(f"{base}/acme/billing/contents/src/..%2F..%2F..%2Fuser"),
            httpx.get(f"{base}/acme/billing/contents/README.md%3Fref%3Devil"),
            httpx.get(f"{base}/acme/billing/contents/README.md", params={"ref": "main?per_page=1"}),
            httpx.get(f"{base}/acme/billing/contents/README.md", params={"ref": "../../heads"}),
            httpx.get(f"{base}/acme/billing/contents/a%00b"),
            httpx.get(f"{base}/acme/%2e%2e/commits"),
            httpx.get(f"{base}/ac%20me/billing/commits"),
            httpx.get(f"{base}/acme/billing/commits", params={"ref": "main\n"}),
            httpx.get(f"{base}/acme/bil%3Fling/pulls"),
            httpx.get(f"{url}/github/repos", params={"owner": "../user"}),
            httpx.get(f"{url}/github/search/code", params={"q": "x", "repo": "acme/billing/../x"}),
            httpx.get(f"{url}/github/search/code", params={"q": "x" * 300}),
            httpx.post(f"{base}/acme/billing/index", json={"ref": "main~1"}),
        ]
        for answer in refused:
            assert answer.status_code in (404, 422), (answer.request.url, answer.status_code, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
        assert fake.targets == []  # nothing reached GitHub
        ok = httpx.get(f"{base}/acme/billing/contents/src/billing/retry.py", params={"ref": "main"})
        assert ok.status_code == 200
        assert fake.targets == ["/repos/acme/billing/contents/src/billing/retry.py?ref=main"]


def test_mcp_tools_apply_the_same_grammars(fake: FakeGitHub, github_url: str) -> None:
    with serve(app_for(github_url)) as url:

        async def run():
            async with streamable_http_client(f"{url}/mcp") as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    calls = [
                        ("get_file", {"owner": "acme", "repo": "billing", "path": "../../../user/repos"}),
                        ("get_file", {"owner": "acme/billing/contents/..", "repo": "x", "path": "README.md"}),
                        ("get_file", {"owner": "acme", "repo": "..", "path": "README.md"}),
                        ("get_file", {"owner": "acme", "repo": "billing", "path": "README.md?ref=x"}),
                        ("get_file", {"owner": "acme", "repo": "billing", "path": "README.md", "ref": "a..b"}),
                        ("recent_commits", {"owner": "acme", "repo": "billing", "ref": "-x"}),
                        ("recent_commits", {"owner": "acme", "repo": "billing", "limit": 10**6}),
                        ("pull_requests", {"owner": "acme", "repo": "billing", "state": "merged"}),
                        ("list_repositories", {"owner": "acme/../../user"}),
                        ("search_code", {"query": "x", "repo": "acme"}),
                        ("index_repository", {"owner": "acme", "repo": "billing", "ref": "refs/../../x"}),
                    ]
                    return [await session.call_tool(name, args) for name, args in calls]

        fake.targets.clear()
        answers = asyncio.run(run())
    assert all(a.is_error for a in answers), [a for a in answers if not a.is_error]
    assert fake.targets == []
