"""The program's own speed.

1. Evaluation of the prod stack under Pulumi mocks (no cluster; target < 3 s).
2. On a fresh local cluster of its own with the real node (scripts/own-cluster.sh; `make up`'s
   cluster is stopped for the run and resumed after), the same objects deployed two ways, side by
   side: `kubectl apply --server-side` of the local stack's rendered objects plus waiting for every
   workload to be rolled out (what the provider awaits: Deployments, StatefulSets, DaemonSets), and
   `pulumi up` of the local stack; then a no-op `pulumi up`. Targets: up within 2x the apply, the
   no-op under 3 s. The first apply meets a node without the images (it pulls them) and is shown
   apart; the figures compared are on a node that has them.

`--mocks-only`: part 1 only (no cluster). `--on-cluster`: part 2's body, run by own-cluster.sh.
"""

from __future__ import annotations

import argparse
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

started = time.perf_counter()
from infra.render import kubernetes_objects, offline_config, run_program  # noqa: E402 (timed import)

imported = time.perf_counter() - started
REPO = Path(__file__).resolve().parent.parent
TARGET_SECONDS = 3.0
UP_TARGET_RATIO = 2.0
NOOP_TARGET_SECONDS = 3.0
RUNS = 5
NOOP_RUNS = 2


def mocks() -> None:
    config = offline_config("prod")
    timings, registered, objects = [], 0, 0
    for _ in range(RUNS):
        t0 = time.perf_counter()
        resources = run_program("prod", config)
        timings.append(time.perf_counter() - t0)
        registered, objects = len(resources), len(kubernetes_objects(resources))
    first, median = timings[0], statistics.median(timings)
    print(f"bench-program: prod stack under mocks: {registered} resources registered ({objects} Kubernetes objects)")
    print(
        f"bench-program: imports {imported:.2f}s, first evaluation {first:.3f}s, "
        f"median of {RUNS} {median:.3f}s, max {max(timings):.3f}s (target < {TARGET_SECONDS:.0f}s)"
    )
    ok = imported + first < TARGET_SECONDS
    print(f"bench-program: {'within' if ok else 'OVER'} target (imports + first evaluation {imported + first:.2f}s)")


# ------------------------------------------------------------------ on the cluster
FIELD_MANAGER = "sophia-bench"
WORKLOADS = ("Deployment", "StatefulSet", "DaemonSet")
# The label of the node's volumes (toolchain/node.sh).
LOCAL_VOLUME = "sophia.ai/local-volume=true"


def local_objects() -> list[dict[str, Any]]:
    """Every object `pulumi up --stack local` creates, as the program declares them: the stack run
    under mocks (infra.render) whose image builds answer with the real digest in the machine's
    registry (built as the local stack builds them; unchanged content is not rebuilt), secrets kept
    (the mocks' deterministic values, consistent across the objects that share them), the CRDs from
    the toolchain's manifests among them."""
    from components.image import local_build
    from infra.render import DYNAMIC_RESOURCE, RenderMocks, normalize

    class RealImages(RenderMocks):
        def new_resource(self, args):  # type: ignore[no-untyped-def]
            rid, state = super().new_resource(args)
            if args.typ == DYNAMIC_RESOURCE and "content_hash" in args.inputs:
                state["digest"] = local_build(normalize(args.inputs))["digest"]
            return rid, state

    resources = run_program("local", offline_config("local"), mocks=RealImages())
    return [
        normalize(r.inputs)
        for r in resources
        if r.custom and r.type.startswith("kubernetes:") and "apiVersion" in r.inputs and "kind" in r.inputs
    ]


def kubectl(*args: str, stdin: str | None = None, timeout: float = 600) -> None:
    import local_stack

    proc = subprocess.run(
        ["kubectl", "--kubeconfig", str(local_stack.KUBECONFIG), *args],
        input=stdin,
        text=True,
        capture_output=True,
        timeout=timeout,
    )
    if proc.returncode != 0:
        raise SystemExit(
            f"bench-program: kubectl {' '.join(args[:3])} failed:\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}"
        )


def documents(objects: list[dict[str, Any]]) -> str:
    import yaml

    return yaml.safe_dump_all(objects, sort_keys=False)


def first_wave(obj: dict[str, Any]) -> bool:
    """Applied first: what the rest needs to exist (a CR's definition, a namespace)."""
    return obj["kind"] in ("CustomResourceDefinition", "Namespace")


def apply_and_wait(objects: list[dict[str, Any]]) -> tuple[float, float]:
    """kubectl apply --server-side of `objects` (definitions and namespaces first, as one would), then
    `rollout status` of every workload; wall seconds and CPU seconds (kubectl's)."""
    t0, cpu0 = time.perf_counter(), children_cpu()
    apply = ("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-")
    kubectl(*apply, stdin=documents([o for o in objects if first_wave(o)]))
    kubectl("wait", "--for=condition=Established", "crd", "--all", "--timeout=120s")
    kubectl(*apply, stdin=documents([o for o in objects if not first_wave(o)]))
    for obj in objects:
        if obj["kind"] in WORKLOADS:
            meta = obj["metadata"]
            kubectl(
                "-n", meta["namespace"], "rollout", "status", f"{obj['kind'].lower()}/{meta['name']}", "--timeout=600s"
            )
    return time.perf_counter() - t0, children_cpu() - cpu0


