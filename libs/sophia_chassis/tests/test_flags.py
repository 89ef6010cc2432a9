"""Feature flags through a real app: OpenFeature with the file provider, targeting by the
caller's identity, a changed file picked up without a restart, evaluations in /metrics."""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import httpx
from fastapi import Depends

from sophia_chassis import ServiceSettings, create_app
from sophia_chassis.auth import Identity, issue_key, require
from sophia_chassis.flags import bucket, resolve
from sophia_testing.servers import serve


def write_flags(path: Path, flags: dict) -> None:
    """As the kubelet updates a ConfigMap volume: a new file swapped in by rename."""
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps({"flags": flags}))
    os.replace(tmp, path)


def test_a_percentage_splits_tenants_stably_and_in_proportion() -> None:
    tenants = [f"tenant-{i}" for i in range(4000)]
    on = [t for t in tenants if resolve("new-search", {"percentage": 10}, t, None)[0]]
    assert 0.08 < len(on) / len(tenants) < 0.12
    # Stable: the same answer every time (a hash, not a draw); growing the share keeps those already on.
    assert on == [t for t in tenants if resolve("new-search", {"percentage": 10}, t, None)[0]]
    assert set(on) <= {t for t in tenants if resolve("new-search", {"percentage": 30}, t, None)[0]}
    # Per flag: another flag at 10 % picks other tenants.
    other = {t for t in tenants if resolve("other-flag", {"percentage": 10}, t, None)[0]}
    assert len(other & set(on)) < len(on) / 2
    assert bucket("new-search", "tenant-1") == bucket("new-search", "tenant-1")


def test_lists_win_over_the_percentage_and_default() -> None:
    rule = {"default": False, "percentage": 0, "tenants": ["acme"], "users": ["ana"]}
    assert resolve("f", rule, "acme", "bo") == (True, "TARGETING_MATCH")
    assert resolve("f", rule, "globex", "ana") == (True, "TARGETING_MATCH")
    assert resolve("f", rule, "globex", "bo") == (False, "STATIC")
    assert resolve("f", {"default": True}, None, None) == (True, "STATIC")


def test_a_flag_flips_without_a_restart_and_every_evaluation_is_counted(tmp_path: Path) -> None:
    flags_file = tmp_path / "flags.json"
    write_flags(flags_file, {"new-search": {"default": False, "tenants": ["acme"]}})
    acme, acme_entry = issue_key("acme", ["*"], "acme1")
    globex, globex_entry = issue_key("globex", ["*"], "globex1")
    table = json.dumps([acme_entry, globex_entry])
    settings = ServiceSettings(
        service_name="demo",
        auth_mode="required",
        api_keys=table,
        flags_file=str(flags_file),
        flags_poll_seconds=0.2,
    )
    app = create_app(settings)

    @app.get("/search")
    async def search(who: Identity = Depends(require("x:read"))) -> dict[str, bool]:
        return {"new": app.state.flags.enabled("new-search", who), "undeclared": app.state.flags.enabled("nope", who)}

    def ask(key: str) -> dict[str, bool]:
        return httpx.get(f"{url}/search", headers={"Authorization": f"Bearer {key}"}).json()

    with serve(app) as url:
        assert ask(acme) == {"new": True, "undeclared": False}
        assert ask(globex) == {"new": False, "undeclared": False}
        write_flags(flags_file, {"new-search": {"default": True}})
        deadline = time.monotonic() + 5
        while ask(globex)["new"] is False and time.monotonic() < deadline:
            time.sleep(0.1)
        assert ask(globex)["new"] is True  # the same process, within a poll interval
        # A broken file keeps the last good flags instead of turning everything off.
        flags_file.write_text("{not json")
        time.sleep(0.3)
        assert ask(globex)["new"] is True
        metrics = httpx.get(f"{url}/metrics").text
    assert 'feature_flag_evaluations_total{flag="new-search",variant="on"}' in metrics
    assert 'feature_flag_evaluations_total{flag="new-search",variant="off"}' in metrics
    assert 'feature_flag_evaluations_total{flag="nope",variant="default"}' in metrics


def test_without_a_flag_file_every_flag_is_the_codes_default() -> None:
    app = create_app(ServiceSettings(service_name="demo", auth_mode="off"))
    who = Identity("anonymous", "default", frozenset({"*"}), "none")
    assert app.state.flags.enabled("anything", who) is False
    assert app.state.flags.enabled("anything", who, default=True) is True
