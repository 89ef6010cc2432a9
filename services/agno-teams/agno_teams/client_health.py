"""The client health score: deterministic, no model. A baseline minus (or plus) points per
factor, clamped to 0-100; every factor reports its points and the evidence behind them, so
the score can be explained and disputed line by line."""

from __future__ import annotations

from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any

from agno_teams.records import days_between, deal_state, engagement_time, prop, time_prop

BASELINE = 85  # a client with nothing said for or against it; bonuses can lift it to 100
HEALTHY_FROM, AT_RISK_FROM = 70, 40
SEVERE = {"high", "critical", "urgent"}


@dataclass(frozen=True)
class Reason:
    factor: str
    points: int
    evidence: str


def band(score: int) -> str:
    return "healthy" if score >= HEALTHY_FROM else "at-risk" if score >= AT_RISK_FROM else "critical"


def _last_engagement(engagements: list[dict[str, Any]], now: datetime) -> Reason:
    times = [t for t in (engagement_time(e) for e in engagements) if t is not None and t <= now]
    if not times:
        return Reason("last_engagement", -35, "no engagement recorded")
    days = days_between(max(times), now)
    points = -35 if days > 90 else -20 if days > 30 else -5 if days > 14 else 0
    return Reason("last_engagement", points, f"last engagement {days} days ago")


def _engagement_volume(engagements: list[dict[str, Any]], now: datetime) -> Reason:
    since = now - timedelta(days=90)
    count = sum(1 for e in engagements if (t := engagement_time(e)) is not None and since <= t <= now)
    points = -10 if count <= 1 else 5 if count >= 6 else 0
    return Reason("engagement_volume", points, f"{count} engagements in the last 90 days")


def _pipeline(deals: list[dict[str, Any]], now: datetime) -> Reason:
    open_deals = [d for d in deals if deal_state(d) == "open"]
    if open_deals:
        total = sum(float(prop(d, "amount") or 0) for d in open_deals)
        return Reason("open_pipeline", 5, f"{len(open_deals)} open deals worth {total:,.0f}")
    year_ago = now - timedelta(days=365)
    won = [d for d in deals if deal_state(d) == "won" and (time_prop(d, "closedate") or now) >= year_ago]
    if won:
        return Reason("open_pipeline", 0, f"no open deals; {len(won)} won in the last 365 days")
    return Reason("open_pipeline", -10, "no open deals and none won in the last 365 days")


def _overdue_deals(deals: list[dict[str, Any]], now: datetime) -> Reason:
    overdue = [
        (prop(d, "dealname") or d.get("id"), days_between(close, now))
        for d in deals
        if deal_state(d) == "open" and (close := time_prop(d, "closedate")) is not None and close < now
    ]
    if not overdue:
        return Reason("overdue_deals", 0, "no open deal is past its close date")
    listed = ", ".join(f"{name} ({days} days)" for name, days in overdue)
    return Reason("overdue_deals", max(-15, -5 * len(overdue)), f"{len(overdue)} open deals past close date: {listed}")


def _lost_deals(deals: list[dict[str, Any]], now: datetime) -> Reason:
    since = now - timedelta(days=180)
    lost = [
        prop(d, "dealname") or d.get("id")
        for d in deals
        if deal_state(d) == "lost" and (close := time_prop(d, "closedate")) is not None and since <= close <= now
    ]
    if not lost:
        return Reason("lost_deals", 0, "no deal lost in the last 180 days")
    return Reason(
        "lost_deals",
        max(-20, -10 * len(lost)),
        f"{len(lost)} deals lost in the last 180 days: {', '.join(map(str, lost))}",
    )


def _support(signals: list[dict[str, Any]]) -> list[Reason]:
    """Open support issues (mcp-context memories whose metadata says status open)."""
    open_issues = [s for s in signals if str((s.get("metadata") or {}).get("status", "open")).lower() == "open"]
    severe = [s for s in open_issues if str((s.get("metadata") or {}).get("severity", "")).lower() in SEVERE]
    other = [s for s in open_issues if s not in severe]

    def quote(items: list[dict[str, Any]]) -> str:
        return "; ".join(str(s.get("text", ""))[:80] for s in items)

    return [
        Reason(
            "support_severe",
            max(-30, -15 * len(severe)),
            f"{len(severe)} open high-severity issues" + (f": {quote(severe)}" if severe else ""),
        ),
        Reason(
            "support_other",
            max(-15, -5 * len(other)),
            f"{len(other)} other open issues" + (f": {quote(other)}" if other else ""),
        ),
    ]


def score(
    company: dict[str, Any],
    deals: list[dict[str, Any]],
    engagements: list[dict[str, Any]],
    support: list[dict[str, Any]],
    now: datetime,
) -> dict[str, Any]:
    reasons = [
        _last_engagement(engagements, now),
        _engagement_volume(engagements, now),
        _pipeline(deals, now),
        _overdue_deals(deals, now),
        _lost_deals(deals, now),
        *_support(support),
    ]
    total = max(0, min(100, BASELINE + sum(r.points for r in reasons)))
    return {
        "company_id": company.get("id"),
        "company": prop(company, "name"),
        "score": total,
        "band": band(total),
        "baseline": BASELINE,
        "as_of": now.isoformat(),
        # Worst first: what a reader should look at.
        "reasons": [asdict(r) for r in sorted(reasons, key=lambda r: r.points)],
    }
