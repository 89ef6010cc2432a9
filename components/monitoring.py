"""The local stack's monitoring, where kube-prometheus-stack's chart can't be fetched: the
Prometheus operator, one Prometheus and one Alertmanager (custom resources the operator turns
into StatefulSets) and kube-state-metrics, from images the toolchain builds from the Go module
proxy (toolchain/monitoring.env, imported into the node's containerd by toolchain/node.sh).

What configures Prometheus is what configures it in dev and prod: the program's ServiceMonitors
and PrometheusRules (components/observability.py), picked by their labels, and Alertmanager's
routes (`alertmanager_config`). Sized for the one 2-core node: small requests, a day of metrics
on an emptyDir.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.rbac.v1 import PolicyRuleArgs, RoleRefArgs, SubjectArgs

from components import workload as wl

NOBODY = 65534  # the images' user (toolchain/build.sh monitoring-images), as upstream's images
PROMETHEUS_NAME = ALERTMANAGER_NAME = "sophia"
PROMETHEUS_PORT, ALERTMANAGER_PORT = 9090, 9093
# The Services the operator makes for the pods of each custom resource.
PROMETHEUS_SERVICE, ALERTMANAGER_SERVICE = "prometheus-operated", "alertmanager-operated"
OPERATOR_PORT = 8080
KSM_PORT, KSM_TELEMETRY_PORT = 8080, 8081
# Kubernetes service discovery: what Prometheus reads to find the ServiceMonitors' targets.
DISCOVERY_RULES = [
    PolicyRuleArgs(api_groups=[""], resources=["services", "endpoints", "pods"], verbs=["get", "list", "watch"]),
    PolicyRuleArgs(api_groups=["discovery.k8s.io"], resources=["endpointslices"], verbs=["get", "list", "watch"]),
]
# Upstream's ClusterRole for the operator (example/rbac/prometheus-operator, v0.85.0) with its `*`
# spelled out, granted here in the observability namespace only (a RoleBinding), where its custom
# resources and the pods made from them live.
MANAGE = ["get", "list", "watch", "create", "update", "patch", "delete"]
OPERATOR_RULES = [
    PolicyRuleArgs(
        api_groups=["monitoring.coreos.com"],
        resources=[
            "alertmanagers",
            "alertmanagers/finalizers",
            "alertmanagers/status",
            "alertmanagerconfigs",
            "prometheuses",
            "prometheuses/finalizers",
            "prometheuses/status",
            "prometheusagents",
            "prometheusagents/finalizers",
            "prometheusagents/status",
            "thanosrulers",
            "thanosrulers/finalizers",
            "thanosrulers/status",
            "scrapeconfigs",
            "servicemonitors",
            "servicemonitors/status",
            "podmonitors",
            "probes",
            "prometheusrules",
        ],
        verbs=MANAGE,
    ),
    PolicyRuleArgs(api_groups=["apps"], resources=["statefulsets", "daemonsets"], verbs=MANAGE),
    PolicyRuleArgs(api_groups=[""], resources=["configmaps", "secrets"], verbs=MANAGE),
    PolicyRuleArgs(api_groups=[""], resources=["pods"], verbs=["list", "delete"]),
    PolicyRuleArgs(
        api_groups=[""], resources=["services", "services/finalizers"], verbs=["get", "create", "update", "delete"]
    ),
    PolicyRuleArgs(api_groups=[""], resources=["endpoints"], verbs=["get", "create", "update", "delete"]),
    PolicyRuleArgs(api_groups=["networking.k8s.io"], resources=["ingresses"], verbs=["get", "list", "watch"]),
]
# ...and what it checks cluster-wide (seen running it against the local API server as its service
# account: without `events` there it emits none): namespaces (its namespace selectors), storage
# classes and events.
OPERATOR_CLUSTER_RULES = [
    PolicyRuleArgs(api_groups=[""], resources=["events"], verbs=["patch", "create"]),
    PolicyRuleArgs(api_groups=[""], resources=["namespaces"], verbs=["get", "list", "watch"]),
    PolicyRuleArgs(api_groups=["storage.k8s.io"], resources=["storageclasses"], verbs=["get"]),
]
# kube-state-metrics reads only what the dashboards ask of it (the HPAs and their Deployments).
KSM_RESOURCES = ("deployments", "horizontalpodautoscalers")
KSM_RULES = [
    PolicyRuleArgs(api_groups=["apps"], resources=["deployments"], verbs=["list", "watch"]),
    PolicyRuleArgs(api_groups=["autoscaling"], resources=["horizontalpodautoscalers"], verbs=["list", "watch"]),
]


@dataclass(frozen=True)
class MonitoringImages:
    """The toolchain's images (sophia.local/<name>:<version>, toolchain/monitoring.env)."""

    operator: str
    config_reloader: str
    prometheus: str
    alertmanager: str
    kube_state_metrics: str

    @staticmethod
    def from_versions(versions: Mapping[str, str]) -> MonitoringImages:
        op = versions["PROMETHEUS_OPERATOR_VERSION"]
        return MonitoringImages(
            operator=f"sophia.local/prometheus-operator:{op}",
            config_reloader=f"sophia.local/prometheus-config-reloader:{op}",
            prometheus=f"sophia.local/prometheus:{versions['PROMETHEUS_VERSION']}",
            alertmanager=f"sophia.local/alertmanager:{versions['ALERTMANAGER_VERSION']}",
            kube_state_metrics=f"sophia.local/kube-state-metrics:{versions['KUBE_STATE_METRICS_VERSION']}",
        )


