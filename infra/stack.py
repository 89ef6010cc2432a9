"""Assembly: from a validated stack config and the planned services to resources.

`deploy` is a short list of component calls; each builder below makes one concern's
components from the config. What each data store gives a calling service (endpoint,
settings, credentials) comes from the data store component itself.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import yaml
from pulumi_kubernetes.meta.v1 import ObjectMetaArgs

from components.backup import BackupTarget
from components.gpu import GpuPoolArgs, GpuPools, GpuPoolsArgs
from components.ingress import CanaryRoute, Ingress, IngressArgs, RouteSpec
from components.model_server import RESOURCES as MODEL_SERVER_RESOURCES
from components.model_server import ModelServer, ModelServerArgs
from components.monitoring import MonitoringImages
from components.namespace import NamespaceArgs, PlatformNamespace, Quota
from components.observability import AlertReceivers, LogStore, Observability, ObservabilityArgs
from components.pgbouncer import CLIENT_USER, PgBouncer, PgBouncerArgs
from components.postgres import LocalPostgres, LocalPostgresArgs
from components.qdrant import EmbeddedQdrant, EmbeddedQdrantArgs, Qdrant, QdrantArgs
from components.redis import Redis, RedisArgs
from components.secrets import GeneratedSecrets, GeneratedSecretsArgs
from components.service import (
    CANARY,
    FLAGS_FILE,
    STABLE,
    CanaryArgs,
    GpuPlacement,
    PlatformService,
    PlatformServiceArgs,
    ServiceIdentity,
    peak_pods,
)
from components.spec import Resources, ServiceSpec, cpu_millicores, memory_bytes
from components.tracing import COLLECTOR_RESOURCES, JAEGER_RESOURCES, Tracing, TracingArgs
from components.upstreams import UPSTREAMS, Upstreams, UpstreamsArgs
from components.workload import Connection, ObjectStorage, cluster_host, labels_for
from infra.config import ALERT_SECRETS, StackConfig
from infra.plan import (
    API_KEYS,
    BACKUP_KEYS,
    DATABASE_READ_URL,
    DATABASE_URL,
    LOKI_KEYS,
    REPO_ROOT,
    PlannedService,
    collector_min_replicas,
    upstreams_image,
    with_requests,
)

LOCAL_KEY_SECRET = "local-api-key"
LOCAL_KEY_ID, LOCAL_TENANT = "local", "local"
LOCAL_DATABASE_URL = "postgresql://sophia:local@postgres.invalid:5432/sophia"
CONCERNS = ("services", "data", "observability", "ingress")
FLAGS_CONFIG_MAP = "feature-flags"

# A stack secret from ESC by key, with a fallback where the stack may leave it unset.
EscSecret = Callable[..., pulumi.Output[str]]


def url_env_name(service: str) -> str:
    return service.upper().replace("-", "_") + "_URL"


@dataclass(frozen=True)
class Cluster:
    """Where resources go: the provider, and a namespace per concern to wait for."""

    provider: k8s.Provider
    namespaces: dict[str, PlatformNamespace]

    def inside(self, concern: str, *also: pulumi.Resource) -> pulumi.ResourceOptions:
        return pulumi.ResourceOptions(provider=self.provider, depends_on=[self.namespaces[concern], *also])


@dataclass(frozen=True)
class DataStores:
    redis: Redis
    # Embedded locally (`data.qdrant_embedded`): no server, each caller has its own volume.
    qdrant: Qdrant | EmbeddedQdrant
    pgbouncer: PgBouncer
    # Local (`local_upstreams`): stand-ins for the internet's APIs the external callers use.
    upstreams: Upstreams | None = None

    def connection(self, store: str, caller: str) -> Connection:
        component = {"redis": self.redis, "qdrant": self.qdrant, "postgres": self.pgbouncer}[store]
        return component.connection(caller)

    def connections(self, spec: ServiceSpec) -> list[Connection]:
        """A service's data stores, and on the local stack its upstream stand-ins."""
        stores = [self.connection(store, spec.name) for store in spec.calls.datastores]
        return stores + (self.upstreams.connections(spec.name) if self.upstreams else [])


