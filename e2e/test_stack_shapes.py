"""dev and prod through the real engine: each stack's own config (its stack file and what its ESC
environment gives, evaluated by esc-eval against a stand-in Secrets Manager) deployed to the local
control plane on simulated nodes shaped like prod (three zones, the GH200 pool: arm64, one GPU
each), with the services' images from the machine's registry by digest. Only what needs the
internet is changed, and each change is printed with its reason. Up, every workload placed as
the stack wants it, a rolling restart of every Deployment, a no-op up, destroy.

Runs after test_local_stack.py (which builds the images) under `make e2e`; `make e2e STACK=prod`
deploys only the prod shape.
"""

from __future__ import annotations

import json
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import local_stack
import pytest
import yaml
from lightkube.resources.apps_v1 import Deployment, StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import Node, Pod
from steps import CHANGES, failed_rollouts, kubectl, namespaces_left

from components.image import ImageBuild, local_digest
from infra.config import parse_stack_config
from infra.discovery import discover
from infra.plan import plan_services
from infra.render import offline_config, stack_file_config

SHAPES = os.environ.get("SOPHIA_E2E_SHAPES", "dev prod").split()
REPO = local_stack.REPO
ESC_EVAL = REPO / ".venv" / "bin" / "esc-eval"
# Prod's machines: CPU nodes in three zones and the GH200 pool (Pulumi.prod.yaml: 2 nodes, 1 GPU, arm64).
ZONES = ("zone-a", "zone-b", "zone-c")
NODE_KNOBS = {"SOPHIA_CPU_NODES": "3", "SOPHIA_ZONES": " ".join(ZONES), "SOPHIA_GPU_POOLS": "gh200:2:1:arm64"}
SHAPE_NODES = [f"kwok-cpu-{i}" for i in range(3)] + [f"kwok-gpu-gh200-{i}" for i in range(2)]
# No volume provisioner here: static volumes on the simulated nodes, bound on first use.
VOLUME_CLASS = "sophia-shapes"
VOLUMES_PER_NODE = 4
REAL_NODE = "sophia-node"


def volumes_yaml() -> str:
    docs: list[dict[str, Any]] = [
        {
            "apiVersion": "storage.k8s.io/v1",
            "kind": "StorageClass",
            "metadata": {"name": VOLUME_CLASS},
            "provisioner": "kubernetes.io/no-provisioner",
            "volumeBindingMode": "WaitForFirstConsumer",
            "reclaimPolicy": "Delete",
        }
    ]
    for node in SHAPE_NODES:
        for i in range(VOLUMES_PER_NODE):
            docs.append(
                {
                    "apiVersion": "v1",
                    "kind": "PersistentVolume",
                    "metadata": {"name": f"shape-{node}-{i}", "labels": {"sophia.ai/shape-volume": "true"}},
                    "spec": {
                        "capacity": {"storage": "200Gi"},
                        "accessModes": ["ReadWriteOnce"],
                        "persistentVolumeReclaimPolicy": "Retain",
                        "storageClassName": VOLUME_CLASS,
                        # Never mounted: the simulated kubelet runs no containers.
                        "hostPath": {"path": f"/nonexistent/{node}/{i}"},
                        "nodeAffinity": {
                            "required": {
                                "nodeSelectorTerms": [
                                    {
                                        "matchExpressions": [
                                            {"key": "kubernetes.io/hostname", "operator": "In", "values": [node]}
                                        ]
                                    }
                                ]
                            }
                        },
                    },
                }
            )
    return yaml.safe_dump_all(docs)


@pytest.fixture(scope="module")
def kube():
    return local_stack.client()


@pytest.fixture(scope="module")
def prod_machines(kube, timings) -> Iterator[None]:
    """Prod's nodes beside the real one, which is cordoned: the shapes' pods are placed on
    simulated nodes only (their secrets and upstreams are stand-ins; nothing would answer)."""
    started = time.perf_counter()
    env = {**os.environ, **NODE_KNOBS}
    subprocess.run([str(REPO / "toolchain/cluster.sh"), "nodes"], cwd=REPO, env=env, check=True, timeout=300)
    kubectl("apply", "-f", "-", stdin=volumes_yaml())
    kubectl("cordon", REAL_NODE)
    timings.append(("shapes: nodes", time.perf_counter() - started))
    try:
        yield
    finally:
        kubectl("uncordon", REAL_NODE, check=False)
        kubectl("delete", "pv", "-l", "sophia.ai/shape-volume=true", "--wait=false", check=False)
        kubectl("delete", "storageclass", VOLUME_CLASS, "--ignore-not-found", check=False)
        kubectl("delete", "node", *SHAPE_NODES, "--ignore-not-found", check=False)


