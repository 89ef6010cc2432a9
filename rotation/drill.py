"""The rotation drill (`make rotate-drill`): rotate the credentials services use for Redis and for
PostgreSQL-through-PgBouncer under load, with no restart of either, and report requests
sent / failed, each window's length, and whether the old credential is rejected afterwards.

Against local processes (redis-server, PostgreSQL, PgBouncer from apt-packages.txt), with the
mechanisms the cluster uses:

  Redis       the ACL file gets the user's new password beside the old one (components/redis.py's
              acl_file: `user svc on #<new> #<old> ...`) and Redis reloads it with ACL LOAD (the
              cluster's acl-reloader sidecar does this when the mounted Secret changes): both work.
              Clients move to the new password (a pod reads its rotated secret file on its next
              connection, or a rolled pod starts with it); once every client has, the file is
              rewritten with the new hash only, ACL LOAD again: the old password is refused.
  PostgreSQL  two login roles take turns (ESC's postgres rotator: username1/username2). The idle
              role gets a new password and LOGIN; PgBouncer's auth_file lists both and PgBouncer
              reloads (SIGHUP, what its admin console's RELOAD does): both work. Clients move to the
              new role; then the old one is removed from the auth_file, reloaded, and NOLOGIN with a
              random password at the server: refused at PgBouncer and at PostgreSQL.

Each load worker holds one Redis and one PostgreSQL connection and reconnects every few
requests with whatever credentials the secret file holds at that moment, so connections are
made throughout the windows. A request that errors, or reads back a wrong value, is a failure.
"""

from __future__ import annotations

import argparse
import json
import os
import pwd
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import psycopg
import redis

from components.redis import acl_file

RECONNECT_EVERY = 5  # requests per connection: reconnect often, so credentials are used for new logins


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
            raise RuntimeError(f"{what} did not start")
        time.sleep(0.05)


@dataclass
class Secret:
    """A rotated secret file as a pod sees it: read on every new connection."""

    path: Path

    def write(self, value: dict[str, str]) -> None:
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(value))
        tmp.replace(self.path)  # atomic, as the kubelet swaps a Secret volume

    def read(self) -> dict[str, str]:
        return json.loads(self.path.read_text())


