"""Metrics, logs, alerts and dashboards: kube-prometheus-stack (Prometheus, Alertmanager,
Grafana) and Loki with Grafana Alloy shipping pod logs, from pinned upstream charts;
what is ours — the scrape of every platform service, the alert rules (service down,
error ratio, multi-window burn rate on the seed's 100 ms latency target) and a
dashboard per service — is code here. A service's own panels and alerts (on metrics
only it exports) are declared in its manifest (`observability:` in service.yaml), so
this module names no service.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.helm.v3 import ReleaseArgs, RepositoryOptsArgs
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.monitoring import LocalMonitoring, LocalMonitoringArgs, MonitoringImages
from components.spec import ServiceObservability
from components.workload import (
    SCRAPE_LABEL,
    TRACK_LABEL,
    TRACK_SERIES_LABEL,
    VERSION_LABEL,
    VERSION_SERIES_LABEL,
    ObjectStorage,
    labels_for,
)

PROMETHEUS_STACK = ("kube-prometheus-stack", "79.5.0", "https://prometheus-community.github.io/helm-charts")
LOKI = ("loki", "6.46.0", "https://grafana.github.io/helm-charts")
ALLOY = ("alloy", "1.4.0", "https://grafana.github.io/helm-charts")

# SLO: 99 % of each service's requests within its manifest's latency_slo_seconds (the seed's 100 ms by default).
LATENCY_SLO = 0.99
ERROR_RATIO_THRESHOLD = 0.05
# Google SRE workbook, multiwindow multi-burn-rate alerts: (long window, short window, burn rate, severity).
BURN_RATE_WINDOWS = (
    ("1h", "5m", 14.4, "page"),
    ("6h", "30m", 6.0, "page"),
    ("1d", "2h", 3.0, "ticket"),
    ("3d", "6h", 1.0, "ticket"),
)
# A burn alert needs at least this many callers' requests in its long window: a handful of slow
# requests (a fresh stack's first, cold ones) is a large ratio of a small sample and says nothing
# about the service (the low-traffic case of the SRE workbook's burn-rate alerts).
MIN_REQUESTS_FOR_BURN = 100
# Metric names exported by every service's chassis (prometheus-client).
REQUESTS = "http_requests_total"
DURATION = "http_request_duration_seconds"
# The chassis' routes for the kubelet's probes and Prometheus' scrapes (sophia_chassis.metrics.
# OPERATIONAL_ROUTES; a test ties them). An SLO is about what callers get: the ratios of the alerts and
# of the dashboards' SLO panels leave them out, by the histogram's `route` label (the route template, a
# bounded set), so a probe that is slow on a loaded node burns no budget and dilutes no error ratio.
OPERATIONAL_ROUTES = ("/healthz", "/readyz", "/metrics")
CALLERS = f'route!~"{"|".join(OPERATIONAL_ROUTES)}"'
# The rule group holding the alerts the services declare (first declared by the AI services).
SERVICE_ALERTS_GROUP = "sophia-ai"
# The JSON field and value the chassis puts on audit events (sophia_chassis.audit.STREAM).
AUDIT_LABEL, AUDIT_STREAM = "stream", "audit"
# The labels of our ServiceMonitors and PrometheusRules; the local stack's Prometheus selects by them.
MONITORING_LABELS = labels_for("observability", "monitoring")


@dataclass(frozen=True)
class AlertReceivers:
    """Where Alertmanager sends `page` and `ticket` alerts (None: nowhere), with the secret each needs."""

    page: str | None = None  # pagerduty | slack | webhook
    ticket: str | None = None  # slack | webhook
    secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)  # by kind
    slack_channel: str = "#sophia-alerts"


def _receiver(name: str, kind: str | None, receivers: AlertReceivers) -> dict[str, Any]:
    if kind is None:
        return {"name": name}  # Alertmanager's "null" receiver: routed, sent nowhere
    secret = receivers.secrets[kind]
    if kind == "pagerduty":
        return {"name": name, "pagerduty_configs": [{"routing_key": secret, "send_resolved": True}]}
    if kind == "slack":
        return {
            "name": name,
            "slack_configs": [{"api_url": secret, "channel": receivers.slack_channel, "send_resolved": True}],
        }
    return {"name": name, "webhook_configs": [{"url": secret, "send_resolved": True}]}


def alertmanager_config(receivers: AlertReceivers) -> dict[str, Any]:
    """Route by severity; a page silences the same service's tickets, a service that is down its other alerts."""
    return {
        "route": {
            "receiver": "tickets",
            "group_by": ["alertname", "service"],
            "group_wait": "30s",
            "group_interval": "5m",
            "repeat_interval": "4h",
            "routes": [
                {"matchers": ['alertname="Watchdog"'], "receiver": "null"},
                {"matchers": ['severity="page"'], "receiver": "pages", "repeat_interval": "1h"},
            ],
        },
        "receivers": [
            {"name": "null"},
            _receiver("pages", receivers.page, receivers),
            _receiver("tickets", receivers.ticket, receivers),
        ],
        "inhibit_rules": [
            {"source_matchers": ['severity="page"'], "target_matchers": ['severity="ticket"'], "equal": ["service"]},
            {
                "source_matchers": ['alertname="ServiceDown"'],
                "target_matchers": ['alertname!="ServiceDown"'],
                "equal": ["service"],
            },
        ],
    }