def local_api_key(secret: pulumi.Output[str]) -> pulumi.Output[str]:
    """The local stack's one API key, every scope (the format sophia_chassis.auth checks)."""
    return pulumi.Output.secret(secret.apply(lambda value: f"sk_{LOCAL_KEY_ID}_{value}"))


def key_entry(key: str, rate_per_minute: int | None = None) -> dict[str, Any]:
    """The key table's entry for `key`: its SHA-256 only (as sophia_chassis.auth.issue_key writes)."""
    digest = hashlib.sha256(key.encode()).hexdigest()
    entry = {"id": LOCAL_KEY_ID, "tenant": LOCAL_TENANT, "scopes": ["*"], "sha256": digest, "revoked": False}
    return entry | ({"rate_per_minute": rate_per_minute} if rate_per_minute else {})


def callers_of(planned: list[PlannedService], store: str) -> list[str]:
    return [p.spec.name for p in planned if store in p.spec.calls.datastores]


def _services_quota(config: StackConfig, planned: list[PlannedService]) -> Quota:
    """Exactly what the planned services and the model server can use at once (every HPA at its
    maximum, mid-rollout; the model server one pod per node of its pool, never surged), so a
    scale-out or a rollout is never refused by the quota and nothing else fits beside them."""
    # (pods at peak, resources, GPUs per pod) per workload
    # A canary track's pods count beside the stable track's, each at its own HPA maximum.
    workloads = [
        (
            peak_pods(p.spec.scaling.max_replicas) + (peak_pods(p.canary.max_replicas) if p.canary else 0),
            p.spec.resources,
            p.spec.gpu.count if p.gpu and p.spec.gpu else 0,
        )
        for p in planned
    ]
    pool = config.model_server_pool
    if pool is not None:
        workloads.append((pool.node_count, MODEL_SERVER_RESOURCES, pool.gpus_per_node))

    def total(amount: Callable[[Resources, int], int]) -> int:
        return sum(pods * amount(resources, gpus) for pods, resources, gpus in workloads)

    return Quota(
        requests_cpu=f"{total(lambda r, _: cpu_millicores(r.requests.cpu))}m",
        requests_memory=f"{total(lambda r, _: memory_bytes(r.requests.memory)) // 2**20}Mi",
        limits_cpu=f"{total(lambda r, _: cpu_millicores(r.limits.cpu))}m",
        limits_memory=f"{total(lambda r, _: memory_bytes(r.limits.memory)) // 2**20}Mi",
        pods=sum(pods for pods, _, _ in workloads),
        gpus=total(lambda _, gpus: gpus),
    )


def _quotas(config: StackConfig, planned: list[PlannedService]) -> dict[str, Quota]:
    """Per-concern ceilings: the services' from their manifests, the platform's by environment size."""
    scale = {"local": 1, "dev": 2, "prod": 8}[config.environment]
    return {
        "services": _services_quota(config, planned),
        "data": Quota(f"{2 * scale}", f"{8 * scale}Gi", f"{6 * scale}", f"{16 * scale}Gi", 10 * scale),
        # Limits: locally the monitoring and trace pipelines run beside each other on the one node
        # (their limits at peak, a rollout included, 4.1 CPU).
        "observability": Quota(f"{2 * scale}", f"{8 * scale}Gi", f"{5 * scale}", f"{16 * scale}Gi", 30 * scale),
        "ingress": Quota(f"{1 * scale}", f"{2 * scale}Gi", f"{2 * scale}", f"{4 * scale}Gi", 10 * scale),
    }


