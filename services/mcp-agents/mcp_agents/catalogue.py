"""What `GET /agents/tools` answers: the tools an agent would be offered, per tenant.

Listing them opens an MCP session to every server (a handshake and a list each): 0.15-0.3 s on
the local node, all of it over the service's 100 ms latency SLO, which made the route alone burn
mcp-agents' budget. A request does not wait for one: the tenant's last listing is answered from
memory and, once older than `max_age`, listed again in the background (stale-while-revalidate),
so the answer is at most `max_age` plus one listing old. Only a tenant's first request waits,
and requests arriving meanwhile share that one listing. An agent's run opens its own sessions
(mcp_agents.tools.Toolbox); nothing here is used to call a tool."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Awaitable, Callable
from typing import Any

import structlog

Listing = dict[str, Any]
log = structlog.get_logger()


class ToolCatalogue:
    def __init__(self, list_for: Callable[[str], Awaitable[Listing]], max_age: float):
        self._list_for, self._max_age = list_for, max_age
        # Tenants are those the API keys and service tokens name: a bounded set.
        self._listed: dict[str, tuple[float, Listing]] = {}
        self._listing: dict[str, asyncio.Task[Listing]] = {}

    async def get(self, tenant: str) -> Listing:
        known = self._listed.get(tenant)
        if known is None:
            # Shielded: a caller that goes away does not cancel the listing the others wait for.
            return await asyncio.shield(self._relist(tenant))
        listed_at, listing = known
        if time.monotonic() - listed_at > self._max_age:
            self._relist(tenant)
        return listing

    def _relist(self, tenant: str) -> asyncio.Task[Listing]:
        task = self._listing.get(tenant)
        if task is None:
            task = asyncio.create_task(self._list(tenant), name=f"tools-{tenant}")
            self._listing[tenant] = task
            task.add_done_callback(lambda done: self._finished(tenant, done))
        return task

    async def _list(self, tenant: str) -> Listing:
        listing = await self._list_for(tenant)
        self._listed[tenant] = (time.monotonic(), listing)
        return listing

    def _finished(self, tenant: str, task: asyncio.Task[Listing]) -> None:
        self._listing.pop(tenant, None)
        if not task.cancelled() and task.exception() is not None:
            # The previous listing is kept; the next request past max_age tries again.
            log.warning("tool listing failed", tenant=tenant, error=repr(task.exception()))

    async def close(self) -> None:
        listing = list(self._listing.values())
        for task in listing:
            task.cancel()
        await asyncio.gather(*listing, return_exceptions=True)
