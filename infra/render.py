"""Offline render: every Kubernetes object a stack declares, as YAML, like `helm template`.

The program runs under Pulumi's mock runtime (no engine, no cluster, no cloud) with
the stack's config read from `Pulumi.<stack>.yaml`; each registered Kubernetes
resource's inputs are the object. Secrets from ESC are not available offline: their
keys render with a redacted value, and no Secret value is ever written to disk.
Helm releases can't be expanded offline; their chart reference and values are
written instead, with one line each on stdout.
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import json
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi.runtime.config as runtime_config
import yaml
from pulumi.runtime.mocks import test as run_under_mocks

from infra.config import NAMESPACE, SECRETS_KEY
from infra.discovery import SERVICES_DIR, discover

REPO_ROOT = Path(__file__).resolve().parent.parent

REDACTED = "<redacted>"
HELM_RELEASE = "kubernetes:helm.sh/v3:Release"
DYNAMIC_RESOURCE = "pulumi-python:dynamic:Resource"
# The placeholder digest a mock build returns; the real one is known only after a push.
MOCK_DIGEST = "sha256:" + "0" * 64


@dataclass
class Registered:
    type: str
    name: str
    inputs: dict[str, Any]
    custom: bool
    # The provider reference (URN::id) managing it, for custom resources.
    provider: str = ""


@dataclass
class RenderMocks(pulumi.runtime.Mocks):
    resources: list[Registered] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs):
        self.resources.append(Registered(args.typ, args.name, args.inputs, bool(args.custom), args.provider or ""))
        state = dict(args.inputs)
        if args.typ == "docker-build:index:Image":
            state["digest"] = MOCK_DIGEST
        elif args.typ == DYNAMIC_RESOURCE and "content_hash" in args.inputs:
            # The local stack's image builder (components.image.LocalImage).
            state["digest"], state["size"] = MOCK_DIGEST, "0 B"
        elif args.typ == DYNAMIC_RESOURCE:
            # Deterministic per name and keeper, so a rotation visibly changes the value; rendered as
            # after an update from the keeper before (components.secrets keeps that value as `previous`).
            def value(keeper: Any) -> str:
                seed = json.dumps([args.name, normalize(keeper)])
                return hashlib.sha256(seed.encode()).hexdigest()[: int(args.inputs.get("length", 32))]

            keeper = normalize(args.inputs.get("keeper"))
            state["result"] = value(keeper)
            if isinstance(keeper, str) and keeper.isdigit() and int(keeper) > 0:
                state["previous"] = value(str(int(keeper) - 1))
        return f"{args.name}-id", state

    def call(self, args: pulumi.runtime.MockCallArgs):
        return {}


def stack_file_config(stack: str, root: Path = REPO_ROOT) -> dict[str, Any]:
    """The `config:` of Pulumi.<stack>.yaml, keyed `sophia:<key>` as the engine passes it."""
    path = root / f"Pulumi.{stack}.yaml"
    if not path.is_file():
        known = sorted(p.name[len("Pulumi.") : -len(".yaml")] for p in root.glob("Pulumi.*.yaml"))
        raise SystemExit(f"render: no stack '{stack}' (no {path.name}); known stacks: {', '.join(known)}")
    doc = yaml.safe_load(path.read_text()) or {}
    return dict(doc.get("config") or {})


def _engine_value(value: Any) -> str:
    # The engine hands every config value to the program as a string; objects as JSON.
    return value if isinstance(value, str) else json.dumps(value)


def _ensure_event_loop() -> None:
    """The mock runtime schedules on the current event loop; an earlier asyncio.run() leaves none
    (or a closed one), so make one only then, and reuse it across renders."""
    try:
        usable = not asyncio.get_event_loop().is_closed()
    except RuntimeError:
        usable = False
    if not usable:
        asyncio.set_event_loop(asyncio.new_event_loop())


def run_program(
    stack: str, config: dict[str, Any], services_dir: Path = SERVICES_DIR, mocks: RenderMocks | None = None
) -> list[Registered]:
    """Run the Pulumi program under mocks with `config` and return what it registered."""
    from infra.program import run

    wire = {k: _engine_value(v) for k, v in config.items()}
    secret_keys = [k for k in wire if k == f"{NAMESPACE}:{SECRETS_KEY}"]
    runtime_config.set_all_config(wire, secret_keys)
    mocks = mocks if mocks is not None else RenderMocks()
    _ensure_event_loop()
    pulumi.runtime.set_mocks(mocks, project="sophia", stack=stack, preview=False)
    run_under_mocks(lambda: run(services_dir))()
    return mocks.resources


def offline_config(stack: str, services_dir: Path = SERVICES_DIR, root: Path = REPO_ROOT) -> dict[str, Any]:
    """The stack file's config, with every secret a service asks for stood in by a redacted value."""
    config = stack_file_config(stack, root)
    key = f"{NAMESPACE}:{SECRETS_KEY}"
    given = config.get(key) or {}
    if isinstance(given, dict):
        from infra.config import ALERT_SECRETS
        from infra.plan import API_KEYS, DATABASE_READ_URL, DATABASE_URL, PLATFORM_SECRETS

        needed = {s for spec in discover(services_dir) for s in spec.secrets} - PLATFORM_SECRETS
        stand_ins = {s: REDACTED for s in needed}
        # Parsed by the program (PgBouncer's config), so they must be well-formed.
        stand_ins[DATABASE_URL] = "postgresql://redacted:redacted@database.invalid:5432/sophia"
        stand_ins[DATABASE_READ_URL] = "postgresql://redacted:redacted@replica.database.invalid:5432/sophia"
        stand_ins[API_KEYS] = REDACTED
        stand_ins.update({name: REDACTED for name in ALERT_SECRETS.values()})
        config[key] = {**stand_ins, **given}
    return config