def deploy(
    stack: str, config: StackConfig, planned: list[PlannedService], secret_values: pulumi.Output[dict[str, Any]] | None
) -> dict[str, Any]:
    """Register every resource of the stack; returns the stack outputs."""
    # Read before anything is registered: a missing manifest touches nothing.
    crd_documents = local_crd_documents() if config.local_crds else {}
    cluster = _cluster(config, planned)
    generated_secrets = _generated_secrets(config, planned, cluster)
    generated = generated_secrets.values
    esc: EscSecret = lambda key, default=None: _secret(secret_values, key, default)  # noqa: E731
    stores = _data_stores(config, planned, generated, esc, cluster, generated_secrets.previous)
    gpu_pools = _gpu_pools(config, cluster)
    local_key = local_api_key(generated[LOCAL_KEY_SECRET]) if config.environment == "local" else None
    api_keys = (
        esc(API_KEYS, "[]")
        if local_key is None
        else local_key.apply(lambda k: json.dumps([key_entry(k, config.auth.local_key_rate_per_minute)]))
    )
    tracing = _tracing(config, planned, cluster)
    model_server = _model_server(config, planned, cluster, gpu_pools)
    flags = _flags(config, cluster)
    services = _services(config, planned, stores, api_keys, esc, cluster, gpu_pools, tracing, flags, model_server)
    crds = local_crds(cluster.provider, crd_documents)
    ingress = _ingress(config, planned, crds, cluster, services)
    observability = _observability(config, planned, crds, cluster, esc, tracing)
    untraced = [] if tracing else ["tracing: the OpenTelemetry Collector and Jaeger (sophia:tracing.enabled is false)"]
    return {
        "environment": config.environment,
        "not_deployed": ingress.not_deployed + observability.not_deployed + untraced,
        "namespaces": {c: n.namespace.metadata.name for c, n in cluster.namespaces.items()},
        # What runs where: per service and track, the version and the image by digest.
        "services": {p.spec.name: _running(services[p.spec.name], p) for p in planned},
        "flags": {key: flag.rule() for key, flag in sorted(config.flags.items())},
        "data": {"redis": stores.redis.url, "qdrant": stores.qdrant.url, "pgbouncer": stores.pgbouncer.host},
        "gpu_pools": [p.name for p in config.gpu_pools],
        **({"model_server": model_server.url} if model_server else {}),
        # `pulumi stack output --show-secrets api_key`: the local stack's key, for trying the services.
        **({"api_key": local_key} if local_key is not None else {}),
    }


def _running(svc: PlatformService, item: PlannedService) -> dict[str, Any]:
    tracks: dict[str, Any] = {STABLE: {"version": item.version, "image": svc.images[STABLE]}}
    if item.canary:
        tracks[CANARY] = {"version": item.canary.version, "image": svc.images[CANARY], "weight": item.canary.weight}
    return {"url": svc.url, "tracks": tracks}


def _cluster(config: StackConfig, planned: list[PlannedService]) -> Cluster:
    kubeconfig = config.kubernetes.kubeconfig
    if kubeconfig and not Path(kubeconfig).is_absolute():
        # Relative to the project, wherever the engine starts the program from.
        kubeconfig = str(REPO_ROOT / kubeconfig)
    # ConfigMaps are updated in place. The provider's default replaces a changed ConfigMap, which with
    # a fixed name (all of ours) deletes it first and takes every workload depending on it down and
    # up again: the rollout a feature flag must not cause. The others' pods roll on their content
    # checksum (workload.content_checksum; tests/program/test_releases.py). One provider, not a second
    # for the flags: each is a plugin process that fetches and parses the API server's OpenAPI
    # document on every up (issue 18, part 5).
    provider = k8s.Provider(
        "kubernetes", kubeconfig=kubeconfig, context=config.kubernetes.context, enable_config_map_mutable=True
    )
    quotas = _quotas(config, planned)
    namespaces = {
        concern: PlatformNamespace(
            f"ns-{concern}",
            NamespaceArgs(
                name=getattr(config.namespaces, concern),
                concern=concern,
                quota=quotas[concern],
                # Node exporters and log shippers mount host paths; ingress and observability run upstream charts
                # whose pods we don't write policies for.
                pod_security="privileged" if concern == "observability" else "restricted",
                default_deny=concern in ("services", "data"),
                operators_rotate_secrets=concern in ("services", "data"),
            ),
            opts=pulumi.ResourceOptions(provider=provider),
        )
        for concern in CONCERNS
    }
    return Cluster(provider, namespaces)


