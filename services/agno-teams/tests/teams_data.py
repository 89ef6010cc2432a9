"""Shared data and settings for the agno-teams tests (a module of its own: test modules
cannot import `conftest` reliably when other test folders have one too)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sophia_testing.hubspot_fake import TOKEN, FakeHubSpot

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
AS_OF = {"as_of": NOW.isoformat()}
MODEL_KEY = "sk-teams-test"
SUPPORT_MEMORIES = [
    {
        "text": "Globex reported a three-day outage of the billing export; escalated to their CTO.",
        "namespace": "support",
        "metadata": {"company_id": "502", "severity": "high", "status": "open"},
    },
    {
        "text": "Acme asked how to reset SSO; answered the same day.",
        "namespace": "support",
        "metadata": {"company_id": "501", "severity": "low", "status": "resolved"},
    },
    {
        "text": "Acme's CFO signs renewals only after a QBR: book the QBR before sending the contract.",
        "namespace": "sales",
        "metadata": {"company_id": "501"},
    },
]


def at(days: int) -> str:
    """NOW plus `days` (negative: in the past), as HubSpot writes times."""
    return (NOW + timedelta(days=days)).strftime("%Y-%m-%dT%H:%M:%S.000Z")


def seed_crm(hs: FakeHubSpot) -> None:
    """Acme (501): engaged, two open deals (one overdue). Globex (502): silent, a recent loss."""
    acme = hs.add("companies", {"name": "Acme Corp", "domain": "acme.example"}, "501")
    globex = hs.add("companies", {"name": "Globex", "domain": "globex.example"}, "502")
    renewal = hs.add(
        "deals",
        {
            "dealname": "Acme renewal",
            "amount": 12000,
            "dealstage": "contractsent",
            "closedate": at(20),
            "createdate": at(-50),
            "hs_v2_date_entered_current_stage": at(-10),
        },
        "9001",
    )
    upsell = hs.add(
        "deals",
        {
            "dealname": "Acme upsell",
            "amount": 4000,
            "dealstage": "appointmentscheduled",
            "closedate": at(-12),
            "createdate": at(-75),
        },
        "9002",
    )
    lost = hs.add(
        "deals",
        {
            "dealname": "Globex expansion",
            "amount": 25000,
            "dealstage": "closedlost",
            "closedate": at(-30),
            "createdate": at(-90),
        },
        "9003",
    )
    for deal, company in ((renewal, acme), (upsell, acme), (lost, globex)):
        hs.associate("deals", deal, "companies", company)
    for kind, days, text, company, deal in (
        ("notes", -3, "Renewal call went well", acme, renewal),
        ("notes", -10, "Sent pricing", acme, None),
        ("calls", -20, "Check-in call", acme, None),
        ("meetings", -40, "QBR", acme, None),
        ("emails", -60, "Newsletter reply", acme, upsell),
        ("emails", -80, "Intro", acme, None),
        ("notes", -120, "Globex kickoff", globex, None),
        ("calls", -8, "Renewal terms", acme, renewal),
    ):
        body = {
            "notes": "hs_note_body",
            "calls": "hs_call_title",
            "emails": "hs_email_subject",
            "meetings": "hs_meeting_title",
        }[kind]
        engagement = hs.add(kind, {"hs_timestamp": at(days), body: text})
        hs.associate(kind, engagement, "companies", company)
        if deal:
            hs.associate(kind, engagement, "deals", deal)


def hubspot_app(hubspot_url: str):
    from mcp_hubspot.main import Settings, build_app

    # One attempt, so failures injected at the fake reach agno-teams without mcp-hubspot's backoff.
    return build_app(
        Settings(
            hubspot_access_token=TOKEN, hubspot_api_url=hubspot_url, hubspot_attempts=1, hubspot_backoff_max_seconds=0.1
        )
    )


MODEL_TIMEOUT_SECONDS = 15.0


def teams_settings(**overrides):
    from agno_teams.settings import Settings

    values = {
        "model_api_key": None,
        "agno_coordinator_url": None,
        "peer_attempts": 2,
        "peer_timeout_seconds": 15.0,  # MCP sessions to the peers open slowly on a loaded machine
        "model_max_retries": 0,
        # Scripted replies are instant, but a loaded 2-core CI machine stalls for seconds: a timeout here
        # would make the team fall back and the test fail for the wrong reason.
        "model_timeout_seconds": MODEL_TIMEOUT_SECONDS,
        "team_timeout_seconds": 90.0,
    } | overrides
    return Settings(**values)
