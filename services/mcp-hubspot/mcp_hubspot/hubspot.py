"""HubSpot CRM v3 over the chassis client: objects, search, associations; `after` paging;
429 with Retry-After is retried by the client as HubSpot asks."""

from __future__ import annotations

from typing import Any

from sophia_chassis import ResilientClient

# Engagements are object types of their own in CRM v3.
OBJECT_TYPES = ("contacts", "companies", "deals", "notes", "calls", "emails", "meetings", "tasks")
MAX_PAGE = 100  # HubSpot's page size limit for list and search


class HubSpotError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HubSpot answered {status}: {message}")
        self.status = status


class HubSpotClient:
    def __init__(self, token: str, base_url: str = "https://api.hubapi.com", client: ResilientClient | None = None):
        self._http = client or ResilientClient(base_url.rstrip("/"), timeout=20.0,
                                               headers={"Authorization": f"Bearer {token}"})

    async def _json(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = await self._http.request(method, path, **kwargs)
        if response.status_code >= 400:
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            raise HubSpotError(response.status_code, body.get("message", response.text[:200]))
        return response.json()

    @staticmethod
    def check_type(object_type: str) -> None:
        if object_type not in OBJECT_TYPES:
            raise ValueError(f"unknown CRM object type {object_type!r}; one of {', '.join(OBJECT_TYPES)}")

    async def list(self, object_type: str, properties: list[str] | None = None, limit: int = 500) -> list[dict]:
        self.check_type(object_type)
        results: list[dict] = []
        after: str | None = None
        while len(results) < limit:
            params: dict[str, Any] = {"limit": min(MAX_PAGE, limit - len(results))}
            if properties:
                params["properties"] = ",".join(properties)
            if after:
                params["after"] = after
            page = await self._json("GET", f"/crm/v3/objects/{object_type}", params=params)
            results.extend(page["results"])
            after = (page.get("paging") or {}).get("next", {}).get("after")
            if not after:
                break
        return results

    async def get(self, object_type: str, object_id: str, properties: list[str] | None = None) -> dict:
        self.check_type(object_type)
        params = {"properties": ",".join(properties)} if properties else None
        return await self._json("GET", f"/crm/v3/objects/{object_type}/{object_id}", params=params)

    async def create(self, object_type: str, properties: dict[str, Any]) -> dict:
        self.check_type(object_type)
        return await self._json("POST", f"/crm/v3/objects/{object_type}", json={"properties": properties})

    async def search(self, object_type: str, filters: list[dict[str, Any]], properties: list[str] | None = None,
                     limit: int = 100) -> list[dict]:
        """filters: [{"propertyName", "operator" (EQ, NEQ, GT, LT, CONTAINS_TOKEN, ...), "value"}], ANDed."""
        self.check_type(object_type)
        results: list[dict] = []
        after: str | None = None
        while len(results) < limit:
            body: dict[str, Any] = {"filterGroups": [{"filters": filters}] if filters else [],
                                    "limit": min(MAX_PAGE, limit - len(results))}
            if properties:
                body["properties"] = properties
            if after:
                body["after"] = after
            page = await self._json("POST", f"/crm/v3/objects/{object_type}/search", json=body)
            results.extend(page["results"])
            after = (page.get("paging") or {}).get("next", {}).get("after")
            if not after:
                break
        return results

    async def associations(self, object_type: str, object_id: str, to_type: str) -> list[dict]:
        self.check_type(object_type)
        self.check_type(to_type)
        page = await self._json("GET", f"/crm/v4/objects/{object_type}/{object_id}/associations/{to_type}")
        return page["results"]

    async def aclose(self) -> None:
        await self._http.aclose()
