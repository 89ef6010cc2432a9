"""mcp-github tests: the chassis, the service and mcp-context importable; a fake GitHub on loopback."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Iterator

import pytest

ROOT = Path(__file__).resolve().parents[3]
for path in (ROOT / "libs", ROOT / "services" / "mcp-github", ROOT / "services" / "mcp-context"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))

from github_fake import TOKEN, FakeGitHub, build_fake_github  # noqa: E402
from tests.services.conftest import free_port, serve  # noqa: E402

REPO_FILES = {
    "README.md": "# Billing\nComputes invoices for every customer at the end of the month.\n",
    "src/billing/retry.py": "def backoff(attempt):\n    # exponential backoff with jitter for flaky upstreams\n"
                            "    return min(30, 2 ** attempt)\n",
    "src/billing/invoice.py": "class Invoice:\n    \"\"\"An invoice: customer, lines, total in cents.\"\"\"\n"
                              "    def total(self):\n        return sum(line.cents for line in self.lines)\n",
    "docs/logo.png": b"\x89PNG\r\n\x1a\n\x00\x00binary",
    "node_modules/left-pad/index.js": "module.exports = (s) => s;\n",
    "data/blob.dat": b"\x00\x01\x02 not text",
}


@pytest.fixture
def fake() -> FakeGitHub:
    gh = FakeGitHub(orgs={"acme"})
    gh.add_repo("acme", "billing", REPO_FILES)
    gh.add_repo("octocat", "hello", {"hello.py": "print('hello')\n"})
    return gh


@pytest.fixture
def github_url(fake: FakeGitHub) -> Iterator[str]:
    with serve(build_fake_github(fake)) as url:
        yield url


@pytest.fixture(scope="session")
def redis_server() -> Iterator[str]:
    binary = shutil.which("redis-server")
    assert binary, "redis-server is missing: scripts/bootstrap.sh installs it from apt-packages.txt"
    import redis

    port = free_port()
    proc = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                            stdout=subprocess.DEVNULL)
    client = redis.Redis(port=port)
    for _ in range(200):
        try:
            client.ping()
            break
        except redis.ConnectionError:
            time.sleep(0.02)
    yield f"redis://127.0.0.1:{port}/0"
    proc.terminate()
    proc.wait(10)


__all__ = ["TOKEN", "serve", "free_port"]
