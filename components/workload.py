"""Pieces every workload we write shares: labels, hardened security contexts, pod
annotations, typed resources, containers, volumes, Services and network-policy rules.

The data stores (Redis, Qdrant, PgBouncer) and the platform services are built from
these, so a hardening or policy rule lives here once.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking import v1 as net
from pulumi_kubernetes.policy.v1 import PodDisruptionBudgetSpecArgs

from components.spec import ResourceAmounts, Resources

PART_OF = "sophia"
NAME_LABEL = "app.kubernetes.io/name"
SCRAPE_LABEL = "sophia.ai/scrape"
# A service runs one or two tracks, stable and a canary (components.service), each pod labelled
# with its track and version; the ServiceMonitor copies both onto every series, sanitized.
TRACK_LABEL = "sophia.ai/track"
VERSION_LABEL = "app.kubernetes.io/version"
TRACK_SERIES_LABEL, VERSION_SERIES_LABEL = "sophia_ai_track", "app_kubernetes_io_version"
CHECKSUM_ANNOTATION = "sophia.ai/config-checksum"
RUN_AS = 10001  # above the host's UID range, so a container escape lands on no real user
# Never reachable through an "internet" egress rule: RFC 1918, link-local (cloud metadata)
# and carrier-grade NAT (which some CNIs and clouds use for pods and nodes).
PRIVATE_RANGES = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16", "100.64.0.0/10")
# Where a workload's own PersistentVolumeClaim is mounted (an embedded store's data).
DATA_MOUNT = "/var/lib/sophia"
# Upstream images are pinned by exact version tag; their digests can't be resolved on
# machines without registry access, so this check is skipped on those objects only.
UPSTREAM_IMAGE_SKIP = {"checkov.io/skip1": "CKV_K8S_43=upstream image pinned by exact version tag"}


@dataclass(frozen=True)
class ObjectStorage:
    """An S3-compatible bucket and the keys that write to it (settings and keys from ESC)."""

    bucket: str
    access_key_id: pulumi.Input[str]
    secret_access_key: pulumi.Input[str]
    region: str = "us-east-1"
    endpoint: str | None = None  # unset: AWS S3 in `region`; MinIO, R2, ...: their URL

    @property
    def port(self) -> int:
        parts = urlsplit(self.endpoint or "https://s3.amazonaws.com")
        return parts.port or (80 if parts.scheme == "http" else 443)


@dataclass(frozen=True)
class Peer:
    """Pods in another namespace a workload may talk to (a data store, say)."""

    namespace: str
    pod_labels: Mapping[str, str]
    port: int


@dataclass(frozen=True)
class Connection:
    """What a data store gives one calling service: where it is (for the caller's egress
    policy), the settings that point at it and the credentials to log in. An embedded store
    (the local stack's Qdrant Edge) has no peer: it is a volume claim the caller mounts at
    DATA_MOUNT instead."""

    peer: Peer | None
    env: Mapping[str, pulumi.Input[str]]
    secrets: Mapping[str, pulumi.Input[str]]
    volume_claim: pulumi.Input[str] | None = None
    # Secrets the caller re-reads from its mounted files (sophia_chassis.rotation) and the store
    # accepts in two values at once: left out of the pod's checksum, so a rotation rolls no pod.
    live_secrets: frozenset[str] = frozenset()
    # Resources the caller's Secret waits for: a store that takes a new credential by rolling
    # (Qdrant) is rolled before its callers are handed the key after it.
    secrets_after: Sequence[pulumi.Resource] = ()


def labels_for(name: str, component: str | None = None) -> dict[str, str]:
    labels = {NAME_LABEL: name, "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "pulumi"}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def selector_for(name: str) -> dict[str, str]:
    return {NAME_LABEL: name}


def cluster_host(name: str, namespace: str) -> str:
    return f"{name}.{namespace}.svc.cluster.local"


def resource_amounts(requests: tuple[str, str], limits: tuple[str, str]) -> Resources:
    """Typed (and validated) requests and limits from (cpu, memory) pairs."""
    return Resources(
        requests=ResourceAmounts(cpu=requests[0], memory=requests[1]),
        limits=ResourceAmounts(cpu=limits[0], memory=limits[1]),
    )


# The container's writable layer and logs (data lives on volumes, /tmp on a size-limited emptyDir): a
# runaway writer is evicted instead of filling the node's disk, and the scheduler counts what is used.
EPHEMERAL_STORAGE = ("64Mi", "1Gi")


def resource_requirements(amounts: Resources, extra: Mapping[str, str] | None = None) -> core.ResourceRequirementsArgs:
    """`extra` (e.g. a GPU count) goes into both requests and limits."""
    request, limit = EPHEMERAL_STORAGE
    return core.ResourceRequirementsArgs(
        requests={
            "cpu": amounts.requests.cpu,
            "memory": amounts.requests.memory,
            "ephemeral-storage": request,
            **(extra or {}),
        },
        limits={
            "cpu": amounts.limits.cpu,
            "memory": amounts.limits.memory,
            "ephemeral-storage": limit,
            **(extra or {}),
        },
    )


def pod_security(uid: int = RUN_AS, gid: int | None = None) -> core.PodSecurityContextArgs:
    gid = uid if gid is None else gid
    return core.PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=gid,
        fs_group=gid,
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def container_security(uid: int = RUN_AS, gid: int | None = None) -> core.SecurityContextArgs:
    gid = uid if gid is None else gid
    return core.SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=gid,
        privileged=False,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=core.CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=core.SeccompProfileArgs(type="RuntimeDefault"),
    )


def upstream_container(
    name: str,
    image: str,
    uid: int,
    ports: Mapping[str, int],
    amounts: Resources,
    gid: int | None = None,
    **rest: Any,
) -> core.ContainerArgs:
    """A hardened container of an upstream image, pulled on every start (a tag can be re-pushed)."""
    return core.ContainerArgs(
        name=name,
        image=image,
        image_pull_policy="Always",
        ports=[core.ContainerPortArgs(name=port_name, container_port=port) for port_name, port in ports.items()],
        resources=resource_requirements(amounts),
        security_context=container_security(uid, gid),
        **rest,
    )


def tcp_probes(port_name: str) -> dict[str, core.ProbeArgs]:
    """Liveness and readiness for a server that has no HTTP health endpoint: the port answers."""
    return {
        "liveness_probe": core.ProbeArgs(tcp_socket=core.TCPSocketActionArgs(port=port_name), period_seconds=10),
        "readiness_probe": core.ProbeArgs(tcp_socket=core.TCPSocketActionArgs(port=port_name), period_seconds=5),
    }


def mount(name: str, path: str, **rest: Any) -> core.VolumeMountArgs:
    return core.VolumeMountArgs(name=name, mount_path=path, **rest)


def secret_volume(name: str, secret: k8s.core.v1.Secret) -> core.VolumeArgs:
    # Readable by the pod's group only (fsGroup), never world-readable.
    return core.VolumeArgs(
        name=name, secret=core.SecretVolumeSourceArgs(secret_name=secret.metadata.name, default_mode=0o440)
    )


def config_volume(name: str, config_map: k8s.core.v1.ConfigMap) -> core.VolumeArgs:
    return core.VolumeArgs(name=name, config_map=core.ConfigMapVolumeSourceArgs(name=config_map.metadata.name))


def scratch_volume(name: str, size: str) -> core.VolumeArgs:
    return core.VolumeArgs(name=name, empty_dir=core.EmptyDirVolumeSourceArgs(size_limit=size))


def volume_claim(
    name: str, labels: Mapping[str, str], size: str, storage_class: str | None
) -> core.PersistentVolumeClaimArgs:
    """A StatefulSet's per-pod volume claim template."""
    return core.PersistentVolumeClaimArgs(
        metadata=ObjectMetaArgs(name=name, labels=dict(labels)),
        spec=core.PersistentVolumeClaimSpecArgs(
            access_modes=["ReadWriteOnce"],
            storage_class_name=storage_class,
            resources=core.VolumeResourceRequirementsArgs(requests={"storage": size}),
        ),
    )


def pod_annotations(
    checksum: pulumi.Input[str], metrics_port: int | None = None, metrics_path: str = "/metrics"
) -> pulumi.Output[dict[str, str]]:
    """The config checksum (a change rolls the pods) and, if it serves metrics, where to scrape them."""
    scrape = (
        {"prometheus.io/scrape": "true", "prometheus.io/port": str(metrics_port), "prometheus.io/path": metrics_path}
        if metrics_port is not None
        else {}
    )
    return pulumi.Output.from_input(checksum).apply(lambda c: {CHECKSUM_ANNOTATION: c, **scrape})


def pod_template(
    labels: Mapping[str, str],
    annotations: pulumi.Input[Mapping[str, str]],
    uid: int,
    gid: int | None = None,
    **spec: Any,
) -> core.PodTemplateSpecArgs:
    """A pod that runs as `uid`, without a service account token (our data stores call no API server)."""
    return core.PodTemplateSpecArgs(
        metadata=ObjectMetaArgs(labels=dict(labels), annotations=annotations),
        spec=core.PodSpecArgs(automount_service_account_token=False, security_context=pod_security(uid, gid), **spec),
    )


def content_checksum(*parts: pulumi.Input[str]) -> pulumi.Output[str]:
    """A hash of a workload's rendered config, for a pod annotation that rolls pods when it changes."""
    return pulumi.Output.all(*parts).apply(lambda values: hashlib.sha256("".join(values).encode()).hexdigest())


@dataclass(frozen=True)
class Workload:
    """The names one workload's objects share: app name, namespace, labels, selector."""

    app: str
    namespace: str
    component: str | None = None

    @property
    def labels(self) -> dict[str, str]:
        return labels_for(self.app, self.component)

    @property
    def selector(self) -> dict[str, str]:
        return selector_for(self.app)

    @property
    def host(self) -> str:
        return cluster_host(self.app, self.namespace)

    def meta(self, name: str | None = None, annotations: Mapping[str, str] | None = None) -> ObjectMetaArgs:
        """Metadata for one of its objects: the app's name unless told otherwise."""
        return ObjectMetaArgs(
            name=name or self.app, namespace=self.namespace, labels=self.labels, annotations=annotations
        )


def named_ports(ports: Mapping[str, int]) -> list[core.ServicePortArgs]:
    """Service ports that target the container port of the same name."""
    return [core.ServicePortArgs(name=name, port=port, target_port=name) for name, port in ports.items()]


# The provider's await of a Service with a selector is a timer: done 10 s after the last change to
# its endpoints, Ready pods or none, so it proves nothing and holds a slot and everything after it
# (10 s per Service of a fresh `up`). Readiness is awaited where it is decided, on the workloads
# (Deployment, StatefulSet rolled out: their pods Ready, hence in the endpoints); that each Service
# reaches its pods is checked by `make up`'s report and `make e2e` (a request through the gateway
# to every service, calls between services, the data stores in use).
SERVICE_NOT_AWAITED = {"pulumi.com/skipAwait": "true"}


def not_awaited(metadata: ObjectMetaArgs) -> ObjectMetaArgs:
    """A Service's metadata with SERVICE_NOT_AWAITED."""
    return ObjectMetaArgs(
        name=metadata.name,
        namespace=metadata.namespace,
        labels=metadata.labels,
        annotations={**(metadata.annotations or {}), **SERVICE_NOT_AWAITED},
    )


def cluster_service(
    resource_name: str,
    metadata: ObjectMetaArgs,
    selector: Mapping[str, str],
    ports: Mapping[str, int],
    opts: pulumi.ResourceOptions,
    **spec: Any,
) -> k8s.core.v1.Service:
    return k8s.core.v1.Service(
        resource_name,
        metadata=not_awaited(metadata),
        spec=core.ServiceSpecArgs(selector=dict(selector), ports=named_ports(ports), **spec),
        opts=opts,
    )


def disruption_budget(
    resource_name: str, metadata: ObjectMetaArgs, selector: Mapping[str, str], opts: pulumi.ResourceOptions
) -> k8s.policy.v1.PodDisruptionBudget:
    # maxUnavailable (not minAvailable) keeps node drains possible at any replica count.
    return k8s.policy.v1.PodDisruptionBudget(
        resource_name,
        metadata=metadata,
        spec=PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=LabelSelectorArgs(match_labels=dict(selector))),
        opts=opts,
    )


