"""Zero-downtime rotation: the drill (rotation/drill.py, `make rotate-drill`) against real
redis-server, PostgreSQL and PgBouncer and Qdrant key-check stand-ins, short; the clients' side
(sophia_chassis.rotation); and what the components deploy for it."""

from __future__ import annotations

import hashlib
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx
import pulumi
from pulumi.runtime.mocks import test as run_under_mocks

from components.pgbouncer import client_user, userlist
from components.qdrant import Qdrant, QdrantArgs, server_config
from components.redis import RELOADER_USER, acl_file, reloader_password
from infra.render import RenderMocks
from rotation.drill import _wait, drill, free_port, passed
from sophia_chassis.rotation import RotatedCredential, RotatedKeyAuth

from .conftest import find


def test_a_rotation_of_every_store_under_load_fails_no_request_and_the_old_credentials_are_refused() -> None:
    result = drill(seconds=0.4, workers=4)
    assert result["requests_failed"] == 0, result["errors"]
    assert all(s["sent"] > 30 for s in result["by_store"].values()), result["by_store"]
    # Redis and PgBouncer got the clients' files first: logins with the new value were refused,
    # and the clients went on with the previous one.
    assert result["redis"]["new_value_refused_then_previous_used"] > 0
    assert result["pgbouncer_client"]["new_value_refused_then_previous_used"] > 0
    assert result["redis"]["old_password_rejected"] and result["redis"]["old_exporter_password_rejected"]
    assert result["pgbouncer_client"]["old_login_rejected"] and result["postgres_server"]["old_credential_rejected"]
    assert result["qdrant"]["old_key_rejected"] and result["qdrant"]["new_key_accepted"]
    assert result["restarted"] == {"redis": False, "pgbouncer": False, "clients": False}
    assert passed(result)


def test_the_load_notices_a_rotation_without_a_window() -> None:
    """The control: the old password replaced in place, clients told later, and requests fail."""
    result = drill(seconds=0.4, workers=4, unsafe=True)
    assert result["by_store"]["redis"]["failed"] > 0 and not passed(result)


def test_a_credential_is_read_from_the_files_at_each_call(tmp_path: Path) -> None:
    pg = RotatedCredential(("PGUSER", "PGPASSWORD"), directory=str(tmp_path))
    assert pg.candidates() == []  # no files: the caller's own settings
    (tmp_path / "PGUSER").write_text("u1\n")
    (tmp_path / "PGPASSWORD").write_text("p1")
    (tmp_path / "PGUSER_PREVIOUS").write_text("")  # before the first rotation: empty, not a login
    (tmp_path / "PGPASSWORD_PREVIOUS").write_text("")
    assert pg.candidates() == [("u1", "p1")]
    (tmp_path / "PGUSER_PREVIOUS").write_text("u0")
    (tmp_path / "PGPASSWORD_PREVIOUS").write_text("p0")
    assert pg.candidates() == [("u1", "p1"), ("u0", "p0")]
    fallback = RotatedCredential(
        ("QDRANT_API_KEY",), other="_NEXT", fallback=("from-settings",), directory="/nonexistent"
    )
    assert fallback.candidates() == [("from-settings",)]


def test_an_api_key_is_sent_again_with_the_other_key_on_a_refusal_and_the_working_one_kept(tmp_path: Path) -> None:
    """Against the Qdrant stand-in: 403 for a wrong key, as Qdrant answers."""
    config, port = tmp_path / "local.yaml", free_port()
    config.write_text(server_config("k-new", distributed=False))
    proc = subprocess.Popen([sys.executable, "-m", "sophia_testing.qdrant_auth_fake", str(config), str(port)])
    try:
        url = f"http://127.0.0.1:{port}"
        _wait(lambda: httpx.get(f"{url}/readyz").status_code == 200, "qdrant stand-in")
        assert httpx.get(f"{url}/collections").status_code == 401
        assert httpx.get(f"{url}/collections", headers={"api-key": "k-old"}).status_code == 403
        (tmp_path / "QDRANT_API_KEY").write_text("k-old")
        (tmp_path / "QDRANT_API_KEY_NEXT").write_text("k-new")
        seen: list[str] = []
        auth = RotatedKeyAuth(RotatedCredential(("QDRANT_API_KEY",), other="_NEXT", directory=str(tmp_path)))
        hook = {"request": [lambda r: seen.append(r.headers["api-key"])]}
        with httpx.Client(auth=auth, event_hooks=hook) as client:
            assert client.get(f"{url}/collections").status_code == 200
            assert client.get(f"{url}/collections").status_code == 200
        assert seen == ["k-old", "k-new", "k-new"]  # the refused key is not sent first again
        (tmp_path / "QDRANT_API_KEY_NEXT").write_text("k-other")
        with httpx.Client(auth=auth) as client:
            assert client.get(f"{url}/collections").status_code == 403  # neither works: the refusal stands
    finally:
        proc.terminate()
        proc.wait(10)


