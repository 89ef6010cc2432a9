"""Qdrant, the vector database behind mcp-context.

A StatefulSet with persistent volumes and an API key from the generated secrets;
prod runs 3 replicas in distributed mode (Raft over the p2p port) spread across nodes.
The seed's collection settings are the server-side defaults here and are what
mcp-context creates its collection with (`SEED_COLLECTION`).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.apps.v1 import StatefulSetSpecArgs
from pulumi_kubernetes.core.v1 import (
    AffinityArgs,
    ContainerArgs,
    ContainerPortArgs,
    EmptyDirVolumeSourceArgs,
    EnvVarArgs,
    EnvVarSourceArgs,
    HTTPGetActionArgs,
    ObjectFieldSelectorArgs,
    PersistentVolumeClaimArgs,
    PersistentVolumeClaimSpecArgs,
    PodAffinityTermArgs,
    PodAntiAffinityArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    ProbeArgs,
    ResourceRequirementsArgs,
    SecretVolumeSourceArgs,
    ServicePortArgs,
    ServiceSpecArgs,
    VolumeArgs,
    VolumeMountArgs,
    VolumeResourceRequirementsArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    NetworkPolicyEgressRuleArgs,
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from components.workload import (
    RUN_AS,
    UPSTREAM_IMAGE_SKIP,
    container_security,
    content_checksum,
    disruption_budget,
    dns_egress,
    labels_for,
    metadata_for,
    namespace_peer,
    pod_security,
    pods_named,
)

HTTP_PORT, GRPC_PORT, P2P_PORT = 6333, 6334, 6335
QDRANT_UID = QDRANT_GID = RUN_AS  # the `-unprivileged` image runs as any UID with writable storage

# The seed's production collection: text-embedding-3-large vectors.
SEED_COLLECTION: dict[str, Any] = {
    "vectors": {"size": 3072, "distance": "Cosine"},
    "hnsw_config": {"m": 16, "ef_construct": 200, "full_scan_threshold": 10000},
    "optimizers_config": {"default_segment_number": 2, "max_optimization_threads": 2},
}


@dataclass(frozen=True)
class QdrantArgs:
    namespace: str
    api_key: pulumi.Input[str]
    services_namespace: str
    callers: Sequence[str] = ()
    metrics_namespace: str | None = None
    replicas: int = 1
    storage_size: str = "10Gi"
    storage_class: str | None = None
    # False: data in an emptyDir (a cluster without a volume provisioner; lost with the pod).
    persistent: bool = True
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {"requests": {"cpu": "250m", "memory": "1Gi"}, "limits": {"cpu": "2", "memory": "4Gi"}}
    )
    image: str = "qdrant/qdrant:v1.20.0-unprivileged"  # same minor as qdrant-client in mcp-context


def server_config(api_key: str, distributed: bool) -> str:
    """Qdrant's config/local.yaml: the API key, cluster mode and the seed's index defaults."""
    config = {
        "service": {"api_key": api_key, "http_port": HTTP_PORT, "grpc_port": GRPC_PORT},
        "cluster": {"enabled": distributed, "p2p": {"port": P2P_PORT}},
        "storage": {
            "storage_path": "/qdrant/storage",
            "snapshots_path": "/qdrant/snapshots",
            "hnsw_index": {
                "m": SEED_COLLECTION["hnsw_config"]["m"],
                "ef_construct": SEED_COLLECTION["hnsw_config"]["ef_construct"],
                "full_scan_threshold_kb": SEED_COLLECTION["hnsw_config"]["full_scan_threshold"],
            },
            "optimizers": {"default_segment_number": SEED_COLLECTION["optimizers_config"]["default_segment_number"]},
            "performance": {
                "max_optimization_threads": SEED_COLLECTION["optimizers_config"]["max_optimization_threads"]
            },
        },
        "telemetry_disabled": True,
    }
    return yaml.safe_dump(config, sort_keys=True)


class Qdrant(pulumi.ComponentResource):
    url: str

    def __init__(self, name: str, args: QdrantArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Qdrant", name, None, opts)
        if args.replicas not in (1, 3, 5):
            raise ValueError(f"qdrant replicas must be 1, 3 or 5 (Raft needs an odd quorum), given {args.replicas}")
        child = pulumi.ResourceOptions(parent=self)
        ns, app = args.namespace, "qdrant"
        distributed = args.replicas > 1
        labels = labels_for(app, "vector-database")
        selector = {"app.kubernetes.io/name": app}
        headless = f"{app}-headless"
        meta = metadata_for(ns, labels, app)

        config_text = pulumi.Output.from_input(args.api_key).apply(lambda key: server_config(key, distributed))
        secret = k8s.core.v1.Secret(
            f"{name}-config",
            metadata=meta("qdrant-config"),
            type="Opaque",
            string_data={"local.yaml": pulumi.Output.secret(config_text)},
            opts=child,
        )

        # Peers find each other through the headless service; pod 0 bootstraps the cluster.
        peer_uri = f"http://$(POD_NAME).{headless}.{ns}.svc.cluster.local:{P2P_PORT}"
        cluster_args = (
            ["--uri", peer_uri, "--bootstrap", f"http://{app}-0.{headless}.{ns}.svc.cluster.local:{P2P_PORT}"]
            if distributed
            else []
        )
        container = ContainerArgs(
            name="qdrant",
            image=args.image,
            image_pull_policy="Always",
            # The image's entrypoint runs qdrant with these arguments.
            args=cluster_args or None,
            env=[
                EnvVarArgs(
                    name="POD_NAME",
                    value_from=EnvVarSourceArgs(field_ref=ObjectFieldSelectorArgs(field_path="metadata.name")),
                )
            ],
            ports=[
                ContainerPortArgs(name="http", container_port=HTTP_PORT),
                ContainerPortArgs(name="grpc", container_port=GRPC_PORT),
                ContainerPortArgs(name="p2p", container_port=P2P_PORT),
            ],
            resources=ResourceRequirementsArgs(
                requests=dict(args.resources["requests"]), limits=dict(args.resources["limits"])
            ),
            # Qdrant's health endpoints are exempt from the API key.
            startup_probe=ProbeArgs(
                http_get=HTTPGetActionArgs(path="/healthz", port="http"), period_seconds=5, failure_threshold=60
            ),
            liveness_probe=ProbeArgs(http_get=HTTPGetActionArgs(path="/livez", port="http"), period_seconds=10),
            readiness_probe=ProbeArgs(http_get=HTTPGetActionArgs(path="/readyz", port="http"), period_seconds=5),
            security_context=container_security(QDRANT_UID, QDRANT_GID),
            volume_mounts=[
                VolumeMountArgs(name="storage", mount_path="/qdrant/storage"),
                VolumeMountArgs(name="snapshots", mount_path="/qdrant/snapshots"),
                VolumeMountArgs(name="tmp", mount_path="/tmp"),
                VolumeMountArgs(
                    name="config", mount_path="/qdrant/config/local.yaml", sub_path="local.yaml", read_only=True
                ),
            ],
        )
        affinity = None
        if distributed:
            # One replica per node: losing a node must not lose a Raft majority.
            affinity = AffinityArgs(
                pod_anti_affinity=PodAntiAffinityArgs(
                    required_during_scheduling_ignored_during_execution=[
                        PodAffinityTermArgs(
                            topology_key="kubernetes.io/hostname",
                            label_selector=LabelSelectorArgs(match_labels=selector),
                        )
                    ]
                )
            )
        checksum = content_checksum(config_text)
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=meta(annotations=UPSTREAM_IMAGE_SKIP),
            spec=StatefulSetSpecArgs(
                service_name=headless,
                replicas=args.replicas,
                pod_management_policy="Parallel",
                selector=LabelSelectorArgs(match_labels=selector),
                volume_claim_templates=[
                    PersistentVolumeClaimArgs(
                        metadata=ObjectMetaArgs(name="storage", labels=labels),
                        spec=PersistentVolumeClaimSpecArgs(
                            access_modes=["ReadWriteOnce"],
                            storage_class_name=args.storage_class,
                            resources=VolumeResourceRequirementsArgs(requests={"storage": args.storage_size}),
                        ),
                    )
                ]
                if args.persistent
                else None,
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(
                        labels=labels,
                        annotations=checksum.apply(
                            lambda c: {
                                "sophia.ai/config-checksum": c,
                                "prometheus.io/scrape": "true",
                                "prometheus.io/port": str(HTTP_PORT),
                                "prometheus.io/path": "/metrics",
                            }
                        ),
                    ),
                    spec=PodSpecArgs(
                        automount_service_account_token=False,
                        security_context=pod_security(QDRANT_UID, QDRANT_GID),
                        affinity=affinity,
                        containers=[container],
                        volumes=[
                            VolumeArgs(
                                name="config",
                                secret=SecretVolumeSourceArgs(secret_name=secret.metadata.name, default_mode=0o440),
                            ),
                            VolumeArgs(name="snapshots", empty_dir=EmptyDirVolumeSourceArgs(size_limit="5Gi")),
                            VolumeArgs(name="tmp", empty_dir=EmptyDirVolumeSourceArgs(size_limit="256Mi")),
                        ]
                        + (
                            []
                            if args.persistent
                            else [
                                VolumeArgs(
                                    name="storage", empty_dir=EmptyDirVolumeSourceArgs(size_limit=args.storage_size)
                                )
                            ]
                        ),
                        termination_grace_period_seconds=60,
                    ),
                ),
            ),
            opts=child,
        )

        ports = [
            ServicePortArgs(name="http", port=HTTP_PORT, target_port="http"),
            ServicePortArgs(name="grpc", port=GRPC_PORT, target_port="grpc"),
        ]
        k8s.core.v1.Service(
            f"{name}-service", metadata=meta(), spec=ServiceSpecArgs(selector=selector, ports=ports), opts=child
        )
        k8s.core.v1.Service(
            f"{name}-headless",
            metadata=meta(headless),
            spec=ServiceSpecArgs(
                cluster_ip="None",
                publish_not_ready_addresses=True,
                selector=selector,
                ports=ports + [ServicePortArgs(name="p2p", port=P2P_PORT, target_port="p2p")],
            ),
            opts=child,
        )
        disruption_budget(f"{name}-pdb", meta(), selector, child)

        api = [
            NetworkPolicyPortArgs(port=HTTP_PORT, protocol="TCP"),
            NetworkPolicyPortArgs(port=GRPC_PORT, protocol="TCP"),
        ]
        ingress = []
        if args.callers:
            ingress.append(
                NetworkPolicyIngressRuleArgs(from_=[pods_named(list(args.callers), args.services_namespace)], ports=api)
            )
        if args.metrics_namespace:
            ingress.append(
                NetworkPolicyIngressRuleArgs(
                    from_=[namespace_peer(args.metrics_namespace)],
                    ports=[NetworkPolicyPortArgs(port=HTTP_PORT, protocol="TCP")],
                )
            )
        peers = NetworkPolicyPeerArgs(pod_selector=LabelSelectorArgs(match_labels=selector))
        p2p = [NetworkPolicyPortArgs(port=P2P_PORT, protocol="TCP")]
        egress = []
        if distributed:
            ingress.append(NetworkPolicyIngressRuleArgs(from_=[peers], ports=p2p))
            egress.append(NetworkPolicyEgressRuleArgs(to=[peers], ports=p2p))
            egress.append(dns_egress())
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta(),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=ingress,
                egress=egress,
            ),
            opts=child,
        )

        self.url = f"http://{app}.{ns}.svc.cluster.local:{HTTP_PORT}"
        self.register_outputs({"url": self.url, "replicas": args.replicas, "collection": SEED_COLLECTION})
