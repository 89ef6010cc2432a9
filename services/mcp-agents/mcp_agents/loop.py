"""The agent loop: ask the model (through agno-coordinator's OpenAI-compatible endpoint)
with the MCP tools on offer, run the tool calls it makes, feed the results back, until it
answers or the step limit ends the run."""

from __future__ import annotations

import json
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import Any, Protocol

from sophia_chassis import ResilientClient

SYSTEM_PROMPT = (
    "You are Sophia's agent. Use the tools to find facts before answering; cite the repository files, "
    "CRM records or memories you used. Answer concisely when you have enough."
)

Emit = Callable[[str, dict[str, Any]], Awaitable[Any]]


class LimitReached(RuntimeError):
    pass


class ModelError(RuntimeError):
    pass


class Tools(Protocol):
    def openai_tools(self) -> list[dict[str, Any]]: ...
    async def call(self, qualified: str, arguments: dict[str, Any]) -> str: ...


@dataclass
class Outcome:
    answer: str
    steps: int


class ModelClient:
    """Chat completions from agno-coordinator, which picks the model (`auto`) and falls back."""

    def __init__(
        self,
        base_url: str,
        credentials: Callable[[str | None], dict[str, str]] | None = None,
        *,
        timeout: float = 60.0,
        attempts: int = 2,
        tenant: str | None = None,
    ):
        """`credentials(tenant)`: the headers that authenticate this service to agno-coordinator,
        acting for `tenant` (sophia_chassis.auth.ServiceCredentials)."""
        self._http = ResilientClient(base_url.rstrip("/"), timeout=timeout, attempts=attempts)
        self._credentials, self._tenant = credentials, tenant

    def acting_for(self, tenant: str) -> ModelClient:
        """The same client (and connections), its calls made on behalf of `tenant`."""
        view = object.__new__(ModelClient)
        view._http, view._credentials, view._tenant = self._http, self._credentials, tenant
        return view

    async def complete(self, messages: list[dict[str, Any]], tools: list[dict[str, Any]]) -> dict[str, Any]:
        body: dict[str, Any] = {"model": "auto", "messages": messages}
        if tools:
            body["tools"] = tools
        headers = self._credentials(self._tenant) if self._credentials else {}
        response = await self._http.request("POST", "/v1/chat/completions", json=body, headers=headers)
        if response.status_code >= 400:
            raise ModelError(f"agno-coordinator answered {response.status_code}: {response.text[:300]}")
        return response.json()["choices"][0]["message"]

    async def aclose(self) -> None:
        await self._http.aclose()


async def run_agent(goal: str, model: ModelClient, tools: Tools, emit: Emit, *, max_steps: int) -> Outcome:
    """A step is one model call and the tools it asked for. The time limit is the caller's
    (the worker runs this under asyncio.timeout, which also interrupts a call in flight)."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM_PROMPT}, {"role": "user", "content": goal}]
    offered = tools.openai_tools()
    for step in range(1, max_steps + 1):
        message = await model.complete(messages, offered)
        calls = message.get("tool_calls") or []
        if not calls:
            answer = message.get("content") or ""
            await emit("answer", {"step": step, "content": answer})
            return Outcome(answer, step)
        messages.append({"role": "assistant", "content": message.get("content"), "tool_calls": calls})
        for call in calls:
            name = call["function"]["name"]
            try:
                arguments = json.loads(call["function"].get("arguments") or "{}")
                await emit("tool_call", {"step": step, "tool": name, "arguments": arguments})
                output, ok = await tools.call(name, arguments), True
            except Exception as exc:  # the model hears why and can try another way
                output, ok = f"error: {exc}", False
            await emit("tool_result", {"step": step, "tool": name, "ok": ok, "output": output[:500]})
            messages.append({"role": "tool", "tool_call_id": call["id"], "content": output})
    raise LimitReached(f"step limit reached ({max_steps} steps) without an answer")
