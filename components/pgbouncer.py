"""PgBouncer in the cluster in front of the external PostgreSQL (Neon).

Services connect to `pgbouncer:5432` with a generated client login; PgBouncer holds the server
connection strings from ESC (primary and, optionally, the read replica as a second database,
`<db>_ro`). Transaction pooling lets 1000+ client connections share a few server connections.

Rotation without a restart: the auth_file lists two client users, the current password's and the
previous one's (a user has one password in PgBouncer, so each password has its own user, named from
its hash). A `config-reloader` sidecar sends PgBouncer SIGHUP when the kubelet has updated the
mounted config, and PgBouncer re-reads its ini and auth_file without dropping a connection; that way
the Neon role ESC rotates reaches it without a restart too.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from urllib.parse import unquote, urlsplit

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs, DeploymentStrategyArgs, RollingUpdateDeploymentArgs
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.spec import Resources

PORT = 5432
PGBOUNCER_UID = wl.RUN_AS  # pgbouncer needs only to read its config
CLIENT_USER = "sophia"
# The secret keys (files under the secrets wl.mount) of the client login, and of the other login
# accepted during a rotation's window (sophia_chassis.rotation tries both).
USER_KEY, PASSWORD_KEY = "PGUSER", "PGPASSWORD"
PREVIOUS = "_PREVIOUS"
CONFIG_DIR = "/etc/pgbouncer"
PIDFILE = "/tmp/pgbouncer.pid"
RELOAD_INTERVAL_SECONDS = 10
# Neon and most hosted PostgreSQL listen on the standard port.
SERVER_PORT = 5432


@dataclass(frozen=True)
class PgBouncerArgs:
    namespace: str
    # postgresql://user:password@host:port/dbname?sslmode=require (Neon), from ESC.
    database_url: pulumi.Input[str]
    client_password: pulumi.Input[str]
    services_namespace: str
    # The client password before the last rotation: its user stays in the auth_file until the next.
    previous_client_password: pulumi.Input[str] | None = None
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


def client_user(password: str) -> str:
    """The client user of a password: a new password comes with a new user, so the auth_file can hold
    the old and the new login at once."""
    return f"{CLIENT_USER}_{hashlib.sha256(password.encode()).hexdigest()[:10]}"


def userlist(password: str, previous: str | None = None) -> str:
    """PgBouncer's auth_file: the current login and, during a rotation's window, the previous one."""
    logins = {client_user(password): password}
    if previous and previous != password:
        logins[client_user(previous)] = previous
    return "".join(f'"{user}" "{pw}"\n' for user, pw in sorted(logins.items()))


def pgbouncer_settings(args: PgBouncerArgs) -> str:
    """The `[pgbouncer]` section: what a restart is needed for (the pods' checksum covers only this)."""
    return "\n".join(
        [
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
            # The reloader signals the PID written here (the pods share a process namespace).
            f"pidfile = {PIDFILE}",
            "",
        ]
    )


def pgbouncer_ini(primary: str, replica: str | None, args: PgBouncerArgs) -> str:
    dbname = urlsplit(primary).path.strip("/")
    databases = [database_entry(dbname, primary)]
    if replica:
        databases.append(database_entry(f"{dbname}_ro", replica))
    return "\n".join(["[databases]", *databases, "", pgbouncer_settings(args)])


def reloader_script(
    config_dir: str = CONFIG_DIR, pidfile: str = PIDFILE, interval: float = RELOAD_INTERVAL_SECONDS
) -> str:
    """The config-reloader sidecar (sh): SIGHUP to PgBouncer when the mounted config changes. PgBouncer
    then re-reads pgbouncer.ini and the auth_file; client and server connections stay open (a server
    connection whose database entry changed is replaced once it is released)."""
    return f"""sum() {{ cat {config_dir}/pgbouncer.ini {config_dir}/userlist.txt | cksum; }}
last=$(sum)
while sleep {interval}; do
  now=$(sum)
  [ "$now" = "$last" ] && continue
  if kill -HUP "$(cat {pidfile})"; then
    last=$now
    echo "pgbouncer reloaded"
  fi
done
"""


class PgBouncer(pulumi.ComponentResource):
    host: str
    database: pulumi.Output[str]

    def __init__(self, name: str, args: PgBouncerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:PgBouncer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        w = wl.Workload("pgbouncer", args.namespace, "database-pooler")
        self._client_password, self._previous_client_password = args.client_password, args.previous_client_password

        ini = pulumi.Output.all(args.database_url, args.read_replica_url).apply(
            lambda urls: pgbouncer_ini(urls[0], urls[1], args)
        )
        users = pulumi.Output.all(args.client_password, args.previous_client_password).apply(
            lambda pws: userlist(pws[0], pws[1])
        )
        secret = k8s.core.v1.Secret(
            f"{name}-config",
            metadata=w.meta("pgbouncer-config"),
            type="Opaque",
            string_data={"pgbouncer.ini": pulumi.Output.secret(ini), "userlist.txt": pulumi.Output.secret(users)},
            opts=child,
        )
        config_mount, tmp_mount = wl.mount("config", CONFIG_DIR, read_only=True), wl.mount("tmp", "/tmp")

        container = wl.upstream_container(
            "pgbouncer",
            args.image,
            PGBOUNCER_UID,
            {"postgres": PORT},
            args.resources,
            command=["pgbouncer", f"{CONFIG_DIR}/pgbouncer.ini"],
            volume_mounts=[config_mount, tmp_mount],
            **wl.tcp_probes("postgres"),
        )
        alive = core.ProbeArgs(exec_=core.ExecActionArgs(command=["test", "-r", f"{CONFIG_DIR}/userlist.txt"]))
        reloader = wl.upstream_container(
            "config-reloader",
            args.image,
            PGBOUNCER_UID,
            {},
            wl.resource_amounts(requests=("10m", "16Mi"), limits=("50m", "32Mi")),
            command=["sh", "-c", reloader_script()],
            volume_mounts=[config_mount, tmp_mount],
            liveness_probe=alive,
            readiness_probe=alive,
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
                    # Only the settings a reload cannot apply: logins and servers arrive by the reloader.
                    wl.pod_annotations(wl.content_checksum(pgbouncer_settings(args))),
                    PGBOUNCER_UID,
                    containers=[container, reloader],
                    # The reloader signals PgBouncer (same UID, so no capability needed).
                    share_process_namespace=True,
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
        """Every caller logs in as the client user of the current password, or of the previous one while
        PgBouncer may not have reloaded yet; PgBouncer holds the server credentials."""
        secrets: dict[str, pulumi.Input[str]] = {
            USER_KEY: pulumi.Output.from_input(self._client_password).apply(client_user),
            PASSWORD_KEY: self._client_password,
        }
        if self._previous_client_password is not None:
            previous = pulumi.Output.from_input(self._previous_client_password)
            secrets[USER_KEY + PREVIOUS] = previous.apply(lambda pw: client_user(pw) if pw else "")
            secrets[PASSWORD_KEY + PREVIOUS] = previous
        return wl.Connection(
            peer=self.peer,
            env={"PGHOST": self.host, "PGPORT": str(PORT), "PGDATABASE": self.database},
            secrets=secrets,
            live_secrets=frozenset(secrets),
        )