def _generated_secrets(config: StackConfig, planned: list[PlannedService], cluster: Cluster) -> GeneratedSecrets:
    return GeneratedSecrets(
        "generated",
        GeneratedSecretsArgs(
            names=[f"redis-{s}" for s in callers_of(planned, "redis")]
            + ["redis-exporter", "qdrant-api-key", "pgbouncer-client"]
            + ([LOCAL_KEY_SECRET] if config.environment == "local" else [])
            + (["redis-backup"] if config.backup.enabled else [])
            + (["postgres-local"] if config.data_settings.local_postgres else []),
            rotation=config.secret_rotation,
        ),
        opts=pulumi.ResourceOptions(provider=cluster.provider),
    )


def _data_stores(
    config: StackConfig,
    planned: list[PlannedService],
    generated: dict[str, pulumi.Output[str]],
    esc: EscSecret,
    cluster: Cluster,
    previous: dict[str, pulumi.Output[str]] | None = None,
) -> DataStores:
    names, data = config.namespaces, config.data_settings
    backup = _backup_target(config, esc)
    redis = Redis(
        "redis",
        RedisArgs(
            namespace=names.data,
            users={s: generated[f"redis-{s}"] for s in callers_of(planned, "redis")},
            # The password each had before the last rotation stays valid until the next one.
            previous_passwords={s: previous[f"redis-{s}"] for s in callers_of(planned, "redis")} if previous else {},
            exporter_password=generated["redis-exporter"],
            exporter_previous_password=previous["redis-exporter"] if previous else None,
            services_namespace=names.services,
            metrics_namespace=names.observability,
            maxmemory=data.redis_maxmemory,
            persistence=bool(data.redis_persistence) and data.persistent_volumes,
            storage_class=data.storage_class,
            backup=backup,
            backup_password=generated["redis-backup"] if backup else None,
        ),
        opts=cluster.inside("data"),
    )
    qdrant: Qdrant | EmbeddedQdrant
    if data.qdrant_embedded:
        qdrant = EmbeddedQdrant(
            "qdrant",
            EmbeddedQdrantArgs(
                services_namespace=names.services,
                callers=callers_of(planned, "qdrant"),
                storage_size=data.qdrant_storage,
                storage_class=data.storage_class,
            ),
            opts=cluster.inside("services"),
        )
    else:
        qdrant = Qdrant(
            "qdrant",
            QdrantArgs(
                namespace=names.data,
                api_key=generated["qdrant-api-key"],
                previous_api_key=previous["qdrant-api-key"] if previous else None,
                services_namespace=names.services,
                callers=callers_of(planned, "qdrant"),
                metrics_namespace=names.observability,
                replicas=data.qdrant_replicas,
                storage_size=data.qdrant_storage,
                storage_class=data.storage_class,
                persistent=data.persistent_volumes,
                backup=backup,
            ),
            opts=cluster.inside("data"),
        )
    database_url: pulumi.Input[str] = esc(DATABASE_URL, LOCAL_DATABASE_URL)
    server_labels = None
    if data.local_postgres:
        # Locally the database is a pod (LocalPostgres) instead of Neon, still behind PgBouncer.
        postgres = LocalPostgres(
            "postgres",
            LocalPostgresArgs(
                namespace=names.data,
                user=CLIENT_USER,
                password=generated["postgres-local"],
                database="sophia",
                client_labels={"app.kubernetes.io/name": "pgbouncer"},
            ),
            opts=cluster.inside("data"),
        )
        database_url = pulumi.Output.concat(
            f"postgresql://{CLIENT_USER}:", generated["postgres-local"], f"@{postgres.host}:5432/sophia"
        )
        server_labels = postgres.labels
    pgbouncer = PgBouncer(
        "pgbouncer",
        PgBouncerArgs(
            namespace=names.data,
            database_url=database_url,
            server_labels=server_labels,
            read_replica_url=esc(DATABASE_READ_URL, ""),
            client_password=generated["pgbouncer-client"],
            previous_client_password=previous["pgbouncer-client"] if previous else None,
            services_namespace=names.services,
            callers=callers_of(planned, "postgres"),
            replicas=data.pgbouncer_replicas,
        ),
        opts=cluster.inside("data"),
    )
    upstreams = None
    if config.local_upstreams:
        upstreams = Upstreams(
            "upstreams",
            UpstreamsArgs(
                namespace=names.data,
                services_namespace=names.services,
                callers={
                    p.spec.name: [k for k in p.spec.secrets if k in UPSTREAMS]
                    for p in planned
                    if p.spec.calls.external and set(p.spec.secrets) & set(UPSTREAMS)
                },
                image=upstreams_image(config),
            ),
            opts=cluster.inside("data"),
        )
    return DataStores(redis, qdrant, pgbouncer, upstreams)


