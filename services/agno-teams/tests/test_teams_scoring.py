"""The deterministic parts, with a fixed `now`: client health score and deal signals."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from agno_teams.client_health import BASELINE, band, score
from agno_teams.records import deal_state, parse_time
from agno_teams.sales import deal_signals

NOW = datetime(2026, 6, 1, 12, 0, tzinfo=UTC)
COMPANY = {"id": "501", "properties": {"name": "Acme Corp"}}


def ago(days: int) -> str:
    return (NOW - timedelta(days=days)).isoformat().replace("+00:00", "Z")


def engagement(days: int, kind: str = "notes") -> dict:
    return {"id": str(days), "type": kind, "properties": {"hs_timestamp": ago(days)}}


def deal(name: str, stage: str = "contractsent", amount: str | None = "1000", close_in: int | None = 30, **props):
    close = None if close_in is None else (NOW + timedelta(days=close_in)).isoformat()
    return {
        "id": name,
        "properties": {"dealname": name, "dealstage": stage, "amount": amount, "closedate": close, **props},
    }


def support(text: str, severity: str = "low", status: str = "open") -> dict:
    return {"text": text, "metadata": {"company_id": "501", "severity": severity, "status": status}}


def points(result: dict) -> dict[str, int]:
    return {r["factor"]: r["points"] for r in result["reasons"]}


def test_an_engaged_client_with_pipeline_is_healthy() -> None:
    result = score(COMPANY, [deal("Renewal")], [engagement(d) for d in (2, 10, 20, 30, 40, 60)], [], NOW)
    assert points(result) == {
        "last_engagement": 0,
        "engagement_volume": 5,
        "open_pipeline": 5,
        "overdue_deals": 0,
        "lost_deals": 0,
        "support_severe": 0,
        "support_other": 0,
    }
    assert result["score"] == BASELINE + 10 == 95 and result["band"] == "healthy"
    assert result["company"] == "Acme Corp" and result["as_of"] == NOW.isoformat()
    assert "6 engagements in the last 90 days" in {r["evidence"] for r in result["reasons"]}


def test_a_silent_client_with_nothing_open_is_at_risk_with_reasons() -> None:
    result = score(COMPANY, [], [engagement(45)], [], NOW)
    reasons = {r["factor"]: r for r in result["reasons"]}
    assert reasons["last_engagement"] == {
        "factor": "last_engagement",
        "points": -20,
        "evidence": "last engagement 45 days ago",
    }
    assert reasons["engagement_volume"]["points"] == -10
    assert reasons["open_pipeline"] == {
        "factor": "open_pipeline",
        "points": -10,
        "evidence": "no open deals and none won in the last 365 days",
    }
    assert result["score"] == 45 and result["band"] == "at-risk"
    assert result["reasons"][0]["points"] <= result["reasons"][-1]["points"]  # worst first


@pytest.mark.parametrize("days, expected", [(0, 0), (14, 0), (15, -5), (30, -5), (31, -20), (90, -20), (91, -35)])
def test_last_engagement_brackets(days: int, expected: int) -> None:
    assert points(score(COMPANY, [], [engagement(days)], [], NOW))["last_engagement"] == expected


def test_no_engagement_at_all_and_future_timestamps_do_not_count() -> None:
    future = {"id": "9", "properties": {"hs_timestamp": (NOW + timedelta(days=3)).isoformat()}}
    result = score(COMPANY, [], [future], [], NOW)
    assert points(result)["last_engagement"] == -35
    assert "no engagement recorded" in {r["evidence"] for r in result["reasons"]}


def test_overdue_and_lost_deals_are_capped() -> None:
    deals = [deal(f"Late {i}", close_in=-10 * (i + 1)) for i in range(4)]
    deals += [deal(f"Lost {i}", stage="closedlost", close_in=-20) for i in range(3)]
    deals.append(deal("Old loss", stage="closedlost", close_in=-400))
    p = points(score(COMPANY, deals, [engagement(1)] * 3, [], NOW))
    assert p["overdue_deals"] == -15  # 4 overdue, capped at -15
    assert p["lost_deals"] == -20  # 3 lost in 180 days (the 400-day-old one is not counted), capped
    reasons = {r["factor"]: r["evidence"] for r in score(COMPANY, deals, [], [], NOW)["reasons"]}
    assert "Late 0 (10 days)" in reasons["overdue_deals"]


def test_a_recent_win_without_open_deals_costs_nothing() -> None:
    p = points(score(COMPANY, [deal("Won", stage="closedwon", close_in=-100)], [], [], NOW))
    assert p["open_pipeline"] == 0


def test_support_signals_count_only_open_issues_by_severity() -> None:
    signals = [
        support("Outage for three days", "high"),
        support("Data loss reported", "critical"),
        support("Invoice wrong", "low"),
        support("Old escalation", "high", status="resolved"),
    ]
    result = score(COMPANY, [deal("Renewal")], [engagement(1)] * 6, signals, NOW)
    p = points(result)
    assert p["support_severe"] == -30 and p["support_other"] == -5
    severe = next(r for r in result["reasons"] if r["factor"] == "support_severe")
    assert "Outage for three days" in severe["evidence"] and "Old escalation" not in severe["evidence"]
    assert result["score"] == 60 and result["band"] == "at-risk"


def test_score_is_clamped_and_banded() -> None:
    signals = [support(f"Severe {i}", "high") for i in range(5)]
    result = score(COMPANY, [deal("Lost", stage="closedlost", close_in=-5)], [], signals, NOW)
    assert result["score"] == 0 and result["band"] == "critical"
    assert [band(s) for s in (100, 70, 69, 40, 39, 0)] == [
        "healthy",
        "healthy",
        "at-risk",
        "at-risk",
        "critical",
        "critical",
    ]


def test_deal_state_reads_hubspot_flags_then_default_stages() -> None:
    assert deal_state(deal("a", stage="custom123", hs_is_closed="true", hs_is_closed_won="false")) == "lost"
    assert deal_state(deal("b", stage="custom123", hs_is_closed="true", hs_is_closed_won="true")) == "won"
    assert deal_state(deal("c", stage="closedwon")) == "won"
    assert deal_state(deal("d", stage="qualifiedtobuy")) == "open"
    assert deal_state(deal("e", stage="closedwon", hs_is_closed="false")) == "open"


def test_times_parse_iso_and_epoch_millis() -> None:
    assert parse_time("2026-06-01T12:00:00Z") == NOW
    assert parse_time("2026-06-01T12:00:00.000Z") == NOW
    assert parse_time(str(int(NOW.timestamp() * 1000))) == NOW
    assert parse_time("2026-06-01T12:00:00") == NOW  # naive means UTC
    assert parse_time("yesterday") is None and parse_time(None) is None


def test_deal_signals_for_a_healthy_open_deal() -> None:
    d = deal("Renewal", amount="12000", close_in=20, hs_v2_date_entered_current_stage=ago(10))
    s = deal_signals(d, [engagement(3), engagement(8, "calls")], NOW)
    assert s["state"] == "open" and s["amount"] == 12000.0 and s["stage"] == "contractsent"
    assert s["stage_age_days"] == 10 and s["days_since_last_touch"] == 3 and s["engagements"] == 2
    assert s["days_to_close"] == 20 and s["close_date_slip_days"] == 0 and s["close_date"] == "2026-06-21"
    assert s["risk_flags"] == [] and s["risk"] == "low"


def test_deal_signals_flag_a_stale_stuck_slipped_deal() -> None:
    d = deal("Expansion", close_in=-12, createdate=ago(75))
    s = deal_signals(d, [engagement(40)], NOW)
    assert s["stage_age_days"] == 75  # no stage entry date: creation
    assert s["close_date_slip_days"] == 12 and s["days_to_close"] == -12
    assert s["risk_flags"] == [
        {"flag": "stale", "evidence": "no touch in 40 days"},
        {"flag": "stuck_in_stage", "evidence": "75 days in stage contractsent"},
        {"flag": "close_date_passed", "evidence": "close date passed 12 days ago"},
    ]
    assert s["risk"] == "high"


def test_deal_signals_stage_entry_per_stage_property_and_missing_data() -> None:
    d = deal(
        "Pilot",
        stage="qualifiedtobuy",
        amount=None,
        close_in=None,
        hs_date_entered_qualifiedtobuy=ago(5),
        createdate=ago(200),
    )
    s = deal_signals(d, [], NOW)
    assert s["stage_age_days"] == 5 and s["days_since_last_touch"] is None and s["close_date"] is None
    assert [f["flag"] for f in s["risk_flags"]] == ["no_engagement", "no_close_date", "no_amount"]
    assert s["risk"] == "high"


def test_closed_deals_carry_no_risk_flags() -> None:
    s = deal_signals(deal("Done", stage="closedwon", close_in=-30), [], NOW)
    assert s["state"] == "won" and s["risk"] == "closed" and s["risk_flags"] == [] and s["close_date_slip_days"] == 0
