"""The policy pack (policy/) over the program's real stacks: local, dev and prod pass every
mandatory policy with their policy config, and each policy refuses a deliberate violation
with its message. Policies run through their CrossGuard `validate` functions, fed the objects
the program registers under mocks (as `make render` does)."""

from __future__ import annotations

import copy
import json
from functools import cache
from pathlib import Path
from typing import Any

import pytest
from pulumi_policy import (
    EnforcementLevel,
    PolicyResource,
    PolicyResourceOptions,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
)

from infra.render import normalize, offline_config, run_program
from policy.guardrails import DEPLOYMENT, HPA, PDB, POLICIES, QUOTA, SERVICE

REPO = Path(__file__).resolve().parents[2]
STACKS = ("local", "dev", "prod")
BY_NAME = {p.name: p for p in POLICIES}
OPTS = PolicyResourceOptions(False, [], False, [], None, [], None)


@cache
def registered(stack: str) -> tuple[tuple[str, str, str], ...]:
    """(type, name, props as JSON) of every custom resource the stack registers."""
    return tuple(
        (r.type, r.name, json.dumps(normalize(r.inputs)))
        for r in run_program(stack, offline_config(stack))
        if r.custom and r.type.startswith("kubernetes:")
    )


def resources(stack: str) -> list[tuple[str, str, dict[str, Any]]]:
    return [(t, n, json.loads(p)) for t, n, p in registered(stack)]


def policy_config(name: str, stack: str) -> dict[str, Any]:
    """What the engine hands a policy: its schema's defaults overlaid with policy/config/<stack>.json."""
    schema = BY_NAME[name].config_schema
    defaults = {k: v["default"] for k, v in (schema.properties if schema else {}).items() if "default" in v}
    given = json.loads((REPO / "policy" / "config" / f"{stack}.json").read_text()).get(name) or {}
    return {**defaults, **given}


def violations(stack: str, objects: list[tuple[str, str, dict[str, Any]]], name: str) -> list[str]:
    policy, found = BY_NAME[name], []

    def report(message: str, urn: str | None = None) -> None:
        found.append(message)

    config = policy_config(name, stack)
    if isinstance(policy, ResourceValidationPolicy):
        for t, n, props in objects:
            policy.validate(ResourceValidationArgs(t, props, f"urn:{n}", n, OPTS, None, config), report)
    else:
        stack_resources = [PolicyResource(t, props, f"urn:{n}", n, OPTS, None, None, [], {}) for t, n, props in objects]
        policy.validate(StackValidationArgs(stack_resources, config), report)
    return found


def find(objects, type_: str, name: str, namespace: str = "sophia") -> dict[str, Any]:
    return next(
        p
        for t, _, p in objects
        if t == type_ and p["metadata"]["name"] == name and p["metadata"].get("namespace") in (namespace, None)
    )


@pytest.mark.parametrize("stack", STACKS)
def test_every_stack_passes_the_mandatory_policies(stack: str) -> None:
    objects = resources(stack)
    mandatory = [p.name for p in POLICIES if p.enforcement_level == EnforcementLevel.MANDATORY]
    assert len(mandatory) >= 7
    assert {name: violations(stack, objects, name) for name in mandatory} == {name: [] for name in mandatory}


def test_every_exemption_names_something_the_stacks_deploy() -> None:
    """A stale allowlist entry would silently pre-approve whatever later takes its name."""
    for stack in STACKS:
        objects = resources(stack)
        images = {c["image"] for _, _, p in objects for c in _all_containers(p)}
        workloads = {
            f"{p['metadata'].get('namespace')}/{p['metadata']['name']}" for _, _, p in objects if "metadata" in p
        }
        for entry in policy_config("images-by-digest", stack)["exemptions"]:
            assert entry["image"] in images, (stack, entry)
        for entry in policy_config("no-privileged-or-root", stack)["allowed"]:
            assert entry["workload"] in workloads, (stack, entry)
        for entry in policy_config("deployment-companions", stack)["hpaExemptions"]:
            assert entry["workload"] in workloads, (stack, entry)


def _all_containers(props: dict[str, Any]) -> list[dict[str, Any]]:
    spec = (props.get("spec") or {}).get("template", {}).get("spec") or {}
    return [*(spec.get("initContainers") or []), *(spec.get("containers") or [])]


def mutated(stack: str, type_: str, name: str, change) -> list[tuple[str, str, dict[str, Any]]]:
    objects = copy.deepcopy(resources(stack))
    change(find(objects, type_, name))
    return objects


