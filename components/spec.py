"""The service manifest (`services/<name>/service.yaml`) as a typed model.

It is the service component's input: one manifest describes one workload, and the
defaults here are the seed's numbers (HPA 2-10 at 70 % CPU, health probes).
"""

from __future__ import annotations

import re
from typing import Annotated, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator, model_validator

DNS_LABEL = re.compile(r"^[a-z]([-a-z0-9]*[a-z0-9])?$")
ENV_NAME = re.compile(r"^[A-Z_][A-Z0-9_]*$")
CPU_QUANTITY = re.compile(r"^([0-9]+m|[0-9]+(\.[0-9]+)?)$")
MEMORY_QUANTITY = re.compile(r"^[0-9]+(Ki|Mi|Gi|Ti|k|M|G|T)?$")
HTTP_PATH = re.compile(r"^/[A-Za-z0-9._~/-]*$")
DURATION = re.compile(r"^[0-9]+(s|m|h|d)$")
ALERT_NAME = re.compile(r"^[A-Z][A-Za-z0-9]*$")
# Semantic versioning 2.0.0 (semver.org's expression) without build metadata: a '+' can be
# neither an image tag nor a label value.
SEMVER = re.compile(
    r"^(0|[1-9]\d*)\.(0|[1-9]\d*)\.(0|[1-9]\d*)"
    r"(?:-((?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*)(?:\.(?:0|[1-9]\d*|\d*[a-zA-Z-][0-9a-zA-Z-]*))*))?$"
)
# A feature flag's key (sophia_chassis.flags): what the code asks for and the stack sets.
FLAG_KEY = re.compile(r"^[a-z][a-z0-9-]{0,62}$")

# The data stores the platform provides; a service names the ones it calls so its
# NetworkPolicy egress and connection settings can be derived.
Datastore = Literal["qdrant", "redis", "postgres"]


