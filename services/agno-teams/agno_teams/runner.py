"""One team run: MCP sessions to the peers opened for the run (in the request's task, as the
MCP client's cancel scopes require), the team built on them, the outcome mapped to an error
the API can answer clearly."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable
from contextlib import AsyncExitStack
from typing import Any

from agno.run import RunStatus
from agno.team import Team
from agno.tools.mcp import MCPTools

from agno_teams.metrics import TeamMetrics
from agno_teams.peers import Peer, PeerError
from agno_teams.settings import Settings
from agno_teams.teams import CRM_TOOLS, MEMORY_TOOLS

TeamFactory = Callable[[Settings, MCPTools, MCPTools], Team]


class ModelNotConfigured(RuntimeError):
    pass


class ModelError(RuntimeError):
    """The model call through agno-coordinator failed (after the client's retries)."""


class TeamTimeout(RuntimeError):
    pass


class TeamRunner:
    def __init__(
        self, settings: Settings, hubspot: Peer, context: Peer, metrics: TeamMetrics, coordinator: Peer | None = None
    ):
        self.settings, self.hubspot, self.context, self.metrics = settings, hubspot, context, metrics
        self.coordinator = coordinator

    async def _tools(self, stack: AsyncExitStack, peer: Peer, include: list[str]) -> MCPTools:
        try:
            session = await stack.enter_async_context(peer.mcp_session(self.settings.peer_timeout_seconds))
            tools = MCPTools(session=session, include_tools=include, name=peer.name.replace("-", "_"))
            await tools.connect()  # agno logs and swallows a failure here: check the outcome instead
        except Exception as exc:  # an unreachable peer surfaces as an ExceptionGroup from the transport
            raise PeerError(peer.name, 503, f"MCP endpoint unreachable: {type(exc).__name__}") from exc
        if not tools.initialized:
            raise PeerError(peer.name, 503, f"MCP endpoint {peer.base_url}/mcp did not list its tools")
        return tools

    async def require_model(self, name: str) -> None:
        """Called before any peer traffic: without a model a team run cannot start. The provider
        keys live on agno-coordinator, so it is asked too: a model it lists as unavailable is
        as missing as our own key (its answer to a model call would only be a 503)."""
        missing = self.settings.model_missing()
        if missing is None and self.coordinator is not None:
            listed = await self.coordinator.call("GET", "/v1/models")
            entry = next((m for m in listed.get("data", []) if m.get("id") == self.settings.model_id), None)
            if entry is not None and entry.get("available") is False:
                missing = (
                    f"agno-coordinator has no model available for {self.settings.model_id!r}: configure a "
                    "provider there (OPENAI_API_KEY or ANTHROPIC_API_KEY secret, or LOCAL_MODEL_URL)"
                )
        if missing is not None:
            self.metrics.runs.labels(name, "not_configured").inc()
            raise ModelNotConfigured(missing)

    async def run(self, name: str, factory: TeamFactory, prompt: str) -> dict[str, Any]:
        started, outcome = time.perf_counter(), "error"
        try:
            try:
                output = await self._run(name, factory, prompt)
            except BaseExceptionGroup as group:  # the MCP client's task groups wrap what the body raised
                raise _first_known(group) from group
            if output.status == RunStatus.error:
                outcome = "model_error"
                raise ModelError(f"model call through agno-coordinator failed: {output.content}")
            outcome = "ok"
            return {"team": name, "content": output.content, "tool_calls": tool_calls(output)}
        except PeerError:
            outcome = "peer_error"
            raise
        except TeamTimeout:
            outcome = "timeout"
            raise
        finally:
            self.metrics.runs.labels(name, outcome).inc()
            self.metrics.duration.labels(name).observe(time.perf_counter() - started)

    async def _run(self, name: str, factory: TeamFactory, prompt: str) -> Any:
        async with AsyncExitStack() as stack:
            crm = await self._tools(stack, self.hubspot, CRM_TOOLS)
            memories = await self._tools(stack, self.context, MEMORY_TOOLS)
            team = factory(self.settings, crm, memories)
            try:
                async with asyncio.timeout(self.settings.team_timeout_seconds):  # same task: see module doc
                    return await team.arun(prompt)
            except TimeoutError:
                raise TeamTimeout(f"{name} did not finish in {self.settings.team_timeout_seconds:.0f}s") from None


def _first_known(group: BaseExceptionGroup) -> Exception:
    for exc in group.exceptions:
        if isinstance(exc, BaseExceptionGroup):
            return _first_known(exc)
        if isinstance(exc, (PeerError, TeamTimeout, ModelError)):
            return exc
    return PeerError("mcp", 502, f"MCP session failed: {group.exceptions[0]!r}"[:300])


def tool_calls(output: Any) -> list[dict[str, Any]]:
    """Which member called which tool (the leader's delegations included), in order."""
    calls = [{"member": "leader", "tool": t.tool_name, "args": t.tool_args} for t in (output.tools or [])]
    for member in output.member_responses or []:
        who = getattr(member, "agent_id", None) or getattr(member, "agent_name", None)
        calls += [{"member": who, "tool": t.tool_name, "args": t.tool_args} for t in (member.tools or [])]
    return calls


def prompt(task: str, facts: dict[str, Any]) -> str:
    return f"{task}\n\nDeterministic facts (computed by rules, authoritative):\n{json.dumps(facts, indent=2)}"
