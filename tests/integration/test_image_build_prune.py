"""toolchain/image-build.sh keeps buildah's storage bounded: only the newest builds per repository stay."""

import shutil
import subprocess
import uuid
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[2] / "toolchain" / "image-build.sh"


def buildah(*args: str) -> str:
    return subprocess.run(["buildah", *args], check=True, capture_output=True, text=True).stdout.strip()


@pytest.fixture
def repository():
    if shutil.which("buildah") is None:
        pytest.fail("buildah is not installed: it is in apt-packages.txt (make bootstrap installs it)")
    repo = f"localhost/sophia-prune-test-{uuid.uuid4().hex[:8]}"
    yield repo
    for name in buildah(
        "images", "--noheading", "--format", "{{.Name}}:{{.Tag}}", "--filter", f"reference={repo}"
    ).split():
        subprocess.run(["buildah", "rmi", "-f", name], capture_output=True)


def build(repo: str, n: int) -> None:
    """A tiny distinct image tagged like the builder does (a content tag; the newest also `local`)."""
    container = buildah("from", "scratch")
    buildah("config", "--label", f"build={n}", container)
    buildah("commit", "--rm", container, f"{repo}:c-{n}")


def prune(repo: str) -> None:
    subprocess.run(
        [str(SCRIPT), "prune", repo], check=True, env={"KEEP_BUILDS": "2", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    )


def tags(repo: str) -> set[str]:
    listing = buildah("images", "--noheading", "--format", "{{.Tag}}", "--filter", f"reference={repo}")
    return set(listing.split())


def test_prune_keeps_the_newest_builds_and_an_image_a_build_still_uses(repository):
    for n in range(1, 6):
        build(repository, n)
    buildah("tag", f"{repository}:c-5", f"{repository}:local")  # the newest build has two names
    in_use = buildah("from", "--pull-never", f"{repository}:c-1")  # a build elsewhere still on an old image
    try:
        prune(repository)
        assert tags(repository) == {"c-5", "local", "c-4", "c-1"}
    finally:
        buildah("rm", in_use)
    prune(repository)
    assert tags(repository) == {"c-5", "local", "c-4"}
