"""agno-teams against hostile ids (issue 12): a company or deal id becomes part of
mcp-hubspot's URLs, so only HubSpot's id grammar passes; nothing else reaches HubSpot."""

from __future__ import annotations

import httpx

from sophia_testing.hubspot_fake import FakeHubSpot


def test_ids_outside_hubspots_grammar_never_reach_hubspot(teams_url: str, crm: FakeHubSpot) -> None:
    crm.targets.clear()
    for bad in ("501%3Farchived%3Dtrue", "%2e%2e", "501%23x", "501%20", "abc", "1" * 21, "%00"):
        for path in (f"/teams/client-health/companies/{bad}", f"/teams/sales/deals/{bad}/signals"):
            answer = httpx.get(teams_url + path, timeout=30)
            assert answer.status_code in (404, 422), (path, answer.status_code)
            assert answer.headers["content-type"] == "application/problem+json"
        review = httpx.post(f"{teams_url}/teams/client-health/companies/{bad}/review", json={}, timeout=30)
        assert review.status_code in (404, 422)
    assert crm.targets == []
    refused = httpx.post(f"{teams_url}/teams/client-health/companies/501/review", json={"focus": "\u0000"}, timeout=30)
    assert refused.status_code == 422
