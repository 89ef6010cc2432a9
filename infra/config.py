"""A stack's configuration as one typed model, read from Pulumi config.

Every key lives under the `sophia:` namespace in `Pulumi.<stack>.yaml` (or comes
from an ESC environment's `pulumiConfig`). `load_stack_config` validates the whole
stack before the program registers a single resource, and a bad value fails with
`sophia:<key>: <what is wrong> (given: <value>)`.
"""

from __future__ import annotations

import ipaddress
import json
import re
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from components.service import ScalingBehavior, Shutdown
from components.spec import DNS_LABEL, ENV_NAME, FLAG_KEY, SEMVER, ResourceAmounts, matching

NAMESPACE = "sophia"
HOSTNAME = re.compile(r"^(?=.{1,253}$)([a-z0-9]([-a-z0-9]*[a-z0-9])?)(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
REGISTRY = re.compile(r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*$")
LOCAL_REGISTRY = re.compile(r"^127\.0\.0\.1:\d{1,5}$")
IMAGE_TAG = re.compile(r"^[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}$")
PLATFORM = re.compile(r"^linux/(amd64|arm64)$")
# The key secrets are read from; its values never enter the model (see stack_secrets).
SECRETS_KEY = "secrets"


class ConfigError(ValueError):
    """A stack config that must not be deployed; the message lists every problem."""

    def __init__(self, stack: str, problems: list[str]):
        self.problems = problems
        lines = "\n".join(f"  - {p}" for p in problems)
        super().__init__(
            f"stack '{stack}' has {len(problems)} configuration error(s):\n{lines}\n"
            f"Fix them in Pulumi.{stack}.yaml (or `pulumi config set --path {NAMESPACE}:<key> <value>`); "
            "nothing was deployed."
        )


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


EMAIL = re.compile(r"^[^@\s]+@[A-Za-z0-9.-]+\.[A-Za-z]{2,}$")


class Tls(_Strict):
    enabled: bool = False
    # Let's Encrypt through cert-manager (the program creates the ClusterIssuer, HTTP-01 through the
    # Gateway), or a Secret (e.g. from ESC) holding tls.crt/tls.key.
    issuer: Literal["letsencrypt-staging", "letsencrypt-prod"] | None = None
    acme_email: str | None = None  # Let's Encrypt's expiry notices go here
    secret_name: str | None = None

    @model_validator(mode="after")
    def _source(self) -> Tls:
        if self.enabled and bool(self.issuer) == bool(self.secret_name):
            raise ValueError(
                f"{NAMESPACE}:tls: with enabled=true set exactly one of tls.issuer "
                f"(cert-manager ClusterIssuer) or tls.secret_name (given: issuer={self.issuer!r}, "
                f"secret_name={self.secret_name!r})"
            )
        if self.issuer and not (self.acme_email and EMAIL.match(self.acme_email)):
            raise ValueError(
                f"{NAMESPACE}:tls.acme_email: {self.issuer} needs a contact address for the ACME account "
                f"(given: {self.acme_email!r}); set e.g. tls.acme_email: platform@example.com"
            )
        return self


class GpuPool(_Strict):
    """A named set of GPU nodes; K3s labels and taints the nodes that join it."""

    name: str
    node_count: int = Field(ge=0, le=64)
    gpus_per_node: int = Field(1, ge=1, le=8)
    instance_type: str = "gpu_1x_gh200"
    # The nodes' CPU architecture (GH200 is Grace, arm64): the model server's image must have it.
    arch: Literal["amd64", "arm64"] = "arm64"
    # Nodes already joined to K3s that this pool labels and taints (joining ones use the agent flags).
    nodes: tuple[str, ...] = ()

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v):
            raise ValueError(f"{v!r} is not a valid pool name; use lowercase letters, digits and '-'")
        return v

    @model_validator(mode="after")
    def _nodes_fit(self) -> GpuPool:
        if len(self.nodes) > self.node_count:
            raise ValueError(
                f"{NAMESPACE}:gpu_pools: pool {self.name} lists {len(self.nodes)} nodes but node_count is "
                f"{self.node_count}; raise node_count or list fewer nodes"
            )
        return self


class Data(_Strict):
    """Data store sizing; unset values take the environment's default (see `for_environment`)."""

    redis_persistence: bool | None = None
    redis_maxmemory: str = "256mb"
    qdrant_replicas: Literal[1, 3, 5] | None = None
    qdrant_storage: str = "10Gi"
    storage_class: str | None = None
    # False keeps data in emptyDir volumes: for clusters without a volume provisioner (local).
    persistent_volumes: bool = True
    pgbouncer_replicas: int | None = Field(None, ge=1, le=10)
    # Local: no Qdrant server (no binary or image can be had offline); services that call Qdrant
    # use the embedded engine (Qdrant Edge) on a PersistentVolumeClaim of `storage_class` instead.
    qdrant_embedded: bool = False
    # Local: a PostgreSQL pod behind PgBouncer instead of the external database (Neon).
    local_postgres: bool = False

    @field_validator("redis_maxmemory")
    @classmethod
    def _maxmemory(cls, v: str) -> str:
        if not re.match(r"^[0-9]+(kb|mb|gb)$", v):
            raise ValueError(f"{v!r} is not a Redis memory size; use e.g. '256mb' or '2gb'")
        return v

    def for_environment(self, environment: str) -> Data:
        prod = environment == "prod"
        return self.model_copy(
            update={
                "redis_persistence": prod if self.redis_persistence is None else self.redis_persistence,
                "qdrant_replicas": (3 if prod else 1) if self.qdrant_replicas is None else self.qdrant_replicas,
                "pgbouncer_replicas": (2 if prod else 1)
                if self.pgbouncer_replicas is None
                else self.pgbouncer_replicas,
            }
        )


IMAGE_BY_DIGEST = re.compile(
    r"^[a-z0-9]([-a-z0-9._/]*[a-z0-9])?(:[0-9]+)?(/[a-z0-9._-]+)*(:[A-Za-z0-9_.-]+)?@sha256:[0-9a-f]{64}$"
)


class ModelServer(_Strict):
    """vLLM's OpenAI-compatible server on a GPU pool (components/model_server.py): one replica per
    node of the pool, every GPU of its node; agno-coordinator's cheapest tier where it runs."""

    enabled: bool = True  # runs only where the stack has a GPU pool with nodes
    # Pinned by digest and holding the pool's architecture (linux/arm64 for GH200); no default
    # anyone could verify offline, so a stack that runs the server names it.
    image: str | None = None
    # A Hugging Face model id, served under the same name: agno-coordinator's model table names it
    # as its `local` provider's upstream (services/agno-coordinator/agno_coordinator/models.yaml).
    model: str = "Qwen/Qwen2.5-7B-Instruct"
    pool: str | None = None  # unset: the first pool with nodes
    cache_size: str = "100Gi"
    max_model_len: int = Field(32768, ge=1024, le=1_048_576)
    gpu_memory_utilization: float = Field(0.9, gt=0.1, le=0.98)

    @field_validator("image")
    @classmethod
    def _image(cls, v: str | None) -> str | None:
        if v is not None and not IMAGE_BY_DIGEST.match(v):
            raise ValueError(
                f"{v!r} is not an image pinned by digest; use e.g. vllm/vllm-openai@sha256:<64 hex digits> "
                "(`docker buildx imagetools inspect vllm/vllm-openai:<version>` prints the digest)"
            )
        return v


def _semver(v: str | None) -> str | None:
    if v is not None and not SEMVER.match(v):
        raise ValueError(f"{v!r} is not a semantic version; use e.g. '1.4.0' or '1.5.0-rc.1' (semver.org)")
    return v


class Canary(_Strict):
    """A second Deployment of the service (track `canary`) beside the stable one, taking `weight` %
    of the gateway's requests to its routes (HTTPRoute backend weights); a request with the header
    X-Sophia-Track or the cookie sophia-track set to `canary` or `stable` is pinned to that track.
    Promote: pin the service's `image` to the canary's (or drop the pin) and remove `canary`;
    roll back: remove `canary` (or set weight 0)."""

    weight: int = Field(ge=0, le=100)
    # A prebuilt image, with its version; unset: the service built from its sources (the stable
    # track then usually runs a pinned `image` of the previous release).
    image: str | None = None
    version: str | None = None
    min_replicas: int = Field(1, ge=1, le=100)
    max_replicas: int | None = Field(None, ge=1, le=100)  # unset: the stable track's

    @field_validator("version")
    @classmethod
    def _version(cls, v: str | None) -> str | None:
        return _semver(v)

    @model_validator(mode="after")
    def _image_has_version(self) -> Canary:
        if self.image and not self.version:
            raise ValueError(
                "canary.version: a canary running a given image names its version; set e.g. version: 1.5.0"
            )
        if self.max_replicas is not None and self.min_replicas > self.max_replicas:
            raise ValueError(
                f"canary.min_replicas: {self.min_replicas} is above max_replicas {self.max_replicas}; "
                "set min_replicas <= max_replicas"
            )
        return self


class ServiceOverride(_Strict):
    """Per-stack changes to a discovered service's manifest."""

    enabled: bool = True
    min_replicas: int | None = Field(None, ge=1, le=100)
    max_replicas: int | None = Field(None, ge=1, le=100)
    cpu_target: int | None = Field(None, ge=10, le=95)
    image: str | None = None
    # The version `image` runs (unset: the package's version, which is right only for its build).
    version: str | None = None
    canary: Canary | None = None
    # Requests in place of the manifest's (both cpu and memory); the limits stay the manifest's.
    # The local stack's node has 2 cores: its pods, and a rollout's surge, must fit there.
    requests: ResourceAmounts | None = None


class Flag(_Strict):
    """A feature flag as the stack sets it (sophia_chassis.flags evaluates it per request): on for
    the listed tenants and users, on for `percentage` % of tenants (a stable hash of flag and
    tenant), otherwise `default`. Changing it rewrites a ConfigMap the pods read; nothing rolls."""

    default: bool = False
    percentage: float = Field(0, ge=0, le=100)
    tenants: tuple[str, ...] = ()
    users: tuple[str, ...] = ()
    description: str = ""

    @field_validator("tenants", "users")
    @classmethod
    def _names(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for name in v:
            if not name or len(name) > 200:
                raise ValueError(f"{name!r} is not a tenant or user name (1-200 characters)")
        return v

    def rule(self) -> dict[str, Any]:
        """What the services read (the ConfigMap's flags.json)."""
        return self.model_dump(exclude={"description"}) | {"tenants": list(self.tenants), "users": list(self.users)}


class Kubernetes(_Strict):
    # Which cluster to talk to; unset means the ambient kubeconfig.
    kubeconfig: str | None = None
    context: str | None = None
    # The K3s/Kubernetes minor version the rendered objects are validated against.
    version: str = "1.34.0"

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        if not re.match(r"^1\.(2[6-9]|3[0-9])\.[0-9]+$", v):
            raise ValueError(f"{v!r} is not a supported Kubernetes version; use 1.26.0 .. 1.39.x")
        return v


class Auth(_Strict):
    """Who may call the services (libs/sophia_chassis/auth.py). API keys come from ESC
    (`API_KEYS`); the local stack generates one. Services prove themselves to each other with
    projected ServiceAccount tokens, verified against the cluster issuer's JWKS."""

    # The cluster's ServiceAccount token issuer (kube-apiserver --service-account-issuer; K3s' default).
    service_account_issuer: str = "https://kubernetes.default.svc.cluster.local"
    service_account_jwks_url: str = "https://kubernetes.default.svc/openid/v1/jwks"
    # Where the API server answers, for the services' egress policy (the JWKS is fetched from it).
    api_server_cidrs: tuple[str, ...] = ("10.0.0.0/8", "172.16.0.0/12", "192.168.0.0/16")
    api_server_ports: tuple[int, ...] = (443, 6443)
    service_token_ttl_seconds: int = Field(3600, ge=600, le=86400)  # the kubelet refreshes at 80%
    # People and agents with tokens from an OIDC provider (optional; API keys work without it).
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None
    oidc_tenant_claim: str = "tenant"
    # The local stack's generated key: requests per minute per service replica (unset: the
    # services' default, sophia_chassis.auth). Pulumi.local.yaml raises it so `make bench-platform`
    # finds where the node saturates rather than where one key is throttled.
    local_key_rate_per_minute: int | None = Field(None, ge=1, le=1_000_000)

    @field_validator("service_account_issuer", "service_account_jwks_url", "oidc_issuer", "oidc_jwks_url")
    @classmethod
    def _https(cls, v: str | None) -> str | None:
        if v is not None and not re.match(r"^https://[A-Za-z0-9.-]+(:[0-9]+)?(/[^\s]*)?$", v):
            raise ValueError(f"{v!r} is not an https URL; use e.g. 'https://issuer.example.com'")
        return v

    @field_validator("api_server_cidrs")
    @classmethod
    def _cidrs(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for cidr in v:
            try:
                ipaddress.ip_network(cidr)
            except ValueError:
                raise ValueError(f"{cidr!r} is not a CIDR; use e.g. '10.0.0.1/32'") from None
        return v

    @model_validator(mode="after")
    def _oidc_pair(self) -> Auth:
        if (self.oidc_issuer is None) != (self.oidc_jwks_url is None):
            raise ValueError(
                f"{NAMESPACE}:auth: set both oidc_issuer and oidc_jwks_url (the issuer's keys), or neither"
            )
        return self


# Where alerts go; each receiver's URL or key is a secret in the stack's ESC environment.
ALERT_SECRETS = {"pagerduty": "PAGERDUTY_ROUTING_KEY", "slack": "SLACK_WEBHOOK_URL", "webhook": "ALERT_WEBHOOK_URL"}


class Alerting(_Strict):
    """Alertmanager's receivers: `page` alerts wake someone, `ticket` alerts wait for working hours."""

    page: Literal["pagerduty", "slack", "webhook"] | None = None
    ticket: Literal["slack", "webhook"] | None = None
    slack_channel: str = "#sophia-alerts"


_BEHAVIOR, _SHUTDOWN = ScalingBehavior(), Shutdown()


class Autoscaling(_Strict):
    """Every service's HPA `behavior` (components.service.ScalingBehavior, which documents each
    number): how fast it scales out, and how long load must stay low before it scales back in."""

    scale_up_percent: int = Field(_BEHAVIOR.scale_up_percent, ge=1, le=1000)
    scale_up_pods: int = Field(_BEHAVIOR.scale_up_pods, ge=1, le=100)
    scale_up_period_seconds: int = Field(_BEHAVIOR.scale_up_period_seconds, ge=1, le=1800)
    scale_down_stabilization_seconds: int = Field(_BEHAVIOR.scale_down_stabilization_seconds, ge=0, le=3600)
    scale_down_percent: int = Field(_BEHAVIOR.scale_down_percent, ge=1, le=100)
    scale_down_period_seconds: int = Field(_BEHAVIOR.scale_down_period_seconds, ge=1, le=1800)

    def behavior(self) -> ScalingBehavior:
        return ScalingBehavior(**self.model_dump())


class ShutdownConfig(_Strict):
    """How a service's pod stops (components.service.Shutdown): `pre_stop_seconds` serving while
    its endpoint leaves the load balancers, then up to `drain_seconds` for in-flight requests."""

    pre_stop_seconds: int = Field(_SHUTDOWN.pre_stop_seconds, ge=0, le=120)
    drain_seconds: int = Field(_SHUTDOWN.drain_seconds, ge=1, le=600)

    def shutdown(self) -> Shutdown:
        return Shutdown(**self.model_dump())


class TracingWorkload(_Strict):
    # Requests in place of components/tracing.py's (both cpu and memory); the limits stay its own.
    # The local stack's node has 2 cores.
    requests: ResourceAmounts | None = None


class TracingCollector(TracingWorkload):
    max_replicas: int = Field(10, ge=1, le=100)  # its HPA's maximum


class Tracing(_Strict):
    """Distributed tracing (components/tracing.py, sophia_chassis.tracing): the collector and
    Jaeger deploy, and every service exports its spans to the collector."""

    enabled: bool = True
    # The share of traces started in this stack that are kept (a hop follows its caller's decision).
    sample_ratio: float = Field(1.0, ge=0, le=1)
    retention_hours: int = Field(168, ge=1, le=24 * 90)
    storage: str = "20Gi"
    collector: TracingCollector = TracingCollector()
    jaeger: TracingWorkload = TracingWorkload()
    # Whether the gateway passes a caller's W3C trace context (traceparent, tracestate, baggage) on
    # to the services. Off: the gateway removes it, so nobody outside can force a trace to be kept
    # or choose its id; each request starts its own, sampled at sample_ratio. On only behind a
    # front end of your own that starts the traces.
    trust_caller_context: bool = False


# S3-compatible object storage settings (backups, Loki's chunks).
S3Endpoint = Annotated[
    str,
    matching(
        re.compile(r"^https?://[A-Za-z0-9.-]+(:[0-9]+)?/?$"),
        "is not an endpoint URL; use e.g. 'https://s3.us-east-2.amazonaws.com'",
    ),
]
S3Bucket = Annotated[
    str,
    matching(
        re.compile(r"^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$"),
        "is not an S3 bucket name; use 3-63 lowercase letters, digits, '.', '-'",
    ),
]


class Backup(_Strict):
    """Scheduled Qdrant snapshots and Redis RDB copies to S3-compatible storage (docs/secrets.md).
    Bucket, prefix and schedule come from ESC (sophia/base); the writer's keys are the secrets
    BACKUP_ACCESS_KEY_ID / BACKUP_SECRET_ACCESS_KEY."""

    enabled: bool = False
    # Unset: AWS S3 in `region`; otherwise any S3-compatible endpoint (MinIO, R2, ...).
    endpoint: S3Endpoint | None = None
    bucket: S3Bucket | None = None
    prefix: str = ""
    region: str = "us-east-1"
    schedule: str = "17 3 * * *"
    retention_days: int = Field(14, ge=1, le=3650)

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, v: str) -> str:
        if v and (v.startswith("/") or not v.endswith("/") or not re.match(r"^[A-Za-z0-9._/-]+$", v)):
            raise ValueError(f"{v!r} is not a key prefix; use e.g. 'prod/' (no leading '/', a trailing '/')")
        return v

    @field_validator("schedule")
    @classmethod
    def _schedule(cls, v: str) -> str:
        if len(v.split()) != 5 or not re.match(r"^[0-9*/,\- ]+$", v):
            raise ValueError(f"{v!r} is not a five-field cron schedule; use e.g. '17 3 * * *'")
        return v

    @model_validator(mode="after")
    def _where(self) -> Backup:
        if self.enabled and not self.bucket:
            raise ValueError(f"{NAMESPACE}:backup.bucket: backups are enabled but no bucket is set")
        return self


class Logs(_Strict):
    """Loki: how long logs are kept, how many replicas serve them and where their chunks live.
    `s3` (prod, from ESC like the backups: bucket in sophia/prod, the writer's keys the secrets
    LOKI_ACCESS_KEY_ID / LOKI_SECRET_ACCESS_KEY) survives a node and lets Loki run replicated;
    `filesystem` is one replica on a volume. Unset numbers take the environment's default."""

    storage: Literal["filesystem", "s3"] = "filesystem"
    endpoint: S3Endpoint | None = None  # unset: AWS S3 in `region`
    bucket: S3Bucket | None = None
    region: str = "us-east-1"
    retention_days: int | None = Field(None, ge=1, le=3650)
    # Audit events (label stream="audit") outlive ordinary logs.
    audit_retention_days: int = Field(400, ge=1, le=3650)
    replicas: int | None = Field(None, ge=1, le=7)
    volume_size: str = "50Gi"

    @model_validator(mode="after")
    def _where(self) -> Logs:
        if self.storage == "s3" and not self.bucket:
            raise ValueError(
                f"{NAMESPACE}:logs.bucket: logs go to S3 but no bucket is set; set it in the ESC environment"
            )
        if self.storage == "filesystem" and (self.replicas or 1) > 1:
            raise ValueError(
                f"{NAMESPACE}:logs.replicas: {self.replicas} Loki replicas cannot share a filesystem (the chart "
                "refuses it); set logs.storage=s3 with a bucket, or replicas=1"
            )
        if self.audit_retention_days < (self.retention_days or 1):
            raise ValueError(
                f"{NAMESPACE}:logs.audit_retention_days: audit events must be kept at least as long as other logs "
                f"(given: {self.audit_retention_days} < retention_days {self.retention_days})"
            )
        return self

    def for_environment(self, environment: str) -> Logs:
        prod = environment == "prod"
        replicated = prod and self.storage == "s3"
        return self.model_copy(
            update={
                "retention_days": (30 if prod else 7) if self.retention_days is None else self.retention_days,
                # Three: a write reaches a quorum of two while one replica is down.
                "replicas": (3 if replicated else 1) if self.replicas is None else self.replicas,
            }
        )


class Namespaces(_Strict):
    services: str = "sophia"
    data: str = "sophia-data"
    observability: str = "sophia-observability"
    ingress: str = "sophia-ingress"

    @model_validator(mode="after")
    def _valid(self) -> Namespaces:
        names = self.model_dump()
        for concern, ns in names.items():
            if not DNS_LABEL.match(ns) or len(ns) > 63:
                raise ValueError(
                    f"{NAMESPACE}:namespaces.{concern}: {ns!r} is not a namespace name; "
                    "use lowercase letters, digits and '-'"
                )
        if len(set(names.values())) != len(names):
            raise ValueError(f"{NAMESPACE}:namespaces: each concern needs its own namespace (given: {names})")
        return self


class StackConfig(_Strict):
    environment: Literal["local", "dev", "prod"]
    domain: str
    namespaces: Namespaces = Namespaces()
    tls: Tls = Tls()
    # Where images are pushed and pulled; unset (local) means no build, image refs come from config.
    registry: str | None = None
    image_tag: str = "latest"
    image_platforms: tuple[str, ...] = ("linux/amd64",)
    images: dict[str, str] = {}
    # Local stack only: build each service's image from its Dockerfile with buildah, offline, and
    # push it to this registry on the machine (toolchain/cluster.sh runs it); deployed by digest.
    local_registry: str | None = None
    # Local stack only: stand-ins for the internet's APIs (fake OpenAI-compatible chat, GitHub and
    # HubSpot, components/upstreams.py) for the services that call out; needs local_registry.
    local_upstreams: bool = False
    gpu_pools: tuple[GpuPool, ...] = ()
    services: dict[str, ServiceOverride] = {}
    # Feature flags by key (each declared in the `flags` of the manifests of the services that read it).
    flags: dict[str, Flag] = {}
    kubernetes: Kubernetes = Kubernetes()
    auth: Auth = Auth()
    alerting: Alerting = Alerting()
    tracing: Tracing = Tracing()
    autoscaling: Autoscaling = Autoscaling()
    shutdown: ShutdownConfig = ShutdownConfig()
    data: Data = Data()
    backup: Backup = Backup()
    logs: Logs = Logs()
    model_server: ModelServer = ModelServer()
    # Upstream Helm charts can't be fetched on an offline machine; the local stack turns them off.
    install_charts: bool = True
    # Apply the Gateway API and Prometheus-operator CRDs from the toolchain (local: no charts bring them),
    # so routes, ServiceMonitor and PrometheusRule still deploy and are schema-checked by the API server.
    local_crds: bool = False
    # Local stack only, without charts: the Prometheus operator, Prometheus, Alertmanager and
    # kube-state-metrics from the toolchain's images (components/monitoring.py) read the ServiceMonitors
    # and rules in kube-prometheus-stack's place; needs local_crds.
    local_monitoring: bool = False
    # Bump to rotate every generated internal secret and roll the pods that mount them.
    secret_rotation: int = Field(0, ge=0)

    @field_validator("domain")
    @classmethod
    def _domain(cls, v: str) -> str:
        if not HOSTNAME.match(v):
            raise ValueError(f"{v!r} is not a DNS hostname; use e.g. 'sophia.example.com'")
        return v

    @field_validator("flags")
    @classmethod
    def _flag_keys(cls, v: dict[str, Flag]) -> dict[str, Flag]:
        for key in v:
            if not FLAG_KEY.match(key):
                raise ValueError(
                    f"flag key {key!r} is not valid; use lowercase letters, digits and '-' like 'new-search'"
                )
        return v

    def flags_document(self) -> str:
        """The flags as the services read them (sophia_chassis.flags.FileFlagProvider)."""
        return json.dumps({"flags": {k: f.rule() for k, f in sorted(self.flags.items())}}, indent=2, sort_keys=True)

    @field_validator("registry")
    @classmethod
    def _registry(cls, v: str | None) -> str | None:
        if v is not None and not REGISTRY.match(v):
            raise ValueError(f"{v!r} is not a registry path; use e.g. 'registry.example.com/sophia'")
        return v

    @field_validator("local_registry")
    @classmethod
    def _local_registry(cls, v: str | None) -> str | None:
        if v is not None and not LOCAL_REGISTRY.match(v):
            raise ValueError(f"{v!r} is not a registry on this machine; use 127.0.0.1:<port>")
        return v

    @field_validator("image_tag")
    @classmethod
    def _tag(cls, v: str) -> str:
        if not IMAGE_TAG.match(v):
            raise ValueError(f"{v!r} is not a valid image tag; use letters, digits, '_', '.', '-' (max 128)")
        return v

    @field_validator("image_platforms")
    @classmethod
    def _platforms(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        if not v:
            raise ValueError("at least one platform is needed, e.g. ['linux/amd64']")
        for p in v:
            if not PLATFORM.match(p):
                raise ValueError(f"{p!r} is not a supported platform; use linux/amd64 or linux/arm64")
        return v

    @model_validator(mode="after")
    def _cross_field_rules(self) -> StackConfig:
        env = self.environment
        if self.local_upstreams and (env != "local" or not self.local_registry):
            raise ValueError(
                f"{NAMESPACE}:local_upstreams: only the local stack, building into its local_registry, runs "
                f"stand-ins for the internet's APIs (given: environment {env!r}, "
                f"local_registry {self.local_registry!r})"
            )
        if self.local_monitoring and (env != "local" or self.install_charts or not self.local_crds):
            raise ValueError(
                f"{NAMESPACE}:local_monitoring: only the local stack without charts runs the toolchain's Prometheus "
                f"(given: environment {env!r}, install_charts {self.install_charts}, local_crds {self.local_crds}); "
                "it needs install_charts=false and local_crds=true (dev and prod run kube-prometheus-stack)"
            )
        if env != "local" and self.local_registry:
            raise ValueError(
                f"{NAMESPACE}:local_registry: only the local stack builds into a registry on the machine "
                f"(given: {self.local_registry!r}); the {env} stack uses {NAMESPACE}:registry"
            )
        if env == "local" and self.registry:
            raise ValueError(
                f"{NAMESPACE}:registry: the local stack builds no images (given: {self.registry!r}); "
                f"remove it and set {NAMESPACE}:images.<service> instead"
            )
        if env != "local" and not self.registry:
            raise ValueError(
                f"{NAMESPACE}:registry: the {env} stack builds and pushes images, so it needs a "
                "registry (given: nothing); set e.g. 'registry.example.com/sophia'"
            )
        if env == "prod" and self.alerting.page is None:
            raise ValueError(
                f"{NAMESPACE}:alerting.page: prod pages someone when a service is down (given: nothing); set "
                f"pagerduty, slack or webhook and put its {', '.join(ALERT_SECRETS.values())} in the ESC environment"
            )
        if env == "prod" and not self.tls.enabled:
            raise ValueError(
                f"{NAMESPACE}:tls.enabled: prod serves only over TLS (given: false); set "
                "tls.enabled=true with tls.issuer or tls.secret_name"
            )
        pool_names = [p.name for p in self.gpu_pools]
        if len(set(pool_names)) != len(pool_names):
            raise ValueError(f"{NAMESPACE}:gpu_pools: pool names must be unique (given: {pool_names})")
        model_pool = self.model_server_pool
        if (
            self.model_server.pool
            and self.model_server.enabled
            and (model_pool is None or model_pool.name != self.model_server.pool)
        ):
            raise ValueError(
                f"{NAMESPACE}:model_server.pool: no GPU pool {self.model_server.pool!r} with nodes "
                f"(pools: {[p.name for p in self.gpu_pools]}); name one of them or leave it unset"
            )
        if model_pool is not None and self.model_server.image is None:
            raise ValueError(
                f"{NAMESPACE}:model_server.image: GPU pool {model_pool.name} runs vLLM's OpenAI-compatible server, "
                "whose image must be pinned by digest (given: nothing); set e.g. vllm/vllm-openai@sha256:<digest> "
                f"of an image with linux/{model_pool.arch} (`docker buildx imagetools inspect "
                "vllm/vllm-openai:<version>`), or model_server.enabled=false"
            )
        # The services' replica rules need the manifests: infra/plan.py checks them after the merge.
        if env == "prod":
            data = self.data.for_environment(env)
            if data.qdrant_replicas < 3:
                raise ValueError(
                    f"{NAMESPACE}:data.qdrant_replicas: prod runs Qdrant distributed with at least 3 "
                    f"replicas (given: {data.qdrant_replicas})"
                )
            if data.pgbouncer_replicas < 2:
                raise ValueError(
                    f"{NAMESPACE}:data.pgbouncer_replicas: prod needs at least 2 replicas "
                    f"(given: {data.pgbouncer_replicas})"
                )
        return self

    @property
    def logs_settings(self) -> Logs:
        return self.logs.for_environment(self.environment)

    @property
    def data_settings(self) -> Data:
        return self.data.for_environment(self.environment)

    @property
    def is_prod(self) -> bool:
        return self.environment == "prod"

    @property
    def model_server_pool(self) -> GpuPool | None:
        """The pool the model server runs on (None: it does not run)."""
        if not self.model_server.enabled:
            return None
        with_nodes = [p for p in self.gpu_pools if p.node_count > 0]
        wanted = self.model_server.pool
        return next((p for p in with_nodes if wanted in (None, p.name)), None)

    @property
    def gpu_capacity(self) -> int:
        return sum(p.node_count * p.gpus_per_node for p in self.gpu_pools)


def _decode(value: Any) -> Any:
    """Pulumi hands config over as strings; structured values arrive JSON-encoded."""
    if isinstance(value, str):
        try:
            return json.loads(value)
        except ValueError:
            return value
    return value


def _format_error(err: dict[str, Any]) -> str:
    loc = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    if err["type"] == "extra_forbidden":
        return f"{NAMESPACE}:{loc}: unknown key (given: {err['input']!r}); check the spelling"
    if err["type"] == "missing":
        return f"{NAMESPACE}:{loc}: required but not set"
    if msg.startswith(f"{NAMESPACE}:"):  # cross-field rules name their own keys
        return msg
    return f"{NAMESPACE}:{loc}: {msg} (given: {err['input']!r})"


def parse_stack_config(stack: str, raw: dict[str, Any]) -> StackConfig:
    """Validate raw `sophia:*` values (without the namespace prefix) into a StackConfig."""
    values = {k: _decode(v) for k, v in raw.items() if k != SECRETS_KEY}
    try:
        return StackConfig.model_validate(values)
    except ValidationError as exc:
        raise ConfigError(stack, [_format_error(e) for e in exc.errors()]) from None


def raw_stack_config() -> dict[str, Any]:
    """All `sophia:*` config values of the running stack, keyed without the namespace."""
    import pulumi.runtime.config as runtime_config

    merged = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    prefix = f"{NAMESPACE}:"
    return {k[len(prefix) :]: v for k, v in merged.items() if k.startswith(prefix)}


def secret_keys_available(stack: str, raw: dict[str, Any]) -> set[str]:
    """The names of the secrets the stack provides (from ESC); values are never read here."""
    secrets = _decode(raw.get(SECRETS_KEY, {})) or {}
    if not isinstance(secrets, dict):
        raise ConfigError(
            stack, [f"{NAMESPACE}:{SECRETS_KEY}: must be a map of NAME: value (given a {type(secrets).__name__})"]
        )
    bad = sorted(k for k in secrets if not ENV_NAME.match(k))
    if bad:
        raise ConfigError(stack, [f"{NAMESPACE}:{SECRETS_KEY}: keys {bad} are not UPPER_SNAKE_CASE names"])
    return set(secrets)