def test_a_rotated_password_is_accepted_beside_the_one_before_and_the_reloader_may_only_set_users() -> None:
    digest = lambda pw: hashlib.sha256(pw.encode()).hexdigest()  # noqa: E731
    text = acl_file({"svc": "new"}, "exp", previous={"svc": "old"}, exporter_previous="exp-old")
    assert f"user svc on #{digest('new')} #{digest('old')} " in text
    assert f"user exporter on #{digest('exp')} #{digest('exp-old')} " in text
    assert (
        f"user {RELOADER_USER} on #{digest(reloader_password('exp'))} #{digest(reloader_password('exp-old'))} "
        "resetkeys -@all +acl|setuser +acl|deluser +acl|users +ping"
    ) in text
    assert digest("old") not in acl_file({"svc": "new"}, "exp")
    # PgBouncer: one password per user, so each password comes with its own user.
    assert client_user("new") != client_user("old")
    assert set(userlist("new", "old").splitlines()) == {
        f'"{client_user("new")}" "new"',
        f'"{client_user("old")}" "old"',
    }
    assert userlist("new", "") == f'"{client_user("new")}" "new"\n'


def test_redis_and_pgbouncer_take_rotated_credentials_from_sidecars(rendered: dict[str, list[dict[str, Any]]]) -> None:
    redis_pod = find(rendered["prod"], "StatefulSet", "redis")["spec"]["template"]["spec"]
    reloader = next(c for c in redis_pod["containers"] if c["name"] == "acl-reloader")
    script = reloader["command"][-1]
    assert "ACL SETUSER" in script and "ACL LOAD" not in script and "/-/reload" in script
    assert reloader["securityContext"]["readOnlyRootFilesystem"]
    assert {m["mountPath"] for m in reloader["volumeMounts"]} == {"/etc/redis/acl"}
    bouncer_pod = find(rendered["prod"], "Deployment", "pgbouncer")["spec"]["template"]["spec"]
    assert bouncer_pod["shareProcessNamespace"] is True
    sidecar = next(c for c in bouncer_pod["containers"] if c["name"] == "config-reloader")
    assert "kill -HUP" in sidecar["command"][-1]
    assert {m["mountPath"] for m in sidecar["volumeMounts"]} == {"/etc/pgbouncer", "/tmp"}


def test_qdrant_runs_the_key_before_the_newest_and_its_callers_hold_both() -> None:
    seen: dict[str, Any] = {}

    def program():
        qdrant = Qdrant(
            "q", QdrantArgs(namespace="d", api_key="k2", previous_api_key="k1", services_namespace="s", replicas=3)
        )
        connection = qdrant.connection("mcp-context")
        seen["after"] = list(connection.secrets_after)
        seen["stateful_set"] = qdrant.stateful_set
        seen["live"] = connection.live_secrets
        return pulumi.Output.all(**connection.secrets).apply(lambda v: seen.update(secrets=v))

    pulumi.runtime.set_mocks(RenderMocks(), project="sophia", stack="test", preview=False)
    run_under_mocks(program)()
    assert seen["secrets"] == {"QDRANT_API_KEY": "k1", "QDRANT_API_KEY_NEXT": "k2"}
    assert seen["live"] == {"QDRANT_API_KEY", "QDRANT_API_KEY_NEXT"}
    assert seen["after"] == [seen["stateful_set"]]  # the callers' Secret is written once Qdrant has rolled
