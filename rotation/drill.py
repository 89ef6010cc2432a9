"""The rotation drill (`make rotate-drill`): rotate every data store credential under load, with no
restart of a store or a client, and report requests sent / failed, each window's length, and
whether the old credential is refused afterwards.

Against local processes with the cluster's own pieces: redis-server, PostgreSQL and PgBouncer
(Debian's packages, apt-packages.txt), three Qdrant stand-ins (libs/sophia_testing/qdrant_auth_fake.py:
Qdrant's key check, no storage; no Qdrant can run here); the sidecars' scripts as the pods run
them (components/redis.py's acl-reloader, components/pgbouncer.py's config-reloader); the files
they read written the way the kubelet updates a Secret volume (all files at once, by a symlink
swap); and clients built as the services build theirs (sophia_chassis.rotation).

  Redis       the ACL file gets the new password beside the old one (and the exporter's and the
              reloader's own, rotated too); the clients' files change *first* (the order in which
              a client needs the old password as its fallback), then Redis's: the reloader loads it
              (logging in with its previous password, since Redis knows only that one yet). At the
              next rotation the old password leaves the file: refused.
  PgBouncer   the same for the client login, two users in the auth_file; the reloader sends SIGHUP.
  PostgreSQL  the server role behind PgBouncer (ESC's postgres rotator, two roles taking turns):
              the idle role gets a new password and LOGIN, PgBouncer's `[databases]` line names it
              and PgBouncer reloads; the old role then loses LOGIN: refused at PostgreSQL.
  Qdrant      one key per server: the replicas roll one at a time to the key the clients have held
              as QDRANT_API_KEY_NEXT since the rotation before, and only then are the clients'
              files moved on: the key from before is refused by every replica.

Each load worker holds a Redis, a PgBouncer and a Qdrant client and makes new connections every few
requests, so logins happen throughout every window. A request that errors or reads back a wrong
value is a failure.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import os
import pwd
import secrets
import shutil
import subprocess
import sys
import tempfile
import time
from contextlib import ExitStack
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import psycopg
import redis
import redis.asyncio as aredis
from qdrant_client import AsyncQdrantClient
from redis.backoff import NoBackoff
from redis.retry import Retry

from components import pgbouncer as pgb
from components import redis as rds
from components.qdrant import server_config
from sophia_chassis.rotation import (
    RotatedCredential,
    RotatedKeyAuth,
    psycopg_connection_class,
    redis_connection_class,
)

RECONNECT_EVERY = 5  # requests per connection: reconnect often, so credentials are used for new logins
RELOAD_INTERVAL = 0.1  # the sidecars' poll, seconds (10 in the cluster)
QDRANT_REPLICAS = 3


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _bin(name: str) -> str:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if found:
        return str(found[-1])
    path = shutil.which(name) or (f"/usr/sbin/{name}" if Path(f"/usr/sbin/{name}").exists() else None)
    if not path:
        raise SystemExit(f"{name} is missing: scripts/bootstrap.sh installs it (apt-packages.txt)")
    return path


def _wait(check, what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            if check():
                return
        except Exception:  # noqa: BLE001  (not up yet)
            pass
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what} did not get there in {timeout} s")
        time.sleep(0.02)


class SecretVolume:
    """A directory as the kubelet keeps a mounted Secret: each key a symlink into `..data`, which is
    swapped atomically to a new timestamped directory, so a reader sees all old or all new files."""

    def __init__(self, path: Path, owner: str | None = None):
        self.path, self.owner, self.n = path, owner, 0
        path.mkdir()
        self._chown(path)

    def _chown(self, p: Path) -> None:
        if self.owner:
            shutil.chown(p, self.owner, self.owner)

    def write(self, values: dict[str, str]) -> None:
        self.n += 1
        stamp = self.path / f"..{self.n}"
        stamp.mkdir()
        for key, value in values.items():
            (stamp / key).write_text(value)
            self._chown(stamp / key)
        self._chown(stamp)
        tmp = self.path / "..data_tmp"
        tmp.symlink_to(stamp.name)
        tmp.replace(self.path / "..data")
        for key in values:
            link = self.path / key
            if not link.is_symlink():
                link.symlink_to(f"..data/{key}")


@dataclass
class Stack:
    """The stores, their sidecars and their Secret volumes, in a temporary directory."""

    work: Path
    stack: ExitStack
    postgres: bool = True  # (the control rotates Redis only)
    user: str | None = field(init=False)

    def __post_init__(self) -> None:
        self.user = "postgres" if os.geteuid() == 0 else None
        self.procs: dict[str, subprocess.Popen] = {}
        self._redis()
        self.bouncer: subprocess.Popen | None = None
        if self.postgres:
            self._postgres()
            self._pgbouncer()
        self.qdrant_ports = [free_port() for _ in range(QDRANT_REPLICAS)]
        self.qdrant_ready: set[int] = set()

    def _process(self, name: str, argv: list[str], user: str | None = None) -> subprocess.Popen:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=user)
        self.procs[name] = proc

        def stop() -> None:
            if proc.poll() is None:
                proc.terminate()
                proc.wait(20)

        self.stack.callback(stop)
        return proc

    # Redis: the acl Secret volume (users.acl, reloader-password) and the acl-reloader sidecar.
    def _redis(self) -> None:
        self.redis_port = free_port()
        self.redis_acl = SecretVolume(self.work / "redis-acl")
        self.exporter, self.drill_password = secrets.token_hex(16), secrets.token_hex(16)
        self.write_redis({"svc": "initial-redis-password"}, self.exporter)
        self._process(
            "redis-server",
            [_bin("redis-server"), "--port", str(self.redis_port), "--bind", "127.0.0.1"]
            + ["--aclfile", str(self.redis_acl.path / "users.acl"), "--save", "", "--appendonly", "no"],
        )
        _wait(lambda: self.redis_admin().ping(), "redis-server")
        script = rds.reloader_script(acl_dir=str(self.redis_acl.path), port=self.redis_port, interval=RELOAD_INTERVAL)
        self._process("acl-reloader", ["bash", "-c", script])

    def write_redis(
        self, users: dict[str, str], exporter: str, previous: dict[str, str] | None = None, exporter_previous=None
    ) -> None:
        self.exporter = exporter
        self.redis_acl.write(
            {
                # + the drill's own user, to read the ACL LOG
                "users.acl": rds.acl_file(users, exporter, previous=previous, exporter_previous=exporter_previous)
                + f"user drill on #{hashlib.sha256(self.drill_password.encode()).hexdigest()} +@all\n",
                "reloader-password": rds.reloader_password(exporter),
            }
        )

    def redis_refused_logins(self, user: str) -> int:
        """Logins as `user` Redis refused so far (its ACL LOG, where such entries are counted)."""
        with redis.Redis(port=self.redis_port, username="drill", password=self.drill_password) as client:
            log = client.execute_command("ACL", "LOG", "128")
        entries = [dict(zip(e[::2], e[1::2], strict=True)) if isinstance(e, list) else e for e in log]
        return sum(int(e[b"count"]) for e in entries if e[b"reason"] == b"auth" and e[b"username"] == user.encode())

    def redis_admin(self) -> redis.Redis:
        """As the exporter (reads INFO), with its current password."""
        return redis.Redis(port=self.redis_port, username=rds.EXPORTER_USER, password=self.exporter)

    # PostgreSQL with password authentication over TCP (the drill's own superuser on the socket).
    def _postgres(self) -> None:
        data, sock = self.work / "pg", self.work / "sock"
        for d in (data, sock):
            d.mkdir()
            if self.user:
                shutil.chown(d, self.user, self.user)
        subprocess.run(
            [_bin("initdb"), "-D", str(data), "-U", "drill", "--auth-local=trust", "--auth-host=scram-sha-256"],
            check=True,
            stdout=subprocess.DEVNULL,
            user=self.user,
        )
        self.pg_port, self.sock = free_port(), str(sock)
        self._process(
            "postgres",
            [_bin("postgres"), "-D", str(data), "-p", str(self.pg_port), "-h", "127.0.0.1", "-k", str(sock)]
            + ["-c", "fsync=off"],
            user=self.user,
        )
        _wait(lambda: self.superuser().close() or True, "PostgreSQL")
        with self.superuser() as db:
            db.execute("CREATE DATABASE sophia")
        with self.superuser("sophia") as db:
            db.execute("CREATE ROLE sophia_app NOLOGIN")
            db.execute("CREATE TABLE probe (id int PRIMARY KEY, value text)")
            db.execute("GRANT SELECT, INSERT, UPDATE ON probe TO sophia_app")
            for role, login in (("sophia_app_a", "LOGIN"), ("sophia_app_b", "NOLOGIN")):
                db.execute(f"CREATE ROLE {role} {login} PASSWORD 'initial-{role}' IN ROLE sophia_app")

    def superuser(self, db: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.sock, port=self.pg_port, user="drill", dbname=db, autocommit=True)

    # PgBouncer: its config Secret volume (pgbouncer.ini with the server role, userlist.txt with the
    # client logins) and the config-reloader sidecar.
    def _pgbouncer(self) -> None:
        self.bouncer_port = free_port()
        self.pidfile = self.work / "pgbouncer.pid"
        self.bouncer_config = SecretVolume(self.work / "pgbouncer", owner=self.user)
        self.write_bouncer(("sophia_app_a", "initial-sophia_app_a"), "initial-client")
        self.bouncer = self._process(
            "pgbouncer", [_bin("pgbouncer"), str(self.bouncer_config.path / "pgbouncer.ini")], user=self.user
        )
        _wait(lambda: self.pidfile.exists(), "PgBouncer's pidfile")
        user = pgb.client_user("initial-client")
        _wait(lambda: self.bouncer_login(user, "initial-client").close() or True, "PgBouncer")
        script = pgb.reloader_script(
            config_dir=str(self.bouncer_config.path), pidfile=str(self.pidfile), interval=RELOAD_INTERVAL
        )
        self._process("config-reloader", ["sh", "-c", script], user=self.user)

    def write_bouncer(self, server: tuple[str, str], client: str, client_previous: str | None = None) -> None:
        role, password = server
        # components/pgbouncer.py's settings, on loopback and without TLS to a local server.
        ini = (
            f"[databases]\nsophia = host=127.0.0.1 port={self.pg_port} dbname=sophia user={role} password={password}\n\n"
            f"[pgbouncer]\nlisten_addr = 127.0.0.1\nlisten_port = {self.bouncer_port}\nauth_type = scram-sha-256\n"
            f"auth_file = {self.bouncer_config.path / 'userlist.txt'}\npool_mode = transaction\n"
            f"max_client_conn = 200\ndefault_pool_size = 10\nunix_socket_dir =\n"
            f"pidfile = {self.pidfile}\nlogfile = {self.work / 'pgbouncer.log'}\n"
        )
        self.bouncer_config.write({"pgbouncer.ini": ini, "userlist.txt": pgb.userlist(client, client_previous)})

    def bouncer_login(self, user: str, password: str) -> psycopg.Connection:
        return psycopg.connect(
            host="127.0.0.1",
            port=self.bouncer_port,
            user=user,
            password=password,
            dbname="sophia",
            autocommit=True,
            prepare_threshold=None,
            connect_timeout=5,
        )

    # Qdrant: one stand-in process per replica, reading its config at start.
    def start_qdrant(self, i: int, key: str) -> None:
        config = self.work / f"qdrant-{i}.yaml"
        config.write_text(server_config(key, distributed=True))
        port = self.qdrant_ports[i]
        self._process(f"qdrant-{i}", [sys.executable, "-m", "sophia_testing.qdrant_auth_fake", str(config), str(port)])
        _wait(lambda: httpx.get(f"http://127.0.0.1:{port}/readyz", verify=False).status_code == 200, f"qdrant-{i}")
        self.qdrant_ready.add(i)

    def stop_qdrant(self, i: int) -> None:
        # Out of the Service's endpoints first, as a terminating pod, and SIGTERM once the requests
        # already sent to it are answered (Qdrant itself finishes them on SIGTERM; the stand-in does not).
        self.qdrant_ready.discard(i)
        time.sleep(0.2)
        proc = self.procs.pop(f"qdrant-{i}")
        proc.terminate()
        proc.wait(10)


@dataclass
class Load:
    stack: Stack
    client_files: Path
    workers: int
    sent: dict[str, int] = field(default_factory=lambda: {"redis": 0, "postgres": 0, "qdrant": 0})
    failed: dict[str, int] = field(default_factory=lambda: {"redis": 0, "postgres": 0, "qdrant": 0})
    errors: list[str] = field(default_factory=list)
    stop: bool = False

    def count(self, store: str, ok: bool, error: str | None = None) -> None:
        self.sent[store] += 1
        if not ok:
            self.failed[store] += 1
            if error and sum(e.startswith(store) for e in self.errors) < 4:
                self.errors.append(f"{store}: {error}"[:300])

    async def worker(self, n: int) -> None:
        """A service's clients, built as the services build them (sophia_chassis.rotation)."""
        files = str(self.client_files)
        r = aredis.Redis.from_url(
            f"redis://svc@127.0.0.1:{self.stack.redis_port}/0",
            connection_class=redis_connection_class(RotatedCredential(("REDIS_PASSWORD",), directory=files)),
            socket_timeout=5,
        )
        pg_class = psycopg_connection_class(RotatedCredential(("PGUSER", "PGPASSWORD"), directory=files))
        auth = RotatedKeyAuth(RotatedCredential(("QDRANT_API_KEY",), other="_NEXT", directory=files))
        qdrant = {
            i: AsyncQdrantClient(url=f"http://127.0.0.1:{port}", auth=auth, timeout=5, check_compatibility=False)
            for i, port in enumerate(self.stack.qdrant_ports)
        }
        db, i = None, 0
        while not self.stop:
            i += 1
            value = f"{n}-{i}"
            if i % RECONNECT_EVERY == 1:
                await r.connection_pool.disconnect()
                if db is not None:
                    await db.close()
                    db = None
                try:
                    if not self.stack.bouncer:
                        raise LookupError
                    db = await pg_class.connect(
                        f"host=127.0.0.1 port={self.stack.bouncer_port} dbname=sophia connect_timeout=5",
                        autocommit=True,
                        prepare_threshold=None,
                    )
                except LookupError:
                    pass
                except psycopg.Error as exc:
                    self.count("postgres", False, f"login: {exc}")
            try:
                await r.set(f"drill:{n}", value)
                self.count("redis", await r.get(f"drill:{n}") == value.encode(), "read back a wrong value")
            except redis.RedisError as exc:
                self.count("redis", False, str(exc))
            if db is not None:
                try:
                    await db.execute(
                        "INSERT INTO probe VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET value = excluded.value",
                        (n, value),
                    )
                    got = await (await db.execute("SELECT value FROM probe WHERE id = %s", (n,))).fetchone()
                    self.count("postgres", got == (value,), "read back a wrong value")
                except psycopg.Error as exc:
                    self.count("postgres", False, str(exc))
                    db = None
            ready = sorted(self.stack.qdrant_ready)
            if ready:  # the Service's endpoints: the replicas that are up
                try:
                    await qdrant[ready[(n + i) % len(ready)]].get_collections()
                    self.count("qdrant", True)
                except Exception as exc:  # noqa: BLE001  (any failure of the request is one)
                    self.count("qdrant", False, str(exc))
            await asyncio.sleep(0.002)
        await r.aclose()
        if db is not None:
            await db.close()
        for client in qdrant.values():
            await client.close()


