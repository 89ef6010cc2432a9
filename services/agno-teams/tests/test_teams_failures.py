"""Peer failures through real servers: HubSpot answering 500/429/slowly behind a real
mcp-hubspot, a peer that is down, an MCP endpoint gone for a team run, a team run too slow."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from fastapi import FastAPI, Request, Response

from sophia_testing.hubspot_fake import FakeHubSpot
from sophia_testing.openai_chat_fake import FakeChat, Reply
from sophia_testing.servers import free_port, serve

from .teams_data import AS_OF, MODEL_KEY, hubspot_app, teams_settings


@pytest.fixture
def peer_timeout() -> float:
    """The default peer timeout; a test about timeouts parametrizes a short one. A short one for
    every test would time out mcp-context's CPU-bound searches on a loaded machine."""
    return 5.0


@pytest.fixture
def stack(
    crm: FakeHubSpot, hubspot_url: str, mcp_context_url: str, coordinator_url: str, peer_timeout: float
) -> Iterator[str]:
    """A fresh mcp-hubspot and agno-teams per test, so one test's breaker state is not the next one's."""
    from agno_teams.main import build_app

    crm.faults.clear()
    with serve(hubspot_app(hubspot_url)) as hubspot:
        settings = teams_settings(
            mcp_hubspot_url=hubspot,
            mcp_context_url=mcp_context_url,
            peer_timeout_seconds=peer_timeout,
            agno_coordinator_url=coordinator_url,
            model_api_key=MODEL_KEY,
        )
        with serve(build_app(settings)) as url:
            yield url
    crm.faults.clear()


@pytest.mark.parametrize(
    ("fault", "status", "title", "detail"),
    [
        ("500", 502, "Upstream error", "502 after 2 attempts"),
        # HubSpot's rate limit says when to come back: passed on as busy (503 + Retry-After), not broken.
        ("429", 503, "Dependency unavailable", "503 after 2 attempts"),
    ],
)
def test_hubspot_failing_is_a_problem_naming_the_peer(
    stack: str, crm: FakeHubSpot, fault: str, status: int, title: str, detail: str
) -> None:
    crm.faults.extend([fault] * 2)  # agno-teams tries twice, mcp-hubspot once each
    response = httpx.get(f"{stack}/teams/client-health/companies/501", params=AS_OF, timeout=30)
    assert response.status_code == status, response.text
    problem = response.json()
    assert problem["title"] == title and problem["peer"] == "mcp-hubspot"
    assert detail in problem["detail"]
    assert ("Retry-After" in response.headers) == (status == 503)
    # One failure retried away is no failure.
    crm.faults.extend([fault])
    assert httpx.get(f"{stack}/teams/client-health/companies/501", params=AS_OF, timeout=30).json()["score"] == 90


@pytest.mark.parametrize("peer_timeout", [1.0])
def test_a_slow_peer_times_out_into_a_502_problem(stack: str, crm: FakeHubSpot) -> None:
    crm.slow_seconds = 2.0
    crm.faults.extend(["slow", "slow"])
    response = httpx.get(f"{stack}/teams/sales/deals/9001/signals", params=AS_OF, timeout=30)
    assert response.status_code == 502, response.text
    assert "ReadTimeout" in response.json()["detail"] and response.json()["peer"] == "mcp-hubspot"


def test_a_peer_that_is_down_degrades_readiness_and_answers_502(mcp_hubspot_url: str) -> None:
    from agno_teams.main import build_app

    dead = f"http://127.0.0.1:{free_port()}"
    with serve(build_app(teams_settings(mcp_hubspot_url=mcp_hubspot_url, mcp_context_url=dead))) as url:
        ready = httpx.get(f"{url}/readyz", timeout=10)
        # A peer's outage degrades the team service but keeps it in its Service (the scoring routes work).
        assert ready.status_code == 200 and list(ready.json()["degraded"]) == ["mcp-context"]
        response = httpx.get(f"{url}/teams/client-health/companies/501", timeout=30)
        assert response.status_code == 502 and response.json()["peer"] == "mcp-context"
        assert "ConnectError" in response.json()["detail"]
        # Deal signals need only mcp-hubspot: they still answer.
        assert httpx.get(f"{url}/teams/sales/deals/9001/signals", timeout=30).status_code == 200


def test_a_team_run_whose_mcp_endpoint_is_gone_is_a_503_problem(
    mcp_hubspot_url: str, mcp_context_url: str, coordinator_url: str, fresh_chat: FakeChat
) -> None:
    from agno_teams.main import build_app

    # REST still answers (scoring works) but /mcp is not served: a stand-in that forwards only REST.
    proxy = FastAPI()

    @proxy.api_route("/{path:path}", methods=["GET", "POST"])
    async def forward(path: str, request: Request) -> Response:
        if path.startswith("mcp"):
            return Response(status_code=404)
        async with httpx.AsyncClient(base_url=mcp_hubspot_url) as client:
            upstream = await client.request(
                request.method,
                f"/{path}",
                params=request.query_params,
                content=await request.body(),
                headers={"content-type": request.headers.get("content-type", "")},
            )
        return Response(upstream.content, upstream.status_code, media_type=upstream.headers.get("content-type"))

    with (
        serve(proxy) as hubspot,
        serve(
            build_app(
                teams_settings(
                    mcp_hubspot_url=hubspot,
                    mcp_context_url=mcp_context_url,
                    agno_coordinator_url=coordinator_url,
                    model_api_key=MODEL_KEY,
                )
            )
        ) as url,
    ):
        response = httpx.post(f"{url}/teams/sales/deals/9001/analysis", params=AS_OF, timeout=30)
        assert response.status_code == 503, response.text
        problem = response.json()
        assert problem["peer"] == "mcp-hubspot" and "MCP endpoint" in problem["detail"]
        assert fresh_chat.requests == []  # no model call was spent


def test_a_team_run_over_its_time_budget_is_a_504_problem(
    mcp_hubspot_url: str, mcp_context_url: str, coordinator_url: str, fresh_chat: FakeChat
) -> None:
    from agno_teams.main import build_app

    fresh_chat.fail("auto", "timeout")  # the fake answers after 6 s; the model timeout (10 s) is not reached
    settings = teams_settings(
        mcp_hubspot_url=mcp_hubspot_url,
        mcp_context_url=mcp_context_url,
        agno_coordinator_url=coordinator_url,
        model_api_key=MODEL_KEY,
        model_timeout_seconds=10.0,
        team_timeout_seconds=1.0,
    )
    fresh_chat.script("auto", Reply(content="too late"))
    with serve(build_app(settings)) as url:
        response = httpx.post(f"{url}/teams/client-health/companies/501/review", params=AS_OF, timeout=30)
        assert response.status_code == 504, response.text
        assert response.json()["title"] == "Team run timed out" and "1s" in response.json()["detail"]
        assert 'teams_runs_total{outcome="timeout",team="ClientHealthTeam"} 1.0' in httpx.get(f"{url}/metrics").text
