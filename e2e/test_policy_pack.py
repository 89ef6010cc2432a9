"""The policy pack (policy/) on the real engine: `pulumi preview --policy-pack` of the local stack
passes clean with the local policy config, and a stricter config (prod's replica floor) is
refused with the policy's own message. Runs after test_local_stack's `up` (file order)."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path

import local_stack

POLICY = local_stack.REPO / "policy"


def policy_venv() -> None:
    """The pack's own virtualenv (PulumiPolicy.yaml: venv), as CI makes it."""
    venv = POLICY / "venv"
    if not (venv / "bin" / "python").exists():
        subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    subprocess.run(
        [
            str(venv / "bin" / "pip"),
            "install",
            "-q",
            "--disable-pip-version-check",
            "-r",
            str(POLICY / "requirements.txt"),
        ],
        check=True,
    )


def preview_with(config: Path) -> subprocess.CompletedProcess[str]:
    return local_stack.pulumi(
        "preview", "--policy-pack", str(POLICY), "--policy-pack-config", str(config), capture=True, check=False
    )


def test_the_local_stack_passes_the_policy_pack(timings) -> None:
    policy_venv()
    local_stack.ensure_stack()
    started = time.perf_counter()
    proc = preview_with(POLICY / "config" / "local.json")
    timings.append(("preview with policy pack", time.perf_counter() - started))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "sophia-guardrails" in proc.stdout  # the pack ran
    assert "mandatory" not in proc.stdout.lower(), proc.stdout


def test_a_violation_is_refused_with_the_policys_message(tmp_path: Path) -> None:
    stricter = json.loads((POLICY / "config" / "local.json").read_text())
    stricter["deployment-companions"]["minReplicas"] = 2  # prod's floor; the local stack runs 1 (but mcp-context)
    config = tmp_path / "stricter.json"
    config.write_text(json.dumps(stricter))
    proc = preview_with(config)
    assert proc.returncode != 0
    assert "deployment-companions" in proc.stdout
    assert "sophia/mcp-github: its HPA allows 1 replica(s); this stack needs at least 2" in proc.stdout
    assert "sophia/mcp-context: its HPA allows" not in proc.stdout  # two replicas: the owner and a follower