@dataclass(frozen=True)
class LogStore:
    """How long Loki keeps logs, how many replicas serve them, and where (a volume, or S3)."""

    retention_days: int = 7
    # Audit events (sophia_chassis.audit, label stream="audit") outlive ordinary logs: a year and more.
    audit_retention_days: int = 400
    replicas: int = 1
    volume_size: str = "50Gi"
    s3: ObjectStorage | None = None  # Loki's chunks and index; unset: on the replica's volume


# The Secret holding Loki's S3 keys; Loki reads them from its environment (-config.expand-env), so
# they never sit in the chart's ConfigMap.
LOKI_S3_SECRET = "loki-s3"
LOKI_S3_ENV = ("LOKI_ACCESS_KEY_ID", "LOKI_SECRET_ACCESS_KEY")


def loki_values(logs: LogStore, storage_class: str | None = None) -> dict[str, Any]:
    """The loki chart's values: single binary, retention by the compactor (audit stream longer),
    chunks on the replica's volume or, replicated, in S3."""
    store = "s3" if logs.s3 else "filesystem"
    storage: dict[str, Any] = {"type": "filesystem"}
    env: dict[str, Any] = {}
    if logs.s3:
        access, secret = LOKI_S3_ENV
        s3: dict[str, Any] = {
            "region": logs.s3.region,
            "accessKeyId": f"${{{access}}}",
            "secretAccessKey": f"${{{secret}}}",
            "insecure": False,
        }
        if logs.s3.endpoint:  # MinIO, R2, ...: bucket in the path
            s3 |= {"endpoint": logs.s3.endpoint, "s3ForcePathStyle": True}
        bucket = logs.s3.bucket
        storage = {"type": "s3", "bucketNames": {"chunks": bucket, "ruler": bucket, "admin": bucket}, "s3": s3}
        env = {"extraArgs": ["-config.expand-env=true"], "extraEnvFrom": [{"secretRef": {"name": LOKI_S3_SECRET}}]}
    volume = {"storageClass": storage_class} if storage_class else {}
    return {
        "deploymentMode": "SingleBinary",
        "loki": {
            "auth_enabled": False,
            # Every replica holds each stream: a write needs a quorum, so one replica may be down.
            "commonConfig": {"replication_factor": logs.replicas},
            # The compactor deletes what is past retention; the audit stream has its own, longer one.
            "compactor": {"retention_enabled": True, "delete_request_store": store},
            "limits_config": {
                "retention_period": f"{logs.retention_days * 24}h",
                "retention_stream": [
                    {
                        "selector": f'{{{AUDIT_LABEL}="{AUDIT_STREAM}"}}',
                        "priority": 1,
                        "period": f"{logs.audit_retention_days * 24}h",
                    }
                ],
            },
            "storage": storage,
            "schemaConfig": {
                "configs": [
                    {
                        "from": "2026-01-01",
                        "store": "tsdb",
                        "object_store": store,
                        "schema": "v13",
                        "index": {"prefix": "index_", "period": "24h"},
                    }
                ]
            },
        },
        # The volume holds the write-ahead log (and, on filesystem, the chunks themselves).
        "singleBinary": {"replicas": logs.replicas, "persistence": {**volume, "size": logs.volume_size}, **env},
        "read": {"replicas": 0},
        "write": {"replicas": 0},
        "backend": {"replicas": 0},
    }


