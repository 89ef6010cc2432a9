"""Preview, up, inspect through the Kubernetes API, no-op up, destroy — in this order."""

from __future__ import annotations

import re
import time

import local_stack
import pytest
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Pod, Service
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.node_v1 import RuntimeClass
from lightkube.resources.policy_v1 import PodDisruptionBudget

from infra.discovery import discover

SERVICES = [s for s in discover()]
GenericGateway = create_namespaced_resource("gateway.networking.k8s.io", "v1", "Gateway", "gateways")
GenericHTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
GenericServiceMonitor = create_namespaced_resource("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors")
GenericPrometheusRule = create_namespaced_resource("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules")
OUR_NAMESPACES = {"sophia", "sophia-data", "sophia-observability", "sophia-ingress"}


@pytest.fixture(scope="module")
def kube():
    return local_stack.client()


def test_preview_then_up(timings) -> None:
    local_stack.ensure_stack()
    step, proc = local_stack.timed("preview", "preview", "--diff", capture=True)
    timings.append((step.label, step.seconds))
    assert "error" not in proc.stderr.lower(), proc.stderr
    step, _ = local_stack.timed("up", "up", "--yes", "--skip-preview")
    timings.append((step.label, step.seconds))


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_every_service_is_available_with_its_objects(kube, service) -> None:
    deployment = kube.get(Deployment, service.name, namespace="sophia")
    available = {c.type: c.status for c in deployment.status.conditions or []}
    assert available.get("Available") == "True", deployment.status
    assert (deployment.status.readyReplicas or 0) >= 1
    hpa = kube.get(HorizontalPodAutoscaler, service.name, namespace="sophia")
    assert hpa.spec.scaleTargetRef.name == service.name
    kube.get(PodDisruptionBudget, service.name, namespace="sophia")
    kube.get(NetworkPolicy, service.name, namespace="sophia")
    kube.get(Service, service.name, namespace="sophia")


def test_gpu_pods_run_only_on_gpu_nodes(kube) -> None:
    gpu_nodes = {n.metadata.name for n in kube.list(Node) if (n.metadata.labels or {}).get("sophia.ai/gpu") == "true"}
    assert gpu_nodes, "the local cluster has no GPU node"
    gpu_services = {s.name for s in SERVICES if s.gpu is not None}
    seen = 0
    for pod in kube.list(Pod, namespace="sophia"):
        wants_gpu = any(
            "nvidia.com/gpu" in ((c.resources.limits or {}) if c.resources else {}) for c in pod.spec.containers
        )
        name = pod.metadata.labels["app.kubernetes.io/name"]
        assert wants_gpu == (name in gpu_services), pod.metadata.name
        if pod.spec.nodeName:
            assert (pod.spec.nodeName in gpu_nodes) == wants_gpu, (pod.metadata.name, pod.spec.nodeName)
        seen += wants_gpu
    assert seen >= 1


def test_platform_components_exist(kube) -> None:
    names = {n.metadata.name for n in kube.list(Namespace)}
    assert names >= OUR_NAMESPACES
    for name in ("redis", "qdrant"):
        sts = kube.get(StatefulSet, name, namespace="sophia-data")
        assert (sts.status.readyReplicas or 0) == sts.spec.replicas
    kube.get(Deployment, "pgbouncer", namespace="sophia-data")
    kube.get(DaemonSet, "nvidia-device-plugin", namespace="kube-system")
    kube.get(RuntimeClass, "nvidia")
    for service in SERVICES:
        kube.get(ConfigMap, f"dashboard-{service.name}", namespace="sophia-observability")
    # Custom resources were accepted (and schema-checked) by the API server through the toolchain's CRDs.
    gateway = kube.get(GenericGateway, "sophia", namespace="sophia-ingress")
    assert gateway.spec["gatewayClassName"] == "nginx"
    routes = kube.list(GenericHTTPRoute, namespace="sophia-ingress")
    assert len(list(routes)) == sum(len(s.routes) for s in SERVICES)
    kube.get(GenericServiceMonitor, "sophia-services", namespace="sophia-observability")
    kube.get(GenericPrometheusRule, "sophia-slo", namespace="sophia-observability")
    # The GPU pool's node carries the pool's label from the program's NodePatch too.
    node = kube.get(Node, "kwok-gpu-local-gpu-0")
    assert node.metadata.labels["sophia.ai/instance-type"] == "simulated"


def test_second_up_changes_nothing(timings) -> None:
    step, proc = local_stack.timed("no-op up", "up", "--yes", "--skip-preview", "--expect-no-changes", capture=True)
    timings.append((step.label, step.seconds))
    assert not re.search(r"\b\d+ (to )?(create|update|replace|delete)", proc.stdout), proc.stdout


def test_destroy_removes_the_namespaces(kube, timings) -> None:
    step, _ = local_stack.timed("destroy", "destroy", "--yes", "--skip-preview")
    timings.append((step.label, step.seconds))
    # Pulumi waits for namespace deletion; allow the namespace controller a moment more.
    deadline = time.monotonic() + 60
    while (
        remaining := {n.metadata.name for n in kube.list(Namespace)} & OUR_NAMESPACES
    ) and time.monotonic() < deadline:
        time.sleep(2)
    assert remaining == set()