def esc_config(stack: str, tmp: Path) -> dict[str, Any]:
    """What sophia/<stack> gives the program (`pulumiConfig`), evaluated by ESC's own evaluator
    against the stand-in Secrets Manager."""
    from sophia_testing.esc import secrets_manager

    store = tmp / "secrets.json"
    store.write_text(json.dumps(secrets_manager(stack)))
    proc = subprocess.run(
        [str(ESC_EVAL), "open", "-secrets", str(store), "-rotate", f"sophia/{stack}"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert proc.returncode == 0, proc.stderr
    return json.loads(proc.stdout)["pulumiConfig"]


def local_images() -> dict[str, str]:
    """Each service's image in the machine's registry, by digest (built as the local stack builds
    it; content already there is not rebuilt)."""
    raw = {k.removeprefix("sophia:"): v for k, v in offline_config("local").items()}
    config = parse_stack_config("local", raw)
    planned = plan_services("local", config, discover(), set())
    images = {}
    for p in planned:
        assert isinstance(p.image, ImageBuild), p.image
        images[p.spec.name] = f"{p.image.repository}@{local_digest(p.image)}"
    return images


def shape_config(stack: str, tmp: Path) -> tuple[dict[str, Any], dict[str, str], list[str]]:
    """(plain config, secrets, what was changed for this machine and why)."""
    # Pulumi puts the stack file's own keys over the environment's.
    config = {**esc_config(stack, tmp), **stack_file_config(stack)}
    secrets = config.pop("sophia:secrets")
    images = local_images()
    changes = {
        "sophia:kubernetes": (
            {"kubeconfig": str(local_stack.KUBECONFIG)},
            "the local control plane instead of the stack's K3s cluster",
        ),
        "sophia:install_charts": (
            False,
            "Helm repositories unreachable offline: NGINX Gateway Fabric, cert-manager (so no Let's Encrypt "
            "ACME either), kube-prometheus-stack, Loki and Alloy are not installed",
        ),
        "sophia:local_crds": (
            True,
            "the Gateway API and Prometheus-operator CRDs from the toolchain, for lack of charts",
        ),
        "sophia:services": (
            {**config.get("sophia:services", {}), **{n: {"image": ref} for n, ref in images.items()}},
            f"images from the machine's registry by digest ({next(iter(images.values())).split('/')[0]}): the "
            f"stack's registry ({config['sophia:registry']}) can't be reached and no BuildKit runs here",
        ),
        "sophia:data": (
            {**config.get("sophia:data", {}), "storage_class": VOLUME_CLASS},
            "static volumes on the simulated nodes: no volume provisioner here",
        ),
    }
    notes = [f"{key.removeprefix('sophia:')}: {why}" for key, (_, why) in changes.items()]
    config.update({key: value for key, (value, _) in changes.items()})
    return config, secrets, notes


@pytest.fixture(scope="module", params=SHAPES)
def shape(request, prod_machines, tmp_path_factory, timings) -> Iterator[str]:
    """The stack `e2e-<stack>`: its config file written, its ESC secrets set as Pulumi secrets."""
    stack = request.param
    name = f"e2e-{stack}"
    started = time.perf_counter()
    config, secrets, notes = shape_config(stack, tmp_path_factory.mktemp(stack))
    stack_file = REPO / f"Pulumi.{name}.yaml"
    local_stack.ensure_stack(name)  # writes the passphrase's salt into the stack file
    settings = yaml.safe_load(stack_file.read_text()) or {}
    stack_file.write_text(yaml.safe_dump({**settings, "config": config}, sort_keys=True))
    local_stack.pulumi(
        "config",
        "set-all",
        "--path",
        *[arg for key, value in sorted(secrets.items()) for arg in ("--secret", f"sophia:secrets.{key}={value}")],
        stack=name,
    )
    timings.append((f"{stack}: config", time.perf_counter() - started))
    print(f"\n[e2e] {stack} shape as stack {name}; changed for this machine:")
    for note in notes:
        print(f"  - {note}")
    try:
        yield name
    finally:
        local_stack.pulumi("destroy", "--yes", "--skip-preview", check=False, stack=name)
        local_stack.pulumi("stack", "rm", "--yes", "--force", check=False, stack=name)
        stack_file.unlink(missing_ok=True)


def test_up(shape: str, timings) -> None:
    step, _ = local_stack.timed(f"{shape}: up", "up", "--yes", "--skip-preview", stack=shape)
    timings.append((step.label, step.seconds))
    outputs = local_stack.outputs(shape)
    print(f"[e2e] {shape}: not deployed here, and why:")
    for line in outputs.get("not_deployed", []):
        print(f"  - {line}")


def test_workloads_run_where_the_stack_places_them(kube, shape: str) -> None:
    stack = shape.removeprefix("e2e-")
    nodes = {n.metadata.name: n.metadata.labels or {} for n in kube.list(Node)}
    # `up` ends when each Deployment's first pod is ready; its HPA then raises it to its minimum
    # (a sync every 15 s). Placement is judged on the minimum's pods.
    deadline = time.monotonic() + 120
    for spec in discover():
        hpa = kube.get(HorizontalPodAutoscaler, spec.name, namespace="sophia")
        while True:
            deployment = kube.get(Deployment, spec.name, namespace="sophia")
            ready = (deployment.status.readyReplicas or 0) if deployment.status else 0
            if ready >= (hpa.spec.minReplicas or 1) or time.monotonic() > deadline:
                break
            time.sleep(2)
        available = {c.type: c.status for c in deployment.status.conditions or []}
        assert available.get("Available") == "True", (spec.name, deployment.status)
    for ns in ("sophia", "sophia-data"):
        for pod in kube.list(Pod, namespace=ns):
            assert pod.spec.nodeName in SHAPE_NODES, (pod.metadata.name, pod.spec.nodeName)
    placement = {
        spec.name: [
            p.spec.nodeName
            for p in kube.list(Pod, namespace="sophia", labels={"app.kubernetes.io/name": spec.name})
            if not p.metadata.deletionTimestamp
        ]
        for spec in discover()
    }
    print(f"[e2e] {shape}: service pods by zone/node:")
    for name, where in sorted(placement.items()):
        print(f"  {name}: " + ", ".join(f"{nodes[n].get('topology.kubernetes.io/zone')}/{n}" for n in sorted(where)))
    coordinator = kube.get(Deployment, "agno-coordinator", namespace="sophia").spec.template.spec.containers[0]
    env = {e.name: e.value for e in coordinator.env or []}
    if stack == "prod":
        for name, where in placement.items():  # replicas on different nodes (and here so zones)
            assert len(where) >= 2 and len(set(where)) == len(where), (name, where)
            assert len({nodes[n].get("topology.kubernetes.io/zone") for n in where}) >= 2, (name, where)
        qdrant = kube.get(StatefulSet, "qdrant", namespace="sophia-data")
        assert qdrant.status.readyReplicas == 3
        vllm = kube.get(StatefulSet, "vllm", namespace="sophia")
        assert vllm.status.readyReplicas == vllm.spec.replicas == 2
        placed = {
            p.spec.nodeName for p in kube.list(Pod, namespace="sophia", labels={"app.kubernetes.io/name": "vllm"})
        }
        assert placed == {"kwok-gpu-gh200-0", "kwok-gpu-gh200-1"}  # one per GH200 node, all its GPUs
        assert all(nodes[n]["kubernetes.io/arch"] == "arm64" for n in placed)
        assert env["LOCAL_MODEL_URL"] == "http://vllm.sophia.svc.cluster.local:8000/v1"
    else:
        assert "LOCAL_MODEL_URL" not in env
        assert not [s for s in kube.list(StatefulSet, namespace="sophia") if s.metadata.name == "vllm"]
    # Nothing but the model server asks for a GPU.
    gpu_pods = {
        p.metadata.labels["app.kubernetes.io/name"]
        for p in kube.list(Pod, namespace="sophia")
        if any("nvidia.com/gpu" in ((c.resources.limits or {}) if c.resources else {}) for c in p.spec.containers)
    }
    assert gpu_pods == ({"vllm"} if stack == "prod" else set())


def test_rollout_restart_of_every_deployment_completes(kube, shape: str, timings) -> None:
    started = time.perf_counter()
    failed = failed_rollouts(kube)
    timings.append((f"{shape}: rollout restart", time.perf_counter() - started))
    assert not failed, (shape, failed)


def test_second_up_changes_nothing(shape: str, timings) -> None:
    step, proc = local_stack.timed(
        f"{shape}: no-op up", "up", "--yes", "--skip-preview", "--expect-no-changes", capture=True, stack=shape
    )
    timings.append((step.label, step.seconds))
    assert not CHANGES.search(proc.stdout), proc.stdout


def test_destroy_removes_the_namespaces(kube, shape: str, timings) -> None:
    step, _ = local_stack.timed(f"{shape}: destroy", "destroy", "--yes", "--skip-preview", stack=shape)
    timings.append((step.label, step.seconds))
    assert namespaces_left(kube) == set()
