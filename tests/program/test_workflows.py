"""The GitHub Actions workflows lint clean with actionlint (built by scripts/bootstrap.sh at the
pinned version) and keep the guarantees the README promises: least-privilege permissions,
actions pinned by commit, previews with the policy pack, prod behind its environment."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[2]
WORKFLOWS = sorted((REPO / ".github" / "workflows").glob("*.yml"))
ACTIONS = sorted((REPO / ".github" / "actions").glob("*/action.yml"))
ACTIONLINT = REPO / ".venv" / "bin" / "actionlint"
PINNED = re.compile(r"^[\w.-]+/[\w.-]+(/[\w./-]+)?@[0-9a-f]{40}$")


def load(path: Path) -> dict:
    doc = yaml.safe_load(path.read_text())
    doc["on"] = doc.pop(True, doc.get("on"))  # YAML 1.1 reads the key `on` as true
    return doc


def steps(doc: dict) -> list[dict]:
    if "runs" in doc:
        return doc["runs"]["steps"]
    return [s for job in doc["jobs"].values() for s in job.get("steps", [])]


PIN_COMMENT = re.compile(r"@[0-9a-f]{40} # v(\d+)[\w.-]*")


def by_major_version(tmp_path: Path, edit=lambda text: text) -> Path:
    """A copy of .github/ whose commit pins read `@vN` (from their `# vN.x.y` comment): actionlint
    knows popular actions' inputs by major version, not by commit, so this copy is how it checks
    every `with:` against the pinned release's inputs."""
    for path in WORKFLOWS + ACTIONS:
        copy = tmp_path / path.relative_to(REPO)
        copy.parent.mkdir(parents=True, exist_ok=True)
        copy.write_text(edit(PIN_COMMENT.sub(r"@v\1", path.read_text())))
    return tmp_path


def actionlint(root: Path) -> subprocess.CompletedProcess[str]:
    assert ACTIONLINT.is_file(), "scripts/bootstrap.sh builds actionlint into .venv/bin"
    files = sorted(str(p) for p in (root / ".github" / "workflows").glob("*.yml"))
    return subprocess.run([str(ACTIONLINT), "-color=false", *files], cwd=root, capture_output=True, text=True)


def test_actionlint_passes(tmp_path: Path) -> None:
    assert [w.name for w in WORKFLOWS] == ["deploy.yml", "preview.yml"]
    for root in (REPO, by_major_version(tmp_path)):
        result = actionlint(root)
        assert result.returncode == 0, result.stdout + result.stderr


def test_actionlint_catches_a_wrong_action_input(tmp_path: Path) -> None:
    """A misspelt pulumi/actions input fails the lint (so a pass above means something)."""
    root = by_major_version(tmp_path, lambda text: text.replace("edit-pr-comment:", "edit-pr-coment:"))
    result = actionlint(root)
    assert (
        result.returncode == 1
        and 'input "edit-pr-coment" is not defined in action "pulumi/actions@v6"' in result.stdout
    )


def test_every_third_party_action_is_pinned_by_commit() -> None:
    for path in WORKFLOWS + ACTIONS:
        for step in steps(load(path)):
            uses = step.get("uses")
            if uses and not uses.startswith("./"):
                assert PINNED.match(uses), f"{path.name}: {uses} is not pinned to a commit SHA"
        for line in path.read_text().splitlines():
            if "uses:" in line and "@" in line:
                assert PIN_COMMENT.search(line), f"{path.name}: say the release a pin is (`@<sha> # vX.Y.Z`): {line}"


def test_permissions_are_least_privilege() -> None:
    for path in WORKFLOWS:
        doc = load(path)
        assert doc["permissions"] == {"contents": "read"}, path.name
        for name, job in doc["jobs"].items():
            granted = job.get("permissions", {})
            assert set(granted.values()) <= {"read", "write"}, (path.name, name)
            writes = {k for k, v in granted.items() if v == "write"}
            assert writes <= {"id-token", "pull-requests"}, (path.name, name, writes)


def test_previews_run_the_policy_pack_on_dev_and_prod() -> None:
    preview = load(REPO / ".github" / "workflows" / "preview.yml")
    assert list(preview["on"]) == ["pull_request"]
    job = preview["jobs"]["preview"]
    assert job["strategy"]["matrix"]["stack"] == ["dev", "prod"] and job["needs"] == "checks"
    (pulumi,) = [s for s in job["steps"] if s.get("uses", "").startswith("pulumi/actions@")]
    assert pulumi["with"]["command"] == "preview" and pulumi["with"]["policyPacks"] == "policy"
    assert pulumi["with"]["comment-on-pr"] is True and pulumi["with"]["edit-pr-comment"] is True
    for stack in ("dev", "prod"):
        assert (REPO / "policy" / "config" / f"{stack}.json").is_file()


def test_prod_deploys_only_from_a_tag_behind_its_environment() -> None:
    deploy = load(REPO / ".github" / "workflows" / "deploy.yml")
    prod, dev = deploy["jobs"]["deploy-prod"], deploy["jobs"]["deploy-dev"]
    assert prod["environment"] == "prod" and prod["if"] == "startsWith(github.ref, 'refs/tags/v')"
    assert dev["if"] == "github.ref == 'refs/heads/main'"
    for job in (prod, dev):
        assert job["concurrency"]["cancel-in-progress"] is False and job["needs"] == "images"
