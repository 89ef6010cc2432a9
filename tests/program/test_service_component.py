"""PlatformService on its own: the objects it makes and their key fields."""

from __future__ import annotations

from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import test as run_under_mocks

from components.image import ImageBuild
from components.service import (
    SHUTDOWN_MARGIN_SECONDS,
    GpuPlacement,
    Peer,
    PlatformService,
    PlatformServiceArgs,
    ScalingBehavior,
    Shutdown,
)
from components.spec import ServiceSpec
from infra.render import MOCK_DIGEST, RenderMocks, kubernetes_objects

from .conftest import find

SPEC = ServiceSpec.model_validate(
    {
        "name": "svc",
        "port": 9000,
        "secrets": ["API_KEY"],
        "env": {"MODE": "fast"},
        "calls": {"services": ["peer"], "datastores": ["redis"], "external": True},
        "routes": [{"path": "/svc"}],
    }
)


def build(args: PlatformServiceArgs) -> tuple[list[dict[str, Any]], RenderMocks, dict[str, str]]:
    mocks = RenderMocks()
    pulumi.runtime.set_mocks(mocks, project="sophia", stack="test", preview=False)
    urns: dict[str, str] = {}

    def program():
        component = PlatformService(args.spec.name, args)
        return pulumi.Output.all(component.urn, component.deployment.urn, component.url).apply(
            lambda v: urns.update(component=v[0], deployment=v[1], url=v[2])
        )

    run_under_mocks(program)()
    return kubernetes_objects(mocks.resources), mocks, urns


def args(**changes: Any) -> PlatformServiceArgs:
    base = dict(
        spec=SPEC,
        namespace="apps",
        image="example/svc:1",
        secrets={"API_KEY": "s3cret"},
        env={"PEER_URL": "http://peer"},
        callers=["caller"],
        callees={"peer": 8080},
        datastores=[Peer("data", {"app.kubernetes.io/name": "redis"}, 6379)],
        ingress_namespace="ingress",
        metrics_namespace="monitoring",
    )
    return PlatformServiceArgs(**{**base, **changes})


def pod(objects: list[dict[str, Any]]) -> dict[str, Any]:
    return find(objects, "Deployment", "svc")["spec"]["template"]


def test_makes_each_object_once_parented_to_the_component() -> None:
    objects, _, urns = build(args())
    kinds = sorted(o["kind"] for o in objects)
    assert kinds == sorted(
        [
            "ServiceAccount",
            "Secret",
            "Deployment",
            "Service",
            "HorizontalPodAutoscaler",
            "PodDisruptionBudget",
            "NetworkPolicy",
        ]
    )
    assert "sophia:platform:Service$kubernetes:apps/v1:Deployment" in urns["deployment"]
    assert urns["url"] == "http://svc.apps.svc.cluster.local:80"