class Stack:
    """redis-server, PostgreSQL and PgBouncer in a temporary directory, stopped on exit."""

    def __init__(self, work: Path, stack: ExitStack):
        self.work, self.user = work, ("postgres" if os.geteuid() == 0 else None)
        self.exporter_password = secrets.token_hex(16)
        # Redis: the ACL file is what the cluster's Secret holds.
        self.redis_port, self.acl = free_port(), work / "users.acl"
        self.acl.write_text(acl_file({"svc": "initial-redis-password"}, self.exporter_password))
        self.acl.chmod(0o600)
        stack.enter_context(
            self._process(
                [_bin("redis-server"), "--port", str(self.redis_port), "--bind", "127.0.0.1"]
                + ["--aclfile", str(self.acl), "--save", "", "--appendonly", "no"]
            )
        )
        # PostgreSQL with password authentication over TCP (the drill's own superuser on the socket).
        data, sock = work / "pg", work / "sock"
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
        self.pg_port = free_port()
        stack.enter_context(
            self._process(
                [
                    _bin("postgres"),
                    "-D",
                    str(data),
                    "-p",
                    str(self.pg_port),
                    "-h",
                    "127.0.0.1",
                    "-k",
                    str(sock),
                    "-c",
                    "fsync=off",
                ],
                user=self.user,
            )
        )
        self.sock = str(sock)
        _wait(
            lambda: psycopg.connect(host=self.sock, port=self.pg_port, user="drill", dbname="postgres").close() or True,
            "PostgreSQL",
        )
        with self.superuser() as db:
            db.execute("CREATE DATABASE sophia")
        with self.superuser("sophia") as db:
            db.execute("CREATE ROLE sophia_app NOLOGIN")
            db.execute("CREATE TABLE probe (id int PRIMARY KEY, value text)")
            db.execute("GRANT SELECT, INSERT, UPDATE ON probe TO sophia_app")
            for role, login in (("sophia_app_a", "LOGIN"), ("sophia_app_b", "NOLOGIN")):
                db.execute(f"CREATE ROLE {role} {login} PASSWORD 'initial-{role}' IN ROLE sophia_app")
        # PgBouncer in front, transaction pooling, as components/pgbouncer.py configures it.
        self.bouncer_port, self.userlist = free_port(), work / "userlist.txt"
        self.write_userlist({"sophia_app_a": "initial-sophia_app_a"})
        ini = work / "pgbouncer.ini"
        ini.write_text(
            f"[databases]\nsophia = host=127.0.0.1 port={self.pg_port} dbname=sophia\n\n[pgbouncer]\n"
            f"listen_addr = 127.0.0.1\nlisten_port = {self.bouncer_port}\nauth_type = scram-sha-256\n"
            f"auth_file = {self.userlist}\npool_mode = transaction\nmax_client_conn = 200\ndefault_pool_size = 10\n"
            f"unix_socket_dir =\nlogfile = {work / 'pgbouncer.log'}\n"
        )
        for f in (ini, work):
            if self.user:
                shutil.chown(f, self.user, self.user)
        self.bouncer = stack.enter_context(self._process([_bin("pgbouncer"), str(ini)], user=self.user))
        _wait(lambda: self.pg_login("sophia_app_a", "initial-sophia_app_a").close() or True, "PgBouncer")

    @contextmanager
    def _process(self, argv: list[str], user: str | None = None) -> Iterator[subprocess.Popen]:
        proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, user=user)
        try:
            if "redis-server" in argv[0]:
                probe = redis.Redis(
                    host="127.0.0.1", port=self.redis_port, username="exporter", password=self.exporter_password
                )
                _wait(lambda: probe.ping() or True, "redis-server")
            yield proc
        finally:
            proc.terminate()
            proc.wait(20)

    def superuser(self, db: str = "postgres") -> psycopg.Connection:
        return psycopg.connect(host=self.sock, port=self.pg_port, user="drill", dbname=db, autocommit=True)

    def write_userlist(self, users: dict[str, str]) -> None:
        self.userlist.write_text("".join(f'"{u}" "{p}"\n' for u, p in sorted(users.items())))
        if self.user:
            shutil.chown(self.userlist, self.user, self.user)

    def reload_bouncer(self) -> None:
        self.bouncer.send_signal(signal.SIGHUP)
        time.sleep(0.2)  # PgBouncer re-reads its config and auth_file in its event loop

    def acl_load(self, users: dict[str, str], previous: dict[str, str] | None = None) -> None:
        self.acl.write_text(acl_file(users, self.exporter_password, previous=previous or {}))
        # What the acl-reloader sidecar runs (its own user may ACL LOAD, nothing else).
        reloader = redis.Redis(
            host="127.0.0.1",
            port=self.redis_port,
            username="acl-reloader",
            password=reloader_password(self.exporter_password),
        )
        reloader.execute_command("ACL", "LOAD")
        reloader.close()

    def pg_login(self, user: str, password: str) -> psycopg.Connection:
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


def reloader_password(exporter_password: str) -> str:
    from components.redis import reloader_password as derive

    return derive(exporter_password)


