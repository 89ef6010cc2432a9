"""The chassis' guarantees against hostile input (issue 12): a body-size limit, a 500 that
is a logged bug answered as a problem with `Connection: close`, 405 with `Allow`, problems
that stay valid JSON whatever the caller sent, 503 + Retry-After for a dependency outage."""

from __future__ import annotations

import json

import httpx
import pytest
from fastapi import FastAPI
from pydantic import BaseModel

from sophia_chassis import ServiceSettings, create_app
from sophia_chassis.inputs import JsonObject, Name, Text
from sophia_chassis.problems import DependencyUnavailable
from sophia_testing.servers import serve


class Note(BaseModel):
    text: Text(100)
    label: Name(20) = "x"
    extra: JsonObject(max_depth=3) = {}


def hostile_app() -> FastAPI:
    app = create_app(ServiceSettings(service_name="demo", max_body_bytes=1000))

    @app.post("/notes")
    async def add(note: Note) -> dict[str, str]:
        return {"text": note.text}

    @app.get("/boom")
    async def boom() -> None:
        raise KeyError("internal detail")

    @app.get("/down")
    async def down() -> None:
        raise DependencyUnavailable("postgres", "connection refused", retry_after=3)

    return app


def test_a_500_is_a_logged_problem_that_closes_the_connection(capsys: pytest.CaptureFixture[str]) -> None:
    with serve(hostile_app()) as url, httpx.Client(base_url=url) as client:
        crash = client.get("/boom", headers={"X-Request-ID": "req-boom"})
        assert crash.status_code == 500 and crash.headers["content-type"] == "application/problem+json"
        assert crash.headers["connection"] == "close" and "internal detail" not in crash.text
        logged = [json.loads(line) for line in capsys.readouterr().out.splitlines() if "unhandled_error" in line]
        assert logged and logged[0]["request_id"] == "req-boom" and logged[0]["error"] == "KeyError"
        # The same client goes on: the server closed the connection cleanly, not by a reset.
        assert client.get("/healthz").status_code == 200


def test_body_limit_405_and_problems_that_echo_hostile_input() -> None:
    with serve(hostile_app()) as url:
        too_big = httpx.post(f"{url}/notes", json={"text": "x" * 2000})
        assert too_big.status_code == 413 and too_big.headers["content-type"] == "application/problem+json"
        chunked = httpx.post(f"{url}/notes", content=iter([b'{"text":"', b"x" * 1200, b'"}']))
        assert chunked.status_code == 413
        assert httpx.post(f"{url}/notes", json={"text": "fine"}).json() == {"text": "fine"}
        wrong_method = httpx.delete(f"{url}/notes")
        assert wrong_method.status_code == 405 and wrong_method.headers["allow"] == "POST"
        assert wrong_method.headers["content-type"] == "application/problem+json"
        # A field name made of a lone surrogate comes back escaped, as valid JSON, not as a 500.
        echoed = httpx.post(
            f"{url}/notes", content=b'{"text":"x","extra":{"\\ud800":1}}', headers={"content-type": "application/json"}
        )
        assert echoed.status_code == 422 and echoed.json()["errors"][0]["field"] == "body.extra"
        for body in (
            b'{"text":"a\\u0000"}',
            b'{"text":"\\udfff"}',
            b'{"text":"x","label":"a\\tb"}',
            b'{"text":"x","extra":{"a":{"b":{"c":{}}}}}',
            b'{"text":"x","extra":{"n":NaN}}',
            b'{"text":"x","extra":{"n":1e999}}',
            b'{"text":"x","extra":{"n":123456789012345678901234567890}}',
            b"[" * 500 + b"]" * 500,
        ):
            bad = httpx.post(f"{url}/notes", content=body, headers={"content-type": "application/json"})
            assert bad.status_code == 422, (body, bad.text)
            assert bad.headers["content-type"] == "application/problem+json"


def test_a_dependency_outage_is_a_503_with_retry_after() -> None:
    with serve(hostile_app()) as url:
        down = httpx.get(f"{url}/down")
    assert down.status_code == 503 and down.headers["retry-after"] == "3"
    assert "postgres" in down.json()["detail"]
