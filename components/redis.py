"""Redis as the platform's cache and stream broker (official `redis` image).

Auth is on: the `default` user is disabled and each calling service gets its own ACL
user, stored hashed in the ACL file. `maxmemory` with `volatile-lru`: only keys with a TTL
are evicted (the embedding cache's entries all carry a 24 h TTL), never state without one
(mcp-github's index state, mcp-agents' task stream), which an eviction would silently
corrupt; a full Redis refuses writes instead. Persistence is a per-stack choice. A redis_exporter sidecar serves metrics with its own read-only user.
"""

from __future__ import annotations

import dataclasses
import hashlib
import hmac
import json
from collections.abc import Mapping
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import StatefulSetSpecArgs
from pulumi_kubernetes.core.v1 import ExecActionArgs, HTTPGetActionArgs, ProbeArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.backup import BackupJob, BackupTarget
from components.spec import Resources

PORT = 6379
METRICS_PORT = 9121
EXPORTER_USER = "exporter"
# The backup job's user: takes the RDB over the replication protocol, reads no key by command.
BACKUP_USER = "backup"
BACKUP_PERMISSIONS = "resetkeys -@all +sync +replconf +ping"
# The acl-reloader sidecar's user: may set and delete ACL users and nothing else, so a changed
# Secret (a rotation) reaches Redis without a restart. Its password derives from the exporter's.
# (Not ACL LOAD: it disconnects every client of a user whose definition changed, a password
# added included; ACL SETUSER leaves them connected.)
RELOADER_USER = "acl-reloader"
RELOADER_PERMISSIONS = "resetkeys -@all +acl|setuser +acl|deluser +acl|users +ping"
RELOAD_INTERVAL_SECONDS = 10
ACL_DIR = "/etc/redis/acl"
# The secret key (a file under the secrets wl.mount) holding a caller's password, and the one holding
# the password Redis also accepts during a rotation's window (sophia_chassis.rotation tries both).
PASSWORD_KEY = "REDIS_PASSWORD"
PREVIOUS_PASSWORD_KEY = "REDIS_PASSWORD_PREVIOUS"
REDIS_UID = wl.RUN_AS  # any UID works: the image needs only /data writable (fsGroup)
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
    eviction_policy: str = "volatile-lru"
    persistence: bool = False
    storage_size: str = "5Gi"
    storage_class: str | None = None
    resources: Resources = wl.resource_amounts(requests=("100m", "384Mi"), limits=("1", "512Mi"))
    exporter_resources: Resources = wl.resource_amounts(requests=("20m", "32Mi"), limits=("100m", "64Mi"))
    image: str = "redis:8.2.2-bookworm"
    exporter_image: str = "oliver006/redis_exporter:v1.77.0"
    # Scheduled RDB copies to object storage (sophia:backup); the job logs in as BACKUP_USER.
    backup: BackupTarget | None = None
    backup_password: pulumi.Input[str] | None = None
    # Passwords still accepted beside a user's current one: the window of a rotation in which pods
    # holding the old password keep working (Redis ACL users may have several passwords).
    previous_passwords: Mapping[str, pulumi.Input[str]] = dataclasses.field(default_factory=dict)
    # The exporter's password before the last rotation: accepted (with the reloader's, derived from it)
    # until the reloader has told redis_exporter to re-read its password file.
    exporter_previous_password: pulumi.Input[str] | None = None


def reloader_password(exporter_password: str) -> str:
    return hmac.new(exporter_password.encode(), RELOADER_USER.encode(), hashlib.sha256).hexdigest()


def acl_file(
    users: Mapping[str, str],
    exporter_password: str,
    backup_password: str | None = None,
    previous: Mapping[str, str] | None = None,
    exporter_previous: str | None = None,
) -> str:
    """Redis ACL file; passwords only as SHA-256 (`#<hex>`), so the file never holds them. A user
    with a `previous` password accepts both (a rotation's window); so do the exporter and the
    reloader with `exporter_previous`."""
    digest = lambda pw: hashlib.sha256(pw.encode()).hexdigest()  # noqa: E731

    def hashes(pw: str, old: str | None) -> str:
        return f"#{digest(pw)}" + (f" #{digest(old)}" if old and old != pw else "")

    previous = previous or {}
    old_reloader = reloader_password(exporter_previous) if exporter_previous else None
    lines = ["user default off"]
    lines += [
        f"user {user} on {hashes(pw, previous.get(user))} {SERVICE_PERMISSIONS}" for user, pw in sorted(users.items())
    ]
    lines.append(f"user {EXPORTER_USER} on {hashes(exporter_password, exporter_previous)} {EXPORTER_PERMISSIONS}")
    lines.append(
        f"user {RELOADER_USER} on {hashes(reloader_password(exporter_password), old_reloader)} {RELOADER_PERMISSIONS}"
    )
    if backup_password:
        lines.append(f"user {BACKUP_USER} on #{digest(backup_password)} {BACKUP_PERMISSIONS}")
    return "\n".join(lines) + "\n"