@dataclass
class Load:
    stack: Stack
    redis_secret: Secret
    pg_secret: Secret
    workers: int
    sent: int = 0
    failed: int = 0
    errors: list[str] = field(default_factory=list)
    versions: dict[int, tuple[str, str]] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)
    stop: threading.Event = field(default_factory=threading.Event)

    def _count(self, ok: bool, error: str | None = None) -> None:
        with self.lock:
            self.sent += 1
            if not ok:
                self.failed += 1
                if error and len(self.errors) < 10:
                    self.errors.append(error)

    def worker(self, n: int) -> None:
        r = db = None
        i = 0
        while not self.stop.is_set():
            if i % RECONNECT_EVERY == 0:
                for c in (r, db):
                    if c is not None:
                        c.close()
                rs, ps = self.redis_secret.read(), self.pg_secret.read()
                with self.lock:
                    self.versions[n] = (rs["password"], ps["username"])
                r = redis.Redis(
                    host="127.0.0.1",
                    port=self.stack.redis_port,
                    username=rs["username"],
                    password=rs["password"],
                    socket_timeout=5,
                )
                try:
                    db = self.stack.pg_login(ps["username"], ps["password"])
                except psycopg.Error as exc:
                    db = None
                    self._count(False, f"postgres login as {ps['username']}: {exc}")
            i += 1
            key, value = f"drill:{n}", f"{n}-{i}"
            try:
                r.set(key, value)
                self._count(r.get(key) == value.encode(), "redis read back a wrong value")
            except redis.RedisError as exc:
                self._count(False, f"redis: {exc}")
            if db is not None:
                try:
                    db.execute(
                        "INSERT INTO probe VALUES (%s, %s) ON CONFLICT (id) DO UPDATE SET value = excluded.value",
                        (n, value),
                    )
                    got = db.execute("SELECT value FROM probe WHERE id = %s", (n,)).fetchone()
                    self._count(got == (value,), "postgres read back a wrong value")
                except psycopg.Error as exc:
                    self._count(False, f"postgres: {exc}")
                    db = None
            time.sleep(0.002)

    def all_on(self, redis_password: str, pg_user: str) -> bool:
        with self.lock:
            return len(self.versions) == self.workers and all(
                v == (redis_password, pg_user) for v in self.versions.values()
            )


def wait_all_moved(load: Load, redis_password: str, pg_user: str, timeout: float = 30) -> None:
    """Every worker has reconnected with the new credentials (the rollout finished)."""
    deadline = time.monotonic() + timeout
    while not load.all_on(redis_password, pg_user):
        if time.monotonic() > deadline:
            raise RuntimeError("the load did not move to the new credentials")
        time.sleep(0.05)


def rejected_redis(stack: Stack, user: str, password: str) -> bool:
    try:
        redis.Redis(host="127.0.0.1", port=stack.redis_port, username=user, password=password).ping()
        return False
    except redis.AuthenticationError:
        return True


def rejected_pg(stack: Stack, user: str, password: str) -> dict[str, bool]:
    out = {}
    for where, kwargs in (
        ("pgbouncer", {"host": "127.0.0.1", "port": stack.bouncer_port}),
        ("postgresql", {"host": "127.0.0.1", "port": stack.pg_port}),
    ):
        try:
            psycopg.connect(user=user, password=password, dbname="sophia", connect_timeout=5, **kwargs).close()
            out[where] = False
        except psycopg.OperationalError:
            out[where] = True
    return out


def redis_run_id(stack: Stack) -> str:
    client = redis.Redis(host="127.0.0.1", port=stack.redis_port, username="exporter", password=stack.exporter_password)
    try:
        return client.info("server")["run_id"]
    finally:
        client.close()


