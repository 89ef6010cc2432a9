"""A fake HubSpot (a real FastAPI app on loopback) speaking CRM v3 objects and search,
v4 associations, private-app bearer auth and HubSpot's error bodies.

Faithful where the service depends on it: page sizes (100 for lists and search, 500 for
associations), `paging.next.after` cursors, search bodies with `filterGroups` (ORed
groups of ANDed filters) and its operators, `sorts`, `properties`, the 5-group/6-filter
limits and the 10,000-result ceiling (400 VALIDATION_ERROR), 401 INVALID_AUTHENTICATION,
429 RATE_LIMIT with Retry-After and the X-HubSpot-RateLimit-* headers. Faults are
injected one request at a time: "429", "500", "502", "slow".
"""

from __future__ import annotations

import asyncio
import uuid
from dataclasses import dataclass, field
from typing import Any

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

TOKEN = "pat-na1-11111111-2222-3333-4444-555555555555"
TYPES = ("contacts", "companies", "deals", "notes", "calls", "emails", "meetings", "tasks")


@dataclass
class FakeHubSpot:
    objects: dict[str, dict[str, dict[str, Any]]] = field(default_factory=lambda: {t: {} for t in TYPES})
    associations: dict[tuple[str, str, str], list[str]] = field(default_factory=dict)
    faults: list[str] = field(default_factory=list)
    retry_after: str = "1"
    slow_seconds: float = 2.0
    requests: list[tuple[str, str, int, Any]] = field(default_factory=list)  # method, path, status, json body
    targets: list[str] = field(default_factory=list)  # every request's raw path and query, as received
    _next_id: int = 1000

    def add(self, object_type: str, properties: dict[str, Any], object_id: str | None = None) -> str:
        self._next_id += 1
        object_id = object_id or str(self._next_id)
        self.objects[object_type][object_id] = {
            "id": object_id,
            "properties": {k: None if v is None else str(v) for k, v in properties.items()},
            "createdAt": "2026-11-01T00:00:00.000Z",
            "updatedAt": "2026-11-02T00:00:00.000Z",
            "archived": False,
        }
        return object_id

    def associate(self, from_type: str, from_id: str, to_type: str, to_id: str) -> None:
        self.associations.setdefault((from_type, from_id, to_type), []).append(to_id)
        self.associations.setdefault((to_type, to_id, from_type), []).append(from_id)

    def calls(self, method: str, path: str) -> list[tuple[int, Any]]:
        return [(status, body) for m, p, status, body in self.requests if m == method and p == path]


def _error(status: int, category: str, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"status": "error", "message": message, "correlationId": str(uuid.uuid4()), "category": category},
        status_code=status,
        headers=headers,
    )


def _number(value: Any) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def _matches(record: dict[str, Any], f: dict[str, Any]) -> bool:
    value = record["properties"].get(f["propertyName"])
    if f["propertyName"] == "hs_object_id":
        value = record["id"]
    op, target = f["operator"], f.get("value")
    if op == "HAS_PROPERTY":
        return value not in (None, "")
    if op == "NOT_HAS_PROPERTY":
        return value in (None, "")
    if op == "EQ":
        return str(value).lower() == str(target).lower()
    if op == "NEQ":
        return str(value).lower() != str(target).lower()
    if op == "IN":
        return str(value).lower() in [str(v).lower() for v in f.get("values", [])]
    if op == "CONTAINS_TOKEN":
        return str(target).lower().strip("*") in str(value or "").lower().split()
    if op in ("LT", "LTE", "GT", "GTE"):
        a, b = _number(value), _number(target)
        if a is None or b is None:
            return False
        return {"LT": a < b, "LTE": a <= b, "GT": a > b, "GTE": a >= b}[op]
    raise ValueError(f"unsupported operator {op}")


