"""A property-based fuzzer over a running service's OpenAPI (schemathesis on hypothesis):
every operation, valid and invalid examples, a fixed seed and a bounded number of examples,
so a run is deterministic and takes a few seconds. It checks the contract, not only the
status: no 5xx, only documented status codes and content types, bodies that match their
documented schemas."""

from __future__ import annotations

import contextlib
import time
from dataclasses import dataclass, field

import httpx
import schemathesis
from hypothesis import HealthCheck, Phase, given, seed, settings
from hypothesis.errors import Unsatisfiable
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import (
    content_type_conformance,
    response_schema_conformance,
    status_code_conformance,
)

CHECKS = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
SEED = 12  # fixed: the same examples every run


@dataclass
class FuzzReport:
    service: str
    operations: int = 0
    examples: int = 0
    server_errors: int = 0
    violations: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def line(self) -> str:
        return (
            f"fuzz {self.service}: {self.operations} operations, {self.examples} examples, "
            f"{self.server_errors} server errors, {len(self.violations)} contract violations, {self.seconds:.1f} s"
        )


def fuzz(service: str, base_url: str, *, examples: int = 5, skip: tuple[str, ...] = ()) -> FuzzReport:
    """Every operation of the service's /openapi.json, `examples` positive and as many negative cases each."""
    spec = httpx.get(f"{base_url}/openapi.json", timeout=30).json()
    schema = schemathesis.openapi.from_dict(spec)
    report = FuzzReport(service)
    started = time.monotonic()
    for result in schema.get_all_operations():
        operation = result.ok()
        if operation.label in skip:
            continue
        report.operations += 1
        for mode in (schemathesis.GenerationMode.POSITIVE, schemathesis.GenerationMode.NEGATIVE):

            @seed(SEED)
            @settings(
                max_examples=examples,
                database=None,
                deadline=None,
                derandomize=True,
                phases=[Phase.explicit, Phase.generate],  # no shrinking: every failure is recorded as found
                suppress_health_check=list(HealthCheck),
            )
            @given(case=operation.as_strategy(generation_mode=mode))
            def run(case) -> None:
                report.examples += 1
                response = case.call(base_url=base_url, timeout=30)
                if response.status_code >= 500:
                    report.server_errors += 1
                try:
                    case.validate_response(response, checks=CHECKS)
                except (Exception, BaseExceptionGroup) as exc:  # a check failed: record it, carry on fuzzing
                    first = str(exc).strip().splitlines()[:6]
                    report.violations.append(f"{case.operation.label} -> {response.status_code}: {first}")

            # Unsatisfiable: nothing invalid to send (an operation without parameters or body).
            with contextlib.suppress(Unsatisfiable):
                run()
    report.seconds = time.monotonic() - started
    return report


def check(report: FuzzReport) -> None:
    print(report.line())  # the figures, with -s
    assert report.server_errors == 0 and report.violations == [], "\n".join([report.line(), *report.violations[:20]])