def redis_accepts(stack: Stack, user: str, password: str) -> bool:
    client = redis.Redis(port=stack.redis_port, username=user, password=password, retry=Retry(NoBackoff(), 0))
    try:
        return client.ping()
    except redis.AuthenticationError:
        return False
    finally:
        client.close()


def pg_accepts(port: int, user: str, password: str) -> bool:
    try:
        psycopg.connect(host="127.0.0.1", port=port, user=user, password=password, dbname="sophia").close()
        return True
    except psycopg.OperationalError:
        return False


def qdrant_status(port: int, key: str) -> int:
    with httpx.Client(verify=False) as client:  # (plain HTTP: no CA bundle to load)
        return client.get(f"http://127.0.0.1:{port}/collections", headers={"api-key": key}).status_code


async def _until(check, what: str, timeout: float = 30) -> None:
    """Polls `check` off the event loop (a blocked loop would time the load's own logins out)."""
    deadline = time.monotonic() + timeout
    while not await asyncio.to_thread(check):
        if time.monotonic() > deadline:
            raise RuntimeError(f"{what}: not within {timeout} s")
        await asyncio.sleep(0.02)


async def _run(stack: Stack, client_files: SecretVolume, seconds: float, workers: int, unsafe: bool) -> dict:
    loads: list[Load] = []
    try:
        return await _phases(stack, client_files, seconds, workers, unsafe, loads)
    finally:
        for load in loads:  # a phase that failed must not leave the load running
            load.stop = True


