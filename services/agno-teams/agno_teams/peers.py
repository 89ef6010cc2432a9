"""The MCP services as peers. Deterministic gathering uses their REST APIs through the
chassis client (retries, Retry-After, per-host breaker, a status to map); the model's
tool loop uses their MCP endpoints (see `mcp_session`)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Any

import httpx
import httpx2
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

from sophia_chassis import CircuitOpenError, ResilientClient
from sophia_chassis.auth import ServiceCredentials
from sophia_chassis.http import UpstreamError


class PeerError(RuntimeError):
    """A peer failed or refused; `status` is what this service answers (404 passes through)."""

    def __init__(self, peer: str, status: int, message: str, retry_after: float | None = None):
        super().__init__(f"{peer}: {message}")
        self.peer, self.status, self.retry_after = peer, status, retry_after


class Peer:
    def __init__(
        self,
        name: str,
        base_url: str,
        *,
        timeout: float,
        attempts: int,
        headers: dict[str, str] | None = None,
        credentials: ServiceCredentials | None = None,
    ):
        self.name, self.base_url = name, base_url.rstrip("/")
        self.credentials = credentials or ServiceCredentials(None)
        self._http = ResilientClient(self.base_url, timeout=timeout, attempts=attempts, headers=headers)
        self._probe = ResilientClient(self.base_url, timeout=timeout, attempts=1)

    async def call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            headers = {**self.auth_headers(), **kwargs.pop("headers", {})}
            response = await self._http.request(method, path, headers=headers, **kwargs)
        except CircuitOpenError as exc:
            raise PeerError(self.name, 503, str(exc)) from exc
        except UpstreamError as exc:
            if exc.retry_after is not None:  # the peer is shedding load: busy, say when to retry
                raise PeerError(self.name, 503, f"busy: {exc}", retry_after=exc.retry_after) from exc
            raise PeerError(self.name, 502, f"failed: {exc}") from exc
        if response.status_code >= 400:
            detail = _detail(response)
            raise PeerError(
                self.name, 404 if response.status_code == 404 else 502, f"answered {response.status_code}: {detail}"
            )
        return response.json()

    def auth_headers(self) -> dict[str, str]:
        return self.credentials.headers(self.name)  # for the tenant the request acts for

    async def ping(self) -> bool:
        # Liveness of the peer itself; its own /readyz judges its upstreams.
        response = await self._probe.get("/healthz")
        if response.status_code != 200:
            raise RuntimeError(f"{self.name} /healthz answered {response.status_code}")
        return True

    @asynccontextmanager
    async def mcp_session(self, timeout: float) -> AsyncIterator[ClientSession]:
        """An MCP client session on the peer's /mcp (streamable HTTP), not yet initialized:
        agno's MCPTools initializes the session it is handed."""
        http = create_mcp_http_client(headers=self.auth_headers(), timeout=httpx2.Timeout(timeout, read=timeout))
        async with http, streamable_http_client(f"{self.base_url}/mcp", http_client=http) as streams:
            async with ClientSession(streams[0], streams[1], read_timeout_seconds=timeout) as session:
                yield session

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._probe.aclose()


def _detail(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    return str(body.get("detail") or body.get("message") or body)[:300] if isinstance(body, dict) else str(body)[:300]
