"""`make e2e`: the real Pulumi engine against the real local control plane (toolchain/)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "scripts"))
sys.path.insert(0, str(Path(__file__).resolve().parent))  # steps.py, shared by the e2e modules

TIMINGS: list[tuple[str, float]] = []


@pytest.fixture(scope="session")
def timings() -> list[tuple[str, float]]:
    return TIMINGS


def pytest_terminal_summary(terminalreporter) -> None:
    if TIMINGS:
        terminalreporter.write_line("e2e wall times: " + ", ".join(f"{label} {secs:.1f}s" for label, secs in TIMINGS))
