"""Redis as the platform's cache and stream broker (official `redis` image).

Auth is on: the `default` user is disabled and each calling service gets its own ACL
user, stored hashed in the ACL file. `maxmemory` with an LRU eviction policy suits a
cache (the embedding cache's entries all carry a 24 h TTL); persistence is a per-stack
choice. A redis_exporter sidecar serves metrics with its own read-only user.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import StatefulSetSpecArgs
from pulumi_kubernetes.core.v1 import (
    ConfigMapVolumeSourceArgs,
    ContainerArgs,
    ContainerPortArgs,
    EmptyDirVolumeSourceArgs,
    HTTPGetActionArgs,
    PersistentVolumeClaimSpecArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    ProbeArgs,
    ResourceRequirementsArgs,
    SecretVolumeSourceArgs,
    ServicePortArgs,
    ServiceSpecArgs,
    TCPSocketActionArgs,
    VolumeArgs,
    VolumeMountArgs,
    VolumeResourceRequirementsArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import NetworkPolicyIngressRuleArgs, NetworkPolicyPortArgs, NetworkPolicySpecArgs

from components.workload import (
    RUN_AS,
    UPSTREAM_IMAGE_SKIP,
    container_security,
    content_checksum,
    disruption_budget,
    labels_for,
    metadata_for,
    namespace_peer,
    pod_security,
    pods_named,
)

PORT = 6379
METRICS_PORT = 9121
EXPORTER_USER = "exporter"
REDIS_UID = RUN_AS  # any UID works: the image needs only /data writable (fsGroup)
EXPORTER_UID = 59000  # redis_exporter image's user
# Services may use everything but admin and keyspace-wide commands (FLUSHALL, KEYS, CONFIG, ...).
SERVICE_PERMISSIONS = "~* &* +@all -@dangerous"
EXPORTER_PERMISSIONS = "-@all +@connection +info +config|get +client|list +slowlog|get +latency|latest +memory|stats"


@dataclass(frozen=True)
class RedisArgs:
    namespace: str
    # ACL user per calling service -> its password.
    users: Mapping[str, pulumi.Input[str]]
    exporter_password: pulumi.Input[str]
    services_namespace: str
    metrics_namespace: str | None = None
    maxmemory: str = "256mb"
    eviction_policy: str = "allkeys-lru"
    persistence: bool = False
    storage_size: str = "5Gi"
    storage_class: str | None = None
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "100m", "memory": "384Mi"},
            "limits": {"cpu": "1", "memory": "512Mi"},
        }
    )
    image: str = "redis:8.2.2-bookworm"
    exporter_image: str = "oliver006/redis_exporter:v1.77.0"


def acl_file(users: Mapping[str, str], exporter_password: str) -> str:
    """Redis ACL file; passwords only as SHA-256 (`#<hex>`), so the file never holds them."""
    digest = lambda pw: hashlib.sha256(pw.encode()).hexdigest()  # noqa: E731
    lines = ["user default off"]
    lines += [f"user {user} on #{digest(pw)} {SERVICE_PERMISSIONS}" for user, pw in sorted(users.items())]
    lines.append(f"user {EXPORTER_USER} on #{digest(exporter_password)} {EXPORTER_PERMISSIONS}")
    return "\n".join(lines) + "\n"


def redis_conf(args: RedisArgs) -> str:
    persistence = (
        ["appendonly yes", "appendfsync everysec", "save 3600 1 300 100 60 10000"]
        if args.persistence
        else ["appendonly no", 'save ""']
    )
    return (
        "\n".join(
            [
                f"port {PORT}",
                "bind * -::*",
                "protected-mode no",  # auth is enforced by the ACL file instead
                "aclfile /etc/redis/acl/users.acl",
                f"maxmemory {args.maxmemory}",
                f"maxmemory-policy {args.eviction_policy}",
                "dir /data",
                *persistence,
            ]
        )
        + "\n"
    )


class Redis(pulumi.ComponentResource):
    host: str
    url: str

    def __init__(self, name: str, args: RedisArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Redis", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns, app = args.namespace, "redis"
        labels = labels_for(app, "cache")
        selector = {"app.kubernetes.io/name": app}
        meta = metadata_for(ns, labels, app)

        config = k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=meta("redis-config"), data={"redis.conf": redis_conf(args)}, opts=child
        )
        acl = pulumi.Output.all(
            users=pulumi.Output.all(**args.users) if args.users else {}, exporter=args.exporter_password
        ).apply(lambda v: acl_file(v["users"], v["exporter"]))
        exporter_auth = pulumi.Output.from_input(args.exporter_password).apply(
            lambda pw: json.dumps({f"redis://localhost:{PORT}": pw})
        )
        secret = k8s.core.v1.Secret(
            f"{name}-acl",
            metadata=meta("redis-acl"),
            type="Opaque",
            string_data={
                "users.acl": pulumi.Output.secret(acl),
                "exporter-passwords.json": pulumi.Output.secret(exporter_auth),
            },
            opts=child,
        )

        data_volume_claims = None
        volumes = [
            VolumeArgs(name="config", config_map=ConfigMapVolumeSourceArgs(name=config.metadata.name)),
            VolumeArgs(name="acl", secret=SecretVolumeSourceArgs(secret_name=secret.metadata.name, default_mode=0o440)),
            VolumeArgs(name="tmp", empty_dir=EmptyDirVolumeSourceArgs(size_limit="64Mi")),
        ]
        if args.persistence:
            data_volume_claims = [
                k8s.core.v1.PersistentVolumeClaimArgs(
                    metadata=ObjectMetaArgs(name="data", labels=labels),
                    spec=PersistentVolumeClaimSpecArgs(
                        access_modes=["ReadWriteOnce"],
                        storage_class_name=args.storage_class,
                        resources=VolumeResourceRequirementsArgs(requests={"storage": args.storage_size}),
                    ),
                )
            ]
        else:
            volumes.append(VolumeArgs(name="data", empty_dir=EmptyDirVolumeSourceArgs(size_limit="1Gi")))

        # Redis runs ACL checks on the ACL file's users, so the config hash must include it.
        checksum = content_checksum(acl, redis_conf(args))
        redis = ContainerArgs(
            name="redis",
            image=args.image,
            image_pull_policy="Always",
            command=["redis-server", "/etc/redis/redis.conf"],
            ports=[ContainerPortArgs(name="redis", container_port=PORT)],
            resources=ResourceRequirementsArgs(
                requests=dict(args.resources["requests"]), limits=dict(args.resources["limits"])
            ),
            liveness_probe=ProbeArgs(tcp_socket=TCPSocketActionArgs(port="redis"), period_seconds=10),
            readiness_probe=ProbeArgs(tcp_socket=TCPSocketActionArgs(port="redis"), period_seconds=5),
            security_context=container_security(REDIS_UID),
            volume_mounts=[
                VolumeMountArgs(name="config", mount_path="/etc/redis/redis.conf", sub_path="redis.conf"),
                VolumeMountArgs(name="acl", mount_path="/etc/redis/acl", read_only=True),
                VolumeMountArgs(name="data", mount_path="/data"),
                VolumeMountArgs(name="tmp", mount_path="/tmp"),
            ],
        )
        exporter = ContainerArgs(
            name="exporter",
            image=args.exporter_image,
            image_pull_policy="Always",
            args=[
                f"--redis.addr=redis://localhost:{PORT}",
                f"--redis.user={EXPORTER_USER}",
                "--redis.password-file=/etc/redis/acl/exporter-passwords.json",
            ],
            ports=[ContainerPortArgs(name="metrics", container_port=METRICS_PORT)],
            resources=ResourceRequirementsArgs(
                requests={"cpu": "20m", "memory": "32Mi"}, limits={"cpu": "100m", "memory": "64Mi"}
            ),
            liveness_probe=ProbeArgs(http_get=HTTPGetActionArgs(path="/health", port="metrics"), period_seconds=10),
            readiness_probe=ProbeArgs(http_get=HTTPGetActionArgs(path="/health", port="metrics"), period_seconds=10),
            security_context=container_security(EXPORTER_UID),
            volume_mounts=[VolumeMountArgs(name="acl", mount_path="/etc/redis/acl", read_only=True)],
        )
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=meta(annotations=UPSTREAM_IMAGE_SKIP),
            spec=StatefulSetSpecArgs(
                service_name=app,
                replicas=1,
                selector=LabelSelectorArgs(match_labels=selector),
                volume_claim_templates=data_volume_claims,
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(
                        labels=labels,
                        annotations=checksum.apply(
                            lambda c: {
                                "sophia.ai/config-checksum": c,
                                "prometheus.io/scrape": "true",
                                "prometheus.io/port": str(METRICS_PORT),
                                "prometheus.io/path": "/metrics",
                            }
                        ),
                    ),
                    spec=PodSpecArgs(
                        automount_service_account_token=False,
                        security_context=pod_security(REDIS_UID),
                        containers=[redis, exporter],
                        volumes=volumes,
                        termination_grace_period_seconds=30,
                    ),
                ),
            ),
            opts=child,
        )

        self.service = k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(),
            spec=ServiceSpecArgs(
                selector=selector,
                ports=[
                    ServicePortArgs(name="redis", port=PORT, target_port="redis"),
                    ServicePortArgs(name="metrics", port=METRICS_PORT, target_port="metrics"),
                ],
            ),
            opts=child,
        )
        disruption_budget(f"{name}-pdb", meta(), selector, child)

        ingress = []
        if args.users:
            ingress.append(
                NetworkPolicyIngressRuleArgs(
                    from_=[pods_named(sorted(args.users), args.services_namespace)],
                    ports=[NetworkPolicyPortArgs(port=PORT, protocol="TCP")],
                )
            )
        if args.metrics_namespace:
            ingress.append(
                NetworkPolicyIngressRuleArgs(
                    from_=[namespace_peer(args.metrics_namespace)],
                    ports=[NetworkPolicyPortArgs(port=METRICS_PORT, protocol="TCP")],
                )
            )
        # No egress at all: Redis talks to nobody.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta(),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=ingress,
                egress=[],
            ),
            opts=child,
        )

        self.host = f"{app}.{ns}.svc.cluster.local"
        self.url = f"redis://{self.host}:{PORT}/0"
        self.register_outputs({"host": self.host, "url": self.url, "users": sorted(args.users)})
