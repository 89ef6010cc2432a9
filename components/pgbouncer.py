"""PgBouncer in the cluster in front of the external PostgreSQL (Neon).

Services connect to `pgbouncer:5432` with one client user and a generated password;
PgBouncer holds the server connection strings from ESC (primary and, optionally, the
read replica as a second database, `<db>_ro`). Transaction pooling lets 1000+ client
connections share a few server connections.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs, DeploymentStrategyArgs, RollingUpdateDeploymentArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.spec import Resources

PORT = 5432
PGBOUNCER_UID = wl.RUN_AS  # pgbouncer needs only to read its config
CLIENT_USER = "sophia"
# The secret key (a file under the secrets wl.mount) holding the client password.
PASSWORD_KEY = "PGPASSWORD"
# Neon and most hosted PostgreSQL listen on the standard port.
SERVER_PORT = 5432


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
    resources: Resources = wl.resource_amounts(requests=("50m", "64Mi"), limits=("500m", "256Mi"))
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
        w = wl.Workload("pgbouncer", args.namespace, "database-pooler")
        self._client_password = args.client_password

        ini = pulumi.Output.all(args.database_url, args.read_replica_url).apply(
            lambda urls: pgbouncer_ini(urls[0], urls[1], args)
        )
        userlist = pulumi.Output.from_input(args.client_password).apply(lambda pw: f'"{CLIENT_USER}" "{pw}"\n')
        secret = k8s.core.v1.Secret(
            f"{name}-config",
            metadata=w.meta("pgbouncer-config"),
            type="Opaque",
            string_data={"pgbouncer.ini": pulumi.Output.secret(ini), "userlist.txt": pulumi.Output.secret(userlist)},
            opts=child,
        )

        container = wl.upstream_container(
            "pgbouncer",
            args.image,
            PGBOUNCER_UID,
            {"postgres": PORT},
            args.resources,
            command=["pgbouncer", "/etc/pgbouncer/pgbouncer.ini"],
            volume_mounts=[wl.mount("config", "/etc/pgbouncer", read_only=True), wl.mount("tmp", "/tmp")],
            **wl.tcp_probes("postgres"),
        )
        k8s.apps.v1.Deployment(
            f"{name}-deployment",
            metadata=w.meta(annotations=wl.UPSTREAM_IMAGE_SKIP),
            spec=DeploymentSpecArgs(
                replicas=args.replicas,
                selector=LabelSelectorArgs(match_labels=w.selector),
                strategy=DeploymentStrategyArgs(
                    type="RollingUpdate", rolling_update=RollingUpdateDeploymentArgs(max_unavailable=0, max_surge=1)
                ),
                template=wl.pod_template(
                    w.labels,
                    # No metrics endpoint: PgBouncer's stats are behind its admin console, which is off.
                    wl.pod_annotations(wl.content_checksum(ini, userlist)),
                    PGBOUNCER_UID,
                    containers=[container],
                    volumes=[wl.secret_volume("config", secret), wl.scratch_volume("tmp", "16Mi")],
                ),
            ),
            opts=child,
        )
        wl.cluster_service(f"{name}-service", w.meta(), w.selector, {"postgres": PORT}, child)
        wl.disruption_budget(f"{name}-pdb", w.meta(), w.selector, child)
        # Out: DNS, and PostgreSQL on the internet (Neon), never the cluster's private ranges
        # (except the local stack's own server pod).
        in_cluster = (
            [wl.allow_out([wl.namespace_peer(args.namespace, args.server_labels)], SERVER_PORT)]
            if args.server_labels
            else []
        )
        wl.network_policy(
            f"{name}-netpol",
            w.meta(),
            w.selector,
            ingress=wl.callers_ingress(args.callers, args.services_namespace, PORT),
            egress=[wl.dns_egress(), *in_cluster, wl.internet_egress(SERVER_PORT)],
            opts=child,
        )

        self.host = w.host
        self.database = pulumi.Output.from_input(args.database_url).apply(lambda u: urlsplit(u).path.strip("/"))
        self.peer = wl.Peer(w.namespace, w.selector, PORT)
        self.register_outputs(
            {
                "host": self.host,
                "database": self.database,
                "read_replica": pulumi.Output.from_input(args.read_replica_url).apply(bool),
            }
        )

    def connection(self, caller: str) -> wl.Connection:
        """Every caller logs in as the one client user; PgBouncer holds the server credentials."""
        return wl.Connection(
            peer=self.peer,
            env={"PGHOST": self.host, "PGPORT": str(PORT), "PGUSER": CLIENT_USER, "PGDATABASE": self.database},
            secrets={PASSWORD_KEY: self._client_password},
        )
