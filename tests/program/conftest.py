"""Helpers for the program's tests: run the real program under Pulumi's mocks."""

from __future__ import annotations

import shutil
from pathlib import Path
from typing import Any

import pytest

from infra.discovery import SERVICES_DIR
from infra.render import RenderMocks, kubernetes_objects, offline_config, run_program

STACKS = ("local", "dev", "prod")
# What the ESC environment adds to prod's stack file for backups and logs (esc/base.yaml,
# esc/prod.yaml; tests/program/test_esc.py checks the real evaluation), so prod renders with its
# backup CronJobs and Loki in S3.
PROD_ESC = {
    "backup": {
        "enabled": True,
        "endpoint": "https://s3.us-east-2.amazonaws.com",
        "bucket": "sophia-backups-111122223333",
        "prefix": "prod/",
        "region": "us-east-2",
        "retention_days": 30,
    },
    "logs": {
        "storage": "s3",
        "bucket": "sophia-logs-prod-111122223333",
        "endpoint": "https://s3.us-east-2.amazonaws.com",
        "region": "us-east-2",
    },
    "secrets": {
        "BACKUP_ACCESS_KEY_ID": "redacted",
        "BACKUP_SECRET_ACCESS_KEY": "redacted",
        "LOKI_ACCESS_KEY_ID": "redacted",
        "LOKI_SECRET_ACCESS_KEY": "redacted",
    },
}


def render_objects(
    stack: str, overrides: dict[str, Any] | None = None, services_dir: Path = SERVICES_DIR
) -> list[dict[str, Any]]:
    config = offline_config(stack, services_dir)
    overrides = dict(overrides or {})
    if "secrets" in overrides:  # added to the stand-ins, not instead of them
        overrides["secrets"] = {**config.get("sophia:secrets", {}), **overrides["secrets"]}
    config.update({f"sophia:{k}": v for k, v in overrides.items()})
    return kubernetes_objects(run_program(stack, config, services_dir))


def run_with(stack: str, config: dict[str, Any], services_dir: Path = SERVICES_DIR) -> RenderMocks:
    """Run with exactly `config` (keys without the `sophia:` prefix); returns the mocks."""
    mocks = RenderMocks()
    run_program(stack, {f"sophia:{k}": v for k, v in config.items()}, services_dir, mocks)
    return mocks


def find(objects: list[dict[str, Any]], kind: str, name: str) -> dict[str, Any]:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(matches) == 1, f"expected one {kind}/{name}, found {len(matches)}"
    return matches[0]


@pytest.fixture(scope="session")
def rendered() -> dict[str, list[dict[str, Any]]]:
    return {stack: render_objects(stack, PROD_ESC if stack == "prod" else None) for stack in STACKS}


@pytest.fixture
def services_copy(tmp_path: Path) -> Path:
    """A scratch copy of services/ (manifests, package files and the one Dockerfile, which the
    local stack's image builder hashes) to add or break services in."""
    dest = tmp_path / "services"
    dest.mkdir()
    shutil.copy(SERVICES_DIR / "Dockerfile", dest / "Dockerfile")
    for folder in SERVICES_DIR.iterdir():
        if folder.is_dir() and folder.name[0] not in "._":
            (dest / folder.name).mkdir(parents=True)
            for keep in ("service.yaml", "pyproject.toml"):
                if (folder / keep).is_file():
                    shutil.copy(folder / keep, dest / folder.name / keep)
    return dest
