"""Pieces every workload we write shares: labels, hardened security contexts, policy peers."""

from __future__ import annotations

import hashlib
from collections.abc import Mapping

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.core.v1 import CapabilitiesArgs, PodSecurityContextArgs, SeccompProfileArgs, SecurityContextArgs
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import NetworkPolicyEgressRuleArgs, NetworkPolicyPeerArgs, NetworkPolicyPortArgs
from pulumi_kubernetes.policy.v1 import PodDisruptionBudgetSpecArgs

PART_OF = "sophia"
NAME_LABEL = "app.kubernetes.io/name"
SCRAPE_LABEL = "sophia.ai/scrape"
RUN_AS = 10001  # above the host's UID range, so a container escape lands on no real user


def labels_for(name: str, component: str | None = None) -> dict[str, str]:
    labels = {NAME_LABEL: name, "app.kubernetes.io/part-of": PART_OF, "app.kubernetes.io/managed-by": "pulumi"}
    if component:
        labels["app.kubernetes.io/component"] = component
    return labels


def pod_security(uid: int = RUN_AS, gid: int | None = None) -> PodSecurityContextArgs:
    gid = uid if gid is None else gid
    return PodSecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=gid,
        fs_group=gid,
        seccomp_profile=SeccompProfileArgs(type="RuntimeDefault"),
    )


def container_security(uid: int = RUN_AS, gid: int | None = None) -> SecurityContextArgs:
    gid = uid if gid is None else gid
    return SecurityContextArgs(
        run_as_non_root=True,
        run_as_user=uid,
        run_as_group=gid,
        privileged=False,
        allow_privilege_escalation=False,
        read_only_root_filesystem=True,
        capabilities=CapabilitiesArgs(drop=["ALL"]),
        seccomp_profile=SeccompProfileArgs(type="RuntimeDefault"),
    )


def namespace_peer(namespace: str, pod_labels: Mapping[str, str] | None = None) -> NetworkPolicyPeerArgs:
    return NetworkPolicyPeerArgs(
        namespace_selector=LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace}),
        pod_selector=LabelSelectorArgs(match_labels=dict(pod_labels)) if pod_labels else None,
    )


def pods_named(names: list[str] | tuple[str, ...], namespace: str | None = None) -> NetworkPolicyPeerArgs:
    """Pods whose app name is one of `names` (in `namespace`, or the policy's own)."""
    selector = LabelSelectorArgs(match_expressions=[{"key": NAME_LABEL, "operator": "In", "values": sorted(names)}])
    if namespace is None:
        return NetworkPolicyPeerArgs(pod_selector=selector)
    return NetworkPolicyPeerArgs(
        pod_selector=selector,
        namespace_selector=LabelSelectorArgs(match_labels={"kubernetes.io/metadata.name": namespace}),
    )


def metadata_for(namespace: str, labels: Mapping[str, str], default_name: str):
    """A metadata builder for one workload's objects: same namespace and labels, a name each."""

    def meta(resource_name: str = default_name, annotations: Mapping[str, str] | None = None) -> ObjectMetaArgs:
        return ObjectMetaArgs(name=resource_name, namespace=namespace, labels=dict(labels), annotations=annotations)

    return meta


def content_checksum(*parts: pulumi.Input[str]) -> pulumi.Output[str]:
    """A hash of a workload's rendered config, for a pod annotation that rolls pods when it changes."""
    return pulumi.Output.all(*parts).apply(lambda values: hashlib.sha256("".join(values).encode()).hexdigest())


def dns_egress() -> NetworkPolicyEgressRuleArgs:
    """Egress to the cluster DNS, which every workload that resolves a name needs."""
    return NetworkPolicyEgressRuleArgs(
        to=[namespace_peer("kube-system", {"k8s-app": "kube-dns"})],
        ports=[NetworkPolicyPortArgs(port=53, protocol="UDP"), NetworkPolicyPortArgs(port=53, protocol="TCP")],
    )


def disruption_budget(
    resource_name: str, metadata: ObjectMetaArgs, selector: Mapping[str, str], opts: pulumi.ResourceOptions
) -> k8s.policy.v1.PodDisruptionBudget:
    # maxUnavailable (not minAvailable) keeps node drains possible at any replica count.
    return k8s.policy.v1.PodDisruptionBudget(
        resource_name,
        metadata=metadata,
        spec=PodDisruptionBudgetSpecArgs(max_unavailable=1, selector=LabelSelectorArgs(match_labels=dict(selector))),
        opts=opts,
    )


# Upstream images are pinned by exact version tag; their digests can't be resolved on
# machines without registry access, so this check is skipped on those objects only.
UPSTREAM_IMAGE_SKIP = {"checkov.io/skip1": "CKV_K8S_43=upstream image pinned by exact version tag"}