def drill(seconds: float = 2.0, workers: int = 8, unsafe: bool = False) -> dict:
    """`unsafe`: the control experiment, a rotation without a window (the old password replaced in
    place, clients told half a second later), to show the load notices a broken rotation."""
    with tempfile.TemporaryDirectory(prefix="sophia-drill-") as tmp, ExitStack() as stack_ctx:
        work = Path(tmp)
        if os.geteuid() == 0:
            os.chown(work, pwd.getpwnam("postgres").pw_uid, pwd.getpwnam("postgres").pw_gid)
        stack = Stack(work, stack_ctx)
        redis_secret, pg_secret = Secret(work / "redis.json"), Secret(work / "pg.json")
        redis_secret.write({"username": "svc", "password": "initial-redis-password"})
        pg_secret.write({"username": "sophia_app_a", "password": "initial-sophia_app_a"})
        load = Load(stack, redis_secret, pg_secret, workers)
        run_id, bouncer_pid = redis_run_id(stack), stack.bouncer.pid
        threads = [threading.Thread(target=load.worker, args=(n,), daemon=True) for n in range(workers)]
        for t in threads:
            t.start()
        time.sleep(seconds)  # steady state before

        # Redis: add the new password beside the old one; clients move; drop the old one.
        old_redis, new_redis = "initial-redis-password", secrets.token_urlsafe(24)
        t0 = time.monotonic()
        if unsafe:
            stack.acl_load({"svc": new_redis})
            time.sleep(0.5)
        else:
            stack.acl_load({"svc": new_redis}, previous={"svc": old_redis})
        redis_secret.write({"username": "svc", "password": new_redis})
        wait_all_moved(load, new_redis, "sophia_app_a")
        time.sleep(seconds / 2)
        stack.acl_load({"svc": new_redis})
        redis_window = time.monotonic() - t0

        # PostgreSQL: the idle role gets a new password and LOGIN; PgBouncer lists both; clients move;
        # the old role leaves the auth_file and loses LOGIN.
        old_pg, new_pg = ("sophia_app_a", "initial-sophia_app_a"), ("sophia_app_b", secrets.token_urlsafe(24))
        t1 = time.monotonic()
        with stack.superuser("sophia") as db:
            db.execute(f"ALTER ROLE {new_pg[0]} LOGIN PASSWORD '{new_pg[1]}'")
        stack.write_userlist({old_pg[0]: old_pg[1], new_pg[0]: new_pg[1]})
        stack.reload_bouncer()
        pg_secret.write({"username": new_pg[0], "password": new_pg[1]})
        wait_all_moved(load, new_redis, new_pg[0])
        time.sleep(seconds / 2)
        stack.write_userlist({new_pg[0]: new_pg[1]})
        stack.reload_bouncer()
        with stack.superuser("sophia") as db:
            db.execute(f"ALTER ROLE {old_pg[0]} NOLOGIN PASSWORD '{secrets.token_urlsafe(24)}'")
        pg_window = time.monotonic() - t1

        time.sleep(seconds)  # steady state after
        load.stop.set()
        for t in threads:
            t.join(10)
        return {
            "requests_sent": load.sent,
            "requests_failed": load.failed,
            "errors": load.errors,
            "redis": {
                "window_seconds": round(redis_window, 2),
                "old_password_rejected": rejected_redis(stack, "svc", old_redis),
                "new_password_accepted": not rejected_redis(stack, "svc", new_redis),
            },
            "postgres": {
                "window_seconds": round(pg_window, 2),
                "old_role": old_pg[0],
                "new_role": new_pg[0],
                "old_credential_rejected": rejected_pg(stack, *old_pg),
            },
            "restarted": {
                "redis": redis_run_id(stack) != run_id,
                "pgbouncer": stack.bouncer.poll() is not None or stack.bouncer.pid != bouncer_pid,
            },
        }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="rotate Redis and PostgreSQL credentials under load")
    parser.add_argument("--seconds", type=float, default=3.0, help="steady load before and after, per phase")
    parser.add_argument("--workers", type=int, default=8)
    parser.add_argument("--unsafe", action="store_true", help="control: rotate Redis without a window (must fail)")
    args = parser.parse_args(argv)
    result = drill(args.seconds, args.workers, args.unsafe)
    r, p = result["redis"], result["postgres"]
    print(f"requests sent:   {result['requests_sent']}")
    print(f"requests failed: {result['requests_failed']}")
    restarted = result["restarted"]
    print(
        f"redis ACL user svc: window {r['window_seconds']} s (two passwords valid), "
        f"old password rejected: {r['old_password_rejected']}, redis restarted: {restarted['redis']}"
    )
    print(
        f"postgres via pgbouncer: window {p['window_seconds']} s ({p['old_role']} and {p['new_role']} valid), "
        f"old credential rejected: {p['old_credential_rejected']}, pgbouncer restarted: {restarted['pgbouncer']}"
    )
    for e in result["errors"]:
        print(f"  error: {e}")
    ok = (
        result["requests_failed"] == 0
        and r["old_password_rejected"]
        and r["new_password_accepted"]
        and all(p["old_credential_rejected"].values())
        and not any(result["restarted"].values())
    )
    print("drill: " + ("passed" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