def matching(pattern: re.Pattern[str], hint: str) -> AfterValidator:
    """A string check: `'<value>' <hint>` when the value does not match."""

    def check(value: str) -> str:
        if not pattern.match(value):
            raise ValueError(f"{value!r} {hint}")
        return value

    return AfterValidator(check)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ResourceAmounts(_Strict):
    cpu: str
    memory: str

    @field_validator("cpu", "memory", mode="before")
    @classmethod
    def _yaml_number(cls, v: object) -> object:
        # YAML reads `cpu: 1` as a number; Kubernetes quantities are strings.
        return str(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else v

    @field_validator("cpu")
    @classmethod
    def _cpu(cls, v: str) -> str:
        if not CPU_QUANTITY.match(v):
            raise ValueError(f"{v!r} is not a CPU quantity; use millicores like '250m' or cores like '1'")
        return v

    @field_validator("memory")
    @classmethod
    def _memory(cls, v: str) -> str:
        if not MEMORY_QUANTITY.match(v):
            raise ValueError(f"{v!r} is not a memory quantity; use e.g. '512Mi' or '2Gi'")
        return v


def cpu_millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


_MEMORY_UNITS = {
    "": 1,
    "k": 10**3,
    "M": 10**6,
    "G": 10**9,
    "T": 10**12,
    "Ki": 2**10,
    "Mi": 2**20,
    "Gi": 2**30,
    "Ti": 2**40,
}


def memory_bytes(quantity: str) -> int:
    number = re.match(r"^[0-9]+", quantity).group(0)  # type: ignore[union-attr]
    return int(number) * _MEMORY_UNITS[quantity[len(number) :]]


class Resources(_Strict):
    requests: ResourceAmounts = ResourceAmounts(cpu="100m", memory="128Mi")
    limits: ResourceAmounts = ResourceAmounts(cpu="500m", memory="512Mi")

    @model_validator(mode="after")
    def _requests_within_limits(self) -> Resources:
        if cpu_millicores(self.requests.cpu) > cpu_millicores(self.limits.cpu):
            raise ValueError(
                f"resources.requests.cpu {self.requests.cpu} is above resources.limits.cpu "
                f"{self.limits.cpu}; a request must not exceed its limit"
            )
        if memory_bytes(self.requests.memory) > memory_bytes(self.limits.memory):
            raise ValueError(
                f"resources.requests.memory {self.requests.memory} is above resources.limits.memory "
                f"{self.limits.memory}; a request must not exceed its limit"
            )
        return self


class Scaling(_Strict):
    """HorizontalPodAutoscaler bounds; the defaults are the seed's."""

    min_replicas: int = Field(2, ge=1, le=100)
    max_replicas: int = Field(10, ge=1, le=100)
    cpu_target: int = Field(70, ge=10, le=95, description="average CPU utilization, percent of request")

    @model_validator(mode="after")
    def _min_le_max(self) -> Scaling:
        problem = replica_bounds_problem(self.min_replicas, self.max_replicas)
        if problem:
            raise ValueError(problem)
        return self


def replica_bounds_problem(min_replicas: int, max_replicas: int) -> str | None:
    """The HPA bounds rule, one message: for a manifest's numbers, and again once a stack's
    override is merged into them (infra/plan.py)."""
    if min_replicas > max_replicas:
        return (
            f"min_replicas ({min_replicas}) is greater than max_replicas ({max_replicas}); "
            "set min_replicas <= max_replicas"
        )
    return None


class Probes(_Strict):
    liveness: str = "/healthz"
    readiness: str = "/readyz"
    startup: str = "/healthz"

    @field_validator("liveness", "readiness", "startup")
    @classmethod
    def _path(cls, v: str) -> str:
        if not HTTP_PATH.match(v):
            raise ValueError(f"{v!r} is not an HTTP path; it must start with '/'")
        return v


class Calls(_Strict):
    services: tuple[str, ...] = ()
    datastores: tuple[Datastore, ...] = ()
    # Talks to APIs outside the cluster (GitHub, HubSpot, model providers): egress on 443.
    external: bool = False
    # Calls the stack's self-hosted model server (vLLM on the GPU pool) where the stack runs one:
    # LOCAL_MODEL_URL injected, egress to it allowed.
    model_server: bool = False


class Route(_Strict):
    path: str
    # Requests per second per client IP at the ingress; the stack may lower it.
    rate_limit_rps: int = Field(50, ge=1, le=10_000)
    max_body_size_mb: int = Field(8, ge=1, le=1024)

    @field_validator("path")
    @classmethod
    def _path(cls, v: str) -> str:
        if not HTTP_PATH.match(v) or v == "/":
            raise ValueError(f"{v!r} is not a route prefix; use a path like '/context'")
        return v


class Gpu(_Strict):
    count: int = Field(1, ge=1, le=8)
    # Not required: the service runs on CPU where a stack has no GPU pool.
    required: bool = True


class Panel(_Strict):
    """A dashboard panel of the service's own metrics; `{sel}` in a query stands for the
    service's series selector (`{service="<name>"}`), so the panel shows only its pods."""

    title: str = Field(min_length=1)
    queries: tuple[str, ...] = Field(min_length=1)

    @field_validator("queries")
    @classmethod
    def _selects_its_service(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for query in v:
            if "{sel}" not in query:
                raise ValueError(f"query {query!r} has no {{sel}}; select the service's series with metric{{sel}}")
        return v


class Alert(_Strict):
    """A Prometheus alert on the service's own metrics (the platform's common alerts cover the rest)."""

    name: Annotated[str, matching(ALERT_NAME, "is not an alert name; use CamelCase like 'QueueBacklogHigh'")]
    expr: str = Field(min_length=1)
    # How long the condition must hold before it fires.
    for_: Annotated[str, matching(DURATION, "is not a Prometheus duration; use e.g. '5m', '1h'")] = Field(alias="for")
    severity: Literal["page", "ticket"]
    summary: str = Field(min_length=1)


# The request-duration histogram's bucket edges (sophia_chassis.metrics.LATENCY_BUCKETS; a test ties them).
LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)


class ServiceObservability(_Strict):
    """What the service adds to the platform's monitoring: dashboard panels, alerts, its latency SLO."""

    panels: tuple[Panel, ...] = ()
    alerts: tuple[Alert, ...] = ()
    # 99 % of requests within this (the seed's 100 ms by default); a bucket edge of the histogram.
    latency_slo_seconds: float = 0.1

    @field_validator("latency_slo_seconds")
    @classmethod
    def _edge(cls, v: float) -> float:
        if v not in LATENCY_BUCKETS:
            raise ValueError(f"{v} is not a latency bucket edge; use one of {', '.join(map(str, LATENCY_BUCKETS))}")
        return v


class ServiceSpec(_Strict):
    name: str
    # Its semantic version: the package's (services/<name>/pyproject.toml [project].version), read
    # by discovery; the image tag, the pods' app.kubernetes.io/version and the stack's outputs.
    version: Annotated[
        str, matching(SEMVER, "is not a semantic version; use e.g. '1.4.0' or '1.5.0-rc.1' (semver.org, no '+build')")
    ] = "0.0.0"
    description: str = ""
    port: int = Field(8080, ge=1024, le=65535)
    metrics_path: str = "/metrics"
    resources: Resources = Resources()
    scaling: Scaling = Scaling()
    probes: Probes = Probes()
    env: dict[str, str] = {}
    secrets: tuple[str, ...] = ()
    calls: Calls = Calls()
    routes: tuple[Route, ...] = ()
    gpu: Gpu | None = None
    automount_service_account_token: bool = False
    # Where `make dev` serves it on 127.0.0.1 (scripts/dev.sh); unique across services.
    dev_port: int | None = Field(None, ge=1024, le=65535)
    # Extra build arguments of its image (services/Dockerfile), e.g. EXTRAS; SERVICE is implied.
    build_args: dict[str, str] = {}
    observability: ServiceObservability = ServiceObservability()
    # The feature flags its code evaluates, key: what turning it on does. A stack sets them in
    # sophia:flags; a flag no stack sets is off.
    flags: dict[str, str] = {}

    @field_validator("flags")
    @classmethod
    def _flags(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not FLAG_KEY.match(key):
                raise ValueError(
                    f"flag key {key!r} is not valid; use lowercase letters, digits and '-' like 'new-search'"
                )
        return v

    @field_validator("name")
    @classmethod
    def _name(cls, v: str) -> str:
        if not DNS_LABEL.match(v) or len(v) > 40:
            raise ValueError(
                f"{v!r} is not a valid service name; use lowercase letters, digits and '-', "
                "starting with a letter, at most 40 characters"
            )
        return v

    @field_validator("env")
    @classmethod
    def _env(cls, v: dict[str, str]) -> dict[str, str]:
        for key in v:
            if not ENV_NAME.match(key):
                raise ValueError(f"env key {key!r} is not an environment variable name; use UPPER_SNAKE_CASE")
        return v

    @field_validator("secrets")
    @classmethod
    def _secrets(cls, v: tuple[str, ...]) -> tuple[str, ...]:
        for key in v:
            if not ENV_NAME.match(key):
                raise ValueError(f"secret {key!r} is not a valid secret key; use UPPER_SNAKE_CASE")
        if len(set(v)) != len(v):
            raise ValueError(f"secrets {list(v)} lists a key twice")
        return v

    @model_validator(mode="after")
    def _no_self_call(self) -> ServiceSpec:
        if self.name in self.calls.services:
            raise ValueError(f"calls.services lists the service itself ({self.name}); remove it")
        return self
