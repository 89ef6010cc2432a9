"""PgBouncer in the cluster in front of the external PostgreSQL (Neon).

Services connect to `pgbouncer:5432` with one client user and a generated password;
PgBouncer holds the server connection strings from ESC (primary and, optionally, the
read replica as a second database, `<db>_ro`). Transaction pooling lets 1000+ client
connections share a few server connections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs, DeploymentStrategyArgs, RollingUpdateDeploymentArgs
from pulumi_kubernetes.core.v1 import (
    ContainerArgs,
    ContainerPortArgs,
    EmptyDirVolumeSourceArgs,
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
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    IPBlockArgs,
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

PORT = 5432
PGBOUNCER_UID = RUN_AS  # pgbouncer needs only to read its config
CLIENT_USER = "sophia"


@dataclass(frozen=True)
class PgBouncerArgs:
    namespace: str
    # postgresql://user:password@host:port/dbname?sslmode=require (Neon), from ESC.
    database_url: pulumi.Input[str]
    client_password: pulumi.Input[str]
    services_namespace: str
    callers: Sequence[str] = ()
    # Empty or None: no read replica pool.
    read_replica_url: pulumi.Input[str] | None = None
    replicas: int = 1
    max_client_connections: int = 2000
    default_pool_size: int = 20
    resources: Mapping[str, Mapping[str, str]] = field(
        default_factory=lambda: {
            "requests": {"cpu": "50m", "memory": "64Mi"},
            "limits": {"cpu": "500m", "memory": "256Mi"},
        }
    )
    image: str = "ghcr.io/cloudnative-pg/pgbouncer:1.24.1"
    # An in-cluster server (the local stack's PostgreSQL pod): pods with these labels in this
    # namespace, which the egress policy then allows besides the internet.
    server_labels: Mapping[str, str] | None = None


class DatabaseUrlError(ValueError):
    pass


def database_entry(alias: str, url: str) -> str:
    """One `[databases]` line from a postgres URL; Neon requires TLS to the server."""
    parts = urlsplit(url)
    if parts.scheme not in ("postgres", "postgresql") or not parts.hostname or not parts.path.strip("/"):
        raise DatabaseUrlError(f"{alias}: not a postgres URL (expected postgresql://user:password@host/dbname)")
    fields = {
        "host": parts.hostname,
        "port": str(parts.port or 5432),
        "dbname": parts.path.strip("/"),
        "user": unquote(parts.username or ""),
        "password": unquote(parts.password or ""),
    }
    return f"{alias} = " + " ".join(f"{k}={v}" for k, v in fields.items() if v)


def pgbouncer_ini(primary: str, replica: str | None, args: PgBouncerArgs) -> str:
    dbname = urlsplit(primary).path.strip("/")
    databases = [database_entry(dbname, primary)]
    if replica:
        databases.append(database_entry(f"{dbname}_ro", replica))
    return "\n".join(
        [
            "[databases]",
            *databases,
            "",
            "[pgbouncer]",
            "listen_addr = 0.0.0.0",
            f"listen_port = {PORT}",
            "auth_type = scram-sha-256",
            "auth_file = /etc/pgbouncer/userlist.txt",
            "pool_mode = transaction",
            f"max_client_conn = {args.max_client_connections}",
            f"default_pool_size = {args.default_pool_size}",
            "server_tls_sslmode = require",
            "ignore_startup_parameters = extra_float_digits,options",
            "unix_socket_dir =",
            "admin_users =",
            "",
        ]
    )


class PgBouncer(pulumi.ComponentResource):
    host: str
    database: pulumi.Output[str]

    def __init__(self, name: str, args: PgBouncerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:PgBouncer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        ns, app = args.namespace, "pgbouncer"
        labels = labels_for(app, "database-pooler")
        selector = {"app.kubernetes.io/name": app}
        meta = metadata_for(ns, labels, app)

        ini = pulumi.Output.all(args.database_url, args.read_replica_url).apply(
            lambda urls: pgbouncer_ini(urls[0], urls[1], args)
        )
        userlist = pulumi.Output.from_input(args.client_password).apply(lambda pw: f'"{CLIENT_USER}" "{pw}"\n')
        secret = k8s.core.v1.Secret(
            f"{name}-config",
            metadata=meta("pgbouncer-config"),
            type="Opaque",
            string_data={"pgbouncer.ini": pulumi.Output.secret(ini), "userlist.txt": pulumi.Output.secret(userlist)},
            opts=child,
        )
        checksum = content_checksum(ini, userlist)

        container = ContainerArgs(
            name="pgbouncer",
            image=args.image,
            image_pull_policy="Always",
            command=["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"],
            ports=[ContainerPortArgs(name="postgres", container_port=PORT)],
            resources=ResourceRequirementsArgs(
                requests=dict(args.resources["requests"]), limits=dict(args.resources["limits"])
            ),
            liveness_probe=ProbeArgs(tcp_socket=TCPSocketActionArgs(port="postgres"), period_seconds=10),
            readiness_probe=ProbeArgs(tcp_socket=TCPSocketActionArgs(port="postgres"), period_seconds=5),
            security_context=container_security(PGBOUNCER_UID),
            volume_mounts=[
                VolumeMountArgs(name="config", mount_path="/etc/pgbouncer", read_only=True),
                VolumeMountArgs(name="tmp", mount_path="/tmp"),
            ],
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(annotations=UPSTREAM_IMAGE_SKIP),
            spec=DeploymentSpecArgs(
                replicas=args.replicas,
                selector=LabelSelectorArgs(match_labels=selector),
                strategy=DeploymentStrategyArgs(
                    type="RollingUpdate", rolling_update=RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)
                ),
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(
                        labels=labels, annotations=checksum.apply(lambda c: {"sophia.ai/config-checksum": c})
                    ),
                    spec=PodSpecArgs(
                        automount_service_account_token=False,
                        security_context=pod_security(PGBOUNCER_UID),
                        containers=[container],
                        volumes=[
                            VolumeArgs(
                                name="config",
                                secret=SecretVolumeSourceArgs(secret_name=secret.metadata.name, default_mode=0o440),
                            ),
                            VolumeArgs(name="tmp", empty_dir=EmptyDirVolumeSourceArgs(size_limit="16Mi")),
                        ],
                    ),
                ),
            ),
            opts=child,
        )
        k8s.core.v1.Service(
            f"{name}-service",
            metadata=meta(),
            spec=ServiceSpecArgs(
                selector=selector, ports=[ServicePortArgs(name="postgres", port=PORT, target_port="postgres")]
            ),
            opts=child,
        )
        disruption_budget(f"{name}-pdb", meta(), selector, child)

        ingress = []
        if args.callers:
            ingress.append(
                NetworkPolicyIngressRuleArgs(
                    from_=[pods_named(list(args.callers), args.services_namespace)],
                    ports=[NetworkPolicyPortArgs(port=PORT, protocol="TCP")],
                )
            )
        in_cluster = []
        if args.server_labels:
            in_cluster.append(
                NetworkPolicyEgressRuleArgs(
                    to=[namespace_peer(args.namespace, args.server_labels)],
                    ports=[NetworkPolicyPortArgs(port=5432, protocol="TCP")],
                )
            )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta(),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=ingress,
                # Out: DNS, and PostgreSQL on the internet (Neon), never the cluster's private ranges
                # (except the local stack's own server pod).
                egress=[
                    dns_egress(),
                    *in_cluster,
                    NetworkPolicyEgressRuleArgs(
                        to=[
                            NetworkPolicyPeerArgs(
                                ip_block=IPBlockArgs(
                                    cidr="0.0.0.0/0",
                                    except_=["10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16", "169.254.0.0/16"],
                                )
                            )
                        ],
                        ports=[NetworkPolicyPortArgs(port=5432, protocol="TCP")],
                    ),
                ],
            ),
            opts=child,
        )

        self.host = f"{app}.{ns}.svc.cluster.local"
        self.database = pulumi.Output.from_input(args.database_url).apply(lambda u: urlsplit(u).path.strip("/"))
        self.register_outputs(
            {
                "host": self.host,
                "database": self.database,
                "read_replica": pulumi.Output.from_input(args.read_replica_url).apply(bool),
            }
        )
