"""The alert rules as Prometheus evaluates them: `promtool test rules` (built from the Go module
proxy by bootstrap) on synthetic series. Each alert fires when it should and stays silent when it
should not, and each service is held to its own latency threshold."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import yaml

from components.observability import BURN_RATE_WINDOWS, alert_rules
from infra.discovery import discover

PROMTOOL = Path(__file__).resolve().parents[2] / ".venv" / "bin" / "promtool"
NS = "sophia"


def rules_file(tmp: Path) -> Path:
    groups = json.loads(json.dumps(alert_rules({s.name: s.observability for s in discover()})).replace("{ns}", NS))
    path = tmp / "rules.yaml"
    path.write_text(yaml.safe_dump({"groups": groups}))
    return path


def requests(
    service: str, per_minute: int, errors_per_minute: int, minutes: int, route: str = "/items"
) -> list[dict[str, str]]:
    ok = per_minute - errors_per_minute
    return [
        {
            "series": f'http_requests_total{{service="{service}",route="{route}",status="200"}}',
            "values": f"0+{ok}x{minutes}",
        },
        {
            "series": f'http_requests_total{{service="{service}",route="{route}",status="{503 if route == "/readyz" else 500}"}}',
            "values": f"0+{errors_per_minute}x{minutes}",
        },
    ]


def latency(
    service: str, threshold: float, per_minute: int, fast_per_minute: int, minutes: int, route: str = "/items"
) -> list[dict[str, str]]:
    """A histogram of `route` where `fast_per_minute` of `per_minute` requests finish within `threshold`."""
    return [
        {
            "series": f'http_request_duration_seconds_bucket{{service="{service}",route="{route}",le="{threshold}"}}',
            "values": f"0+{fast_per_minute}x{minutes}",
        },
        {
            "series": f'http_request_duration_seconds_count{{service="{service}",route="{route}"}}',
            "values": f"0+{per_minute}x{minutes}",
        },
    ]


def probes_and_scrapes(service: str, threshold: float, minutes: int, fast: bool) -> list[dict[str, str]]:
    """The kubelet's probes and Prometheus' scrapes of one pod (/readyz every 5 s, /healthz every 10 s,
    /metrics every 15 s), all within `threshold` or all over it (a loaded node, a slow readiness check)."""
    per_minute = {"/readyz": 12, "/healthz": 6, "/metrics": 4}
    return [
        series
        for route, n in per_minute.items()
        for series in latency(service, threshold, n, n if fast else 0, minutes, route=route)
    ]


def error_ratio_pages_only(service: str) -> list[dict[str, Any]]:
    return [
        {
            "eval_time": "20m",
            "alertname": "HighErrorRatio",
            "exp_alerts": [
                {
                    "exp_labels": {"severity": "page", "service": service},
                    "exp_annotations": {"summary": f"{service} answers more than 5 % of requests with 5xx"},
                }
            ],
        }
    ]


def run_promtool(tmp: Path, tests: list[dict[str, Any]]) -> subprocess.CompletedProcess[str]:
    rules = rules_file(tmp)
    spec = tmp / "tests.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [str(rules)], "evaluation_interval": "1m", "tests": tests}))
    return subprocess.run([str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)


def test_the_rules_are_valid_prometheus(tmp_path: Path) -> None:
    result = subprocess.run(
        [str(PROMTOOL), "check", "rules", str(rules_file(tmp_path))], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_each_alert_fires_when_it_should_and_only_then(tmp_path: Path) -> None:
    tests = [
        {
            "name": "a target that is down pages after 2 minutes; one that is up does not",
            "interval": "1m",
            "input_series": [
                {"series": f'up{{namespace="{NS}",service="mcp-context",job="a"}}', "values": "0x10"},
                {"series": f'up{{namespace="{NS}",service="mcp-github",job="b"}}', "values": "1x10"},
            ],
            "alert_rule_test": [
                {"eval_time": "1m", "alertname": "ServiceDown", "exp_alerts": []},
                {
                    "eval_time": "5m",
                    "alertname": "ServiceDown",
                    "exp_alerts": [
                        {
                            "exp_labels": {
                                "severity": "page",
                                "namespace": NS,
                                "service": "mcp-context",
                                "job": "a",
                            },
                            "exp_annotations": {"summary": "mcp-context has a target that is not being scraped"},
                        }
                    ],
                },
            ],
        },
        {
            "name": "10 % of answers 5xx pages; 1 % does not",
            "interval": "1m",
            "input_series": requests("mcp-hubspot", 600, 60, 30) + requests("mcp-github", 600, 6, 30),
            "alert_rule_test": error_ratio_pages_only("mcp-hubspot"),
        },
        {
            # Half the requests over 100 ms burns mcp-context's budget 50x: the fast-burn page fires. The same
            # histogram for agno-coordinator is measured against its own 30 s: nothing fires for it.
            "name": "each service's latency is held to its own threshold",
            "interval": "1m",
            "input_series": latency("mcp-context", 0.1, 600, 300, 120)
            + latency("agno-coordinator", 30.0, 600, 600, 120)
            + latency("agno-coordinator", 0.1, 600, 300, 120),
            "alert_rule_test": [
                {
                    "eval_time": "90m",
                    "alertname": "LatencyBudgetBurn1H",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "page", "slo": "latency", "service": "mcp-context"},
                            "exp_annotations": {
                                "summary": "mcp-context burns its latency budget 14.4x (over 1h and 5m)"
                            },
                        }
                    ],
                }
            ],
        },
        {
            # An SLO is about callers: probes and scrapes that are all slow (a loaded node, a readiness
            # check of a slow vendor) burn no budget, beside fast callers (mcp-github) or with no callers at
            # all (mcp-hubspot); a quarter of mcp-context's callers slow still does, however many fast
            # probes beside them (counted in, they would have kept it under 14.4 %).
            "name": "probes and scrapes burn no latency budget; callers do",
            "interval": "1m",
            "input_series": probes_and_scrapes("mcp-github", 0.1, 120, fast=False)
            + latency("mcp-github", 0.1, 60, 60, 120)
            + probes_and_scrapes("mcp-hubspot", 0.1, 120, fast=False)
            + probes_and_scrapes("mcp-context", 0.1, 120, fast=True)
            + latency("mcp-context", 0.1, 20, 15, 120),
            # Every window, as 25 % of mcp-context's callers are slow: only mcp-context, in each.
            "alert_rule_test": [
                {
                    "eval_time": "90m",
                    "alertname": f"LatencyBudgetBurn{long_w.upper()}",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": severity, "slo": "latency", "service": "mcp-context"},
                            "exp_annotations": {
                                "summary": f"mcp-context burns its latency budget {rate}x (over {long_w} and {short_w})"
                            },
                        }
                    ],
                }
                for long_w, short_w, rate, severity in BURN_RATE_WINDOWS
            ],
            "promql_expr_test": [
                {
                    "expr": "sophia:latency_slow_ratio:rate5m",
                    "eval_time": "90m",
                    # mcp-hubspot: callers none, so no ratio at all (not 100 %).
                    "exp_samples": [
                        {"labels": 'sophia:latency_slow_ratio:rate5m{service="mcp-github"}', "value": 0},
                        {"labels": 'sophia:latency_slow_ratio:rate5m{service="mcp-context"}', "value": 0.25},
                    ],
                }
            ],
        },
        {
            # A fresh stack's first requests: all 60 of mcp-agents' in the hour slow, a large ratio of a sample
            # too small to mean anything: nothing pages. mcp-context, half slow but with 120 requests in its
            # hour (over MIN_REQUESTS_FOR_BURN), does.
            "name": "burn alerts need a sample of callers' requests",
            "interval": "1m",
            "input_series": latency("mcp-agents", 0.1, 1, 0, 60) + latency("mcp-context", 0.1, 2, 1, 60),
            "alert_rule_test": [
                {
                    "eval_time": "60m",
                    "alertname": "LatencyBudgetBurn1H",
                    "exp_alerts": [
                        {
                            "exp_labels": {"severity": "page", "slo": "latency", "service": "mcp-context"},
                            "exp_annotations": {
                                "summary": "mcp-context burns its latency budget 14.4x (over 1h and 5m)"
                            },
                        }
                    ],
                }
            ],
        },
        {
            # A readiness check failing (503) is the pod's answer to the kubelet, not to a caller; 10 % of
            # mcp-hubspot's callers failing pages, however many probes answered fine beside them.
            "name": "failing probes raise no error ratio; failing callers do",
            "interval": "1m",
            "input_series": requests("mcp-github", 12, 12, 30, route="/readyz")
            + requests("mcp-github", 60, 0, 30)
            + requests("mcp-hubspot", 22, 0, 30, route="/readyz")
            + requests("mcp-hubspot", 20, 2, 30),
            "alert_rule_test": error_ratio_pages_only("mcp-hubspot"),
        },
        {
            "name": "a healthy service raises nothing",
            "interval": "1m",
            "input_series": latency("mcp-context", 0.1, 600, 600, 120) + requests("mcp-context", 600, 0, 120),
            "alert_rule_test": [
                {"eval_time": "90m", "alertname": name, "exp_alerts": []}
                for name in ("LatencyBudgetBurn1H", "LatencyBudgetBurn6H", "HighErrorRatio")
            ],
        },
    ]
    result = run_promtool(tmp_path, tests)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout
