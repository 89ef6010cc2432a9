"""mcp-hubspot against a fake HubSpot speaking CRM v3's paths, shapes, `after` paging,
search filterGroups, v4 associations, bearer auth and 429 + Retry-After."""

from __future__ import annotations

import asyncio
import time
from typing import Any

import httpx
from fastapi import FastAPI, Header, Request
from fastapi.responses import JSONResponse

from .conftest import importable, serve

importable("services/mcp-hubspot")

from mcp_hubspot.main import Settings, build_app  # noqa: E402

TOKEN = "pat-na1-test"


def fake_hubspot(state: dict[str, Any]) -> FastAPI:
    app = FastAPI()
    objects: dict[str, list[dict]] = {
        "companies": [{"id": str(i), "properties": {"name": f"Company {i}", "industry": "SaaS" if i % 2 else "Retail"}}
                      for i in range(1, 251)],
        "deals": [{"id": "d1", "properties": {"dealname": "Acme renewal", "amount": "12000"}}],
        "contacts": [], "notes": [], "calls": [], "emails": [], "meetings": [], "tasks": []}
    associations = {("companies", "7", "deals"): [{"toObjectId": "d1", "associationTypes": [
        {"category": "HUBSPOT_DEFINED", "typeId": 342, "label": None}]}]}

    def guard(authorization: str):
        state["calls"] = state.get("calls", 0) + 1
        if authorization != f"Bearer {TOKEN}":
            return JSONResponse({"status": "error", "category": "INVALID_AUTHENTICATION",
                                 "message": "Authentication credentials not found."}, status_code=401)
        if state.pop("throttle_next", False):
            state["throttled_at"] = time.monotonic()
            return JSONResponse({"status": "error", "category": "RATE_LIMITS", "message": "You have reached your ten_secondly_rolling limit."},
                                status_code=429, headers={"Retry-After": "1"})
        return None

    def page(items: list[dict], limit: int, after: str | None) -> dict:
        start = int(after or 0)
        chunk = items[start:start + limit]
        out: dict[str, Any] = {"results": chunk}
        if start + limit < len(items):
            out["paging"] = {"next": {"after": str(start + limit), "link": "..."}}
        return out

    @app.get("/crm/v3/objects/{object_type}")
    async def list_objects(object_type: str, limit: int = 10, after: str | None = None, authorization: str = Header("")):
        if (denied := guard(authorization)) is not None:
            return denied
        state["retried_at"] = time.monotonic()
        return page(objects[object_type], min(limit, 100), after)

    @app.get("/crm/v3/objects/{object_type}/{object_id}")
    async def get_object(object_type: str, object_id: str, authorization: str = Header("")):
        if (denied := guard(authorization)) is not None:
            return denied
        for item in objects[object_type]:
            if item["id"] == object_id:
                return item
        return JSONResponse({"status": "error", "category": "OBJECT_NOT_FOUND", "message": "resource not found"},
                            status_code=404)

    @app.post("/crm/v3/objects/{object_type}")
    async def create(object_type: str, request: Request, authorization: str = Header("")):
        if (denied := guard(authorization)) is not None:
            return denied
        item = {"id": str(1000 + len(objects[object_type])), "properties": (await request.json())["properties"]}
        objects[object_type].append(item)
        return JSONResponse(item, status_code=201)

    @app.post("/crm/v3/objects/{object_type}/search")
    async def search(object_type: str, request: Request, authorization: str = Header("")):
        if (denied := guard(authorization)) is not None:
            return denied
        body = await request.json()
        filters = [f for g in body.get("filterGroups", []) for f in g["filters"]]

        def match(item: dict) -> bool:
            for f in filters:
                value = item["properties"].get(f["propertyName"])
                if f["operator"] == "EQ" and value != f["value"]:
                    return False
                if f["operator"] == "CONTAINS_TOKEN" and str(f["value"]).lower() not in str(value).lower():
                    return False
            return True

        hits = [i for i in objects[object_type] if match(i)]
        return {"total": len(hits), **page(hits, min(body.get("limit", 10), 100), body.get("after"))}

    @app.get("/crm/v4/objects/{object_type}/{object_id}/associations/{to_type}")
    async def assoc(object_type: str, object_id: str, to_type: str, authorization: str = Header("")):
        if (denied := guard(authorization)) is not None:
            return denied
        return {"results": associations.get((object_type, object_id, to_type), [])}

    return app


