"""The call into mcp-context (`MCP_CONTEXT_URL`): its REST batch-add and delete endpoints."""

from __future__ import annotations

from typing import Any

from sophia_chassis import ResilientClient
from sophia_chassis.auth import ServiceCredentials
from sophia_chassis.http import UpstreamError

BATCH_LIMIT = 1000  # mcp-context accepts 1 to 1000 memories per POST /memories/batch


class ContextError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"mcp-context answered {status}: {message}")
        self.status = status


class ContextClient:
    def __init__(
        self,
        base_url: str,
        *,
        timeout: float = 60.0,
        batch_size: int = 200,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        credentials: ServiceCredentials | None = None,
    ):
        base_url = base_url.rstrip("/")
        # This service's token for mcp-context, acting for the tenant of the request being served.
        self.credentials = credentials or ServiceCredentials(None)
        # Adding memories is not idempotent (ids are made server-side): sent once. Deletes are retried.
        self._once = ResilientClient(
            base_url, timeout=timeout, attempts=1, failure_threshold=failure_threshold, reset_timeout=reset_timeout
        )
        self._retrying = ResilientClient(
            base_url, timeout=timeout, failure_threshold=failure_threshold, reset_timeout=reset_timeout
        )
        self.batch_size = min(batch_size, BATCH_LIMIT)

    async def _call(self, client: ResilientClient, method: str, path: str, **kwargs: Any):
        try:
            return await client.request(method, path, headers=self.credentials.headers("mcp-context"), **kwargs)
        except UpstreamError as exc:  # name the peer in the problem the caller sees
            raise ContextError(502, f"{exc.__cause__ or exc}") from exc

    async def add(self, memories: list[dict[str, Any]]) -> list[str]:
        ids: list[str] = []
        for start in range(0, len(memories), self.batch_size):
            response = await self._call(
                self._once, "POST", "/memories/batch", json=memories[start : start + self.batch_size]
            )
            if response.status_code != 201:
                raise ContextError(response.status_code, response.text[:200])
            ids.extend(response.json()["ids"])
        return ids

    async def delete(self, memory_ids: list[str]) -> int:
        deleted = 0
        for memory_id in memory_ids:
            response = await self._call(self._retrying, "DELETE", f"/memories/{memory_id}")
            if response.status_code not in (204, 404):  # already gone is fine
                raise ContextError(response.status_code, response.text[:200])
            deleted += response.status_code == 204
        return deleted

    async def ping(self) -> bool:
        response = await self._retrying.get("/healthz")
        return response.status_code == 200

    async def aclose(self) -> None:
        await self._once.aclose()
        await self._retrying.aclose()
