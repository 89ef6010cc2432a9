"""Data store credentials that rotate under a running service (docs/secrets.md, "Rotation").

The platform mounts a credential as files in the service's Secret: the value to use (`REDIS_PASSWORD`,
`PGUSER` + `PGPASSWORD`, `QDRANT_API_KEY`) and the other value the store accepts during a rotation's
window (`..._PREVIOUS`; for Qdrant `QDRANT_API_KEY_NEXT`). Clients here read the files at every new
connection, so a rotated Secret reaches them without a restart. The kubelet swaps a mounted Secret
atomically but at a time of its own, before or after the store has taken the new values, so a
client tries the values in order and moves to the next one on an authentication error only.

Without the files (tests, `make dev`) the value from settings is used, as before.
"""

from __future__ import annotations

import re
from collections.abc import Generator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

from sophia_chassis.settings import secrets_dir


@dataclass(frozen=True)
class RotatedCredential:
    """`fields`: the files of the value in use (one per part: ("PGUSER", "PGPASSWORD")); the other
    accepted value is in the same names + `other`. `fallback`: the parts when there are no files."""

    fields: tuple[str, ...]
    other: str = "_PREVIOUS"
    fallback: tuple[str | None, ...] | None = None
    directory: str | None = None

    def _read(self, names: Sequence[str]) -> tuple[str, ...] | None:
        base = self.directory or secrets_dir()
        if base is None:
            return None
        try:
            parts = tuple(Path(base, name).read_text().strip() for name in names)
        except FileNotFoundError:
            return None
        return parts if all(parts) else None

    def candidates(self) -> list[tuple[str, ...]]:
        """The accepted values, the one in use first; read now (no cache: a read is one small file)."""
        current = self._read(self.fields)
        if current is None:
            return [self.fallback] if self.fallback and all(self.fallback) else []  # type: ignore[list-item]
        other = self._read([f + self.other for f in self.fields])
        return [current] + ([other] if other and other != current else [])


class RotatedKeyAuth(httpx.Auth):
    """An API key header from a RotatedCredential, per request: on 401/403 the request is sent again
    with the other accepted key, and the key that worked is tried first from then on."""

    requires_request_body = True  # the body is sent again on a retry

    def __init__(self, credential: RotatedCredential, header: str = "api-key"):
        self.credential, self.header = credential, header
        self._working: str | None = None

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        keys = [c[0] for c in self.credential.candidates()]
        if self._working in keys:
            keys.remove(self._working)
            keys.insert(0, self._working)
        if not keys:
            yield request
            return
        for i, key in enumerate(keys):
            request.headers[self.header] = key
            response = yield request
            if response.status_code not in (401, 403) or i + 1 == len(keys):
                if response.status_code not in (401, 403):
                    self._working = key
                return  # (httpx reads a response the flow answered with another request, itself)


def redis_connection_class(credential: RotatedCredential) -> type:
    """A `redis.asyncio` Connection that logs in with the credential's values in turn (its URL's
    username, each password); pass as `connection_class` to `Redis.from_url` or a pool."""
    from redis.asyncio.connection import Connection
    from redis.credentials import UsernamePasswordCredentialProvider
    from redis.exceptions import AuthenticationError

    class RotatingRedisConnection(Connection):
        async def connect_check_health(self, check_health: bool = True, retry_socket_connect: bool = True) -> None:
            passwords = [c[0] for c in credential.candidates()] or [self.password]
            for i, password in enumerate(passwords):
                self.credential_provider = UsernamePasswordCredentialProvider(self.username, password)
                try:  # a refused login closes the socket (redis-py's cleanup): the next one is a new socket
                    return await super().connect_check_health(check_health, retry_socket_connect)
                except AuthenticationError:
                    if i + 1 == len(passwords):
                        raise

    return RotatingRedisConnection


# PgBouncer and PostgreSQL refuse a login with these (SQLSTATE 28P01/28000 are not exposed for a failed
# connection by libpq, so the message is what there is).
_PG_AUTH_FAILED = re.compile(r"password authentication failed|SASL authentication failed|no such user|not permitted")


def psycopg_connection_class(credential: RotatedCredential) -> type:
    """A `psycopg.AsyncConnection` that logs in with the credential's (user, password) values in
    turn; pass as `connection_class` to psycopg_pool's AsyncConnectionPool (each new connection)."""
    import psycopg

    class RotatingPgConnection(psycopg.AsyncConnection):
        @classmethod
        async def connect(cls, conninfo: str = "", **kwargs: Any):  # type: ignore[override]
            logins = credential.candidates() or [()]
            for i, login in enumerate(logins):
                extra = dict(zip(("user", "password"), login, strict=False))
                try:
                    return await super().connect(conninfo, **{**kwargs, **extra})
                except psycopg.OperationalError as exc:
                    if i + 1 == len(logins) or not _PG_AUTH_FAILED.search(str(exc)):
                        raise

    return RotatingPgConnection
