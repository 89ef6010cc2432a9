"""Planning: a stack's overrides applied to the discovered manifests, and every rule about
what the stack may run checked, before anything is registered.

Pure (no Pulumi calls), so a bad stack fails with every problem listed and nothing deployed.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from components import pgbouncer, qdrant, redis
from components.image import ImageBuild, ImageSource
from components.service import peak_pods
from components.spec import (
    ResourceAmounts,
    Resources,
    ServiceSpec,
    cpu_millicores,
    memory_bytes,
    replica_bounds_problem,
)
from components.tracing import COLLECTOR_RESOURCES, JAEGER_RESOURCES
from infra.config import ALERT_SECRETS, NAMESPACE, ConfigError, ServiceOverride, StackConfig
from infra.discovery import service_callers

REPO_ROOT = Path(__file__).resolve().parent.parent

# The API key table every service checks callers against (sophia_chassis.auth): from ESC, or
# generated with one key on the local stack.
API_KEYS = "API_KEYS"
# Secrets the platform mounts itself; a manifest may list them, ESC need not hold them per service.
PLATFORM_SECRETS = {redis.PASSWORD_KEY, qdrant.API_KEY_KEY, pgbouncer.PASSWORD_KEY, API_KEYS}
# External secrets the data layer reads from ESC (not from a service manifest).
DATABASE_URL, DATABASE_READ_URL = "DATABASE_URL", "DATABASE_READ_URL"
# The backup writer's S3 keys (ESC), when sophia:backup.enabled.
BACKUP_KEYS = ("BACKUP_ACCESS_KEY_ID", "BACKUP_SECRET_ACCESS_KEY")
# Loki's S3 keys (ESC), when sophia:logs.storage is s3.
LOKI_KEYS = ("LOKI_ACCESS_KEY_ID", "LOKI_SECRET_ACCESS_KEY")
PROD_MIN_REPLICAS = 2
# The version of a pinned image whose stack config names none.
UNKNOWN_VERSION = "unknown"


@dataclass(frozen=True)
class PlannedCanary:
    """The canary track of a service (sophia:services.<name>.canary)."""

    image: ImageSource
    version: str
    weight: int
    min_replicas: int
    max_replicas: int


@dataclass(frozen=True)
class PlannedService:
    spec: ServiceSpec
    image: ImageSource
    callers: tuple[str, ...]
    callees: dict[str, int]
    gpu: bool
    # What the stable track runs: the package's version, or the one a pinned image names.
    version: str = "0.0.0"
    canary: PlannedCanary | None = None


def with_override(spec: ServiceSpec, override: ServiceOverride | None) -> ServiceSpec:
    """The manifest with the stack's scaling and requests overrides merged in (checked afterwards,
    in one place)."""
    if override is None:
        return spec
    given = {
        "min_replicas": override.min_replicas,
        "max_replicas": override.max_replicas,
        "cpu_target": override.cpu_target,
    }
    scaling = spec.scaling.model_copy(update={k: v for k, v in given.items() if v is not None})
    update: dict[str, object] = {"scaling": scaling}
    update["resources"] = with_requests(spec.resources, override.requests)
    return spec.model_copy(update=update)


def with_requests(resources: Resources, requests: ResourceAmounts | None) -> Resources:
    """The stack's requests in place of a workload's own (checked against its limits afterwards)."""
    return resources if requests is None else resources.model_copy(update={"requests": requests})


def requests_problems(key: str, resources: Resources, where: str) -> list[str]:
    requests, limits = resources.requests, resources.limits
    return [
        f"{key}.requests.{kind}: {getattr(requests, kind)} is above the limit "
        f"{getattr(limits, kind)} ({where}); a request must not exceed its limit"
        for kind, amount in (("cpu", cpu_millicores), ("memory", memory_bytes))
        if amount(getattr(requests, kind)) > amount(getattr(limits, kind))
    ]


def collector_min_replicas(config: StackConfig) -> int:
    return PROD_MIN_REPLICAS if config.is_prod else 1


def tracing_problems(config: StackConfig) -> list[str]:
    """The trace pipeline's requests within its limits (components/tracing.py), and the collector's
    HPA maximum at least its minimum."""
    if not config.tracing.enabled:
        return []
    key, where = f"{NAMESPACE}:tracing", "components/tracing.py sets the limits"
    problems = requests_problems(
        f"{key}.collector", with_requests(COLLECTOR_RESOURCES, config.tracing.collector.requests), where
    ) + requests_problems(f"{key}.jaeger", with_requests(JAEGER_RESOURCES, config.tracing.jaeger.requests), where)
    lo, hi = collector_min_replicas(config), config.tracing.collector.max_replicas
    if hi < lo:
        problems.append(
            f"{key}.collector.max_replicas: {hi} is below the collector's minimum of {lo} replicas in "
            f"{config.environment}; set it to {lo} or more"
        )
    return problems


def scaling_problems(config: StackConfig, spec: ServiceSpec) -> list[str]:
    """The replica rules, on the merged numbers: HPA min <= max, and prod keeps two pods; and
    requests (which a stack may override) within the manifest's limits."""
    key = f"{NAMESPACE}:services.{spec.name}"
    where = f"after merging the stack's override into services/{spec.name}/service.yaml"
    lo, hi = spec.scaling.min_replicas, spec.scaling.max_replicas
    problems = []
    bounds = replica_bounds_problem(lo, hi)
    if bounds:
        problems.append(f"{key}.{bounds} ({where})")
    problems += requests_problems(key, spec.resources, where)
    if config.is_prod and lo < PROD_MIN_REPLICAS:
        problems.append(
            f"{key}.min_replicas: prod needs at least {PROD_MIN_REPLICAS} replicas for availability "
            f"(given: {lo}); raise it in the stack's override or in services/{spec.name}/service.yaml"
        )
    return problems


