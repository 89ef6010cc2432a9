"""Real datastores for tests, from Debian's packages (apt-packages.txt): PostgreSQL and redis-server
on loopback, each in a temporary directory, stopped on exit."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sophia_testing.servers import free_port


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
    import signal
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
        deadline = time.monotonic() + 60  # a loaded 2-core machine takes a while to start it
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
        # SIGINT is PostgreSQL's fast shutdown: SIGTERM's smart shutdown waits for every client to leave.
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
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
