"""`make traces`: an OTLP/HTTP receiver on 127.0.0.1:4318 (sophia_testing's, the one the tracing
test uses) that prints each trace as a tree once it has been quiet for two seconds. Point
services at it: `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make dev`.

`make traces TASK=<agent task id>` (or `TRACE=<trace id>`): the same tree, read from the local
stack's Jaeger (its query API, through `kubectl port-forward`)."""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from typing import Any

import local_stack
import uvicorn

from sophia_testing.otlp_receiver import OtlpReceiver, ReceivedSpan, build_otlp_receiver

QUIET_SECONDS = 2.0


def tree(spans: list[ReceivedSpan]) -> list[str]:
    ids = {s.span_id for s in spans}
    lines: list[str] = []

    def walk(parent: str | None, depth: int) -> None:
        for span in spans:
            if (span.parent_span_id if span.parent_span_id in ids else None) == parent:
                lines.append(f"{'  ' * depth}{span.service}  {span.kind}  {span.name}")
                walk(span.span_id, depth + 1)

    walk(None, 1)
    return lines


def printer(receiver: OtlpReceiver) -> None:
    shown: set[str] = set()
    seen_at: dict[str, tuple[int, float]] = {}
    while True:
        time.sleep(0.5)
        now = time.monotonic()
        by_trace: dict[str, list[ReceivedSpan]] = {}
        for span in list(receiver.spans):
            by_trace.setdefault(span.trace_id, []).append(span)
        for trace_id, spans in by_trace.items():
            count, since = seen_at.get(trace_id, (0, now))
            if len(spans) != count:
                seen_at[trace_id] = (len(spans), now)
            elif trace_id not in shown and now - since >= QUIET_SECONDS:
                shown.add(trace_id)
                print(f"trace {trace_id} ({len(spans)} spans)", *tree(spans), sep="\n", flush=True)


def from_jaeger(trace: dict[str, Any]) -> list[ReceivedSpan]:
    """A trace of Jaeger's query API (GET /api/traces/{id}: spans, their processes, tags) as spans."""
    services = {pid: p["serviceName"] for pid, p in trace["processes"].items()}
    spans = []
    for span in sorted(trace["spans"], key=lambda s: s["startTime"]):
        tags = {t["key"]: t["value"] for t in span.get("tags", [])}
        parent = next((r["spanID"] for r in span.get("references", []) if r["refType"] == "CHILD_OF"), None)
        spans.append(
            ReceivedSpan(
                service=services[span["processID"]],
                trace_id=span["traceID"],
                span_id=span["spanID"],
                parent_span_id=parent,
                name=span["operationName"],
                kind=tags.pop("span.kind", "internal"),
                attributes=tags,
            )
        )
    return spans


def task_trace(jaeger: str, task_id: str) -> list[dict[str, Any]]:
    """The traces holding the worker's run of an agent task (its span carries `sophia.task.id`)."""
    tags = json.dumps({"sophia.task.id": task_id})
    _, found = local_stack.jaeger_get(jaeger, "/api/traces", service="mcp-agents", tags=tags)
    return found.get("data") or []


def print_from_jaeger(task_id: str | None, trace_id: str | None) -> int:
    with local_stack.jaeger_query() as jaeger:
        if trace_id:
            _, found = local_stack.jaeger_get(jaeger, f"/api/traces/{trace_id}")
            traces = found.get("data") or []
        else:
            traces = task_trace(jaeger, task_id or "")
    if not traces:
        print(f"[traces] no trace in Jaeger for {'trace ' + trace_id if trace_id else 'task ' + str(task_id)}")
        return 1
    for trace in traces:
        spans = from_jaeger(trace)
        print(f"trace {trace['traceID']} ({len(spans)} spans)", *tree(spans), sep="\n", flush=True)
    return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    parser.add_argument("--task", help="print the trace of this agent task from the local stack's Jaeger")
    parser.add_argument("--trace", help="print this trace from the local stack's Jaeger")
    args = parser.parse_args()
    if args.task or args.trace:
        sys.exit(print_from_jaeger(args.task, args.trace))
    port = args.port
    receiver = OtlpReceiver()
    threading.Thread(target=printer, args=(receiver,), daemon=True).start()
    print(f"[traces] OTLP/HTTP on http://127.0.0.1:{port}; traces print here", flush=True)
    uvicorn.run(build_otlp_receiver(receiver), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
