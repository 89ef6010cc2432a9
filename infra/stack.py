"""Assembly: from a validated stack config and the discovered services to resources.

`plan_services` is pure (no Pulumi calls) so every rule about what a stack may
deploy is checked before the first resource is registered; `deploy` registers.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import NetworkPolicySpecArgs

from components.image import ImageBuild, ImageSource
from components.service import GpuPlacement, Peer, PlatformService, PlatformServiceArgs
from components.spec import ServiceSpec
from infra.config import NAMESPACE, ConfigError, StackConfig

REPO_ROOT = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class Datastore:
    peer: Peer
    env: Mapping[str, str]


def datastores(config: StackConfig) -> dict[str, Datastore]:
    """The in-cluster endpoints of the data stores; the platform components serve these names."""
    ns = config.namespaces.data
    host = lambda name: f"{name}.{ns}.svc.cluster.local"  # noqa: E731
    return {
        "qdrant": Datastore(Peer(ns, {"app.kubernetes.io/name": "qdrant"}, 6333),
                            {"QDRANT_URL": f"http://{host('qdrant')}:6333"}),
        "redis": Datastore(Peer(ns, {"app.kubernetes.io/name": "redis"}, 6379),
                           {"REDIS_URL": f"redis://{host('redis')}:6379/0"}),
        # PostgreSQL is external (Neon); services reach it through the in-cluster PgBouncer.
        "postgres": Datastore(Peer(ns, {"app.kubernetes.io/name": "pgbouncer"}, 5432),
                              {"PGHOST": host("pgbouncer"), "PGPORT": "5432"}),
    }


@dataclass(frozen=True)
class PlannedService:
    spec: ServiceSpec
    image: ImageSource
    callers: tuple[str, ...]
    callees: dict[str, int]
    gpu: bool


def url_env_name(service: str) -> str:
    return service.upper().replace("-", "_") + "_URL"


def plan_services(stack: str, config: StackConfig, specs: list[ServiceSpec],
                  secrets_available: set[str], services_dir: Path = REPO_ROOT / "services") -> list[PlannedService]:
    """Apply the stack's overrides to the manifests and check what the stack can run."""
    problems: list[str] = []
    by_name = {s.name: s for s in specs}
    for name in config.services:
        if name not in by_name:
            problems.append(f"{NAMESPACE}:services.{name}: no such service (discovered: {sorted(by_name)})")
    if problems:
        raise ConfigError(stack, problems)

    effective: dict[str, ServiceSpec] = {}
    for spec in specs:
        override = config.services.get(spec.name)
        if override is not None and not override.enabled:
            continue
        if override is not None:
            scaling = spec.scaling.model_dump()
            scaling.update({k: v for k, v in {"min_replicas": override.min_replicas, "max_replicas": override.max_replicas,
                                              "cpu_target": override.cpu_target}.items() if v is not None})
            if scaling["min_replicas"] > scaling["max_replicas"]:
                problems.append(f"{NAMESPACE}:services.{spec.name}: min_replicas {scaling['min_replicas']} is greater "
                                f"than max_replicas {scaling['max_replicas']} after merging with the manifest; "
                                "set both so min <= max")
                continue
            spec = spec.model_copy(update={"scaling": spec.scaling.model_validate(scaling)})
        effective[spec.name] = spec

    planned = []
    for spec in effective.values():
        key = f"{NAMESPACE}:services.{spec.name}"
        if config.is_prod and spec.scaling.min_replicas < 2:
            problems.append(f"{key}.min_replicas: prod needs at least 2 replicas for availability "
                            f"(given: {spec.scaling.min_replicas} from the manifest or override)")
        for callee in spec.calls.services:
            if callee not in effective:
                problems.append(f"{key}.enabled: {callee} is disabled but {spec.name} calls it; "
                                f"enable {callee} or disable {spec.name}")
        if config.environment != "local":
            for secret in spec.secrets:
                if secret not in secrets_available:
                    problems.append(f"{NAMESPACE}:secrets.{secret}: {spec.name} needs it but the stack has none; add "
                                    f"it to the stack's ESC environment under pulumiConfig.{NAMESPACE}:secrets")
        gpu = False
        if spec.gpu is not None:
            largest = max((p.gpus_per_node for p in config.gpu_pools if p.node_count > 0), default=0)
            if largest >= spec.gpu.count:
                gpu = True
            elif spec.gpu.required:
                problems.append(f"{NAMESPACE}:gpu_pools: {spec.name} requires {spec.gpu.count} GPU(s) on one node "
                                f"but the stack's pools offer {largest}; add a pool with node_count >= 1")
        planned.append(PlannedService(
            spec=spec,
            image=_image_source(stack, config, spec.name, services_dir, problems),
            callers=tuple(sorted(s.name for s in effective.values() if spec.name in s.calls.services)),
            callees={c: effective[c].port for c in spec.calls.services if c in effective},
            gpu=gpu,
        ))
    if problems:
        raise ConfigError(stack, problems)
    return planned