def container(deployment: dict[str, Any]) -> dict[str, Any]:
    return deployment["spec"]["template"]["spec"]["containers"][0]


def test_a_privileged_container_is_refused() -> None:
    objects = mutated(
        "prod", DEPLOYMENT, "mcp-context", lambda d: container(d)["securityContext"].update(privileged=True)
    )
    assert violations("prod", objects, "no-privileged-or-root") == [
        "sophia/mcp-context: container 'mcp-context' is privileged"
    ]


def test_a_root_container_is_refused_unless_allowlisted() -> None:
    def as_root(d):
        container(d)["securityContext"].update(runAsUser=0, runAsNonRoot=False)

    found = violations("prod", mutated("prod", DEPLOYMENT, "orchestrator", as_root), "no-privileged-or-root")
    assert len(found) == 1 and "may run as root" in found[0] and "sophia/orchestrator" in found[0]


def test_an_image_by_tag_is_refused_outside_local_only() -> None:
    def by_tag(d):
        container(d)["image"] = "registry.example.com/sophia/mcp-github:v1.0.0"

    found = violations("prod", mutated("prod", DEPLOYMENT, "mcp-github", by_tag), "images-by-digest")
    assert len(found) == 1 and "by tag; deploy it by digest" in found[0]
    assert violations("local", mutated("local", DEPLOYMENT, "mcp-github", by_tag), "images-by-digest") == []


def test_missing_limits_are_refused() -> None:
    found = violations(
        "dev",
        mutated("dev", DEPLOYMENT, "agno-teams", lambda d: container(d)["resources"].pop("limits")),
        "container-resources",
    )
    assert found == [
        "sophia/agno-teams: container 'agno-teams' has no limits.cpu, limits.memory; set CPU and memory "
        "requests and limits so the scheduler, quota and HPA can account for it"
    ]


def test_a_secret_in_the_environment_is_refused() -> None:
    def leak(d):
        container(d)["env"].append({"name": "GITHUB_TOKEN", "value": "ghp_literal"})
        container(d)["env"].append({"name": "OPENAI_API_KEY", "valueFrom": {"secretKeyRef": {"name": "s", "key": "k"}}})

    found = violations("prod", mutated("prod", DEPLOYMENT, "mcp-github", leak), "secrets-as-files")
    assert len(found) == 2
    assert "literal value for GITHUB_TOKEN" in found[0] and "ghp_literal" not in found[0]
    assert "reads OPENAI_API_KEY from a Secret into its environment" in found[1]


def test_a_load_balancer_service_is_refused() -> None:
    objects = mutated("prod", SERVICE, "mcp-context", lambda s: s["spec"].update(type="LoadBalancer"))
    assert violations("prod", objects, "service-exposure") == [
        "sophia/mcp-context: Service of type LoadBalancer exposes pods outside the cluster; only the gateway may be "
        "exposed (route traffic through an HTTPRoute instead)"
    ]


def test_a_deployment_without_pdb_or_with_one_replica_in_prod_is_refused() -> None:
    objects = [o for o in resources("prod") if not (o[0] == PDB and o[2]["metadata"]["name"] == "mcp-hubspot")]
    for t, _, p in objects:
        if t == HPA and p["metadata"]["name"] == "orchestrator":
            p["spec"]["minReplicas"] = 1
    found = sorted(violations("prod", objects, "deployment-companions"))
    assert found == [
        "sophia/mcp-hubspot: no PodDisruptionBudget selects its pods; add one so drains keep it serving",
        "sophia/orchestrator: its HPA allows 1 replica(s); this stack needs at least 2 so one pod's loss is not an outage",
    ]
    # The same HPA is fine where the stack allows one replica.
    assert violations("dev", objects, "deployment-companions") == [found[0]]


def test_a_quota_that_cannot_fit_max_replicas_plus_surge_is_refused() -> None:
    objects = mutated("prod", QUOTA, "quota", lambda q: q["spec"]["hard"].update(pods="20"))
    found = [v for v in violations("prod", objects, "quota-headroom") if "pods quota" in v]
    # 7 services at HPA max 10, each + 25 % surge (3), and vLLM's 2 (one per GH200 node): 93 pods at once.
    assert found == [
        "sophia/quota: pods quota 20 is below what the workloads can need at once (93: every HPA at its maximum "
        "plus rolling-update surge); raise the quota or lower max replicas, or a rollout/scale-out will be refused"
    ]
