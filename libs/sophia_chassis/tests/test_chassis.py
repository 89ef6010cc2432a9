"""The chassis through real HTTP: health, readiness, metrics, request ids, problems,
settings from secret files, and the resilient client against a real flaky upstream."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI, HTTPException
from fastapi.responses import JSONResponse

from sophia_chassis import CircuitOpenError, ResilientClient, ServiceSettings, create_app
from sophia_chassis.http import UpstreamError
from sophia_testing.servers import serve


class Settings(ServiceSettings):
    service_name: str = "demo"
    openai_api_key: str | None = None


def demo_app(ready: dict[str, bool], closed: list[str]) -> FastAPI:
    async def database():
        if not ready["database"]:
            raise ConnectionError("connection refused")

    async def close():
        closed.append("client")

    app = create_app(Settings(), readiness={"database": database}, on_shutdown=[close])

    @app.get("/items/{item_id}")
    async def item(item_id: int):
        if item_id == 0:
            raise HTTPException(404, "no item 0")
        if item_id == 13:
            raise RuntimeError("secret internals")
        return {"id": item_id}

    return app


def test_an_optional_dependency_down_degrades_the_pod_but_keeps_it_ready() -> None:
    state = {"cache": False, "database": True}

    async def check(name: str) -> None:
        if not state[name]:
            raise ConnectionError("connection refused")

    app = create_app(
        Settings(), readiness={"database": lambda: check("database")}, degraded={"cache": lambda: check("cache")}
    )
    with serve(app) as url:
        degraded = httpx.get(f"{url}/readyz")
        assert degraded.status_code == 200  # still serving: the Service keeps the pod
        assert degraded.json() == {
            "status": "degraded",
            "checks": ["database"],
            "optional": ["cache"],
            "degraded": {"cache": "ConnectionError: connection refused"},
        }
        assert 'dependency_up{dependency="cache"} 0.0' in httpx.get(f"{url}/metrics").text
        state["cache"] = True
        assert httpx.get(f"{url}/readyz").json()["status"] == "ready"
        assert 'dependency_up{dependency="cache"} 1.0' in httpx.get(f"{url}/metrics").text
        state["database"] = False  # what it cannot serve without still takes it out
        assert httpx.get(f"{url}/readyz").status_code == 503


def test_health_readiness_metrics_request_id_and_problems() -> None:
    ready, closed = {"database": False}, []
    with serve(demo_app(ready, closed)) as url:
        assert httpx.get(f"{url}/healthz").json() == {"status": "ok"}
        not_ready = httpx.get(f"{url}/readyz")
        assert not_ready.status_code == 503
        assert not_ready.headers["content-type"] == "application/problem+json"
        assert not_ready.json()["checks"] == {"database": "ConnectionError: connection refused"}
        ready["database"] = True
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready", "checks": ["database"]}

        ok = httpx.get(f"{url}/items/7", headers={"X-Request-ID": "req-42"})
        assert ok.json() == {"id": 7} and ok.headers["X-Request-ID"] == "req-42"
        assert len(httpx.get(f"{url}/items/8").headers["X-Request-ID"]) == 32
        missing = httpx.get(f"{url}/items/0")
        assert missing.status_code == 404 and missing.json()["detail"] == "no item 0"
        crash = httpx.get(f"{url}/items/13")
        assert crash.status_code == 500 and "secret internals" not in crash.text
        assert crash.json()["title"] == "Internal error"
        invalid = httpx.get(f"{url}/items/abc")
        assert invalid.status_code == 422 and invalid.json()["errors"][0]["field"] == "path.item_id"

        text = httpx.get(f"{url}/metrics").text
        assert 'http_requests_total{method="GET",route="/items/{item_id}",service="demo",status="200"} 2.0' in text
        assert 'route="/items/{item_id}",service="demo",status="500"' in text
        assert 'http_request_duration_seconds_bucket{le="0.1",method="GET",route="/items/{item_id}"' in text
    assert closed == ["client"]  # shutdown hooks ran


def test_a_streamed_answer_counts_to_its_first_byte_and_keeps_its_request_id() -> None:
    """An event stream open for a while is not a slow request (the latency SLO reads this histogram)."""
    from fastapi.responses import StreamingResponse

    app = create_app(ServiceSettings(service_name="streamer"))

    @app.get("/events")
    async def events():
        async def body():
            for n in range(3):
                yield f"data: {n}\n\n"
                await asyncio.sleep(0.15)

        return StreamingResponse(body(), media_type="text/event-stream")

    with serve(app) as url:
        started = time.monotonic()
        response = httpx.get(f"{url}/events", headers={"X-Request-ID": "stream-1"})
        took = time.monotonic() - started
        metrics = httpx.get(f"{url}/metrics").text
    assert response.text.count("data:") == 3 and took >= 0.45
    assert response.headers["X-Request-ID"] == "stream-1"
    fast = next(
        line
        for line in metrics.splitlines()
        if line.startswith("http_request_duration_seconds_bucket") and 'route="/events"' in line and 'le="0.1"' in line
    )
    assert fast.endswith(" 1.0")


def test_settings_come_from_env_and_secret_files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "OPENAI_API_KEY").write_text("sk-from-file")
    monkeypatch.setenv("SOPHIA_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("SERVICE_NAME", "from-env")
    settings = Settings.load()
    assert (settings.openai_api_key, settings.service_name) == ("sk-from-file", "from-env")
    monkeypatch.setenv("SOPHIA_SECRETS_DIR", str(tmp_path / "absent"))
    assert Settings.load().openai_api_key is None


def flaky_upstream(script: list[tuple[int, dict[str, str]]], calls: list[float]) -> FastAPI:
    app = FastAPI()

    @app.get("/thing")
    async def thing():
        calls.append(time.monotonic())
        status, headers = script[min(len(calls), len(script)) - 1]
        return JSONResponse({"n": len(calls)}, status_code=status, headers=headers)

    return app


def test_retries_5xx_then_succeeds() -> None:
    calls: list[float] = []
    with serve(flaky_upstream([(500, {}), (503, {}), (200, {})], calls)) as url:
        client = ResilientClient(url, attempts=3, backoff_initial=0.01, backoff_max=0.05)
        response = asyncio.run(client.get("/thing"))
    assert response.status_code == 200 and response.json() == {"n": 3} and len(calls) == 3


def test_honours_retry_after_on_429() -> None:
    calls: list[float] = []
    with serve(flaky_upstream([(429, {"Retry-After": "1"}), (200, {})], calls)) as url:
        client = ResilientClient(url, attempts=2, backoff_initial=0.01, backoff_max=2.0)
        assert asyncio.run(client.get("/thing")).status_code == 200
    assert calls[1] - calls[0] >= 0.95  # waited as told, not the 10 ms backoff


def test_gives_up_with_a_clear_error_and_the_breaker_opens() -> None:
    calls: list[float] = []
    with serve(flaky_upstream([(500, {})], calls)) as url:
        client = ResilientClient(
            url, attempts=2, backoff_initial=0.01, backoff_max=0.02, failure_threshold=3, reset_timeout=60
        )

        async def scenario():
            with pytest.raises(UpstreamError, match="answered 500 after 2 attempts"):
                await client.get("/thing")
            with pytest.raises((CircuitOpenError, UpstreamError)):
                await client.get("/thing")
            with pytest.raises(CircuitOpenError, match="circuit open"):
                await client.get("/thing")

        asyncio.run(scenario())
    assert len(calls) == 3  # the third call never left the process
    assert client.breaker("127.0.0.1").state == "open"


def test_half_open_breaker_closes_after_a_good_call() -> None:
    calls: list[float] = []
    with serve(flaky_upstream([(500, {}), (200, {})], calls)) as url:
        client = ResilientClient(url, attempts=1, failure_threshold=1, reset_timeout=0.2)

        async def scenario():
            with pytest.raises(UpstreamError):
                await client.get("/thing")
            with pytest.raises(CircuitOpenError):
                await client.get("/thing")
            await asyncio.sleep(0.25)
            assert (await client.get("/thing")).status_code == 200

        asyncio.run(scenario())
    assert client.breaker("127.0.0.1").state == "closed"


def test_half_open_breaker_lets_one_trial_through_at_a_time() -> None:
    from sophia_chassis.http import CircuitBreaker

    breaker = CircuitBreaker(failure_threshold=1, reset_timeout=0.1)
    breaker.record_failure()
    time.sleep(0.12)
    breaker.before_call("upstream")  # the trial
    with pytest.raises(CircuitOpenError, match="trial call"):
        breaker.before_call("upstream")  # a concurrent caller fails fast meanwhile
    time.sleep(0.12)
    breaker.before_call("upstream")  # the first trial never reported: another one goes
    breaker.record_failure()
    assert breaker.state == "open"
    time.sleep(0.12)
    breaker.before_call("upstream")
    breaker.record_success()
    breaker.before_call("upstream")
    breaker.before_call("upstream")
    assert breaker.state == "closed"


def test_connection_refused_is_retried_then_reported() -> None:
    from sophia_testing.servers import free_port

    client = ResilientClient(f"http://127.0.0.1:{free_port()}", attempts=2, backoff_initial=0.01, backoff_max=0.02)
    with pytest.raises(UpstreamError, match="ConnectError"):
        asyncio.run(client.get("/x"))


def test_upstream_failures_become_problem_responses() -> None:
    calls: list[float] = []
    with serve(flaky_upstream([(500, {})], calls)) as upstream:
        client = ResilientClient(upstream, attempts=1, failure_threshold=1, reset_timeout=60)
        app = create_app(Settings())

        @app.get("/proxy")
        async def proxy():
            return (await client.get("/thing")).json()

        with serve(app) as url:
            first, second = httpx.get(f"{url}/proxy"), httpx.get(f"{url}/proxy")
    assert (first.status_code, first.json()["title"]) == (502, "Upstream error")
    assert (second.status_code, second.json()["title"]) == (503, "Dependency unavailable")
    assert json.loads(second.text)["detail"].startswith("127.0.0.1 is failing")


def test_past_capacity_a_limited_route_answers_503_with_retry_after_at_once() -> None:
    """Admission control: 2 run at once, the rest wait 50 ms at most and are then shed."""
    app = create_app(Settings(max_concurrent_requests=2, queue_timeout_seconds=0.05), limited_paths=("/slow",))

    @app.get("/slow")
    async def slow():
        await asyncio.sleep(0.5)
        return {"ok": True}

    @app.get("/other")
    async def other():
        await asyncio.sleep(0.5)
        return {"ok": True}

    async def burst(path: str) -> list[tuple[int, float, httpx.Response]]:
        async with httpx.AsyncClient(base_url=url, timeout=10) as client:

            async def one() -> tuple[int, float, httpx.Response]:
                started = time.monotonic()
                response = await client.get(path)
                return response.status_code, time.monotonic() - started, response

            return await asyncio.gather(*(one() for _ in range(10)))

    with serve(app) as url:
        answers = asyncio.run(burst("/slow"))
        others = asyncio.run(burst("/other"))
        metrics = httpx.get(f"{url}/metrics").text
    served = [a for a in answers if a[0] == 200]
    shed = [a for a in answers if a[0] == 503]
    assert len(served) == 2 and len(shed) == 8
    for _, elapsed, response in shed:
        assert elapsed < 0.4  # answered at the queue deadline, not after the slow ones
        assert response.headers["Retry-After"] == "1"
        assert response.headers["content-type"] == "application/problem+json"
        assert response.json()["title"] == "Overloaded"
    assert [a[0] for a in others] == [200] * 10  # routes not named are not limited
    assert 'requests_shed_total{where="app"} 8.0' in metrics  # at the queue deadline: in the app


def test_a_waiting_request_gets_the_slot_a_finished_one_frees() -> None:
    from sophia_chassis.admission import AdmissionControl

    ran: list[int] = []

    async def inner(scope, receive, send):
        ran.append(scope["n"])
        await asyncio.sleep(0.05)

    async def scenario() -> list[int]:
        control = AdmissionControl(inner, paths=["/x"], max_concurrent=1, queue_timeout=1.0)
        sent: list[int] = []

        async def send(message):
            sent.append(message.get("status", 0))

        scopes = [{"type": "http", "path": "/x", "n": n} for n in range(3)]
        await asyncio.gather(*(control(s, None, send) for s in scopes))
        assert control.active == 0 and control.queued == 0
        return sent

    assert asyncio.run(scenario()) == []  # nobody shed: each waited its turn
    assert ran == [0, 1, 2]  # in arrival order


def _spin(seconds: float) -> None:
    """Hold the loop for `seconds`, working (a warm search runs without an await)."""
    until = time.perf_counter() + seconds
    while time.perf_counter() < until:
        pass


def test_a_turn_of_the_loop_counts_as_overrun_only_past_the_bound_and_while_busy() -> None:
    from sophia_chassis.admission import LoopTurn

    clock = {"wall": 0.0, "cpu": 0.0}
    turn = LoopTurn(0.02, clock=lambda: clock["wall"], cpu=lambda: clock["cpu"])
    turn.mark(0.0, 0.0)
    clock.update(wall=0.015, cpu=0.015)
    assert turn.overrun() == 0.0  # within the bound
    clock.update(wall=0.05, cpu=0.045)
    assert turn.overrun() == pytest.approx(0.03)  # past it, the thread on a CPU 90 % of the time
    clock.update(cpu=0.02)
    assert turn.overrun() == 0.0  # as late, but the thread ran 40 %: the OS had it off the CPU
    clock.update(cpu=0.045)
    turn.mark(0.05, 0.045)  # the loop came round to its timers: a new turn
    assert turn.overrun() == 0.0


async def _status(control, n: int = 0) -> int:
    sent: list[int] = []

    async def send(message):
        if message["type"] == "http.response.start":
            sent.append(message["status"])

    async def receive():
        return {"type": "http.request", "body": b"", "more_body": False}

    await control({"type": "http", "path": "/x", "method": "GET", "headers": [], "n": n}, receive, send)
    return sent[0]


def test_a_burst_past_what_one_turn_can_run_is_cut_at_the_bound_and_the_next_turn_admits_again() -> None:
    """The real loop and its timer: 40 requests of 2 ms of work each read in one turn (as uvicorn
    reads a burst: one task each) run until the turn is 20 ms old; the rest are shed at once, and
    the next burst, after the loop came round to its timers, is admitted again from its start. The
    work advances a clock of the test's own (as busy as it says), so the machine's other processes
    cannot stretch or shrink it."""
    from sophia_chassis.admission import AdmissionControl, LoopTurn

    now = [0.0]

    async def inner(scope, receive, send):
        now[0] += 0.002  # a warm search's work, without an await
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> list[list[int]]:
        control = AdmissionControl(inner, paths=["/x"], max_concurrent=4, queue_timeout=0.05, max_loop_lag=0.02)
        control.turn = LoopTurn(0.02, clock=lambda: now[0], cpu=lambda: now[0])
        bursts = []
        for _ in range(3):
            await asyncio.sleep(0.02)  # idle: the timer fires, a fresh turn
            bursts.append(await asyncio.gather(*(_status(control, n) for n in range(40))))
        return bursts

    for statuses in asyncio.run(scenario()):
        assert statuses == [200] * 10 + [503] * 30  # the turn's first 20 ms run, its tail is shed


def test_a_loop_blocked_without_running_sheds_nothing() -> None:
    """The real watcher and the thread's real CPU time: the loop held 30 ms at a time by a call that
    does not use the CPU (as when the machine's other processes have the cores) runs late, but
    sheds nothing."""
    from sophia_chassis.admission import AdmissionControl

    async def inner(scope, receive, send):
        await send({"type": "http.response.start", "status": 200, "headers": []})
        await send({"type": "http.response.body", "body": b""})

    async def scenario() -> list[int]:
        control = AdmissionControl(inner, paths=["/x"], max_concurrent=4, queue_timeout=0.05, max_loop_lag=0.005)
        await _status(control)  # starts the watcher
        statuses = []
        for _ in range(10):
            await asyncio.sleep(0.006)  # a fresh turn
            time.sleep(0.03)  # blocks the loop without running
            assert control.turn.overrun() == 0.0
            statuses.append(await _status(control))
        return statuses

    assert asyncio.run(scenario()) == [200] * 10


def test_shedding_answers_503_with_retry_after_without_running_the_route() -> None:
    from sophia_chassis.admission import AdmissionControl, LoopTurn

    ran: list[int] = []
    messages: list[dict] = []

    async def inner(scope, receive, send):
        ran.append(1)

    async def send(message):
        messages.append(message)

    async def scenario() -> float:
        control = AdmissionControl(
            inner, paths=["/x"], max_concurrent=4, queue_timeout=1.0, max_loop_lag=0.02, retry_after_seconds=2
        )
        control.turn = LoopTurn(0.02, cpu=time.perf_counter)
        control.turn.start(asyncio.get_running_loop())
        _spin(0.03)
        started = time.perf_counter()
        await control({"type": "http", "path": "/x", "method": "POST", "headers": []}, None, send)
        return time.perf_counter() - started

    elapsed = asyncio.run(scenario())
    assert ran == []
    start = messages[0]
    assert start["status"] == 503
    assert (b"retry-after", b"2") in start["headers"]
    assert elapsed < 0.25  # refused at the door, not after the queue deadline (1 s)


def test_a_shedding_upstream_is_retried_after_its_retry_after_and_leaves_the_breaker_closed() -> None:
    calls: list[float] = []
    busy = (503, {"Retry-After": "1"})
    with serve(flaky_upstream([busy, busy, busy, (200, {})], calls)) as upstream:
        client = ResilientClient(upstream, attempts=2, backoff_max=2.0, failure_threshold=1, reset_timeout=60)
        app = create_app(Settings())

        @app.get("/proxy")
        async def proxy():
            return (await client.get("/thing")).json()

        with serve(app) as url:
            first = httpx.get(f"{url}/proxy", timeout=10)  # 503, waited 1 s, 503: passed on as busy
            second = httpx.get(f"{url}/proxy", timeout=10)  # 503, waited 1 s, 200
    assert calls[1] - calls[0] >= 0.95 and calls[3] - calls[2] >= 0.95
    assert (first.status_code, first.json()["title"], first.headers["Retry-After"]) == (503, "Upstream busy", "1")
    assert second.status_code == 200  # the breaker (threshold 1) did not open on the busy answers
    assert client.breaker("127.0.0.1").state == "closed"
