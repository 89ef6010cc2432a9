"""The FastAPI app factory: health, readiness, metrics, request ids, JSON logs, traces, problems."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping
from contextlib import asynccontextmanager
from typing import Any

import structlog
from fastapi import FastAPI, Response
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Gauge, generate_latest
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from sophia_chassis.admission import AdmissionControl, Door
from sophia_chassis.auth import install_auth
from sophia_chassis.flags import install_flags
from sophia_chassis.logs import configure_logging
from sophia_chassis.mcp import MCP_PATH
from sophia_chassis.metrics import OPERATIONAL_ROUTES, RequestMetrics
from sophia_chassis.problems import document_problems, install_problem_handlers, internal_error, problem
from sophia_chassis.server import DOOR_STATE
from sophia_chassis.settings import ServiceSettings
from sophia_chassis.tracing import configure_tracing, fastapi_telemetry, flush
from sophia_chassis.version import AnnounceVersion, service_info

Check = Callable[[], Awaitable[Any]]
Hook = Callable[[], Awaitable[Any]]
READINESS_TIMEOUT_SECONDS = 2.0


def create_app(
    settings: ServiceSettings,
    *,
    readiness: Mapping[str, Check] | None = None,
    degraded: Mapping[str, Check] | None = None,
    on_startup: Iterable[Hook] = (),
    on_shutdown: Iterable[Hook] = (),
    limited_paths: Iterable[str] = (),
    **fastapi_kwargs: Any,
) -> FastAPI:
    """`limited_paths`: routes under admission control (sophia_chassis.admission): at most
    settings.max_concurrent_requests run at once, the rest wait up to
    settings.queue_timeout_seconds and are then answered 503 with Retry-After."""
    configure_logging(settings.log_level)
    tracing = configure_tracing(settings)
    log = structlog.get_logger()
    # `readiness`: what the pod cannot serve without (failing: 503, out of the Service). `degraded`:
    # optional or external peers (a cache, a vendor API): reported by /readyz and dependency_up, never
    # taking the pod out, so one Redis restart or a vendor outage does not empty every Service.
    checks, optional = dict(readiness or {}), dict(degraded or {})
    registry = CollectorRegistry()
    metrics = RequestMetrics(registry)
    dependency_up = Gauge(
        "dependency_up",
        "1 while an optional or external dependency answers /readyz's check",
        ("dependency",),
        registry=registry,
    )

    limited = tuple(limited_paths)
    door = (
        Door(
            limited,
            max_concurrent=settings.max_concurrent_requests,
            max_loop_lag=settings.max_loop_lag_seconds or None,
            registry=registry,
        )
        if limited
        else None
    )

    @asynccontextmanager
    async def lifespan(_: FastAPI):
        for hook in on_startup:
            await hook()
        log.info("started", service=settings.service_name, port=settings.port)
        # The door goes to the server too (sophia_chassis.server refuses below the app).
        yield {DOOR_STATE: door} if door is not None else None
        # Graceful shutdown: uvicorn has stopped accepting and drained requests; release clients.
        for hook in on_shutdown:
            await hook()
        if tracing:
            await asyncio.to_thread(flush)
        log.info("stopped", service=settings.service_name)

    app = FastAPI(
        title=settings.service_name,
        lifespan=lifespan,
        # /mcp: the MCP SDK traces each message itself, parented by the caller's context in `_meta`;
        # an HTTP span per streamable-HTTP exchange would start a stray trace for each one.
        telemetry=fastapi_telemetry(tracing, (*ObserveRequests.QUIET, MCP_PATH)),
        **fastapi_kwargs,
    )
    app.state.settings, app.state.metrics, app.state.registry = settings, metrics, registry
    app.state.door = door  # None without limited paths
    app.state.flags = install_flags(settings.service_name, settings.flags_file, settings.flags_poll_seconds, registry)
    install_problem_handlers(app)
    document_problems(app)
    # Inside ObserveRequests (added after, so outside): the request id is bound before auth runs.
    install_auth(app, settings)
    app.add_middleware(
        ObserveRequests, service=settings.service_name, metrics=metrics, max_body_bytes=settings.max_body_bytes
    )
    app.add_middleware(AnnounceVersion, version=settings.service_version, track=settings.service_track)
    service_info(registry, settings.service_name, settings.service_version, settings.service_track)
    if door is not None:  # outermost: a shed request costs the loop as little as possible (counted apart)
        app.add_middleware(
            AdmissionControl,
            door=door,
            max_concurrent=settings.max_concurrent_requests,
            queue_timeout=settings.queue_timeout_seconds,
        )

    @app.get("/healthz", include_in_schema=False)
    async def healthz() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/readyz", include_in_schema=False)
    async def readyz():
        async def run(name: str, check: Check) -> tuple[str, str | None]:
            try:
                result = await asyncio.wait_for(check(), READINESS_TIMEOUT_SECONDS)
                return name, None if result is not False else "not ready"
            except Exception as exc:  # a failing dependency is an answer, not an error
                return name, f"{type(exc).__name__}: {exc}"[:200]

        results = dict(await asyncio.gather(*(run(n, c) for n, c in {**checks, **optional}.items())))
        for name in optional:
            dependency_up.labels(name).set(0 if results[name] else 1)
        failed = {name: results[name] for name in checks if results[name]}
        degraded_now = {name: results[name] for name in optional if results[name]}
        if failed:
            return problem(
                503, "Not ready", f"failing: {', '.join(sorted(failed))}", checks=failed, degraded=degraded_now
            )
        body: dict[str, Any] = {"status": "degraded" if degraded_now else "ready", "checks": sorted(checks)}
        if optional:
            body["optional"] = sorted(optional)
        if degraded_now:
            body["degraded"] = degraded_now
        return body

    @app.get("/metrics", include_in_schema=False)
    async def metrics_endpoint() -> Response:
        return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)

    return app


class BodyTooLarge(Exception):
    pass


class ObserveRequests:
    """Request id, metrics, the request log line, the body-size limit and the last line of
    defence against 500s, as a plain ASGI middleware: Starlette's BaseHTTPMiddleware costs a
    task and a body re-stream per request and breaks contextvars for streamed answers (SSE,
    MCP). A request is measured up to its response's start (time to first byte), so a long
    event stream does not count as a slow request."""

    QUIET = OPERATIONAL_ROUTES  # no log line per probe or scrape

    def __init__(self, app: ASGIApp, service: str, metrics: RequestMetrics, max_body_bytes: int = 1 << 20):
        self.app, self.service, self.metrics = app, service, metrics
        self.max_body_bytes = max_body_bytes
        self.log = structlog.get_logger()

    async def _read_body(self, scope: Scope, receive: Receive) -> Receive:
        """The whole body, read up to the limit before the app runs (so no handler ever holds
        more), replayed to the app; then the server's own receive (disconnects)."""
        declared = next((v for k, v in scope["headers"] if k == b"content-length"), None)
        if declared is not None and declared.isdigit() and int(declared) > self.max_body_bytes:
            raise BodyTooLarge
        chunks: list[bytes] = []
        size = 0
        while True:
            message = await receive()
            if message["type"] != "http.request":
                first = message
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body_bytes:
                raise BodyTooLarge
            chunks.append(chunk)
            if not message.get("more_body", False):
                first = {"type": "http.request", "body": b"".join(chunks), "more_body": False}
                break
        replayed = False

        async def replay() -> Message:
            nonlocal replayed
            if not replayed:
                replayed = True
                return first
            return await receive()

        return replay

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        given = next((v for k, v in scope["headers"] if k == b"x-request-id"), b"").decode("latin-1")
        request_id = given or uuid.uuid4().hex
        structlog.contextvars.bind_contextvars(request_id=request_id)
        started = time.perf_counter()
        observed = False

        def observe(status: int) -> None:
            nonlocal observed
            if observed:
                return
            observed = True
            template = getattr(scope.get("route"), "path", None) or "unmatched"
            elapsed = time.perf_counter() - started
            self.metrics.observe(self.service, template, scope["method"], status, elapsed)
            if template not in self.QUIET:
                self.log.info(
                    "request",
                    method=scope["method"],
                    route=template,
                    status=status,
                    duration_ms=round(elapsed * 1000, 2),
                )

        response_started = False

        async def send_observed(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode("latin-1"))]
                observe(message["status"])
            await send(message)

        try:
            try:
                receive = await self._read_body(scope, receive)
            except BodyTooLarge:
                # The rest of the body is not read: the connection cannot be reused.
                too_large = problem(
                    413,
                    "Content Too Large",
                    f"the request body exceeds {self.max_body_bytes} bytes; send less per request",
                    headers={"Connection": "close"},
                )
                await too_large(scope, receive, send_observed)
                return
            await self.app(scope, receive, send_observed)
        except Exception as exc:
            if response_started:
                raise  # too late for an answer: the server drops the connection
            # A 500 is a bug: logged with the request id (bound above), answered as a problem.
            self.log.error("unhandled_error", path=scope.get("path"), error=type(exc).__name__, exc_info=exc)
            await internal_error()(scope, receive, send_observed)
        finally:
            observe(500)  # no response started: the error handler outside answers 500
            structlog.contextvars.unbind_contextvars("request_id")