def test_crm_over_rest_with_paging_search_associations_and_errors() -> None:
    state: dict[str, Any] = {}
    with serve(fake_hubspot(state)) as hubspot:
        app = build_app(Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot))
        with serve(app) as url:
            listed = httpx.get(f"{url}/hubspot/companies", params={"limit": 250}).json()["results"]
            saas = httpx.post(f"{url}/hubspot/companies/search", json={
                "filters": [{"propertyName": "industry", "operator": "EQ", "value": "SaaS"}], "limit": 1000})
            deals = httpx.get(f"{url}/hubspot/companies/7/associations/deals").json()["results"]
            created = httpx.post(f"{url}/hubspot/notes", json={"hs_note_body": "Call went well"})
            missing = httpx.get(f"{url}/hubspot/deals/nope")
            bad_type = httpx.get(f"{url}/hubspot/widgets")
            ready = httpx.get(f"{url}/readyz")
    assert len(listed) == 250 and listed[-1]["id"] == "250"  # three pages followed via `after`
    assert len(saas.json()["results"]) == 125
    assert deals[0]["toObjectId"] == "d1"
    assert created.status_code == 201 and created.json()["properties"]["hs_note_body"] == "Call went well"
    assert missing.status_code == 404 and "resource not found" in missing.json()["detail"]
    assert bad_type.status_code == 422 and "unknown CRM object type" in bad_type.json()["detail"]
    assert ready.status_code == 200


def test_429_retry_after_is_respected() -> None:
    state: dict[str, Any] = {"throttle_next": True}
    with serve(fake_hubspot(state)) as hubspot:
        with serve(build_app(Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot))) as url:
            response = httpx.get(f"{url}/hubspot/deals")
    assert response.status_code == 200 and response.json()["results"][0]["id"] == "d1"
    assert state["retried_at"] - state["throttled_at"] >= 0.95


def test_bad_token_is_a_clear_problem_and_not_ready() -> None:
    with serve(fake_hubspot({})) as hubspot:
        with serve(build_app(Settings(hubspot_access_token="wrong", hubspot_api_url=hubspot))) as url:
            denied = httpx.get(f"{url}/hubspot/deals")
        with serve(build_app(Settings(hubspot_access_token=None, hubspot_api_url=hubspot))) as url:
            ready = httpx.get(f"{url}/readyz")
    assert denied.status_code == 401 and "Authentication credentials not found" in denied.json()["detail"]
    assert ready.status_code == 503 and "hubspot-token" in ready.json()["checks"]


def test_mcp_tools_search_and_follow_associations() -> None:
    from mcp import ClientSession
    from mcp.client.streamable_http import streamable_http_client

    with serve(fake_hubspot({})) as hubspot:
        with serve(build_app(Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot))) as url:
            async def run():
                async with streamable_http_client(f"{url}/mcp") as streams:
                    async with ClientSession(streams[0], streams[1]) as session:
                        await session.initialize()
                        tools = {t.name for t in (await session.list_tools()).tools}
                        found = await session.call_tool("search_crm", {
                            "object_type": "deals",
                            "filters": [{"propertyName": "dealname", "operator": "CONTAINS_TOKEN", "value": "acme"}]})
                        linked = await session.call_tool("list_associations", {
                            "object_type": "companies", "object_id": "7", "to_type": "deals"})
                        return tools, found, linked

            tools, found, linked = asyncio.run(run())
    assert tools == {"search_crm", "get_record", "list_associations"}
    assert "Acme renewal" in str(found.structured_content or found.content)
    assert "d1" in str(linked.structured_content or linked.content)
