"""The program's graph: what each resource waits for before the engine creates it. A resource the
provider awaits (a Deployment rolled out, a DaemonSet on every node) holds back all that depends on
it, so `pulumi up` is only as fast as its longest chain (issue 18, part 5): dependencies only where
ordering matters."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pulumi.runtime.mocks import MockMonitor

from infra.render import offline_config, run_program
from infra.stack import LOCAL_CRDS
from tests.program.test_discovery import add_service

DEVICE_PLUGIN = "gpu-device-plugin"


@pytest.fixture
def waits(monkeypatch: pytest.MonkeyPatch):
    """Runs a stack under mocks and returns, per resource name, every resource it waits for: its
    own dependencies, its parent's, and theirs in turn (a child is registered only once its parent
    is, and the engine creates a resource only after what it depends on)."""

    def run(stack: str, services_dir: Path | None = None, **overrides: Any) -> dict[str, set[str]]:
        direct: dict[str, set[str]] = {}
        parents: dict[str, str] = {}
        original = MockMonitor.RegisterResource

        def record(self, request):  # type: ignore[no-untyped-def]
            urn = self.make_urn(request.parent, request.type, request.name)
            direct[urn] = set(request.dependencies)
            parents[urn] = request.parent
            return original(self, request)

        monkeypatch.setattr(MockMonitor, "RegisterResource", record)
        kwargs = {"services_dir": services_dir} if services_dir else {}
        config = {**offline_config(stack, **kwargs), **{f"sophia:{k}": v for k, v in overrides.items()}}
        run_program(stack, config, **kwargs)
        monkeypatch.undo()

        closure: dict[str, set[str]] = {}

        def all_waits(urn: str) -> set[str]:
            if urn not in closure:
                closure[urn] = set()
                todo = set(direct.get(urn, ())) | ({parents[urn]} if parents.get(urn) else set())
                found = set(todo)
                for dep in todo:
                    found |= all_waits(dep)
                closure[urn] = found
            return closure[urn]

        name = lambda urn: urn.rsplit("::", 1)[-1]  # noqa: E731
        return {name(urn): {name(d) for d in all_waits(urn)} for urn in direct}

    return run


def test_no_service_waits_for_the_gpu_device_plugin_unless_it_runs_on_a_gpu(waits) -> None:
    graph = waits("local")
    assert DEVICE_PLUGIN in graph, "the local stack has a GPU pool"
    deployments = [n for n in graph if n.endswith("-deployment")]
    assert deployments
    assert not [d for d in deployments if DEVICE_PLUGIN in graph[d]]


def test_a_gpu_service_waits_for_its_pool(waits, services_copy: Path) -> None:
    add_service(services_copy, "trainer", "gpu: {count: 1}\nscaling: {min_replicas: 1, max_replicas: 1}\n")
    pool = {"name": "local-gpu", "node_count": 1, "gpus_per_node": 2, "nodes": ["kwok-gpu-local-gpu-0"]}
    graph = waits("local", services_copy, gpu_pools=[pool])
    assert DEVICE_PLUGIN in graph["trainer-deployment"]
    assert DEVICE_PLUGIN not in graph["mcp-context-deployment"]


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_services_are_not_awaited_and_workloads_are(rendered, stack: str) -> None:
    """The provider's Service await is a 10 s timer (components.workload.SERVICE_NOT_AWAITED);
    readiness is awaited on the workloads, which must keep their await."""
    skip = "pulumi.com/skipAwait"
    objects = rendered[stack]
    services = [o for o in objects if o["kind"] == "Service"]
    assert services
    assert [o["metadata"]["name"] for o in services if o["metadata"].get("annotations", {}).get(skip) != "true"] == []
    workloads = [o for o in objects if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")]
    assert workloads
    assert [o["metadata"]["name"] for o in workloads if skip in (o["metadata"].get("annotations") or {})] == []


def test_the_local_crds_are_typed_resources_that_take_over_the_configfiles_children(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A yaml/v2 ConfigFile is a Construct the provider runs on every up (parse, register, check
    each object): 4-23 s of every no-op up for the six local CRDs. They are typed resources, each
    aliased to the ConfigFile child it was: a kept stack takes the same objects over, where a new
    CRD would be created and the old one deleted, every custom resource of its kind with it."""
    aliases: dict[str, list[tuple[str, str]]] = {}
    original = MockMonitor.RegisterResource

    def record(self, request):  # type: ignore[no-untyped-def]
        if request.type == "kubernetes:apiextensions.k8s.io/v1:CustomResourceDefinition":
            aliases[request.name] = [(a.spec.name, a.spec.parentUrn) for a in request.aliases]
        return original(self, request)

    monkeypatch.setattr(MockMonitor, "RegisterResource", record)
    resources = run_program("local", offline_config("local"))
    assert [r.name for r in resources if r.type.startswith("kubernetes:yaml/")] == []
    assert len(aliases) == len(LOCAL_CRDS)
    for manifest in LOCAL_CRDS:
        group, plural = manifest.split("_")
        name = f"crd-{plural}"
        config_file = f"urn:pulumi:local::sophia::kubernetes:yaml/v2:ConfigFile::{name}"
        assert (f"{name}:{plural}.{group}", config_file) in aliases[name]
