"""The agent's tools: every tool of the configured MCP servers (official `mcp` client,
streamable HTTP), offered to the model as OpenAI function tools named `<server>__<tool>`."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from contextlib import AsyncExitStack
from dataclasses import dataclass
from typing import Any

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client
from mcp.shared._httpx_utils import create_mcp_http_client

SEPARATOR = "__"
MAX_RESULT_CHARS = 8000  # what one tool result may add to the conversation


class ToolFailure(RuntimeError):
    """A tool call failed; the model is told why and may try something else."""


@dataclass
class Tool:
    server: str
    name: str
    description: str
    input_schema: dict[str, Any]

    @property
    def qualified(self) -> str:
        return f"{self.server}{SEPARATOR}{self.name}"[:64]

    def openai(self) -> dict[str, Any]:
        return {
            "type": "function",
            "function": {
                "name": self.qualified,
                "description": self.description[:1024],
                "parameters": self.input_schema or {"type": "object"},
            },
        }


def result_text(result) -> str:
    if result.structured_content is not None:
        payload = result.structured_content.get("result", result.structured_content)
        text = json.dumps(payload, default=str)
    else:
        text = "\n".join(getattr(block, "text", "") for block in result.content)
    return text if len(text) <= MAX_RESULT_CHARS else text[:MAX_RESULT_CHARS] + " …[truncated]"


class Toolbox:
    """Sessions to the MCP servers for one task run (`async with`)."""

    def __init__(
        self,
        servers: dict[str, str],
        only: list[str] | None = None,
        headers: Callable[[str], dict[str, str]] | None = None,
    ):
        self.servers = servers  # name -> base URL of the service (its MCP endpoint is /mcp)
        self.only = set(only or [])
        # server -> the headers that authenticate this service to it (and name the tenant it acts for)
        self.headers = headers or (lambda server: {})
        self.tools: dict[str, Tool] = {}
        self._sessions: dict[str, ClientSession] = {}
        self.unavailable: dict[str, str] = {}  # server -> why it could not be reached
        self._stack = AsyncExitStack()

    async def _connect(self, server: str, url: str) -> ClientSession:
        stack = AsyncExitStack()
        try:
            client = await stack.enter_async_context(create_mcp_http_client(headers=self.headers(server)))
            streams = await stack.enter_async_context(
                streamable_http_client(f"{url.rstrip('/')}/mcp", http_client=client)
            )
            session = await stack.enter_async_context(ClientSession(streams[0], streams[1]))
            await session.initialize()
        except BaseException:
            await stack.aclose()
            raise
        self._stack.push_async_callback(stack.aclose)
        return session

    async def __aenter__(self) -> Toolbox:
        try:
            await self._open_all()
        except BaseException:
            await self._stack.aclose()
            raise
        return self

    async def _open_all(self) -> None:
        for server, url in self.servers.items():
            try:
                session = await self._connect(server, url)
                listed = (await session.list_tools()).tools
            except Exception as exc:  # one server down leaves the agent the others' tools
                self.unavailable[server] = f"{type(exc).__name__}: {exc}"[:200]
                continue
            self._sessions[server] = session
            for tool in listed:
                entry = Tool(server, tool.name, tool.description or "", tool.input_schema)
                if not self.only or entry.qualified in self.only or server in self.only:
                    self.tools[entry.qualified] = entry

    async def __aexit__(self, *exc) -> None:
        await self._stack.aclose()

    def openai_tools(self) -> list[dict[str, Any]]:
        return [tool.openai() for tool in self.tools.values()]

    async def call(self, qualified: str, arguments: dict[str, Any]) -> str:
        tool = self.tools.get(qualified)
        if tool is None:
            raise ToolFailure(f"no tool named {qualified!r}; available: {', '.join(sorted(self.tools))}")
        result = await self._sessions[tool.server].call_tool(tool.name, arguments)
        text = result_text(result)
        if result.is_error:
            raise ToolFailure(text or f"{qualified} failed")
        return text


async def list_tools(servers: dict[str, str], headers: Callable[[str], dict[str, str]]) -> dict[str, Any]:
    """Every server's tools and the servers that could not be reached, as `GET /agents/tools` shows
    them: the servers listed at once, each in a task of its own that opens, lists and closes its
    session (a session must be closed by the task that opened it)."""

    async def one(server: str, url: str) -> Toolbox:
        async with Toolbox({server: url}, headers=headers) as box:
            return box

    boxes = await asyncio.gather(*(one(server, url) for server, url in servers.items()))
    return {
        "tools": [tool.openai()["function"] for box in boxes for tool in box.tools.values()],
        "unavailable": {server: why for box in boxes for server, why in box.unavailable.items()},
    }
