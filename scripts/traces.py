"""`make traces`: an OTLP/HTTP receiver on 127.0.0.1:4318 (sophia_testing's, the one the tracing
test uses) that prints each trace as a tree once it has been quiet for two seconds. Point
services at it: `OTEL_EXPORTER_OTLP_ENDPOINT=http://127.0.0.1:4318 make dev`."""

from __future__ import annotations

import argparse
import threading
import time

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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--port", type=int, default=4318)
    port = parser.parse_args().port
    receiver = OtlpReceiver()
    threading.Thread(target=printer, args=(receiver,), daemon=True).start()
    print(f"[traces] OTLP/HTTP on http://127.0.0.1:{port}; traces print here", flush=True)
    uvicorn.run(build_otlp_receiver(receiver), host="127.0.0.1", port=port, log_level="warning")


if __name__ == "__main__":
    main()
