"""The fuzzer over agno-teams' OpenAPI, against real peers on the fake HubSpot."""

from __future__ import annotations

from sophia_testing.fuzz import check, fuzz


def test_fuzz_agno_teams(teams_url: str) -> None:
    check(fuzz("agno-teams", teams_url))
