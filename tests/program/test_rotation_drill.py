"""Zero-downtime rotation: the drill (rotation/drill.py, `make rotate-drill`) against real
redis-server, PostgreSQL and PgBouncer, short; and the Redis component's side of it."""

from __future__ import annotations

import hashlib
from typing import Any

from components.redis import RELOADER_USER, acl_file, reloader_password
from rotation.drill import drill

from .conftest import find


def test_a_rotation_under_load_fails_no_request_and_the_old_credentials_are_refused() -> None:
    result = drill(seconds=0.4, workers=4)
    assert result["requests_sent"] > 100
    assert result["requests_failed"] == 0, result["errors"]
    assert result["redis"]["old_password_rejected"] and result["redis"]["new_password_accepted"]
    assert result["postgres"]["old_credential_rejected"] == {"pgbouncer": True, "postgresql": True}
    assert result["restarted"] == {"redis": False, "pgbouncer": False}
    assert 0 < result["redis"]["window_seconds"] < 30 and 0 < result["postgres"]["window_seconds"] < 30


def test_the_load_notices_a_rotation_without_a_window() -> None:
    """The control: the old password replaced in place, clients told later, and requests fail."""
    result = drill(seconds=0.4, workers=4, unsafe=True)
    assert result["requests_failed"] > 0


def test_a_user_with_a_previous_password_accepts_both_and_the_reloader_may_only_reload() -> None:
    digest = lambda pw: hashlib.sha256(pw.encode()).hexdigest()  # noqa: E731
    text = acl_file({"svc": "new"}, "exp", previous={"svc": "old"})
    assert f"user svc on #{digest('new')} #{digest('old')} " in text
    assert f"user {RELOADER_USER} on #{digest(reloader_password('exp'))} resetkeys -@all +acl|load +ping" in text
    assert "old" not in acl_file({"svc": "new"}, "exp") and digest("old") not in acl_file({"svc": "new"}, "exp")


def test_redis_reloads_its_acl_without_a_restart(rendered: dict[str, list[dict[str, Any]]]) -> None:
    pod = find(rendered["prod"], "StatefulSet", "redis")["spec"]["template"]["spec"]
    reloader = next(c for c in pod["containers"] if c["name"] == "acl-reloader")
    assert "ACL LOAD" in reloader["command"][-1] and reloader["securityContext"]["readOnlyRootFilesystem"]
    assert {m["mountPath"] for m in reloader["volumeMounts"]} == {"/etc/redis/acl"}