def plan_services(
    stack: str,
    config: StackConfig,
    specs: list[ServiceSpec],
    secrets_available: set[str],
    services_dir: Path = REPO_ROOT / "services",
) -> list[PlannedService]:
    """Apply the stack's overrides to the manifests and check what the stack can run."""
    by_name = {s.name: s for s in specs}
    problems = [
        f"{NAMESPACE}:services.{name}: no such service (discovered: {sorted(by_name)})"
        for name in config.services
        if name not in by_name
    ]
    declared = sorted({flag for s in specs for flag in s.flags})
    problems += [
        f"{NAMESPACE}:flags.{key}: no service reads this flag (declared in the manifests' `flags`: {declared}); "
        "check the spelling, or declare it in the service.yaml of the service whose code evaluates it"
        for key in config.flags
        if key not in declared
    ]
    if problems:
        raise ConfigError(stack, problems)

    effective = {
        spec.name: with_override(spec, config.services.get(spec.name))
        for spec in specs
        if config.services.get(spec.name, ServiceOverride()).enabled
    }
    planned = []
    for spec in effective.values():
        key = f"{NAMESPACE}:services.{spec.name}"
        problems += scaling_problems(config, spec)
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
        override = config.services.get(spec.name, ServiceOverride())
        built = _image_source(stack, config, spec, services_dir, problems)
        planned.append(
            PlannedService(
                spec=spec,
                image=override.image or built,
                callers=tuple(service_callers(list(effective.values()), spec.name)),
                callees={c: effective[c].port for c in spec.calls.services if c in effective},
                gpu=gpu,
                version=override.version or (UNKNOWN_VERSION if override.image else spec.version),
                canary=_canary(config, spec, built, problems),
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
    for kind in sorted({k for k in (config.alerting.page, config.alerting.ticket) if k}):
        if ALERT_SECRETS[kind] not in secrets_available:
            problems.append(
                f"{NAMESPACE}:secrets.{ALERT_SECRETS[kind]}: alerts go to {kind} but the stack has no "
                f"{ALERT_SECRETS[kind]}; add it to the ESC environment under pulumiConfig.{NAMESPACE}:secrets"
            )
    if config.environment != "local" and API_KEYS not in secrets_available and config.auth.oidc_issuer is None:
        problems.append(
            f"{NAMESPACE}:secrets.{API_KEYS}: nobody could call the services (no API key table and no "
            f"{NAMESPACE}:auth.oidc_issuer); issue keys with `python -m sophia_chassis.auth issue` and put the "
            f"entries, a JSON list, in the ESC environment under pulumiConfig.{NAMESPACE}:secrets.{API_KEYS}"
        )
    if config.environment != "local" and config.backup.enabled:
        problems += [
            f"{NAMESPACE}:secrets.{key}: backups are enabled but the stack has no S3 key for them; add it to "
            f"the ESC environment under pulumiConfig.{NAMESPACE}:secrets"
            for key in BACKUP_KEYS
            if key not in secrets_available
        ]
    problems += gpu_capacity_problems(config, planned)
    problems += tracing_problems(config)
    if config.environment != "local" and config.logs.storage == "s3":
        problems += [
            f"{NAMESPACE}:secrets.{key}: logs go to S3 but the stack has no key for Loki; add it to "
            f"the ESC environment under pulumiConfig.{NAMESPACE}:secrets"
            for key in LOKI_KEYS
            if key not in secrets_available
        ]
    if problems:
        raise ConfigError(stack, problems)
    return planned


def gpu_capacity_problems(config: StackConfig, planned: list[PlannedService]) -> list[str]:
    """Every GPU workload at its peak (HPA maximum plus rollout surge; the model server one replica
    per node of its pool, never surged) must fit the pools' GPUs, or a scale-out or a rollout waits
    for a GPU that never frees up."""
    needs = {
        f"{p.spec.name} {peak_pods(p.spec.scaling.max_replicas)} x {p.spec.gpu.count}": (
            peak_pods(p.spec.scaling.max_replicas) * p.spec.gpu.count
        )
        for p in planned
        if p.gpu and p.spec.gpu is not None
    }
    pool = config.model_server_pool
    if pool is not None:
        needs[f"model server {pool.node_count} x {pool.gpus_per_node}"] = pool.node_count * pool.gpus_per_node
    need, capacity = sum(needs.values()), config.gpu_capacity
    if need <= capacity:
        return []
    return [
        f"{NAMESPACE}:gpu_pools: the GPU workloads need {need} GPUs at once ({'; '.join(needs)}: pods at "
        f"max_replicas plus rolling-update surge, times GPUs each) but the pools have {capacity}; add nodes to a "
        "pool, lower those services' max_replicas, or set model_server.enabled=false"
    ]


def _canary(config: StackConfig, spec: ServiceSpec, built: ImageSource, problems: list[str]) -> PlannedCanary | None:
    canary = config.services.get(spec.name, ServiceOverride()).canary
    if canary is None:
        return None
    key = f"{NAMESPACE}:services.{spec.name}.canary"
    if not spec.routes:
        problems.append(
            f"{key}: a canary takes a share of the gateway's requests, and {spec.name} has no routes "
            f"(services/{spec.name}/service.yaml); remove the canary"
        )
    if "qdrant" in spec.calls.datastores and config.data_settings.qdrant_embedded:
        problems.append(
            f"{key}: {spec.name} embeds Qdrant on a volume one process owns (data.qdrant_embedded), so a "
            "second track cannot run beside it; remove the canary or use a Qdrant server"
        )
    max_replicas = canary.max_replicas or spec.scaling.max_replicas
    if canary.min_replicas > max_replicas:
        problems.append(
            f"{key}.min_replicas: {canary.min_replicas} is above the canary's max_replicas {max_replicas} "
            "(the stable track's unless set); lower it or set canary.max_replicas"
        )
    return PlannedCanary(
        image=canary.image or built,
        version=canary.version or spec.version,
        weight=canary.weight,
        min_replicas=canary.min_replicas,
        max_replicas=max_replicas,
    )


def _image_source(
    stack: str, config: StackConfig, spec: ServiceSpec, services_dir: Path, problems: list[str]
) -> ImageSource:
    """The service as built from its sources (or the stack's given reference where it builds none),
    tagged with the service's own version."""
    name, build_args = spec.name, spec.build_args
    # Local with `local_registry`: built on this machine (buildah, offline) into the registry there,
    # unless `images.<name>` names a prebuilt image.
    local_build = config.local_registry is not None and name not in config.images
    if config.registry is None and not local_build:
        return config.images.get(name, f"sophia/{name}:{spec.version}")
    override = config.services.get(name)
    if not (services_dir / name / "pyproject.toml").is_file() and not (override and override.image):
        problems.append(
            f"{NAMESPACE}:services.{name}.image: services/{name}/pyproject.toml is missing, so the {stack} "
            "stack cannot build it; make the service a package or set a prebuilt image reference"
        )
    # One Dockerfile for every service; the context is the repo root so it can install the
    # shared chassis (libs/) and the pins (requirements*.txt).
    if local_build:
        # The base image (PYTHON_IMAGE) is the one toolchain/image-build.sh makes from Debian packages.
        return ImageBuild(
            context=services_dir.parent,
            dockerfile=services_dir / "Dockerfile",
            repository=f"{config.local_registry}/sophia/{name}",
            tag=spec.version,
            build_args={"SERVICE": name, **build_args},
            builder="local",
        )
    return ImageBuild(
        context=services_dir.parent,
        dockerfile=services_dir / "Dockerfile",
        repository=f"{config.registry}/{name}",
        tag=spec.version,
        platforms=config.image_platforms,
        build_args={"SERVICE": name, **build_args},
    )


def upstreams_image(config: StackConfig, repo_root: Path = REPO_ROOT) -> ImageBuild:
    """The local stack's stand-ins for the internet's APIs (sophia_testing.upstreams), built
    like the services' images into the machine's registry."""
    return ImageBuild(
        context=repo_root,
        dockerfile=repo_root / "libs" / "sophia_testing" / "Dockerfile",
        repository=f"{config.local_registry}/sophia/upstreams",
        tag=config.image_tag,
        builder="local",
    )