def image_version(image: str) -> str:
    """The operator wants the version of the image it runs, `v<tag>`."""
    return "v" + image.rsplit(":", 1)[1]


@dataclass(frozen=True)
class LocalMonitoringArgs:
    namespace: str  # observability
    services_namespace: str
    images: MonitoringImages
    # The labels of the program's ServiceMonitors and PrometheusRules: what Prometheus selects.
    select_labels: Mapping[str, str]
    alertmanager_config: Mapping[str, Any]
    retention: str = "1d"
    scrape_interval: str = "15s"
    evaluation_interval: str = "30s"


def prometheus_spec(args: LocalMonitoringArgs) -> dict[str, Any]:
    """The Prometheus custom resource: the program's ServiceMonitors and rules (by label, in this
    namespace), alerts to the Alertmanager below, a day of metrics on an emptyDir."""
    selector = {"matchLabels": dict(args.select_labels)}
    return {
        "image": args.images.prometheus,
        "version": image_version(args.images.prometheus),
        "imagePullPolicy": "Never",
        "replicas": 1,
        "serviceAccountName": "prometheus",
        "serviceMonitorSelector": selector,
        "ruleSelector": selector,
        # Unset selectors: no PodMonitor, Probe or ScrapeConfig is picked; unset namespace selectors: this namespace.
        "scrapeInterval": args.scrape_interval,
        "evaluationInterval": args.evaluation_interval,
        "retention": args.retention,
        "alerting": {
            "alertmanagers": [
                {"namespace": args.namespace, "name": ALERTMANAGER_SERVICE, "port": "web", "apiVersion": "v2"}
            ]
        },
        "resources": {"requests": {"cpu": "50m", "memory": "256Mi"}, "limits": {"cpu": "1", "memory": "1Gi"}},
        "securityContext": _pod_security(),
        "containers": [{"name": "prometheus", "securityContext": _container_security()}],
    }


def alertmanager_spec(args: LocalMonitoringArgs) -> dict[str, Any]:
    """One Alertmanager; its routes come from the Secret `alertmanager-<name>` (the operator's default)."""
    return {
        "image": args.images.alertmanager,
        "version": image_version(args.images.alertmanager),
        "imagePullPolicy": "Never",
        "replicas": 1,
        "retention": "24h",
        "resources": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
        "securityContext": _pod_security(),
        "containers": [{"name": "alertmanager", "securityContext": _container_security()}],
    }


def operator_args(args: LocalMonitoringArgs) -> list[str]:
    return [
        f"--prometheus-config-reloader={args.images.config_reloader}",
        # Only the observability namespace: its custom resources, and the StatefulSets made from them.
        f"--namespaces={args.namespace}",
        "--log-format=json",
    ]


def kube_state_metrics_args(args: LocalMonitoringArgs) -> list[str]:
    return [
        f"--port={KSM_PORT}",
        f"--telemetry-port={KSM_TELEMETRY_PORT}",
        f"--namespaces={args.services_namespace}",
        f"--resources={','.join(KSM_RESOURCES)}",
    ]


def _pod_security() -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": NOBODY,
        "runAsGroup": NOBODY,
        "fsGroup": NOBODY,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


def _container_security() -> dict[str, Any]:
    return {"allowPrivilegeEscalation": False, "readOnlyRootFilesystem": True, "capabilities": {"drop": ["ALL"]}}