def test_deployment_is_hardened_and_leaves_replicas_to_the_hpa() -> None:
    objects, _, _ = build(args())
    deployment = find(objects, "Deployment", "svc")
    assert "replicas" not in deployment["spec"]
    assert deployment["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0
    spec = pod(objects)["spec"]
    assert spec["automountServiceAccountToken"] is False
    assert spec["securityContext"]["runAsNonRoot"] is True
    assert spec["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = spec["containers"][0]
    sc = container["securityContext"]
    assert sc["readOnlyRootFilesystem"] is True and sc["allowPrivilegeEscalation"] is False
    assert sc["capabilities"] == {"drop": ["ALL"]}
    assert {p: container[p]["httpGet"]["path"] for p in ("livenessProbe", "readinessProbe", "startupProbe")} == {
        "livenessProbe": "/healthz",
        "readinessProbe": "/readyz",
        "startupProbe": "/healthz",
    }
    assert container["resources"]["requests"] == {"cpu": "100m", "memory": "128Mi", "ephemeral-storage": "64Mi"}
    assert [c["topologyKey"] for c in spec["topologySpreadConstraints"]] == ["kubernetes.io/hostname"]
    assert "nodeSelector" not in spec and "tolerations" not in spec
    assert "nvidia.com/gpu" not in container["resources"]["limits"]


def test_secrets_are_mounted_as_files_and_a_changed_secret_rolls_the_pods() -> None:
    objects, _, _ = build(args())
    container = pod(objects)["spec"]["containers"][0]
    assert {"name": "secrets", "mountPath": "/var/run/secrets/sophia", "readOnly": True} in container["volumeMounts"]
    assert not any("valueFrom" in e for e in container["env"])
    assert find(objects, "Secret", "svc-secrets")["stringData"] == {"API_KEY": "<redacted>"}
    before = pod(objects)["metadata"]["annotations"]["sophia.ai/config-checksum"]
    after = pod(build(args(secrets={"API_KEY": "rotated"}))[0])["metadata"]["annotations"]["sophia.ai/config-checksum"]
    same = pod(build(args())[0])["metadata"]["annotations"]["sophia.ai/config-checksum"]
    assert before != after and before == same


def test_only_the_manifest_secrets_may_be_given() -> None:
    with pytest.raises(ValueError, match=r"missing: \['API_KEY'\], not asked for: \['OTHER'\]"):
        build(args(secrets={"OTHER": "x"}))


def test_hpa_uses_the_seed_defaults_with_behaviour() -> None:
    objects, _, _ = build(args())
    hpa = find(objects, "HorizontalPodAutoscaler", "svc")["spec"]
    assert (hpa["minReplicas"], hpa["maxReplicas"]) == (2, 10)
    assert hpa["metrics"][0]["resource"] == {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}}
    assert hpa["scaleTargetRef"] == {"apiVersion": "apps/v1", "kind": "Deployment", "name": "svc"}
    assert hpa["behavior"]["scaleDown"]["stabilizationWindowSeconds"] == 300
    assert find(objects, "PodDisruptionBudget", "svc")["spec"]["maxUnavailable"] == 1


def test_network_policy_allows_only_declared_traffic() -> None:
    objects, _, _ = build(args())
    policy = find(objects, "NetworkPolicy", "svc")["spec"]
    assert policy["policyTypes"] == ["Ingress", "Egress"]
    sources = [rule["from"][0] for rule in policy["ingress"]]
    assert sources[0]["podSelector"]["matchExpressions"][0]["values"] == ["caller"]
    assert [s["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"] for s in sources[1:]] == [
        "ingress",
        "monitoring",
    ]
    assert all(rule["ports"] == [{"port": 9000, "protocol": "TCP"}] for rule in policy["ingress"])
    egress_ports = [sorted(p["port"] for p in rule["ports"]) for rule in policy["egress"]]
    assert egress_ports == [[53, 53], [8080], [6379], [443]]
    assert "10.0.0.0/8" in policy["egress"][3]["to"][0]["ipBlock"]["except"]


def test_no_ingress_from_the_controller_without_routes_nor_callers() -> None:
    quiet = SPEC.model_copy(update={"routes": ()})
    objects, _, _ = build(args(spec=quiet, callers=[], ingress_namespace="ingress"))
    sources = [
        rule["from"][0]["namespaceSelector"]["matchLabels"]["kubernetes.io/metadata.name"]
        for rule in find(objects, "NetworkPolicy", "svc")["spec"]["ingress"]
    ]
    assert sources == ["monitoring"]


def test_gpu_service_gets_request_selector_toleration_and_runtime() -> None:
    gpu_spec = ServiceSpec.model_validate({**SPEC.model_dump(), "gpu": {"count": 2, "required": True}})
    objects, _, _ = build(args(spec=gpu_spec, gpu=GpuPlacement(), spread_across_zones=True))
    spec = pod(objects)["spec"]
    resources = spec["containers"][0]["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == "2" and resources["requests"]["nvidia.com/gpu"] == "2"
    assert spec["nodeSelector"] == {"sophia.ai/gpu": "true"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["runtimeClassName"] == "nvidia"
    assert [c["topologyKey"] for c in spec["topologySpreadConstraints"]] == [
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
    ]


def test_built_image_is_deployed_by_digest(tmp_path) -> None:
    source = ImageBuild(
        context=tmp_path,
        dockerfile=tmp_path / "Dockerfile",
        repository="reg.example.com/svc",
        tag="v1",
        platforms=("linux/amd64", "linux/arm64"),
    )
    objects, mocks, _ = build(args(image=source))
    assert pod(objects)["spec"]["containers"][0]["image"] == f"reg.example.com/svc@{MOCK_DIGEST}"
    image = next(r for r in mocks.resources if r.type == "docker-build:index:Image")
    assert image.inputs["push"] is True and image.inputs["tags"] == ["reg.example.com/svc:v1"]
    assert image.inputs["platforms"] == ["linux/amd64", "linux/arm64"]
    assert image.inputs["dockerfile"]["location"] == str(tmp_path / "Dockerfile")


def test_given_image_reference_builds_nothing() -> None:
    objects, mocks, _ = build(args(image="sophia/svc:local"))
    assert pod(objects)["spec"]["containers"][0]["image"] == "sophia/svc:local"
    assert not any(r.type.startswith("docker-build") for r in mocks.resources)


def test_a_stopping_pod_leaves_the_load_balancers_then_drains() -> None:
    """preStop sleeps while the endpoint is dropped; uvicorn gets the drain time; the kubelet's
    grace period covers both (else it kills a pod still finishing requests)."""
    template = pod(build(args(shutdown=Shutdown(pre_stop_seconds=7, drain_seconds=11)))[0])
    container = template["spec"]["containers"][0]
    assert container["lifecycle"] == {"preStop": {"sleep": {"seconds": 7}}}
    assert {"name": "GRACEFUL_SHUTDOWN_SECONDS", "value": "11"} in container["env"]
    assert template["spec"]["terminationGracePeriodSeconds"] == 7 + 11 + SHUTDOWN_MARGIN_SECONDS
    no_wait = pod(build(args(shutdown=Shutdown(pre_stop_seconds=0, drain_seconds=11)))[0])["spec"]
    assert "lifecycle" not in no_wait["containers"][0]
    # With a data volume too: its data is handed over pod to pod, the old one waits and drains like any.
    handed = pod(build(args(data_claim="memories", shutdown=Shutdown(7, 11)))[0])["spec"]
    assert handed["containers"][0]["lifecycle"] == {"preStop": {"sleep": {"seconds": 7}}}
    # Its start may wait for the data (warm-up 20 s, hand-over 30 s): the startup probe allows 120 s.
    startup = handed["containers"][0]["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] == 120
    plain = pod(build(args(shutdown=Shutdown(7, 11)))[0])["spec"]["containers"][0]["startupProbe"]
    assert plain["periodSeconds"] * plain["failureThreshold"] == 60
    assert handed["terminationGracePeriodSeconds"] == 7 + 11 + SHUTDOWN_MARGIN_SECONDS


def test_a_deployment_with_a_data_volume_rolls_and_its_pods_may_reach_each_other() -> None:
    """One process owns the volume's data (the local embedded Qdrant), so a rollout's new pod asks
    the old one, at its pod IP, to hand it over, and the others forward to the owner: surged like
    every Deployment, the siblings let through their NetworkPolicy on the app port, and only then."""
    objects = build(args(data_claim="memories"))[0]
    deployment = find(objects, "Deployment", "svc")
    assert deployment["spec"]["strategy"] == {
        "type": "RollingUpdate",
        "rollingUpdate": {"maxUnavailable": 0, "maxSurge": "25%"},  # 1 of 1: a new pod beside the old
    }
    env = deployment["spec"]["template"]["spec"]["containers"][0]["env"]
    assert {"name": "POD_IP", "valueFrom": {"fieldRef": {"fieldPath": "status.podIP"}}} in env
    # Its revision: a sibling of the owner's follows it, a rollout's pod asks for the data.
    revision = {"fieldRef": {"fieldPath": "metadata.labels['pod-template-hash']"}}
    assert {"name": "POD_TEMPLATE_HASH", "valueFrom": revision} in env
    siblings = {"matchExpressions": [{"key": "app.kubernetes.io/name", "operator": "In", "values": ["svc"]}]}
    policy = find(objects, "NetworkPolicy", "svc")["spec"]
    assert {"ports": [{"port": 9000, "protocol": "TCP"}], "from": [{"podSelector": siblings}]} in policy["ingress"]
    assert {"ports": [{"port": 9000, "protocol": "TCP"}], "to": [{"podSelector": siblings}]} in policy["egress"]
    plain = build(args())[0]
    assert not {"POD_IP", "POD_TEMPLATE_HASH"} & {e["name"] for e in pod(plain)["spec"]["containers"][0]["env"]}
    plain_policy = find(plain, "NetworkPolicy", "svc")["spec"]
    assert not [
        p
        for r in plain_policy["ingress"] + plain_policy["egress"]
        for p in r.get("from", []) + r.get("to", [])
        if p.get("podSelector") == siblings
    ]


def test_the_hpa_behaviour_is_the_one_given() -> None:
    behavior = ScalingBehavior(
        scale_down_stabilization_seconds=30, scale_down_percent=100, scale_down_period_seconds=15
    )
    hpa = find(build(args(scaling_behavior=behavior))[0], "HorizontalPodAutoscaler", "svc")["spec"]["behavior"]
    assert hpa["scaleDown"] == {
        "stabilizationWindowSeconds": 30,
        "selectPolicy": "Min",
        "policies": [{"type": "Percent", "value": 100, "periodSeconds": 15}],
    }
    assert hpa["scaleUp"]["stabilizationWindowSeconds"] == 0
    assert {(p["type"], p["value"]) for p in hpa["scaleUp"]["policies"]} == {("Percent", 100), ("Pods", 4)}


def test_the_service_image_reads_the_drain_time_from_the_pod() -> None:
    """services/Dockerfile's uvicorn takes its graceful-shutdown timeout from the variable the
    pod sets, and keeps idle connections open longer than the proxies in front do."""
    from pathlib import Path

    cmd = (Path(__file__).resolve().parents[2] / "services" / "Dockerfile").read_text().split("\nCMD ")[1]
    assert '--timeout-graceful-shutdown \\"${GRACEFUL_SHUTDOWN_SECONDS:-20}\\"' in cmd
    assert int(cmd.split("--timeout-keep-alive ")[1].split('"')[0]) > 90  # Traefik's idle timeout


def test_the_probes_wait_longer_than_readyz_waits_for_a_dependency() -> None:
    """/readyz gives each check READINESS_TIMEOUT_SECONDS; a probe timing out first would take the pod
    out of its Service whenever an optional dependency hangs (seen: a Redis restart under load)."""
    from sophia_chassis.app import READINESS_TIMEOUT_SECONDS

    container = pod(build(args())[0])["spec"]["containers"][0]
    for probe in ("readinessProbe", "livenessProbe", "startupProbe"):
        assert container[probe]["timeoutSeconds"] > READINESS_TIMEOUT_SECONDS, probe
