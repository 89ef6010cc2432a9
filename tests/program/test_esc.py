"""The ESC environments in esc/ load, check and evaluate with github.com/pulumi/esc's own evaluator
(.venv/bin/esc-eval, built by scripts/bootstrap.sh from toolchain/esc-eval), and what they give the
program under `pulumiConfig` is exactly what infra/config.py and infra/plan.py accept for the stack.

Secrets Manager is stood in by a JSON file (the local aws-secrets provider); the rotators run
locally (esc-eval's postgres and password rotators keep Pulumi's documented state shapes).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml

from components.pgbouncer import database_entry
from infra.config import NAMESPACE, parse_stack_config, secret_keys_available
from infra.discovery import discover
from infra.plan import API_KEYS, BACKUP_KEYS, DATABASE_READ_URL, DATABASE_URL, LOKI_KEYS, plan_services
from infra.render import stack_file_config
from sophia_chassis.auth import parse_key_table
from sophia_testing.esc import secrets_manager

REPO = Path(__file__).resolve().parents[2]
ESC_EVAL = REPO / ".venv" / "bin" / "esc-eval"
ENVIRONMENTS = ["sophia/base", "sophia/dev-logins", "sophia/prod-logins", "sophia/dev", "sophia/prod"]


def store(stack: str) -> dict[str, str]:
    """What AWS Secrets Manager holds for a stack (secretId -> SecretString)."""
    return secrets_manager(stack)


def esc_eval(*args: str, secrets: dict[str, str] | None = None, tmp: Path | None = None, cwd: Path = REPO):
    assert ESC_EVAL.is_file(), "scripts/bootstrap.sh builds esc-eval into .venv/bin"
    extra: list[str] = []
    if secrets is not None:
        assert tmp is not None
        path = tmp / "secrets.json"
        path.write_text(json.dumps(secrets))
        extra = ["-secrets", str(path)]
    command, *rest = args
    return subprocess.run([str(ESC_EVAL), command, *extra, *rest], cwd=cwd, capture_output=True, text=True, timeout=60)


def opened(stack: str, tmp: Path) -> dict[str, Any]:
    result = esc_eval("open", "-rotate", f"sophia/{stack}", secrets=store(stack), tmp=tmp)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_every_environment_loads_and_checks() -> None:
    result = esc_eval("check", *ENVIRONMENTS)
    assert result.returncode == 0, result.stderr
    assert result.stdout.count(": ok") == len(ENVIRONMENTS)


@pytest.mark.parametrize("stack", ["dev", "prod"])
def test_pulumi_config_is_what_the_program_accepts(stack: str, tmp_path: Path) -> None:
    values = opened(stack, tmp_path)
    pulumi_config = values["pulumiConfig"]
    assert all(k.startswith(f"{NAMESPACE}:") for k in pulumi_config), sorted(pulumi_config)
    # Pulumi merges the environment's pulumiConfig under the stack file's own config.
    merged = {**pulumi_config, **stack_file_config(stack)}
    raw = {k.removeprefix(f"{NAMESPACE}:"): v for k, v in merged.items()}
    config = parse_stack_config(stack, raw)  # refuses unknown keys and bad values
    available = secret_keys_available(stack, raw)
    plan_services(stack, config, discover(), available)  # every secret a service or store needs is there

    assert config.backup.enabled and config.backup.prefix == f"{stack}/" and set(BACKUP_KEYS) <= available
    # Prod keeps its logs in S3, replicated, a month; dev on one Loki's volume, a week.
    logs = config.logs_settings
    if stack == "prod":
        assert (logs.storage, logs.replicas, logs.retention_days) == ("s3", 3, 30)
        assert logs.bucket and logs.region == "us-east-2" and set(LOKI_KEYS) <= available
    else:
        assert (logs.storage, logs.replicas, logs.retention_days) == ("filesystem", 1, 7)
    secrets = raw["secrets"]
    assert all(isinstance(v, str) and v for v in secrets.values()), "config secrets are non-empty strings"
    assert parse_key_table(secrets[API_KEYS])["ci"].tenant == "acme"
    urls = [DATABASE_URL] + ([DATABASE_READ_URL] if stack == "prod" else [])
    for key in urls:
        database_entry(key, secrets[key])  # PgBouncer can read it
        assert urlsplit(secrets[key]).username == "sophia_app_a"  # the first rotation's current user
    # Nothing else reaches the program: no stray top-level keys.
    assert set(values) >= {"pulumiConfig", "neon", "aws"}


def test_a_missing_secret_fails_the_evaluation_naming_it(tmp_path: Path) -> None:
    secrets = store("dev")
    del secrets["sophia/dev/github-token"]
    result = esc_eval("open", "-rotate", "sophia/dev", secrets=secrets, tmp=tmp_path)
    assert result.returncode != 0
    assert 'secret "sophia/dev/github-token"' in result.stderr


def test_postgres_rotation_alternates_users_and_keeps_the_previous_one_valid(tmp_path: Path) -> None:
    work = tmp_path / "esc"
    shutil.copytree(REPO / "esc", work)
    states = []
    for _ in range(3):
        result = esc_eval("rotate", "sophia/dev", secrets=store("dev"), tmp=tmp_path, cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        (work / "dev.yaml").write_text(result.stdout)
        states.append(yaml.safe_load(result.stdout)["values"]["neon"]["login"]["fn::rotate::postgres"]["state"])
    password = lambda cred: cred["password"]["fn::secret"]  # noqa: E731  (written back as secrets)
    assert [s["current"]["username"] for s in states] == ["sophia_app_a", "sophia_app_b", "sophia_app_a"]
    assert "previous" not in states[0]
    for before, after in zip(states, states[1:], strict=False):
        assert after["previous"]["username"] == before["current"]["username"]
        assert password(after["previous"]) == password(before["current"])
        assert password(after["current"]) != password(before["current"])
    # The rotated state evaluates: the program gets the new current user.
    result = esc_eval("open", "sophia/dev", secrets=store("dev"), tmp=tmp_path, cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    url = json.loads(result.stdout)["pulumiConfig"]["sophia:secrets"][DATABASE_URL]
    assert urlsplit(url).username == "sophia_app_a" and urlsplit(url).password == password(states[-1]["current"])


def test_password_rotator_keeps_current_and_previous(tmp_path: Path) -> None:
    work = tmp_path / "esc"
    work.mkdir()
    (work / "tokens.yaml").write_text(
        "values:\n  token:\n    fn::rotate::password:\n      inputs: {length: 40, special: false, minNumeric: 4}\n"
    )
    seen = []
    for _ in range(2):
        result = esc_eval("rotate", "sophia/tokens", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        (work / "tokens.yaml").write_text(result.stdout)
        seen.append(yaml.safe_load(result.stdout)["values"]["token"]["fn::rotate::password"]["state"])
    first, second = (s["current"]["fn::secret"] for s in seen)
    assert len(first) == len(second) == 40 and first.isalnum() and sum(c.isdigit() for c in first) >= 4
    assert second != first and seen[1]["previous"]["fn::secret"] == first


def test_esc_apply_keeps_the_live_rotator_state(tmp_path: Path) -> None:
    """Pushing esc/dev.yaml over the live definition must not forget the rotated credentials."""
    rotated = esc_eval("rotate", "sophia/dev", secrets=store("dev"), tmp=tmp_path)
    assert rotated.returncode == 0, rotated.stderr
    live = tmp_path / "live.yaml"
    live.write_text(rotated.stdout)
    grafted = esc_eval("graft", str(live), "esc/dev.yaml")
    assert grafted.returncode == 0, grafted.stderr
    path = ["values", "neon", "login", "fn::rotate::postgres", "state"]
    get = lambda doc: [doc := doc[k] for k in path][-1]  # noqa: E731
    assert get(yaml.safe_load(grafted.stdout)) == get(yaml.safe_load(rotated.stdout))
    assert "# sophia/dev: what" in grafted.stdout  # the repository's comments survive

    (tmp_path / "ours.yaml").write_text("values:\n  other: 1\n")
    refused = esc_eval("graft", str(live), str(tmp_path / "ours.yaml"))
    assert refused.returncode != 0 and "credentials would be lost" in refused.stderr
