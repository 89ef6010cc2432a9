"""Evaluation time of the prod stack under Pulumi mocks (target: < 3 s for the whole stack)."""

from __future__ import annotations

import statistics
import sys
import time

started = time.perf_counter()
from infra.render import kubernetes_objects, offline_config, run_program  # noqa: E402 (timed import)

imported = time.perf_counter() - started
TARGET_SECONDS = 3.0
RUNS = 5


def main() -> int:
    config = offline_config("prod")
    timings, registered, objects = [], 0, 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        resources = run_program("prod", config)
        timings.append(time.perf_counter() - t0)
        registered, objects = len(resources), len(kubernetes_objects(resources))
    first, median = timings[0], statistics.median(timings)
    print(f"bench-program: prod stack under mocks: {registered} resources registered ({objects} Kubernetes objects)")
    print(
        f"bench-program: imports {imported:.2f}s, first evaluation {first:.3f}s, "
        f"median of {RUNS} {median:.3f}s, max {max(timings):.3f}s (target < {TARGET_SECONDS:.0f}s)"
    )
    ok = imported + first < TARGET_SECONDS
    print(f"bench-program: {'within' if ok else 'OVER'} target (imports + first evaluation {imported + first:.2f}s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
