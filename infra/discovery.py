"""Service discovery: every `services/<name>/service.yaml` is a service to deploy.

Adding a folder with a manifest adds a service; nothing under infra/ or components/
changes. Folders starting with '.' or '_' are ignored (caches, shared helpers).
"""

from __future__ import annotations

import tomllib
from pathlib import Path

import yaml
from pydantic import ValidationError

from components.spec import ServiceSpec

SERVICES_DIR = Path(__file__).resolve().parent.parent / "services"
MANIFEST = "service.yaml"
PACKAGE = "pyproject.toml"


class ManifestError(ValueError):
    """One or more service manifests are invalid; the message names file and key."""

    def __init__(self, problems: list[str]):
        self.problems = problems
        super().__init__("invalid service manifest(s):\n" + "\n".join(f"  - {p}" for p in problems))


def _load_one(folder: Path) -> ServiceSpec:
    path = folder / MANIFEST
    where = f"services/{folder.name}/{MANIFEST}"
    try:
        data = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ManifestError([f"{where}: not valid YAML: {exc}"]) from None
    if not isinstance(data, dict):
        raise ManifestError([f"{where}: must be a mapping of keys (given a {type(data).__name__})"])
    if "name" in data and data["name"] != folder.name:
        raise ManifestError(
            [
                f"{where}: name {data['name']!r} differs from its folder {folder.name!r}; "
                "remove `name` (the folder names the service)"
            ]
        )
    if "version" in data:
        raise ManifestError(
            [
                f"{where}: version: the version is the package's ([project].version in "
                f"services/{folder.name}/{PACKAGE}), its one source; remove it here"
            ]
        )
    version = package_version(folder)
    try:
        return ServiceSpec.model_validate({**data, "name": folder.name, **({"version": version} if version else {})})
    except ValidationError as exc:
        problems = []
        for err in exc.errors():
            key = ".".join(str(p) for p in err["loc"]) or "(manifest)"
            msg = err["msg"].removeprefix("Value error, ")
            if err["type"] == "extra_forbidden":
                msg = "unknown key; check the spelling"
            source = f"services/{folder.name}/{PACKAGE}: [project]" if key == "version" else where
            problems.append(f"{source}: {key}: {msg} (given: {err['input']!r})")
        raise ManifestError(problems) from None


def package_version(folder: Path) -> str | None:
    """The service package's [project].version; None for a folder without a package (its image is
    then given, not built)."""
    path = folder / PACKAGE
    if not path.is_file():
        return None
    try:
        version = tomllib.loads(path.read_text()).get("project", {}).get("version")
    except tomllib.TOMLDecodeError as exc:
        raise ManifestError([f"services/{folder.name}/{PACKAGE}: not valid TOML: {exc}"]) from None
    if not isinstance(version, str):
        raise ManifestError(
            [f"services/{folder.name}/{PACKAGE}: [project].version is missing; set the service's version, e.g. '0.1.0'"]
        )
    return version


def discover(services_dir: Path = SERVICES_DIR) -> list[ServiceSpec]:
    """All services under `services_dir`, sorted by name, checked against each other."""
    folders = sorted(p for p in services_dir.iterdir() if p.is_dir() and p.name[0] not in "._")
    problems: list[str] = []
    specs: list[ServiceSpec] = []
    for folder in folders:
        if not (folder / MANIFEST).is_file():
            problems.append(
                f"services/{folder.name}: no {MANIFEST}; add one (port, resources, calls...) "
                "or move the folder out of services/"
            )
            continue
        try:
            specs.append(_load_one(folder))
        except ManifestError as exc:
            problems.extend(exc.problems)
    if problems:
        raise ManifestError(problems)

    names = {s.name for s in specs}
    seen_routes: dict[str, str] = {}
    seen_dev_ports: dict[int, str] = {}
    for spec in specs:
        if spec.dev_port is not None:
            owner = seen_dev_ports.setdefault(spec.dev_port, spec.name)
            if owner != spec.name:
                problems.append(
                    f"services/{spec.name}/{MANIFEST}: dev_port: {spec.dev_port} is claimed by both "
                    f"services/{owner} and services/{spec.name}; give each service its own"
                )
        for callee in spec.calls.services:
            if callee not in names:
                problems.append(
                    f"services/{spec.name}/{MANIFEST}: calls.services: {callee!r} is not a "
                    f"discovered service (known: {sorted(names)})"
                )
        for route in spec.routes:
            owner = seen_routes.setdefault(route.path, spec.name)
            if owner != spec.name:
                problems.append(
                    f"services/{spec.name}/{MANIFEST}: routes: {route.path!r} is claimed by both "
                    f"services/{owner} and services/{spec.name}; each path prefix belongs to one service"
                )
    if problems:
        raise ManifestError(problems)
    return specs


def service_callers(specs: list[ServiceSpec], name: str) -> list[str]:
    """The services whose manifests call `name` (its `calls.services`, inverted), sorted: the one
    source for its NetworkPolicy's ingress and the callers its auth accepts."""
    return sorted(s.name for s in specs if name in s.calls.services)
