"""One pin set for the services: every dependency the chassis, the harness or a service declares
(unpinned, in its pyproject.toml) is pinned, once, in the requirement files services/Dockerfile
uses as constraints, which are the versions the dev venv installs and the tests run with."""

from __future__ import annotations

import re
import tomllib
from pathlib import Path

import pytest
import yaml
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

REPO = Path(__file__).resolve().parents[2]
CONSTRAINTS = re.findall(r"-c /tmp/pins/(\S+)", (REPO / "services" / "Dockerfile").read_text())
POLICY_PACK = "policy/requirements.txt"  # also the policy pack's own venv
MODEL_PACKAGES = "model-packages.txt"  # the --no-deps EXTRAS' pins
PROJECTS = sorted([*(REPO / "libs").glob("*/pyproject.toml"), *(REPO / "services").glob("*/pyproject.toml")])


def pins(*files: str) -> dict[str, list[Requirement]]:
    """Each file's pins, following `-r` includes (each file read once)."""
    found: dict[str, list[Requirement]] = {}
    seen: set[Path] = set()

    def read(path: Path) -> None:
        if path in seen:
            return
        seen.add(path)
        for line in path.read_text().splitlines():
            line = line.split("#", 1)[0].strip()
            if line.startswith("-r "):
                read((path.parent / line[3:].strip()).resolve())
            elif line:
                req = Requirement(line)
                found.setdefault(canonicalize_name(req.name), []).append(req)

    for name in files:
        read((REPO / name).resolve())
    return found


def test_the_dockerfile_constrains_with_the_dev_venv_files() -> None:
    assert CONSTRAINTS, "services/Dockerfile installs with no -c constraint file"
    assert all((REPO / name).is_file() for name in [*CONSTRAINTS, MODEL_PACKAGES])


@pytest.mark.parametrize("project", PROJECTS, ids=[p.parent.name for p in PROJECTS])
def test_every_declared_dependency_is_pinned(project: Path) -> None:
    pinned = pins(*CONSTRAINTS)
    declared = [Requirement(d) for d in tomllib.loads(project.read_text())["project"].get("dependencies", [])]
    for req in declared:
        name = canonicalize_name(req.name)
        if name.startswith("sophia-"):
            continue  # ours, installed from the repository
        assert not req.specifier, f"{project.relative_to(REPO)}: {req} carries a version; pin it in {CONSTRAINTS}"
        assert name in pinned, f"{project.relative_to(REPO)}: {req.name} is not pinned in {CONSTRAINTS}"
        assert all(str(p.specifier).startswith("==") for p in pinned[name]), pinned[name]


def test_no_package_is_pinned_twice() -> None:
    # The policy pack's file feeds its own venv too, so it may repeat a pin, but only the same one.
    files = sorted(
        {*CONSTRAINTS, MODEL_PACKAGES, *(p.name for p in REPO.glob("requirements*.txt"))} - {"requirements-checkov.txt"}
    )
    found = pins(*files)
    own_venv = pins(POLICY_PACK)
    twice = {
        name: [str(r) for r in reqs]
        for name, reqs in found.items()
        if len(reqs) - (1 if name in own_venv and len({str(r) for r in reqs}) == 1 else 0) > 1
    }
    assert not twice, f"pinned more than once (or to two versions) across {files}: {twice}"


def test_image_extras_are_pinned_model_packages() -> None:
    pinned = pins(MODEL_PACKAGES)
    for manifest in (REPO / "services").glob("*/service.yaml"):
        extras = (yaml.safe_load(manifest.read_text()).get("build_args") or {}).get("EXTRAS", "")
        for package in extras.split():
            assert canonicalize_name(Requirement(package).name) in pinned, (
                f"{manifest}: {package} not in {MODEL_PACKAGES}"
            )
