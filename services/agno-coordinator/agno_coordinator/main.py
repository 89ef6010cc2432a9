"""agno-coordinator: an OpenAI-compatible `/v1/chat/completions` that picks the model.

Plain FastAPI on the chassis, not Agno: this is a policy proxy that passes OpenAI bodies
(tools, tool_calls, stream) through unchanged, and Agno's model classes would re-shape
them (see README). Run with `uvicorn --factory agno_coordinator.main:build_app`."""

from __future__ import annotations

import json
import math
from typing import Annotated, Any, Literal

import httpx
import structlog
from fastapi import Depends, FastAPI, Request
from fastapi.responses import JSONResponse, Response, StreamingResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, ValidationError

from agno_coordinator.accounting import Accounting, usage_tokens
from agno_coordinator.complexity import CHARS_PER_TOKEN, Complexity, estimate, from_header
from agno_coordinator.providers import Provider, ProviderFailure, ProviderRejected
from agno_coordinator.router import NO_PROVIDER, Limits, NoProvider, NoRoute, Plan, UnknownModel, plan
from agno_coordinator.settings import Settings
from agno_coordinator.table import ModelSpec, load_table, tier_name
from sophia_chassis import create_app
from sophia_chassis.auth import require
from sophia_chassis.inputs import Name, Text, json_depth_exceeds
from sophia_chassis.problems import problem

log = structlog.get_logger()


class BadRequest(Exception):
    def __init__(self, message: str, errors: list[dict[str, str]] | None = None):
        super().__init__(message)
        self.errors = errors


# The parts of an OpenAI chat request this service reads, typed; everything else passes
# through to the provider untouched (extra="allow"), as the providers define it.
MAX_DEPTH = 32  # tool schemas nest; nothing legitimate nests deeper
MessageText = Text(2_000_000)


class ContentPart(BaseModel):
    model_config = ConfigDict(extra="allow")
    type: Name(64)
    text: MessageText | None = None


class Message(BaseModel):
    model_config = ConfigDict(extra="allow")
    role: Literal["system", "developer", "user", "assistant", "tool", "function"]
    content: MessageText | Annotated[list[ContentPart], Field(max_length=1000)] | None = None


class ChatRequest(BaseModel):
    model_config = ConfigDict(extra="allow")
    model: Name(200) | None = None
    messages: Annotated[list[Message], Field(min_length=1, max_length=10_000)]
    tools: Annotated[list[dict[str, Any]], Field(max_length=256)] | None = None
    stream: StrictBool | None = None
    max_tokens: Annotated[StrictInt, Field(ge=1, le=10_000_000)] | None = None
    max_completion_tokens: Annotated[StrictInt, Field(ge=1, le=10_000_000)] | None = None


def _inline_defs(schema: dict[str, Any]) -> dict[str, Any]:
    """The JSON schema with its `$defs` inlined: OpenAPI resolves `#/$defs/..` against the
    whole document, not this schema (ChatRequest is not recursive)."""
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            ref = node.get("$ref", "")
            if ref.startswith("#/$defs/"):
                return inline(defs[ref.removeprefix("#/$defs/")])
            return {k: inline(v) for k, v in node.items()}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    return inline(schema)


# Documented in the OpenAPI as the request body (read by hand, to pass it through untouched).
CHAT_REQUEST_BODY = {
    "required": True,
    "content": {"application/json": {"schema": _inline_defs(ChatRequest.model_json_schema())}},
}


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not JSON")


