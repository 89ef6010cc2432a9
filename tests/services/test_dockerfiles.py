"""Every service's Dockerfile passes hadolint and keeps the chassis pattern (images can't
be built on these machines, so this is what checks them)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

SERVICES = Path(__file__).resolve().parents[2] / "services"
DOCKERFILES = sorted(SERVICES.glob("*/Dockerfile"))


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=[d.parent.name for d in DOCKERFILES])
def test_dockerfile_lints_clean_and_runs_non_root(dockerfile: Path) -> None:
    hadolint = shutil.which("hadolint") or str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "hadolint")
    result = subprocess.run([hadolint, str(dockerfile)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = dockerfile.read_text()
    assert text.count("FROM ") == 2  # build stage, then a slim final stage without build tools
    assert "USER 10001:10001" in text  # matches the pod securityContext
    assert "COPY libs/sophia_chassis" in text
