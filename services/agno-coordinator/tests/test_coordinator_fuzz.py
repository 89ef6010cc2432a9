"""The fuzzer over agno-coordinator's OpenAPI, against the fake providers."""

from __future__ import annotations

from agno_coordinator.main import build_app
from sophia_testing.fuzz import check, fuzz
from sophia_testing.servers import serve


def test_fuzz_agno_coordinator(make_settings) -> None:
    with serve(build_app(make_settings())) as url:
        check(fuzz("agno-coordinator", url))
