"""HubSpot CRM v3 over the chassis client: objects, search, associations; `after` paging;
429 with Retry-After is retried by the client as HubSpot asks."""

from __future__ import annotations

import re
from typing import Any, Literal
from urllib.parse import quote

from sophia_chassis import ResilientClient
from sophia_chassis.inputs import HUBSPOT_RECORD_ID

# Engagements are object types of their own in CRM v3.
ObjectType = Literal["contacts", "companies", "deals", "notes", "calls", "emails", "meetings", "tasks"]
OBJECT_TYPES: tuple[str, ...] = ObjectType.__args__
_RECORD_ID = re.compile(HUBSPOT_RECORD_ID)
MAX_PAGE = 100  # HubSpot's page size limit for list and search
MAX_SEARCH_RESULTS = 10_000  # search cannot page past 10,000 results (HubSpot answers 400)
ASSOCIATIONS_PAGE = 500  # v4 associations page size limit


class HubSpotError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"HubSpot answered {status}: {message}")
        self.status = status


class HubSpotClient:
    def __init__(
        self,
        token: str,
        base_url: str = "https://api.hubapi.com",
        client: ResilientClient | None = None,
        *,
        timeout: float = 20.0,
        attempts: int = 3,
        backoff_max: float = 10.0,
    ):
        headers = {"Authorization": f"Bearer {token}"}
        self._http = client or ResilientClient(
            base_url.rstrip("/"), timeout=timeout, attempts=attempts, backoff_max=backoff_max, headers=headers
        )
        # Creating a record is not idempotent: a retry after a 5xx or a timeout could create it twice.
        self._writes = ResilientClient(base_url.rstrip("/"), timeout=timeout, attempts=1, headers=headers)

    async def _json(self, method: str, path: str, *, write: bool = False, **kwargs: Any) -> dict[str, Any]:
        response = await (self._writes if write else self._http).request(method, path, **kwargs)
        if response.status_code >= 400:
            body = response.json() if response.headers.get("content-type", "").startswith("application/json") else {}
            raise HubSpotError(response.status_code, body.get("message", response.text[:200]))
        return response.json()

    @staticmethod
    def check_type(object_type: str) -> str:
        if object_type not in OBJECT_TYPES:
            raise ValueError(f"unknown CRM object type {object_type!r}; one of {', '.join(OBJECT_TYPES)}")
        return object_type

    @staticmethod
    def record_id(object_id: str) -> str:
        """A record id as a URL path segment: HubSpot's ids are decimal numbers, so nothing else
        (a `/`, `..`, `?`) can steer the call, made with the organisation's token, elsewhere."""
        if not isinstance(object_id, str) or not _RECORD_ID.fullmatch(object_id):
            raise ValueError(f"a HubSpot record id is a decimal number of 1 to 20 digits, not {object_id!r:.60}")
        return quote(object_id, safe="")

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
        return await self._json("GET", f"/crm/v3/objects/{object_type}/{self.record_id(object_id)}", params=params)

    async def create(self, object_type: str, properties: dict[str, Any]) -> dict:
        self.check_type(object_type)
        return await self._json("POST", f"/crm/v3/objects/{object_type}", write=True, json={"properties": properties})

    async def search(
        self,
        object_type: str,
        filters: list[dict[str, Any]],
        properties: list[str] | None = None,
        limit: int = 100,
        filter_groups: list[list[dict[str, Any]]] | None = None,
        sorts: list[dict[str, str]] | None = None,
    ) -> list[dict]:
        """filters: [{"propertyName", "operator" (EQ, NEQ, GT, LT, CONTAINS_TOKEN, IN, ...), "value"}], ANDed;
        filter_groups: several such lists, ORed (HubSpot allows 5 groups, 6 filters each, 18 in all)."""
        self.check_type(object_type)
        groups = [g for g in (filter_groups or []) if g] + ([filters] if filters else [])
        if len(groups) > 5 or any(len(g) > 6 for g in groups) or sum(len(g) for g in groups) > 18:
            raise ValueError("HubSpot search takes at most 5 filter groups of 6 filters, 18 filters in all")
        limit = min(limit, MAX_SEARCH_RESULTS)
        results: list[dict] = []
        after: str | None = None
        while len(results) < limit:
            body: dict[str, Any] = {
                "filterGroups": [{"filters": g} for g in groups],
                "limit": min(MAX_PAGE, limit - len(results)),
            }
            if properties:
                body["properties"] = properties
            if sorts:
                body["sorts"] = sorts
            if after:
                body["after"] = after
            # A search is a read: retried like one, though it is a POST.
            page = await self._json("POST", f"/crm/v3/objects/{object_type}/search", json=body)
            results.extend(page["results"])
            after = (page.get("paging") or {}).get("next", {}).get("after")
            if not after:
                break
        return results

    async def associations(self, object_type: str, object_id: str, to_type: str, limit: int = 1000) -> list[dict]:
        """v4 associations of one record, every page (`after`) up to `limit`."""
        self.check_type(object_type)
        self.check_type(to_type)
        results: list[dict] = []
        after: str | None = None
        while len(results) < limit:
            params: dict[str, Any] = {"limit": min(ASSOCIATIONS_PAGE, limit - len(results))}
            if after:
                params["after"] = after
            page = await self._json(
                "GET",
                f"/crm/v4/objects/{object_type}/{self.record_id(object_id)}/associations/{to_type}",
                params=params,
            )
            results.extend(page["results"])
            after = (page.get("paging") or {}).get("next", {}).get("after")
            if not after:
                break
        return results

    async def ping(self) -> bool:
        """Readiness: HubSpot answers and accepts the token (one contact, the cheapest read the app's scopes allow)."""
        await self._json("GET", "/crm/v3/objects/contacts", params={"limit": 1})
        return True

    async def aclose(self) -> None:
        await self._http.aclose()
        await self._writes.aclose()
