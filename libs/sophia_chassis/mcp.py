"""An MCP server (official `mcp` SDK, streamable HTTP) served from a service's own app."""

from __future__ import annotations

from contextlib import AsyncExitStack

from fastapi import FastAPI
from mcp.server.mcpserver import MCPServer
from mcp.server.transport_security import TransportSecuritySettings

MCP_PATH = "/mcp"


class McpEndpoint:
    """Pass `start`/`stop` to create_app's hooks, then `attach(app)`."""

    def __init__(self, server: MCPServer):
        self.server = server
        self._running = AsyncExitStack()

    async def start(self) -> None:
        await self._running.enter_async_context(self.server.session_manager.run())

    async def stop(self) -> None:
        await self._running.aclose()

    def attach(self, app: FastAPI) -> None:
        app.router.routes.extend(
            self.server.streamable_http_app(
                streamable_http_path=MCP_PATH,
                # Reached by cluster DNS names behind a NetworkPolicy, not from browsers.
                transport_security=TransportSecuritySettings(enable_dns_rebinding_protection=False),
            ).routes
        )
