"""mcp-hubspot tests: a fake HubSpot on loopback."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from sophia_testing.hubspot_fake import FakeHubSpot, build_fake_hubspot
from sophia_testing.servers import serve


@pytest.fixture
def crm() -> FakeHubSpot:
    hs = FakeHubSpot()
    acme = hs.add("companies", {"name": "Acme Corp", "domain": "acme.example", "industry": "SaaS"}, "501")
    globex = hs.add("companies", {"name": "Globex", "domain": "globex.example", "industry": "Retail"}, "502")
    for i in range(230):
        contact = hs.add(
            "contacts",
            {
                "email": f"person{i}@acme.example",
                "firstname": f"Person{i}",
                "lifecyclestage": "customer" if i % 3 == 0 else "lead",
            },
        )
        hs.associate("contacts", contact, "companies", acme if i < 200 else globex)
    for name, amount, stage in (
        ("Acme renewal", 12000, "contractsent"),
        ("Acme upsell", 4000, "appointmentscheduled"),
        ("Globex pilot", 900, "closedwon"),
        ("Globex expansion", 25000, "qualifiedtobuy"),
    ):
        deal = hs.add("deals", {"dealname": name, "amount": amount, "dealstage": stage})
        hs.associate("deals", deal, "companies", acme if name.startswith("Acme") else globex)
    note = hs.add(
        "notes", {"hs_note_body": "Call went well, renewal expected in March", "hs_timestamp": "2026-11-03T10:00:00Z"}
    )
    hs.associate("notes", note, "companies", acme)
    hs.add("meetings", {"hs_meeting_title": "QBR with Acme", "hs_timestamp": "2026-11-04T10:00:00Z"})
    return hs


@pytest.fixture
def hubspot_url(crm: FakeHubSpot) -> Iterator[str]:
    with serve(build_fake_hubspot(crm)) as url:
        yield url
