"""The benchmarks' load generator (bench/openloop.py) and bench-platform's accounting, against a
real HTTP server on loopback: what it offers, how it retries, and that what it counts is what the
server saw."""

from __future__ import annotations

import asyncio
import sys
import time
from collections import Counter
from pathlib import Path

import pytest
from aiohttp import web

BENCH = Path(__file__).resolve().parents[2] / "bench"
sys.path.insert(0, str(BENCH))

import bench_platform  # noqa: E402
import openloop  # noqa: E402


class Server:
    """An aiohttp app on 127.0.0.1: answers each request by `script` (path -> list of
    (status, headers) consumed in order, then 200/201) and counts what it received."""

    def __init__(self, script: dict[str, list[tuple[int, dict[str, str]]]] | None = None, delay: float = 0.0):
        self.script, self.delay = script or {}, delay
        self.seen: Counter[str] = Counter()
        self.hosts: set[str] = set()

    async def handle(self, request: web.Request) -> web.StreamResponse:
        self.seen[request.path] += 1
        self.hosts.add(request.headers.get("Host", ""))
        await request.read()
        if self.delay:
            await asyncio.sleep(self.delay)
        queue = self.script.get(request.path)
        if queue:
            status, headers = queue.pop(0)
            if status == 0:  # drop the connection without an answer
                request.transport.close()
                raise ConnectionResetError
            if status == -1:  # answer after the client gave up
                await asyncio.sleep(1.0)
            return web.json_response({}, status=status, headers=headers)
        return web.json_response({"ok": True}, status=201 if request.method == "POST" else 200)

    async def __aenter__(self) -> str:
        app = web.Application()
        app.router.add_route("*", "/{tail:.*}", self.handle)
        self.runner = web.AppRunner(app, access_log=None)
        await self.runner.setup()
        site = web.TCPSite(self.runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aexit__(self, *exc) -> None:
        await self.runner.cleanup()


def test_the_open_loop_offers_its_rate_whatever_the_server_takes() -> None:
    """200 requests/s for 1 s over 20 connections, each answered after 150 ms: the offer does not
    wait for the answers (a closed loop would send about 20 / 0.15 = 133), and each latency
    counts from the planned send."""
    planned: list[float] = []
    latencies: list[float] = []

    async def run() -> float:
        async with Server(delay=0.15) as url:

            async def send(session, i: int, at: float) -> None:
                planned.append(at)
                async with session.get(f"/r/{i}") as r:
                    await r.read()
                latencies.append(time.monotonic() - at)

            return await openloop.open_loop(url, 20, 200, 1.0, send, timeout=5)

    elapsed = asyncio.run(run())
    assert 150 <= len(planned) <= 250  # Poisson: 200 +- 3.5 sigma
    assert max(planned) - min(planned) < 1.0 and elapsed >= 1.0
    assert min(latencies) >= 0.15


async def _client_answers(script, method: str, idempotent: bool) -> tuple[openloop.Answer, int]:
    server = Server({"/x": list(script)})
    async with server as url:
        import aiohttp

        async with aiohttp.ClientSession(url, timeout=aiohttp.ClientTimeout(total=0.5)) as session:
            answer = await openloop.Client(backoff_initial=0.01).request(session, method, "/x", idempotent=idempotent)
    return answer, server.seen["/x"]


@pytest.mark.parametrize(
    ("script", "method", "idempotent", "status", "attempts", "refused"),
    [
        # Shed with Retry-After: come back after it, idempotent or not (the request was not run).
        ([(503, {"Retry-After": "0"})], "POST", False, 201, 2, 1),
        ([(429, {"Retry-After": "0"}), (429, {"Retry-After": "0"})], "GET", True, 200, 3, 2),
        # A failure that may have done the work: retried only when idempotent.
        ([(500, {})], "POST", False, 500, 1, 0),
        ([(502, {}), (500, {})], "GET", True, 200, 3, 0),
        ([(503, {})] * 3, "GET", True, 503, 3, 0),
        ([(-1, {})], "GET", True, 200, 2, 0),  # no answer in time: a transport error, retried
        ([(0, {})], "POST", False, 0, 1, 0),  # the connection dropped under a store: not retried
        ([(404, {})], "GET", True, 404, 1, 0),  # an answer, not a failure to retry
    ],
)
def test_the_client_retries_as_the_repos_clients_do(script, method, idempotent, status, attempts, refused) -> None:
    answer, seen = asyncio.run(_client_answers(script, method, idempotent))
    assert (answer.status, answer.attempts, answer.refused) == (status, attempts, refused)
    assert seen == attempts  # every attempt reached the server, none was invented


def test_the_client_takes_the_chassis_retry_budget() -> None:
    from sophia_chassis.http import ResilientClient

    client, chassis = openloop.Client(), ResilientClient()
    assert client.attempts == chassis._attempts and client.backoff_max == chassis._backoff_max


def test_bench_platform_counts_what_the_server_saw() -> None:
    """The whole mix against a real server that sheds some requests with Retry-After and fails
    some reads once: per route, sent = served + failed, every attempt is one the server received,
    and the gateway's Host header and the key are sent."""
    reads = {"/hubspot/contacts": [(503, {"Retry-After": "0"})] * 2, "/github/repos": [(502, {})] * 2}

    async def run(server: Server) -> dict:
        async with server as url:
            return await bench_platform.drive(url, "sophia.localhost", "sk_test", 60, 1.5)

    server = Server(reads)
    result = asyncio.run(run(server))
    rows = bench_platform.tally(result["records"])
    assert rows["all"].sent == len(result["records"]) > 40
    for row in rows.values():
        assert row.sent == row.served + row.failed
    assert rows["all"].failed == 0  # every shed or failed read was retried to success
    attempts = Counter()
    for name, _, _, _, tries, _, _ in result["records"]:
        attempts[next(r.path.split("?")[0] for r in bench_platform.MIX if r.name == name)] += tries
    assert attempts == server.seen - Counter({"/healthz": server.seen["/healthz"]})
    assert rows["hubspot read"].refused == 2 and rows["github read"].retried >= 1
    assert server.hosts == {"sophia.localhost"}
    lines = bench_platform.table(rows, result["elapsed"])
    assert lines[0].split()[:3] == ["route", "sent/s", "served/s"] and len(lines) == len(bench_platform.MIX) + 2


def test_a_step_past_capacity_says_why() -> None:
    row = bench_platform.Row("all", sent=100, served=80, latencies=[0.01] * 80)
    assert bench_platform.saturated(row, 1.0, 100) == "served 80.0/s of 100/s offered"
    row = bench_platform.Row("all", sent=100, served=100, latencies=[0.01] * 90 + [2.0] * 10)
    assert bench_platform.saturated(row, 1.0, 100).startswith("p99 2000 ms")
    assert bench_platform.saturated(bench_platform.Row("all", 100, 100, latencies=[0.01] * 100), 1.0, 100) is None


def test_a_failure_says_who_answered() -> None:
    """The service's problem detail, or the gateway's own text (no endpoint left, a dead one)."""
    assert (
        openloop.who_answered(b'{"title": "Service Unavailable", "detail": "overloaded: retry"}') == "overloaded: retry"
    )
    assert openloop.who_answered(b"no available server\n") == "(gateway) no available server"


def test_the_verdict_counts_every_service_and_every_change(capsys) -> None:
    def rows(failed: dict[str, int]) -> dict[str, bench_platform.Row]:
        out = bench_platform.tally([])
        for route in bench_platform.MIX:
            out[route.name] = bench_platform.Row(route.name, sent=10, served=10 - failed.get(route.name, 0))
            out[route.name].failed = failed.get(route.name, 0)
        return out

    assert bench_platform.verdict([rows({}), rows({})])
    assert "requests sent 100, failed 0: OK" in capsys.readouterr().out
    # mcp-context's pod killed (it has a sibling now) or rolled: counted like any.
    assert not bench_platform.verdict([rows({"memory search": 3}), rows({"memory store": 1})])
    printed = capsys.readouterr().out
    assert "failed 4: FAILED (must be 0)" in printed and "mcp-context 4 of 40" in printed
    assert not bench_platform.verdict([rows({"github read": 1})])


def test_metrics_server_quantities_in_millicores() -> None:
    assert [bench_platform._millicores(q) for q in ("1987654321n", "35000u", "250m", "2")] == [1987, 35, 250, 2000]
