"""A PostgreSQL pod for the local stack, behind PgBouncer as Neon is in dev/prod.

Local only (`sophia:data.local_postgres`): one replica, data in an emptyDir (a local stack's
tasks need not outlive `make down`), TLS with a certificate made at first start (PgBouncer
speaks TLS to its server, as it does to Neon). Any image with PostgreSQL 15's `initdb`,
`postgres` and `openssl` on PATH works: the local registry serves one made from Debian's
postgresql-15 under the public image's name (toolchain/image-build.sh mirror).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs, DeploymentStrategyArgs
from pulumi_kubernetes.core.v1 import (
    ContainerArgs,
    ContainerPortArgs,
    EmptyDirVolumeSourceArgs,
    EnvVarArgs,
    EnvVarSourceArgs,
    ExecActionArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    ProbeArgs,
    ResourceRequirementsArgs,
    SecretKeySelectorArgs,
    ServicePortArgs,
    ServiceSpecArgs,
    VolumeArgs,
    VolumeMountArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from components.workload import RUN_AS, container_security, labels_for, namespace_peer, pod_security

PORT = 5432
DATA = "/var/lib/postgresql/data"

# First start: a cluster owned by the pod's user, a database and its owner, TLS and password
# auth from the pod network; then PostgreSQL in the foreground.
START = f"""set -eu
export PGDATA={DATA}/pgdata
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  printf '%s' "$POSTGRES_PASSWORD" > /tmp/pw
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile=/tmp/pw --auth-local=trust --auth-host=scram-sha-256
  rm -f /tmp/pw
  openssl req -x509 -newkey rsa:2048 -nodes -days 3650 -subj /CN=postgres \\
    -keyout "$PGDATA/server.key" -out "$PGDATA/server.crt" 2>/dev/null
  chmod 600 "$PGDATA/server.key"
  echo "hostssl all all 0.0.0.0/0 scram-sha-256" >> "$PGDATA/pg_hba.conf"
  echo "CREATE DATABASE $POSTGRES_DB OWNER $POSTGRES_USER;" | postgres --single -D "$PGDATA" postgres >/dev/null
fi
exec postgres -D "$PGDATA" -c listen_addresses='*' -c unix_socket_directories=/tmp -c ssl=on
"""


@dataclass(frozen=True)
class LocalPostgresArgs:
    namespace: str
    user: str
    password: pulumi.Input[str]
    database: str
    # Pods (by labels, in this namespace) allowed in: PgBouncer.
    client_labels: Mapping[str, str]
    image: str = "postgres:15-bookworm"


class LocalPostgres(pulumi.ComponentResource):
    host: str

    def __init__(self, name: str, args: LocalPostgresArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:LocalPostgres", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        app, ns = "postgres", args.namespace
        labels = labels_for(app, "database")
        selector = {"app.kubernetes.io/name": app}

        def meta(suffix: str = "") -> ObjectMetaArgs:
            return ObjectMetaArgs(name=f"{app}{suffix}", namespace=ns, labels=labels)

        secret = k8s.core.v1.Secret(
            f"{name}-auth", metadata=meta("-auth"), string_data={"password": args.password}, opts=child
        )
        env = [
            EnvVarArgs(name="POSTGRES_USER", value=args.user),
            EnvVarArgs(name="POSTGRES_DB", value=args.database),
            EnvVarArgs(
                name="POSTGRES_PASSWORD",
                value_from=EnvVarSourceArgs(
                    secret_key_ref=SecretKeySelectorArgs(name=secret.metadata.name, key="password")
                ),
            ),
        ]
        is_ready = ExecActionArgs(command=["pg_isready", "-h", "/tmp", "-U", args.user, "-d", args.database])
        ready = ProbeArgs(exec_=is_ready, period_seconds=5)
        container = ContainerArgs(
            name="postgres",
            image=args.image,
            image_pull_policy="IfNotPresent",
            command=["/bin/sh", "-c", START],
            env=env,
            ports=[ContainerPortArgs(name="postgres", container_port=PORT)],
            resources=ResourceRequirementsArgs(
                requests={"cpu": "50m", "memory": "128Mi"}, limits={"cpu": "1", "memory": "512Mi"}
            ),
            readiness_probe=ready,
            liveness_probe=ProbeArgs(exec_=is_ready, period_seconds=10, initial_delay_seconds=30),
            security_context=container_security(RUN_AS),
            volume_mounts=[
                VolumeMountArgs(name="data", mount_path=DATA),
                VolumeMountArgs(name="tmp", mount_path="/tmp"),
            ],
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=meta(),
            spec=DeploymentSpecArgs(
                replicas=1,
                selector=LabelSelectorArgs(match_labels=selector),
                strategy=DeploymentStrategyArgs(type="Recreate"),
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(labels=labels),
                    spec=PodSpecArgs(
                        automount_service_account_token=False,
                        security_context=pod_security(),
                        containers=[container],
                        volumes=[
                            VolumeArgs(name="data", empty_dir=EmptyDirVolumeSourceArgs(size_limit="2Gi")),
                            VolumeArgs(name="tmp", empty_dir=EmptyDirVolumeSourceArgs(size_limit="64Mi")),
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
        # In: PgBouncer only. Out: nothing.
        k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol",
            metadata=meta(),
            spec=NetworkPolicySpecArgs(
                pod_selector=LabelSelectorArgs(match_labels=selector),
                policy_types=["Ingress", "Egress"],
                ingress=[
                    NetworkPolicyIngressRuleArgs(
                        from_=[namespace_peer(ns, dict(args.client_labels))],
                        ports=[NetworkPolicyPortArgs(port=PORT, protocol="TCP")],
                    )
                ],
                egress=[],
            ),
            opts=child,
        )
        self.host = f"{app}.{ns}.svc.cluster.local"
        self.register_outputs({"host": self.host})
