"""orchestrator: the legacy single-service API, kept alive by forwarding each old path
to the new service that now owns it. Every answer says the old path is deprecated and
where its successor is, and each legacy path is counted so migration can be tracked."""

from __future__ import annotations

from dataclasses import dataclass

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from prometheus_client import Counter

from sophia_chassis import ResilientClient, ServiceSettings, create_app
from sophia_chassis.auth import AUTHENTICATED, require

# When the legacy paths stop being served (RFC 8594 Sunset).
SUNSET = "Wed, 30 Jun 2027 00:00:00 GMT"
FORWARDED_HEADERS = ("content-type", "accept", "authorization", "x-request-id")


@dataclass(frozen=True)
class Mapping:
    legacy: str  # old path prefix
    service: str  # the service that owns it now
    successor: str  # the new path prefix on that service


# The mapping table (docs/orchestrator.md); the longest matching legacy prefix wins.
MAPPINGS = (
    Mapping("/api/memory/search", "mcp-context", "/memories/search"),
    Mapping("/api/memory", "mcp-context", "/memories"),
    Mapping("/api/github", "mcp-github", "/github"),
    Mapping("/api/crm", "mcp-hubspot", "/hubspot"),
    Mapping("/api/agents", "mcp-agents", "/agents"),
    Mapping("/api/teams", "agno-teams", "/teams"),
)


class Settings(ServiceSettings):
    service_name: str = "orchestrator"
    mcp_context_url: str = "http://mcp-context"
    mcp_github_url: str = "http://mcp-github"
    mcp_hubspot_url: str = "http://mcp-hubspot"
    mcp_agents_url: str = "http://mcp-agents"
    agno_teams_url: str = "http://agno-teams"

    def url_of(self, service: str) -> str:
        return getattr(self, service.replace("-", "_") + "_url").rstrip("/")


def resolve(path: str) -> tuple[Mapping, str] | None:
    """The mapping for a legacy path and the path on the new service."""
    for mapping in sorted(MAPPINGS, key=lambda m: len(m.legacy), reverse=True):
        if path == mapping.legacy or path.startswith(mapping.legacy + "/"):
            return mapping, mapping.successor + path[len(mapping.legacy) :]
    return None


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    # Retrying a POST could apply a write twice; only idempotent methods are retried.
    retrying, once = ResilientClient(timeout=30.0), ResilientClient(timeout=30.0, attempts=1)
    app = create_app(settings, on_shutdown=[retrying.aclose, once.aclose])
    legacy_requests = Counter(
        "legacy_requests_total", "Requests to deprecated legacy paths", ("legacy_path",), registry=app.state.registry
    )

    # Any identity may knock; the caller's own credential is forwarded (Authorization is in
    # FORWARDED_HEADERS) and the service that owns the path checks its scopes and tenant.
    @app.api_route(
        "/api/{rest:path}",
        methods=["GET", "POST", "PUT", "PATCH", "DELETE"],
        dependencies=[Depends(require(AUTHENTICATED))],
    )
    async def forward(request: Request, rest: str) -> Response:
        found = resolve(f"/api/{rest}")
        if found is None:
            raise HTTPException(404, f"/api/{rest} is not a legacy path (see docs/orchestrator.md)")
        mapping, new_path = found
        legacy_requests.labels(mapping.legacy).inc()
        target = settings.url_of(mapping.service) + new_path
        client = retrying if request.method in ("GET", "PUT", "DELETE") else once
        upstream = await client.request(
            request.method,
            target,
            params=request.query_params,
            content=await request.body(),
            headers={k: v for k, v in request.headers.items() if k.lower() in FORWARDED_HEADERS},
        )
        headers = {k: v for k, v in upstream.headers.items() if k.lower() in ("content-type", "location", "etag")}
        headers.update(
            {
                "Deprecation": "true",
                "Sunset": SUNSET,
                "Link": f'<{new_path}>; rel="successor-version"; service="{mapping.service}"',
            }
        )
        return Response(upstream.content, status_code=upstream.status_code, headers=headers)

    return app
