"""mcp-hubspot: the CRM (HubSpot CRM v3) as REST and as MCP tools.

Run with `uvicorn --factory mcp_hubspot.main:build_app`."""

from __future__ import annotations

import time
from typing import Annotated, Any, Literal

from fastapi import Body, Depends, FastAPI, HTTPException, Query
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict, Field, StringConstraints

from mcp_hubspot.hubspot import HubSpotClient, HubSpotError, ObjectType
from mcp_hubspot.settings import Settings
from sophia_chassis import CircuitOpenError, create_app
from sophia_chassis.auth import require, tool_identity
from sophia_chassis.http import UpstreamError
from sophia_chassis.inputs import FiniteFloat, HubSpotRecordId, Int64, Text
from sophia_chassis.mcp import McpEndpoint

# The edge's types, shared by the REST routes and the MCP tools.
# HubSpot's internal property names: letters, digits and underscores.
PropertyName = Annotated[str, StringConstraints(pattern=r"^[A-Za-z0-9_]{1,100}$")]
Properties = Annotated[list[PropertyName], Field(max_length=100)]
Operator = Literal[
    "EQ",
    "NEQ",
    "LT",
    "LTE",
    "GT",
    "GTE",
    "BETWEEN",
    "IN",
    "NOT_IN",
    "HAS_PROPERTY",
    "NOT_HAS_PROPERTY",
    "CONTAINS_TOKEN",
    "NOT_CONTAINS_TOKEN",
]
Value = Text(10_000) | Int64 | FiniteFloat | bool | None
SearchLimit = Annotated[int, Field(ge=1, le=1000)]


class Filter(BaseModel):
    model_config = ConfigDict(extra="forbid")
    propertyName: PropertyName  # noqa: N815 (HubSpot's field names)
    operator: Operator = "EQ"
    value: Value = None
    values: Annotated[list[Value], Field(max_length=100)] | None = None  # IN, NOT_IN
    highValue: Value = None  # noqa: N815 (BETWEEN)

    def upstream(self) -> dict[str, Any]:
        body = self.model_dump()
        return {k: v for k, v in body.items() if v is not None or k == "value"}


class FilterGroup(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: Annotated[list[Filter], Field(max_length=6)]


class Sort(BaseModel):
    model_config = ConfigDict(extra="forbid")
    propertyName: PropertyName  # noqa: N815
    direction: Literal["ASCENDING", "DESCENDING"] = "DESCENDING"


class SearchIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    filters: Annotated[list[Filter], Field(max_length=6)] = []  # ANDed
    filterGroups: Annotated[list[FilterGroup], Field(max_length=5)] = []  # noqa: N815 (ORed, as HubSpot's own body)
    sorts: Annotated[list[Sort], Field(max_length=5)] = []
    properties: Properties | None = None
    limit: SearchLimit = 100


# What a created record's properties may hold.
NewProperties = Annotated[dict[PropertyName, Value], Field(min_length=1, max_length=200)]


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
        object_type: ObjectType,
        filters: Annotated[list[Filter], Field(max_length=6)] | None = None,
        properties: Properties | None = None,
        limit: SearchLimit = 20,
    ) -> list[dict[str, Any]]:
        """Search contacts, companies, deals or engagements with HubSpot filters (ANDed)."""
        tool_identity(ctx, "crm:read", "search_crm")
        upstream = [f.upstream() for f in filters or []]
        return await tool_call(crm.search(object_type, upstream, properties, limit))

    @mcp.tool()
    async def get_record(ctx: Context, object_type: ObjectType, object_id: HubSpotRecordId) -> dict[str, Any]:
        """One CRM record by type and id."""
        tool_identity(ctx, "crm:read", "get_record")
        return await tool_call(crm.get(object_type, object_id))

    @mcp.tool()
    async def list_associations(
        ctx: Context, object_type: ObjectType, object_id: HubSpotRecordId, to_type: ObjectType
    ) -> list[dict[str, Any]]:
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
        # Without a token nothing can work (a deployment error); HubSpot down is HubSpot's outage, answered 502.
        readiness={"hubspot-token": token_present},
        degraded={"hubspot": hubspot_reachable},
        on_startup=[endpoint.start],
        on_shutdown=[endpoint.stop, crm.aclose],
    )

    read, write = [Depends(require("crm:read"))], [Depends(require("crm:write"))]

    @app.get("/hubspot/{object_type}", dependencies=read)
    async def list_objects(object_type: ObjectType, limit: int = Query(100, ge=1, le=10_000)) -> dict[str, Any]:
        return {"results": await call(crm.list(object_type, limit=limit))}

    @app.get("/hubspot/{object_type}/{object_id}", dependencies=read)
    async def get_object(object_type: ObjectType, object_id: HubSpotRecordId) -> dict[str, Any]:
        return await call(crm.get(object_type, object_id))

    @app.post("/hubspot/{object_type}", status_code=201, dependencies=write)
    async def create_object(object_type: ObjectType, properties: Annotated[NewProperties, Body()]) -> dict[str, Any]:
        return await call(crm.create(object_type, properties))

    @app.post("/hubspot/{object_type}/search", dependencies=read)
    async def search(object_type: ObjectType, query: SearchIn) -> dict[str, Any]:
        filters = [f.upstream() for f in query.filters]
        groups = [[f.upstream() for f in g.filters] for g in query.filterGroups]
        sorts = [s.model_dump() for s in query.sorts]
        return {"results": await call(crm.search(object_type, filters, query.properties, query.limit, groups, sorts))}

    @app.get("/hubspot/{object_type}/{object_id}/associations/{to_type}", dependencies=read)
    async def associations(object_type: ObjectType, object_id: HubSpotRecordId, to_type: ObjectType) -> dict[str, Any]:
        return {"results": await call(crm.associations(object_type, object_id, to_type))}

    endpoint.attach(app)
    return app
