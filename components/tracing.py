"""Traces: an OpenTelemetry Collector that every service exports its spans to (OTLP), in the
observability namespace, forwarding in batches to Jaeger, the trace store Grafana reads
(docs/design.md, "Tracing": why Jaeger). Both are plain Deployments of pinned upstream images,
configured here; the services' side is sophia_chassis.tracing."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs, DeploymentStrategyArgs, RollingUpdateDeploymentArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.spec import Resources, memory_bytes

# Jaeger v2.13.0 is Go module github.com/jaegertracing/jaeger v1.76.0 (their paired tags), built on
# the Collector of about the same month, whose core distribution is pinned beside it.
COLLECTOR_IMAGE = "otel/opentelemetry-collector:0.140.0"
JAEGER_IMAGE = "jaegertracing/jaeger:2.13.0"
OTLP_GRPC, OTLP_HTTP = 4317, 4318
HEALTH = 13133
JAEGER_UI = 16686  # the query API and UI, which Grafana's Jaeger data source reads
COLLECTOR, JAEGER = "otel-collector", "jaeger"
UID = 10001  # both images run as a non-root user; this one owns the Badger directory too
BADGER = "/var/lib/jaeger"
# Where each answers its probes: the Collector's health_check extension on its root, Jaeger's
# healthcheckv2 on its status path (its root is a 404).
COLLECTOR_HEALTH_PATH, JAEGER_HEALTH_PATH = "/", "/status"
# A stack may lower the requests (sophia:tracing.collector.requests, .jaeger.requests); not the limits.
COLLECTOR_RESOURCES = wl.resource_amounts(requests=("100m", "128Mi"), limits=("500m", "512Mi"))
JAEGER_RESOURCES = wl.resource_amounts(requests=("200m", "512Mi"), limits=("2", "2Gi"))


@dataclass(frozen=True)
class TracingArgs:
    namespace: str
    services_namespace: str
    # The services that export spans (their pods may reach the collector's OTLP ports).
    services: Sequence[str]
    collector_replicas: int = 1
    # How long Jaeger keeps a trace (Badger's TTL), and the disk it has for them.
    retention_hours: int = 168
    storage: str = "20Gi"
    storage_class: str | None = None
    collector_max_replicas: int = 10  # the seed's 2-10 at 70 % CPU, as the services
    collector_resources: Resources = COLLECTOR_RESOURCES
    jaeger_resources: Resources = JAEGER_RESOURCES


def collector_endpoint(namespace: str) -> str:
    """The OTLP/HTTP base URL the services export to (their OTEL_EXPORTER_OTLP_ENDPOINT)."""
    return f"http://{wl.cluster_host(COLLECTOR, namespace)}:{OTLP_HTTP}"


def jaeger_query_url(namespace: str) -> str:
    return f"http://{wl.cluster_host(JAEGER, namespace)}:{JAEGER_UI}"


def collector_config(namespace: str, memory_limit_mib: int) -> dict:
    """Receive OTLP, bound the memory it may hold, batch, forward to Jaeger over OTLP/gRPC."""
    return {
        "receivers": {
            "otlp": {
                "protocols": {
                    "grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC}"},
                    "http": {"endpoint": f"0.0.0.0:{OTLP_HTTP}"},
                }
            }
        },
        "processors": {
            # First in the pipeline: past the limit it refuses spans (the SDKs retry) instead of dying.
            "memory_limiter": {
                "check_interval": "1s",
                "limit_mib": memory_limit_mib * 4 // 5,
                "spike_limit_mib": memory_limit_mib // 5,
            },
            "batch": {"send_batch_size": 1024, "timeout": "2s"},
        },
        "exporters": {
            "otlp": {
                "endpoint": f"{wl.cluster_host(JAEGER, namespace)}:{OTLP_GRPC}",
                "tls": {"insecure": True},  # inside the namespace, behind its NetworkPolicy
                "sending_queue": {"enabled": True, "queue_size": 5000},
            }
        },
        "extensions": {"health_check": {"endpoint": f"0.0.0.0:{HEALTH}"}},
        "service": {
            "extensions": ["health_check"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["memory_limiter", "batch"], "exporters": ["otlp"]}
            },
        },
    }


def jaeger_config(retention_hours: int) -> dict:
    """Jaeger v2 (itself a Collector distribution): OTLP in, Badger on its volume, the query API/UI."""
    return {
        "service": {
            "extensions": ["jaeger_storage", "jaeger_query", "healthcheckv2"],
            "pipelines": {
                "traces": {"receivers": ["otlp"], "processors": ["batch"], "exporters": ["jaeger_storage_exporter"]}
            },
        },
        "extensions": {
            "healthcheckv2": {
                "use_v2": True,
                "http": {"endpoint": f"0.0.0.0:{HEALTH}", "status": {"enabled": True, "path": JAEGER_HEALTH_PATH}},
            },
            "jaeger_query": {"storage": {"traces": "traces"}, "http": {"endpoint": f"0.0.0.0:{JAEGER_UI}"}},
            "jaeger_storage": {
                "backends": {
                    "traces": {
                        "badger": {
                            "directories": {"keys": f"{BADGER}/keys", "values": f"{BADGER}/values"},
                            "ephemeral": False,
                            "ttl": {"spans": f"{retention_hours}h"},
                        }
                    }
                }
            },
        },
        "receivers": {"otlp": {"protocols": {"grpc": {"endpoint": f"0.0.0.0:{OTLP_GRPC}"}}}},
        "processors": {"batch": {}},
        "exporters": {"jaeger_storage_exporter": {"trace_storage": "traces"}},
    }


def _http_probes(port_name: str, path: str) -> dict[str, k8s.core.v1.ProbeArgs]:
    def probe(period: int) -> k8s.core.v1.ProbeArgs:
        return k8s.core.v1.ProbeArgs(
            http_get=k8s.core.v1.HTTPGetActionArgs(path=path, port=port_name), period_seconds=period
        )

    return {"liveness_probe": probe(10), "readiness_probe": probe(5)}


class Tracing(pulumi.ComponentResource):
    endpoint: str  # what the services export to
    peer: wl.Peer  # the collector, for the services' egress policy
    query_url: str  # Jaeger's query API, for Grafana

    def __init__(self, name: str, args: TracingArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Tracing", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = args.namespace
        collector = wl.Workload(COLLECTOR, ns, "tracing")
        jaeger = wl.Workload(JAEGER, ns, "tracing")

        # The collector: stateless, as many replicas as the stack wants, rolled one at a time.
        memory_mib = memory_bytes(args.collector_resources.limits.memory) // 2**20
        config = yaml.safe_dump(collector_config(ns, memory_mib), sort_keys=True)
        collector_cm = k8s.core.v1.ConfigMap(
            f"{name}-collector-config",
            metadata=collector.meta(f"{COLLECTOR}-config"),
            data={"config.yaml": config},
            opts=child,
        )
        k8s.apps.v1.Deployment(
            f"{name}-collector",
            metadata=collector.meta(annotations=wl.UPSTREAM_IMAGE_SKIP),
            spec=DeploymentSpecArgs(
                selector=LabelSelectorArgs(match_labels=collector.selector),  # replicas: the HPA's
                strategy=DeploymentStrategyArgs(
                    type="RollingUpdate", rolling_update=RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)
                ),
                template=wl.pod_template(
                    collector.labels,
                    wl.pod_annotations(wl.content_checksum(config)),
                    UID,
                    containers=[
                        wl.upstream_container(
                            "collector",
                            COLLECTOR_IMAGE,
                            UID,
                            {"otlp-grpc": OTLP_GRPC, "otlp-http": OTLP_HTTP, "health": HEALTH},
                            args.collector_resources,
                            args=["--config=/etc/otelcol/config.yaml"],
                            volume_mounts=[wl.mount("config", "/etc/otelcol", read_only=True)],
                            **_http_probes("health", COLLECTOR_HEALTH_PATH),
                        )
                    ],
                    volumes=[wl.config_volume("config", collector_cm)],
                ),
            ),
            opts=child,
        )
        wl.cluster_service(
            f"{name}-collector-service",
            collector.meta(),
            collector.selector,
            {"otlp-grpc": OTLP_GRPC, "otlp-http": OTLP_HTTP},
            child,
        )
        wl.disruption_budget(f"{name}-collector-pdb", collector.meta(), collector.selector, child)
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-collector-hpa",
            metadata=collector.meta(),
            spec=k8s.autoscaling.v2.HorizontalPodAutoscalerSpecArgs(
                scale_target_ref=k8s.autoscaling.v2.CrossVersionObjectReferenceArgs(
                    api_version="apps/v1", kind="Deployment", name=COLLECTOR
                ),
                min_replicas=args.collector_replicas,
                max_replicas=args.collector_max_replicas,
                metrics=[
                    k8s.autoscaling.v2.MetricSpecArgs(
                        type="Resource",
                        resource=k8s.autoscaling.v2.ResourceMetricSourceArgs(
                            name="cpu",
                            target=k8s.autoscaling.v2.MetricTargetArgs(type="Utilization", average_utilization=70),
                        ),
                    )
                ],
            ),
            opts=child,
        )
        wl.network_policy(
            f"{name}-collector-netpol",
            collector.meta(),
            collector.selector,
            ingress=[
                *wl.callers_ingress(list(args.services), args.services_namespace, OTLP_GRPC, OTLP_HTTP),
                wl.allow_in([wl.namespace_peer(ns)], OTLP_GRPC, OTLP_HTTP),  # the namespace's own exporters
            ],
            egress=[wl.dns_egress(), wl.allow_out([wl.namespace_peer(ns, jaeger.selector)], OTLP_GRPC)],
            opts=child,
        )

        # Jaeger: one replica (Badger has one writer), replaced rather than surged, on its own disk.
        jaeger_yaml = yaml.safe_dump(jaeger_config(args.retention_hours), sort_keys=True)
        jaeger_cm = k8s.core.v1.ConfigMap(
            f"{name}-jaeger-config",
            metadata=jaeger.meta(f"{JAEGER}-config"),
            data={"config.yaml": jaeger_yaml},
            opts=child,
        )
        claim = k8s.core.v1.PersistentVolumeClaim(
            f"{name}-jaeger-data",
            metadata=jaeger.meta(f"{JAEGER}-data"),
            spec=k8s.core.v1.PersistentVolumeClaimSpecArgs(
                access_modes=["ReadWriteOnce"],
                storage_class_name=args.storage_class,
                resources=k8s.core.v1.VolumeResourceRequirementsArgs(requests={"storage": args.storage}),
            ),
            opts=child,
        )
        k8s.apps.v1.Deployment(
            f"{name}-jaeger",
            metadata=jaeger.meta(annotations=wl.UPSTREAM_IMAGE_SKIP),
            spec=DeploymentSpecArgs(
                replicas=1,
                selector=LabelSelectorArgs(match_labels=jaeger.selector),
                strategy=DeploymentStrategyArgs(type="Recreate"),
                template=wl.pod_template(
                    jaeger.labels,
                    wl.pod_annotations(wl.content_checksum(jaeger_yaml)),
                    UID,
                    UID,
                    containers=[
                        wl.upstream_container(
                            "jaeger",
                            JAEGER_IMAGE,
                            UID,
                            {"otlp-grpc": OTLP_GRPC, "query": JAEGER_UI, "health": HEALTH},
                            args.jaeger_resources,
                            UID,
                            args=["--config=/etc/jaeger/config.yaml"],
                            volume_mounts=[
                                wl.mount("config", "/etc/jaeger", read_only=True),
                                wl.mount("data", BADGER),
                            ],
                            **_http_probes("health", JAEGER_HEALTH_PATH),
                        )
                    ],
                    volumes=[
                        wl.config_volume("config", jaeger_cm),
                        k8s.core.v1.VolumeArgs(
                            name="data",
                            persistent_volume_claim=k8s.core.v1.PersistentVolumeClaimVolumeSourceArgs(
                                claim_name=claim.metadata.name
                            ),
                        ),
                    ],
                ),
            ),
            opts=child,
        )
        wl.cluster_service(
            f"{name}-jaeger-service",
            jaeger.meta(),
            jaeger.selector,
            {"otlp-grpc": OTLP_GRPC, "query": JAEGER_UI},
            child,
        )
        wl.disruption_budget(f"{name}-jaeger-pdb", jaeger.meta(), jaeger.selector, child)
        # In: spans from the collector; queries from the namespace (Grafana). Out: nothing but DNS.
        wl.network_policy(
            f"{name}-jaeger-netpol",
            jaeger.meta(),
            jaeger.selector,
            ingress=[
                wl.allow_in([wl.same_app_peer(collector.selector)], OTLP_GRPC),
                wl.allow_in([wl.namespace_peer(ns)], JAEGER_UI),
            ],
            egress=[wl.dns_egress()],
            opts=child,
        )

        self.endpoint = collector_endpoint(ns)
        self.peer = wl.Peer(ns, collector.selector, OTLP_HTTP)
        self.query_url = jaeger_query_url(ns)
        self.register_outputs({"endpoint": self.endpoint, "jaeger": self.query_url})
