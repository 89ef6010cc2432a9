"""GitHub misbehaving, through real servers: secondary and primary rate limits, 429s,
5xx answers, timeouts and a breaker that opens; every failure a clear problem."""

from __future__ import annotations

import time

import httpx

from mcp_github.main import Settings, build_app
from sophia_testing.github_fake import TOKEN, FakeGitHub
from sophia_testing.servers import free_port, serve

COMMITS = "/repos/acme/billing/commits"


def settings(github_url: str, **overrides) -> Settings:
    values = dict(
        github_token=TOKEN,
        github_api_url=github_url,
        mcp_context_url=f"http://127.0.0.1:{free_port()}",
        github_backoff_max_seconds=2.0,
        github_max_rate_limit_wait_seconds=5.0,
    )
    return Settings(**{**values, **overrides})


def test_secondary_limit_with_retry_after_is_waited_out(fake: FakeGitHub, github_url: str) -> None:
    fake.faults = ["secondary"]
    fake.retry_after = "1"
    with serve(build_app(settings(github_url))) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/github{COMMITS}", timeout=10)
        waited = time.monotonic() - started
    assert response.status_code == 200 and response.json()["results"][0]["message"] == "initial import"
    assert fake.statuses(COMMITS) == [403, 200]
    assert waited >= 0.95  # GitHub asked for a second


def test_a_429_is_retried_after_its_retry_after(fake: FakeGitHub, github_url: str) -> None:
    fake.faults = ["429", "429"]
    fake.retry_after = "0.3"
    with serve(build_app(settings(github_url))) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/github{COMMITS}", timeout=10)
        waited = time.monotonic() - started
    assert response.status_code == 200 and fake.statuses(COMMITS) == [429, 429, 200]
    assert waited >= 0.55


def test_a_long_wait_is_answered_429_with_retry_after_not_slept_through(fake: FakeGitHub, github_url: str) -> None:
    fake.faults = ["secondary-nohdr"]  # no header: GitHub says wait at least a minute
    with serve(build_app(settings(github_url))) as url:
        started = time.monotonic()
        secondary = httpx.get(f"{url}/github{COMMITS}", timeout=10)
        fake.used = fake.rate_limit  # the primary budget is spent; resets in an hour
        primary = httpx.get(f"{url}/github/repos/acme/billing/pulls", timeout=10)
        elapsed = time.monotonic() - started
    assert secondary.status_code == 429 and secondary.headers["Retry-After"] == "60"
    assert secondary.headers["content-type"] == "application/problem+json"
    assert primary.status_code == 429 and 3500 <= int(primary.headers["Retry-After"]) <= 3601
    assert "rate limit" in primary.json()["detail"]
    assert elapsed < 2 and fake.statuses(COMMITS) == [403]  # no pointless retries


def test_rate_limited_through_every_attempt_is_a_429_problem(fake: FakeGitHub, github_url: str) -> None:
    fake.faults = ["429"] * 3
    fake.retry_after = "0.1"
    with serve(build_app(settings(github_url, github_attempts=3))) as url:
        response = httpx.get(f"{url}/github{COMMITS}", timeout=10)
    assert response.status_code == 429 and response.headers["Retry-After"] == "1"
    assert fake.statuses(COMMITS) == [429, 429, 429]


def test_server_errors_are_retried_then_a_502_then_the_breaker_opens(fake: FakeGitHub, github_url: str) -> None:
    fake.faults = ["502"]
    with serve(build_app(settings(github_url, github_attempts=2))) as url:
        recovered = httpx.get(f"{url}/github{COMMITS}", timeout=10)
        fake.faults = ["500"] * 6
        failed = [httpx.get(f"{url}/github{COMMITS}", timeout=10) for _ in range(3)]
        fake.faults = []
        still_open = httpx.get(f"{url}/github{COMMITS}", timeout=10)
    assert recovered.status_code == 200 and fake.statuses(COMMITS)[:2] == [502, 200]
    assert [r.status_code for r in failed[:2]] == [502, 502]
    assert failed[0].json()["title"] == "Upstream error" and "500" in failed[0].json()["detail"]
    # 5 failures in a row (2 + 2 + 1) open the breaker: the third call and the next fail fast.
    assert failed[2].status_code == 503 and failed[2].json()["title"] == "Dependency unavailable"
    assert still_open.status_code == 503 and len(fake.statuses(COMMITS)) == 7


def test_a_timeout_is_retried(fake: FakeGitHub, github_url: str) -> None:
    fake.faults, fake.slow_seconds = ["slow"], 2.0
    # The backoff capped at 0.1 s: its jitter (up to 1 s) would otherwise decide the timing, not the retry.
    with serve(build_app(settings(github_url, github_timeout_seconds=0.3, github_backoff_max_seconds=0.1))) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/github{COMMITS}", timeout=10)
        elapsed = time.monotonic() - started  # not counting the servers' shutdown
    # Answered by the retry, well before the slow answer would have come.
    assert response.status_code == 200 and elapsed < 1.5
