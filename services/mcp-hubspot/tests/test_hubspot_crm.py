"""mcp-hubspot's REST API through a real uvicorn server against the fake HubSpot: objects
and engagements, `after` paging, search filterGroups/sorts, v4 associations, the token."""

from __future__ import annotations

import httpx
import pytest

from mcp_hubspot.main import Settings, build_app
from sophia_testing.hubspot_fake import TOKEN, FakeHubSpot
from sophia_testing.servers import serve


@pytest.fixture
def api(hubspot_url: str):
    with serve(build_app(Settings(hubspot_access_token=TOKEN, hubspot_api_url=hubspot_url))) as url:
        yield url


def test_contacts_are_listed_over_after_pages(crm: FakeHubSpot, api: str) -> None:
    contacts = httpx.get(f"{api}/hubspot/contacts", params={"limit": 1000}).json()["results"]
    pages = crm.calls("GET", "/crm/v3/objects/contacts")
    assert len(contacts) == 230 and len({c["id"] for c in contacts}) == 230
    assert len(pages) == 3  # 100 + 100 + 30, following paging.next.after
    assert contacts[0]["properties"]["email"] == "person0@acme.example"


def test_search_ors_filter_groups_ands_filters_sorts_and_pages(crm: FakeHubSpot, api: str) -> None:
    big_or_won = httpx.post(
        f"{api}/hubspot/deals/search",
        json={
            "filterGroups": [
                {"filters": [{"propertyName": "amount", "operator": "GTE", "value": "10000"}]},
                {"filters": [{"propertyName": "dealstage", "operator": "EQ", "value": "closedwon"}]},
            ],
            "sorts": [{"propertyName": "amount", "direction": "DESCENDING"}],
            "properties": ["dealname", "amount"],
        },
    ).json()["results"]
    leads = httpx.post(
        f"{api}/hubspot/contacts/search",
        json={
            "filters": [
                {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"},
                {"propertyName": "email", "operator": "HAS_PROPERTY"},
            ],
            "limit": 150,
        },
    ).json()["results"]
    searches = crm.calls("POST", "/crm/v3/objects/contacts/search")
    assert [d["properties"]["dealname"] for d in big_or_won] == ["Globex expansion", "Acme renewal", "Globex pilot"]
    assert set(big_or_won[0]["properties"]) == {"dealname", "amount", "hs_object_id"}
    assert len(leads) == 150  # of 153, over two search pages
    assert [body["limit"] for _, body in searches] == [100, 50] and searches[1][1]["after"] == "100"
    assert searches[0][1]["filterGroups"] == [
        {
            "filters": [
                {"propertyName": "lifecyclestage", "operator": "EQ", "value": "lead"},
                {"propertyName": "email", "operator": "HAS_PROPERTY", "value": None},
            ]
        }
    ]


def test_too_many_filter_groups_are_refused_before_asking_hubspot(crm: FakeHubSpot, api: str) -> None:
    group = {"filters": [{"propertyName": "amount", "operator": "GT", "value": "1"}]}
    response = httpx.post(f"{api}/hubspot/deals/search", json={"filterGroups": [group] * 6})
    assert response.status_code == 422 and response.json()["errors"][0]["field"] == "body.filterGroups"
    assert "at most 5" in response.json()["errors"][0]["message"]
    assert crm.calls("POST", "/crm/v3/objects/deals/search") == []


def test_associations_follow_v4_pages_and_engagements_are_objects(crm: FakeHubSpot, api: str) -> None:
    contacts = httpx.get(f"{api}/hubspot/companies/501/associations/contacts").json()["results"]
    deals = httpx.get(f"{api}/hubspot/companies/501/associations/deals").json()["results"]
    notes = httpx.get(f"{api}/hubspot/companies/501/associations/notes").json()["results"]
    created = httpx.post(
        f"{api}/hubspot/notes", json={"hs_note_body": "Sent the proposal", "hs_timestamp": "2026-11-05T09:00:00Z"}
    )
    note = httpx.get(f"{api}/hubspot/notes/{created.json()['id']}").json()
    meetings = httpx.get(f"{api}/hubspot/meetings").json()["results"]
    assert len(contacts) == 200 and len(crm.calls("GET", "/crm/v4/objects/companies/501/associations/contacts")) == 1
    assert len(deals) == 2 and all(isinstance(d["toObjectId"], int) for d in deals)
    assert len(notes) == 1
    assert created.status_code == 201 and note["properties"]["hs_note_body"] == "Sent the proposal"
    assert meetings[0]["properties"]["hs_meeting_title"] == "QBR with Acme"


def test_association_pages_beyond_500(crm: FakeHubSpot, api: str) -> None:
    for i in range(620):
        crm.associate("companies", "502", "contacts", str(50_000 + i))
    linked = httpx.get(f"{api}/hubspot/companies/502/associations/contacts").json()["results"]
    assert len(linked) == 650 and len(crm.calls("GET", "/crm/v4/objects/companies/502/associations/contacts")) == 2


def test_token_from_the_secret_file(hubspot_url: str, tmp_path, monkeypatch) -> None:
    (tmp_path / "HUBSPOT_ACCESS_TOKEN").write_text(TOKEN + "\n")
    monkeypatch.setenv("SOPHIA_SECRETS_DIR", str(tmp_path))
    monkeypatch.setenv("HUBSPOT_API_URL", hubspot_url)
    settings = Settings.load()
    with serve(build_app(settings)) as url:
        response = httpx.get(f"{url}/hubspot/deals")
        ready = httpx.get(f"{url}/readyz")
    assert response.status_code == 200 and len(response.json()["results"]) == 4
    assert ready.json() == {"status": "ready", "checks": ["hubspot-token"], "optional": ["hubspot"]}
