"""Where a service's container image comes from: built and pushed, or given."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pulumi
import pulumi_docker_build as docker_build
from pulumi.dynamic import CreateResult, DiffResult, Resource, ResourceProvider, UpdateResult

# The local stack's builder: buildah, offline, into the registry on this machine.
LOCAL_BUILDER = Path(__file__).resolve().parent.parent / "toolchain" / "image-build.sh"
IGNORED = {"__pycache__", ".pytest_cache", ".ruff_cache"}


@dataclass(frozen=True)
class ImageBuild:
    """Build `dockerfile` with `context` and push it to `repository:tag`; deploy by digest."""

    context: Path
    dockerfile: Path
    repository: str
    tag: str
    platforms: tuple[str, ...] = ("linux/amd64",)
    build_args: dict[str, str] = field(default_factory=dict)
    # "docker-build" (dev/prod: BuildKit through pulumi-docker-build) or "local" (the local
    # stack: buildah into the registry on this machine, toolchain/image-build.sh).
    builder: str = "docker-build"


ImageSource = ImageBuild | str


def context_hash(source: ImageBuild) -> str:
    """What the image is made of: the Dockerfile, its build args and every path it COPYs from the
    context. Unchanged inputs give the same hash, so the local builder has nothing to do."""
    digest = hashlib.sha256(source.dockerfile.read_bytes())
    digest.update(json.dumps(source.build_args, sort_keys=True).encode())
    copied: set[str] = set()
    for line in source.dockerfile.read_text().splitlines():
        words = line.split()
        if words[:1] == ["COPY"] and not any(w.startswith("--from") for w in words):
            # Build args expand in COPY sources (`services/${SERVICE}`).
            copied.update(
                re.sub(r"\$\{?(\w+)\}?", lambda m: source.build_args.get(m.group(1), ""), w)
                for w in words[1:-1]
                if not w.startswith("--")
            )
    for rel in sorted(copied):
        top = source.context / rel
        files = [top] if top.is_file() else sorted(p for p in top.rglob("*") if p.is_file())
        for f in files:
            if any(part in IGNORED or part.endswith(".egg-info") for part in f.parts) or f.suffix == ".pyc":
                continue  # what toolchain/images.dockerignore keeps out of the build context
            digest.update(str(f.relative_to(source.context)).encode() + b"\0" + f.read_bytes())
    return digest.hexdigest()[:16]


def local_build(props: dict[str, Any]) -> dict[str, Any]:
    args = [f"{k}={v}" for k, v in sorted((props.get("build_args") or {}).items())]
    proc = subprocess.run(
        [
            str(LOCAL_BUILDER),
            "build",
            props["repository"],
            props["tag"],
            props["context"],
            props["dockerfile"],
            props["content_hash"],
            *args,
        ],
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        raise RuntimeError(f"building {props['repository']} failed:\n{proc.stderr[-3000:]}")
    result = json.loads(proc.stdout.strip().splitlines()[-1])
    return {**props, "digest": result["digest"], "size": result["size"]}


def _local_props(source: ImageBuild) -> dict[str, Any]:
    return {
        "repository": source.repository,
        "tag": source.tag,
        "context": str(source.context),
        "dockerfile": str(source.dockerfile),
        "build_args": dict(source.build_args),
        "content_hash": context_hash(source),
    }


def local_digest(source: ImageBuild) -> str:
    """Build `source` into the machine's registry as the local stack does (unchanged content is not
    rebuilt) and return its digest."""
    return str(local_build(_local_props(source))["digest"])


class _LocalImageProvider(ResourceProvider):
    """Builds and pushes when the content hash changes; a no-op `pulumi up` calls nothing."""

    def create(self, props: dict[str, Any]) -> CreateResult:
        return CreateResult(id_=f"{props['repository']}:c-{props['content_hash']}", outs=local_build(props))

    def diff(self, _id: str, olds: dict[str, Any], news: dict[str, Any]) -> DiffResult:
        keys = ("repository", "tag", "content_hash", "build_args", "dockerfile")
        changed = [k for k in keys if olds.get(k) != news.get(k)]
        return DiffResult(changes=bool(changed), replaces=[], delete_before_replace=False)

    def update(self, _id: str, _olds: dict[str, Any], news: dict[str, Any]) -> UpdateResult:
        return UpdateResult(outs=local_build(news))


class LocalImage(Resource):
    digest: pulumi.Output[str]
    size: pulumi.Output[str]  # as buildah reports it, e.g. "412 MB"

    def __init__(self, name: str, source: ImageBuild, opts: pulumi.ResourceOptions | None = None):
        props = {**_local_props(source), "digest": None, "size": None}
        super().__init__(_LocalImageProvider(), name, props, opts)


def image_reference(name: str, source: ImageSource, parent: pulumi.Resource) -> pulumi.Output[str]:
    """The image the Deployment runs: a pinned digest for built images, the given reference otherwise."""
    if isinstance(source, str):
        return pulumi.Output.from_input(source)
    if source.builder == "local":
        local = LocalImage(f"{name}-image", source, opts=pulumi.ResourceOptions(parent=parent))
        return pulumi.Output.concat(source.repository, "@", local.digest)
    image = docker_build.Image(
        f"{name}-image",
        context=docker_build.BuildContextArgs(location=str(source.context)),
        dockerfile=docker_build.DockerfileArgs(location=str(source.dockerfile)),
        tags=[f"{source.repository}:{source.tag}"],
        platforms=[docker_build.Platform(p) for p in source.platforms],
        build_args=source.build_args or None,
        push=True,
        # Registry credentials come from the ambient docker config (CI logs in first).
        opts=pulumi.ResourceOptions(parent=parent),
    )
    # By digest, so a re-pushed tag can never change what runs.
    return pulumi.Output.concat(source.repository, "@", image.digest)