def _image_source(stack: str, config: StackConfig, name: str, services_dir: Path, problems: list[str]) -> ImageSource:
    override = config.services.get(name)
    if override is not None and override.image:
        return override.image
    if config.registry is None:
        return config.images.get(name, f"sophia/{name}:{config.image_tag}")
    dockerfile = services_dir / name / "Dockerfile"
    if not dockerfile.is_file():
        problems.append(f"{NAMESPACE}:services.{name}.image: services/{name}/Dockerfile is missing, so the {stack} "
                        "stack cannot build it; add the Dockerfile or set a prebuilt image reference")
    # The context is the repo root so every image can copy the shared chassis (libs/).
    return ImageBuild(context=services_dir.parent, dockerfile=dockerfile, repository=f"{config.registry}/{name}",
                      tag=config.image_tag, platforms=config.image_platforms)


def _namespace(name: str, ns: str, opts: pulumi.ResourceOptions) -> k8s.core.v1.Namespace:
    return k8s.core.v1.Namespace(name, metadata=ObjectMetaArgs(name=ns, labels={
        "app.kubernetes.io/part-of": "sophia",
        # Pod Security Admission: our workloads meet `restricted`, so enforce it.
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/audit": "restricted",
        "pod-security.kubernetes.io/warn": "restricted",
    }), opts=opts)


def deploy(stack: str, config: StackConfig, planned: list[PlannedService],
           secret_values: pulumi.Output[dict[str, Any]] | None) -> dict[str, Any]:
    """Register every resource of the stack; returns the stack outputs."""
    provider = k8s.Provider("kubernetes", kubeconfig=config.kubernetes.kubeconfig, context=config.kubernetes.context)
    opts = pulumi.ResourceOptions(provider=provider)
    ns_name = config.namespaces.services
    namespace = _namespace("services-namespace", ns_name, opts)
    in_ns = pulumi.ResourceOptions(provider=provider, depends_on=[namespace])

    # Anything a service policy does not allow is denied, including pods added by hand.
    k8s.networking.v1.NetworkPolicy("services-default-deny", metadata=ObjectMetaArgs(
        name="default-deny", namespace=ns_name), spec=NetworkPolicySpecArgs(
        pod_selector=LabelSelectorArgs(), policy_types=["Ingress", "Egress"]), opts=in_ns)

    if any(p.gpu for p in planned):
        k8s.node.v1.RuntimeClass("nvidia-runtime-class", metadata=ObjectMetaArgs(name="nvidia"),
                                 handler="nvidia", opts=opts)

    stores = datastores(config)
    services: dict[str, PlatformService] = {}
    for item in planned:
        spec = item.spec
        env: dict[str, pulumi.Input[str]] = {url_env_name(c): f"http://{c}.{ns_name}.svc.cluster.local"
                                             for c in item.callees}
        for store in spec.calls.datastores:
            env.update(stores[store].env)
        secrets = {k: _secret(secret_values, k) for k in spec.secrets}
        services[spec.name] = PlatformService(spec.name, PlatformServiceArgs(
            spec=spec,
            namespace=ns_name,
            image=item.image,
            secrets=secrets,
            env=env,
            callers=item.callers,
            callees=item.callees,
            datastores=[stores[s].peer for s in spec.calls.datastores],
            ingress_namespace=config.namespaces.ingress,
            metrics_namespace=config.namespaces.observability,
            gpu=GpuPlacement() if item.gpu else None,
            spread_across_zones=config.is_prod,
            # The local cluster runs images loaded onto its node; there is no registry to pull from.
            image_pull_policy="IfNotPresent" if config.environment == "local" else "Always",
        ), opts=in_ns)

    return {
        "environment": config.environment,
        "namespace": namespace.metadata.name,
        "services": {name: {"url": svc.url} for name, svc in services.items()},
    }


def _secret(values: pulumi.Output[dict[str, Any]] | None, key: str) -> pulumi.Output[str]:
    if values is None:
        return pulumi.Output.secret("")
    # Local stacks may leave a secret unset; the service then runs in its offline mode.
    return values.apply(lambda d: str((d or {}).get(key, "")))
