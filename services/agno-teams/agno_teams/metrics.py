"""agno-teams' own metrics, on the chassis registry (served at /metrics)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram


class TeamMetrics:
    def __init__(self, registry: CollectorRegistry):
        # outcome: ok, model_error, peer_error, timeout, not_configured, error
        self.runs = Counter("teams_runs_total", "Team runs by team and outcome", ("team", "outcome"), registry=registry)
        self.duration = Histogram(
            "teams_run_duration_seconds",
            "Team run duration",
            ("team",),
            buckets=(1, 2.5, 5, 10, 20, 40, 60, 120, 180, 300),
            registry=registry,
        )
        self.health = Histogram(
            "client_health_score",
            "Client health scores computed",
            buckets=(10, 20, 30, 40, 50, 60, 70, 80, 90, 100),
            registry=registry,
        )
        self.deal_risk = Counter("deal_signals_total", "Deal signals computed, by risk", ("risk",), registry=registry)
