"""HubSpot misbehaving, through real servers: 429 + Retry-After, 5xx, timeouts, a breaker
that opens, writes never sent twice, and readiness that asks HubSpot (not too often)."""

from __future__ import annotations

import time

import httpx

from mcp_hubspot.main import Settings, build_app
from sophia_testing.hubspot_fake import TOKEN, FakeHubSpot
from sophia_testing.servers import free_port, serve


def settings(hubspot_url: str, **overrides) -> Settings:
    return Settings(
        **{
            **dict(hubspot_access_token=TOKEN, hubspot_api_url=hubspot_url, hubspot_backoff_max_seconds=2.0),
            **overrides,
        }
    )


def test_429_on_search_waits_the_retry_after_then_succeeds(crm: FakeHubSpot, hubspot_url: str) -> None:
    crm.faults, crm.retry_after = ["429", "429"], "0.4"
    with serve(build_app(settings(hubspot_url))) as url:
        started = time.monotonic()
        response = httpx.post(
            f"{url}/hubspot/deals/search",
            json={"filters": [{"propertyName": "dealname", "operator": "CONTAINS_TOKEN", "value": "acme"}]},
            timeout=10,
        )
        waited = time.monotonic() - started
    assert response.status_code == 200 and len(response.json()["results"]) == 2
    assert [s for s, _ in crm.calls("POST", "/crm/v3/objects/deals/search")] == [429, 429, 200]
    assert waited >= 0.75


def test_server_errors_retry_reads_but_never_repeat_a_create(crm: FakeHubSpot, hubspot_url: str) -> None:
    with serve(build_app(settings(hubspot_url))) as url:
        crm.faults = ["502"]
        read = httpx.get(f"{url}/hubspot/companies/501", timeout=10)
        crm.faults = ["500"]
        write = httpx.post(f"{url}/hubspot/contacts", json={"email": "new@acme.example"}, timeout=10)
    assert read.status_code == 200 and read.json()["properties"]["name"] == "Acme Corp"
    assert [s for s, _ in crm.calls("GET", "/crm/v3/objects/companies/501")] == [502, 200]
    assert write.status_code == 502 and write.json()["title"] == "Upstream error"
    assert write.headers["content-type"] == "application/problem+json"
    assert [s for s, _ in crm.calls("POST", "/crm/v3/objects/contacts")] == [500]  # sent once


def test_a_failing_hubspot_opens_the_breaker(crm: FakeHubSpot, hubspot_url: str) -> None:
    crm.faults = ["500"] * 5
    with serve(build_app(settings(hubspot_url, hubspot_attempts=3))) as url:
        first = httpx.get(f"{url}/hubspot/deals", timeout=10)
        second = httpx.get(f"{url}/hubspot/deals", timeout=10)  # two more failures: 5 in a row
        crm.faults = []
        fast = httpx.get(f"{url}/hubspot/deals", timeout=10)
    assert first.status_code == 502 and "500" in first.json()["detail"]
    assert second.status_code in (502, 503) and fast.status_code == 503
    assert fast.json()["title"] == "Dependency unavailable"
    assert len(crm.calls("GET", "/crm/v3/objects/deals")) == 5  # nothing reached HubSpot once open


def test_a_timeout_is_retried(crm: FakeHubSpot, hubspot_url: str) -> None:
    crm.faults, crm.slow_seconds = ["slow"], 2.0
    with serve(build_app(settings(hubspot_url, hubspot_timeout_seconds=0.3))) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/hubspot/deals", timeout=10)
        elapsed = time.monotonic() - started  # not counting the servers' shutdown
    # Answered by the retry, well before the slow answer would have come.
    assert response.status_code == 200 and elapsed < 1.5


def test_readiness_reports_hubspot_and_caches_a_success(crm: FakeHubSpot, hubspot_url: str) -> None:
    with serve(build_app(settings(hubspot_url))) as url:
        ready = [httpx.get(f"{url}/readyz").status_code for _ in range(3)]
    assert ready == [200, 200, 200] and len(crm.calls("GET", "/crm/v3/objects/contacts")) == 1
    down = f"http://127.0.0.1:{free_port()}"
    with serve(build_app(settings(down, hubspot_attempts=1))) as url:
        degraded = httpx.get(f"{url}/readyz")
    with serve(build_app(settings(hubspot_url, hubspot_access_token="pat-revoked"))) as url:
        bad_token = httpx.get(f"{url}/readyz")
    # HubSpot's outage or a revoked token: reported (and answered 502 per request), the pod stays in.
    assert degraded.status_code == 200 and set(degraded.json()["degraded"]) == {"hubspot"}
    assert "ConnectError" in degraded.json()["degraded"]["hubspot"]
    assert bad_token.status_code == 200 and "401" in bad_token.json()["degraded"]["hubspot"]


def test_hubspot_errors_become_clear_problems(crm: FakeHubSpot, hubspot_url: str) -> None:
    with serve(build_app(settings(hubspot_url))) as url:
        missing = httpx.get(f"{url}/hubspot/deals/999999")
        bad_type = httpx.get(f"{url}/hubspot/widgets")
    assert missing.status_code == 404 and "resource not found" in missing.json()["detail"]
    assert bad_type.status_code == 422 and bad_type.json()["errors"][0]["field"] == "path.object_type"
    assert "'contacts'" in bad_type.json()["errors"][0]["message"]  # the allowed types are named


def test_bad_token_is_a_clear_problem_and_no_token_is_degraded(crm: FakeHubSpot, hubspot_url: str) -> None:
    with serve(build_app(settings(hubspot_url, hubspot_access_token="wrong"))) as url:
        denied = httpx.get(f"{url}/hubspot/deals")
    with serve(build_app(settings(hubspot_url, hubspot_access_token=None))) as url:
        ready = httpx.get(f"{url}/readyz")
    assert denied.status_code == 401 and "Authentication credentials not found" in denied.json()["detail"]
    assert ready.status_code == 503 and "hubspot-token" in ready.json()["checks"]
