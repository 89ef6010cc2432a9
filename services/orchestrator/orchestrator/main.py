"""orchestrator: the legacy single-service API, kept alive by forwarding each old path
to the new service that now owns it. Every answer says the old path is deprecated and
where its successor is, and each legacy path is counted so migration can be tracked."""

from __future__ import annotations

from fastapi import FastAPI, HTTPException, Request, Response
from prometheus_client import Counter

from orchestrator.mappings import resolve
from orchestrator.settings import Settings
from sophia_chassis import ResilientClient, create_app

# When the legacy paths stop being served (RFC 8594 Sunset).
SUNSET = "Wed, 30 Jun 2027 00:00:00 GMT"
FORWARDED_HEADERS = ("content-type", "accept", "authorization", "x-request-id")


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    # Retrying a POST could apply a write twice; only idempotent methods are retried.
    retrying, once = ResilientClient(timeout=30.0), ResilientClient(timeout=30.0, attempts=1)
    app = create_app(settings, on_shutdown=[retrying.aclose, once.aclose])
    legacy_requests = Counter(
        "legacy_requests_total", "Requests to deprecated legacy paths", ("legacy_path",), registry=app.state.registry
    )

    @app.api_route("/api/{rest:path}", methods=["GET", "POST", "PUT", "PATCH", "DELETE"])
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