async def _phases(
    stack: Stack, client_files: SecretVolume, seconds: float, workers: int, unsafe: bool, loads: list
) -> dict:
    lag = 5 * RELOAD_INTERVAL  # how late the store's files arrive after the clients' (the kubelet's syncs)
    pw0, ex0, c0 = "initial-redis-password", stack.exporter, "initial-client"
    k0, k1 = secrets.token_urlsafe(24), secrets.token_urlsafe(24)

    def files(redis_pw, redis_prev, client, client_prev, qkey, qnext) -> dict[str, str]:
        return {
            "REDIS_PASSWORD": redis_pw,
            "REDIS_PASSWORD_PREVIOUS": redis_prev or "",
            "PGUSER": pgb.client_user(client),
            "PGPASSWORD": client,
            "PGUSER_PREVIOUS": pgb.client_user(client_prev) if client_prev else "",
            "PGPASSWORD_PREVIOUS": client_prev or "",
            "QDRANT_API_KEY": qkey,
            "QDRANT_API_KEY_NEXT": qnext,
        }

    # As after an earlier rotation: Qdrant runs k0 and its clients already hold k1 as the next key.
    client_files.write(files(pw0, None, c0, None, k0, k1))
    for i in range(0 if unsafe else QDRANT_REPLICAS):  # (the control rotates Redis only)
        stack.start_qdrant(i, k0)
    load = Load(stack, client_files.path, workers)
    loads.append(load)
    run_id, bouncer_pid = stack.redis_admin().info("server")["run_id"], stack.bouncer.pid if stack.bouncer else 0
    tasks = [asyncio.create_task(load.worker(n)) for n in range(workers)]
    await asyncio.sleep(seconds)  # steady state before
    out: dict = {}

    # Redis and the PgBouncer client login: the clients' files first, the stores' after (the order
    # that needs the clients' fallback); at the next rotation the old value leaves the stores.
    pw1, ex1, c1 = secrets.token_urlsafe(24), secrets.token_hex(16), secrets.token_urlsafe(24)
    t0 = time.monotonic()
    if unsafe:  # the control: Redis's password replaced in place, the clients told half a second later
        stack.write_redis({"svc": pw1}, ex0)
        await asyncio.sleep(0.5)
        client_files.write(files(pw1, None, c0, None, k0, k1))
        await _until(lambda: redis_accepts(stack, "svc", pw1), "redis loaded the ACL")
    else:
        denied = stack.redis_refused_logins("svc")
        bouncer_log = (stack.work / "pgbouncer.log").read_text()
        client_files.write(files(pw1, pw0, c1, c0, k0, k1))
        # The stores' files arrive later, once each store has refused a login with a new value (and
        # the client gone on with the previous one): the order that needs the clients' fallback.
        await asyncio.sleep(lag)
        await _until(
            lambda: (
                stack.redis_refused_logins("svc") > denied
                and "password authentication failed" in (stack.work / "pgbouncer.log").read_text()[len(bouncer_log) :]
            ),
            "a login with the new values",
        )
        fallbacks = {
            "redis": stack.redis_refused_logins("svc") - denied,
            "pgbouncer": (stack.work / "pgbouncer.log")
            .read_text()[len(bouncer_log) :]
            .count(
                "password authentication failed"  # (one ERROR line per refused login)
            ),
        }
        stack.write_redis({"svc": pw1}, ex1, previous={"svc": pw0}, exporter_previous=ex0)
        stack.write_bouncer(("sophia_app_a", "initial-sophia_app_a"), c1, c0)
        await _until(lambda: redis_accepts(stack, "svc", pw1), "redis loaded the new ACL")
        await _until(lambda: pg_accepts(stack.bouncer_port, pgb.client_user(c1), c1), "pgbouncer reloaded")
        await asyncio.sleep(seconds / 2)  # both valid, clients on the new value
        client_files.write(files(pw1, None, c1, None, k0, k1))
        await asyncio.sleep(lag)
        stack.write_redis({"svc": pw1}, ex1)
        stack.write_bouncer(("sophia_app_a", "initial-sophia_app_a"), c1)
        await _until(lambda: not redis_accepts(stack, "svc", pw0), "redis dropped the old password")
        await _until(lambda: not pg_accepts(stack.bouncer_port, pgb.client_user(c0), c0), "pgbouncer dropped it")
    out["redis"] = {
        "window_seconds": round(time.monotonic() - t0, 2),
        "new_value_refused_then_previous_used": None if unsafe else fallbacks["redis"],
        "old_password_rejected": not redis_accepts(stack, "svc", pw0),
        "new_password_accepted": redis_accepts(stack, "svc", pw1),
        "old_exporter_password_rejected": not redis_accepts(stack, rds.EXPORTER_USER, ex0),
    }
    if unsafe:
        await asyncio.sleep(seconds)
        return await _finish(stack, load, tasks, run_id, bouncer_pid, out)
    out["pgbouncer_client"] = {
        "window_seconds": out["redis"]["window_seconds"],
        "old_login_rejected": not pg_accepts(stack.bouncer_port, pgb.client_user(c0), c0),
        "new_value_refused_then_previous_used": fallbacks["pgbouncer"],
    }

    # PostgreSQL's server role behind PgBouncer (ESC's postgres rotator: the idle role takes over).
    t1 = time.monotonic()
    old_role, new_role = ("sophia_app_a", "initial-sophia_app_a"), ("sophia_app_b", secrets.token_urlsafe(24))
    with stack.superuser("sophia") as db:
        db.execute(f"ALTER ROLE {new_role[0]} LOGIN PASSWORD '{new_role[1]}'")
    stack.write_bouncer(new_role, c1)
    await asyncio.sleep(lag + seconds / 2)  # reloaded; pooled server connections move as they are released
    with stack.superuser("sophia") as db:
        db.execute(f"ALTER ROLE {old_role[0]} NOLOGIN PASSWORD '{secrets.token_urlsafe(24)}'")
    out["postgres_server"] = {
        "window_seconds": round(time.monotonic() - t1, 2),
        "old_role": old_role[0],
        "new_role": new_role[0],
        "old_credential_rejected": not pg_accepts(stack.pg_port, *old_role),
    }

    # Qdrant: replicas roll to k1 (the clients' next key) one at a time, highest ordinal first, as a
    # StatefulSet does; then the clients' Secret moves on to (k1, k2).
    t2 = time.monotonic()
    k2 = secrets.token_urlsafe(24)
    for i in reversed(range(QDRANT_REPLICAS)):
        await asyncio.to_thread(stack.stop_qdrant, i)
        await asyncio.to_thread(stack.start_qdrant, i, k1)
        await asyncio.sleep(seconds / 4)
    client_files.write(files(pw1, None, c1, None, k1, k2))
    out["qdrant"] = {
        "window_seconds": round(time.monotonic() - t2, 2),
        "replicas": QDRANT_REPLICAS,
        "old_key_rejected": all(qdrant_status(p, k0) == 403 for p in stack.qdrant_ports),
        "new_key_accepted": all(qdrant_status(p, k1) == 200 for p in stack.qdrant_ports),
    }

    await asyncio.sleep(seconds)  # steady state after
    return await _finish(stack, load, tasks, run_id, bouncer_pid, out)


