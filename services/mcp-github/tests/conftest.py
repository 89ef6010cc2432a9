"""mcp-github tests: a fake GitHub on loopback, a real redis-server."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sophia_testing.datastores import redis_server_at
from sophia_testing.github_fake import TOKEN, FakeGitHub, build_fake_github
from sophia_testing.servers import free_port, serve

REPO_FILES = {
    "README.md": "# Billing\nComputes invoices for every customer at the end of the month.\n",
    "src/billing/retry.py": "def backoff(attempt):\n    # exponential backoff with jitter for flaky upstreams\n"
    "    return min(30, 2 ** attempt)\n",
    "src/billing/invoice.py": 'class Invoice:\n    """An invoice: customer, lines, total in cents."""\n'
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
    with redis_server_at() as url:
        yield url


__all__ = ["TOKEN", "serve", "free_port"]