# How the mock runtime marks a secret value on the wire (pulumi's rpc.SECRET_SIG).
SECRET_SIG_KEY = "4dabf18193072939515e22adb298388d"
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"


def normalize(value: Any) -> Any:
    """Plain YAML-able data: secrets unwrapped, protobuf's floats back to ints."""
    if isinstance(value, dict):
        if value.get(SECRET_SIG_KEY) == SECRET_SIG:
            return normalize(value.get("value"))
        return {k: normalize(v) for k, v in sorted(value.items())}
    if isinstance(value, list):
        return [normalize(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _canonical(obj: dict[str, Any]) -> dict[str, Any]:
    head = {k: obj[k] for k in ("apiVersion", "kind", "metadata") if k in obj}
    return {**head, **{k: v for k, v in obj.items() if k not in head}}


def _redact(obj: dict[str, Any]) -> dict[str, Any]:
    if obj.get("kind") == "Secret":
        for field_name in ("data", "stringData"):
            if isinstance(obj.get(field_name), dict):
                obj[field_name] = {k: REDACTED for k in obj[field_name]}
    return obj


def kubernetes_objects(resources: list[Registered]) -> list[dict[str, Any]]:
    objs = []
    for r in resources:
        if r.custom and r.type.startswith("kubernetes:") and "apiVersion" in r.inputs and "kind" in r.inputs:
            objs.append(_canonical(_redact(normalize(r.inputs))))
    return objs


def helm_releases(resources: list[Registered]) -> list[dict[str, Any]]:
    return [normalize(r.inputs) for r in resources if r.type == HELM_RELEASE]


def remote_manifests(resources: list[Registered]) -> list[str]:
    """Manifests the provider reads at deploy time (yaml/v2 ConfigFile: a URL or a local file)."""
    return [str(r.inputs.get("file")) for r in resources if r.type == "kubernetes:yaml/v2:ConfigFile"]


def object_filename(obj: dict[str, Any]) -> str:
    meta = obj.get("metadata") or {}
    ns = meta.get("namespace") or "cluster"
    return f"{ns}/{obj['kind'].lower()}-{meta.get('name', 'unnamed')}.yaml"


def write(out: Path, objects: list[dict[str, Any]], releases: list[dict[str, Any]]) -> list[str]:
    notes = []
    for obj in objects:
        path = out / object_filename(obj)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(yaml.safe_dump(obj, sort_keys=False))
    for rel in releases:
        name = rel.get("name") or rel.get("chart")
        path = out / "charts" / f"{name}.yaml"
        path.parent.mkdir(parents=True, exist_ok=True)
        repo = (rel.get("repositoryOpts") or {}).get("repo", "")
        path.write_text(
            yaml.safe_dump(
                {
                    "chart": rel.get("chart"),
                    "version": rel.get("version"),
                    "repository": repo,
                    "namespace": rel.get("namespace"),
                    "values": rel.get("values", {}),
                },
                sort_keys=False,
            )
        )
        notes.append(
            f"chart {rel.get('chart')} {rel.get('version')} ({repo}) not expanded offline: "
            f"reference and values in {path.relative_to(out)}"
        )
    return notes


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--stack", required=True)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    started = time.perf_counter()
    try:
        resources = run_program(args.stack, offline_config(args.stack))
    except ValueError as exc:  # ConfigError / ManifestError: already say what to fix
        print(f"render: {exc}", file=sys.stderr)
        return 2
    objects = kubernetes_objects(resources)
    if args.out.exists():
        for old in sorted(args.out.rglob("*.yaml")):
            old.unlink()
    notes = write(args.out, objects, helm_releases(resources))
    notes += [
        f"manifest {url} not expanded offline: the provider reads it at deploy time"
        for url in remote_manifests(resources)
    ]
    for note in notes:
        print(note)
    builds = sum(1 for r in resources if r.type == "docker-build:index:Image")
    print(
        f"rendered {len(objects)} Kubernetes objects of stack '{args.stack}' into {args.out} "
        f"in {time.perf_counter() - started:.2f}s"
    )
    if builds:
        print(f"{builds} images are built at deploy time; their digests here are placeholders ({MOCK_DIGEST[:15]}...)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
