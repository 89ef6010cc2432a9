"""The fuzzer over agno-coordinator's OpenAPI, against the fake providers."""

from __future__ import annotations

from agno_coordinator.main import build_app

from tests.services.conftest import serve
from tests.services.fuzz import check, fuzz


def test_fuzz_agno_coordinator(make_settings) -> None:
    with serve(build_app(make_settings())) as url:
        check(fuzz("agno-coordinator", url))
