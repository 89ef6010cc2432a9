"""Ingress (NGINX Gateway Fabric) and observability, as each stack renders them."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from components.observability import BURN_RATE_WINDOWS, OPERATIONAL_ROUTES, alert_rules, dashboard
from components.spec import ServiceObservability
from infra.config import ConfigError
from infra.discovery import discover
from infra.render import (
    RenderMocks,
    helm_releases,
    kubernetes_objects,
    offline_config,
    remote_manifests,
    run_program,
)
from infra.stack import LOCAL_CRDS, local_crds_dir

from .conftest import PROD_ESC, find, render_objects


def declared() -> dict[str, ServiceObservability]:
    """The panels and alerts each service's manifest declares."""
    return {s.name: s.observability for s in discover()}


def kinds(objects: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind]


def test_a_route_with_limits_for_every_declared_path(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    declared = {(s.name, r.path, r.rate_limit_rps, r.max_body_size_mb) for s in discover() for r in s.routes}
    routes = {
        o["metadata"]["name"]: o for o in kinds(objects, "HTTPRoute") if o["metadata"]["name"] != "https-redirect"
    }
    assert len(routes) == len(declared)
    for service, path, rps, body in declared:
        name = f"{service}-{path.strip('/')}"
        rule = routes[name]["spec"]["rules"][0]
        assert rule["matches"] == [{"path": {"type": "PathPrefix", "value": path}}]
        assert rule["backendRefs"] == [{"name": service, "namespace": "sophia", "port": 80}]
        assert routes[name]["spec"]["parentRefs"] == [{"name": "sophia", "sectionName": "https"}]
        assert find(objects, "ClientSettingsPolicy", name)["spec"]["body"] == {"maxSize": f"{body}m"}
        limit = find(objects, "RateLimitPolicy", name)["spec"]["rateLimit"]
        assert limit["local"]["rules"][0]["rate"] == f"{rps}r/s" and limit["rejectCode"] == 429


def test_prod_terminates_tls_with_a_certificate_and_redirects_http(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    gateway = find(objects, "Gateway", "sophia")["spec"]
    https = next(listener for listener in gateway["listeners"] if listener["name"] == "https")
    assert https["tls"]["certificateRefs"] == [{"kind": "Secret", "name": "sophia-tls"}]
    cert = find(objects, "Certificate", "sophia-tls")["spec"]
    assert cert["dnsNames"] == ["sophia.example.com"] and cert["issuerRef"]["name"] == "letsencrypt-prod"
    redirect = find(objects, "HTTPRoute", "https-redirect")["spec"]["rules"][0]["filters"][0]
    assert redirect["requestRedirect"] == {"scheme": "https", "statusCode": 301}
    grant = find(objects, "ReferenceGrant", "routes-to-services")
    assert grant["metadata"]["namespace"] == "sophia"


def test_tls_from_an_esc_secret_needs_no_cert_manager() -> None:
    config = offline_config("dev")
    config["sophia:tls"] = {"enabled": True, "secret_name": "sophia-dev-tls"}
    resources = run_program("dev", config)
    assert "cert-manager" not in [r.get("chart") for r in helm_releases(resources)]
    objects = [r.inputs for r in resources if r.inputs.get("kind") == "Gateway"]
    https = [lsn for lsn in objects[0]["spec"]["listeners"] if lsn["name"] == "https"][0]
    assert https["tls"]["certificateRefs"][0]["name"] == "sophia-dev-tls"


def test_charts_are_pinned_and_local_installs_none() -> None:
    resources = run_program("prod", offline_config("prod"))
    releases = {r["chart"]: r for r in helm_releases(resources)}
    assert set(releases) == {"nginx-gateway-fabric", "cert-manager", "kube-prometheus-stack", "loki", "alloy"}
    for rel in releases.values():
        assert re.fullmatch(r"v?\d+\.\d+\.\d+", rel["version"]), rel["version"]
    assert releases["kube-prometheus-stack"]["values"]["alertmanager"]["alertmanagerSpec"]["replicas"] == 3
    assert remote_manifests(resources) == [
        "https://github.com/kubernetes-sigs/gateway-api/releases/download/v1.4.1/standard-install.yaml"
    ]
    local = run_program("local", offline_config("local"))
    assert helm_releases(local) == []
    # Locally the CRDs come from the toolchain's files (taken from Go modules), never from the internet:
    # registered by the program as the objects in those files (a CRD's status is the API server's).
    assert remote_manifests(local) == []
    crds = {o["metadata"]["name"]: o for o in kubernetes_objects(local) if o["kind"] == "CustomResourceDefinition"}
    for name in LOCAL_CRDS:
        manifest = yaml.safe_load((local_crds_dir() / f"{name}.yaml").read_text())
        manifest.pop("status", None)
        assert crds.pop(manifest["metadata"]["name"]) == manifest
    assert crds == {}


def test_a_missing_crd_manifest_is_named_before_anything_is_registered(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SOPHIA_CRDS_DIR", str(tmp_path))
    mocks = RenderMocks()
    with pytest.raises(
        ValueError, match=r"sophia:local_crds: .*gatewayclasses.yaml is missing.*toolchain/build.sh crds"
    ):
        run_program("local", offline_config("local"), mocks=mocks)
    assert mocks.resources == []


def test_every_service_is_scraped_and_has_a_dashboard(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["dev"]
    monitor = find(objects, "ServiceMonitor", "sophia-services")["spec"]
    assert monitor["selector"] == {"matchLabels": {"sophia.ai/scrape": "true"}}
    assert monitor["endpoints"][0]["port"] == "http" and monitor["endpoints"][0]["path"] == "/metrics"
    # Series carry the pod's track and version, so a canary is watched apart from its stable track.
    assert monitor["podTargetLabels"] == ["sophia.ai/track", "app.kubernetes.io/version"]
    for spec in discover():
        assert find(objects, "Service", spec.name)["metadata"]["labels"]["sophia.ai/scrape"] == "true"
        board = json.loads(find(objects, "ConfigMap", f"dashboard-{spec.name}")["data"][f"{spec.name}.json"])
        titles = {p["title"] for p in board["panels"]}
        common = {"Requests per second", "Error ratio (5xx)", "Latency p50 / p99 (s)", "Replicas vs HPA"} | {
            "Requests per second, by track and version",
            "Error ratio (5xx), by track",
        }
        assert titles == common | {panel.title for panel in spec.observability.panels}
        exprs = " ".join(t["expr"] for p in board["panels"] for t in p["targets"])
        assert "histogram_quantile(0.99" in exprs and "kube_horizontalpodautoscaler_spec_max_replicas" in exprs


def test_local_has_routes_and_monitoring_but_no_nginx_policies(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["local"]
    find(objects, "Gateway", "sophia")
    find(objects, "ServiceMonitor", "sophia-services")
    find(objects, "PrometheusRule", "sophia-slo")
    assert len(kinds(objects, "HTTPRoute")) == sum(len(s.routes) for s in discover())
    # NGINX's policy CRDs ship only with its chart, which the offline stack can't fetch.
    assert not [o for o in objects if o["apiVersion"].startswith("gateway.nginx.org/")]


def test_alert_rules_cover_down_errors_and_multiwindow_burn_rates() -> None:
    rules = {r.get("alert") or r.get("record"): r for g in alert_rules(declared()) for r in g["rules"]}
    assert rules["ServiceDown"]["expr"].endswith("== 0")
    assert "5.." in rules["HighErrorRatio"]["expr"] and "> 0.05" in rules["HighErrorRatio"]["expr"]
    for long_w, short_w, rate, severity in BURN_RATE_WINDOWS:
        burn = rules[f"LatencyBudgetBurn{long_w.upper()}"]
        assert f"rate{long_w} > ({rate} * 0.01)" in burn["expr"] and f"rate{short_w} > ({rate} * 0.01)" in burn["expr"]
        assert burn["labels"]["severity"] == severity


def test_each_service_is_held_to_its_own_latency_slo() -> None:
    from components.spec import LATENCY_BUCKETS
    from sophia_chassis.metrics import LATENCY_BUCKETS as EXPORTED

    assert LATENCY_BUCKETS == EXPORTED  # a threshold the manifests may name is a bucket the services export
    services = declared()
    assert services["mcp-context"].latency_slo_seconds == 0.1  # the seed's target
    assert services["agno-coordinator"].latency_slo_seconds > 1  # model calls take seconds
    records = [r for g in alert_rules(services) for r in g["rules"] if r.get("record")]
    for window in {w for pair in BURN_RATE_WINDOWS for w in pair[:2]}:
        # Every service is in exactly one rule per window, and that rule's threshold is its own.
        rules = [r for r in records if r["record"] == f"sophia:latency_slow_ratio:rate{window}"]
        covered = []
        for rule in rules:
            names = re.search(r'service=~"([^"]+)"', rule["expr"]).group(1).split("|")
            threshold = float(re.search(r'le="([^"]+)"', rule["expr"]).group(1))
            assert all(services[n].latency_slo_seconds == threshold for n in names)
            covered += names
        assert sorted(covered) == sorted(services)


def test_the_slo_leaves_out_exactly_the_probes_and_scrapes() -> None:
    from sophia_chassis.metrics import OPERATIONAL_ROUTES as CHASSIS

    assert OPERATIONAL_ROUTES == CHASSIS  # the route templates the chassis labels them with
    # Every probe the kubelet sends is one of them (a probe elsewhere would count as a caller).
    probed = {path for s in discover() for path in (s.probes.liveness, s.probes.readiness, s.probes.startup)}
    assert probed <= set(OPERATIONAL_ROUTES)
    services = declared()
    ratios = [r["expr"] for g in alert_rules(services) for r in g["rules"] if "http_request" in r["expr"]]
    ratios += [
        t["expr"]
        for p in dashboard("mcp-agents", services["mcp-agents"])["panels"]
        if p["title"].startswith(("Error ratio", "Latency"))
        for t in p["targets"]
    ]
    # Every selector of every ratio, numerator and denominator alike.
    for expr in ratios:
        selectors = re.findall(r"http_request\w*\{([^}]*)\}", expr)
        assert selectors and all('route!~"/healthz|/readyz|/metrics"' in sel for sel in selectors), expr


def test_a_latency_slo_off_the_histogram_is_refused() -> None:
    with pytest.raises(ValueError, match="0.2 is not a latency bucket edge"):
        ServiceObservability(latency_slo_seconds=0.2)


@pytest.mark.parametrize("service", ["mcp-context", "orchestrator", "agno-coordinator", "mcp-agents"])
def test_dashboard_selects_only_its_service(service: str) -> None:
    exprs = [t["expr"] for p in dashboard(service, declared()[service])["panels"] for t in p["targets"]]
    assert all(service in e for e in exprs)


def test_ai_alerts_and_panels_query_the_metrics_the_services_export() -> None:
    """The names must match what agno-coordinator and mcp-agents register, or nothing fires."""
    root = Path(__file__).resolve().parents[2]
    exported = set()
    for module in ("agno-coordinator/agno_coordinator/accounting.py", "mcp-agents/mcp_agents/main.py"):
        exported |= set(
            re.findall(r'(?:Counter|Histogram|GaugeMetricFamily)\(\s*"(\w+)"', (root / "services" / module).read_text())
        )
    rules = {r["alert"]: r for g in alert_rules(declared()) if g["name"] == "sophia-ai" for r in g["rules"]}
    assert set(rules) == {"NoModelProviderUsable", "ModelFallbacksHigh", "AgentTasksFailing"}
    queried = set()
    for expr in [r["expr"] for r in rules.values()] + [
        t["expr"]
        for s in ("agno-coordinator", "mcp-agents")
        for p in dashboard(s, declared()[s])["panels"]
        for t in p["targets"]
    ]:
        queried |= {re.sub(r"_(bucket|count|sum)$", "", m) for m in re.findall(r"\b(coordinator_\w+|agents_\w+)", expr)}
    assert queried and queried <= exported, queried - exported


def test_a_new_service_brings_its_own_panel_and_alert_in_its_folder(services_copy: Path) -> None:
    (services_copy / "mcp-slack").mkdir()
    # A package, as services/Dockerfile builds (the local stack builds every service's image).
    (services_copy / "mcp-slack" / "pyproject.toml").write_text(
        '[project]\nname = "sophia-mcp-slack"\nversion = "0.1.0"\n'
    )
    (services_copy / "mcp-slack" / "service.yaml").write_text(
        "observability:\n"
        "  panels:\n"
        "    - title: Messages sent per second\n"
        '      queries: ["sum(rate(slack_messages_total{sel}[5m]))"]\n'
        "  alerts:\n"
        "    - name: SlackRateLimited\n"
        "      expr: sum(rate(slack_rate_limited_total[10m])) > 0\n"
        "      for: 10m\n"
        "      severity: ticket\n"
        "      summary: Slack is rate limiting us\n"
    )
    objects = render_objects("local", services_dir=services_copy)
    board = json.loads(find(objects, "ConfigMap", "dashboard-mcp-slack")["data"]["mcp-slack.json"])
    panel = next(p for p in board["panels"] if p["title"] == "Messages sent per second")
    assert panel["targets"] == [{"expr": 'sum(rate(slack_messages_total{service="mcp-slack"}[5m]))', "refId": "A"}]
    groups = find(objects, "PrometheusRule", "sophia-slo")["spec"]["groups"]
    alerts = {r["alert"]: r for g in groups for r in g["rules"] if "alert" in r}
    assert alerts["SlackRateLimited"] == {
        "alert": "SlackRateLimited",
        "expr": "sum(rate(slack_rate_limited_total[10m])) > 0",
        "for": "10m",
        "labels": {"severity": "ticket"},
        "annotations": {"summary": "Slack is rate limiting us"},
    }
    assert {"NoModelProviderUsable", "AgentTasksFailing"} <= set(alerts)  # the others' stay


def test_a_service_declaring_nothing_gets_the_common_panels_only() -> None:
    titles = [p["title"] for p in dashboard("plain")["panels"]]
    assert titles == [
        "Requests per second",
        "Error ratio (5xx)",
        "Requests per second, by track and version",
        "Error ratio (5xx), by track",
        "Latency p50 / p99 (s)",
        "Replicas vs HPA",
    ]
    assert [g["name"] for g in alert_rules({"plain": ServiceObservability()})] == [
        "sophia-availability",
        "sophia-latency-slo",
    ]


def test_audit_events_are_their_own_loki_stream_kept_longer(capsys) -> None:
    from components.observability import AUDIT_LABEL, AUDIT_STREAM, alloy_config
    from sophia_chassis.audit import audit
    from sophia_chassis.logs import configure_logging

    # What a service writes: the field Alloy lifts into a label, with the value Loki's rule selects.
    configure_logging("info")
    audit("POST /memories", "POST /memories", "success")
    line = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert line[AUDIT_LABEL] == AUDIT_STREAM

    loki = {r["chart"]: r for r in helm_releases(run_program("prod", offline_config("prod")))}["loki"]["values"]
    limits = loki["loki"]["limits_config"]
    [rule] = limits["retention_stream"]
    assert rule["selector"] == f'{{{AUDIT_LABEL}="{AUDIT_STREAM}"}}'
    assert int(rule["period"].removesuffix("h")) > int(limits["retention_period"].removesuffix("h")) >= 24
    assert loki["loki"]["compactor"]["retention_enabled"] is True
    config = alloy_config("sophia-observability")
    assert f'stage.labels {{ values = {{ {AUDIT_LABEL} = "" }} }}' in config
    assert "forward_to = [loki.process.audit.receiver]" in config
    # One copy per line: each node's Alloy discovers only the pods on its node.
    assert 'field = "spec.nodeName=" + coalesce(sys.env("HOSTNAME"), constants.hostname)' in config


def test_the_gateway_controller_and_the_gateway_api_crds_are_pinned_together() -> None:
    from components.ingress import GATEWAY_API_VERSION, NGF_VERSION

    # NGINX Gateway Fabric's technical specifications: the Gateway API release each NGF release is
    # built against. RateLimitPolicy (which the routes use) exists from 2.4.0.
    ngf_gateway_api = {"2.2.1": "v1.3.0", "2.3.0": "v1.4.1", "2.4.0": "v1.4.1", "2.5.0": "v1.5.1"}
    assert ngf_gateway_api[NGF_VERSION] == GATEWAY_API_VERSION
    assert tuple(int(n) for n in NGF_VERSION.split(".")) >= (2, 4, 0)
    # The local stack's CRDs come from the same Gateway API release (the toolchain's Go module).
    go_mod = (Path(__file__).resolve().parents[2] / "toolchain" / "crds" / "go.mod").read_text()
    assert re.search(rf"sigs\.k8s\.io/gateway-api {re.escape(GATEWAY_API_VERSION)}\b", go_mod)
    assert (
        f"gateway-api {GATEWAY_API_VERSION},"
        in (Path(__file__).resolve().parents[2] / "toolchain/build.sh").read_text()
    )


@pytest.mark.parametrize(
    "stack,issuer,server",
    [
        ("dev", "letsencrypt-staging", "https://acme-staging-v02.api.letsencrypt.org/directory"),
        ("prod", "letsencrypt-prod", "https://acme-v02.api.letsencrypt.org/directory"),
    ],
)
def test_the_certificate_has_an_issuer_that_answers_http01_through_the_gateway(
    rendered: dict[str, list[dict[str, Any]]], stack: str, issuer: str, server: str
) -> None:
    objects = rendered[stack]
    cluster_issuer = find(objects, "ClusterIssuer", issuer)
    assert "namespace" not in cluster_issuer["metadata"]  # cluster-scoped
    acme = cluster_issuer["spec"]["acme"]
    assert acme["server"] == server and "@" in acme["email"]
    [solver] = acme["solvers"]
    [parent] = solver["http01"]["gatewayHTTPRoute"]["parentRefs"]
    gateway = find(objects, "Gateway", parent["name"])
    assert parent["namespace"] == gateway["metadata"]["namespace"]
    listener = next(lsn for lsn in gateway["spec"]["listeners"] if lsn["name"] == parent["sectionName"])
    assert (listener["protocol"], listener["port"]) == ("HTTP", 80)  # HTTP-01 is answered on port 80
    certificate = next(o for o in objects if o["kind"] == "Certificate")
    assert certificate["spec"]["issuerRef"] == {"kind": "ClusterIssuer", "name": issuer}


def test_alerts_reach_people_by_severity_in_prod() -> None:
    values = {r["chart"]: r for r in helm_releases(run_program("prod", offline_config("prod")))}
    config = values["kube-prometheus-stack"]["values"]["alertmanager"]["config"]
    receivers = {r["name"]: r for r in config["receivers"]}
    page_route = next(r for r in config["route"]["routes"] if r["matchers"] == ['severity="page"'])
    assert receivers[page_route["receiver"]]["pagerduty_configs"][0]["routing_key"]
    assert receivers[config["route"]["receiver"]]["slack_configs"][0]["api_url"]  # tickets, the default route
    # A page silences the same service's tickets; a service that is down silences its other alerts.
    inhibit = config["inhibit_rules"]
    assert {
        "source_matchers": ['severity="page"'],
        "target_matchers": ['severity="ticket"'],
        "equal": ["service"],
    } in inhibit
    assert any(r["source_matchers"] == ['alertname="ServiceDown"'] for r in inhibit)
    # Every severity the rules use is routed somewhere.
    severities = {r["labels"]["severity"] for g in alert_rules(declared()) for r in g["rules"] if "alert" in r}
    assert severities == {"page", "ticket"}


def releases_of(stack: str, **overrides: Any) -> tuple[dict[str, dict[str, Any]], list[dict[str, Any]]]:
    """The stack's Helm releases by chart, and its Kubernetes objects (`secrets` are added to the stand-ins)."""
    config = offline_config(stack)
    for key, value in overrides.items():
        config[f"sophia:{key}"] = {**config.get(f"sophia:{key}", {}), **value} if key == "secrets" else value
    resources = run_program(stack, config)
    return {r["chart"]: r for r in helm_releases(resources)}, kubernetes_objects(resources)


def test_loki_keeps_prod_logs_replicated_in_s3_with_keys_from_a_secret() -> None:
    keys = {"LOKI_ACCESS_KEY_ID": "AKIALOKI-STAND-IN", "LOKI_SECRET_ACCESS_KEY": "loki-secret-stand-in"}
    releases, objects = releases_of("prod", logs=PROD_ESC["logs"], secrets=keys)
    values = releases["loki"]["values"]
    loki, single = values["loki"], values["singleBinary"]
    assert single["replicas"] == 3 and loki["commonConfig"]["replication_factor"] == 3
    storage = loki["storage"]
    assert storage["type"] == "s3" and storage["bucketNames"]["chunks"] == "sophia-logs-prod-111122223333"
    assert storage["s3"]["endpoint"] == "https://s3.us-east-2.amazonaws.com" and storage["s3"]["region"] == "us-east-2"
    assert [c["object_store"] for c in loki["schemaConfig"]["configs"]] == ["s3"]
    assert loki["compactor"]["delete_request_store"] == "s3"
    assert loki["limits_config"]["retention_period"] == "720h"  # 30 days in prod
    # The keys reach Loki through its environment from a Secret, never through the chart's values.
    assert (storage["s3"]["accessKeyId"], storage["s3"]["secretAccessKey"]) == (
        "${LOKI_ACCESS_KEY_ID}",
        "${LOKI_SECRET_ACCESS_KEY}",
    )
    assert "-config.expand-env=true" in single["extraArgs"]
    assert single["extraEnvFrom"] == [{"secretRef": {"name": "loki-s3"}}]
    assert not any(k in json.dumps(values) for k in keys.values())
    secret = find(objects, "Secret", "loki-s3")
    assert secret["metadata"]["namespace"] == releases["loki"]["namespace"]
    assert set(secret["stringData"]) == set(keys)


def test_loki_in_dev_is_one_replica_on_its_volume_for_a_week() -> None:
    releases, objects = releases_of("dev")
    values = releases["loki"]["values"]
    assert values["singleBinary"]["replicas"] == 1 and values["loki"]["storage"] == {"type": "filesystem"}
    assert values["loki"]["commonConfig"]["replication_factor"] == 1
    assert values["loki"]["limits_config"]["retention_period"] == "168h"
    assert "extraEnvFrom" not in values["singleBinary"]
    assert not [o for o in objects if o["metadata"]["name"] == "loki-s3"]


@pytest.mark.parametrize(
    ("logs", "expected"),
    [
        ({"replicas": 3}, "sophia:logs.replicas: 3 Loki replicas cannot share a filesystem"),
        ({"storage": "s3"}, "sophia:logs.bucket: logs go to S3 but no bucket is set"),
        ({"storage": "s3", "bucket": "Logs!"}, "sophia:logs.bucket: 'Logs!' is not an S3 bucket name"),
        ({"retention_days": 500}, "sophia:logs.audit_retention_days: audit events must be kept at least as long"),
    ],
)
def test_bad_log_settings_are_refused(logs: dict[str, Any], expected: str) -> None:
    config = offline_config("dev")
    config["sophia:logs"] = logs
    with pytest.raises(ConfigError) as err:
        run_program("dev", config)
    assert expected in str(err.value)


def test_logs_in_s3_need_the_writer_keys() -> None:
    config = offline_config("prod")
    config["sophia:logs"] = PROD_ESC["logs"]
    with pytest.raises(ConfigError) as err:
        run_program("prod", config)
    assert "sophia:secrets.LOKI_ACCESS_KEY_ID: logs go to S3 but the stack has no key for Loki" in str(err.value)
