"""mcp-hubspot against hostile input (issue 12): a caller's ids, types and property names
never steer a call made with the organisation's token to another HubSpot path or query,
over REST or MCP; bad input is a 422 problem, never a 500. The fake captures every raw
path and query it receives: the tests assert what reached HubSpot."""

from __future__ import annotations

import asyncio

import httpx
import pytest
from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_hubspot.main import Settings, build_app
from sophia_testing.hubspot_fake import TOKEN, FakeHubSpot
from sophia_testing.servers import serve

HOSTILE_IDS = [
    "501/associations/deals",
    "..%2F..%2Fcrm%2Fv3%2Fobjects%2Fcontacts",
    "501?archived=true",
    "501#x",
    "..",
    "501%3Farchived%3Dtrue",
    "5 01",
    "501\t",
    "-1",
    "1" * 21,
]


@pytest.fixture
def api(hubspot_url: str):
    with serve(build_app(Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot_url))) as url:
        yield url


def test_rest_ids_and_types_never_reach_another_hubspot_path(crm: FakeHubSpot, api: str) -> None:
    from urllib.parse import quote

    crm.targets.clear()
    for bad in HOSTILE_IDS[1:]:  # the first, %2F-encoded, is routed as the associations route it spells
        for path in (
            f"/hubspot/companies/{quote(bad, safe='')}",
            f"/hubspot/companies/{quote(bad, safe='')}/associations/deals",
        ):
            answer = httpx.get(api + path)
            assert answer.status_code in (404, 422), (path, answer.status_code, answer.text)
            assert answer.headers["content-type"] == "application/problem+json"
    for bad_type in ("owners", "companies%2F501", "..", "contacts%3Farchived%3Dtrue"):
        assert httpx.get(f"{api}/hubspot/{bad_type}/501").status_code in (404, 422)
        assert httpx.post(f"{api}/hubspot/{bad_type}/search", json={}).status_code in (404, 405, 422)
    assert crm.targets == []  # nothing reached HubSpot
    assert httpx.get(f"{api}/hubspot/companies/501").json()["properties"]["name"] == "Acme Corp"
    assert crm.targets == ["/crm/v3/objects/companies/501"]


def test_search_and_create_bodies_are_typed(crm: FakeHubSpot, api: str) -> None:
    crm.targets.clear()
    for body in (
        {"filters": [{"propertyName": "amount&archived=true", "value": "1"}]},
        {"filters": [{"propertyName": "amount", "operator": "DROP", "value": "1"}]},
        {"properties": ["dealname,hs_secret"]},
        {"sorts": [{"propertyName": "amount", "direction": "SIDEWAYS"}]},
        {"filterGroups": [{"filters": []}] * 6},
        {"limit": 10**30},
        {"unknown": True},
    ):
        answer = httpx.post(f"{api}/hubspot/deals/search", json=body)
        assert answer.status_code == 422, (body, answer.text)
    for raw in (
        b'{"filters":[{"propertyName":"amount","value":NaN}]}',
        b'{"filters":[{"propertyName":"a","value":"\\ud800"}]}',
    ):
        bad = httpx.post(f"{api}/hubspot/deals/search", content=raw, headers={"content-type": "application/json"})
        assert bad.status_code == 422
    for props in ({}, {"bad name": "x"}, {"name": {"nested": 1}}, {"name": "\u0000"}):
        assert httpx.post(f"{api}/hubspot/companies", json=props).status_code == 422
    assert crm.targets == []
    ok = httpx.post(
        f"{api}/hubspot/deals/search", json={"filters": [{"propertyName": "amount", "operator": "GT", "value": 5000}]}
    )
    assert ok.status_code == 200
    assert crm.targets == ["/crm/v3/objects/deals/search"]


def test_mcp_tools_apply_the_rest_allow_lists(crm: FakeHubSpot, hubspot_url: str) -> None:
    with serve(build_app(Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot_url))) as url:

        async def run():
            async with streamable_http_client(f"{url}/mcp") as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    answers = []
                    for bad in HOSTILE_IDS:
                        answers.append(
                            await session.call_tool("get_record", {"object_type": "companies", "object_id": bad})
                        )
                        answers.append(
                            await session.call_tool(
                                "list_associations", {"object_type": "companies", "object_id": bad, "to_type": "deals"}
                            )
                        )
                    answers.append(await session.call_tool("get_record", {"object_type": "owners", "object_id": "1"}))
                    answers.append(
                        await session.call_tool(
                            "search_crm", {"object_type": "deals", "filters": [{"propertyName": "a?b", "value": 1}]}
                        )
                    )
                    answers.append(await session.call_tool("search_crm", {"object_type": "deals", "limit": 10**9}))
                    return answers

        crm.targets.clear()
        answers = asyncio.run(run())
    assert all(a.is_error for a in answers), [a for a in answers if not a.is_error]
    assert crm.targets == []