def build_fake_hubspot(hs: FakeHubSpot) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def rules(request: Request, call_next):
        body = None
        query = request.scope["query_string"].decode("latin-1")
        hs.targets.append(request.scope["raw_path"].decode("latin-1") + (f"?{query}" if query else ""))
        if request.method in ("POST", "PATCH"):
            raw = await request.body()
            body = __import__("json").loads(raw) if raw else None
        response = await _apply(hs, request, call_next)
        hs.requests.append((request.method, request.url.path, response.status_code, body))
        response.headers["X-HubSpot-RateLimit-Daily"] = "250000"
        response.headers["X-HubSpot-RateLimit-Daily-Remaining"] = str(250000 - len(hs.requests))
        return response

    def view(record: dict[str, Any], properties: list[str] | None) -> dict[str, Any]:
        props = record["properties"]
        chosen = {k: props.get(k) for k in properties} if properties else dict(props)
        chosen["hs_object_id"] = record["id"]
        return {**record, "properties": chosen}

    def unknown_type(object_type: str) -> JSONResponse | None:
        if object_type not in TYPES:
            return _error(400, "VALIDATION_ERROR", f"Unable to infer object type from: {object_type}")
        return None

    @app.get("/crm/v3/objects/{object_type}")
    async def list_objects(object_type: str, limit: int = 10, after: str | None = None, properties: str | None = None):
        if (bad := unknown_type(object_type)) is not None:
            return bad
        limit = min(limit, 100)
        records = list(hs.objects[object_type].values())
        start = int(after or 0)
        page = records[start : start + limit]
        body: dict[str, Any] = {"results": [view(r, properties.split(",") if properties else None) for r in page]}
        if start + limit < len(records):
            body["paging"] = {
                "next": {"after": str(start + limit), "link": f"/crm/v3/objects/{object_type}?after={start + limit}"}
            }
        return body

    @app.get("/crm/v3/objects/{object_type}/{object_id}")
    async def get_object(object_type: str, object_id: str, properties: str | None = None):
        if (bad := unknown_type(object_type)) is not None:
            return bad
        record = hs.objects[object_type].get(object_id)
        if record is None:
            return _error(404, "OBJECT_NOT_FOUND", "resource not found")
        return view(record, properties.split(",") if properties else None)

    @app.post("/crm/v3/objects/{object_type}")
    async def create(object_type: str, request: Request):
        if (bad := unknown_type(object_type)) is not None:
            return bad
        body = await request.json()
        if not isinstance(body.get("properties"), dict):
            return _error(400, "VALIDATION_ERROR", "Invalid input JSON: properties is required")
        object_id = hs.add(object_type, body["properties"])
        return JSONResponse(view(hs.objects[object_type][object_id], None), status_code=201)

    @app.post("/crm/v3/objects/{object_type}/search")
    async def search(object_type: str, request: Request):
        if (bad := unknown_type(object_type)) is not None:
            return bad
        body = await request.json()
        groups = [g["filters"] for g in body.get("filterGroups", [])]
        if len(groups) > 5 or any(len(g) > 6 for g in groups) or sum(len(g) for g in groups) > 18:
            return _error(400, "VALIDATION_ERROR", "Too many filters or filter groups")
        limit, start = min(int(body.get("limit", 10)), 200), int(body.get("after", 0) or 0)
        if start + limit > 10_000:
            return _error(400, "VALIDATION_ERROR", "Search results are limited to 10,000 per query")
        hits = [
            r
            for r in hs.objects[object_type].values()
            if not groups or any(all(_matches(r, f) for f in g) for g in groups)
        ]
        for sort in reversed(body.get("sorts", [])):
            key = sort["propertyName"]
            hits.sort(
                key=lambda r: (
                    _number(r["properties"].get(key)) is None,
                    _number(r["properties"].get(key)) if _number(r["properties"].get(key)) is not None else 0,
                    str(r["properties"].get(key)),
                ),
                reverse=sort.get("direction") == "DESCENDING",
            )
        page = hits[start : start + limit]
        out: dict[str, Any] = {"total": len(hits), "results": [view(r, body.get("properties")) for r in page]}
        if start + limit < len(hits):
            out["paging"] = {"next": {"after": str(start + limit)}}
        return out

    @app.get("/crm/v4/objects/{object_type}/{object_id}/associations/{to_type}")
    async def associations(object_type: str, object_id: str, to_type: str, limit: int = 500, after: str | None = None):
        if (bad := unknown_type(object_type) or unknown_type(to_type)) is not None:
            return bad
        ids = hs.associations.get((object_type, object_id, to_type), [])
        limit, start = min(limit, 500), int(after or 0)
        out: dict[str, Any] = {
            "results": [
                {
                    "toObjectId": int(i),
                    "associationTypes": [{"category": "HUBSPOT_DEFINED", "typeId": 1, "label": None}],
                }
                for i in ids[start : start + limit]
            ]
        }
        if start + limit < len(ids):
            out["paging"] = {"next": {"after": str(start + limit), "link": None}}
        return out

    return app


async def _apply(hs: FakeHubSpot, request: Request, call_next):
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return _error(
            401,
            "INVALID_AUTHENTICATION",
            "Authentication credentials not found. This API supports OAuth 2.0 authentication.",
        )
    if hs.faults:
        fault = hs.faults.pop(0)
        if fault == "429":
            return JSONResponse(
                {
                    "status": "error",
                    "message": "You have reached your secondly limit.",
                    "errorType": "RATE_LIMIT",
                    "correlationId": str(uuid.uuid4()),
                    "policyName": "SECONDLY",
                },
                status_code=429,
                headers={
                    "Retry-After": hs.retry_after,
                    "X-HubSpot-RateLimit-Max": "190",
                    "X-HubSpot-RateLimit-Remaining": "0",
                    "X-HubSpot-RateLimit-Interval-Milliseconds": "10000",
                },
            )
        if fault in ("500", "502"):
            return _error(int(fault), "INTERNAL_ERROR", "internal error")
        if fault == "slow":
            await asyncio.sleep(hs.slow_seconds)
    return await call_next(request)
