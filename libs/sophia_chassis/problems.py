"""Errors as RFC 9457 problem details (application/problem+json), never a stack trace."""

from __future__ import annotations

import json
import math
from http import HTTPStatus
from typing import Any

import structlog
from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.exceptions import HTTPException

MEDIA_TYPE = "application/problem+json"
# The OpenAPI schema of every problem body (documented on every route, checked by the fuzzer).
PROBLEM_SCHEMA: dict[str, Any] = {
    "type": "object",
    "required": ["type", "title", "status"],
    "properties": {
        "type": {"type": "string"},
        "title": {"type": "string"},
        "status": {"type": "integer"},
        "detail": {"type": "string"},
    },
    "additionalProperties": True,
}


class ProblemResponse(JSONResponse):
    media_type = MEDIA_TYPE

    def render(self, content: Any) -> bytes:
        # ASCII-escaped: a detail or field name echoing a caller's lone surrogate stays valid UTF-8.
        return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":"), default=str).encode()


class DependencyUnavailable(RuntimeError):
    """A dependency (database, queue) is down: a 503 with Retry-After, not a 500."""

    def __init__(self, dependency: str, detail: str, retry_after: float = 5.0):
        super().__init__(f"{dependency} is unavailable: {detail}")
        self.dependency, self.retry_after = dependency, retry_after


def problem(status: int, title: str, detail: str | None = None, headers: dict[str, str] | None = None, **extra):
    body = {"type": "about:blank", "title": title, "status": status, **({"detail": detail} if detail else {}), **extra}
    return ProblemResponse(body, status_code=status, headers=headers)


def retry_after(seconds: float) -> dict[str, str]:
    return {"Retry-After": str(max(1, math.ceil(seconds)))}


def install_problem_handlers(app: FastAPI) -> None:
    log = structlog.get_logger()

    @app.exception_handler(HTTPException)
    async def http_error(_: Request, exc: HTTPException):
        # exc.headers carries e.g. the Allow of a 405.
        return problem(exc.status_code, title=_title(exc.status_code), detail=str(exc.detail), headers=exc.headers)

    @app.exception_handler(RequestValidationError)
    async def invalid(_: Request, exc: RequestValidationError):
        errors = [{"field": ".".join(str(p) for p in e["loc"]), "message": e["msg"]} for e in exc.errors()]
        fields = ", ".join(sorted({e["field"] for e in errors}))[:500]
        return problem(422, "Invalid request", f"fix these fields: {fields}", errors=errors)

    from sophia_chassis.http import CircuitOpenError, UpstreamError

    @app.exception_handler(CircuitOpenError)
    async def circuit_open(_: Request, exc: CircuitOpenError):
        return problem(503, "Dependency unavailable", str(exc), headers=retry_after(5))

    @app.exception_handler(DependencyUnavailable)
    async def unavailable(_: Request, exc: DependencyUnavailable):
        log.warning("dependency_unavailable", dependency=exc.dependency, error=str(exc))
        return problem(503, "Dependency unavailable", str(exc), headers=retry_after(exc.retry_after))

    @app.exception_handler(UpstreamError)
    async def upstream(_: Request, exc: UpstreamError):
        if exc.retry_after is not None:  # the upstream is shedding load: pass its Retry-After on
            return problem(503, "Upstream busy", str(exc), headers=retry_after(exc.retry_after))
        return problem(502, "Upstream error", str(exc))

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception):
        # Reached only for errors outside the chassis' middleware (which answers the rest itself).
        log.error("unhandled_error", path=request.url.path, error=type(exc).__name__, exc_info=exc)
        return internal_error()


def document_problems(app: FastAPI) -> None:
    """Make the OpenAPI say what the chassis answers: every error (4xx, 5xx, the 422 of a
    validation) is application/problem+json of PROBLEM_SCHEMA, on every operation."""
    from fastapi.openapi.utils import get_openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            spec = get_openapi(title=app.title, version=app.version, routes=app.routes)
            problem_content = {MEDIA_TYPE: {"schema": {"$ref": "#/components/schemas/Problem"}}}
            spec.setdefault("components", {}).setdefault("schemas", {})["Problem"] = PROBLEM_SCHEMA
            for schemas in (spec["components"]["schemas"],):
                schemas.pop("HTTPValidationError", None)
                schemas.pop("ValidationError", None)
            for path in spec.get("paths", {}).values():
                for operation in path.values():
                    responses = operation.setdefault("responses", {})
                    for code in [c for c in responses if c.startswith(("4", "5"))]:
                        responses[code] = {
                            "description": responses[code].get("description", "Error"),
                            "content": problem_content,
                        }
                    responses.setdefault("4XX", {"description": "The request was refused", "content": problem_content})
                    responses.setdefault(
                        "5XX", {"description": "The service or a dependency failed", "content": problem_content}
                    )
            app.openapi_schema = spec
        return app.openapi_schema

    app.openapi = openapi  # type: ignore[method-assign]


def internal_error():
    """A 500 is a bug: the body says so without details, and the connection is closed, as
    whatever failed may have left it in an unknown state."""
    return problem(500, "Internal error", "the service failed to handle the request", headers={"Connection": "close"})


def _title(status: int) -> str:
    try:
        return HTTPStatus(status).phrase
    except ValueError:
        return "Error"
