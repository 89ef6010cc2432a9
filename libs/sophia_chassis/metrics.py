"""The request metrics every service exports. The observability stack's alerts and
dashboards query exactly these names and labels (components/observability.py)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

# Every service's latency SLO threshold must be a bucket edge (components.spec.LATENCY_BUCKETS holds
# the same list for the manifests): 0.1 s is the seed's target, the model routes take seconds.
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
# The chassis' routes for the platform, not for callers: the kubelet's probes and Prometheus' scrape.
# Counted like any other under these route templates; the SLO's rules and panels leave them out
# (components.observability.OPERATIONAL_ROUTES holds the same; a test ties them).
OPERATIONAL_ROUTES = ("/healthz", "/readyz", "/metrics")


class RequestMetrics:
    def __init__(self, registry: CollectorRegistry):
        labels = ("service", "route", "method", "status")
        self.requests = Counter("http_requests_total", "HTTP requests handled", labels, registry=registry)
        self.duration = Histogram(
            "http_request_duration_seconds", "HTTP request duration", labels, buckets=LATENCY_BUCKETS, registry=registry
        )

    def observe(self, service: str, route: str, method: str, status: int, seconds: float) -> None:
        values = (service, route, method, str(status))
        self.requests.labels(*values).inc()
        self.duration.labels(*values).observe(seconds)
