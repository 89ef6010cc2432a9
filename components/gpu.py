"""GPU node pools on K3s: labels and taints on the pool's nodes, the `nvidia`
RuntimeClass, and the NVIDIA device plugin that advertises `nvidia.com/gpu`.

A pool is a named set of nodes. This component labels and taints nodes that have
already joined (`nodes`) and outputs the K3s agent flags that make joining nodes
carry the same labels and taint. Creating the machines themselves (Lambda Cloud) is
behind `GpuNodeProvisioner`; no provisioner is implemented yet.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Protocol

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import DaemonSetSpecArgs, DaemonSetUpdateStrategyArgs
from pulumi_kubernetes.core.v1 import (
    CapabilitiesArgs,
    ContainerArgs,
    EnvVarArgs,
    HostPathVolumeSourceArgs,
    NodeSpecPatchArgs,
    PodSecurityContextArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    SeccompProfileArgs,
    SecurityContextArgs,
    TaintPatchArgs,
    TolerationArgs,
    VolumeArgs,
    VolumeMountArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs, ObjectMetaPatchArgs
from pulumi_kubernetes.node.v1 import SchedulingArgs

from components.workload import UPSTREAM_IMAGE_SKIP, labels_for, resource_amounts, resource_requirements

GPU_RESOURCE = "nvidia.com/gpu"
GPU_NODE_LABEL = "sophia.ai/gpu"
POOL_LABEL = "sophia.ai/gpu-pool"
RUNTIME_CLASS = "nvidia"
GPU_TOLERATION = TolerationArgs(key=GPU_RESOURCE, operator="Exists", effect="NoSchedule")


@dataclass(frozen=True)
class GpuPoolArgs:
    name: str
    instance_type: str
    node_count: int
    nodes: Sequence[str] = ()


class GpuNodeProvisioner(Protocol):
    """Creates a pool's machines and joins them to K3s with `join_flags`; returns node names.

    The boundary for a cloud integration (e.g. Lambda Cloud's instance API): this
    program labels, taints and schedules onto GPU nodes; it does not buy them.
    """

    def provision(self, pool: GpuPoolArgs, join_flags: Sequence[str]) -> Sequence[str]: ...


@dataclass(frozen=True)
class GpuPoolsArgs:
    pools: Sequence[GpuPoolArgs]
    device_plugin_image: str = "nvcr.io/nvidia/k8s-device-plugin:v0.17.4"
    device_plugin_namespace: str = "kube-system"


def join_flags(pool: str) -> list[str]:
    """`k3s agent` flags so a joining node enters the pool already labelled and tainted."""
    return [
        f"--node-label={GPU_NODE_LABEL}=true",
        f"--node-label={POOL_LABEL}={pool}",
        f"--node-taint={GPU_RESOURCE}=present:NoSchedule",
    ]


class GpuPools(pulumi.ComponentResource):
    runtime_class: k8s.node.v1.RuntimeClass

    def __init__(self, name: str, args: GpuPoolsArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:GpuPools", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        # K3s registers the nvidia containerd runtime when it finds the toolkit; pods opt in by class,
        # and the class's scheduling keeps them on GPU nodes.
        self.runtime_class = k8s.node.v1.RuntimeClass(
            f"{name}-runtime-class",
            metadata=ObjectMetaArgs(name=RUNTIME_CLASS, labels=labels_for(RUNTIME_CLASS)),
            handler="nvidia",
            scheduling=SchedulingArgs(node_selector={GPU_NODE_LABEL: "true"}, tolerations=[GPU_TOLERATION]),
            opts=child,
        )
        for pool in args.pools:
            for node in pool.nodes:
                k8s.core.v1.NodePatch(
                    f"{name}-{pool.name}-{node}",
                    metadata=ObjectMetaPatchArgs(
                        name=node,
                        labels={
                            GPU_NODE_LABEL: "true",
                            POOL_LABEL: pool.name,
                            "sophia.ai/instance-type": pool.instance_type,
                        },
                    ),
                    spec=NodeSpecPatchArgs(
                        taints=[TaintPatchArgs(key=GPU_RESOURCE, value="present", effect="NoSchedule")]
                    ),
                    opts=child,
                )

        app = "nvidia-device-plugin"
        selector = {"app.kubernetes.io/name": app}
        k8s.apps.v1.DaemonSet(
            f"{name}-device-plugin",
            metadata=ObjectMetaArgs(
                name=app,
                namespace=args.device_plugin_namespace,
                labels=labels_for(app, "gpu"),
                annotations={
                    **UPSTREAM_IMAGE_SKIP,
                    "checkov.io/skip2": "CKV_K8S_23=must run as root to create its socket in the "
                    "kubelet's root-owned device-plugins directory",
                    "checkov.io/skip3": "CKV_K8S_40=runs as root (see CKV_K8S_23)",
                    "checkov.io/skip4": "CKV_K8S_8=no health endpoint; the kubelet drops and "
                    "re-registers the plugin when it dies",
                    "checkov.io/skip5": "CKV_K8S_9=no health endpoint (see CKV_K8S_8)",
                },
            ),
            spec=DaemonSetSpecArgs(
                selector=LabelSelectorArgs(match_labels=selector),
                update_strategy=DaemonSetUpdateStrategyArgs(type="RollingUpdate"),
                template=PodTemplateSpecArgs(
                    metadata=ObjectMetaArgs(labels=labels_for(app, "gpu")),
                    spec=PodSpecArgs(
                        priority_class_name="system-node-critical",
                        security_context=PodSecurityContextArgs(
                            run_as_user=0, seccomp_profile=SeccompProfileArgs(type="RuntimeDefault")
                        ),
                        runtime_class_name=RUNTIME_CLASS,
                        automount_service_account_token=False,
                        node_selector={GPU_NODE_LABEL: "true"},
                        tolerations=[GPU_TOLERATION],
                        containers=[
                            ContainerArgs(
                                name="device-plugin",
                                image=args.device_plugin_image,
                                image_pull_policy="Always",
                                env=[EnvVarArgs(name="FAIL_ON_INIT_ERROR", value="false")],
                                resources=resource_requirements(
                                    resource_amounts(requests=("10m", "32Mi"), limits=("100m", "128Mi"))
                                ),
                                # As NVIDIA's static manifest: no privilege, all capabilities dropped.
                                security_context=SecurityContextArgs(
                                    allow_privilege_escalation=False,
                                    privileged=False,
                                    read_only_root_filesystem=True,
                                    capabilities=CapabilitiesArgs(drop=["ALL"]),
                                    seccomp_profile=SeccompProfileArgs(type="RuntimeDefault"),
                                ),
                                volume_mounts=[
                                    VolumeMountArgs(name="device-plugins", mount_path="/var/lib/kubelet/device-plugins")
                                ],
                            )
                        ],
                        volumes=[
                            VolumeArgs(
                                name="device-plugins",
                                host_path=HostPathVolumeSourceArgs(
                                    path="/var/lib/kubelet/device-plugins", type="Directory"
                                ),
                            )
                        ],
                    ),
                ),
            ),
            opts=child,
        )
        self.register_outputs(
            {
                "pools": {
                    p.name: {
                        "instance_type": p.instance_type,
                        "node_count": p.node_count,
                        "labelled_nodes": list(p.nodes),
                        "k3s_agent_flags": join_flags(p.name),
                    }
                    for p in args.pools
                }
            }
        )
