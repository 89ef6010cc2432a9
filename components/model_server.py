"""A self-hosted model on a GPU pool: vLLM's OpenAI-compatible server, one replica per node of
the pool, each with all of its node's GPUs (tensor parallel) and the model's weights and
compile caches on its own PersistentVolumeClaim, so a restart does not download the model
again. Services that declare `calls.model_server` reach it at `LOCAL_MODEL_URL`
(agno-coordinator routes its cheapest tier there).

A StatefulSet, not a Deployment: each replica keeps its volume, and a rollout replaces one
pod at a time without a surge pod, which would need a GPU the pool does not have.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import StatefulSetSpecArgs, StatefulSetUpdateStrategyArgs
from pulumi_kubernetes.core import v1 as core
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs

from components import workload as wl
from components.gpu import GPU_RESOURCE, GPU_TOLERATION, POOL_LABEL, RUNTIME_CLASS
from components.spec import Resources

NAME = "vllm"
PORT = 8000
MODELS_MOUNT = "/models"
# Host memory for loading weights and the CPU side of the KV cache; within the namespaces'
# LimitRange (8 CPU / 32Gi per container).
RESOURCES = wl.resource_amounts(requests=("4", "24Gi"), limits=("8", "32Gi"))
# How long the first start may take: the weights are downloaded (a 7B model is ~15 GB) and loaded.
STARTUP_SECONDS = 30 * 60


@dataclass(frozen=True)
class ModelServerArgs:
    namespace: str
    image: str  # vllm/vllm-openai by digest, with the pool's architecture (arm64 for GH200)
    model: str  # a Hugging Face model id; served under the same name
    pool: str
    replicas: int  # one per node of the pool
    gpus: int  # per replica: every GPU of its node
    callers: Sequence[str]
    services_namespace: str
    arch: str = "arm64"
    metrics_namespace: str | None = None
    cache_size: str = "100Gi"
    storage_class: str | None = None
    max_model_len: int = 32768
    gpu_memory_utilization: float = 0.9
    spread_across_zones: bool = False
    resources: Resources = RESOURCES


def serve_args(args: ModelServerArgs) -> list[str]:
    """`vllm serve`'s arguments: the model under its own name, split over the node's GPUs."""
    return [
        args.model,
        f"--served-model-name={args.model}",
        f"--tensor-parallel-size={args.gpus}",
        f"--max-model-len={args.max_model_len}",
        f"--gpu-memory-utilization={args.gpu_memory_utilization}",
        "--host=0.0.0.0",
        f"--port={PORT}",
    ]


class ModelServer(pulumi.ComponentResource):
    url: str
    peer: wl.Peer

    def __init__(self, name: str, args: ModelServerArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:ModelServer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        w = wl.Workload(NAME, args.namespace, "model-server")
        env: Mapping[str, str] = {
            # Weights and every compile cache on the volume; the root filesystem stays read-only.
            "HF_HOME": f"{MODELS_MOUNT}/huggingface",
            "XDG_CACHE_HOME": f"{MODELS_MOUNT}/cache",
            "VLLM_CACHE_ROOT": f"{MODELS_MOUNT}/cache/vllm",
            "TRITON_CACHE_DIR": f"{MODELS_MOUNT}/cache/triton",
            "HOME": "/tmp",
            "VLLM_NO_USAGE_STATS": "1",
            "DO_NOT_TRACK": "1",
        }
        probe = lambda path, **rest: core.ProbeArgs(  # noqa: E731
            http_get=core.HTTPGetActionArgs(path=path, port="http"), **rest
        )
        container = core.ContainerArgs(
            name="vllm",
            image=args.image,
            image_pull_policy="Always",
            command=["vllm", "serve"],
            args=serve_args(args),
            env=[core.EnvVarArgs(name=k, value=v) for k, v in sorted(env.items())],
            ports=[core.ContainerPortArgs(name="http", container_port=PORT)],
            resources=wl.resource_requirements(args.resources, {GPU_RESOURCE: str(args.gpus)}),
            security_context=wl.container_security(),
            startup_probe=probe("/health", period_seconds=10, failure_threshold=STARTUP_SECONDS // 10),
            # Alive while the engine is; ready once the model is served.
            liveness_probe=probe("/health", period_seconds=15, failure_threshold=4),
            readiness_probe=probe("/v1/models", period_seconds=5),
            volume_mounts=[
                wl.mount("models", MODELS_MOUNT),
                wl.mount("tmp", "/tmp"),
                wl.mount("shm", "/dev/shm"),  # PyTorch's workers share tensors through it
            ],
        )
        spread = [
            core.TopologySpreadConstraintArgs(
                max_skew=1,
                topology_key="kubernetes.io/hostname",
                when_unsatisfiable="DoNotSchedule",
                label_selector=LabelSelectorArgs(match_labels=w.selector),
            )
        ]
        if args.spread_across_zones:
            spread.append(
                core.TopologySpreadConstraintArgs(
                    max_skew=1,
                    topology_key="topology.kubernetes.io/zone",
                    when_unsatisfiable="ScheduleAnyway",
                    label_selector=LabelSelectorArgs(match_labels=w.selector),
                )
            )
        self.stateful_set = k8s.apps.v1.StatefulSet(
            f"{name}-statefulset",
            metadata=w.meta(),
            spec=StatefulSetSpecArgs(
                service_name=f"{NAME}-headless",  # the governing Service must be headless
                replicas=args.replicas,
                # Replicas share nothing: start them together rather than one after another's download.
                pod_management_policy="Parallel",
                update_strategy=StatefulSetUpdateStrategyArgs(type="RollingUpdate"),
                selector=LabelSelectorArgs(match_labels=w.selector),
                volume_claim_templates=[wl.volume_claim("models", w.labels, args.cache_size, args.storage_class)],
                template=wl.pod_template(
                    w.labels,
                    wl.pod_annotations(wl.content_checksum(" ".join(serve_args(args))), PORT),
                    wl.RUN_AS,
                    containers=[container],
                    volumes=[
                        wl.scratch_volume("tmp", "512Mi"),
                        core.VolumeArgs(
                            name="shm", empty_dir=core.EmptyDirVolumeSourceArgs(medium="Memory", size_limit="2Gi")
                        ),
                    ],
                    runtime_class_name=RUNTIME_CLASS,
                    node_selector={POOL_LABEL: args.pool, "kubernetes.io/arch": args.arch},
                    tolerations=[GPU_TOLERATION],
                    topology_spread_constraints=spread,
                    termination_grace_period_seconds=60,
                ),
            ),
            opts=child,
        )
        wl.cluster_service(f"{name}-service", w.meta(), w.selector, {"http": PORT}, child)
        wl.cluster_service(
            f"{name}-headless", w.meta(f"{NAME}-headless"), w.selector, {"http": PORT}, child, cluster_ip="None"
        )
        wl.disruption_budget(f"{name}-pdb", w.meta(), w.selector, child)
        # In: its callers and the scraper. Out: DNS and HTTPS to Hugging Face for the weights.
        wl.network_policy(
            f"{name}-netpol",
            w.meta(),
            w.selector,
            ingress=wl.callers_ingress(args.callers, args.services_namespace, PORT)
            + wl.metrics_ingress(args.metrics_namespace, PORT),
            egress=[wl.dns_egress(), wl.internet_egress(443)],
            opts=child,
        )
        self.url = f"http://{w.host}:{PORT}/v1"
        self.peer = wl.Peer(w.namespace, w.selector, PORT)
        self.register_outputs({"url": self.url, "model": args.model, "replicas": args.replicas})