async def _finish(stack: Stack, load: Load, tasks: list, run_id: str, bouncer_pid: int, out: dict) -> dict:
    load.stop = True
    await asyncio.gather(*tasks)
    admin = stack.redis_admin()
    out.update(
        requests_sent=sum(load.sent.values()),
        requests_failed=sum(load.failed.values()),
        by_store={s: {"sent": load.sent[s], "failed": load.failed[s]} for s in load.sent},
        errors=load.errors,
        restarted={
            "redis": admin.info("server")["run_id"] != run_id,
            "pgbouncer": bool(stack.bouncer) and (stack.bouncer.poll() is not None or stack.bouncer.pid != bouncer_pid),
            "clients": False,  # the workers run from start to end in this process
        },
    )
    return out


def drill(seconds: float = 2.0, workers: int = 8, unsafe: bool = False) -> dict:
    """`unsafe`: the control experiment, a Redis rotation without a window (the old password replaced
    in place, clients told half a second later), to show that the load notices a broken rotation."""
    with tempfile.TemporaryDirectory(prefix="sophia-drill-") as tmp, ExitStack() as stack_ctx:
        work = Path(tmp)
        if os.geteuid() == 0:
            os.chown(work, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
        stack = Stack(work, stack_ctx, postgres=not unsafe)
        client_files = SecretVolume(work / "service-secrets")
        return asyncio.run(_run(stack, client_files, seconds, workers, unsafe))


def passed(result: dict) -> bool:
    if "qdrant" not in result:  # the control rotates Redis only: never a pass
        return False
    r, c, p, q = result["redis"], result["pgbouncer_client"], result["postgres_server"], result["qdrant"]
    return (
        result["requests_failed"] == 0
        and r["old_password_rejected"]
        and r["new_password_accepted"]
        and r["old_exporter_password_rejected"]
        and c["old_login_rejected"]
        and p["old_credential_rejected"]
        and q["old_key_rejected"]
        and q["new_key_accepted"]
        and not any(result["restarted"].values())
    )


def report(result: dict) -> list[str]:
    restarted = result["restarted"]
    lines = [
        f"requests sent:   {result['requests_sent']}  ({result['by_store']})",
        f"requests failed: {result['requests_failed']}",
    ]
    if r := result.get("redis"):
        lines.append(
            f"redis ACL user svc: window {r['window_seconds']} s (two passwords valid; clients told first, "
            f"{r['new_value_refused_then_previous_used']} logins fell back), old password rejected: "
            f"{r['old_password_rejected']} (exporter's: {r['old_exporter_password_rejected']}), "
            f"redis restarted: {restarted['redis']}"
        )
    if c := result.get("pgbouncer_client"):
        lines.append(
            f"pgbouncer client login: window {c['window_seconds']} s (two users in the auth_file; "
            f"{c['new_value_refused_then_previous_used']} logins fell back), "
            f"old login rejected: {c['old_login_rejected']}, pgbouncer restarted: {restarted['pgbouncer']}"
        )
    if p := result.get("postgres_server"):
        lines.append(
            f"postgres server role: window {p['window_seconds']} s ({p['old_role']} and {p['new_role']} valid), "
            f"old role rejected: {p['old_credential_rejected']}"
        )
    if q := result.get("qdrant"):
        lines.append(
            f"qdrant API key: window {q['window_seconds']} s ({q['replicas']} replicas rolled, clients holding "
            f"both keys), old key rejected by every replica: {q['old_key_rejected']}"
        )
    lines += [f"  error: {e}" for e in result["errors"]]
    return lines


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rotate every data store credential under load")
    parser.add_argument("--seconds", type=float, default=3.0, help="steady load before and after, per phase")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--unsafe", action="store_true", help="control: rotate Redis without a window (must fail)")
    args = parser.parse_args(argv)
    result = drill(args.seconds, args.workers, args.unsafe)
    print("\n".join(report(result)))
    ok = passed(result)
    print("drill: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