def _backup_target(config: StackConfig, esc: EscSecret) -> BackupTarget | None:
    """Where Qdrant and Redis back up to (sophia:backup and the writer's keys, both from ESC)."""
    b = config.backup
    if not b.enabled or b.bucket is None:
        return None
    access, secret = (esc(key) for key in BACKUP_KEYS)
    return BackupTarget(
        b.bucket,
        access,
        secret,
        b.region,
        b.endpoint,
        prefix=b.prefix,
        schedule=b.schedule,
        retention_days=b.retention_days,
    )


def _gpu_pools(config: StackConfig, cluster: Cluster) -> GpuPools | None:
    if not config.gpu_pools:
        return None
    return GpuPools(
        "gpu",
        GpuPoolsArgs(
            pools=[
                GpuPoolArgs(name=p.name, instance_type=p.instance_type, node_count=p.node_count, nodes=p.nodes)
                for p in config.gpu_pools
            ]
        ),
        opts=pulumi.ResourceOptions(provider=cluster.provider),
    )


def _model_server(
    config: StackConfig, planned: list[PlannedService], cluster: Cluster, gpu_pools: GpuPools | None
) -> ModelServer | None:
    """vLLM on the stack's GPU pool, for the services that declare `calls.model_server`."""
    pool, settings = config.model_server_pool, config.model_server
    if pool is None or settings.image is None:
        return None
    return ModelServer(
        "model-server",
        ModelServerArgs(
            namespace=config.namespaces.services,
            image=settings.image,
            model=settings.model,
            pool=pool.name,
            replicas=pool.node_count,
            gpus=pool.gpus_per_node,
            arch=pool.arch,
            callers=[p.spec.name for p in planned if p.spec.calls.model_server],
            services_namespace=config.namespaces.services,
            metrics_namespace=config.namespaces.observability,
            cache_size=settings.cache_size,
            storage_class=config.data_settings.storage_class,
            max_model_len=settings.max_model_len,
            gpu_memory_utilization=settings.gpu_memory_utilization,
            spread_across_zones=config.is_prod,
        ),
        opts=cluster.inside("services", *([gpu_pools] if gpu_pools else [])),
    )


