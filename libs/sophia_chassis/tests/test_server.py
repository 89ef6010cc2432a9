"""The services' HTTP protocol (sophia_chassis.server) in a real uvicorn server: while the door is
closed a limited request is refused below the app (the route never runs, the app is never entered)
and still counted, with the door's headers; the connection goes on; what it must not refuse there
goes to the app."""

from __future__ import annotations

import json
import socket
import time
from pathlib import Path

import httpx
from fastapi import Request

from sophia_chassis import ServiceSettings, create_app
from sophia_chassis.server import HTTP_PROTOCOL
from sophia_testing.servers import serve

REPO = Path(__file__).resolve().parents[3]


class Settings(ServiceSettings):
    service_name: str = "demo"


class Turn:
    """A loop turn the test opens and closes (LoopTurn itself is tested in test_chassis)."""

    def __init__(self) -> None:
        self.over = False
        self.running = True

    def start(self, loop) -> None:
        pass

    def overrun(self) -> float:
        return 1.0 if self.over else 0.0


class Entered:
    """The app as the server sees it, counting the HTTP requests that enter it."""

    def __init__(self, app) -> None:
        self.app, self.http = app, 0

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] == "http":
            self.http += 1
        await self.app(scope, receive, send)


def demo() -> tuple[Entered, Turn, list[bytes]]:
    app = create_app(Settings(), limited_paths=("/search",))
    ran: list[bytes] = []

    @app.post("/search")
    async def search(request: Request):
        ran.append(await request.body())
        return {"ok": True}

    @app.get("/slow")
    async def slow():
        time.sleep(0.2)  # holds the loop: a request pipelined behind it waits on the same connection
        return {"ok": True}

    turn = Turn()
    app.state.door.turn = turn
    return Entered(app), turn, ran


def shed_total(url: str, where: str) -> float:
    for line in httpx.get(f"{url}/metrics").text.splitlines():
        if line.startswith(f'requests_shed_total{{where="{where}"}} '):
            return float(line.split()[1])
    raise AssertionError(f"requests_shed_total of {where} is not exported")


def exchange(url: str, raw: bytes, answers: int) -> list[tuple[int, dict[str, str], bytes]]:
    """`raw` written at once on one connection (pipelined); the `answers` read back, in order."""
    host, port = url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port)), timeout=5) as sock:
        sock.sendall(raw)
        buffer, parsed = b"", []
        while len(parsed) < answers:
            while b"\r\n\r\n" not in buffer:
                chunk = sock.recv(65536)
                assert chunk, f"connection closed after {len(parsed)} answers"
                buffer += chunk
            head, _, buffer = buffer.partition(b"\r\n\r\n")
            status_line, *lines = head.decode("latin-1").split("\r\n")
            headers = {k.lower(): v.strip() for k, _, v in (line.partition(":") for line in lines)}
            length = int(headers["content-length"])
            while len(buffer) < length:
                buffer += sock.recv(65536)
            parsed.append((int(status_line.split()[1]), headers, buffer[:length]))
            buffer = buffer[length:]
        return parsed


def post(path: str, body: bytes, *extra: str) -> bytes:
    head = [f"POST {path} HTTP/1.1", "Host: test", "Content-Type: application/json", f"Content-Length: {len(body)}"]
    return ("\r\n".join([*head, *extra]) + "\r\n\r\n").encode() + body


def test_while_the_door_is_closed_a_limited_request_is_refused_below_the_app_and_counted() -> None:
    app, turn, ran = demo()
    with serve(app) as url:
        before = shed_total(url, "server")
        entered = app.http
        turn.over = True
        # Three searches and a health probe pipelined on one connection: each search refused with the
        # door's answer, its body read and dropped (the probe after it is parsed as a request).
        body = json.dumps({"query": "x" * 5000}).encode()
        answers = exchange(url, post("/search", body) * 3 + b"GET /healthz HTTP/1.1\r\nHost: test\r\n\r\n", 4)
        assert app.http == entered + 1  # only the probe entered the app
        assert ran == []  # the route never ran
        assert shed_total(url, "server") == before + 3
        for status, headers, content in answers[:3]:
            assert status == 503
            assert headers["retry-after"] == "1"
            assert headers["content-type"] == "application/problem+json"
            assert "date" in headers and headers["server"] == "uvicorn"  # the server's own headers too
            assert "connection" not in headers  # kept alive
            problem = json.loads(content)
            assert (problem["status"], problem["title"]) == (503, "Overloaded")
        assert answers[3][0] == 200

        turn.over = False
        assert exchange(url, post("/search", b'{"q": 1}'), 1)[0][0] == 200  # open again: served
        assert ran == [b'{"q": 1}']


def test_a_refused_request_that_closes_its_connection_is_answered_connection_close() -> None:
    app, turn, _ = demo()
    with serve(app) as url:
        turn.over = True
        [(status, headers, _)] = exchange(url, post("/search", b"{}", "Connection: close"), 1)
        assert (status, headers["connection"]) == (503, "close")


def test_a_request_the_server_must_not_refuse_itself_reaches_the_apps_door() -> None:
    """Pipelined behind a request still running, a refusal written at once would overtake that
    request's answer: it goes to the app, whose door refuses it after, in order. Other paths are
    not the door's."""
    app, turn, ran = demo()
    with serve(app) as url:
        before = shed_total(url, "app")
        entered = app.http
        turn.over = True
        answers = exchange(url, b"GET /slow HTTP/1.1\r\nHost: test\r\n\r\n" + post("/search", b"{}"), 2)
        assert [status for status, _, _ in answers] == [200, 503]
        assert app.http == entered + 2  # both entered the app: the search was refused by the app's door
        assert ran == [] and shed_total(url, "app") == before + 1
        assert exchange(url, post("/other", b"{}"), 1)[0][0] == 404  # not a limited path: the app answers


def test_an_app_without_a_door_is_served_as_uvicorn_serves_it() -> None:
    app = create_app(Settings())

    @app.post("/search")
    async def search():
        return {"ok": True}

    assert app.state.door is None
    with serve(app) as url:
        assert [status for status, _, _ in exchange(url, post("/search", b"{}") * 2, 2)] == [200, 200]


def test_every_launch_of_a_service_runs_this_protocol() -> None:
    for launcher in ("services/Dockerfile", "scripts/dev.sh"):
        assert f"--http {HTTP_PROTOCOL}" in (REPO / launcher).read_text(), launcher
