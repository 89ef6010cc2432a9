"""mcp-agents against hostile input and a database outage (issue 12): text PostgreSQL cannot
store is a 422, out-of-range headers are 422s, and PostgreSQL down is a quick 503 with
Retry-After, with immediate recovery when it is back. A real PostgreSQL is stopped and
started again on the same port and data directory."""

from __future__ import annotations

import os
import pwd
import signal
import subprocess
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager

import httpx

from mcp_agents.main import Settings, build_app
from sophia_testing.datastores import _postgres_bin
from sophia_testing.servers import free_port, serve


class Postgres:
    """A PostgreSQL that can be stopped and started again (same port, same data)."""

    def __init__(self) -> None:
        self.user = "postgres" if os.geteuid() == 0 else None
        self.data = tempfile.mkdtemp(prefix="sophia-pg-outage-")
        if self.user:
            entry = pwd.getpwnam(self.user)
            os.chown(self.data, entry.pw_uid, entry.pw_gid)
        subprocess.run(
            [_postgres_bin("initdb"), "-D", self.data, "-U", "sophia", "--auth=trust", "-E", "UTF8"],
            check=True,
            stdout=subprocess.DEVNULL,
            user=self.user,
        )
        self.port = free_port()
        self.proc: subprocess.Popen | None = None
        self.url = f"postgresql://sophia@127.0.0.1:{self.port}/postgres"

    def start(self) -> None:
        args = [_postgres_bin("postgres"), "-D", self.data, "-p", str(self.port), "-h", "127.0.0.1", "-k", self.data]
        self.proc = subprocess.Popen(
            [*args, "-c", "fsync=off"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=self.user
        )
        deadline = time.monotonic() + 30
        ready = [_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(self.port)]
        while subprocess.run(ready, stdout=subprocess.DEVNULL).returncode != 0:
            assert time.monotonic() < deadline and self.proc.poll() is None, "PostgreSQL did not start"
            time.sleep(0.05)

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.send_signal(signal.SIGINT)  # fast shutdown: ends open sessions, the pool's connections break
            self.proc.wait(30)
            self.proc = None


@contextmanager
def postgres() -> Iterator[Postgres]:
    pg = Postgres()
    pg.start()
    try:
        yield pg
    finally:
        pg.stop()
        subprocess.run(["rm", "-rf", pg.data], check=False)


def settings(database_url: str, redis_url: str) -> Settings:
    return Settings(
        database_url=database_url,
        redis_url=redis_url,
        agno_coordinator_url=f"http://127.0.0.1:{free_port()}",
        mcp_context_url=None,
        mcp_github_url=None,
        mcp_hubspot_url=None,
        workers=1,
        database_wait_seconds=2.0,
    )


def test_text_postgres_cannot_store_and_odd_headers_are_422s(database_url: str, redis_url: str) -> None:
    with serve(build_app(settings(database_url, redis_url))) as url:
        tasks = f"{url}/agents/tasks"
        for raw in (b'{"goal":"a\\u0000b"}', b'{"goal":"\\ud800"}', b'{"goal":"x","time_limit_seconds":NaN}'):
            answer = httpx.post(tasks, content=raw, headers={"content-type": "application/json"})
            assert answer.status_code == 422 and answer.json()["errors"][0]["field"].startswith("body."), answer.text
        assert httpx.post(tasks, json={"goal": "x"}, headers={"Idempotency-Key": "a b"}).status_code == 422
        created = httpx.post(tasks, json={"goal": "look around"}).json()["id"]
        too_far = httpx.get(f"{tasks}/{created}/events", headers={"Last-Event-ID": str(2**40)})
        assert too_far.status_code == 422 and too_far.headers["content-type"] == "application/problem+json"
        assert httpx.get(f"{tasks}/{created}").status_code == 200


def test_postgres_down_is_a_quick_503_and_recovery_is_immediate(redis_url: str) -> None:
    with postgres() as pg, serve(build_app(settings(pg.url, redis_url))) as url:
        client = httpx.Client(base_url=url, timeout=30)
        first = client.post("/agents/tasks", json={"goal": "before the outage"})
        assert first.status_code == 202
        pg.stop()
        for _ in range(3):
            started = time.monotonic()
            down = client.post("/agents/tasks", json={"goal": "during the outage"})
            elapsed = time.monotonic() - started
            assert down.status_code == 503, down.text
            assert down.headers["content-type"] == "application/problem+json" and int(down.headers["retry-after"]) >= 1
            assert "PostgreSQL" in down.json()["detail"]
            assert elapsed < 8  # the 2 s wait, with room for a loaded machine; not the pool's 30 s default
            assert client.get(f"/agents/tasks/{first.json()['id']}").status_code == 503
        time.sleep(4)  # down long enough for the pool's reconnect backoff to grow
        pg.start()
        started = time.monotonic()
        back = client.post("/agents/tasks", json={"goal": "after the outage"})
        assert back.status_code == 202, back.text
        assert time.monotonic() - started < 8
        assert client.get(f"/agents/tasks/{first.json()['id']}").status_code == 200
