"""Tracing as each stack renders it: the OpenTelemetry Collector and Jaeger in the observability
namespace, every service pointed at the collector with its stack's sample ratio and allowed to
reach it, and Grafana's Jaeger and Loki data sources linked through the trace id."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
import structlog
import yaml
from opentelemetry.sdk.trace import TracerProvider

from components.tracing import COLLECTOR_IMAGE, JAEGER_IMAGE, OTLP_GRPC, OTLP_HTTP
from infra.config import ConfigError, parse_stack_config
from infra.discovery import discover
from infra.render import helm_releases, offline_config, run_program
from sophia_chassis.logs import configure_logging

from .conftest import find

COLLECTOR_URL = "http://otel-collector.sophia-observability.svc.cluster.local:4318"


def service_env(objects: list[dict[str, Any]], name: str) -> dict[str, str]:
    container = find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]
    return {e["name"]: e.get("value") for e in container.get("env", [])}


def config_of(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return yaml.safe_load(find(objects, "ConfigMap", name)["data"]["config.yaml"])


def test_the_collector_batches_spans_to_jaeger(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    collector = find(objects, "Deployment", "otel-collector")
    assert collector["metadata"]["namespace"] == "sophia-observability"
    hpa = find(objects, "HorizontalPodAutoscaler", "otel-collector")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10) and "replicas" not in collector["spec"]
    (container,) = collector["spec"]["template"]["spec"]["containers"]
    assert container["image"] == COLLECTOR_IMAGE and re.search(r":\d+\.\d+\.\d+$", COLLECTOR_IMAGE)
    assert container["securityContext"]["runAsNonRoot"] and container["securityContext"]["readOnlyRootFilesystem"]
    config = config_of(objects, "otel-collector-config")
    traces = config["service"]["pipelines"]["traces"]
    # The memory limiter first (it refuses before anything is buffered), then batches.
    assert traces == {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["otlp"]}
    assert config["receivers"]["otlp"]["protocols"]["http"]["endpoint"] == f"0.0.0.0:{OTLP_HTTP}"
    limiter = config["processors"]["memory_limiter"]
    assert limiter["limit_mib"] + limiter["spike_limit_mib"] <= 512  # within the container's limit
    assert config["exporters"]["otlp"]["endpoint"] == f"jaeger.sophia-observability.svc.cluster.local:{OTLP_GRPC}"
    ports = {p["name"]: p["port"] for p in find(objects, "Service", "otel-collector")["spec"]["ports"]}
    assert ports == {"otlp-grpc": OTLP_GRPC, "otlp-http": OTLP_HTTP}


def test_jaeger_keeps_traces_on_its_own_volume_for_the_retention(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    jaeger = find(objects, "Deployment", "jaeger")
    # Badger has one writer: one replica, replaced (never two pods on the volume at once).
    assert jaeger["spec"]["replicas"] == 1 and jaeger["spec"]["strategy"]["type"] == "Recreate"
    pod = jaeger["spec"]["template"]["spec"]
    assert pod["containers"][0]["image"] == JAEGER_IMAGE
    claim = next(v for v in pod["volumes"] if v["name"] == "data")["persistentVolumeClaim"]["claimName"]
    assert find(objects, "PersistentVolumeClaim", claim)["spec"]["resources"]["requests"]["storage"] == "20Gi"
    config = config_of(objects, "jaeger-config")
    badger = config["extensions"]["jaeger_storage"]["backends"]["traces"]["badger"]
    assert badger["ttl"]["spans"] == "168h" and badger["ephemeral"] is False
    mounted = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert {badger["directories"]["keys"].rsplit("/", 1)[0]} <= mounted
    assert config["exporters"]["jaeger_storage_exporter"]["trace_storage"] == "traces"


@pytest.mark.parametrize("stack,ratio", [("dev", "1.0"), ("prod", "0.1")])
def test_every_service_exports_to_the_collector_at_its_stacks_ratio(
    rendered: dict[str, list[dict[str, Any]]], stack: str, ratio: str
) -> None:
    for spec in discover():
        env = service_env(rendered[stack], spec.name)
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == COLLECTOR_URL, spec.name
        assert env["TRACE_SAMPLE_RATIO"] == ratio, spec.name


def test_services_may_reach_the_collector_and_only_its_otlp_ports(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    for spec in discover():
        egress = find(objects, "NetworkPolicy", spec.name)["spec"]["egress"]
        to_collector = [
            rule
            for rule in egress
            for peer in rule.get("to", [])
            if peer.get("podSelector", {}).get("matchLabels", {}).get("app.kubernetes.io/name") == "otel-collector"
        ]
        assert [r["ports"] for r in to_collector] == [[{"port": OTLP_HTTP, "protocol": "TCP"}]], spec.name
    ingress = find(objects, "NetworkPolicy", "otel-collector")["spec"]["ingress"]
    from_services = next(
        r
        for r in ingress
        if r["from"][0].get("namespaceSelector", {}).get("matchLabels", {}) == {"kubernetes.io/metadata.name": "sophia"}
    )
    assert set(from_services["from"][0]["podSelector"]["matchExpressions"][0]["values"]) == {s.name for s in discover()}
    jaeger_in = find(objects, "NetworkPolicy", "jaeger")["spec"]["ingress"]
    assert {p["port"] for rule in jaeger_in for p in rule["ports"]} == {OTLP_GRPC, 16686}


def test_grafana_links_a_log_line_to_its_trace_and_a_span_to_its_log_lines(capsys) -> None:
    resources = run_program("prod", offline_config("prod"))
    grafana = next(r for r in helm_releases(resources) if r["chart"] == "kube-prometheus-stack")["values"]["grafana"]
    sources = {s["uid"]: s for s in grafana["additionalDataSources"]}
    jaeger, loki = sources["jaeger"], sources["loki"]
    assert jaeger["type"] == "jaeger" and jaeger["url"] == "http://jaeger.sophia-observability.svc.cluster.local:16686"
    to_logs = jaeger["jsonData"]["tracesToLogsV2"]
    assert to_logs["datasourceUid"] == "loki" and to_logs["filterByTraceID"] is True
    # The span's service.name is the log stream's `service` label (Alloy's relabelling).
    assert to_logs["tags"] == [{"key": "service.name", "value": "service"}]
    alloy = next(r for r in helm_releases(resources) if r["chart"] == "alloy")["values"]["alloy"]
    assert 'target_label = "service"' in alloy["configMap"]["content"]
    (derived,) = loki["jsonData"]["derivedFields"]
    assert derived["datasourceUid"] == "jaeger" and derived["url"] == "$${__value.raw}"  # `$$`: provisioning's escape
    # The regex finds the trace id in a line the chassis really writes, inside a span.
    configure_logging("info")
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("work") as span:
        structlog.get_logger().info("working", request_id="r1")
    line = capsys.readouterr().out.strip().splitlines()[-1]
    assert json.loads(line)["event"] == "working"
    assert re.search(derived["matcherRegex"], line).group(1) == f"{span.get_span_context().trace_id:032x}"


def test_the_local_stack_deploys_no_tracing(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["local"]
    assert not [o for o in objects if o["metadata"]["name"] in ("otel-collector", "jaeger")]
    for spec in discover():
        assert "OTEL_EXPORTER_OTLP_ENDPOINT" not in service_env(objects, spec.name)


@pytest.mark.parametrize("ratio", [1.5, -0.1])
def test_a_sample_ratio_outside_0_to_1_is_refused_naming_the_key(ratio: float) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config("dev", {"environment": "dev", "domain": "sophia.dev", "tracing": {"sample_ratio": ratio}})
    assert "sophia:tracing.sample_ratio" in str(caught.value)
