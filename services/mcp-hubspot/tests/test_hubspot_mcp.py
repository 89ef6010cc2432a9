"""An MCP client (the official SDK, streamable HTTP) lists and calls mcp-hubspot's tools."""

from __future__ import annotations

import asyncio
import json

from mcp import ClientSession
from mcp.client.streamable_http import streamable_http_client

from mcp_hubspot.main import Settings, build_app
from sophia_testing.hubspot_fake import TOKEN, FakeHubSpot
from sophia_testing.servers import serve


def payload(result):
    assert not result.is_error, result.content
    if result.structured_content is not None:
        return result.structured_content.get("result", result.structured_content)
    return json.loads(result.content[0].text)


def test_mcp_client_searches_reads_and_follows_associations(crm: FakeHubSpot, hubspot_url: str) -> None:
    with serve(build_app(Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot_url))) as url:

        async def session_run():
            async with streamable_http_client(f"{url}/mcp") as streams:
                async with ClientSession(streams[0], streams[1]) as session:
                    await session.initialize()
                    tools = {t.name for t in (await session.list_tools()).tools}
                    found = await session.call_tool(
                        "search_crm",
                        {
                            "object_type": "deals",
                            "properties": ["dealname", "amount"],
                            "filters": [{"propertyName": "amount", "operator": "GT", "value": "5000"}],
                        },
                    )
                    company = await session.call_tool("get_record", {"object_type": "companies", "object_id": "501"})
                    contacts = await session.call_tool(
                        "list_associations", {"object_type": "companies", "object_id": "501", "to_type": "contacts"}
                    )
                    bad = await session.call_tool("get_record", {"object_type": "widgets", "object_id": "1"})
                    return tools, found, company, contacts, bad

        tools, found, company, contacts, bad = asyncio.run(session_run())
    assert tools == {"search_crm", "get_record", "list_associations"}  # reads only: no write tool for a model
    assert sorted(d["properties"]["dealname"] for d in payload(found)) == ["Acme renewal", "Globex expansion"]
    assert payload(company)["properties"]["name"] == "Acme Corp"
    assert len(payload(contacts)) == 200
    assert bad.is_error and "object_type" in str(bad.content) and "'contacts'" in str(bad.content)
    assert crm.calls("POST", "/crm/v3/objects/deals/search")[0][1]["filterGroups"][0]["filters"][0]["operator"] == "GT"
