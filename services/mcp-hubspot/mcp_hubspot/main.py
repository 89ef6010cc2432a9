"""mcp-hubspot: the CRM (HubSpot CRM v3) as REST and as MCP tools.

Run with `uvicorn --factory mcp_hubspot.main:build_app`."""

from __future__ import annotations

import time
from typing import Any

from fastapi import Depends, FastAPI, HTTPException
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, Field

from mcp_hubspot.hubspot import HubSpotClient, HubSpotError
from sophia_chassis import CircuitOpenError, ServiceSettings, create_app
from sophia_chassis.auth import require, tool_identity
from sophia_chassis.http import UpstreamError
from sophia_chassis.mcp import McpEndpoint


class Settings(ServiceSettings):
    service_name: str = "mcp-hubspot"
    hubspot_api_url: str = "https://api.hubapi.com"
    hubspot_access_token: str | None = None  # secret file HUBSPOT_ACCESS_TOKEN (private app)
    hubspot_timeout_seconds: float = 20.0
    hubspot_attempts: int = 3
    hubspot_backoff_max_seconds: float = 10.0  # the longest Retry-After slept through
    # /readyz asks HubSpot at most this often (probes every few seconds would spend the API quota).
    hubspot_ready_cache_seconds: float = 30.0


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
        ctx: Context,
        object_type: str,
        filters: list[dict[str, Any]] | None = None,
        properties: list[str] | None = None,
        limit: int = 20,
    ) -> list[dict[str, Any]]:
        """Search contacts, companies, deals or engagements with HubSpot filters (ANDed)."""
        tool_identity(ctx, "crm:read", "search_crm")
        return await tool_call(crm.search(object_type, filters or [], properties, limit))

    @mcp.tool()
    async def get_record(ctx: Context, object_type: str, object_id: str) -> dict[str, Any]:
        """One CRM record by type and id."""
        tool_identity(ctx, "crm:read", "get_record")
        return await tool_call(crm.get(object_type, object_id))

    @mcp.tool()
    async def list_associations(ctx: Context, object_type: str, object_id: str, to_type: str) -> list[dict[str, Any]]:
        """Records of `to_type` associated with a record (e.g. a company's deals)."""
        tool_identity(ctx, "crm:read", "list_associations")
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

    read, write = [Depends(require("crm:read"))], [Depends(require("crm:write"))]

    @app.get("/hubspot/{object_type}", dependencies=read)
    async def list_objects(object_type: str, limit: int = 100) -> dict[str, Any]:
        return {"results": await call(crm.list(object_type, limit=limit))}

    @app.get("/hubspot/{object_type}/{object_id}", dependencies=read)
    async def get_object(object_type: str, object_id: str) -> dict[str, Any]:
        return await call(crm.get(object_type, object_id))

    @app.post("/hubspot/{object_type}", status_code=201, dependencies=write)
    async def create_object(object_type: str, properties: dict[str, Any]) -> dict[str, Any]:
        return await call(crm.create(object_type, properties))

    @app.post("/hubspot/{object_type}/search", dependencies=read)
    async def search(object_type: str, query: SearchIn) -> dict[str, Any]:
        filters = [f.model_dump() for f in query.filters]
        groups = [[f.model_dump() for f in g.filters] for g in query.filterGroups]
        sorts = [s.model_dump() for s in query.sorts]
        return {"results": await call(crm.search(object_type, filters, query.properties, query.limit, groups, sorts))}

    @app.get("/hubspot/{object_type}/{object_id}/associations/{to_type}", dependencies=read)
    async def associations(object_type: str, object_id: str, to_type: str) -> dict[str, Any]:
        return {"results": await call(crm.associations(object_type, object_id, to_type))}

    endpoint.attach(app)
    return app
