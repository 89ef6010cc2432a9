"""The local stack's monitoring as rendered (components/monitoring.py): the operator runs the
toolchain's images, and the Prometheus it makes is configured by the program's own ServiceMonitors
and PrometheusRules, can discover and reach what they name, and alerts to the Alertmanager."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.monitoring import KSM_RESOURCES, MonitoringImages
from components.observability import AlertReceivers, alertmanager_config, dashboard
from infra.config import ConfigError, parse_stack_config
from infra.discovery import discover
from infra.render import offline_config
from infra.stack import monitoring_versions

from .conftest import find
from .test_alert_rules_promtool import PROMTOOL

REPO = Path(__file__).resolve().parents[2]
OBS, SERVICES = "sophia-observability", "sophia"


def of_kind(objects: list[dict[str, Any]], kind: str, namespace: str | None = None) -> list[dict[str, Any]]:
    return [
        o for o in objects if o["kind"] == kind and (namespace is None or o["metadata"].get("namespace") == namespace)
    ]


def selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    assert set(selector) == {"matchLabels"}, selector  # all the program writes
    return all(labels.get(k) == v for k, v in selector["matchLabels"].items())


@pytest.fixture(scope="module")
def local(rendered: dict[str, list[dict[str, Any]]]) -> list[dict[str, Any]]:
    return rendered["local"]


def test_the_operator_runs_the_toolchains_images(local: list[dict[str, Any]]) -> None:
    images = MonitoringImages.from_versions(monitoring_versions())
    versions = monitoring_versions()
    assert images.operator == f"sophia.local/prometheus-operator:{versions['PROMETHEUS_OPERATOR_VERSION']}"
    container = find(local, "Deployment", "prometheus-operator")["spec"]["template"]["spec"]["containers"][0]
    assert container["image"] == images.operator and container["imagePullPolicy"] == "Never"
    assert f"--prometheus-config-reloader={images.config_reloader}" in container["args"]
    assert f"--namespaces={OBS}" in container["args"]
    prometheus = find(local, "Prometheus", "sophia")["spec"]
    assert prometheus["image"] == images.prometheus and prometheus["version"] == f"v{versions['PROMETHEUS_VERSION']}"
    alertmanager = find(local, "Alertmanager", "sophia")["spec"]
    assert alertmanager["image"] == images.alertmanager
    # node.sh imports exactly these images into the node's containerd.
    node_sh = (REPO / "toolchain" / "node.sh").read_text()
    imported = re.search(r"^MONITORING_IMAGES=\((.*)\)$", node_sh, re.M).group(1).split()  # type: ignore[union-attr]
    named = {getattr(images, f).split(":")[0].removeprefix("sophia.local/") for f in images.__dataclass_fields__}
    assert set(imported) == named


def test_prometheus_is_configured_by_the_programs_service_monitors_and_rules(local: list[dict[str, Any]]) -> None:
    spec = find(local, "Prometheus", "sophia")["spec"]
    # Unset namespace selectors mean the Prometheus' own namespace: every monitor and rule lives there.
    assert "serviceMonitorNamespaceSelector" not in spec and "ruleNamespaceSelector" not in spec
    monitors = of_kind(local, "ServiceMonitor")
    assert {m["metadata"]["name"] for m in monitors} == {"sophia-services", "kube-state-metrics"}
    for monitor in monitors:
        assert monitor["metadata"]["namespace"] == OBS
        assert selects(spec["serviceMonitorSelector"], monitor["metadata"]["labels"]), monitor["metadata"]
    rules = of_kind(local, "PrometheusRule")
    assert [r["metadata"]["name"] for r in rules] == ["sophia-slo"]
    assert rules[0]["metadata"]["namespace"] == OBS
    assert selects(spec["ruleSelector"], rules[0]["metadata"]["labels"])
    # ...and nothing else: the selector is not empty (an empty one would pick every monitor there is).
    assert spec["serviceMonitorSelector"]["matchLabels"]
    assert not {"podMonitorSelector", "probeSelector", "scrapeConfigSelector"} & set(spec)


def test_prometheus_may_discover_what_the_monitors_name(local: list[dict[str, Any]]) -> None:
    bound = {
        b["metadata"]["namespace"]: b["roleRef"]["name"]
        for b in of_kind(local, "RoleBinding")
        if {"kind": "ServiceAccount", "name": "prometheus", "namespace": OBS} in b["subjects"]
    }
    watched = {OBS} | {
        ns
        for m in of_kind(local, "ServiceMonitor")
        for ns in m["spec"].get("namespaceSelector", {}).get("matchNames", [])
    }
    assert set(bound) == watched == {OBS, SERVICES}
    role = find(local, "ClusterRole", next(iter(bound.values())))
    granted = {(g, r) for rule in role["rules"] for g in rule["apiGroups"] for r in rule["resources"]}
    assert {("", "services"), ("", "pods"), ("discovery.k8s.io", "endpointslices")} <= granted
    assert all(set(rule["verbs"]) == {"get", "list", "watch"} for rule in role["rules"])
    # No ClusterRoleBinding: Prometheus reads those two namespaces only.
    assert not [
        b for b in of_kind(local, "ClusterRoleBinding") if any(s["name"] == "prometheus" for s in b["subjects"])
    ]


def test_every_service_lets_prometheus_in_on_the_port_it_scrapes(local: list[dict[str, Any]]) -> None:
    monitor = find(local, "ServiceMonitor", "sophia-services")["spec"]
    port_name = monitor["endpoints"][0]["port"]
    for spec in discover():
        service = find(local, "Service", spec.name)
        assert service["metadata"]["labels"]["sophia.ai/scrape"] == "true"
        target = next(p["targetPort"] for p in service["spec"]["ports"] if p["name"] == port_name)
        container = find(local, "Deployment", spec.name)["spec"]["template"]["spec"]["containers"][0]
        port = next(p["containerPort"] for p in container["ports"] if p["name"] == target)
        policy = find(local, "NetworkPolicy", spec.name)["spec"]
        admitted = [
            rule
            for rule in policy["ingress"]
            if any(p["port"] == port for p in rule["ports"])
            and any(
                (peer.get("namespaceSelector") or {}).get("matchLabels") == {"kubernetes.io/metadata.name": OBS}
                and "podSelector" not in peer
                for peer in rule["from"]
            )
        ]
        assert admitted, f"{spec.name}: nothing lets the observability namespace in on port {port}"


def test_alerts_go_to_the_alertmanager_with_the_programs_routes(local: list[dict[str, Any]]) -> None:
    prometheus = find(local, "Prometheus", "sophia")["spec"]
    alertmanager = find(local, "Alertmanager", "sophia")
    [target] = prometheus["alerting"]["alertmanagers"]
    # The operator names the Alertmanager's Service `alertmanager-operated`, its port `web`.
    assert target == {"namespace": OBS, "name": "alertmanager-operated", "port": "web", "apiVersion": "v2"}
    assert alertmanager["metadata"]["namespace"] == OBS
    # Its configuration is the operator's default Secret, `alertmanager-<name>`.
    secret = find(local, "Secret", f"alertmanager-{alertmanager['metadata']['name']}")
    assert list(secret["stringData"]) == ["alertmanager.yaml"]
    # Locally nobody is paged: the receivers are routed and sent nowhere.
    assert {r["name"] for r in alertmanager_config(AlertReceivers())["receivers"]} == {"null", "pages", "tickets"}


def test_kube_state_metrics_exports_the_hpas_the_dashboards_read(local: list[dict[str, Any]]) -> None:
    container = find(local, "Deployment", "kube-state-metrics")["spec"]["template"]["spec"]["containers"][0]
    assert f"--namespaces={SERVICES}" in container["args"]
    assert f"--resources={','.join(KSM_RESOURCES)}" in container["args"]
    exprs = " ".join(t["expr"] for p in dashboard("mcp-context")["panels"] for t in p["targets"])
    assert "kube_horizontalpodautoscaler_" in exprs and "horizontalpodautoscalers" in KSM_RESOURCES
    # Its series keep the HPA's namespace, not kube-state-metrics' own.
    endpoint = find(local, "ServiceMonitor", "kube-state-metrics")["spec"]["endpoints"][0]
    assert endpoint["honorLabels"] is True
    binding = find(local, "RoleBinding", "sophia-kube-state-metrics")
    assert binding["metadata"]["namespace"] == SERVICES


def test_it_fits_the_one_node_beside_the_services(local: list[dict[str, Any]]) -> None:
    """Small requests: the operator, kube-state-metrics, Prometheus and Alertmanager (and their two config
    reloaders, the operator's default 10m each) ask for a tenth of a core in all."""
    millis = 0
    for name in ("prometheus-operator", "kube-state-metrics"):
        for c in find(local, "Deployment", name)["spec"]["template"]["spec"]["containers"]:
            millis += int(c["resources"]["requests"]["cpu"].removesuffix("m"))
    for kind in ("Prometheus", "Alertmanager"):
        millis += int(find(local, kind, "sophia")["spec"]["resources"]["requests"]["cpu"].removesuffix("m")) + 10
    assert millis <= 120, millis


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_dev_and_prod_keep_the_chart(rendered: dict[str, list[dict[str, Any]]], stack: str) -> None:
    objects = rendered[stack]
    assert not of_kind(objects, "Prometheus") and not of_kind(objects, "Alertmanager")
    assert not [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["name"] == "prometheus-operator"]


@pytest.mark.parametrize(
    "stack,changes",
    [("dev", {"local_monitoring": True}), ("local", {"local_monitoring": True, "install_charts": True})],
)
def test_local_monitoring_only_where_no_chart_runs(stack: str, changes: dict[str, Any]) -> None:
    config = {k.removeprefix("sophia:"): v for k, v in offline_config(stack).items() if k != "sophia:secrets"}
    with pytest.raises(ConfigError) as caught:
        parse_stack_config(stack, config | changes)
    assert "sophia:local_monitoring" in str(caught.value)


def test_an_error_ratio_panel_shows_zero_not_no_data_without_errors(tmp_path: Path) -> None:
    """Prometheus itself (promtool) on the dashboards' queries: a service that never answered 5xx has
    no 5xx series; its error ratio panels still show 0, and the real ratio once errors come."""
    board = dashboard("mcp-github")
    panels = {p["title"]: p["targets"][0]["expr"] for p in board["panels"]}
    series = [
        {
            "series": 'http_requests_total{service="mcp-github",status="200",sophia_ai_track="stable"}',
            "values": "0+60x20",
        },
        {
            "series": 'http_requests_total{service="mcp-github",status="500",sophia_ai_track="canary"}',
            "values": "0+6x20",
        },
        {
            "series": 'http_requests_total{service="mcp-github",status="200",sophia_ai_track="canary"}',
            "values": "0+54x20",
        },
    ]
    tests = [
        {
            "interval": "1m",
            "input_series": series[:1],
            "promql_expr_test": [
                {
                    "expr": panels["Error ratio (5xx)"],
                    "eval_time": "10m",
                    "exp_samples": [{"labels": "{}", "value": 0}],
                },
                {
                    "expr": panels["Error ratio (5xx), by track"],
                    "eval_time": "10m",
                    "exp_samples": [{"labels": '{sophia_ai_track="stable"}', "value": 0}],
                },
            ],
        },
        {
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {
                    "expr": panels["Error ratio (5xx)"],
                    "eval_time": "10m",
                    "exp_samples": [{"labels": "{}", "value": 0.05}],
                },
                {
                    "expr": panels["Error ratio (5xx), by track"],
                    "eval_time": "10m",
                    "exp_samples": [
                        {"labels": '{sophia_ai_track="stable"}', "value": 0},
                        {"labels": '{sophia_ai_track="canary"}', "value": 0.1},
                    ],
                },
            ],
        },
    ]
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_latency_panel_shows_what_callers_get(tmp_path: Path) -> None:
    """Probes that take 0.3 s (a readiness check on a loaded node) beside callers answered in 0.02 s:
    the panel's p99 is the callers' (within the 0.025 s bucket), not the probes'."""
    panels = {p["title"]: p["targets"] for p in dashboard("mcp-github")["panels"]}
    p50, p99 = (t["expr"] for t in panels["Latency p50 / p99 (s)"])

    def histogram(route: str, per_minute: int, le_fast: str) -> list[dict[str, str]]:
        edges = ("0.025", "0.5", "+Inf")
        return [
            {
                "series": f'http_request_duration_seconds_bucket{{service="mcp-github",route="{route}",le="{le}"}}',
                "values": f"0+{per_minute if edges.index(le) >= edges.index(le_fast) else 0}x20",
            }
            for le in edges
        ]

    series = histogram("/github/repos", 6, "0.025") + histogram("/readyz", 12, "0.5") + histogram("/metrics", 4, "0.5")
    tests = [
        {
            "interval": "1m",
            "input_series": series,
            "promql_expr_test": [
                {"expr": q, "eval_time": "10m", "exp_samples": [{"labels": "{}", "value": v}]}
                for q, v in ((p50, 0.0125), (p99, 0.02475))
            ],
        }
    ]
    spec = tmp_path / "tests.yaml"
    spec.write_text(yaml.safe_dump({"rule_files": [], "evaluation_interval": "1m", "tests": tests}))
    result = subprocess.run([str(PROMTOOL), "test", "rules", str(spec)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stdout + result.stderr
