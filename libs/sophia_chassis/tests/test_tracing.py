"""Tracing's parts that need no process of their own (the whole, across four service processes, is
tests/integration/test_agent_answers_from_a_repository.py): the sampler, the queue-message
carrier, trace ids in log lines, and no tracing without an endpoint."""

from __future__ import annotations

import json
import subprocess
import sys

import httpx
import pytest
import structlog
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import NonRecordingSpan, SpanContext, SpanKind, TraceFlags

from sophia_chassis import ServiceSettings, create_app
from sophia_chassis.logs import add_trace_ids
from sophia_chassis.tracing import REQUEST_ID_FIELD, configure_tracing, consuming, producing, sampler
from sophia_testing.servers import serve


def recording(ratio: float = 1.0) -> tuple[trace.Tracer, InMemorySpanExporter]:
    exporter = InMemorySpanExporter()
    provider = TracerProvider(sampler=sampler(ratio))
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    return provider.get_tracer("test"), exporter


def parent(sampled: bool) -> trace.Context:
    flags = TraceFlags(TraceFlags.SAMPLED if sampled else TraceFlags.DEFAULT)
    remote = SpanContext(0x0AF7651916CD43DD8448EB211C80319C, 0xB7AD6B7169203331, is_remote=True, trace_flags=flags)
    return trace.set_span_in_context(NonRecordingSpan(remote))


def test_a_trace_starts_at_an_entry_point_and_never_at_a_lone_client_call() -> None:
    tracer, exporter = recording()
    with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
        with tracer.start_as_current_span("XADD", kind=SpanKind.CLIENT):
            pass
    with tracer.start_as_current_span("XREADGROUP", kind=SpanKind.CLIENT):  # a worker's idle poll
        pass
    with tracer.start_as_current_span("process agents:tasks", kind=SpanKind.CONSUMER):
        pass
    assert sorted(s.name for s in exporter.get_finished_spans()) == ["GET /x", "XADD", "process agents:tasks"]


def test_a_hop_follows_its_callers_decision_whatever_its_own_ratio() -> None:
    tracer, exporter = recording(ratio=0.0)
    with tracer.start_as_current_span("kept", context=parent(sampled=True), kind=SpanKind.SERVER):
        pass
    tracer, exporter_all = recording(ratio=1.0)
    with tracer.start_as_current_span("dropped", context=parent(sampled=False), kind=SpanKind.SERVER):
        pass
    assert [s.name for s in exporter.get_finished_spans()] == ["kept"]
    assert exporter_all.get_finished_spans() == ()


def test_the_ratio_decides_where_a_trace_starts() -> None:
    tracer, exporter = recording(ratio=0.25)
    for _ in range(2000):
        with tracer.start_as_current_span("GET /x", kind=SpanKind.SERVER):
            pass
    assert 350 < len(exporter.get_finished_spans()) < 650  # 500 expected; 7 standard deviations apart


@pytest.fixture
def global_tracer(monkeypatch) -> tuple[trace.Tracer, InMemorySpanExporter]:
    """producing/consuming use the process' tracer; this test's stands in for it (the process-wide
    provider can be set once, and other tests' apps must stay untraced)."""
    tracer, exporter = recording()
    monkeypatch.setattr(trace, "get_tracer", lambda *a, **k: tracer)
    return tracer, exporter


def test_a_queued_message_carries_the_trace_and_request_id_to_its_consumer(global_tracer) -> None:
    tracer, exporter = global_tracer
    with structlog.contextvars.bound_contextvars(request_id="req-1"):
        with tracer.start_as_current_span("POST /agents/tasks", kind=SpanKind.SERVER) as request:
            with producing("agents:tasks") as fields:
                pass
    assert fields[REQUEST_ID_FIELD] == "req-1" and fields["traceparent"].startswith("00-")
    with consuming(fields, "agents:tasks", {"sophia.task.id": "t1"}) as span:
        assert structlog.contextvars.get_contextvars()[REQUEST_ID_FIELD] == "req-1"
        logged = add_trace_ids(None, "info", {"event": "x"})
    assert REQUEST_ID_FIELD not in structlog.contextvars.get_contextvars()  # unbound after
    spans = {s.name: s for s in exporter.get_finished_spans()}
    send, process = spans["send agents:tasks"], spans["process agents:tasks"]
    trace_id = request.get_span_context().trace_id
    assert send.context.trace_id == process.context.trace_id == trace_id
    assert send.parent.span_id == request.get_span_context().span_id
    assert process.parent.span_id == send.context.span_id and process.kind == SpanKind.CONSUMER
    assert process.attributes["messaging.destination.name"] == "agents:tasks"
    assert logged["trace_id"] == f"{trace_id:032x}" and logged["span_id"] == f"{span.get_span_context().span_id:016x}"


def test_a_message_without_trace_context_starts_its_own_trace(global_tracer) -> None:
    _, exporter = global_tracer
    with consuming({"task_id": "t1"}, "agents:tasks"):  # queued again by requeue_lost, say
        pass
    (process,) = exporter.get_finished_spans()
    assert process.parent is None and process.context.trace_id != 0x0AF7651916CD43DD8448EB211C80319C


def test_no_endpoint_no_tracing_and_log_lines_without_trace_ids(capsys) -> None:
    assert configure_tracing(ServiceSettings()) is False
    app = create_app(ServiceSettings(service_name="untraced"))

    @app.get("/work")
    async def work():
        structlog.get_logger().info("working")
        return {}

    header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"
    with serve(app) as url:
        assert httpx.get(f"{url}/work", headers={"traceparent": header}).status_code == 200
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    working = [line for line in lines if line.get("event") == "working"]
    assert working and working[0]["request_id"] and "trace_id" not in working[0]


def test_a_service_without_redis_or_psycopg_starts_with_tracing_on() -> None:
    """agno-teams' image has neither library, and their instrumentations import them: tracing on,
    it must still start (in its own process: the provider and the instrumentations are global)."""
    code = (
        "import sys\n"
        "sys.modules['psycopg'] = sys.modules['redis'] = None  # as in an image without them\n"
        "from sophia_chassis import ServiceSettings\n"
        "from sophia_chassis.tracing import configure_tracing\n"
        "settings = ServiceSettings(service_name='t', otel_exporter_otlp_endpoint='http://127.0.0.1:9')\n"
        "print(configure_tracing(settings))\n"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert done.returncode == 0 and done.stdout.strip() == "True", done.stderr