def _services(
    config: StackConfig,
    planned: list[PlannedService],
    stores: DataStores,
    api_keys: pulumi.Output[str],
    esc: EscSecret,
    cluster: Cluster,
    gpu_pools: GpuPools | None,
    tracing: Tracing | None,
    flags: k8s.core.v1.ConfigMap,
    model_server: ModelServer | None = None,
) -> dict[str, PlatformService]:
    services_ns = config.namespaces.services
    auth = config.auth
    identity = ServiceIdentity(
        issuer=auth.service_account_issuer,
        jwks_url=auth.service_account_jwks_url,
        api_server_cidrs=auth.api_server_cidrs,
        api_server_ports=auth.api_server_ports,
        token_ttl_seconds=auth.service_token_ttl_seconds,
        oidc_issuer=auth.oidc_issuer,
        oidc_jwks_url=auth.oidc_jwks_url,
        oidc_tenant_claim=auth.oidc_tenant_claim,
    )
    services: dict[str, PlatformService] = {}
    for item in planned:
        spec = item.spec
        connections = stores.connections(spec)
        env: dict[str, pulumi.Input[str]] = {
            url_env_name(c): f"http://{cluster_host(c, services_ns)}" for c in item.callees
        }
        platform_secrets: dict[str, pulumi.Input[str]] = {API_KEYS: api_keys}
        live_secrets: set[str] = set()
        for connection in connections:
            env.update(connection.env)
            platform_secrets.update(connection.secrets)
            live_secrets |= connection.live_secrets
        if tracing:  # sophia_chassis.tracing: export spans to the collector, keep this share of new traces
            env |= {
                "OTEL_EXPORTER_OTLP_ENDPOINT": tracing.endpoint,
                "TRACE_SAMPLE_RATIO": str(config.tracing.sample_ratio),
            }
        # Egress peers outside the namespace: the data stores, the collector spans go to, the model server.
        peers = [c.peer for c in connections if c.peer is not None] + ([tracing.peer] if tracing else [])
        if model_server is not None and spec.calls.model_server:
            env["LOCAL_MODEL_URL"] = model_server.url
            peers.append(model_server.peer)
        claims = [c.volume_claim for c in connections if c.volume_claim is not None]
        services[spec.name] = PlatformService(
            spec.name,
            PlatformServiceArgs(
                spec=spec,
                namespace=services_ns,
                image=item.image,
                secrets={k: esc(k, "") for k in spec.secrets if k not in platform_secrets},
                platform_secrets=platform_secrets,
                live_secrets=frozenset(live_secrets),
                secrets_after=[r for c in connections for r in c.secrets_after],
                env=env,
                callers=item.callers,
                callees=item.callees,
                datastores=peers,
                data_claim=claims[0] if claims else None,
                ingress_namespace=config.namespaces.ingress,
                metrics_namespace=config.namespaces.observability,
                gpu=GpuPlacement() if item.gpu else None,
                identity=identity,
                spread_across_zones=config.is_prod,
                # The local cluster runs images loaded onto its node; there is no registry to pull from.
                image_pull_policy="IfNotPresent" if config.environment == "local" else "Always",
                # By name, not the resource's output: a flag change must not touch the Deployments.
                flags_config_map=FLAGS_CONFIG_MAP,
                version=item.version,
                scaling_behavior=config.autoscaling.behavior(),
                shutdown=config.shutdown.shutdown(),
                canary=CanaryArgs(
                    image=item.canary.image,
                    version=item.canary.version,
                    min_replicas=item.canary.min_replicas,
                    max_replicas=item.canary.max_replicas,
                )
                if item.canary
                else None,
            ),
            # A GPU service waits for its pool (runtime class, node labels, device plugin); the
            # others need none of it, and waiting would hold every rollout behind the plugin's.
            opts=cluster.inside("services", flags, *([gpu_pools] if gpu_pools and item.gpu else [])),
        )
    return services


def _flags(config: StackConfig, cluster: Cluster) -> k8s.core.v1.ConfigMap:
    """The stack's feature flags (sophia:flags), one ConfigMap every service mounts; always made,
    even empty, so the first flag set later changes no pod template."""
    return k8s.core.v1.ConfigMap(
        "feature-flags",
        metadata=ObjectMetaArgs(
            name=FLAGS_CONFIG_MAP, namespace=config.namespaces.services, labels=labels_for("feature-flags", "flags")
        ),
        data={FLAGS_FILE: config.flags_document()},
        opts=cluster.inside("services"),
    )


