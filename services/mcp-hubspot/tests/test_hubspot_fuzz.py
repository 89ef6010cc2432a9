"""The fuzzer over mcp-hubspot's OpenAPI, against the fake HubSpot."""

from __future__ import annotations

from mcp_hubspot.main import Settings, build_app
from sophia_testing.fuzz import check, fuzz
from sophia_testing.hubspot_fake import TOKEN
from sophia_testing.servers import serve


def test_fuzz_mcp_hubspot(hubspot_url: str) -> None:
    settings = Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot_url, hubspot_attempts=1)
    with serve(build_app(settings)) as url:
        check(fuzz("mcp-hubspot", url))
