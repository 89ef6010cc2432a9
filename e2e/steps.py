"""What the e2e modules do alike to a deployed stack: kubectl against the local cluster, roll
every Deployment, read a no-op up's output, wait for destroy to take the namespaces."""

from __future__ import annotations

import re
import subprocess
import time

import local_stack
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace

OUR_NAMESPACES = {"sophia", "sophia-data", "sophia-observability", "sophia-ingress"}
# A line of `pulumi up`'s summary that counts a change ("2 to update", "1 created").
CHANGES = re.compile(r"\b\d+ (to )?(create|update|replace|delete)")


def kubectl(
    *args: str, check: bool = True, timeout: float = 600, stdin: str | None = None
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        ["kubectl", "--kubeconfig", str(local_stack.KUBECONFIG), *args],
        text=True,
        capture_output=True,
        check=check,
        input=stdin,
        timeout=timeout,
    )


def failed_rollouts(kube) -> list[tuple[str, str, str, str]]:
    """`rollout restart` of every Deployment of the services and data namespaces, one at a time,
    each awaited; (namespace, name, stdout, stderr) of each that did not complete."""
    failed = []
    for ns in ("sophia", "sophia-data"):
        for name in [d.metadata.name for d in kube.list(Deployment, namespace=ns)]:
            kubectl("-n", ns, "rollout", "restart", f"deploy/{name}")
            proc = kubectl("-n", ns, "rollout", "status", f"deploy/{name}", "--timeout=300s", check=False)
            if proc.returncode != 0:
                failed.append((ns, name, proc.stdout, proc.stderr))
    return failed


def namespaces_left(kube, seconds: float = 60) -> set[str]:
    """Ours still present after waiting up to `seconds` (Pulumi waits for a namespace's deletion;
    the namespace controller may need a moment more)."""
    deadline = time.monotonic() + seconds
    while (remaining := {n.metadata.name for n in kube.list(Namespace)} & OUR_NAMESPACES) and (
        time.monotonic() < deadline
    ):
        time.sleep(2)
    return remaining