def _ingress(
    config: StackConfig,
    planned: list[PlannedService],
    crds: list[pulumi.Resource],
    cluster: Cluster,
    services: dict[str, PlatformService],
) -> Ingress:
    routes = [
        RouteSpec(
            service=p.spec.name,
            path=r.path,
            rate_limit_rps=r.rate_limit_rps,
            max_body_size_mb=r.max_body_size_mb,
            canary=CanaryRoute(service=f"{p.spec.name}-{CANARY}", weight=p.canary.weight) if p.canary else None,
        )
        for p in planned
        for r in p.spec.routes
    ]
    return Ingress(
        "ingress",
        IngressArgs(
            namespace=config.namespaces.ingress,
            services_namespace=config.namespaces.services,
            domain=config.domain,
            routes=routes,
            tls_enabled=config.tls.enabled,
            tls_issuer=config.tls.issuer,
            acme_email=config.tls.acme_email,
            tls_secret_name=config.tls.secret_name,
            replicas=2 if config.is_prod else 1,
            install_controller=config.install_charts,
            create_routes=config.install_charts or config.local_crds,
            nginx_policies=config.install_charts,
            crds=crds,
            trust_trace_context=config.tracing.trust_caller_context,
        ),
        opts=cluster.inside("ingress", *services.values()),
    )


def _tracing(config: StackConfig, planned: list[PlannedService], cluster: Cluster) -> Tracing | None:
    if not config.tracing.enabled:
        return None
    return Tracing(
        "tracing",
        TracingArgs(
            namespace=config.namespaces.observability,
            services_namespace=config.namespaces.services,
            services=[p.spec.name for p in planned],
            collector_replicas=collector_min_replicas(config),
            collector_max_replicas=config.tracing.collector.max_replicas,
            retention_hours=config.tracing.retention_hours,
            storage=config.tracing.storage,
            collector_resources=with_requests(COLLECTOR_RESOURCES, config.tracing.collector.requests),
            jaeger_resources=with_requests(JAEGER_RESOURCES, config.tracing.jaeger.requests),
            storage_class=config.data_settings.storage_class,
        ),
        opts=cluster.inside("observability"),
    )


def _observability(
    config: StackConfig,
    planned: list[PlannedService],
    crds: list[pulumi.Resource],
    cluster: Cluster,
    esc: EscSecret,
    tracing: Tracing | None,
) -> Observability:
    alerting = config.alerting
    kinds = {k for k in (alerting.page, alerting.ticket) if k}
    receivers = AlertReceivers(
        page=alerting.page,
        ticket=alerting.ticket,
        secrets={kind: esc(ALERT_SECRETS[kind]) for kind in kinds},
        slack_channel=alerting.slack_channel,
    )
    return Observability(
        "observability",
        ObservabilityArgs(
            namespace=config.namespaces.observability,
            services_namespace=config.namespaces.services,
            services={p.spec.name: p.spec.observability for p in planned},
            replicas=2 if config.is_prod else 1,
            storage_class=config.data_settings.storage_class,
            install_charts=config.install_charts,
            monitoring_resources=config.install_charts or config.local_crds,
            crds=crds,
            alert_receivers=receivers,
            jaeger_url=tracing.query_url if tracing else None,
            logs=_log_store(config, esc),
            local_monitoring=MonitoringImages.from_versions(monitoring_versions()) if config.local_monitoring else None,
        ),
        opts=cluster.inside("observability"),
    )


def _log_store(config: StackConfig, esc: EscSecret) -> LogStore:
    """Loki's retention, replicas and storage (sophia:logs; the bucket and keys from ESC in prod)."""
    logs = config.logs_settings
    s3 = None
    if logs.storage == "s3" and logs.bucket:
        access, secret = (esc(key) for key in LOKI_KEYS)
        s3 = ObjectStorage(logs.bucket, access, secret, logs.region, logs.endpoint)
    return LogStore(
        retention_days=logs.retention_days,
        audit_retention_days=logs.audit_retention_days,
        replicas=logs.replicas,
        volume_size=logs.volume_size,
        s3=s3,
    )


