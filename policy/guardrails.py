"""The platform's guardrails as CrossGuard policies.

Each check is a plain function over a resource's properties (the Kubernetes object as the
program declares it), so the same code runs in the policy pack and in the unit tests.
Per-stack settings (which images may stay tagged, who may run as root, the minimum HPA size)
come from the pack's config: policy/config/<stack>.json.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from lightkube.utils.quantity import parse_quantity
from pulumi_policy import (
    EnforcementLevel,
    PolicyConfigSchema,
    ReportViolation,
    ResourceValidationArgs,
    ResourceValidationPolicy,
    StackValidationArgs,
    StackValidationPolicy,
)

DEPLOYMENT = "kubernetes:apps/v1:Deployment"
STATEFULSET = "kubernetes:apps/v1:StatefulSet"
DAEMONSET = "kubernetes:apps/v1:DaemonSet"
JOB = "kubernetes:batch/v1:Job"
CRONJOB = "kubernetes:batch/v1:CronJob"
POD = "kubernetes:core/v1:Pod"
SERVICE = "kubernetes:core/v1:Service"
PDB = "kubernetes:policy/v1:PodDisruptionBudget"
HPA = "kubernetes:autoscaling/v2:HorizontalPodAutoscaler"
NETWORK_POLICY = "kubernetes:networking.k8s.io/v1:NetworkPolicy"
QUOTA = "kubernetes:core/v1:ResourceQuota"

# Where each workload kind keeps its pod spec.
POD_SPEC_PATH: dict[str, tuple[str, ...]] = {
    DEPLOYMENT: ("spec", "template", "spec"),
    STATEFULSET: ("spec", "template", "spec"),
    DAEMONSET: ("spec", "template", "spec"),
    JOB: ("spec", "template", "spec"),
    CRONJOB: ("spec", "jobTemplate", "spec", "template", "spec"),
    POD: ("spec",),
}
DIGEST = re.compile(r"@sha256:[0-9a-f]{64}$")
# Env names that hold a credential, and URLs that carry a password.
SECRET_NAME = re.compile(r"(^|_)(API_?KEY|KEY|TOKEN|PASSWORD|PASSWD|SECRET|CREDENTIALS?)$")
URL_WITH_PASSWORD = re.compile(r"://[^/@\s:]+:[^/@\s]+@")
QUOTA_RESOURCES = ("cpu", "memory", "nvidia.com/gpu")


@dataclass(frozen=True)
class Resource:
    """What a check needs of a resource: its type, logical name and properties."""

    type: str
    name: str
    props: Mapping[str, Any]

    @property
    def namespace(self) -> str:
        return (self.props.get("metadata") or {}).get("namespace") or "default"

    @property
    def object_name(self) -> str:
        return (self.props.get("metadata") or {}).get("name") or self.name

    @property
    def ref(self) -> str:
        return f"{self.namespace}/{self.object_name}"


def dig(value: Any, *path: str) -> Any:
    for key in path:
        if not isinstance(value, Mapping):
            return None
        value = value.get(key)
    return value


def pod_spec(resource: Resource) -> Mapping[str, Any] | None:
    path = POD_SPEC_PATH.get(resource.type)
    return dig(resource.props, *path) if path else None


def pod_labels(resource: Resource) -> Mapping[str, str]:
    if resource.type == POD:
        return dig(resource.props, "metadata", "labels") or {}
    return dig(resource.props, "spec", "template", "metadata", "labels") or {}


def containers(spec: Mapping[str, Any]) -> Iterator[Mapping[str, Any]]:
    yield from spec.get("initContainers") or []
    yield from spec.get("containers") or []


def allowlisted(entries: Iterable[Mapping[str, Any]], key: str, value: str) -> bool:
    return any(value == e.get(key) or (e.get(key, "").endswith("*") and value.startswith(e[key][:-1])) for e in entries)


# ------------------------------------------------------------------ per-resource checks
# Each returns the violation messages for one resource given the policy's config.


def check_images_by_digest(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    if spec is None or not config.get("requireDigest", True):
        return []
    exempt = config.get("exemptions") or []
    return [
        f"{resource.ref}: container '{c.get('name')}' runs '{c.get('image')}' by tag; deploy it by digest "
        "(<repository>@sha256:<digest>) so a re-pushed tag cannot change what runs"
        for c in containers(spec)
        if not DIGEST.search(str(c.get("image", ""))) and not allowlisted(exempt, "image", str(c.get("image", "")))
    ]


def check_container_resources(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    if spec is None:
        return []
    problems = []
    for c in containers(spec):
        resources = c.get("resources") or {}
        missing = [
            f"{kind}.{name}"
            for kind in ("requests", "limits")
            for name in ("cpu", "memory")
            if not (resources.get(kind) or {}).get(name)
        ]
        if missing:
            problems.append(
                f"{resource.ref}: container '{c.get('name')}' has no {', '.join(missing)}; set CPU and memory "
                "requests and limits so the scheduler, quota and HPA can account for it"
            )
    return problems


def check_no_privileged_or_root(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    if spec is None or allowlisted(config.get("allowed") or [], "workload", resource.ref):
        return []
    pod_ctx = spec.get("securityContext") or {}
    problems = []
    for c in containers(spec):
        ctx = c.get("securityContext") or {}
        run_as_non_root = ctx.get("runAsNonRoot", pod_ctx.get("runAsNonRoot"))
        run_as_user = ctx.get("runAsUser", pod_ctx.get("runAsUser"))
        if ctx.get("privileged"):
            problems.append(f"{resource.ref}: container '{c.get('name')}' is privileged")
        if ctx.get("allowPrivilegeEscalation", True) and not ctx.get("privileged"):
            problems.append(
                f"{resource.ref}: container '{c.get('name')}' may escalate privileges; "
                "set securityContext.allowPrivilegeEscalation: false"
            )
        if run_as_user == 0 or run_as_non_root is not True:
            problems.append(
                f"{resource.ref}: container '{c.get('name')}' may run as root; set runAsNonRoot: true and a "
                "non-zero runAsUser (or add the workload to this policy's `allowed` list with a reason)"
            )
    return problems


def check_service_exposure(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    kind = dig(resource.props, "spec", "type") or "ClusterIP"
    if resource.type != SERVICE or kind not in ("LoadBalancer", "NodePort"):
        return []
    if allowlisted(config.get("allowed") or [], "service", resource.ref):
        return []
    return [
        f"{resource.ref}: Service of type {kind} exposes pods outside the cluster; only the gateway may be "
        "exposed (route traffic through an HTTPRoute instead)"
    ]


def check_secrets_as_files(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    if spec is None:
        return []
    problems = []
    for c in containers(spec):
        for env in c.get("env") or []:
            name, value = str(env.get("name", "")), env.get("value")
            if dig(env, "valueFrom", "secretKeyRef"):
                problems.append(
                    f"{resource.ref}: container '{c.get('name')}' reads {name} from a Secret into its "
                    "environment; mount the Secret as a file instead (env leaks into crash dumps and child processes)"
                )
            elif value and (SECRET_NAME.search(name) or URL_WITH_PASSWORD.search(str(value))):
                problems.append(
                    f"{resource.ref}: container '{c.get('name')}' has a literal value for {name}; "
                    "put it in a Secret mounted as a file"
                )
    return problems


def check_probes(resource: Resource, config: Mapping[str, Any]) -> list[str]:
    spec = pod_spec(resource)
    if spec is None or resource.type not in (DEPLOYMENT, STATEFULSET):
        return []
    problems = []
    for c in spec.get("containers") or []:
        readiness, liveness = c.get("readinessProbe"), c.get("livenessProbe")
        if not readiness or not liveness:
            problems.append(f"{resource.ref}: container '{c.get('name')}' lacks a readiness or a liveness probe")
        elif readiness == liveness:
            problems.append(
                f"{resource.ref}: container '{c.get('name')}' uses the same check for liveness and readiness; "
                "a peer outage then restarts pods that only needed to leave the load balancer"
            )
    return problems


# ------------------------------------------------------------------ stack checks


def _selects(selector: Mapping[str, Any] | None, labels: Mapping[str, str]) -> bool:
    """matchLabels semantics; an empty selector selects nothing here (a default-deny is not a workload's policy)."""
    match = (selector or {}).get("matchLabels") or {}
    return bool(match) and all(labels.get(k) == v for k, v in match.items())


def check_deployment_companions(resources: list[Resource], config: Mapping[str, Any]) -> list[str]:
    min_replicas = int(config.get("minReplicas", 1))
    hpa_exempt = config.get("hpaExemptions") or []
    problems = []
    for d in (r for r in resources if r.type == DEPLOYMENT):
        labels, same_ns = pod_labels(d), [r for r in resources if r.namespace == d.namespace]
        if not any(r.type == PDB and _selects(dig(r.props, "spec", "selector"), labels) for r in same_ns):
            problems.append(f"{d.ref}: no PodDisruptionBudget selects its pods; add one so drains keep it serving")
        if not any(r.type == NETWORK_POLICY and _selects(dig(r.props, "spec", "podSelector"), labels) for r in same_ns):
            problems.append(f"{d.ref}: no NetworkPolicy selects its pods; declare who may call it and what it calls")
        hpas = [
            r
            for r in same_ns
            if r.type == HPA
            and dig(r.props, "spec", "scaleTargetRef", "kind") == "Deployment"
            and dig(r.props, "spec", "scaleTargetRef", "name") == d.object_name
        ]
        if not hpas:
            if not allowlisted(hpa_exempt, "workload", d.ref):
                problems.append(f"{d.ref}: no HorizontalPodAutoscaler targets it; add one (the seed: 2-10 at 70% CPU)")
        # int(): the engine hands numbers over as floats (1.0); the mocks as ints.
        elif (allowed := int(dig(hpas[0].props, "spec", "minReplicas") or 1)) < min_replicas:
            problems.append(
                f"{d.ref}: its HPA allows {allowed} replica(s); "
                f"this stack needs at least {min_replicas} so one pod's loss is not an outage"
            )
    return problems


def _surge(strategy: Mapping[str, Any] | None, replicas: int) -> int:
    """Extra pods a rolling update adds (maxSurge: a count or a percentage, 25% by default, rounded up)."""
    surge = dig(strategy, "rollingUpdate", "maxSurge")
    if (strategy or {}).get("type") == "Recreate":
        return 0
    if surge is None:
        surge = "25%"
    if isinstance(surge, str) and surge.endswith("%"):
        return math.ceil(replicas * int(surge[:-1]) / 100)
    return int(surge)


def peak_pods(workload: Resource, resources: list[Resource]) -> int:
    """The most pods a workload can have at once: its HPA's maximum (or replicas) plus rolling-update surge."""
    replicas = int(dig(workload.props, "spec", "replicas") or 1)
    if workload.type == STATEFULSET:
        return replicas  # replaced one pod at a time, never surged
    for r in resources:
        if (
            r.type == HPA
            and r.namespace == workload.namespace
            and dig(r.props, "spec", "scaleTargetRef", "name") == workload.object_name
        ):
            replicas = int(dig(r.props, "spec", "maxReplicas") or replicas)
    return replicas + _surge(dig(workload.props, "spec", "strategy"), replicas)


def check_quota_headroom(resources: list[Resource], config: Mapping[str, Any]) -> list[str]:
    problems = []
    for quota in (r for r in resources if r.type == QUOTA):
        hard = dig(quota.props, "spec", "hard") or {}
        need: dict[str, Decimal] = {"pods": Decimal(0)}  # exact: float sums would drift past an exact quota
        for w in (r for r in resources if r.type in (DEPLOYMENT, STATEFULSET) and r.namespace == quota.namespace):
            pods = peak_pods(w, resources)
            need["pods"] += pods
            for c in (pod_spec(w) or {}).get("containers") or []:
                for kind in ("requests", "limits"):
                    for name, value in (dig(c, "resources", kind) or {}).items():
                        if name in QUOTA_RESOURCES:
                            key = f"{kind}.{name}"
                            need[key] = need.get(key, Decimal(0)) + pods * parse_quantity(str(value))
        for key, needed in sorted(need.items()):
            if key in hard and needed > parse_quantity(str(hard[key])):
                problems.append(
                    f"{quota.ref}: {key} quota {hard[key]} is below what the workloads can need at once "
                    f"({_show(key, needed)}: every HPA at its maximum plus rolling-update surge); raise the "
                    "quota or lower max replicas, or a rollout/scale-out will be refused"
                )
    return problems


def _show(key: str, value: Decimal) -> str:
    if key.endswith("memory"):
        return f"{value / 2**30:g}Gi"
    return f"{value:g}"


# ------------------------------------------------------------------ the policies


def _exemption_list(key: str) -> dict[str, Any]:
    return {
        "type": "array",
        "default": [],
        "items": {
            "type": "object",
            "properties": {key: {"type": "string"}, "reason": {"type": "string", "minLength": 1}},
            "required": [key, "reason"],
        },
    }


def _resource_policy(
    name: str,
    description: str,
    check: Callable[[Resource, Mapping[str, Any]], list[str]],
    level: EnforcementLevel = EnforcementLevel.MANDATORY,
    schema: dict[str, dict[str, Any]] | None = None,
) -> ResourceValidationPolicy:
    def validate(args: ResourceValidationArgs, report_violation: ReportViolation) -> None:
        for message in check(Resource(args.resource_type, args.name, args.props), args.get_config() or {}):
            report_violation(message, None)

    return ResourceValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=level,
        config_schema=PolicyConfigSchema(schema) if schema else None,
    )


