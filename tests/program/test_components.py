"""Each platform component on its own under mocks: what it makes, all parented to it."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pytest
from pulumi.runtime.mocks import test as run_under_mocks

from components.gpu import GpuPoolArgs, GpuPools, GpuPoolsArgs, join_flags
from components.ingress import Ingress, IngressArgs, RouteSpec
from components.namespace import NamespaceArgs, PlatformNamespace, Quota
from components.observability import Observability, ObservabilityArgs
from components.pgbouncer import PgBouncer, PgBouncerArgs, client_user
from components.qdrant import Qdrant, QdrantArgs
from components.redis import Redis, RedisArgs
from components.secrets import GeneratedSecrets, GeneratedSecretsArgs
from components.spec import ServiceObservability
from infra.render import RenderMocks, kubernetes_objects

QUOTA = Quota("1", "1Gi", "2", "2Gi", 10)

COMPONENTS: dict[str, tuple[Callable[[], pulumi.ComponentResource], str, list[str]]] = {
    "namespace": (
        lambda: PlatformNamespace("ns", NamespaceArgs(name="apps", concern="services", quota=QUOTA)),
        "sophia:platform:Namespace",
        ["Namespace", "ResourceQuota", "LimitRange", "NetworkPolicy", "Role", "RoleBinding"],
    ),
    "redis": (
        lambda: Redis(
            "redis", RedisArgs(namespace="data", users={"svc": "pw"}, exporter_password="x", services_namespace="apps")
        ),
        "sophia:platform:Redis",
        ["ConfigMap", "Secret", "StatefulSet", "Service", "Service", "PodDisruptionBudget", "NetworkPolicy"],
    ),
    "qdrant": (
        lambda: Qdrant(
            "qdrant", QdrantArgs(namespace="data", api_key="k", services_namespace="apps", callers=["svc"], replicas=3)
        ),
        "sophia:platform:Qdrant",
        ["Secret", "StatefulSet", "Service", "Service", "PodDisruptionBudget", "NetworkPolicy"],
    ),
    "pgbouncer": (
        lambda: PgBouncer(
            "pgb",
            PgBouncerArgs(
                namespace="data", database_url="postgresql://u:p@h/db", client_password="c", services_namespace="apps"
            ),
        ),
        "sophia:platform:PgBouncer",
        ["Secret", "Deployment", "Service", "PodDisruptionBudget", "NetworkPolicy"],
    ),
    "gpu": (
        lambda: GpuPools("gpu", GpuPoolsArgs(pools=[GpuPoolArgs("gh200", "gpu_1x_gh200", 2, ["node-a"])])),
        "sophia:platform:GpuPools",
        ["RuntimeClass", "Node", "DaemonSet"],
    ),
    "ingress": (
        lambda: Ingress(
            "ingress",
            IngressArgs(
                namespace="edge", services_namespace="apps", domain="example.com", routes=[RouteSpec("svc", "/svc")]
            ),
        ),
        "sophia:platform:Ingress",
        ["Gateway", "ReferenceGrant", "HTTPRoute", "ClientSettingsPolicy", "RateLimitPolicy"],
    ),
    "observability": (
        lambda: Observability(
            "obs",
            ObservabilityArgs(namespace="mon", services_namespace="apps", services={"svc": ServiceObservability()}),
        ),
        "sophia:platform:Observability",
        ["ConfigMap", "ServiceMonitor", "PrometheusRule"],
    ),
}


def build(factory: Callable[[], pulumi.ComponentResource]) -> tuple[list[dict[str, Any]], list[str], RenderMocks]:
    mocks = RenderMocks()
    pulumi.runtime.set_mocks(mocks, project="sophia", stack="test", preview=False)
    urns: list[str] = []

    def program():
        component = factory()
        return component.urn.apply(lambda u: urns.append(u))

    run_under_mocks(program)()
    return kubernetes_objects(mocks.resources), urns, mocks


@pytest.mark.parametrize("name", COMPONENTS)
def test_component_makes_its_objects(name: str) -> None:
    factory, type_token, expected_kinds = COMPONENTS[name]
    objects, urns, mocks = build(factory)
    assert urns and type_token in urns[0]
    assert sorted(o["kind"] for o in objects) == sorted(expected_kinds)
    # Every object has an explicit name (no auto-naming suffix) and labels saying whose it is.
    for obj in objects:
        assert obj["metadata"]["name"]
        if obj["kind"] != "Node":
            assert obj["metadata"]["labels"]["app.kubernetes.io/part-of"] == "sophia", obj["kind"]


def test_generated_secrets_are_one_resource_per_name_keyed_on_rotation() -> None:
    _, _, mocks = build(lambda: GeneratedSecrets("gen", GeneratedSecretsArgs(names=["b", "a", "a"], rotation=7)))
    dynamic = [r for r in mocks.resources if r.type == "pulumi-python:dynamic:Resource"]
    assert sorted(r.name for r in dynamic) == ["gen-a", "gen-b"]
    assert {r.inputs["keeper"] for r in dynamic} == {"7"}


def test_qdrant_refuses_an_even_quorum() -> None:
    with pytest.raises(ValueError, match="replicas must be 1, 3 or 5"):
        build(lambda: Qdrant("q", QdrantArgs(namespace="d", api_key="k", services_namespace="s", replicas=2)))


def test_gpu_join_flags_match_what_the_component_labels() -> None:
    assert join_flags("gh200") == [
        "--node-label=sophia.ai/gpu=true",
        "--node-label=sophia.ai/gpu-pool=gh200",
        "--node-taint=nvidia.com/gpu=present:NoSchedule",
    ]


def test_each_data_store_gives_a_caller_its_endpoint_settings_and_credentials() -> None:
    seen: dict[str, Any] = {}

    def program():
        redis = Redis(
            "r", RedisArgs(namespace="data", users={"svc": "pw-svc"}, exporter_password="x", services_namespace="apps")
        )
        qdrant = Qdrant("q", QdrantArgs(namespace="data", api_key="k3y", services_namespace="apps"))
        pgbouncer = PgBouncer(
            "p",
            PgBouncerArgs(
                namespace="data", database_url="postgresql://u:p@h/db", client_password="c", services_namespace="apps"
            ),
        )
        connections = {s: c.connection("svc") for s, c in (("redis", redis), ("qdrant", qdrant), ("pg", pgbouncer))}
        seen.update({s: (c.peer.namespace, dict(c.peer.pod_labels), c.peer.port) for s, c in connections.items()})
        values = {f"{s}.{k}": v for s, c in connections.items() for k, v in {**c.env, **c.secrets}.items()}
        return pulumi.Output.all(**values).apply(lambda v: seen.update(v))

    pulumi.runtime.set_mocks(RenderMocks(), project="sophia", stack="test", preview=False)
    run_under_mocks(program)()
    assert seen["redis"] == ("data", {"app.kubernetes.io/name": "redis"}, 6379)
    assert seen["redis.REDIS_URL"] == "redis://svc@redis.data.svc.cluster.local:6379/0"
    assert seen["redis.REDIS_PASSWORD"] == "pw-svc"
    assert seen["qdrant"] == ("data", {"app.kubernetes.io/name": "qdrant"}, 6333)
    assert (seen["qdrant.QDRANT_URL"], seen["qdrant.QDRANT_API_KEY"]) == (
        "http://qdrant.data.svc.cluster.local:6333",
        "k3y",
    )
    assert seen["pg"] == ("data", {"app.kubernetes.io/name": "pgbouncer"}, 5432)
    assert {k: seen[f"pg.{k}"] for k in ("PGHOST", "PGPORT", "PGUSER", "PGDATABASE", "PGPASSWORD")} == {
        "PGHOST": "pgbouncer.data.svc.cluster.local",
        "PGPORT": "5432",
        "PGUSER": client_user("c"),
        "PGDATABASE": "db",
        "PGPASSWORD": "c",
    }
