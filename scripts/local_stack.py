"""Drive the local stack with the real Pulumi engine: up, down, and what is running.

Run through `make up` / `make down` / `make e2e`, which first put the hermetic
toolchain on PATH (toolchain/env.sh) and start the local control plane. State lives
in a file backend under the project (.state/pulumi); the local stack's passphrase
protects nothing secret (there is no cloud account) and is fixed here.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".state"
STACK = "local"
KUBECONFIG = STATE / "kubeconfig"


def pulumi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PULUMI_BACKEND_URL", f"file://{STATE / 'pulumi'}")  # as toolchain/env.sh
    env.setdefault("PULUMI_CONFIG_PASSPHRASE", "local-only-not-a-secret")  # as toolchain/env.sh
    env.update(
        {
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
        }
    )
    return env


def ensure_backend(env: dict[str, str]) -> None:
    """A file backend's directory must exist before pulumi can use it."""
    url = env["PULUMI_BACKEND_URL"]
    if url.startswith("file://"):
        Path(url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)


def pulumi(*args: str, capture: bool = False, check: bool = True) -> subprocess.CompletedProcess[str]:
    ensure_backend(pulumi_env())
    cmd = ["pulumi", *args, "--stack", STACK, "--non-interactive"]
    return subprocess.run(cmd, cwd=REPO, env=pulumi_env(), text=True, check=check, capture_output=capture)


def ensure_stack() -> None:
    ensure_backend(pulumi_env())
    listed = subprocess.run(
        ["pulumi", "stack", "ls", "--json", "--non-interactive"],
        cwd=REPO,
        env=pulumi_env(),
        text=True,
        capture_output=True,
        check=True,
    )
    if not any(s["name"] == STACK for s in json.loads(listed.stdout or "[]")):
        subprocess.run(
            ["pulumi", "stack", "init", STACK, "--non-interactive"], cwd=REPO, env=pulumi_env(), text=True, check=True
        )


@dataclass
class Timed:
    label: str
    seconds: float


def timed(label: str, *args: str, capture: bool = False) -> tuple[Timed, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = pulumi(*args, capture=capture)
    return Timed(label, time.perf_counter() - started), proc


def outputs() -> dict[str, Any]:
    return json.loads(pulumi("stack", "output", "--json", "--show-secrets", capture=True).stdout or "{}")


def client():
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig

    return Client(KubeConfig.from_file(str(KUBECONFIG)), field_manager="sophia-e2e")


def running_summary() -> list[str]:
    """One line per namespace of ours: workloads ready/desired, and where GPU pods run."""
    from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
    from lightkube.resources.core_v1 import Namespace, Pod

    kube = client()
    lines = []
    for ns in sorted(n.metadata.name for n in kube.list(Namespace, labels={"app.kubernetes.io/part-of": "sophia"})):
        parts = []
        for kind in (Deployment, StatefulSet):
            for obj in kube.list(kind, namespace=ns):
                ready = obj.status.readyReplicas or 0 if obj.status else 0
                parts.append(f"{obj.metadata.name} {ready}/{obj.spec.replicas}")
        lines.append(f"{ns}: " + (", ".join(parts) if parts else "(no workloads)"))
    for ds in kube.list(DaemonSet, namespace="kube-system", labels={"app.kubernetes.io/part-of": "sophia"}):
        lines.append(f"kube-system: {ds.metadata.name} {ds.status.numberReady}/{ds.status.desiredNumberScheduled}")
    gpu_pods = [
        p
        for p in kube.list(Pod, namespace="sophia")
        if any("nvidia.com/gpu" in ((c.resources.limits or {}) if c.resources else {}) for c in p.spec.containers)
    ]
    for p in gpu_pods:
        lines.append(f"GPU pod {p.metadata.name} on node {p.spec.nodeName}")
    return lines


def cmd_up() -> int:
    ensure_stack()
    step, _ = timed("pulumi up", "up", "--yes", "--skip-preview")
    print(f"[up] pulumi up finished in {step.seconds:.0f}s")
    stack_outputs = outputs()
    api_key = stack_outputs.pop("api_key", None)
    print("[up] stack outputs:")
    print(json.dumps(stack_outputs, indent=2))
    if api_key:
        # Every route but /healthz, /readyz and /metrics needs an identity (docs/auth.md).
        print(f"[up] the local stack's API key (tenant 'local', every scope): export SOPHIA_API_KEY={api_key}")
        print('[up]   e.g. curl -H "Authorization: Bearer $SOPHIA_API_KEY" ...; again: make api-key')
    print("[up] running:")
    for line in running_summary():
        print(f"  {line}")
    print("[up] not deployed locally, and why:")
    for line in stack_outputs.get("not_deployed", []) + [
        "images: none is pulled; the control plane's nodes are simulated (kwok), so pods run no code "
        "(`make dev` runs the services)"
    ]:
        print(f"  - {line}")
    return 0


def cmd_down() -> int:
    ensure_stack()
    step, _ = timed("pulumi destroy", "destroy", "--yes", "--skip-preview")
    print(f"[down] pulumi destroy finished in {step.seconds:.0f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "summary", "api-key"])
    args = parser.parse_args(argv)
    if args.command == "summary":
        print("\n".join(running_summary()))
        return 0
    if args.command == "api-key":
        print(pulumi("stack", "output", "--show-secrets", "api_key", capture=True).stdout.strip())
        return 0
    return {"up": cmd_up, "down": cmd_down}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
