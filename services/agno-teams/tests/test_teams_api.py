"""The HTTP API through a real server against real peers: mcp-hubspot (on the fake HubSpot)
and mcp-context (offline embedder, embedded Qdrant). No model is needed here."""

from __future__ import annotations

import httpx

from sophia_testing.servers import serve

from .teams_data import AS_OF, MODEL_KEY, teams_settings


def test_client_health_scores_an_engaged_client_from_the_crm(teams_url: str) -> None:
    response = httpx.get(f"{teams_url}/teams/client-health/companies/501", params=AS_OF, timeout=30)
    assert response.status_code == 200, response.text
    body = response.json()
    assert body["company"] == "Acme Corp" and body["score"] == 90 and body["band"] == "healthy"
    reasons = {r["factor"]: r for r in body["reasons"]}
    assert reasons["last_engagement"]["evidence"] == "last engagement 3 days ago"
    assert reasons["engagement_volume"] == {
        "factor": "engagement_volume",
        "points": 5,
        "evidence": "7 engagements in the last 90 days",
    }
    assert reasons["open_pipeline"]["evidence"] == "2 open deals worth 16,000"
    assert reasons["overdue_deals"]["points"] == -5 and "Acme upsell (12 days)" in reasons["overdue_deals"]["evidence"]
    assert reasons["support_severe"]["points"] == 0  # Acme's only support memory is resolved


def test_client_health_of_a_silent_client_with_an_outage_is_critical(teams_url: str) -> None:
    body = httpx.get(f"{teams_url}/teams/client-health/companies/502", params=AS_OF, timeout=30).json()
    assert body["score"] == 5 and body["band"] == "critical"
    reasons = {r["factor"]: r for r in body["reasons"]}
    assert reasons["last_engagement"] == {
        "factor": "last_engagement",
        "points": -35,
        "evidence": "last engagement 120 days ago",
    }
    assert reasons["lost_deals"]["evidence"] == "1 deals lost in the last 180 days: Globex expansion"
    assert reasons["support_severe"]["points"] == -15 and "three-day outage" in reasons["support_severe"]["evidence"]


def test_deal_signals_from_the_deal_and_its_engagements(teams_url: str) -> None:
    renewal = httpx.get(f"{teams_url}/teams/sales/deals/9001/signals", params=AS_OF, timeout=30).json()
    assert renewal["deal"] == "Acme renewal" and renewal["amount"] == 12000.0
    assert renewal["stage_age_days"] == 10 and renewal["days_since_last_touch"] == 3 and renewal["engagements"] == 2
    assert renewal["days_to_close"] == 20 and renewal["risk"] == "low"
    upsell = httpx.get(f"{teams_url}/teams/sales/deals/9002/signals", params=AS_OF, timeout=30).json()
    assert upsell["close_date_slip_days"] == 12 and upsell["stage_age_days"] == 75
    assert [f["flag"] for f in upsell["risk_flags"]] == ["stale", "stuck_in_stage", "close_date_passed"]
    assert upsell["risk"] == "high"


def test_unknown_records_are_404_problems_naming_the_peer(teams_url: str) -> None:
    for path in ("/teams/client-health/companies/777", "/teams/sales/deals/777/signals"):
        response = httpx.get(f"{teams_url}{path}", timeout=30)
        assert response.status_code == 404, response.text
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["peer"] == "mcp-hubspot" and "404" in response.json()["detail"]


def test_without_a_model_key_scoring_works_and_team_runs_say_what_to_set(no_model_url: str) -> None:
    assert (
        httpx.get(f"{no_model_url}/teams/client-health/companies/501", params=AS_OF, timeout=30).json()["score"] == 90
    )
    assert httpx.get(f"{no_model_url}/teams/sales/deals/9001/signals", timeout=30).status_code == 200
    for path in ("/teams/client-health/companies/501/review", "/teams/sales/deals/9001/analysis"):
        response = httpx.post(f"{no_model_url}{path}", timeout=30)
        assert response.status_code == 503
        problem = response.json()
        assert problem["title"] == "Model not configured"
        assert "MODEL_API_KEY" in problem["detail"] and "AGNO_COORDINATOR_URL" not in problem["detail"]
    assert httpx.get(f"{no_model_url}/teams").json()["model"]["configured"] is False
    metrics = httpx.get(f"{no_model_url}/metrics").text
    assert 'teams_runs_total{outcome="not_configured",team="ClientHealthTeam"} 1.0' in metrics
    assert "client_health_score_count 1.0" in metrics


def test_readiness_asks_both_peers(teams_url: str) -> None:
    response = httpx.get(f"{teams_url}/readyz", timeout=10)
    assert response.status_code == 200 and response.json() == {
        "status": "ready",
        "checks": [],
        "optional": ["mcp-context", "mcp-hubspot"],
    }


def test_a_coordinator_without_providers_is_a_503_that_says_where_to_configure(
    mcp_hubspot_url: str, mcp_context_url: str
) -> None:
    """The provider keys live on agno-coordinator: a real one with none configured."""
    from agno_coordinator.main import Settings as CoordinatorSettings
    from agno_coordinator.main import build_app as build_coordinator
    from agno_teams.main import build_app

    with (
        serve(build_coordinator(CoordinatorSettings())) as coordinator,
        serve(
            build_app(
                teams_settings(
                    mcp_hubspot_url=mcp_hubspot_url,
                    mcp_context_url=mcp_context_url,
                    agno_coordinator_url=coordinator,
                    model_api_key=MODEL_KEY,
                )
            )
        ) as url,
    ):
        review = httpx.post(f"{url}/teams/client-health/companies/501/review", timeout=30)
        score = httpx.get(f"{url}/teams/client-health/companies/501", params=AS_OF, timeout=30)
    assert review.status_code == 503 and review.json()["title"] == "Model not configured"
    assert "agno-coordinator has no model available" in review.json()["detail"]
    assert "OPENAI_API_KEY" in review.json()["detail"]
    assert score.status_code == 200 and score.json()["score"] == 90  # the deterministic part still answers
