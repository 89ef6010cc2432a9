"""Reading HubSpot CRM v3 records: properties arrive as strings (or null); times as ISO 8601
or epoch milliseconds."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

CLOSED_STAGES = {"closedwon", "closedlost"}  # the default pipeline's closed stages


def prop(record: dict[str, Any], name: str) -> str | None:
    value = (record.get("properties") or {}).get(name)
    return None if value in (None, "") else str(value)


def parse_time(value: str | None) -> datetime | None:
    if not value:
        return None
    if value.isdigit():
        return datetime.fromtimestamp(int(value) / 1000, tz=UTC)
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


def time_prop(record: dict[str, Any], name: str) -> datetime | None:
    return parse_time(prop(record, name))


def number_prop(record: dict[str, Any], name: str) -> float | None:
    try:
        return float(prop(record, name))  # type: ignore[arg-type]
    except (TypeError, ValueError):
        return None


def days_between(earlier: datetime, later: datetime) -> int:
    return (later - earlier).days


def deal_state(deal: dict[str, Any]) -> str:
    """open, won or lost: HubSpot's hs_is_closed/hs_is_closed_won when present, else the default stages."""
    closed, won = prop(deal, "hs_is_closed"), prop(deal, "hs_is_closed_won")
    stage = (prop(deal, "dealstage") or "").lower()
    if closed is not None:
        if closed.lower() != "true":
            return "open"
        return "won" if (won or "").lower() == "true" or stage == "closedwon" else "lost"
    if stage in CLOSED_STAGES:
        return "won" if stage == "closedwon" else "lost"
    return "open"


def engagement_time(engagement: dict[str, Any]) -> datetime | None:
    """When the activity happened (hs_timestamp), else when it was logged."""
    return time_prop(engagement, "hs_timestamp") or parse_time(engagement.get("createdAt"))
