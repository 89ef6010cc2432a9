"""Where a service's container image comes from: built and pushed, or given."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import pulumi
import pulumi_docker_build as docker_build


@dataclass(frozen=True)
class ImageBuild:
    """Build `dockerfile` with `context` and push it to `repository:tag`; deploy by digest."""

    context: Path
    dockerfile: Path
    repository: str
    tag: str
    platforms: tuple[str, ...] = ("linux/amd64",)
    build_args: dict[str, str] = field(default_factory=dict)


ImageSource = ImageBuild | str


def image_reference(name: str, source: ImageSource, parent: pulumi.Resource) -> pulumi.Output[str]:
    """The image the Deployment runs: a pinned digest for built images, the given reference otherwise."""
    if isinstance(source, str):
        return pulumi.Output.from_input(source)
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