@dataclass(frozen=True)
class ObservabilityArgs:
    namespace: str
    services_namespace: str
    # Every deployed service by name, with the panels and alerts its manifest adds.
    services: Mapping[str, ServiceObservability]
    replicas: int = 1
    retention: str = "15d"  # metrics
    prometheus_storage: str = "50Gi"
    logs: LogStore = LogStore()
    storage_class: str | None = None
    # False where charts can't be fetched (the offline local stack).
    install_charts: bool = True
    # ServiceMonitor and PrometheusRule need the operator's CRDs: from its chart, or given (`crds`).
    monitoring_resources: bool = True
    crds: Sequence[pulumi.Resource] = ()
    alert_receivers: AlertReceivers = AlertReceivers()
    # Jaeger's query API (components/tracing.py), when the stack traces: Grafana's trace data source.
    jaeger_url: str | None = None
    # Without charts (local): the operator, Prometheus, Alertmanager and kube-state-metrics from these
    # images (components/monitoring.py) read the ServiceMonitors and rules instead; None: nothing does.
    local_monitoring: MonitoringImages | None = None


def slow_ratio(window: str, threshold: float, services: Sequence[str]) -> str:
    """Share of callers' requests slower than `threshold` over `window`, per service, for `services`."""
    sel = f'service=~"{"|".join(sorted(services))}",{CALLERS}'
    return (
        f'1 - (sum by (service) (rate({DURATION}_bucket{{{sel},le="{threshold}"}}[{window}]))'
        f" / sum by (service) (rate({DURATION}_count{{{sel}}}[{window}])))"
    )


def error_ratio(sel: str, window: str, by: str = "", zero_without_errors: bool = False) -> str:
    """Share of callers' requests (of those `sel` matches) answered 5xx over `window`, summed by `by`.
    `zero_without_errors` (a panel): 0 where none failed, not "no data" (a service that never answered
    5xx has no 5xx series); no traffic at all stays undefined."""
    scope = ",".join(filter(None, (sel, CALLERS)))
    total_by = f"sum by ({by}) " if by else "sum"
    failed = f'{total_by}(rate({REQUESTS}{{{scope},status=~"5.."}}[{window}]))'
    total = f"{total_by}(rate({REQUESTS}{{{scope}}}[{window}]))"
    if zero_without_errors:
        failed = f"({failed} or 0 * {total})"
    return f"{failed} / {total}"


def alert_rules(services: Mapping[str, ServiceObservability]) -> list[dict[str, Any]]:
    budget = 1 - LATENCY_SLO
    by_threshold: dict[float, list[str]] = {}
    for name, declared in services.items():
        by_threshold.setdefault(declared.latency_slo_seconds, []).append(name)
    # One series per service under each record name, from one rule per threshold.
    record = [
        {"record": f"sophia:latency_slow_ratio:rate{w}", "expr": slow_ratio(w, threshold, names)}
        for w in sorted({w for pair in BURN_RATE_WINDOWS for w in pair[:2]})
        for threshold, names in sorted(by_threshold.items())
    ]
    burn = [
        {
            "alert": f"LatencyBudgetBurn{long_w.upper()}",
            "expr": (
                f"sophia:latency_slow_ratio:rate{long_w} > ({rate} * {budget:.2f})"
                f" and sophia:latency_slow_ratio:rate{short_w} > ({rate} * {budget:.2f})"
                f" and on (service) sum by (service) (increase({DURATION}_count{{{CALLERS}}}[{long_w}]))"
                f" >= {MIN_REQUESTS_FOR_BURN}"
            ),
            "labels": {"severity": severity, "slo": "latency"},
            "annotations": {
                "summary": f"{{{{ $labels.service }}}} burns its latency budget {rate}x (over {long_w} and {short_w})"
            },
        }
        for long_w, short_w, rate, severity in BURN_RATE_WINDOWS
    ]
    canary, stable = (error_ratio(f'{TRACK_SERIES_LABEL}="{t}"', "10m", by="service") for t in ("canary", "stable"))
    return [
        {
            "name": "sophia-availability",
            "rules": [
                {
                    "alert": "ServiceDown",
                    "expr": 'up{namespace="{ns}"} == 0',
                    "for": "2m",
                    "labels": {"severity": "page"},
                    "annotations": {"summary": "{{ $labels.service }} has a target that is not being scraped"},
                },
                {
                    # Per track (the ServiceMonitor copies the pods' sophia.ai/track label): a canary
                    # failing where its stable track does not is the signal to roll it back.
                    "alert": "CanaryErrorRatioHigh",
                    "expr": f"{canary} > 2 * ({stable} + 0.005)",
                    "for": "10m",
                    "labels": {"severity": "ticket"},
                    "annotations": {
                        "summary": "{{ $labels.service }}'s canary answers 5xx twice as often as its stable track: "
                        "roll it back (sophia:services.<name>.canary)"
                    },
                },
                {
                    "alert": "HighErrorRatio",
                    "expr": f"{error_ratio('', '5m', by='service')} > {ERROR_RATIO_THRESHOLD}",
                    "for": "5m",
                    "labels": {"severity": "page"},
                    "annotations": {"summary": "{{ $labels.service }} answers more than 5 % of requests with 5xx"},
                },
            ],
        },
        {"name": "sophia-latency-slo", "rules": record + burn},
    ] + _service_alerts(services)


