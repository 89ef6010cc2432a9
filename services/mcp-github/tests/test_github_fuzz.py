"""The fuzzer over mcp-github's OpenAPI, against the fake GitHub (and a real mcp-context)."""

from __future__ import annotations

from mcp_context.main import Settings as ContextSettings
from mcp_context.main import build_app as build_context
from mcp_github.main import Settings, build_app
from sophia_testing.fuzz import check, fuzz
from sophia_testing.github_fake import TOKEN
from sophia_testing.servers import serve


def test_fuzz_mcp_github(github_url: str) -> None:
    context = build_context(ContextSettings(embedding_provider="local", qdrant_collection="github-fuzz"))
    with serve(context) as context_url:
        settings = Settings(
            github_token=TOKEN, github_api_url=github_url, mcp_context_url=context_url, github_attempts=1
        )
        with serve(build_app(settings)) as url:
            check(fuzz("mcp-github", url))