LOCAL_CRDS = (
    "gateway.networking.k8s.io_gatewayclasses",
    "gateway.networking.k8s.io_gateways",
    "gateway.networking.k8s.io_httproutes",
    "gateway.networking.k8s.io_referencegrants",
    "monitoring.coreos.com_servicemonitors",
    "monitoring.coreos.com_prometheusrules",
)


def monitoring_versions() -> dict[str, str]:
    """The pins of the local stack's monitoring images (toolchain/monitoring.env, which builds them)."""
    text = (REPO_ROOT / "toolchain" / "monitoring.env").read_text()
    return dict(re.findall(r"^([A-Z_]+)=(\S+)", text, re.M))


def local_crds_dir() -> Path:
    """Where toolchain/build.sh (piece `crds`) puts the CRD manifests taken from Go modules."""
    if os.environ.get("SOPHIA_CRDS_DIR"):
        return Path(os.environ["SOPHIA_CRDS_DIR"])
    version = re.search(r"^TOOLCHAIN_VERSION=(\S+)", (REPO_ROOT / "toolchain" / "versions.env").read_text(), re.M)
    cache = Path(os.environ.get("SOPHIA_TOOLCHAIN_CACHE", Path.home() / ".cache" / "sophia-toolchain"))
    return cache / version.group(1) / "share" / "crds"  # type: ignore[union-attr]


# What registered each CRD before: one yaml/v2 ConfigFile per manifest, the CRD its child.
CONFIG_FILE = "kubernetes:yaml/v2:ConfigFile"


def local_crd_documents() -> dict[str, dict[str, Any]]:
    """Each manifest of LOCAL_CRDS as its CRD object, keyed by the resource name the stack gives it."""
    directory = local_crds_dir()
    documents = {}
    for name in LOCAL_CRDS:
        path = directory / f"{name}.yaml"
        if not path.is_file():
            raise ValueError(
                f"sophia:local_crds: {path} is missing; build the CRD manifests with `toolchain/build.sh crds` "
                "(make up and make bootstrap do), or set SOPHIA_CRDS_DIR to where they are"
            )
        # libyaml's loader: the pure-Python one takes a second for these 580 kB, at every up.
        document = yaml.load(path.read_text(), Loader=getattr(yaml, "CSafeLoader", yaml.SafeLoader))
        # As the API server has it without a status (which yaml/v2 dropped too).
        documents[f"crd-{name.split('_')[1]}"] = {k: v for k, v in document.items() if k != "status"}
    return documents


def local_crds(provider: k8s.Provider, documents: dict[str, dict[str, Any]]) -> list[pulumi.Resource]:
    """The Gateway API and Prometheus-operator CRDs, registered as typed resources from the toolchain's
    manifests: owned, diffed and deleted like the rest. A yaml/v2 ConfigFile per manifest did this
    before at a cost of 4-23 s of provider CPU on every up, a no-op included (issue 18, part 5): each
    is a Construct the provider parses, registers and checks. The alias takes over the ConfigFile's
    child in a kept stack, the same object; without it the CRD would be created anew and the old
    one deleted, and with it every Gateway, route, ServiceMonitor and rule."""
    return [
        k8s.apiextensions.v1.CustomResourceDefinition(
            name,
            metadata=doc["metadata"],
            spec=doc["spec"],
            opts=pulumi.ResourceOptions(
                provider=provider,
                aliases=[
                    pulumi.Alias(name=f"{name}:{doc['metadata']['name']}", parent=pulumi.create_urn(name, CONFIG_FILE))
                ],
            ),
        )
        for name, doc in documents.items()
    ]


def _secret(values: pulumi.Output[dict[str, Any]] | None, key: str, default: str | None = None) -> pulumi.Output[str]:
    # Only the local stack may leave a secret unset (plan_services refuses that elsewhere).
    if values is None:
        return pulumi.Output.secret(default or "")
    return pulumi.Output.secret(values.apply(lambda d: str((d or {}).get(key) or default or "")))
