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

from components.ingress import TRACE_CONTEXT_HEADERS
from components.tracing import COLLECTOR_IMAGE, HEALTH, JAEGER_IMAGE, OTLP_GRPC, OTLP_HTTP, collector_config
from infra.config import ConfigError, parse_stack_config
from infra.discovery import discover
from infra.plan import REPO_ROOT
from infra.render import helm_releases, offline_config, run_program
from sophia_chassis.logs import configure_logging

from .conftest import find, render_objects

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
    # Probed where its health check answers (healthcheckv2's root is a 404: the pod would never be Ready).
    health = config["extensions"]["healthcheckv2"]["http"]
    for probe in ("livenessProbe", "readinessProbe"):
        get = pod["containers"][0][probe]["httpGet"]
        assert (get["path"], get["port"]) == (health["status"]["path"], "health") and health["status"]["enabled"]
    assert health["endpoint"].endswith(f":{HEALTH}")


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


def test_the_local_stack_traces_everything_on_a_small_share_of_its_node(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    objects = rendered["local"]
    for spec in discover():
        env = service_env(objects, spec.name)
        assert (env["OTEL_EXPORTER_OTLP_ENDPOINT"], env["TRACE_SAMPLE_RATIO"]) == (COLLECTOR_URL, "1.0"), spec.name

    def resources(name: str) -> dict[str, Any]:
        return find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["resources"]

    # Pulumi.local.yaml's requests, components/tracing.py's limits.
    requests = resources("otel-collector")["requests"]
    assert (requests["cpu"], requests["memory"]) == ("20m", "64Mi")
    assert resources("otel-collector")["limits"]["cpu"] == "500m"
    assert resources("jaeger")["requests"]["cpu"] == "30m" and resources("jaeger")["limits"]["memory"] == "2Gi"
    hpa = find(objects, "HorizontalPodAutoscaler", "otel-collector")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (1, 2)
    claim = find(objects, "PersistentVolumeClaim", "jaeger-data")["spec"]
    assert claim["storageClassName"] == "sophia-local" and claim["resources"]["requests"]["storage"] == "2Gi"


def test_the_images_the_program_names_are_the_ones_the_toolchain_builds() -> None:
    """The local stack runs the Collector and Jaeger built from their Go modules (toolchain/build.sh,
    pins in toolchain/tracing.env), pushed under the names components/tracing.py gives them."""
    pins = dict(
        line.split("=", 1)
        for line in (REPO_ROOT / "toolchain" / "tracing.env").read_text().splitlines()
        if line and not line.startswith("#")
    )
    assert f"otel/opentelemetry-collector:{pins['COLLECTOR_VERSION']}" == COLLECTOR_IMAGE
    assert f"jaegertracing/jaeger:{pins['JAEGER_VERSION']}" == JAEGER_IMAGE
    manifest = yaml.safe_load((REPO_ROOT / "toolchain" / "tracing" / "manifest.yaml").read_text())
    assert manifest["dist"]["version"] == pins["COLLECTOR_VERSION"]
    # The distribution has every component the program's collector configuration names.
    config = collector_config("sophia-observability", 512)
    gomods = " ".join(
        c["gomod"] for kind in ("receivers", "processors", "exporters", "extensions") for c in manifest[kind]
    )
    for kind, names in (
        ("receiver", config["receivers"]),
        ("processor", config["processors"]),
        ("exporter", config["exporters"]),
        ("extension", config["extensions"]),
    ):
        for name in names:
            component = {"health_check": "healthcheck"}.get(name, name.replace("_", ""))
            assert f"/{component}{kind} " in gomods, (kind, name)


def test_a_caller_outside_cannot_set_the_trace_context(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """Parent-based sampling follows a sampled traceparent: the gateway removes the W3C headers from
    every route's requests (Gateway API core filter, NGF and Traefik alike), canary rules included."""
    strip = {"type": "RequestHeaderModifier", "requestHeaderModifier": {"remove": list(TRACE_CONTEXT_HEADERS)}}
    assert {"traceparent", "tracestate"} <= set(TRACE_CONTEXT_HEADERS)
    for stack in ("local", "dev", "prod"):
        routes = [r for r in rendered[stack] if r["kind"] == "HTTPRoute" and r["metadata"]["name"] != "https-redirect"]
        assert routes, stack
        for route in routes:
            for rule in route["spec"]["rules"]:
                assert rule["filters"] == [strip], (stack, route["metadata"]["name"])
    canary = {"mcp-github": {"canary": {"weight": 10, "version": "0.2.0"}}}
    rules = find(render_objects("dev", {"services": canary}), "HTTPRoute", "mcp-github-github")["spec"]["rules"]
    assert len(rules) == 3 and all(rule["filters"] == [strip] for rule in rules)


def test_a_stack_may_trust_its_callers_trace_context() -> None:
    objects = render_objects("dev", {"tracing": {"trust_caller_context": True}})
    routes = [r for r in objects if r["kind"] == "HTTPRoute" and r["metadata"]["name"] != "https-redirect"]
    assert routes and not [rule for r in routes for rule in r["spec"]["rules"] if "filters" in rule]


@pytest.mark.parametrize(
    "tracing,message",
    [
        (
            {"collector": {"requests": {"cpu": "2", "memory": "64Mi"}}},
            r"sophia:tracing\.collector\.requests\.cpu: 2 is above the limit 500m",
        ),
        (
            {"jaeger": {"requests": {"cpu": "10m", "memory": "4Gi"}}},
            r"sophia:tracing\.jaeger\.requests\.memory: 4Gi is above the limit 2Gi",
        ),
        (
            {"collector": {"max_replicas": 1}},
            r"sophia:tracing\.collector\.max_replicas: 1 is below the collector's minimum of 2",
        ),
    ],
)
def test_bad_tracing_sizes_are_refused_naming_the_key(tracing: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_objects("prod", {"tracing": tracing})


@pytest.mark.parametrize("ratio", [1.5, -0.1])
def test_a_sample_ratio_outside_0_to_1_is_refused_naming_the_key(ratio: float) -> None:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config("dev", {"environment": "dev", "domain": "sophia.dev", "tracing": {"sample_ratio": ratio}})
    assert "sophia:tracing.sample_ratio" in str(caught.value)