def _service_alerts(services: Mapping[str, ServiceObservability]) -> list[dict[str, Any]]:
    """The alerts the services declare in their manifests, in one group (none: no group)."""
    rules = [
        {
            "alert": alert.name,
            "expr": alert.expr,
            "for": alert.for_,
            "labels": {"severity": alert.severity},
            "annotations": {"summary": alert.summary},
        }
        for _, declared in sorted(services.items())
        for alert in declared.alerts
    ]
    return [{"name": SERVICE_ALERTS_GROUP, "rules": rules}] if rules else []


def dashboard(service: str, declared: ServiceObservability = ServiceObservability()) -> dict[str, Any]:
    """The common panels every service gets, then the ones its manifest declares."""
    sel = f'service="{service}"'
    own = {panel.title: [q.replace("{sel}", "{" + sel + "}") for q in panel.queries] for panel in declared.panels}
    targets = {
        "Requests per second": [f"sum(rate({REQUESTS}{{{sel}}}[5m]))"],
        # The SLO's view (error ratios, latency): callers' requests only, as the alerts count them.
        "Error ratio (5xx)": [error_ratio(sel, "5m", zero_without_errors=True)],
        # Stable and canary side by side (one line while only a stable track runs).
        "Requests per second, by track and version": [
            f"sum by ({TRACK_SERIES_LABEL}, {VERSION_SERIES_LABEL}) (rate({REQUESTS}{{{sel}}}[5m]))"
        ],
        "Error ratio (5xx), by track": [error_ratio(sel, "5m", by=TRACK_SERIES_LABEL, zero_without_errors=True)],
        "Latency p50 / p99 (s)": [
            f"histogram_quantile({q}, sum by (le) (rate({DURATION}_bucket{{{sel},{CALLERS}}}[5m])))"
            for q in (0.5, 0.99)
        ],
        "Replicas vs HPA": [
            f'kube_horizontalpodautoscaler_status_current_replicas{{horizontalpodautoscaler="{service}"}}',
            f'kube_horizontalpodautoscaler_status_desired_replicas{{horizontalpodautoscaler="{service}"}}',
            f'kube_horizontalpodautoscaler_spec_max_replicas{{horizontalpodautoscaler="{service}"}}',
        ],
    } | own
    panels = [
        {
            "id": i + 1,
            "type": "timeseries",
            "title": title,
            "datasource": {"type": "prometheus"},
            "gridPos": {"h": 8, "w": 12, "x": 12 * (i % 2), "y": 8 * (i // 2)},
            "targets": [{"expr": expr, "refId": chr(65 + j)} for j, expr in enumerate(exprs)],
        }
        for i, (title, exprs) in enumerate(targets.items())
    ]
    return {
        "title": f"Sophia / {service}",
        "uid": f"sophia-{service}"[:40],
        "schemaVersion": 39,
        "time": {"from": "now-6h", "to": "now"},
        "panels": panels,
    }


def _release(
    name: str, chart: tuple[str, str, str], namespace: str, values: dict[str, Any], opts: pulumi.ResourceOptions
) -> k8s.helm.v3.Release:
    chart_name, version, repo = chart
    # helm.v3.Release runs the charts' hooks (helm.v4.Chart would not).
    return k8s.helm.v3.Release(
        name,
        ReleaseArgs(
            name=chart_name,
            chart=chart_name,
            version=version,
            namespace=namespace,
            repository_opts=RepositoryOptsArgs(repo=repo),
            values=values,
            atomic=True,
            cleanup_on_fail=True,
        ),
        opts=opts,
    )


class Observability(pulumi.ComponentResource):
    not_deployed: list[str]

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Observability", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = args.namespace
        labels = labels_for("observability", "monitoring")

        # Dashboards are plain ConfigMaps that Grafana's sidecar loads; they exist in every stack.
        for service, declared in args.services.items():
            k8s.core.v1.ConfigMap(
                f"{name}-dashboard-{service}",
                metadata=ObjectMetaArgs(
                    name=f"dashboard-{service}", namespace=ns, labels={**labels, "grafana_dashboard": "1"}
                ),
                data={f"{service}.json": json.dumps(dashboard(service, declared), sort_keys=True)},
                opts=child,
            )

        self.not_deployed = []
        if not args.install_charts:
            crd_ready = pulumi.ResourceOptions(parent=self, depends_on=list(args.crds))
            local = args.local_monitoring is not None and args.monitoring_resources
            if local:
                self.not_deployed.append(
                    f"observability: {LOKI[0]} {LOKI[1]}, {ALLOY[0]} {ALLOY[1]} and Grafana (Helm repositories "
                    f"unreachable offline): {PROMETHEUS_STACK[0]}'s operator, Prometheus, Alertmanager and "
                    "kube-state-metrics run from the toolchain's builds instead; the dashboards are created, "
                    "their queries answered by Prometheus, but no Grafana shows them"
                )
            else:
                self.not_deployed.append(
                    f"observability: {PROMETHEUS_STACK[0]} {PROMETHEUS_STACK[1]}, {LOKI[0]} {LOKI[1]} and {ALLOY[0]} "
                    f"{ALLOY[1]} charts (Helm repositories unreachable offline); the ServiceMonitor, rules and "
                    "dashboards are created but nothing reads them"
                )
            if args.monitoring_resources:
                self._monitoring_resources(name, args, crd_ready)
            if local:
                assert args.local_monitoring is not None
                self.local = LocalMonitoring(
                    f"{name}-local",
                    LocalMonitoringArgs(
                        namespace=ns,
                        services_namespace=args.services_namespace,
                        images=args.local_monitoring,
                        select_labels=MONITORING_LABELS,
                        alertmanager_config=alertmanager_config(args.alert_receivers),
                    ),
                    crd_ready,
                )
            self.register_outputs({"not_deployed": self.not_deployed})
            return

        storage = {"storageClassName": args.storage_class} if args.storage_class else {}
        stack = _release(
            f"{name}-prometheus-stack",
            PROMETHEUS_STACK,
            ns,
            {
                "prometheus": {
                    "prometheusSpec": {
                        "replicas": args.replicas,
                        "retention": args.retention,
                        # Pick up ServiceMonitors and rules that are not labelled for this Helm release.
                        "serviceMonitorSelectorNilUsesHelmValues": False,
                        "ruleSelectorNilUsesHelmValues": False,
                        "storageSpec": {
                            "volumeClaimTemplate": {
                                "spec": {
                                    **storage,
                                    "accessModes": ["ReadWriteOnce"],
                                    "resources": {"requests": {"storage": args.prometheus_storage}},
                                }
                            }
                        },
                    }
                },
                "alertmanager": {
                    "alertmanagerSpec": {"replicas": 3 if args.replicas > 1 else 1},
                    "config": alertmanager_config(args.alert_receivers),
                },
                "grafana": {
                    "replicas": args.replicas,
                    "sidecar": {"dashboards": {"enabled": True, "label": "grafana_dashboard", "searchNamespace": ns}},
                    "additionalDataSources": grafana_datasources(ns, args.jaeger_url),
                },
            },
            child,
        )
        loki_opts = child
        if args.logs.s3:
            access, secret = LOKI_S3_ENV
            keys = k8s.core.v1.Secret(
                f"{name}-loki-s3",
                metadata=ObjectMetaArgs(name=LOKI_S3_SECRET, namespace=ns, labels=labels),
                type="Opaque",
                string_data={
                    access: pulumi.Output.secret(args.logs.s3.access_key_id),
                    secret: pulumi.Output.secret(args.logs.s3.secret_access_key),
                },
                opts=child,
            )
            loki_opts = pulumi.ResourceOptions(parent=self, depends_on=[keys])
        loki = _release(f"{name}-loki", LOKI, ns, loki_values(args.logs, args.storage_class), loki_opts)
        _release(
            f"{name}-alloy",
            ALLOY,
            ns,
            {"alloy": {"configMap": {"content": alloy_config(ns)}}},
            pulumi.ResourceOptions(parent=self, depends_on=[loki]),
        )

        if args.monitoring_resources:
            self._monitoring_resources(name, args, pulumi.ResourceOptions(parent=self, depends_on=[stack]))
        self.register_outputs(
            {
                "grafana": f"http://kube-prometheus-stack-grafana.{ns}.svc.cluster.local",
                "charts": [c[0] + "@" + c[1] for c in (PROMETHEUS_STACK, LOKI, ALLOY)],
            }
        )

    @staticmethod
    def _monitoring_resources(name: str, args: ObservabilityArgs, crd_ready: pulumi.ResourceOptions) -> None:
        ns = args.namespace
        labels = MONITORING_LABELS
        k8s.apiextensions.CustomResource(
            f"{name}-service-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=ObjectMetaArgs(name="sophia-services", namespace=ns, labels=labels),
            spec={
                "namespaceSelector": {"matchNames": [args.services_namespace]},
                "selector": {"matchLabels": {SCRAPE_LABEL: "true"}},
                "endpoints": [{"port": "http", "path": "/metrics", "interval": "15s"}],
                # Every series says which track and version answered (components.service's pod labels).
                "podTargetLabels": [TRACK_LABEL, VERSION_LABEL],
            },
            opts=crd_ready,
        )
        groups = json.loads(json.dumps(alert_rules(args.services)).replace("{ns}", args.services_namespace))
        k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata=ObjectMetaArgs(name="sophia-slo", namespace=ns, labels=labels),
            spec={"groups": groups},
            opts=crd_ready,
        )


def grafana_datasources(namespace: str, jaeger_url: str | None) -> list[dict[str, Any]]:
    """Loki, and with tracing Jaeger, linked both ways: a log line's `trace_id` (the chassis' JSON
    field) opens its trace, and a span opens its service's log lines that carry the trace id."""
    loki: dict[str, Any] = {
        "name": "Loki",
        "type": "loki",
        "uid": "loki",
        "url": f"http://loki-gateway.{namespace}.svc.cluster.local",
    }
    if jaeger_url is None:
        return [loki]
    # `$$`: Grafana expands `$` in provisioning files; the link's own variable is `${__value.raw}`.
    loki["jsonData"] = {
        "derivedFields": [
            {
                "name": "trace_id",
                "matcherRegex": r'"trace_id":\s*"(\w+)"',
                "datasourceUid": "jaeger",
                "url": "$${__value.raw}",
            }
        ]
    }
    jaeger = {
        "name": "Jaeger",
        "type": "jaeger",
        "uid": "jaeger",
        "url": jaeger_url,
        "jsonData": {
            "tracesToLogsV2": {
                "datasourceUid": "loki",
                # A span's service.name is the `service` label Alloy gives a pod's log stream.
                "tags": [{"key": "service.name", "value": "service"}],
                "filterByTraceID": True,
                "spanStartTimeShift": "-5m",
                "spanEndTimeShift": "5m",
            }
        },
    }
    return [loki, jaeger]


def alloy_config(namespace: str) -> str:
    """Alloy: discover pods on this node, tail their logs, label audit events, push to Loki."""
    return (
        "\n".join(
            [
                # Only this node's pods: Alloy runs on every node, so each line is shipped once (the chart
                # sets HOSTNAME to the node's name).
                'discovery.kubernetes "pods" {',
                '  role = "pod"',
                "  selectors {",
                '    role  = "pod"',
                '    field = "spec.nodeName=" + coalesce(sys.env("HOSTNAME"), constants.hostname)',
                "  }",
                "}",
                'discovery.relabel "pods" {',
                "  targets = discovery.kubernetes.pods.targets",
                '  rule { source_labels = ["__meta_kubernetes_namespace"] target_label = "namespace" }',
                '  rule { source_labels = ["__meta_kubernetes_pod_label_app_kubernetes_io_name"] target_label = "service" }',
                '  rule { source_labels = ["__meta_kubernetes_pod_name"] target_label = "pod" }',
                "}",
                'loki.source.kubernetes "pods" {',
                "  targets    = discovery.relabel.pods.output",
                "  forward_to = [loki.process.audit.receiver]",
                "}",
                # The chassis' JSON lines carry `stream: audit` on audit events: a label, so Loki can keep them longer.
                'loki.process "audit" {',
                "  forward_to = [loki.write.default.receiver]",
                f'  stage.json {{ expressions = {{ {AUDIT_LABEL} = "" }} }}',
                f'  stage.labels {{ values = {{ {AUDIT_LABEL} = "" }} }}',
                "}",
                'loki.write "default" {',
                f'  endpoint {{ url = "http://loki-gateway.{namespace}.svc.cluster.local/loki/api/v1/push" }}',
                "}",
            ]
        )
        + "\n"
    )
