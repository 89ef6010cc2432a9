"""Deal signals: deterministic facts and risk flags about one deal, no model."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from agno_teams.records import days_between, deal_state, engagement_time, number_prop, parse_time, prop, time_prop

STALE_AFTER_DAYS = 14  # no touch for longer than this is stale
STUCK_AFTER_DAYS = 30  # longer than this in one stage is stuck
HIGH_RISK_FLAGS = 3


def stage_entered(deal: dict[str, Any]) -> datetime | None:
    """When the deal entered its current stage: HubSpot's per-stage entry dates, else its creation."""
    stage = prop(deal, "dealstage")
    return (
        time_prop(deal, "hs_v2_date_entered_current_stage")
        or (time_prop(deal, f"hs_date_entered_{stage}") if stage else None)
        or time_prop(deal, "createdate")
        or parse_time(deal.get("createdAt"))
    )


def deal_signals(deal: dict[str, Any], engagements: list[dict[str, Any]], now: datetime) -> dict[str, Any]:
    state = deal_state(deal)
    entered = stage_entered(deal)
    touches = [t for t in (engagement_time(e) for e in engagements) if t is not None and t <= now]
    last_touch = max(touches) if touches else None
    close = time_prop(deal, "closedate")
    amount = number_prop(deal, "amount")
    signals: dict[str, Any] = {
        "deal_id": deal.get("id"),
        "deal": prop(deal, "dealname"),
        "state": state,
        "stage": prop(deal, "dealstage"),
        "amount": amount,
        "as_of": now.isoformat(),
        "stage_age_days": days_between(entered, now) if entered else None,
        "days_since_last_touch": days_between(last_touch, now) if last_touch else None,
        "engagements": len(engagements),
        "close_date": close.date().isoformat() if close else None,
        "days_to_close": (close - now).days if close else None,
        # How far the close date has slipped past today on a deal still open.
        "close_date_slip_days": max(0, days_between(close, now)) if close and state == "open" else 0,
    }
    flags: list[dict[str, str]] = []
    if state == "open":

        def flag(name: str, evidence: str) -> None:
            flags.append({"flag": name, "evidence": evidence})

        if last_touch is None:
            flag("no_engagement", "no note, call, email or meeting logged on the deal")
        elif signals["days_since_last_touch"] > STALE_AFTER_DAYS:
            flag("stale", f"no touch in {signals['days_since_last_touch']} days")
        if signals["stage_age_days"] is not None and signals["stage_age_days"] > STUCK_AFTER_DAYS:
            flag("stuck_in_stage", f"{signals['stage_age_days']} days in stage {signals['stage']}")
        if signals["close_date_slip_days"] > 0:
            flag("close_date_passed", f"close date passed {signals['close_date_slip_days']} days ago")
        if close is None:
            flag("no_close_date", "no close date set")
        if amount is None:
            flag("no_amount", "no amount set")
    signals["risk_flags"] = flags
    signals["risk"] = (
        "closed" if state != "open" else "high" if len(flags) >= HIGH_RISK_FLAGS else "medium" if flags else "low"
    )
    return signals
