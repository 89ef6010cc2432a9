"""An OTLP/HTTP trace receiver for tests: what an OpenTelemetry Collector's `otlp` receiver does on
POST /v1/traces — binary protobuf `ExportTraceServiceRequest` (gzip-encoded or not), answered with
an `ExportTraceServiceResponse` — keeping each span it decodes for the test to inspect."""

from __future__ import annotations

import gzip
import threading
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request, Response
from google.protobuf.message import DecodeError
from opentelemetry.proto.collector.trace.v1.trace_service_pb2 import (
    ExportTraceServiceRequest,
    ExportTraceServiceResponse,
)
from opentelemetry.proto.common.v1.common_pb2 import AnyValue
from opentelemetry.proto.trace.v1.trace_pb2 import Span as SpanProto

PROTOBUF = "application/x-protobuf"
KINDS = {v: k.removeprefix("SPAN_KIND_").lower() for k, v in SpanProto.SpanKind.items()}


@dataclass(frozen=True)
class ReceivedSpan:
    service: str  # the resource's service.name
    trace_id: str  # hex, as logged
    span_id: str
    parent_span_id: str | None
    name: str
    kind: str  # server, client, producer, consumer, internal
    attributes: dict[str, Any] = field(default_factory=dict)


def service_hops(spans: list[ReceivedSpan]) -> list[tuple[ReceivedSpan, ReceivedSpan]]:
    """(caller's span, callee's span) for every span whose parent belongs to another service, each
    asserted to be the caller's client span over the callee's server span: the trace context crossed
    the wire as W3C headers and each side recorded its half."""
    by_id = {s.span_id: s for s in spans}
    hops = []
    for span in spans:
        parent = by_id.get(span.parent_span_id or "")
        if parent is not None and parent.service != span.service:
            assert (parent.kind, span.kind) == ("client", "server"), (parent, span)
            hops.append((parent, span))
    return hops


def _value(value: AnyValue) -> Any:
    which = value.WhichOneof("value")
    if which == "array_value":
        return [_value(v) for v in value.array_value.values]
    if which == "kvlist_value":
        return {kv.key: _value(kv.value) for kv in value.kvlist_value.values}
    return getattr(value, which) if which else None


class OtlpReceiver:
    def __init__(self) -> None:
        self.spans: list[ReceivedSpan] = []
        self.requests = 0
        self._lock = threading.Lock()

    def receive(self, request: ExportTraceServiceRequest) -> None:
        received = []
        for resource_spans in request.resource_spans:
            resource = {kv.key: _value(kv.value) for kv in resource_spans.resource.attributes}
            for scope_spans in resource_spans.scope_spans:
                for span in scope_spans.spans:
                    received.append(
                        ReceivedSpan(
                            service=resource.get("service.name", ""),
                            trace_id=span.trace_id.hex(),
                            span_id=span.span_id.hex(),
                            parent_span_id=span.parent_span_id.hex() or None,
                            name=span.name,
                            kind=KINDS.get(span.kind, "unspecified"),
                            attributes={kv.key: _value(kv.value) for kv in span.attributes},
                        )
                    )
        with self._lock:
            self.requests += 1
            self.spans.extend(received)

    def trace(self, trace_id: str) -> list[ReceivedSpan]:
        with self._lock:
            return [s for s in self.spans if s.trace_id == trace_id]


def build_otlp_receiver(receiver: OtlpReceiver) -> FastAPI:
    app = FastAPI(title="otlp-receiver")

    @app.post("/v1/traces")
    async def traces(request: Request) -> Response:
        if request.headers.get("content-type", "").split(";")[0].strip() != PROTOBUF:
            return Response("only binary protobuf (application/x-protobuf) is accepted here", status_code=415)
        body = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            body = gzip.decompress(body)
        message = ExportTraceServiceRequest()
        try:
            message.ParseFromString(body)
        except DecodeError as exc:
            return Response(f"not an ExportTraceServiceRequest: {exc}", status_code=400)
        receiver.receive(message)
        return Response(ExportTraceServiceResponse().SerializeToString(), media_type=PROTOBUF)

    return app