def _stack_policy(
    name: str,
    description: str,
    check: Callable[[list[Resource], Mapping[str, Any]], list[str]],
    schema: dict[str, dict[str, Any]] | None = None,
) -> StackValidationPolicy:
    def validate(args: StackValidationArgs, report_violation: ReportViolation) -> None:
        resources = [Resource(r.resource_type, r.name, r.props) for r in args.resources]
        for message in check(resources, args.get_config() or {}):
            report_violation(message, None)

    return StackValidationPolicy(
        name=name,
        description=description,
        validate=validate,
        enforcement_level=EnforcementLevel.MANDATORY,
        config_schema=PolicyConfigSchema(schema) if schema else None,
    )


POLICIES = [
    _resource_policy(
        "images-by-digest",
        "Containers run images pinned by digest (outside the local stack).",
        check_images_by_digest,
        schema={"requireDigest": {"type": "boolean", "default": True}, "exemptions": _exemption_list("image")},
    ),
    _resource_policy(
        "container-resources",
        "Every container declares CPU and memory requests and limits.",
        check_container_resources,
    ),
    _resource_policy(
        "no-privileged-or-root",
        "No privileged, escalating or root container, except allowlisted workloads with a reason.",
        check_no_privileged_or_root,
        schema={"allowed": _exemption_list("workload")},
    ),
    _resource_policy(
        "service-exposure",
        "No Service of type LoadBalancer or NodePort except the gateway.",
        check_service_exposure,
        schema={"allowed": _exemption_list("service")},
    ),
    _resource_policy(
        "secrets-as-files",
        "Secrets reach containers as mounted files, never as environment values.",
        check_secrets_as_files,
    ),
    _resource_policy(
        "probes",
        "Long-running containers have readiness and liveness probes, and they differ.",
        check_probes,
        level=EnforcementLevel.ADVISORY,
    ),
    _stack_policy(
        "deployment-companions",
        "Every Deployment has a PodDisruptionBudget, an HPA (min replicas per stack) and a NetworkPolicy.",
        check_deployment_companions,
        schema={
            "minReplicas": {"type": "integer", "minimum": 1, "default": 1},
            "hpaExemptions": _exemption_list("workload"),
        },
    ),
    _stack_policy(
        "quota-headroom",
        "Each namespace's quota fits every workload at its maximum replicas plus rolling-update surge.",
        check_quota_headroom,
    ),
]