class LocalMonitoring(pulumi.ComponentResource):
    """The operator, Prometheus, Alertmanager and kube-state-metrics (see the module's docstring)."""

    def __init__(self, name: str, args: LocalMonitoringArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:LocalMonitoring", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns = args.namespace

        operator = wl.Workload("prometheus-operator", ns, "monitoring")
        operator_sa = self._service_account(f"{name}-operator", operator, child)
        self._bind(f"{name}-operator", operator, operator_sa, OPERATOR_RULES, [ns], child)
        cluster_role = k8s.rbac.v1.ClusterRole(
            f"{name}-operator-cluster",
            metadata=ObjectMetaArgs(name="sophia-prometheus-operator-cluster", labels=operator.labels),
            rules=OPERATOR_CLUSTER_RULES,
            opts=child,
        )
        k8s.rbac.v1.ClusterRoleBinding(
            f"{name}-operator-cluster",
            metadata=ObjectMetaArgs(name="sophia-prometheus-operator-cluster", labels=operator.labels),
            role_ref=RoleRefArgs(
                api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=cluster_role.metadata.name
            ),
            subjects=[SubjectArgs(kind="ServiceAccount", name=operator_sa.metadata.name, namespace=ns)],
            opts=child,
        )
        deployment = self._deployment(
            f"{name}-operator",
            operator,
            core.ContainerArgs(
                name="prometheus-operator",
                image=args.images.operator,
                args=operator_args(args),
                env=[core.EnvVarArgs(name="GOGC", value="30")],
                ports=[core.ContainerPortArgs(name="http", container_port=OPERATOR_PORT)],
                liveness_probe=core.ProbeArgs(tcp_socket=core.TCPSocketActionArgs(port="http"), period_seconds=20),
                readiness_probe=core.ProbeArgs(
                    http_get=core.HTTPGetActionArgs(path="/healthz", port="http"), period_seconds=10
                ),
                **_small("20m", "64Mi", "200m", "200Mi"),
            ),
            operator_sa,
            child,
        )
        # Prometheus scrapes the operator's own metrics; nothing else calls it.
        self._companions(f"{name}-operator", operator, [OPERATOR_PORT], child)

        # Prometheus: discovers the ServiceMonitors' targets in the services namespace and here.
        prom = wl.Workload("prometheus", ns, "monitoring")
        prom_sa = self._service_account(f"{name}-prometheus", prom, child)
        self._bind(f"{name}-prometheus", prom, prom_sa, DISCOVERY_RULES, [ns, args.services_namespace], child)
        after_operator = pulumi.ResourceOptions(parent=self, depends_on=[deployment])
        am = wl.Workload("alertmanager", ns, "monitoring")
        routes = k8s.core.v1.Secret(
            f"{name}-alertmanager-config",
            metadata=ObjectMetaArgs(name=f"alertmanager-{ALERTMANAGER_NAME}", namespace=ns, labels=am.labels),
            type="Opaque",
            string_data={"alertmanager.yaml": yaml.safe_dump(dict(args.alertmanager_config), sort_keys=False)},
            opts=child,
        )
        self.alertmanager = k8s.apiextensions.CustomResource(
            f"{name}-alertmanager",
            api_version="monitoring.coreos.com/v1",
            kind="Alertmanager",
            metadata=ObjectMetaArgs(name=ALERTMANAGER_NAME, namespace=ns, labels=am.labels),
            spec=alertmanager_spec(args),
            opts=pulumi.ResourceOptions(parent=self, depends_on=[deployment, routes]),
        )
        self.prometheus = k8s.apiextensions.CustomResource(
            f"{name}-prometheus",
            api_version="monitoring.coreos.com/v1",
            kind="Prometheus",
            metadata=ObjectMetaArgs(name=PROMETHEUS_NAME, namespace=ns, labels=prom.labels),
            spec=prometheus_spec(args),
            opts=after_operator,
        )

        # kube-state-metrics: the HPA series the dashboards' "Replicas vs HPA" panel reads.
        ksm = wl.Workload("kube-state-metrics", ns, "monitoring")
        ksm_sa = self._service_account(f"{name}-ksm", ksm, child)
        self._bind(f"{name}-ksm", ksm, ksm_sa, KSM_RULES, [args.services_namespace], child)
        self._deployment(
            f"{name}-ksm",
            ksm,
            core.ContainerArgs(
                name="kube-state-metrics",
                image=args.images.kube_state_metrics,
                args=kube_state_metrics_args(args),
                ports=[
                    core.ContainerPortArgs(name="http-metrics", container_port=KSM_PORT),
                    core.ContainerPortArgs(name="telemetry", container_port=KSM_TELEMETRY_PORT),
                ],
                liveness_probe=core.ProbeArgs(
                    http_get=core.HTTPGetActionArgs(path="/livez", port="http-metrics"), period_seconds=20
                ),
                readiness_probe=core.ProbeArgs(
                    http_get=core.HTTPGetActionArgs(path="/readyz", port="telemetry"), period_seconds=10
                ),
                **_small("10m", "32Mi", "100m", "128Mi"),
            ),
            ksm_sa,
            child,
        )
        wl.cluster_service(
            f"{name}-ksm-service",
            ksm.meta(),
            ksm.selector,
            {"http-metrics": KSM_PORT, "telemetry": KSM_TELEMETRY_PORT},
            child,
        )
        self._companions(f"{name}-ksm", ksm, [KSM_PORT, KSM_TELEMETRY_PORT], child)
        # Its series keep their own namespace label (that of the HPA, not of kube-state-metrics).
        k8s.apiextensions.CustomResource(
            f"{name}-ksm-service-monitor",
            api_version="monitoring.coreos.com/v1",
            kind="ServiceMonitor",
            metadata=ObjectMetaArgs(name="kube-state-metrics", namespace=ns, labels=dict(args.select_labels)),
            spec={
                "selector": {"matchLabels": ksm.selector},
                "endpoints": [{"port": "http-metrics", "interval": args.scrape_interval, "honorLabels": True}],
            },
            opts=child,
        )

        self.prometheus_url = f"http://{PROMETHEUS_SERVICE}.{ns}.svc:{PROMETHEUS_PORT}"
        self.alertmanager_url = f"http://{ALERTMANAGER_SERVICE}.{ns}.svc:{ALERTMANAGER_PORT}"
        self.register_outputs({"prometheus": self.prometheus_url, "alertmanager": self.alertmanager_url})

    @staticmethod
    def _service_account(name: str, w: wl.Workload, opts: pulumi.ResourceOptions) -> k8s.core.v1.ServiceAccount:
        # Each of them talks to the API server (watches), so each mounts its token.
        return k8s.core.v1.ServiceAccount(
            f"{name}-sa", metadata=w.meta(), automount_service_account_token=True, opts=opts
        )

    @staticmethod
    def _bind(
        name: str,
        w: wl.Workload,
        sa: k8s.core.v1.ServiceAccount,
        rules: list[PolicyRuleArgs],
        namespaces: list[str],
        opts: pulumi.ResourceOptions,
    ) -> None:
        """`rules` for `sa`, in each of `namespaces` only (a ClusterRole bound by RoleBindings)."""
        role = k8s.rbac.v1.ClusterRole(
            f"{name}-role", metadata=ObjectMetaArgs(name=f"sophia-{w.app}", labels=w.labels), rules=rules, opts=opts
        )
        for target in sorted(set(namespaces)):
            k8s.rbac.v1.RoleBinding(
                f"{name}-binding-{target}",
                metadata=ObjectMetaArgs(name=f"sophia-{w.app}", namespace=target, labels=w.labels),
                role_ref=RoleRefArgs(
                    api_group="rbac.authorization.k8s.io", kind="ClusterRole", name=role.metadata.name
                ),
                subjects=[SubjectArgs(kind="ServiceAccount", name=sa.metadata.name, namespace=w.namespace)],
                opts=opts,
            )

    @staticmethod
    def _deployment(
        name: str,
        w: wl.Workload,
        container: core.ContainerArgs,
        sa: k8s.core.v1.ServiceAccount,
        opts: pulumi.ResourceOptions,
    ) -> k8s.apps.v1.Deployment:
        container.image_pull_policy = "Never"  # imported into the node's containerd, no registry to pull from
        container.security_context = wl.container_security(NOBODY)
        return k8s.apps.v1.Deployment(
            f"{name}-deployment",
            # Its token is what it works with: both are clients of the API server.
            metadata=w.meta(
                annotations={"checkov.io/skip1": "CKV_K8S_38=a controller/exporter of the API server's objects"}
            ),
            spec=DeploymentSpecArgs(
                replicas=1,
                selector=LabelSelectorArgs(match_labels=w.selector),
                template=core.PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(labels=w.labels),
                    spec=core.PodSpecArgs(
                        service_account_name=sa.metadata.name,
                        automount_service_account_token=True,  # both talk to the API server
                        security_context=wl.pod_security(NOBODY),
                        containers=[container],
                    ),
                ),
            ),
            opts=opts,
        )

    @staticmethod
    def _companions(name: str, w: wl.Workload, ports: list[int], opts: pulumi.ResourceOptions) -> None:
        """A disruption budget, and ingress from this namespace (Prometheus) only; egress to the API
        server is left open, as for every workload of the observability namespace."""
        wl.disruption_budget(f"{name}-pdb", w.meta(), w.selector, opts)
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=w.meta(),
            spec=k8s.networking.v1.NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=w.selector),
                policy_types=["Ingress"],
                ingress=[wl.allow_in([wl.namespace_peer(w.namespace)], *ports)],
            ),
            opts=opts,
        )


def _small(cpu: str, memory: str, cpu_limit: str, memory_limit: str) -> dict[str, Any]:
    return {"resources": wl.resource_requirements(wl.resource_amounts((cpu, memory), (cpu_limit, memory_limit)))}