# Network policy: peers and rules.


def namespace_peer(namespace: str, pod_labels: Mapping[str, str] | None = None) -> net.NetworkPolicyPeerArgs:
    return net.NetworkPolicyPeerArgs(
        namespace_selector=LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace}),
        pod_selector=LabelSelectorArgs(match_labels=dict(pod_labels)) if pod_labels else None,
    )


def pods_named(names: Sequence[str], namespace: str | None = None) -> net.NetworkPolicyPeerArgs:
    """Pods whose app name is one of `names` (in `namespace`, or the policy's own)."""
    selector = LabelSelectorArgs(match_expressions=[{"key": NAME_LABEL, "operator": "In", "values": sorted(names)}])
    if namespace is None:
        return net.NetworkPolicyPeerArgs(pod_selector=selector)
    return net.NetworkPolicyPeerArgs(
        pod_selector=selector,
        namespace_selector=LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace}),
    )


def same_app_peer(selector: Mapping[str, str]) -> net.NetworkPolicyPeerArgs:
    """The workload's own pods (replicas talking to each other)."""
    return net.NetworkPolicyPeerArgs(pod_selector=LabelSelectorArgs(match_labels=dict(selector)))


def tcp_ports(*ports: int) -> list[net.NetworkPolicyPortArgs]:
    return [net.NetworkPolicyPortArgs(port=port, protocol="TCP") for port in ports]


