"""What was indexed last per repository: the commit, and per file its blob SHA and the
mcp-context memory ids of its chunks (so a changed or deleted file's old chunks go).

Kept in Redis when `REDIS_URL` is set (shared by replicas; the platform's Redis is an LRU
cache, so an evicted state means one full re-index), else in the process."""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Protocol


@dataclass
class FileState:
    sha: str
    ids: list[str] = field(default_factory=list)


@dataclass
class RepoState:
    commit: str | None = None
    ref: str | None = None
    files: dict[str, FileState] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(asdict(self))

    @classmethod
    def from_json(cls, raw: str | bytes) -> RepoState:
        data = json.loads(raw)
        return cls(
            data.get("commit"),
            data.get("ref"),
            {p: FileState(f["sha"], list(f.get("ids", []))) for p, f in data.get("files", {}).items()},
        )


class StateStore(Protocol):
    async def get(self, repo: str) -> RepoState | None: ...
    async def put(self, repo: str, state: RepoState) -> None: ...
    async def ping(self) -> bool: ...
    async def aclose(self) -> None: ...


class MemoryStateStore:
    def __init__(self) -> None:
        self._states: dict[str, str] = {}

    async def get(self, repo: str) -> RepoState | None:
        raw = self._states.get(repo)
        return RepoState.from_json(raw) if raw else None

    async def put(self, repo: str, state: RepoState) -> None:
        self._states[repo] = state.to_json()

    async def ping(self) -> bool:
        return True

    async def aclose(self) -> None:
        return None


class RedisStateStore:
    PREFIX = "mcp-github:index:"

    def __init__(self, url: str, password: str | None = None):
        import redis.asyncio as redis

        from sophia_chassis.rotation import RotatedCredential, redis_connection_class

        # A rotated password is read from the secret files at each new connection (no restart).
        self.client = redis.Redis.from_url(
            url,
            password=password,
            socket_timeout=2,
            socket_connect_timeout=2,
            connection_class=redis_connection_class(RotatedCredential(("REDIS_PASSWORD",))),
        )

    async def get(self, repo: str) -> RepoState | None:
        raw = await self.client.get(self.PREFIX + repo)
        return RepoState.from_json(raw) if raw else None

    async def put(self, repo: str, state: RepoState) -> None:
        await self.client.set(self.PREFIX + repo, state.to_json())

    async def ping(self) -> bool:
        return bool(await self.client.ping())

    async def aclose(self) -> None:
        await self.client.aclose()
