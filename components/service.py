"""One platform service on Kubernetes: everything a workload needs, hardened by default.

`PlatformService` turns a `ServiceSpec` (the service's manifest) plus where it runs
into: ServiceAccount, Secret (only the keys the manifest asks for), Deployment,
Service, HorizontalPodAutoscaler, PodDisruptionBudget and NetworkPolicy, all parented
to the component.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import pulumi
import pulumi_kubernetes as k8s
from pulumi_kubernetes.apps.v1 import DeploymentSpecArgs, DeploymentStrategyArgs, RollingUpdateDeploymentArgs
from pulumi_kubernetes.autoscaling.v2 import (
    CrossVersionObjectReferenceArgs,
    HorizontalPodAutoscalerBehaviorArgs,
    HorizontalPodAutoscalerSpecArgs,
    HPAScalingPolicyArgs,
    HPAScalingRulesArgs,
    MetricSpecArgs,
    MetricTargetArgs,
    ResourceMetricSourceArgs,
)
from pulumi_kubernetes.core.v1 import (
    ConfigMapProjectionArgs,
    ConfigMapVolumeSourceArgs,
    ContainerArgs,
    ContainerPortArgs,
    EmptyDirVolumeSourceArgs,
    EnvVarArgs,
    EnvVarSourceArgs,
    HTTPGetActionArgs,
    KeyToPathArgs,
    LifecycleArgs,
    LifecycleHandlerArgs,
    ObjectFieldSelectorArgs,
    PersistentVolumeClaimVolumeSourceArgs,
    PodSpecArgs,
    PodTemplateSpecArgs,
    ProbeArgs,
    ProjectedVolumeSourceArgs,
    SecretVolumeSourceArgs,
    ServiceAccountTokenProjectionArgs,
    ServicePortArgs,
    ServiceSpecArgs,
    SleepActionArgs,
    TopologySpreadConstraintArgs,
    VolumeArgs,
    VolumeMountArgs,
    VolumeProjectionArgs,
)
from pulumi_kubernetes.meta.v1 import LabelSelectorArgs, ObjectMetaArgs
from pulumi_kubernetes.networking.v1 import (
    IPBlockArgs,
    NetworkPolicyIngressRuleArgs,
    NetworkPolicyPeerArgs,
    NetworkPolicyPortArgs,
    NetworkPolicySpecArgs,
)

from components.gpu import GPU_NODE_LABEL, GPU_RESOURCE, GPU_TOLERATION, RUNTIME_CLASS
from components.image import ImageSource, image_reference
from components.spec import ServiceSpec
from components.workload import (
    DATA_MOUNT,
    NAME_LABEL,
    SCRAPE_LABEL,
    TRACK_LABEL,
    VERSION_LABEL,
    Peer,
    allow_out,
    container_security,
    disruption_budget,
    dns_egress,
    internet_egress,
    labels_for,
    namespace_peer,
    not_awaited,
    pod_annotations,
    pod_security,
    pods_named,
    resource_requirements,
)

SECRETS_MOUNT = "/var/run/secrets/sophia"
# This service's token towards the API server (to read the cluster's JWKS) and the cluster CA.
CLUSTER_IDENTITY_MOUNT = "/var/run/secrets/sophia-cluster"
# One projected token per callee, each for that callee's audience (sophia_chassis.auth.ServiceCredentials).
SERVICE_TOKENS_MOUNT = "/var/run/secrets/sophia-tokens"
# The stack's feature flags (sophia_chassis.flags): the whole ConfigMap as a directory, never a
# subPath, so the kubelet swaps in a changed file and the pods read it without a restart.
FLAGS_MOUNT = "/etc/sophia/flags"
FLAGS_FILE = "flags.json"
# A rollout adds this share of the replicas before removing any (maxUnavailable 0), rounded up.
ROLLOUT_SURGE_PERCENT = 25
SERVICE_PORT = 80
# A service runs one or two tracks (Deployment, Service, HPA, PDB each): stable, and a canary.
STABLE, CANARY = "stable", "canary"
# Above the chassis' limit on /readyz's checks (sophia_chassis.app.READINESS_TIMEOUT_SECONDS, 2 s): a
# degraded dependency that hangs (Redis restarting) must make /readyz answer "degraded" in time, not
# time the probe out and take the pod out of its Service.
PROBE_TIMEOUT_SECONDS = 3
# How long the startup probe (every 2 s) lets a container start before the kubelet restarts it. A pod
# with a data volume starts by warming up (at most 20 s) and taking its data from the owner (at most
# SHARD_ACQUIRE_SECONDS, 30 s) before it listens (mcp_context.handoff): its budget covers both on top
# of the imports, or a start within those bounds is killed (seen at a load average of 24: killed 2 s
# after it had taken the shard over).
STARTUP_SECONDS, DATA_STARTUP_SECONDS = 60, 120
# What the service's uvicorn reads for its graceful-shutdown timeout (services/Dockerfile's CMD).
DRAIN_ENV = "GRACEFUL_SHUTDOWN_SECONDS"
# Kept above a stopping pod's preStop wait plus drain: time for the lifespan's shutdown hooks.
SHUTDOWN_MARGIN_SECONDS = 5


@dataclass(frozen=True)
class ScalingBehavior:
    """How every HPA moves (autoscaling/v2 `behavior`; per stack: sophia:autoscaling): up at
    once by the larger of `scale_up_percent` % and `scale_up_pods` per `scale_up_period_seconds`;
    down only after the recommendation stayed lower for `scale_down_stabilization_seconds`, then
    by at most `scale_down_percent` % per `scale_down_period_seconds` (no flapping)."""

    scale_up_percent: int = 100
    scale_up_pods: int = 4
    scale_up_period_seconds: int = 15
    scale_down_stabilization_seconds: int = 300
    scale_down_percent: int = 10
    scale_down_period_seconds: int = 60


@dataclass(frozen=True)
class Shutdown:
    """How a pod leaves without failing a request (per stack: sophia:shutdown). The preStop wait
    keeps it serving while its endpoint is taken out of the load balancers (EndpointSlice ->
    the gateway, kube-proxy); then SIGTERM: uvicorn stops accepting, closes idle connections and
    lets in-flight requests finish for up to `drain_seconds`. The kubelet's grace period covers
    both, plus a margin for the shutdown hooks."""

    pre_stop_seconds: int = 5
    drain_seconds: int = 20

    @property
    def grace_period_seconds(self) -> int:
        return self.pre_stop_seconds + self.drain_seconds + SHUTDOWN_MARGIN_SECONDS


@dataclass(frozen=True)
class CanaryArgs:
    """The canary track: another image (or version) beside the stable one."""

    image: ImageSource
    version: str
    min_replicas: int = 1
    max_replicas: int = 2


@dataclass(frozen=True)
class _Track:
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    hpa: k8s.autoscaling.v2.HorizontalPodAutoscaler
    pdb: k8s.policy.v1.PodDisruptionBudget
    image: pulumi.Input[str]


@dataclass(frozen=True)
class GpuPlacement:
    node_selector: Mapping[str, str] = field(default_factory=lambda: {GPU_NODE_LABEL: "true"})
    # K3s runs GPU containers through the nvidia containerd runtime.
    runtime_class_name: str | None = RUNTIME_CLASS


@dataclass(frozen=True)
class ServiceIdentity:
    """How a service checks who calls it and proves itself to its callees (sophia_chassis.auth):
    callers' projected ServiceAccount tokens are verified against the cluster issuer's JWKS;
    people and agents bring API keys (the platform secret API_KEYS) or OIDC tokens."""

    issuer: str
    jwks_url: str
    # Where the API server answers (the JWKS is fetched from it), for the egress policy.
    api_server_cidrs: Sequence[str]
    api_server_ports: Sequence[int]
    token_ttl_seconds: int = 3600
    oidc_issuer: str | None = None
    oidc_jwks_url: str | None = None
    oidc_tenant_claim: str = "tenant"


@dataclass(frozen=True)
class PlatformServiceArgs:
    spec: ServiceSpec
    namespace: str
    image: ImageSource
    # The manifest's secrets, by key (from ESC).
    secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # Secrets the platform generates for this service (data store credentials, tokens).
    platform_secrets: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    # Keys the service re-reads from its files (rotated data store credentials): not in the checksum.
    live_secrets: frozenset[str] = frozenset()
    # What the service's Secret is written after (Connection.secrets_after).
    secrets_after: Sequence[pulumi.Resource] = ()
    # Platform-provided settings (peers' URLs, ...), merged over the manifest's env.
    env: Mapping[str, pulumi.Input[str]] = field(default_factory=dict)
    callers: Sequence[str] = ()
    # The services this one calls, by name, with the container port they listen on.
    callees: Mapping[str, int] = field(default_factory=dict)
    datastores: Sequence[Peer] = ()
    ingress_namespace: str | None = None
    metrics_namespace: str | None = None
    gpu: GpuPlacement | None = None
    # Unset: the service runs without authentication settings (its own default refuses every call).
    identity: ServiceIdentity | None = None
    spread_across_zones: bool = False
    image_pull_policy: str = "Always"
    # A PersistentVolumeClaim mounted at DATA_MOUNT (the local stack's embedded Qdrant Edge). One
    # process owns an embedded store's directory: a rollout's new pod asks the old one, at the pod IP
    # it is given (POD_IP), to hand it over; a sibling of the same revision (POD_TEMPLATE_HASH)
    # follows the owner (services/mcp-context/mcp_context/handoff.py).
    data_claim: pulumi.Input[str] | None = None
    # The ConfigMap holding the stack's feature flags (FLAGS_FILE), mounted at FLAGS_MOUNT. Its
    # content stays out of the pod template (and the checksum): a flag change rolls nothing.
    flags_config_map: pulumi.Input[str] | None = None
    # The stable track's version (the package's, or the one a pinned image names), and a canary.
    version: str = "0.0.0"
    canary: CanaryArgs | None = None
    scaling_behavior: ScalingBehavior = ScalingBehavior()
    shutdown: Shutdown = Shutdown()


def config_checksum(env: Mapping[str, str], secrets: Mapping[str, str]) -> str:
    """Changes whenever a setting or a secret's value changes, so the pods roll."""
    blob = json.dumps({"env": dict(env), "secrets": dict(secrets)}, sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()


def peak_pods(max_replicas: int) -> int:
    """The most pods a service can have at once: its HPA at the maximum, mid-rollout."""
    return max_replicas + -(-max_replicas * ROLLOUT_SURGE_PERCENT // 100)


class PlatformService(pulumi.ComponentResource):
    deployment: k8s.apps.v1.Deployment
    service: k8s.core.v1.Service
    url: pulumi.Output[str]

    def __init__(self, name: str, args: PlatformServiceArgs, opts: pulumi.ResourceOptions | None = None):
        super().__init__("sophia:platform:Service", name, None, opts)
        spec, ns = args.spec, args.namespace
        wanted = set(spec.secrets) - set(args.platform_secrets)
        missing, extra = sorted(wanted - set(args.secrets)), sorted(set(args.secrets) - wanted)
        if missing or extra:
            raise ValueError(
                f"service {spec.name}: secrets must be exactly the manifest's "
                f"(missing: {missing}, not asked for: {extra})"
            )
        all_secrets = {**args.secrets, **args.platform_secrets}
        child = pulumi.ResourceOptions(parent=self)
        labels = labels_for(spec.name)
        selector = {NAME_LABEL: spec.name}

        def meta(resource_name: str = spec.name, extra_labels: Mapping[str, str] | None = None) -> ObjectMetaArgs:
            return ObjectMetaArgs(name=resource_name, namespace=ns, labels={**labels, **(extra_labels or {})})

        self.service_account = k8s.core.v1.ServiceAccount(
            f"{name}-sa",
            metadata=meta(),
            automount_service_account_token=spec.automount_service_account_token,
            opts=child,
        )

        volumes = [VolumeArgs(name="tmp", empty_dir=EmptyDirVolumeSourceArgs(size_limit="256Mi"))]
        mounts = [VolumeMountArgs(name="tmp", mount_path="/tmp")]
        self.secret: k8s.core.v1.Secret | None = None
        if all_secrets:
            self.secret = k8s.core.v1.Secret(
                f"{name}-secrets",
                metadata=meta(f"{spec.name}-secrets"),
                type="Opaque",
                string_data={k: pulumi.Output.secret(v) for k, v in sorted(all_secrets.items())},
                opts=pulumi.ResourceOptions(parent=self, depends_on=list(args.secrets_after)),
            )
            # Files, not env vars: env leaks into crash dumps and child processes.
            volumes.append(
                VolumeArgs(
                    name="secrets",
                    secret=SecretVolumeSourceArgs(secret_name=self.secret.metadata.name, default_mode=0o440),
                )
            )
            mounts.append(VolumeMountArgs(name="secrets", mount_path=SECRETS_MOUNT, read_only=True))
        if args.data_claim:
            volumes.append(
                VolumeArgs(
                    name="data",
                    persistent_volume_claim=PersistentVolumeClaimVolumeSourceArgs(claim_name=args.data_claim),
                )
            )
            mounts.append(VolumeMountArgs(name="data", mount_path=DATA_MOUNT))

        flags_env: dict[str, str] = {}
        if args.flags_config_map is not None:
            volumes.append(
                VolumeArgs(
                    name="flags",
                    config_map=ConfigMapVolumeSourceArgs(name=args.flags_config_map, default_mode=0o444),
                )
            )
            mounts.append(VolumeMountArgs(name="flags", mount_path=FLAGS_MOUNT, read_only=True))
            flags_env = {"FLAGS_FILE": f"{FLAGS_MOUNT}/{FLAGS_FILE}"}
        if args.identity is not None:
            volumes += _identity_volumes(args.identity, args.callees)
            mounts.append(VolumeMountArgs(name="cluster-identity", mount_path=CLUSTER_IDENTITY_MOUNT, read_only=True))
            if args.callees:
                mounts.append(VolumeMountArgs(name="service-tokens", mount_path=SERVICE_TOKENS_MOUNT, read_only=True))
        env_values = {
            **spec.env,
            **args.env,
            **flags_env,
            **_identity_env(args.identity, ns, args.callers, bool(args.callees)),
        }
        rolling = {k: v for k, v in all_secrets.items() if k not in args.live_secrets}
        checksum = pulumi.Output.all(
            env=pulumi.Output.all(**env_values) if env_values else {},
            secrets=pulumi.Output.all(**rolling) if rolling else {},
        ).apply(lambda v: config_checksum(v["env"], v["secrets"]))

        shutdown = args.shutdown
        resources = resource_requirements(spec.resources)
        tolerations = node_selector = runtime_class = None
        if args.gpu is not None and spec.gpu is not None:
            resources = resource_requirements(spec.resources, {GPU_RESOURCE: str(spec.gpu.count)})
            tolerations = [GPU_TOLERATION]
            node_selector = dict(args.gpu.node_selector)
            runtime_class = args.gpu.runtime_class_name

        def http_probe(path: str, period: int, failures: int) -> ProbeArgs:
            return ProbeArgs(
                http_get=HTTPGetActionArgs(path=path, port="http"),
                period_seconds=period,
                timeout_seconds=PROBE_TIMEOUT_SECONDS,
                failure_threshold=failures,
            )

        def make_track(
            track: str, image: pulumi.Input[str], version: str, min_replicas: int, max_replicas: int
        ) -> _Track:
            """One track's Deployment, Service, HPA and PDB: the stable one keeps the service's names."""
            rname, kname = (name, spec.name) if track == STABLE else (f"{name}-{track}", f"{spec.name}-{track}")
            track_labels = {TRACK_LABEL: track, VERSION_LABEL: version}
            track_selector = {**selector, TRACK_LABEL: track}
            container = ContainerArgs(
                name=spec.name,
                image=image,
                image_pull_policy=args.image_pull_policy,
                ports=[ContainerPortArgs(name="http", container_port=spec.port, protocol="TCP")],
                env=[EnvVarArgs(name=k, value=v) for k, v in sorted(env_values.items())]
                + [
                    EnvVarArgs(name="SOPHIA_SECRETS_DIR", value=SECRETS_MOUNT),
                    EnvVarArgs(name="PORT", value=str(spec.port)),
                    # What the chassis reports (response headers, service_info): which build answered.
                    EnvVarArgs(name="SERVICE_VERSION", value=version),
                    EnvVarArgs(name="SERVICE_TRACK", value=track),
                    EnvVarArgs(name=DRAIN_ENV, value=str(shutdown.drain_seconds)),
                ]
                + (
                    [
                        EnvVarArgs(
                            name="POD_IP",
                            value_from=EnvVarSourceArgs(field_ref=ObjectFieldSelectorArgs(field_path="status.podIP")),
                        ),
                        # The ReplicaSet's label: a sibling of the owner's revision follows it, a pod of
                        # another revision (a rollout's) asks for the data.
                        EnvVarArgs(
                            name="POD_TEMPLATE_HASH",
                            value_from=EnvVarSourceArgs(
                                field_ref=ObjectFieldSelectorArgs(field_path="metadata.labels['pod-template-hash']")
                            ),
                        ),
                    ]
                    if args.data_claim
                    else []
                ),
                lifecycle=LifecycleArgs(
                    pre_stop=LifecycleHandlerArgs(sleep=SleepActionArgs(seconds=shutdown.pre_stop_seconds))
                )
                if shutdown.pre_stop_seconds
                else None,
                resources=resources,
                startup_probe=http_probe(
                    spec.probes.startup, 2, (DATA_STARTUP_SECONDS if args.data_claim else STARTUP_SECONDS) // 2
                ),
                liveness_probe=http_probe(spec.probes.liveness, 10, 3),
                readiness_probe=http_probe(spec.probes.readiness, 5, 3),
                security_context=container_security(),
                volume_mounts=mounts,
            )

            # Where availability counts (prod), replicas must sit on different nodes: a soft spread let the
            # scheduler put both of a service's pods on one node (seen in e2e/test_stack_shapes.py). Nodes the
            # pod may not use (GPU taints, cordoned) are left out of the count, or they would block scheduling.
            # Zones stay a preference: K3s nodes carry no zone label unless someone sets one.
            spread = [
                TopologySpreadConstraintArgs(
                    max_skew=1,
                    topology_key="kubernetes.io/hostname",
                    when_unsatisfiable="DoNotSchedule" if args.spread_across_zones else "ScheduleAnyway",
                    node_taints_policy="Honor",
                    label_selector=LabelSelectorArgs(match_labels=track_selector),
                )
            ]
            if args.spread_across_zones:
                spread.append(
                    TopologySpreadConstraintArgs(
                        max_skew=1,
                        topology_key="topology.kubernetes.io/zone",
                        when_unsatisfiable="ScheduleAnyway",
                        label_selector=LabelSelectorArgs(match_labels=track_selector),
                    )
                )

            deployment = k8s.apps.v1.Deployment(
                f"{rname}-deployment",
                metadata=meta(kname, track_labels),
                spec=DeploymentSpecArgs(
                    # No `replicas`: the HPA owns the count, and re-applying must not reset it.
                    selector=LabelSelectorArgs(match_labels=track_selector),
                    revision_history_limit=5,
                    strategy=DeploymentStrategyArgs(
                        type="RollingUpdate",
                        rolling_update=RollingUpdateDeploymentArgs(
                            max_unavailable=0, max_surge=f"{ROLLOUT_SURGE_PERCENT}%"
                        ),
                    ),
                    template=PodTemplateSpecArgs(
                        metadata=ObjectMetaArgs(
                            labels={**labels, **track_labels},
                            annotations=pod_annotations(checksum, spec.port, spec.metrics_path),
                        ),
                        spec=PodSpecArgs(
                            service_account_name=self.service_account.metadata.name,
                            automount_service_account_token=spec.automount_service_account_token,
                            security_context=pod_security(),
                            containers=[container],
                            volumes=volumes,
                            topology_spread_constraints=spread,
                            tolerations=tolerations,
                            node_selector=node_selector,
                            runtime_class_name=runtime_class,
                            termination_grace_period_seconds=shutdown.grace_period_seconds,
                        ),
                    ),
                ),
                opts=child,
            )

            service = k8s.core.v1.Service(
                f"{rname}-service",
                metadata=not_awaited(meta(kname, {SCRAPE_LABEL: "true", TRACK_LABEL: track})),
                spec=ServiceSpecArgs(
                    type="ClusterIP",
                    selector=track_selector,
                    ports=[ServicePortArgs(name="http", port=SERVICE_PORT, target_port="http", protocol="TCP")],
                ),
                opts=child,
            )

            hpa = k8s.autoscaling.v2.HorizontalPodAutoscaler(
                f"{rname}-hpa",
                metadata=meta(kname, track_labels),
                spec=HorizontalPodAutoscalerSpecArgs(
                    scale_target_ref=CrossVersionObjectReferenceArgs(
                        api_version="apps/v1", kind="Deployment", name=deployment.metadata.name
                    ),
                    min_replicas=min_replicas,
                    max_replicas=max_replicas,
                    metrics=[
                        MetricSpecArgs(
                            type="Resource",
                            resource=ResourceMetricSourceArgs(
                                name="cpu",
                                target=MetricTargetArgs(
                                    type="Utilization", average_utilization=spec.scaling.cpu_target
                                ),
                            ),
                        )
                    ],
                    behavior=_hpa_behavior(args.scaling_behavior),
                ),
                opts=child,
            )

            pdb = disruption_budget(f"{rname}-pdb", meta(kname, track_labels), track_selector, child)
            return _Track(deployment, service, hpa, pdb, container.image)

        images: list[tuple[ImageSource, pulumi.Output[str]]] = []

        def image_for(source: ImageSource, resource_name: str) -> pulumi.Output[str]:
            """One image resource per distinct source: a canary of the same build reuses the stable's."""
            for known, reference in images:
                if known == source:
                    return reference
            images.append((source, image_reference(resource_name, source, self)))
            return images[-1][1]

        stable = make_track(
            STABLE,
            image_for(args.image, name),
            args.version,
            spec.scaling.min_replicas,
            spec.scaling.max_replicas,
        )
        self.deployment, self.service, self.hpa, self.pdb = stable.deployment, stable.service, stable.hpa, stable.pdb
        self.canary: _Track | None = None
        # Per track, the image it runs (by digest where built): the stack's "what runs where".
        self.images: dict[str, pulumi.Input[str]] = {STABLE: stable.image}
        if args.canary is not None:
            c = args.canary
            self.canary = make_track(
                CANARY, image_for(c.image, f"{name}-{CANARY}"), c.version, c.min_replicas, c.max_replicas
            )
            self.images[CANARY] = self.canary.image

        self.network_policy = k8s.networking.v1.NetworkPolicy(
            f"{name}-netpol", metadata=meta(), spec=_network_policy(spec, args, selector), opts=child
        )

        self.url = pulumi.Output.concat("http://", spec.name, ".", ns, ".svc.cluster.local:", str(SERVICE_PORT))
        self.register_outputs(
            {
                "deployment": self.deployment.metadata.name,
                "service": self.service.metadata.name,
                "url": self.url,
                "image": stable.image,
                "version": args.version,
                **({"canary": {"image": self.canary.image, "version": args.canary.version}} if self.canary else {}),
                "scrape": {"namespace": ns, "service": spec.name, "port": "http", "path": spec.metrics_path},
            }
        )


def _hpa_behavior(b: ScalingBehavior) -> HorizontalPodAutoscalerBehaviorArgs:
    return HorizontalPodAutoscalerBehaviorArgs(
        scale_up=HPAScalingRulesArgs(
            stabilization_window_seconds=0,
            select_policy="Max",
            policies=[
                HPAScalingPolicyArgs(
                    type="Percent", value=b.scale_up_percent, period_seconds=b.scale_up_period_seconds
                ),
                HPAScalingPolicyArgs(type="Pods", value=b.scale_up_pods, period_seconds=b.scale_up_period_seconds),
            ],
        ),
        scale_down=HPAScalingRulesArgs(
            stabilization_window_seconds=b.scale_down_stabilization_seconds,
            select_policy="Min",
            policies=[
                HPAScalingPolicyArgs(
                    type="Percent", value=b.scale_down_percent, period_seconds=b.scale_down_period_seconds
                )
            ],
        ),
    )


def _identity_env(
    identity: ServiceIdentity | None, namespace: str, callers: Sequence[str], has_callees: bool
) -> dict[str, str]:
    """The chassis' auth settings (sophia_chassis.settings.ServiceSettings), as env."""
    if identity is None:
        return {}
    env = {
        "AUTH_MODE": "required",
        "SERVICE_TOKEN_ISSUER": identity.issuer,
        "SERVICE_TOKEN_JWKS_URL": identity.jwks_url,
        "SERVICE_TOKEN_CA_FILE": f"{CLUSTER_IDENTITY_MOUNT}/ca.crt",
        "SERVICE_TOKEN_JWKS_TOKEN_FILE": f"{CLUSTER_IDENTITY_MOUNT}/token",
        "SERVICE_TOKEN_NAMESPACE": namespace,
        # The inverted `calls.services` of the manifests: the same source as the NetworkPolicy.
        "ALLOWED_CALLERS": ",".join(sorted(callers)),
    }
    if has_callees:
        env["SERVICE_TOKENS_DIR"] = SERVICE_TOKENS_MOUNT
    if identity.oidc_issuer and identity.oidc_jwks_url:
        env |= {
            "OIDC_ISSUER": identity.oidc_issuer,
            "OIDC_JWKS_URL": identity.oidc_jwks_url,
            "OIDC_TENANT_CLAIM": identity.oidc_tenant_claim,
        }
    return env


def _identity_volumes(identity: ServiceIdentity, callees: Mapping[str, int]) -> list[VolumeArgs]:
    """Projected tokens the kubelet keeps fresh: one for the API server (the JWKS), one per callee."""
    ttl = identity.token_ttl_seconds
    volumes = [
        VolumeArgs(
            name="cluster-identity",
            projected=ProjectedVolumeSourceArgs(
                default_mode=0o440,
                sources=[
                    VolumeProjectionArgs(
                        service_account_token=ServiceAccountTokenProjectionArgs(path="token", expiration_seconds=ttl)
                    ),
                    VolumeProjectionArgs(
                        config_map=ConfigMapProjectionArgs(
                            name="kube-root-ca.crt", items=[KeyToPathArgs(key="ca.crt", path="ca.crt")]
                        )
                    ),
                ],
            ),
        )
    ]
    if callees:
        volumes.append(
            VolumeArgs(
                name="service-tokens",
                projected=ProjectedVolumeSourceArgs(
                    default_mode=0o440,
                    sources=[
                        VolumeProjectionArgs(
                            service_account_token=ServiceAccountTokenProjectionArgs(
                                audience=callee, path=callee, expiration_seconds=ttl
                            )
                        )
                        for callee in sorted(callees)
                    ],
                ),
            )
        )
    return volumes


def _network_policy(spec: ServiceSpec, args: PlatformServiceArgs, selector: dict[str, str]) -> NetworkPolicySpecArgs:
    """Deny by default; allow only declared callers, the ingress controller and Prometheus in,
    and only DNS, declared callees, data stores and (if declared) HTTPS to the internet out."""
    app_port = [NetworkPolicyPortArgs(port=spec.port, protocol="TCP")]
    ingress = []
    if args.callers:
        ingress.append(NetworkPolicyIngressRuleArgs(ports=app_port, from_=[pods_named(list(args.callers))]))
    if spec.routes and args.ingress_namespace:
        ingress.append(NetworkPolicyIngressRuleArgs(ports=app_port, from_=[namespace_peer(args.ingress_namespace)]))
    if args.metrics_namespace:
        ingress.append(NetworkPolicyIngressRuleArgs(ports=app_port, from_=[namespace_peer(args.metrics_namespace)]))
    siblings = [pods_named([spec.name])]
    if args.data_claim:  # a rollout's new pod asks the old for the data; the others forward to the owner
        ingress.append(NetworkPolicyIngressRuleArgs(ports=app_port, from_=siblings))

    egress = [dns_egress()]
    if args.data_claim:
        egress.append(allow_out(siblings, spec.port))
    if args.callees:
        # Policies see the pod's container port, not the Service's port 80.
        egress.append(allow_out([pods_named(list(args.callees))], *sorted(set(args.callees.values()))))
    for peer in args.datastores:
        egress.append(allow_out([namespace_peer(peer.namespace, peer.pod_labels)], peer.port))
    if spec.calls.external:
        egress.append(internet_egress(443))
    if args.identity is not None:
        api_server = [NetworkPolicyPeerArgs(ip_block=IPBlockArgs(cidr=c)) for c in args.identity.api_server_cidrs]
        egress.append(allow_out(api_server, *args.identity.api_server_ports))
    return NetworkPolicySpecArgs(
        pod_selector=LabelSelectorArgs(match_labels=selector),
        policy_types=["Ingress", "Egress"],
        ingress=ingress,
        egress=egress,
    )
