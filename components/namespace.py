"""A namespace per concern, with its guard rails: Pod Security Admission, quota,
default container limits, default-deny traffic, and least-privilege roles for people.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core.v1 import LimitRangeItemArgs, LimitRangeSpecArgs, ResourceQuotaSpecArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import NetworkPolicySpecArgs
from pulumi_kubernetes.rbac.v1 import PolicyRuleArgs, RoleRefArgs, SubjectArgs

from components.workload import labels_for

VIEWERS_GROUP = "sophia:viewers"  # CI's `pulumi preview`, on-call
OPERATORS_GROUP = "sophia:operators"  # rotate secrets, restart workloads

READ_ONLY = [
    PolicyRuleArgs(
        api_groups=[""],
        resources=[
            "pods",
            "pods/log",
            "services",
            "endpoints",
            "configmaps",
            "persistentvolumeclaims",
            "serviceaccounts",
            "events",
        ],
        verbs=["get", "list", "watch"],
    ),
    PolicyRuleArgs(
        api_groups=["apps"],
        resources=["deployments", "statefulsets", "daemonsets", "replicasets"],
        verbs=["get", "list", "watch"],
    ),
    PolicyRuleArgs(api_groups=["autoscaling"], resources=["horizontalpodautoscalers"], verbs=["get", "list", "watch"]),
    PolicyRuleArgs(api_groups=["policy"], resources=["poddisruptionbudgets"], verbs=["get", "list", "watch"]),
    PolicyRuleArgs(api_groups=["networking.k8s.io"], resources=["networkpolicies"], verbs=["get", "list", "watch"]),
]
# Rotation = replace a Secret's data and restart what mounts it; nothing else.
ROTATE = [
    PolicyRuleArgs(api_groups=[""], resources=["secrets"], verbs=["get", "list", "update", "patch"]),
    PolicyRuleArgs(api_groups=["apps"], resources=["deployments", "statefulsets"], verbs=["get", "list", "patch"]),
]


@dataclass(frozen=True)
class Quota:
    requests_cpu: str
    requests_memory: str
    limits_cpu: str
    limits_memory: str
    pods: int
    gpus: int = 0


@dataclass(frozen=True)
class NamespaceArgs:
    name: str
    concern: str
    quota: Quota
    # `restricted` where every pod we run meets it; charts with node agents need `privileged`.
    pod_security: Literal["restricted", "baseline", "privileged"] = "restricted"
    default_deny: bool = True
    operators_rotate_secrets: bool = False


class PlatformNamespace(pulumi.ComponentResource):
    namespace: k8s.core.v1.Namespace

    def __init__(self, name: str, args: NamespaceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Namespace", name, None, opts)
        ns = args.name
        labels = labels_for(ns, args.concern)
        self.namespace = k8s.core.v1.Namespace(
            name,
            metadata=ObjectMetaArgs(
                name=ns,
                labels={
                    **labels,
                    "sophia.ai/concern": args.concern,
                    "pod-security.kubernetes.io/enforce": args.pod_security,
                    "pod-security.kubernetes.io/audit": "restricted",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        inside = pulumi.ResourceOptions(parent=self, depends_on=[self.namespace])

        def meta(resource_name: str) -> ObjectMetaArgs:
            return ObjectMetaArgs(name=resource_name, namespace=ns, labels=labels)

        q = args.quota
        hard = {
            "requests.cpu": q.requests_cpu,
            "requests.memory": q.requests_memory,
            "limits.cpu": q.limits_cpu,
            "limits.memory": q.limits_memory,
            "pods": str(q.pods),
        }
        hard["requests.nvidia.com/gpu"] = str(q.gpus)
        k8s.core.v1.ResourceQuota(
            f"{name}-quota", metadata=meta("quota"), spec=ResourceQuotaSpecArgs(hard=hard), opts=inside
        )
        # Defaults for containers that declare nothing (upstream charts), so the quota can admit them.
        k8s.core.v1.LimitRange(
            f"{name}-limits",
            metadata=meta("defaults"),
            spec=LimitRangeSpecArgs(
                limits=[
                    LimitRangeItemArgs(
                        type="Container",
                        default_request={"cpu": "50m", "memory": "64Mi"},
                        default={"cpu": "500m", "memory": "512Mi"},
                        max={"cpu": "8", "memory": "32Gi"},
                    )
                ]
            ),
            opts=inside,
        )
        if args.default_deny:
            # Every workload here brings its own policy; anything else is denied.
            k8s.networking.v1.NetworkPolicy(
                f"{name}-default-deny",
                metadata=meta("default-deny"),
                spec=NetworkPolicySpecArgs(pod_selector=LabelSelectorArgs(), policy_types=["Ingress", "Egress"]),
                opts=inside,
            )

        self._role(name, "viewer", READ_ONLY, VIEWERS_GROUP, meta, inside)
        if args.operators_rotate_secrets:
            self._role(name, "secret-rotator", ROTATE, OPERATORS_GROUP, meta, inside)
        self.register_outputs({"name": self.namespace.metadata.name, "pod_security": args.pod_security})

    @staticmethod
    def _role(name, role, rules, group, meta, opts) -> None:
        k8s.rbac.v1.Role(f"{name}-{role}", metadata=meta(f"sophia-{role}"), rules=rules, opts=opts)
        k8s.rbac.v1.RoleBinding(
            f"{name}-{role}-binding",
            metadata=meta(f"sophia-{role}"),
            role_ref=RoleRefArgs(api_group="rbac.authorization.k8s.io", kind="Role", name=f"sophia-{role}"),
            subjects=[SubjectArgs(kind="Group", name=group, api_group="rbac.authorization.k8s.io")],
            opts=opts,
        )
