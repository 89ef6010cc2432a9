"""mcp-agents tests: a real PostgreSQL and redis-server on loopback (one each per session,
a fresh database and an empty Redis per test), the fake model server, real peers."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import pytest

from sophia_testing.datastores import postgres_server, redis_server_at


@pytest.fixture(scope="session")
def postgres_root() -> Iterator[str]:
    with postgres_server() as url:
        yield url


@pytest.fixture(scope="session")
def redis_root() -> Iterator[str]:
    with redis_server_at() as url:
        yield url


@pytest.fixture
def database_url(postgres_root: str) -> str:
    import psycopg

    name = f"t_{uuid.uuid4().hex[:10]}"
    with psycopg.connect(postgres_root, autocommit=True) as conn:
        conn.execute(f"CREATE DATABASE {name}")
    return postgres_root.rsplit("/", 1)[0] + f"/{name}"


@pytest.fixture
def redis_url(redis_root: str) -> str:
    import redis

    with redis.Redis.from_url(redis_root) as client:
        client.flushall()
    return redis_root
