"""The legacy bridge against path traversal (issue 12): encoded `../`, encoded separators and
control characters never take a forwarded request past the prefix map to a backend's
internal routes. The fake backend captures the raw path it receives."""

from __future__ import annotations

import socket
from urllib.parse import urlsplit

from fastapi import FastAPI, Request

from orchestrator.main import Settings, build_app
from sophia_testing.servers import serve


def capturing_backend(seen: list[str]) -> FastAPI:
    app = FastAPI()

    @app.api_route("/{path:path}", methods=["GET", "POST"])
    async def anything(path: str, request: Request):
        seen.append(request.scope["raw_path"].decode("latin-1"))
        return {"ok": True}

    return app


def raw_get(url: str, target: str) -> tuple[int, str]:
    """One request with the target exactly as written: HTTP clients would normalise it first."""
    parts = urlsplit(url)
    with socket.create_connection((parts.hostname, parts.port), timeout=30) as sock:
        sock.sendall(f"GET {target} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".encode("latin-1"))
        data = b""
        while chunk := sock.recv(65536):
            data += chunk
    head = data.split(b"\r\n\r\n", 1)[0].decode("latin-1")
    return int(head.split(" ", 2)[1]), head.lower()


def test_encoded_traversal_never_reaches_a_backends_internal_routes() -> None:
    seen: list[str] = []
    with serve(capturing_backend(seen)) as backend:
        urls = {
            f"{name}_url": backend for name in ("mcp_context", "mcp_github", "mcp_hubspot", "mcp_agents", "agno_teams")
        }
        with serve(build_app(Settings(**urls))) as url:
            hostile = [
                "/api/memory/%2e%2e/metrics",
                "/api/memory/%2E%2E/%2E%2E/metrics",
                "/api/memory/../../openapi.json",
                "/api/github/..%2f..%2fmcp",
                "/api/github/%2e%2e%2f%2e%2e%2fdocs",
                "/api/crm/.%2e/.%2e/metrics",
                "/api/agents/%2e%2e/%2e%2e/%2e%2e/readyz",
                "/api/teams/x%5c..%5c..%5cmetrics",
                "/api/teams/a%00b",
                "/api/memory/%ff",
            ]
            answers = {target: raw_get(url, target) for target in hostile}
            fine = raw_get(url, "/api/memory/./abc/../def%20g")
    for target, (status, head) in answers.items():
        assert status in (400, 404), (target, status)
        assert "application/problem+json" in head
    assert fine[0] == 200
    assert seen == ["/memories/def%20g"]  # the only request that reached a backend


def test_fuzz_orchestrator() -> None:
    from sophia_testing.fuzz import check, fuzz

    seen: list[str] = []
    with serve(capturing_backend(seen)) as backend:
        urls = {f"{n}_url": backend for n in ("mcp_context", "mcp_github", "mcp_hubspot", "mcp_agents", "agno_teams")}
        with serve(build_app(Settings(**urls))) as url:
            check(fuzz("orchestrator", url))
