"""orchestrator: the legacy single-service API, kept alive by forwarding each old path
to the new service that now owns it. Every answer says the old path is deprecated and
where its successor is, and each legacy path is counted so migration can be tracked."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from fastapi import Depends, FastAPI, HTTPException, Request, Response
from prometheus_client import Counter

from orchestrator.mappings import resolve
from orchestrator.settings import Settings
from sophia_chassis import ResilientClient, create_app
from sophia_chassis.auth import AUTHENTICATED, require

# When the legacy paths stop being served (RFC 8594 Sunset).
SUNSET = "Wed, 30 Jun 2027 00:00:00 GMT"
FORWARDED_HEADERS = ("content-type", "accept", "authorization", "x-request-id")


# What a segment may hold once decoded: no separator (an encoded `/` or `\\` would re-split the
# path at the backend), no control characters.
FORBIDDEN_IN_SEGMENT = re.compile(r"[/\\\x00-\x1f\x7f]")
PCHAR_SAFE = "!$&'()*+,;=:@-._~"  # RFC 3986 pchar: kept as is when a segment is re-encoded


class BadPath(ValueError):
    pass


def normalise(raw_path: str) -> str:
    """The path as the backend will route it: each segment percent-decoded once, checked, dot
    segments resolved (RFC 3986 5.2.4), then re-encoded. Without this `/api/memory/%2e%2e/..`
    is forwarded as is and the backend's URL parser resolves it past the prefix map."""
    segments: list[str] = []
    parts = raw_path.split("/")[1:]
    for i, part in enumerate(parts):
        try:
            segment = unquote(part, errors="strict")
        except UnicodeDecodeError:
            raise BadPath("the path is not UTF-8") from None
        if FORBIDDEN_IN_SEGMENT.search(segment):
            raise BadPath("a path segment holds an encoded '/', '\\' or a control character")
        if segment == "..":
            if segments:
                segments.pop()
        elif segment == "." or (segment == "" and i < len(parts) - 1):
            continue
        else:
            segments.append(segment)
    return "/" + "/".join(quote(s, safe=PCHAR_SAFE) for s in segments)


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
        try:
            path = normalise(request.scope.get("raw_path", b"").decode("latin-1") or request.url.path)
        except BadPath as exc:
            raise HTTPException(400, f"{exc}; send a plain legacy path (see docs/orchestrator.md)") from None
        found = resolve(path)
        if found is None:
            raise HTTPException(404, f"{path[:200]} is not a legacy path (see docs/orchestrator.md)")
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
