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
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.spec import Resources

PORT = 5432
DATA = "/var/lib/postgresql/data"
POSTGRES_UID = wl.RUN_AS

AUTH = "/etc/postgres-auth"

# First start: a cluster owned by the pod's user, a database and its owner, TLS and password
# auth from the pod network; then PostgreSQL in the foreground.
START = f"""set -eu
export PGDATA={DATA}/pgdata
if [ ! -s "$PGDATA/PG_VERSION" ]; then
  initdb -D "$PGDATA" -U "$POSTGRES_USER" --pwfile={AUTH}/password --auth-local=trust --auth-host=scram-sha-256
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
    resources: Resources = wl.resource_amounts(requests=("50m", "128Mi"), limits=("1", "512Mi"))
    image: str = "postgres:15-bookworm"


class LocalPostgres(pulumi.ComponentResource):
    host: str

    def __init__(self, name: str, args: LocalPostgresArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:LocalPostgres", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        w = wl.Workload("postgres", args.namespace, "database")
        secret = k8s.core.v1.Secret(
            f"{name}-auth", metadata=w.meta("postgres-auth"), string_data={"password": args.password}, opts=child
        )
        # The password as a file (initdb --pwfile), never in the environment.
        env = [
            core.EnvVarArgs(name="POSTGRES_USER", value=args.user),
            core.EnvVarArgs(name="POSTGRES_DB", value=args.database),
        ]
        is_ready = core.ExecActionArgs(command=["pg_isready", "-h", "/tmp", "-U", args.user, "-d", args.database])
        container = wl.upstream_container(
            "postgres",
            args.image,
            POSTGRES_UID,
            {"postgres": PORT},
            args.resources,
            command=["/bin/sh", "-c", START],
            env=env,
            readiness_probe=core.ProbeArgs(exec_=is_ready, period_seconds=5),
            liveness_probe=core.ProbeArgs(exec_=is_ready, period_seconds=10, initial_delay_seconds=30),
            volume_mounts=[wl.mount("data", DATA), wl.mount("tmp", "/tmp"), wl.mount("auth", AUTH, read_only=True)],
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=w.meta(annotations=wl.UPSTREAM_IMAGE_SKIP),
            spec=DeploymentSpecArgs(
                replicas=1,
                selector=LabelSelectorArgs(match_labels=w.selector),
                # One server owns the data directory: replaced, never surged.
                strategy=DeploymentStrategyArgs(type="Recreate"),
                template=wl.pod_template(
                    w.labels,
                    wl.pod_annotations(wl.content_checksum(START)),
                    POSTGRES_UID,
                    containers=[container],
                    volumes=[
                        wl.scratch_volume("data", "2Gi"),
                        wl.scratch_volume("tmp", "64Mi"),
                        wl.secret_volume("auth", secret),
                    ],
                ),
            ),
            opts=child,
        )
        wl.cluster_service(f"{name}-service", w.meta(), w.selector, {"postgres": PORT}, child)
        wl.disruption_budget(f"{name}-pdb", w.meta(), w.selector, child)
        # In: PgBouncer only. Out: nothing.
        wl.network_policy(
            f"{name}-netpol",
            w.meta(),
            w.selector,
            ingress=[wl.allow_in([wl.namespace_peer(args.namespace, args.client_labels)], PORT)],
            egress=[],
            opts=child,
        )
        self.host = w.host
        self.labels = w.selector
        self.register_outputs({"host": self.host})
