"""mcp-hubspot: the CRM (HubSpot CRM v3) as REST and as MCP tools.

Run with `uvicorn --factory mcp_hubspot.main:build_app`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import FastAPI, HTTPException
from mcp.server.mcpserver import MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from mcp_hubspot.hubspot import HubSpotClient, HubSpotError
from mcp_hubspot.settings import Settings
from sophia_chassis import CircuitOpenError, create_app
from sophia_chassis.http import UpstreamError
from sophia_chassis.mcp import McpEndpoint


class Filter(BaseModel):
    propertyName: str  # noqa: N815 (HubSpot's field names)
    operator: str = "EQ"
    value: Any = None


class FilterGroup(BaseModel):
    filters: list[Filter]


class Sort(BaseModel):
    propertyName: str  # noqa: N815
    direction: str = Field("DESCENDING", pattern="^(ASCENDING|DESCENDING)$")


class SearchIn(BaseModel):
    filters: list[Filter] = []  # ANDed
    filterGroups: list[FilterGroup] = []  # noqa: N815 (ORed, as HubSpot's own body)
    sorts: list[Sort] = []
    properties: list[str] | None = None
    limit: int = Field(100, ge=1, le=1000)


async def tool_call(coro):
    """A failed tool call the agent can act on (the reason, not just "Error executing tool")."""
    try:
        return await coro
    except (ValueError, HubSpotError, UpstreamError, CircuitOpenError) as exc:
        raise ToolError(str(exc)) from exc


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    crm = HubSpotClient(
        settings.hubspot_access_token or "",
        settings.hubspot_api_url,
        timeout=settings.hubspot_timeout_seconds,
        attempts=settings.hubspot_attempts,
        backoff_max=settings.hubspot_backoff_max_seconds,
    )
    mcp = MCPServer("mcp-hubspot", instructions="Read and search the CRM: contacts, companies, deals, engagements.")
    endpoint = McpEndpoint(mcp)

    async def call(coro):
        try:
            return await coro
        except ValueError as exc:
            raise HTTPException(422, str(exc)) from None
        except HubSpotError as exc:
            raise HTTPException(502 if exc.status >= 500 else exc.status, str(exc)) from None

    @mcp.tool()
    async def search_crm(
        object_type: str,
        filters: list[dict[str, Any]] | None = None,
        properties: list[str] | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """Search contacts, companies, deals or engagements with HubSpot filters (ANDed)."""
        return await tool_call(crm.search(object_type, filters or [], properties, limit))

    @mcp.tool()
    async def get_record(object_type: str, object_id: str) -> dict[str, Any]:
        """One CRM record by type and id."""
        return await tool_call(crm.get(object_type, object_id))

    @mcp.tool()
    async def list_associations(object_type: str, object_id: str, to_type: str) -> list[dict[str, Any]]:
        """Records of `to_type` associated with a record (e.g. a company's deals)."""
        return await tool_call(crm.associations(object_type, object_id, to_type))

    async def token_present() -> bool:
        return bool(settings.hubspot_access_token)

    last_ok = {"at": float("-inf")}

    async def hubspot_reachable() -> bool:
        if time.monotonic() - last_ok["at"] < settings.hubspot_ready_cache_seconds:
            return True
        await crm.ping()
        last_ok["at"] = time.monotonic()
        return True

    app = create_app(
        settings,
        readiness={"hubspot-token": token_present, "hubspot": hubspot_reachable},
        on_startup=[endpoint.start],
        on_shutdown=[endpoint.stop, crm.aclose],
    )

    @app.get("/hubspot/{object_type}")
    async def list_objects(object_type: str, limit: int = 100) -> dict[str, Any]:
        return {"results": await call(crm.list(object_type, limit=limit))}

    @app.get("/hubspot/{object_type}/{object_id}")
    async def get_object(object_type: str, object_id: str) -> dict[str, Any]:
        return await call(crm.get(object_type, object_id))

    @app.post("/hubspot/{object_type}", status_code=201)
    async def create_object(object_type: str, properties: dict[str, Any]) -> dict[str, Any]:
        return await call(crm.create(object_type, properties))

    @app.post("/hubspot/{object_type}/search")
    async def search(object_type: str, query: SearchIn) -> dict[str, Any]:
        filters = [f.model_dump() for f in query.filters]
        groups = [[f.model_dump() for f in g.filters] for g in query.filterGroups]
        sorts = [s.model_dump() for s in query.sorts]
        return {"results": await call(crm.search(object_type, filters, query.properties, query.limit, groups, sorts))}

    @app.get("/hubspot/{object_type}/{object_id}/associations/{to_type}")
    async def associations(object_type: str, object_id: str, to_type: str) -> dict[str, Any]:
        return {"results": await call(crm.associations(object_type, object_id, to_type))}

    endpoint.attach(app)
    return app
