"""Distributed tracing with OpenTelemetry: a span for every request served (FastAPI's own
instrumentation), every outbound HTTP call (httpx), Redis command and PostgreSQL query, W3C
trace context read from and written to every hop — queued messages included (`producing`,
`consuming`) — exported in batches over OTLP/HTTP to the collector the platform names in
OTEL_EXPORTER_OTLP_ENDPOINT. No endpoint, no tracing: nothing is instrumented, nothing costs.

Sampling is parent-based: a hop follows its caller's decision, so a trace is kept or dropped
whole; a trace starts at a request or a message with probability TRACE_SAMPLE_RATIO (per stack).
A Redis or PostgreSQL call with no request around it (a worker's idle poll, a readiness probe's
ping) starts no trace: it would only be noise."""

from __future__ import annotations

import importlib.util
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import structlog
from opentelemetry import propagate, trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor, SpanExporter
from opentelemetry.sdk.trace.sampling import (
    Decision,
    ParentBased,
    Sampler,
    SamplingResult,
    TraceIdRatioBased,
)
from opentelemetry.trace import Link, SpanKind

from sophia_chassis.settings import ServiceSettings

# The message field that carries the request id beside the W3C fields (traceparent, tracestate).
REQUEST_ID_FIELD = "request_id"
_provider: TracerProvider | None = None


class EntryPoints(Sampler):
    """The root sampler: a trace may start where work enters a service (a request served, a message
    sent or processed, a span of ours), at `ratio`; never at a client call with no parent."""

    def __init__(self, ratio: float):
        self._ratio = TraceIdRatioBased(ratio)

    def should_sample(
        self,
        parent_context,
        trace_id: int,
        name: str,
        kind: SpanKind | None = None,
        attributes=None,
        links: Sequence[Link] | None = None,
        trace_state=None,
    ) -> SamplingResult:
        if kind == SpanKind.CLIENT:
            return SamplingResult(Decision.DROP)
        return self._ratio.should_sample(parent_context, trace_id, name, kind, attributes, links, trace_state)

    def get_description(self) -> str:
        return f"EntryPoints{{{self._ratio.get_description()}}}"


def sampler(ratio: float) -> Sampler:
    return ParentBased(root=EntryPoints(ratio))


def configure_tracing(settings: ServiceSettings, exporter: SpanExporter | None = None) -> bool:
    """Once per process (OpenTelemetry's provider is process-wide): the provider, its batch export
    and the client instrumentations. Returns whether tracing is on. `exporter` replaces OTLP (tests)."""
    global _provider
    if _provider is not None:
        return True
    endpoint = settings.otel_exporter_otlp_endpoint
    if exporter is None and not endpoint:
        return False
    if exporter is None:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        exporter = OTLPSpanExporter(endpoint=f"{endpoint.rstrip('/')}/v1/traces")
    provider = TracerProvider(
        resource=Resource.create({"service.name": settings.service_name, "service.namespace": "sophia"}),
        sampler=sampler(settings.trace_sample_ratio),
    )
    # Batched, off the request path: a span costs the request an append to a queue.
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    _instrument_clients(provider)
    _provider = provider
    return True


def _instrument_clients(provider: TracerProvider) -> None:
    from opentelemetry.instrumentation.httpx import HTTPXClientInstrumentor

    # The MCP SDK traces its own calls and carries the context in `_meta`.
    HTTPXClientInstrumentor().instrument(tracer_provider=provider)
    # Not every image has redis or psycopg, and their instrumentations import them on import:
    # instrument only the libraries this service has.
    if importlib.util.find_spec("redis") is not None:
        from opentelemetry.instrumentation.redis import RedisInstrumentor

        RedisInstrumentor().instrument(tracer_provider=provider)
    if importlib.util.find_spec("psycopg") is not None:
        from opentelemetry.instrumentation.psycopg import PsycopgInstrumentor

        PsycopgInstrumentor().instrument(tracer_provider=provider, enable_commenter=False)


def flush(timeout_seconds: float = 5.0) -> None:
    """Export what is buffered (at shutdown, so a stopping pod's last spans are not lost)."""
    if _provider is not None:
        _provider.force_flush(int(timeout_seconds * 1000))


def fastapi_telemetry(enabled: bool, untraced_paths: Sequence[str]) -> dict[str, Any]:
    """FastAPI's native OpenTelemetry instrumentation (`FastAPI(telemetry=...)`): server spans
    only — the request metrics are prometheus-client's and the logs structlog's — and none for
    the probes and scrapes. Off unless tracing is configured, whatever the global provider."""
    quiet = frozenset(untraced_paths)
    exclude: Callable[[Mapping[str, Any]], bool] = lambda scope: scope.get("path") in quiet  # noqa: E731
    return {
        "tracing": enabled,
        "metrics": False,
        "logs": False,
        "operation_spans": False,  # a span per dependency and serialisation: cost without insight here
        "exclude": exclude,
    }


@contextmanager
def producing(
    destination: str, attributes: Mapping[str, Any] | None = None, *, system: str = "redis"
) -> Iterator[dict[str, str]]:
    """A PRODUCER span for a message sent to `destination`; yields the fields to put in the message
    (W3C trace context and the request id) so whoever consumes it continues this trace."""
    tracer = trace.get_tracer(__name__)
    with tracer.start_as_current_span(
        f"send {destination}",
        kind=SpanKind.PRODUCER,
        attributes={
            "messaging.system": system,
            "messaging.operation.type": "send",
            "messaging.destination.name": destination,
            **(attributes or {}),
        },
    ):
        fields: dict[str, str] = {}
        propagate.inject(fields)
        request_id = structlog.contextvars.get_contextvars().get(REQUEST_ID_FIELD)
        if request_id:
            fields[REQUEST_ID_FIELD] = request_id
        yield fields


@contextmanager
def consuming(
    fields: Mapping[str, str],
    destination: str,
    attributes: Mapping[str, Any] | None = None,
    *,
    system: str = "redis",
) -> Iterator[trace.Span]:
    """A CONSUMER span continuing the trace a message carries (`producing`'s fields), with the
    request id that sent it bound to every log line meanwhile."""
    tracer = trace.get_tracer(__name__)
    request_id = fields.get(REQUEST_ID_FIELD)
    with (
        structlog.contextvars.bound_contextvars(**({REQUEST_ID_FIELD: request_id} if request_id else {})),
        tracer.start_as_current_span(
            f"process {destination}",
            context=propagate.extract(fields),
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": system,
                "messaging.operation.type": "process",
                "messaging.destination.name": destination,
                **(attributes or {}),
            },
        ) as span,
    ):
        yield span