def reloader_script(
    acl_dir: str = ACL_DIR,
    port: int = PORT,
    interval: float = RELOAD_INTERVAL_SECONDS,
    exporter_port: int | None = None,
) -> str:
    """The acl-reloader sidecar (bash): when the mounted ACL file changes (a Secret volume is updated
    in place), each of its `user` lines is applied as `ACL SETUSER <name> reset <rules>` and users no
    longer in it are deleted; connected clients stay connected. Its own password may have rotated in
    the same update, and Redis knows the new one only once applied: so it logs in with the file's
    password, else the one that worked before. Then redis_exporter re-reads its password file
    (`/-/reload`), so the exporter moves too."""
    exporter = (
        f"""
      {{ exec 3<>/dev/tcp/127.0.0.1/{exporter_port} && printf 'GET /-/reload HTTP/1.0\\r\\n\\r\\n' >&3 && cat <&3 >/dev/null; }} || echo "exporter reload failed" >&2
      exec 3>&-"""
        if exporter_port
        else ""
    )
    return f"""acl={acl_dir}/users.acl
cli() {{ REDISCLI_AUTH="$1" redis-cli -h 127.0.0.1 -p {port} --user {RELOADER_USER} --no-auth-warning 2>&1; }}
# Every reply OK (a refused login or a bad rule is not).
all_ok() {{ [ -n "$1" ] && ! printf '%s\\n' "$1" | grep -qvx OK; }}
apply() {{
  out=$(sed -nE 's/^user ([^ ]+) /ACL SETUSER \\1 reset /p' "$acl" | cli "$1") && all_ok "$out" || return 1
  wanted=" $(sed -nE 's/^user ([^ ]+) .*/\\1/p' "$acl" | tr '\\n' ' ')"
  for u in $(echo ACL USERS | cli "$1"); do
    case "$wanted" in *" $u "*) ;; *) echo "ACL DELUSER $u" | cli "$1" ;; esac
  done
}}
last=$(cksum < "$acl")
auth=$(cat {acl_dir}/reloader-password)
while sleep {interval}; do
  now=$(cksum < "$acl")
  [ "$now" = "$last" ] && continue
  new=$(cat {acl_dir}/reloader-password)
  for pw in "$new" "$auth"; do
    if apply "$pw"; then
      last=$now auth=$new
      echo "ACL applied"{exporter}
      break
    fi
  done
done
"""


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
                f"aclfile {ACL_DIR}/users.acl",
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
        w = wl.Workload("redis", args.namespace, "cache")
        self._users, self._previous = args.users, args.previous_passwords

        config = k8s.core.v1.ConfigMap(
            f"{name}-config", metadata=w.meta("redis-config"), data={"redis.conf": redis_conf(args)}, opts=child
        )
        acl = pulumi.Output.all(
            users=pulumi.Output.all(**args.users) if args.users else {},
            exporter=args.exporter_password,
            backup=args.backup_password if args.backup else None,
            previous=pulumi.Output.all(**args.previous_passwords) if args.previous_passwords else {},
            exporter_previous=args.exporter_previous_password,
        ).apply(lambda v: acl_file(v["users"], v["exporter"], v["backup"], v["previous"], v["exporter_previous"]))
        reloader_auth = pulumi.Output.from_input(args.exporter_password).apply(reloader_password)
        exporter_auth = pulumi.Output.from_input(args.exporter_password).apply(
            lambda pw: json.dumps({f"redis://localhost:{PORT}": pw})
        )
        secret = k8s.core.v1.Secret(
            f"{name}-acl",
            metadata=w.meta("redis-acl"),
            type="Opaque",
            string_data={
                "users.acl": pulumi.Output.secret(acl),
                "exporter-passwords.json": pulumi.Output.secret(exporter_auth),
                "reloader-password": pulumi.Output.secret(reloader_auth),
            },
            opts=child,
        )

        volumes = [
            wl.config_volume("config", config),
            wl.secret_volume("acl", secret),
            wl.scratch_volume("tmp", "64Mi"),
        ]
        claims = None
        if args.persistence:
            claims = [wl.volume_claim("data", w.labels, args.storage_size, args.storage_class)]
        else:
            volumes.append(wl.scratch_volume("data", "1Gi"))

        acl_mount = wl.mount("acl", ACL_DIR, read_only=True)
        redis = wl.upstream_container(
            "redis",
            args.image,
            REDIS_UID,
            {"redis": PORT},
            args.resources,
            command=["redis-server", "/etc/redis/redis.conf"],
            volume_mounts=[
                wl.mount("config", "/etc/redis/redis.conf", sub_path="redis.conf"),
                acl_mount,
                wl.mount("data", "/data"),
                wl.mount("tmp", "/tmp"),
            ],
            **wl.tcp_probes("redis"),
        )
        health = ProbeArgs(http_get=HTTPGetActionArgs(path="/health", port="metrics"), period_seconds=10)
        exporter = wl.upstream_container(
            "exporter",
            args.exporter_image,
            EXPORTER_UID,
            {"metrics": METRICS_PORT},
            args.exporter_resources,
            args=[
                f"--redis.addr=redis://localhost:{PORT}",
                f"--redis.user={EXPORTER_USER}",
                f"--redis.password-file={ACL_DIR}/exporter-passwords.json",
            ],
            liveness_probe=health,
            readiness_probe=health,
            volume_mounts=[acl_mount],
        )
        # Changes to the ACL file reach Redis without a restart: the acl-reloader sidecar runs ACL LOAD
        # when the kubelet has updated the mounted Secret, then has redis_exporter re-read its
        # password. Only the server config rolls the pod.
        reloader = wl.upstream_container(
            "acl-reloader",
            args.image,
            REDIS_UID,
            {},
            args.exporter_resources,
            command=["bash", "-c", reloader_script(exporter_port=METRICS_PORT)],
            volume_mounts=[acl_mount],
            # Alive while it can read what it watches; never gates the pod's readiness on Redis.
            liveness_probe=ProbeArgs(exec_=ExecActionArgs(command=["test", "-r", f"{ACL_DIR}/users.acl"])),
            readiness_probe=ProbeArgs(exec_=ExecActionArgs(command=["test", "-r", f"{ACL_DIR}/users.acl"])),
        )
        # Not the passwords: they reach the running pod through the reloader.
        checksum = wl.content_checksum(redis_conf(args))
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=w.meta(annotations=wl.UPSTREAM_IMAGE_SKIP),
            spec=StatefulSetSpecArgs(
                service_name=f"{w.app}-headless",  # the governing Service must be headless
                replicas=1,
                selector=LabelSelectorArgs(match_labels=w.selector),
                volume_claim_templates=claims,
                template=wl.pod_template(
                    w.labels,
                    wl.pod_annotations(checksum, METRICS_PORT),
                    REDIS_UID,
                    containers=[redis, exporter, reloader],
                    volumes=volumes,
                    termination_grace_period_seconds=30,
                ),
            ),
            opts=child,
        )
        self.service = wl.cluster_service(
            f"{name}-service", w.meta(), w.selector, {"redis": PORT, "metrics": METRICS_PORT}, child
        )
        wl.cluster_service(
            f"{name}-headless", w.meta(f"{w.app}-headless"), w.selector, {"redis": PORT}, child, cluster_ip="None"
        )
        wl.disruption_budget(f"{name}-pdb", w.meta(), w.selector, child)
        backup = None
        if args.backup is not None:
            backup = BackupJob(
                f"{name}-backup",
                w,
                "redis",
                args.backup,
                env={"REDIS_HOST": w.host, "REDIS_PORT": str(PORT), "REDIS_USERNAME": BACKUP_USER},
                secrets={"REDIS_PASSWORD": args.backup_password},
                store_port=PORT,
                scratch="2Gi",
                opts=child,
            )
        # No egress at all: Redis talks to nobody.
        wl.network_policy(
            f"{name}-netpol",
            w.meta(),
            w.selector,
            ingress=wl.callers_ingress(sorted(args.users), args.services_namespace, PORT)
            + wl.metrics_ingress(args.metrics_namespace, METRICS_PORT)
            + ([backup.ingress(PORT)] if backup else []),
            egress=[],
            opts=child,
        )

        self.host = w.host
        self.url = f"redis://{self.host}:{PORT}/0"
        self.peer = wl.Peer(w.namespace, w.selector, PORT)
        self.register_outputs({"host": self.host, "url": self.url, "users": sorted(args.users)})

    def connection(self, caller: str) -> wl.Connection:
        """A caller logs in as its own ACL user (the service's name) with its own password, or the one
        before it while Redis may not have loaded the new ACL yet; both files change without a roll."""
        previous = self._previous.get(caller)
        secrets = {PASSWORD_KEY: self._users[caller], **({PREVIOUS_PASSWORD_KEY: previous} if previous else {})}
        return wl.Connection(
            peer=self.peer,
            env={"REDIS_URL": f"redis://{caller}@{self.host}:{PORT}/0"},
            secrets=secrets,
            live_secrets=frozenset(secrets),
        )
