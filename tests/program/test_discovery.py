"""Every services/<name>/service.yaml is a service; adding a folder deploys it."""

from __future__ import annotations

from pathlib import Path

import pytest

from infra.discovery import ManifestError, discover

from .conftest import find, render_objects

SEED_SERVICES = {
    "mcp-context",
    "mcp-github",
    "mcp-hubspot",
    "mcp-agents",
    "agno-coordinator",
    "agno-teams",
    "orchestrator",
}


def test_the_seven_seed_services_are_discovered_with_seed_scaling() -> None:
    specs = {s.name: s for s in discover()}
    assert set(specs) == SEED_SERVICES
    for spec in specs.values():
        assert (spec.scaling.min_replicas, spec.scaling.max_replicas, spec.scaling.cpu_target) == (2, 10, 70)
        assert (spec.probes.liveness, spec.probes.readiness) == ("/healthz", "/readyz")
    assert specs["mcp-context"].calls.datastores == ("qdrant", "redis")


def add_service(services: Path, name: str, manifest: str, package: bool = True) -> None:
    (services / name).mkdir()
    (services / name / "service.yaml").write_text(manifest)
    if package:  # what services/Dockerfile builds
        (services / name / "pyproject.toml").write_text(f'[project]\nname = "sophia-{name}"\nversion = "0.1.0"\n')


@pytest.mark.parametrize("stack", ["local", "prod"])
def test_adding_a_folder_deploys_a_new_service(services_copy: Path, stack: str) -> None:
    add_service(
        services_copy,
        "mcp-slack",
        "port: 9000\nsecrets: [SLACK_TOKEN]\ncalls:\n  services: [mcp-context]\nroutes:\n  - path: /slack\n",
    )
    objects = render_objects(
        stack,
        {
            "secrets": {
                "SLACK_TOKEN": "x",
                "OPENAI_API_KEY": "x",
                "GITHUB_TOKEN": "x",
                "HUBSPOT_ACCESS_TOKEN": "x",
                "ANTHROPIC_API_KEY": "x",
            }
        },
        services_dir=services_copy,
    )
    for kind in (
        "ServiceAccount",
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "PodDisruptionBudget",
        "NetworkPolicy",
    ):
        find(objects, kind, "mcp-slack")
    find(objects, "Secret", "mcp-slack-secrets")
    container = find(objects, "Deployment", "mcp-slack")["spec"]["template"]["spec"]["containers"][0]
    assert container["ports"][0]["containerPort"] == 9000
    assert {"name": "MCP_CONTEXT_URL", "value": "http://mcp-context.sophia.svc.cluster.local"} in container["env"]
    # The callee now admits the new caller, and nothing else changed to allow it.
    ingress = find(objects, "NetworkPolicy", "mcp-context")["spec"]["ingress"][0]
    assert "mcp-slack" in ingress["from"][0]["podSelector"]["matchExpressions"][0]["values"]


BAD_MANIFESTS = [
    ("port: 80\n", "port: Input should be greater than or equal to 1024 (given: 80)"),
    ("prot: 8080\n", "prot: unknown key; check the spelling"),
    (
        "scaling: {min_replicas: 4, max_replicas: 2}\n",
        "scaling: min_replicas (4) is greater than max_replicas (2); set min_replicas <= max_replicas",
    ),
    (
        "resources: {requests: {cpu: 2, memory: 1Gi}, limits: {cpu: 1, memory: 1Gi}}\n",
        "resources.requests.cpu 2 is above resources.limits.cpu 1",
    ),
    (
        "resources: {requests: {cpu: 0.5, memory: 2Gi}, limits: {cpu: 1, memory: 1Gi}}\n",
        "resources.requests.memory 2Gi is above resources.limits.memory 1Gi",
    ),
    ("resources: {requests: {cpu: 1 core, memory: 1Gi}}\n", "'1 core' is not a CPU quantity"),
    ("calls: {services: [mcp-nothing]}\n", "calls.services: 'mcp-nothing' is not a discovered service"),
    ("calls: {datastores: [mongodb]}\n", "calls.datastores.0: Input should be 'qdrant', 'redis' or 'postgres'"),
    (
        "routes: [{path: /memories}]\n",
        "routes: '/memories' is claimed by both services/broken and services/mcp-context",
    ),
    ("dev_port: 8104\n", "dev_port: 8104 is claimed by both services/broken and services/mcp-context"),
    ("secrets: [openai-key]\n", "secret 'openai-key' is not a valid secret key; use UPPER_SNAKE_CASE"),
    ("name: other\n", "name 'other' differs from its folder 'broken'"),
    ("port: [\n", "not valid YAML"),
    (
        "observability: {panels: [{title: Queue, queries: ['sum(queue_depth)']}]}\n",
        "observability.panels.0.queries: query 'sum(queue_depth)' has no {sel}",
    ),
    (
        "observability: {alerts: [{name: Slow, expr: up == 0, for: 5 min, severity: page, summary: s}]}\n",
        "observability.alerts.0.for: '5 min' is not a Prometheus duration",
    ),
]


@pytest.mark.parametrize("manifest,expected", BAD_MANIFESTS)
def test_bad_manifest_names_file_and_key(services_copy: Path, manifest: str, expected: str) -> None:
    add_service(services_copy, "broken", manifest)
    with pytest.raises(ManifestError) as caught:
        discover(services_copy)
    assert "services/broken" in str(caught.value)
    assert expected in str(caught.value)


def test_a_folder_without_a_manifest_is_an_error(services_copy: Path) -> None:
    (services_copy / "half-done").mkdir()
    with pytest.raises(ManifestError, match="services/half-done: no service.yaml"):
        discover(services_copy)


def test_hidden_and_underscore_folders_are_not_services(services_copy: Path) -> None:
    (services_copy / "__pycache__").mkdir()
    (services_copy / "_shared").mkdir()
    assert {s.name for s in discover(services_copy)} == SEED_SERVICES


def test_a_required_gpu_without_a_pool_is_refused(services_copy: Path) -> None:
    from infra.config import ConfigError

    add_service(services_copy, "trainer", "gpu: {count: 1}\n")
    with pytest.raises(ConfigError, match="sophia:gpu_pools: trainer requires 1 GPU"):
        render_objects("dev", services_dir=services_copy)
