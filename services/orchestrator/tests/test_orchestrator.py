"""The legacy bridge through real servers: old paths reach the new services, marked deprecated and counted."""

from __future__ import annotations

import httpx
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from orchestrator.main import Settings, build_app
from orchestrator.mappings import MAPPINGS, resolve
from sophia_testing.servers import free_port, serve


def fake_new_service(seen: list[tuple[str, str, str, bytes]]) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST", "DELETE"])
    async def anything(path: str, request: Request):
        seen.append((request.method, "/" + path, str(request.query_params), await request.body()))
        if path.endswith("missing"):
            return JSONResponse({"detail": "no such memory"}, status_code=404)
        return {"served_by": "new", "path": "/" + path}

    return app


def test_mapping_table_resolves_longest_prefix() -> None:
    assert resolve("/api/memory/search")[1] == "/memories/search"
    assert resolve("/api/memory/123")[1] == "/memories/123"
    assert resolve("/api/memoryless") is None
    assert {m.service for m in MAPPINGS} == {"mcp-context", "mcp-github", "mcp-hubspot", "mcp-agents", "agno-teams"}


def test_legacy_paths_are_forwarded_deprecated_and_counted() -> None:
    seen: list[tuple[str, str, str, bytes]] = []
    with serve(fake_new_service(seen)) as context_url:
        app = build_app(Settings(mcp_context_url=context_url, mcp_github_url=context_url))
        with serve(app) as url:
            search = httpx.post(f"{url}/api/memory/search?trace=1", json={"query": "renewal"})
            fetched = httpx.get(f"{url}/api/memory/abc")
            missing = httpx.get(f"{url}/api/memory/missing")
            repos = httpx.get(f"{url}/api/github/repos")
            unknown = httpx.get(f"{url}/api/nothing-here")
            metrics = httpx.get(f"{url}/metrics").text
    assert search.json() == {"served_by": "new", "path": "/memories/search"}
    assert seen[0] == ("POST", "/memories/search", "trace=1", b'{"query":"renewal"}')
    assert search.headers["Deprecation"] == "true" and "Sunset" in search.headers
    assert search.headers["Link"] == '</memories/search>; rel="successor-version"; service="mcp-context"'
    assert fetched.json()["path"] == "/memories/abc"
    assert missing.status_code == 404  # the new service's answer passes through
    assert repos.json()["path"] == "/github/repos"
    assert unknown.status_code == 404 and unknown.headers["content-type"] == "application/problem+json"
    assert 'legacy_requests_total{legacy_path="/api/memory"} 2.0' in metrics
    assert 'legacy_requests_total{legacy_path="/api/memory/search"} 1.0' in metrics


def test_a_down_service_is_a_clear_problem() -> None:
    app = build_app(Settings(mcp_context_url=f"http://127.0.0.1:{free_port()}"))
    with serve(app) as url:
        response = httpx.get(f"{url}/api/memory/abc")
    assert response.status_code == 502 and response.json()["title"] == "Upstream error"