def remove(objects: list[dict[str, Any]]) -> None:
    """Delete what apply_and_wait made (waiting for the namespaces to go), and give back the node
    labels it set (a Node is patched, never deleted)."""
    nodes = [o for o in objects if o["kind"] == "Node"]
    kubectl(
        "delete",
        "--ignore-not-found",
        "--wait=true",
        "-f",
        "-",
        stdin=documents([o for o in objects if o["kind"] != "Node"]),
    )
    bare = [{"apiVersion": "v1", "kind": "Node", "metadata": {"name": n["metadata"]["name"]}} for n in nodes]
    kubectl("apply", "--server-side", f"--field-manager={FIELD_MANAGER}", "-f", "-", stdin=documents(bare))
    release_volumes()


def release_volumes() -> None:
    """The node's volumes (toolchain/node.sh) are Retain: a deleted claim leaves its volume Released,
    which no later claim binds, so the next deploy's Jaeger and mcp-context would wait for a volume
    forever (the first run of this bench did). Make them Available again and empty, as on a fresh
    cluster: what a pass left there is not the next one's (the mocks' mcp-context wrote a Qdrant
    shard of other dimensions, which the real one refused to open, and the up waited for its
    rollout until it was stopped)."""
    import json

    import local_stack

    listed = subprocess.run(
        ["kubectl", "--kubeconfig", str(local_stack.KUBECONFIG), "get", "pv", "-l", LOCAL_VOLUME, "-o", "json"],
        text=True,
        capture_output=True,
        check=True,
    )
    for pv in json.loads(listed.stdout)["items"]:
        if pv["status"].get("phase") == "Released":
            empty_directory(Path(pv["spec"]["hostPath"]["path"]))
            unclaim = '[{"op": "remove", "path": "/spec/claimRef"}]'
            kubectl("patch", "pv", pv["metadata"]["name"], "--type", "json", "-p", unclaim)


def empty_directory(path: Path) -> None:
    """Remove what is inside `path` (a node volume on this machine), keeping the directory itself
    (its mode is the node's: writable by the pods' users)."""
    import shutil

    for entry in path.iterdir():
        if entry.is_dir() and not entry.is_symlink():
            shutil.rmtree(entry)
        else:
            entry.unlink()


def children_cpu() -> float:
    """User + system CPU seconds of every finished child process and its own children (the pulumi
    CLI reaps its language host, the program and the provider plugins): beside the wall time, the
    figure a machine shared with other work does not inflate."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


def pulumi_up(*extra: str) -> tuple[float, float]:
    """`pulumi up` of the local stack: wall seconds, CPU seconds."""
    import local_stack

    t0, cpu0 = time.perf_counter(), children_cpu()
    proc = local_stack.pulumi("up", "--yes", "--skip-preview", *extra, capture=True, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"bench-program: pulumi up failed:\n{proc.stdout[-3000:]}{proc.stderr[-3000:]}")
    return time.perf_counter() - t0, children_cpu() - cpu0


def on_cluster() -> int:
    import local_stack

    objects = local_objects()
    workloads = sum(1 for o in objects if o["kind"] in WORKLOADS)
    print(
        f"bench-program: the local stack on a fresh local cluster (real node): {len(objects)} objects, {workloads} "
        f"workloads; {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores"
    )
    width = 82
    print(f"bench-program:   {''.ljust(width)}    wall      CPU")

    def row(label: str, run: tuple[float, float], note: str = "") -> None:
        """One figure, printed as soon as it is measured (a run stopped half-way keeps what it had)."""
        load = ", ".join(f"{x:.1f}" for x in os.getloadavg())
        print(f"bench-program:   {label.ljust(width)}  {run[0]:6.1f}s  {run[1]:6.1f}s  load {load}  {note}", flush=True)

    cold = apply_and_wait(objects)
    row("kubectl apply --server-side + every workload rolled out (node pulls the images)", cold)
    remove(objects)
    warm = apply_and_wait(objects)
    row("kubectl apply --server-side + every workload rolled out", warm)
    remove(objects)
    local_stack.ensure_stack()
    up = pulumi_up()
    ratio = up[0] / warm[0]
    row("pulumi up (fresh state)", up, f"{ratio:.1f}x the apply (target <= {UP_TARGET_RATIO:.0f}x)")
    noops = []
    for i in range(NOOP_RUNS):
        noops.append(pulumi_up("--expect-no-changes"))
        row(f"pulumi up, no-op ({i + 1} of {NOOP_RUNS})", noops[-1])
    noop = min(noops)
    print(
        f"bench-program: up {'within' if ratio <= UP_TARGET_RATIO else 'OVER'} {UP_TARGET_RATIO:.0f}x the apply; "
        f"no-op (best of {NOOP_RUNS}) {'within' if noop[0] < NOOP_TARGET_SECONDS else 'OVER'} "
        f"{NOOP_TARGET_SECONDS:.0f}s"
    )
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parts = parser.add_mutually_exclusive_group()
    parts.add_argument("--mocks-only", action="store_true", help="the evaluation under mocks only (no cluster)")
    parts.add_argument("--on-cluster", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    sys.path.insert(0, str(REPO / "scripts"))  # local_stack
    if args.on_cluster:
        return on_cluster()
    mocks()
    if args.mocks_only:
        return 0
    # Its own fresh cluster, as make e2e has (the ports and the real node are machine-wide).
    here = Path(__file__).resolve()
    return subprocess.run(
        [str(REPO / "scripts" / "own-cluster.sh"), "bench-program", sys.executable, str(here), "--on-cluster"],
        cwd=REPO,
        check=False,
    ).returncode


if __name__ == "__main__":
    sys.exit(main())
