"""Assembly: from a validated stack config and the discovered services to resources.

`plan_services` is pure (no Pulumi calls) so every rule about what a stack may
deploy is checked before the first resource is registered; `deploy` registers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from components.gpu import GpuPoolArgs, GpuPools, GpuPoolsArgs
from components.image import ImageBuild, ImageSource
from components.ingress import Ingress, IngressArgs, RouteSpec
from components.namespace import NamespaceArgs, PlatformNamespace, Quota
from components.observability import Observability, ObservabilityArgs
from components.pgbouncer import CLIENT_USER, PgBouncer, PgBouncerArgs
from components.qdrant import Qdrant, QdrantArgs
from components.redis import Redis, RedisArgs
from components.secrets import GeneratedSecrets, GeneratedSecretsArgs
from components.service import GpuPlacement, Peer, PlatformService, PlatformServiceArgs
from components.spec import ServiceSpec
from infra.config import NAMESPACE, ConfigError, StackConfig

# Secrets the platform generates and mounts itself; a manifest may list them, ESC need not hold them.
PLATFORM_SECRETS = {"REDIS_PASSWORD", "QDRANT_API_KEY", "PGPASSWORD", "INTERNAL_API_TOKEN"}
# External secrets the data layer reads from ESC (not from a service manifest).
DATABASE_URL, DATABASE_READ_URL = "DATABASE_URL", "DATABASE_READ_URL"
LOCAL_DATABASE_URL = "postgresql://sophia:local@postgres.invalid:5432/sophia"

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
        "qdrant": Datastore(
            Peer(ns, {"app.kubernetes.io/name": "qdrant"}, 6333), {"QDRANT_URL": f"http://{host('qdrant')}:6333"}
        ),
        "redis": Datastore(
            Peer(ns, {"app.kubernetes.io/name": "redis"}, 6379), {"REDIS_URL": f"redis://{host('redis')}:6379/0"}
        ),
        # PostgreSQL is external (Neon); services reach it through the in-cluster PgBouncer.
        "postgres": Datastore(
            Peer(ns, {"app.kubernetes.io/name": "pgbouncer"}, 5432), {"PGHOST": host("pgbouncer"), "PGPORT": "5432"}
        ),
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


def plan_services(
    stack: str,
    config: StackConfig,
    specs: list[ServiceSpec],
    secrets_available: set[str],
    services_dir: Path = REPO_ROOT / "services",
) -> list[PlannedService]:
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
            scaling.update(
                {
                    k: v
                    for k, v in {
                        "min_replicas": override.min_replicas,
                        "max_replicas": override.max_replicas,
                        "cpu_target": override.cpu_target,
                    }.items()
                    if v is not None
                }
            )
            if scaling["min_replicas"] > scaling["max_replicas"]:
                problems.append(
                    f"{NAMESPACE}:services.{spec.name}: min_replicas {scaling['min_replicas']} is greater "
                    f"than max_replicas {scaling['max_replicas']} after merging with the manifest; "
                    "set both so min <= max"
                )
                continue
            spec = spec.model_copy(update={"scaling": spec.scaling.model_validate(scaling)})
        effective[spec.name] = spec

    planned = []
    for spec in effective.values():
        key = f"{NAMESPACE}:services.{spec.name}"
        if config.is_prod and spec.scaling.min_replicas < 2:
            problems.append(
                f"{key}.min_replicas: prod needs at least 2 replicas for availability "
                f"(given: {spec.scaling.min_replicas} from the manifest or override)"
            )
        for callee in spec.calls.services:
            if callee not in effective:
                problems.append(
                    f"{key}.enabled: {callee} is disabled but {spec.name} calls it; "
                    f"enable {callee} or disable {spec.name}"
                )
        if config.environment != "local":
            for secret in sorted(set(spec.secrets) - PLATFORM_SECRETS):
                if secret not in secrets_available:
                    problems.append(
                        f"{NAMESPACE}:secrets.{secret}: {spec.name} needs it but the stack has none; add "
                        f"it to the stack's ESC environment under pulumiConfig.{NAMESPACE}:secrets"
                    )
        gpu = False
        if spec.gpu is not None:
            largest = max((p.gpus_per_node for p in config.gpu_pools if p.node_count > 0), default=0)
            if largest >= spec.gpu.count:
                gpu = True
            elif spec.gpu.required:
                problems.append(
                    f"{NAMESPACE}:gpu_pools: {spec.name} requires {spec.gpu.count} GPU(s) on one node "
                    f"but the stack's pools offer {largest}; add a pool with node_count >= 1"
                )
        planned.append(
            PlannedService(
                spec=spec,
                image=_image_source(stack, config, spec.name, spec.build_args, services_dir, problems),
                callers=tuple(sorted(s.name for s in effective.values() if spec.name in s.calls.services)),
                callees={c: effective[c].port for c in spec.calls.services if c in effective},
                gpu=gpu,
            )
        )
    if (
        config.environment != "local"
        and any("postgres" in p.spec.calls.datastores for p in planned)
        and DATABASE_URL not in secrets_available
    ):
        problems.append(
            f"{NAMESPACE}:secrets.{DATABASE_URL}: services use PostgreSQL but the stack has no connection "
            f"string; add the Neon URL to the ESC environment under pulumiConfig.{NAMESPACE}:secrets"
        )
    if problems:
        raise ConfigError(stack, problems)
    return planned


def _image_source(
    stack: str, config: StackConfig, name: str, build_args: dict[str, str], services_dir: Path, problems: list[str]
) -> ImageSource:
    override = config.services.get(name)
    if override is not None and override.image:
        return override.image
    if config.registry is None:
        return config.images.get(name, f"sophia/{name}:{config.image_tag}")
    if not (services_dir / name / "pyproject.toml").is_file():
        problems.append(
            f"{NAMESPACE}:services.{name}.image: services/{name}/pyproject.toml is missing, so the {stack} "
            "stack cannot build it; make the service a package or set a prebuilt image reference"
        )
    # One Dockerfile for every service; the context is the repo root so it can install the
    # shared chassis (libs/) and the pins (requirements*.txt).
    return ImageBuild(
        context=services_dir.parent,
        dockerfile=services_dir / "Dockerfile",
        repository=f"{config.registry}/{name}",
        tag=config.image_tag,
        platforms=config.image_platforms,
        build_args={"SERVICE": name, **build_args},
    )


def _quotas(config: StackConfig) -> dict[str, Quota]:
    """Per-concern ceilings: prod room for every HPA at max, smaller elsewhere."""
    scale = {"local": 1, "dev": 2, "prod": 8}[config.environment]
    gpus = config.gpu_capacity
    return {
        "services": Quota(f"{8 * scale}", f"{16 * scale}Gi", f"{16 * scale}", f"{32 * scale}Gi", 40 * scale, gpus),
        "data": Quota(f"{2 * scale}", f"{8 * scale}Gi", f"{4 * scale}", f"{16 * scale}Gi", 10 * scale),
        "observability": Quota(f"{2 * scale}", f"{8 * scale}Gi", f"{4 * scale}", f"{16 * scale}Gi", 30 * scale),
        "ingress": Quota(f"{1 * scale}", f"{2 * scale}Gi", f"{2 * scale}", f"{4 * scale}Gi", 10 * scale),
    }


def deploy(
    stack: str, config: StackConfig, planned: list[PlannedService], secret_values: pulumi.Output[dict[str, Any]] | None
) -> dict[str, Any]:
    """Register every resource of the stack; returns the stack outputs."""
    kubeconfig = config.kubernetes.kubeconfig
    if kubeconfig and not Path(kubeconfig).is_absolute():
        # Relative to the project, wherever the engine starts the program from.
        kubeconfig = str(REPO_ROOT / kubeconfig)
    provider = k8s.Provider("kubernetes", kubeconfig=kubeconfig, context=config.kubernetes.context)
    opts = pulumi.ResourceOptions(provider=provider)
    names = config.namespaces
    quotas = _quotas(config)
    namespaces = {
        concern: PlatformNamespace(
            f"ns-{concern}",
            NamespaceArgs(
                name=getattr(names, concern),
                concern=concern,
                quota=quotas[concern],
                # Node exporters and log shippers mount host paths; ingress and observability run upstream charts
                # whose pods we don't write policies for.
                pod_security="privileged" if concern == "observability" else "restricted",
                default_deny=concern in ("services", "data"),
                operators_rotate_secrets=concern in ("services", "data"),
            ),
            opts=opts,
        )
        for concern in ("services", "data", "observability", "ingress")
    }

    def inside(concern: str) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=provider, depends_on=[namespaces[concern]])

    by_store: dict[str, list[str]] = {"redis": [], "qdrant": [], "postgres": []}
    for item in planned:
        for store in item.spec.calls.datastores:
            by_store[store].append(item.spec.name)

    generated = GeneratedSecrets(
        "generated",
        GeneratedSecretsArgs(
            names=[f"redis-{s}" for s in by_store["redis"]]
            + ["redis-exporter", "qdrant-api-key", "pgbouncer-client", "internal-api-token"],
            rotation=config.secret_rotation,
        ),
        opts=opts,
    )
    secret = generated.values
    data = config.data_settings

    redis = Redis(
        "redis",
        RedisArgs(
            namespace=names.data,
            users={s: secret[f"redis-{s}"] for s in by_store["redis"]},
            exporter_password=secret["redis-exporter"],
            services_namespace=names.services,
            metrics_namespace=names.observability,
            maxmemory=data.redis_maxmemory,
            persistence=bool(data.redis_persistence) and data.persistent_volumes,
            storage_class=data.storage_class,
        ),
        opts=inside("data"),
    )
    qdrant = Qdrant(
        "qdrant",
        QdrantArgs(
            namespace=names.data,
            api_key=secret["qdrant-api-key"],
            services_namespace=names.services,
            callers=by_store["qdrant"],
            metrics_namespace=names.observability,
            replicas=data.qdrant_replicas,
            storage_size=data.qdrant_storage,
            storage_class=data.storage_class,
            persistent=data.persistent_volumes,
        ),
        opts=inside("data"),
    )
    esc = lambda key, default=None: _secret(secret_values, key, default)  # noqa: E731
    pgbouncer = PgBouncer(
        "pgbouncer",
        PgBouncerArgs(
            namespace=names.data,
            database_url=esc(DATABASE_URL, LOCAL_DATABASE_URL),
            read_replica_url=esc(DATABASE_READ_URL, ""),
            client_password=secret["pgbouncer-client"],
            services_namespace=names.services,
            callers=by_store["postgres"],
            replicas=data.pgbouncer_replicas,
        ),
        opts=inside("data"),
    )

    gpu_pools = None
    if config.gpu_pools:
        gpu_pools = GpuPools(
            "gpu",
            GpuPoolsArgs(
                pools=[
                    GpuPoolArgs(name=p.name, instance_type=p.instance_type, node_count=p.node_count, nodes=p.nodes)
                    for p in config.gpu_pools
                ]
            ),
            opts=opts,
        )

    stores = datastores(config)
    services: dict[str, PlatformService] = {}
    for item in planned:
        spec = item.spec
        env: dict[str, pulumi.Input[str]] = {
            url_env_name(c): f"http://{c}.{names.services}.svc.cluster.local" for c in item.callees
        }
        platform_secrets: dict[str, pulumi.Input[str]] = {"INTERNAL_API_TOKEN": secret["internal-api-token"]}
        for store in spec.calls.datastores:
            env.update(stores[store].env)
        if "redis" in spec.calls.datastores:
            env["REDIS_URL"] = f"redis://{spec.name}@{redis.host}:6379/0"
            platform_secrets["REDIS_PASSWORD"] = secret[f"redis-{spec.name}"]
        if "qdrant" in spec.calls.datastores:
            env["QDRANT_URL"] = qdrant.url
            platform_secrets["QDRANT_API_KEY"] = secret["qdrant-api-key"]
        if "postgres" in spec.calls.datastores:
            env.update({"PGHOST": pgbouncer.host, "PGUSER": CLIENT_USER, "PGDATABASE": pgbouncer.database})
            platform_secrets["PGPASSWORD"] = secret["pgbouncer-client"]
        services[spec.name] = PlatformService(
            spec.name,
            PlatformServiceArgs(
                spec=spec,
                namespace=names.services,
                image=item.image,
                secrets={k: esc(k, "") for k in spec.secrets if k not in platform_secrets},
                platform_secrets=platform_secrets,
                env=env,
                callers=item.callers,
                callees=item.callees,
                datastores=[stores[s].peer for s in spec.calls.datastores],
                ingress_namespace=names.ingress,
                metrics_namespace=names.observability,
                gpu=GpuPlacement() if item.gpu else None,
                spread_across_zones=config.is_prod,
                # The local cluster runs images loaded onto its node; there is no registry to pull from.
                image_pull_policy="IfNotPresent" if config.environment == "local" else "Always",
            ),
            opts=inside("services")
            if gpu_pools is None
            else pulumi.ResourceOptions(provider=provider, depends_on=[namespaces["services"], gpu_pools]),
        )

    crds = local_crds(provider) if config.local_crds else []
    routes = [
        RouteSpec(
            service=p.spec.name, path=r.path, rate_limit_rps=r.rate_limit_rps, max_body_size_mb=r.max_body_size_mb
        )
        for p in planned
        for r in p.spec.routes
    ]
    ingress = Ingress(
        "ingress",
        IngressArgs(
            namespace=names.ingress,
            services_namespace=names.services,
            domain=config.domain,
            routes=routes,
            tls_enabled=config.tls.enabled,
            tls_issuer=config.tls.issuer,
            tls_secret_name=config.tls.secret_name,
            replicas=2 if config.is_prod else 1,
            install_controller=config.install_charts,
            create_routes=config.install_charts or config.local_crds,
            nginx_policies=config.install_charts,
            crds=crds,
        ),
        opts=pulumi.ResourceOptions(provider=provider, depends_on=[namespaces["ingress"], *services.values()]),
    )
    observability = Observability(
        "observability",
        ObservabilityArgs(
            namespace=names.observability,
            services_namespace=names.services,
            service_names=[p.spec.name for p in planned],
            replicas=2 if config.is_prod else 1,
            storage_class=data.storage_class,
            install_charts=config.install_charts,
            monitoring_resources=config.install_charts or config.local_crds,
            crds=crds,
        ),
        opts=inside("observability"),
    )

    return {
        "environment": config.environment,
        "not_deployed": ingress.not_deployed + observability.not_deployed,
        "namespaces": {c: n.namespace.metadata.name for c, n in namespaces.items()},
        "services": {name: {"url": svc.url} for name, svc in services.items()},
        "data": {"redis": redis.url, "qdrant": qdrant.url, "pgbouncer": pgbouncer.host},
        "gpu_pools": [p.name for p in config.gpu_pools],
    }


LOCAL_CRDS = (
    "gateway.networking.k8s.io_gatewayclasses",
    "gateway.networking.k8s.io_gateways",
    "gateway.networking.k8s.io_httproutes",
    "gateway.networking.k8s.io_referencegrants",
    "monitoring.coreos.com_servicemonitors",
    "monitoring.coreos.com_prometheusrules",
)


def local_crds_dir() -> Path:
    """Where toolchain/build.sh (piece `crds`) puts the CRD manifests taken from Go modules."""
    if os.environ.get("SOPHIA_CRDS_DIR"):
        return Path(os.environ["SOPHIA_CRDS_DIR"])
    version = re.search(r"^TOOLCHAIN_VERSION=(\S+)", (REPO_ROOT / "toolchain" / "versions.env").read_text(), re.M)
    cache = Path(os.environ.get("SOPHIA_TOOLCHAIN_CACHE", Path.home() / ".cache" / "sophia-toolchain"))
    return cache / version.group(1) / "share" / "crds"  # type: ignore[union-attr]


def local_crds(provider: k8s.Provider) -> list[pulumi.Resource]:
    directory = local_crds_dir()
    return [
        k8s.yaml.v2.ConfigFile(
            f"crd-{name.split('_')[1]}",
            file=str(directory / f"{name}.yaml"),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        for name in LOCAL_CRDS
    ]


def _secret(values: pulumi.Output[dict[str, Any]] | None, key: str, default: str | None = None) -> pulumi.Output[str]:
    # Only the local stack may leave a secret unset (plan_services refuses that elsewhere).
    if values is None:
        return pulumi.Output.secret(default or "")
    return pulumi.Output.secret(values.apply(lambda d: str((d or {}).get(key) or default or "")))