def parse_body(raw: bytes) -> dict[str, Any]:
    """Strict JSON (no NaN/Infinity), bounded depth, the fields the router reads typed."""
    try:
        body = json.loads(raw, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # RecursionError: nesting deeper than Python's stack
        raise BadRequest(f"the body is not JSON ({str(exc)[:100]})") from None
    if json_depth_exceeds(body, MAX_DEPTH):
        raise BadRequest(f"the body nests deeper than {MAX_DEPTH} levels")
    try:
        ChatRequest.model_validate(body)
    except ValidationError as exc:
        errors = [{"field": ".".join(str(p) for p in e["loc"]) or "body", "message": e["msg"]} for e in exc.errors()]
        raise BadRequest(
            "the body must be an OpenAI chat completion request with a non-empty `messages` list; fix: "
            + ", ".join(sorted({e["field"] for e in errors}))[:300],
            errors[:20],
        ) from None
    return body


class Coordinator:
    def __init__(self, settings: Settings):
        self.settings = settings
        self.table = load_table(settings.coordinator_models)  # raises TableError: the service does not start
        common = dict(
            timeout=settings.provider_timeout_seconds,
            connect_timeout=settings.provider_connect_timeout_seconds,
            attempts=settings.provider_attempts,
            backoff=settings.provider_backoff_seconds,
            backoff_max=settings.provider_backoff_max_seconds,
            max_retry_wait=settings.provider_max_retry_wait_seconds,
            failure_threshold=settings.breaker_failure_threshold,
            reset_timeout=settings.breaker_reset_seconds,
        )
        self.providers = {
            "openai": Provider("openai", settings.openai_base_url, settings.openai_api_key, **common),
            "anthropic": Provider("anthropic", settings.anthropic_base_url, settings.anthropic_api_key, **common),
            "local": Provider(
                "local", settings.local_model_url, settings.local_model_api_key, key_required=False, **common
            ),
        }
        self.accounting: Accounting | None = None

    def configured(self) -> list[str]:
        return [name for name, p in self.providers.items() if p.configured]

    async def ready(self) -> bool:
        if not self.configured():
            raise RuntimeError(NO_PROVIDER)
        if not any(p.up for p in self.providers.values()):
            raise RuntimeError(f"every provider's circuit breaker is open: {', '.join(self.configured())}")
        return True

    def models(self) -> dict[str, Any]:
        data = [{"id": "auto", "object": "model", "owned_by": "agno-coordinator", "available": bool(self.configured())}]
        for m in self.table.models:
            provider = self.providers[m.provider]
            data.append(
                {
                    "id": m.name,
                    "object": "model",
                    "owned_by": m.provider,
                    "upstream": m.upstream,
                    "tier": tier_name(m.tier),
                    "input_usd_per_mtok": m.input_usd_per_mtok,
                    "output_usd_per_mtok": m.output_usd_per_mtok,
                    "latency_ms": m.latency_ms,
                    "context_window": m.context_window,
                    "configured": provider.configured,
                    "available": provider.up,
                }
            )
        return {"object": "list", "data": data}

    async def complete(
        self, body: dict[str, Any], complexity: Complexity, limits: Limits, request_id: str | None
    ) -> Response:
        route = plan(self.table, self.configured(), body, complexity, limits, self.settings.default_completion_tokens)
        stream = bool(body.get("stream"))
        failures: list[tuple[ModelSpec, ProviderFailure]] = []
        for spec in route.unavailable:
            failures.append((spec, ProviderFailure("unavailable", f"provider {spec.provider} is not configured")))
            self.accounting.fallback(spec, "unavailable")
        forward = {"X-Request-ID": request_id} if request_id else None
        for i, spec in enumerate(route.candidates):
            upstream = {**body, "model": spec.upstream}  # everything else passes through untouched
            try:
                response = await self.providers[spec.provider].send(upstream, stream=stream, headers=forward)
                if stream:
                    return self._relay(spec, route, failures, response)
                return self._answer(spec, route, failures, response)
            except ProviderRejected as exc:
                self.accounting.attempt(spec, "rejected")
                upstream_response = exc.response
                return Response(
                    upstream_response.content,
                    status_code=upstream_response.status_code,
                    media_type=upstream_response.headers.get("content-type", "application/json"),
                    headers=_route_headers(spec, route, failures),
                )
            except ProviderFailure as failure:
                self.accounting.attempt(spec, failure.reason)
                failures.append((spec, failure))
                following = route.candidates[i + 1].name if i + 1 < len(route.candidates) else None
                if following:
                    self.accounting.fallback(spec, failure.reason)
                log.warning(
                    "model_failed",
                    model=spec.name,
                    provider=spec.provider,
                    reason=failure.reason,
                    detail=str(failure),
                    next=following,
                )
        return _all_failed(failures)

    def _answer(self, spec: ModelSpec, route: Plan, failures: list, response: httpx.Response) -> Response:
        try:
            data = response.json()
            if not isinstance(data, dict):
                raise ValueError("not an object")
        except ValueError as exc:
            raise ProviderFailure("bad_response", f"{spec.provider} answered 2xx without a JSON object") from exc
        data["model"] = spec.name
        tokens = usage_tokens(data.get("usage")) or (route.prompt_tokens, _estimate_output(data.get("choices")))
        cost = self.accounting.usage(spec, *tokens)
        self.accounting.attempt(spec, "ok")
        log.info(
            "routed",
            model=spec.name,
            provider=spec.provider,
            complexity=route.complexity.tier,
            fallbacks=len(failures),
            prompt_tokens=tokens[0],
            completion_tokens=tokens[1],
            cost_usd=cost,
        )
        headers = _route_headers(spec, route, failures) | {"X-Sophia-Cost-USD": f"{cost:.6f}"}
        return JSONResponse(data, headers=headers)

    def _relay(self, spec: ModelSpec, route: Plan, failures: list, response: httpx.Response) -> StreamingResponse:
        """Server-sent events passed through line by line, `model` rewritten; usage counted at
        the end. Past the first byte there is no falling back: a broken stream ends with an
        OpenAI-style error event."""
        accounting, provider = self.accounting, self.providers[spec.provider]

        async def events():
            usage, chars, outcome = None, 0, "cancelled"  # until the loop finishes, the client may leave
            try:
                async for line in response.aiter_lines():
                    if line.startswith("data:") and line[5:].strip() != "[DONE]":
                        try:
                            chunk = json.loads(line[5:])
                        except ValueError:
                            chunk = None
                        if isinstance(chunk, dict):
                            if "model" in chunk:
                                chunk["model"] = spec.name
                            usage = chunk.get("usage") or usage
                            chars += _delta_chars(chunk.get("choices"))
                            line = "data: " + json.dumps(chunk)
                    yield line + "\n"
                outcome = "ok"
            except httpx.HTTPError as exc:
                outcome = "stream_error"
                provider.breaker.record_failure()
                log.warning("stream_broken", model=spec.name, provider=spec.provider, error=type(exc).__name__)
                error = {
                    "error": {
                        "message": f"{spec.provider} stream broke: {type(exc).__name__}",
                        "type": "upstream_error",
                    }
                }
                yield f"data: {json.dumps(error)}\n\n"
            finally:
                await response.aclose()
                accounting.attempt(spec, outcome)
                tokens = usage_tokens(usage) or (route.prompt_tokens, max(1, chars // CHARS_PER_TOKEN))
                accounting.usage(spec, *tokens)

        return StreamingResponse(
            events(),
            media_type="text/event-stream",
            headers=_route_headers(spec, route, failures) | {"Cache-Control": "no-cache"},
        )

    async def aclose(self) -> None:
        for p in self.providers.values():
            await p.aclose()


def _route_headers(spec: ModelSpec, route: Plan, failures: list) -> dict[str, str]:
    headers = {
        "X-Sophia-Model": spec.name,
        "X-Sophia-Provider": spec.provider,
        "X-Sophia-Fallbacks": str(len(failures)),
        "X-Sophia-Complexity": tier_name(route.complexity.tier),
        "X-Sophia-Estimated-Cost-USD": f"{route.estimated_cost(spec):.6f}",
    }
    if failures:
        headers["X-Sophia-Failed"] = ", ".join(f"{s.name}@{s.provider}={f.reason}" for s, f in failures)
    return headers


def _all_failed(failures: list[tuple[ModelSpec, ProviderFailure]]) -> Response:
    attempts = [{"model": s.name, "provider": s.provider, "reason": f.reason, "detail": str(f)} for s, f in failures]
    detail = "every model that fits failed: " + "; ".join(
        f"{a['model']} ({a['reason']}): {a['detail']}" for a in attempts
    )
    shedding = all(f.reason in ("circuit_open", "rate_limited", "unavailable") for _, f in failures)
    if not shedding:
        return problem(502, "Upstream error", detail, attempts=attempts)
    response = problem(503, "Model providers unavailable", detail, attempts=attempts)
    waits = [f.retry_after for _, f in failures if f.retry_after is not None]
    response.headers["Retry-After"] = str(max(1, math.ceil(min(waits)))) if waits else "5"
    return response


def _delta_chars(choices: Any) -> int:
    total = 0
    for choice in choices if isinstance(choices, list) else []:
        delta = choice.get("delta") or {} if isinstance(choice, dict) else {}
        total += len(delta.get("content") or "")
        for call in delta.get("tool_calls") or []:
            total += len((call.get("function") or {}).get("arguments") or "")
    return total


def _estimate_output(choices: Any) -> int:
    """Completion tokens when a provider sends no usage: the message's size."""
    messages = [c.get("message") for c in choices if isinstance(c, dict)] if isinstance(choices, list) else []
    return max(1, len(json.dumps(messages)) // CHARS_PER_TOKEN)


def _parse_request(body: Any, headers) -> tuple[Complexity, Limits]:
    if not isinstance(body, dict) or not isinstance(body.get("messages"), list) or not body["messages"]:
        raise BadRequest("the body must be an OpenAI chat completion request with a non-empty `messages` list")
    if body.get("model") is not None and not isinstance(body["model"], str):
        raise BadRequest('`model` must be a string: a name from GET /v1/models, or "auto"')
    try:
        complexity = from_header(headers["x-sophia-complexity"]) if "x-sophia-complexity" in headers else estimate(body)
    except ValueError as exc:
        raise BadRequest(str(exc)) from exc
    limits = Limits()
    for header, attr, kind in (
        ("x-sophia-max-latency-ms", "max_latency_ms", int),
        ("x-sophia-max-cost-usd", "max_cost_usd", float),
    ):
        if header in headers:
            try:
                value = kind(headers[header])
                if value < 0 or not math.isfinite(value):
                    raise ValueError
            except ValueError as exc:
                raise BadRequest(f"{header} must be a non-negative number, not {headers[header]!r}") from exc
            setattr(limits, attr, value)
    return complexity, limits


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    coordinator = Coordinator(settings)
    app = create_app(settings, readiness={"providers": coordinator.ready}, on_shutdown=[coordinator.aclose])
    coordinator.accounting = Accounting(app.state.registry, coordinator.providers.values())
    app.state.coordinator = coordinator
    if not coordinator.configured():
        log.warning("no_provider", detail=NO_PROVIDER)

    # Spending the organisation's model keys needs the model scope (any route under /v1).
    @app.post(
        "/v1/chat/completions",
        openapi_extra={"requestBody": CHAT_REQUEST_BODY},
        dependencies=[Depends(require("models:use"))],
    )
    async def chat_completions(request: Request) -> Response:
        try:
            body = parse_body(await request.body())
            complexity, limits = _parse_request(body, request.headers)
            return await coordinator.complete(body, complexity, limits, request.headers.get("x-request-id"))
        except BadRequest as exc:
            return problem(400, "Bad Request", str(exc), **({"errors": exc.errors} if exc.errors else {}))
        except UnknownModel as exc:
            return problem(404, "Unknown model", str(exc))
        except NoRoute as exc:
            return problem(422, "No model within the limits", str(exc), limit=exc.limit)
        except NoProvider as exc:
            return problem(503, "No model provider", str(exc))

    @app.get("/v1/models", dependencies=[Depends(require("models:use"))])
    async def models() -> dict[str, Any]:
        return coordinator.models()

    return app


def __getattr__(name: str) -> Any:
    # `uvicorn agno_coordinator.main:app` (no --factory) builds the app on first access, not at import.
    if name == "app":
        return build_app()
    raise AttributeError(name)
