"""Gathering what the deterministic parts score, through the peers' REST APIs: a company
(or deal), its deals, its engagements, and support signals from mcp-context."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import quote

from agno_teams.peers import Peer

ENGAGEMENT_TYPES = ("notes", "calls", "emails", "meetings")  # touches; tasks are plans, not contact
DEAL_PROPERTIES = [
    "dealname",
    "amount",
    "dealstage",
    "pipeline",
    "closedate",
    "createdate",
    "hs_is_closed",
    "hs_is_closed_won",
    "hs_v2_date_entered_current_stage",
    "hs_lastmodifieddate",
]
ENGAGEMENT_PROPERTIES = ["hs_timestamp", "hs_note_body", "hs_call_title", "hs_email_subject", "hs_meeting_title"]
IDS_PER_SEARCH = 5  # one EQ filter per group, and HubSpot allows 5 groups per search
CONCURRENCY = 4  # searches in flight across the service (HubSpot's search API allows a few per second)


class Gatherer:
    def __init__(self, hubspot: Peer, context: Peer, *, max_engagements: int, support_namespace: str):
        self.hubspot, self.context = hubspot, context
        self.max_engagements, self.support_namespace = max_engagements, support_namespace
        self._slots = asyncio.Semaphore(CONCURRENCY)

    async def record(self, object_type: str, object_id: str) -> dict[str, Any]:
        return await self.hubspot.call("GET", f"/hubspot/{object_type}/{quote(object_id, safe='')}")

    async def associated_ids(self, object_type: str, object_id: str, to_type: str) -> list[str]:
        path = f"/hubspot/{object_type}/{quote(object_id, safe='')}/associations/{to_type}"
        body = await self.hubspot.call("GET", path)
        ids = sorted({str(r["toObjectId"]) for r in body["results"]}, key=lambda i: (len(i), i), reverse=True)
        return ids

    async def by_ids(self, object_type: str, ids: list[str], properties: list[str]) -> list[dict[str, Any]]:
        """Records with the properties scoring needs (a plain GET returns only HubSpot's defaults)."""

        async def page(chunk: list[str]) -> list[dict[str, Any]]:
            groups = [{"filters": [{"propertyName": "hs_object_id", "operator": "EQ", "value": i}]} for i in chunk]
            async with self._slots:
                body = await self.hubspot.call(
                    "POST",
                    f"/hubspot/{object_type}/search",
                    json={"filterGroups": groups, "properties": properties, "limit": len(chunk)},
                )
            return body["results"]

        chunks = [ids[i : i + IDS_PER_SEARCH] for i in range(0, len(ids), IDS_PER_SEARCH)]
        return [r for results in await asyncio.gather(*(page(c) for c in chunks)) for r in results]

    async def engagements(self, object_type: str, object_id: str) -> list[dict[str, Any]]:
        async def of_type(kind: str) -> list[dict[str, Any]]:
            # HubSpot ids grow over time: the highest ids are the newest engagements.
            ids = (await self.associated_ids(object_type, object_id, kind))[: self.max_engagements]
            return [{**r, "type": kind} for r in await self.by_ids(kind, ids, ENGAGEMENT_PROPERTIES)]

        return [e for group in await asyncio.gather(*(of_type(k) for k in ENGAGEMENT_TYPES)) for e in group]

    async def deals(self, company_id: str) -> list[dict[str, Any]]:
        return await self.by_ids("deals", await self.associated_ids("companies", company_id, "deals"), DEAL_PROPERTIES)

    async def support_signals(self, company_id: str) -> list[dict[str, Any]]:
        body = await self.context.call(
            "POST",
            "/memories/search",
            json={
                "query": "support issue complaint escalation outage",
                "top_k": 50,
                "namespace": self.support_namespace,
                "metadata": {"company_id": company_id},
            },
        )
        return body["results"]

    async def company(self, company_id: str) -> dict[str, Any]:
        company = await self.record("companies", company_id)  # first: a 404 stops here
        deals, engagements, support = await asyncio.gather(
            self.deals(company_id), self.engagements("companies", company_id), self.support_signals(company_id)
        )
        return {"company": company, "deals": deals, "engagements": engagements, "support": support}

    async def deal(self, deal_id: str) -> dict[str, Any]:
        [deal] = await self.by_ids("deals", [deal_id], DEAL_PROPERTIES) or [await self.record("deals", deal_id)]
        return {"deal": deal, "engagements": await self.engagements("deals", deal_id)}