def allow_in(peers: Sequence[net.NetworkPolicyPeerArgs], *ports: int) -> net.NetworkPolicyIngressRuleArgs:
    return net.NetworkPolicyIngressRuleArgs(from_=list(peers), ports=tcp_ports(*ports))


def allow_out(peers: Sequence[net.NetworkPolicyPeerArgs], *ports: int) -> net.NetworkPolicyEgressRuleArgs:
    return net.NetworkPolicyEgressRuleArgs(to=list(peers), ports=tcp_ports(*ports))


def callers_ingress(callers: Sequence[str], namespace: str, *ports: int) -> list[net.NetworkPolicyIngressRuleArgs]:
    """In from the calling services' pods in `namespace` (no rule when nobody calls)."""
    return [allow_in([pods_named(callers, namespace)], *ports)] if callers else []


def metrics_ingress(namespace: str | None, port: int) -> list[net.NetworkPolicyIngressRuleArgs]:
    """In from the observability namespace to the metrics port (no rule when nothing scrapes)."""
    return [allow_in([namespace_peer(namespace)], port)] if namespace else []


def dns_egress() -> net.NetworkPolicyEgressRuleArgs:
    """Egress to the cluster DNS, which every workload that resolves a name needs."""
    return net.NetworkPolicyEgressRuleArgs(
        to=[namespace_peer("kube-system", {"k8s-app": "kube-dns"})],
        ports=[net.NetworkPolicyPortArgs(port=53, protocol="UDP"), net.NetworkPolicyPortArgs(port=53, protocol="TCP")],
    )


def internet_egress(port: int) -> net.NetworkPolicyEgressRuleArgs:
    """Out to the internet on `port`, but never to cluster or private ranges by that door."""
    anywhere = net.IPBlockArgs(cidr="0.0.0.0/0", except_=list(PRIVATE_RANGES))
    return allow_out([net.NetworkPolicyPeerArgs(ip_block=anywhere)], port)


def network_policy(
    resource_name: str,
    metadata: ObjectMetaArgs,
    selector: Mapping[str, str],
    ingress: Sequence[net.NetworkPolicyIngressRuleArgs],
    egress: Sequence[net.NetworkPolicyEgressRuleArgs],
    opts: pulumi.ResourceOptions,
) -> k8s.networking.v1.NetworkPolicy:
    """Both directions governed: anything not listed in `ingress` or `egress` is denied."""
    return k8s.networking.v1.NetworkPolicy(
        resource_name,
        metadata=metadata,
        spec=net.NetworkPolicySpecArgs(
            pod_selector=LabelSelectorArgs(match_labels=dict(selector)),
            policy_types=["Ingress", "Egress"],
            ingress=list(ingress),
            egress=list(egress),
        ),
        opts=opts,
    )
