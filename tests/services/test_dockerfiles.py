"""The one services/Dockerfile passes hadolint and keeps the chassis pattern, and every service
is what it builds: a package named after its folder, with `main.build_app` (images can't be built
on these machines, so this is what checks them)."""

from __future__ import annotations

import shutil
import subprocess
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
DOCKERFILE = REPO / "services" / "Dockerfile"
SERVICES = sorted(p.parent for p in (REPO / "services").glob("*/service.yaml"))


def test_dockerfile_lints_clean_and_runs_non_root() -> None:
    hadolint = shutil.which("hadolint") or str(REPO / ".venv" / "bin" / "hadolint")
    result = subprocess.run([hadolint, str(DOCKERFILE)], capture_output=True, text=True)
    assert result.returncode == 0, result.stdout + result.stderr
    text = DOCKERFILE.read_text()
    assert text.count("FROM ") == 2  # build stage, then a slim final stage without build tools
    assert "USER 10001:10001" in text  # matches the pod securityContext
    assert "COPY libs/sophia_chassis" in text
    assert "ARG PYTHON_IMAGE=python:3.11-slim-bookworm" in text  # the toolchain overrides it


def test_there_is_one_dockerfile() -> None:
    assert sorted(p.relative_to(REPO) for p in (REPO / "services").rglob("Dockerfile")) == [Path("services/Dockerfile")]


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_each_service_is_the_package_the_dockerfile_runs(service: Path) -> None:
    package = service.name.replace("-", "_")  # what the image's CMD derives from SERVICE
    project = tomllib.loads((service / "pyproject.toml").read_text())
    assert project["tool"]["setuptools"]["packages"] == [package]
    assert "sophia-chassis" in project["project"]["dependencies"]
    assert "def build_app(" in (service / package / "main.py").read_text()
    assert "class Settings(" in (service / package / "settings.py").read_text()  # the same shape in each
