"""Harness for service tests: the chassis on the path, real uvicorn servers on loopback."""

from __future__ import annotations

import os
import socket
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import uvicorn

ROOT = Path(__file__).resolve().parents[2]


def importable(*folders: str) -> None:
    """Put repository folders (a service's code, another test folder's fakes) on sys.path, once each."""
    for folder in folders:
        path = str(ROOT / folder)
        if path not in sys.path:
            sys.path.insert(0, path)


importable("libs")

# The functional suites of each service test what it does, not who may ask: they run with
# AUTH_MODE=off (every caller trusted, tenant "default"). The auth and tenancy suites
# (test_auth.py, test_tenancy.py) set AUTH_MODE=required explicitly. The platform never
# sets it (tests/program checks), so deployed services always require an identity.
os.environ.setdefault("AUTH_MODE", "off")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(app, port: int) -> tuple[uvicorn.Server, threading.Thread] | None:
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 10
    while not server.started:
        if not thread.is_alive():
            return None  # e.g. the port was taken between free_port() and the bind
        if time.monotonic() > deadline:
            raise RuntimeError("test server did not start")
        time.sleep(0.01)
    return server, thread


@contextmanager
def serve(app, port: int | None = None) -> Iterator[str]:
    """Run `app` in a real uvicorn server on 127.0.0.1; yields its base URL."""
    for _ in range(1 if port else 3):
        port_used = port or free_port()
        started = _start(app, port_used)
        if started:
            break
    else:
        raise RuntimeError("test server did not start")
    server, thread = started
    port = port_used
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def _postgres_bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    assert found, "PostgreSQL is missing: scripts/bootstrap.sh installs it from apt-packages.txt"
    return str(found[-1])


@contextmanager
def postgres_server() -> Iterator[str]:
    """A real PostgreSQL (Debian's package) in a temporary directory on loopback; yields a conninfo URL.
    initdb refuses to run as root, so as root the server runs as the package's `postgres` user."""
    import os
    import pwd
    import subprocess
    import tempfile

    user = "postgres" if os.geteuid() == 0 else None
    data = tempfile.mkdtemp(prefix="sophia-pg-")
    if user:
        entry = pwd.getpwnam(user)
        os.chown(data, entry.pw_uid, entry.pw_gid)
    subprocess.run(
        [_postgres_bin("initdb"), "-D", data, "-U", "sophia", "--auth=trust", "-E", "UTF8"],
        check=True,
        stdout=subprocess.DEVNULL,
        user=user,
    )
    port = free_port()
    proc = subprocess.Popen(
        [
            _postgres_bin("postgres"),
            "-D",
            data,
            "-p",
            str(port),
            "-h",
            "127.0.0.1",
            "-k",
            data,
            "-c",
            "fsync=off",
            "-c",
            "full_page_writes=off",
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        user=user,
    )
    url = f"postgresql://sophia@127.0.0.1:{port}/postgres"
    try:
        deadline = time.monotonic() + 20
        while (
            subprocess.run(
                [_postgres_bin("pg_isready"), "-h", "127.0.0.1", "-p", str(port)], stdout=subprocess.DEVNULL
            ).returncode
            != 0
        ):
            if time.monotonic() > deadline or proc.poll() is not None:
                raise RuntimeError("PostgreSQL did not start")
            time.sleep(0.05)
        yield url
    finally:
        proc.terminate()
        proc.wait(20)
        subprocess.run(["rm", "-rf", data], check=False)


@contextmanager
def redis_server_at() -> Iterator[str]:
    """A real redis-server (Debian's package) on loopback; yields its URL."""
    import shutil
    import subprocess

    import redis

    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: scripts/bootstrap.sh installs it from apt-packages.txt"
    port = free_port()
    proc = subprocess.Popen(
        [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
        stdout=subprocess.DEVNULL,
    )
    client = redis.Redis(port=port)
    try:
        for _ in range(250):
            try:
                client.ping()
                break
            except redis.ConnectionError:
                time.sleep(0.02)
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        client.close()
        proc.terminate()
        proc.wait(10)
