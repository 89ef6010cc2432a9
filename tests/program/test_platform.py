"""The platform around the services, per stack: data stores, secrets, namespaces, GPU pools."""

from __future__ import annotations

import hashlib
from typing import Any

import pytest
import yaml

from components.pgbouncer import DatabaseUrlError, PgBouncerArgs, pgbouncer_ini
from components.qdrant import SEED_COLLECTION
from components.redis import acl_file
from infra.discovery import discover

from .conftest import find, render_objects

OUR_NAMESPACES = {"sophia", "sophia-data", "sophia-observability", "sophia-ingress"}


def in_namespace(objects: list[dict[str, Any]], namespace: str, kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o["kind"] == kind and o["metadata"].get("namespace") == namespace]


def test_seed_collection_is_the_seeds() -> None:
    assert SEED_COLLECTION == {
        "vectors": {"size": 3072, "distance": "Cosine"},
        "hnsw_config": {"m": 16, "ef_construct": 200, "full_scan_threshold": 10000},
        "optimizers_config": {"default_segment_number": 2, "max_optimization_threads": 2},
    }


@pytest.mark.parametrize("stack,replicas,distributed", [("dev", 1, False), ("prod", 3, True)])
def test_qdrant_per_stack(
    rendered: dict[str, list[dict[str, Any]]], stack: str, replicas: int, distributed: bool
) -> None:
    objects = rendered[stack]
    sts = find(objects, "StatefulSet", "qdrant")
    assert sts["spec"]["replicas"] == replicas
    assert sts["spec"]["volumeClaimTemplates"][0]["spec"]["resources"]["requests"]["storage"] == "10Gi"
    pod = sts["spec"]["template"]["spec"]
    assert ("affinity" in pod) == distributed
    find(objects, "PodDisruptionBudget", "qdrant")
    # The rendered Secret is redacted; the config it holds is checked through server_config below.
    assert find(objects, "Secret", "qdrant-config")["stringData"] == {"local.yaml": "<redacted>"}


def test_local_qdrant_is_embedded_on_a_volume_claim(rendered: dict[str, list[dict[str, Any]]]) -> None:
    """No Qdrant server can be had offline: locally mcp-context embeds Qdrant Edge, its shard on
    its own claim (one owner, handed over pod to pod, so the Deployment rolls like the others), and
    talks to no server."""
    objects = rendered["local"]
    assert not [o for o in objects if o["kind"] == "StatefulSet" and o["metadata"]["name"] == "qdrant"]
    claim = find(objects, "PersistentVolumeClaim", "mcp-context-data")
    assert claim["spec"]["storageClassName"] == "sophia-local"
    deployment = find(objects, "Deployment", "mcp-context")
    pod = deployment["spec"]["template"]["spec"]
    env = {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}
    assert env["QDRANT_PATH"] == "/var/lib/sophia/qdrant" and "QDRANT_URL" not in env
    assert {"name": "data", "persistentVolumeClaim": {"claimName": "mcp-context-data"}} in pod["volumes"]
    assert deployment["spec"]["strategy"]["type"] == "RollingUpdate"
    egress_ports = {
        p["port"] for r in find(objects, "NetworkPolicy", "mcp-context")["spec"]["egress"] for p in r["ports"]
    }
    assert 6333 not in egress_ports


def test_local_postgres_sits_behind_pgbouncer(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["local"]
    pod = find(objects, "Deployment", "postgres")["spec"]["template"]["spec"]
    assert not [e for e in pod["containers"][0].get("env", []) if "valueFrom" in e]  # the password is a file
    policy = find(objects, "NetworkPolicy", "postgres")["spec"]
    assert policy["ingress"][0]["from"][0]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "pgbouncer"}
    assert policy["egress"] == []
    # PgBouncer may reach that pod (besides the internet, where Neon is in dev/prod).
    egress = find(objects, "NetworkPolicy", "pgbouncer")["spec"]["egress"]
    assert any(
        (peer.get("podSelector") or {}).get("matchLabels") == {"app.kubernetes.io/name": "postgres"}
        for rule in egress
        for peer in rule.get("to", [])
    )
    assert not [o for o in rendered["prod"] if o["kind"] == "Deployment" and o["metadata"]["name"] == "postgres"]


def test_local_upstream_stand_ins_serve_only_the_services_that_call_out(
    rendered: dict[str, list[dict[str, Any]]],
) -> None:
    """sophia:local_upstreams: the fakes' pod, and each external caller pointed at its upstream
    with the fake's token as the secret its manifest asks for; nobody else may reach the pod."""
    from components.upstreams import UPSTREAMS
    from sophia_testing import github_fake, hubspot_fake

    assert UPSTREAMS["GITHUB_TOKEN"].token == github_fake.TOKEN
    assert UPSTREAMS["HUBSPOT_ACCESS_TOKEN"].token == hubspot_fake.TOKEN
    objects = rendered["local"]
    find(objects, "Deployment", "upstreams")
    host = "http://upstreams.sophia-data.svc.cluster.local"
    expected = {
        "agno-coordinator": ("OPENAI_BASE_URL", f"{host}:8081/v1"),
        "mcp-github": ("GITHUB_API_URL", f"{host}:8082"),
        "mcp-hubspot": ("HUBSPOT_API_URL", f"{host}:8083"),
    }
    for name, (key, url) in expected.items():
        env = {e["name"]: e.get("value") for e in find(objects, "Deployment", name)["spec"]["template"]["spec"]["containers"][0]["env"]}  # fmt: skip
        assert env[key] == url, name
        egress = find(objects, "NetworkPolicy", name)["spec"]["egress"]
        assert any(
            (peer.get("podSelector") or {}).get("matchLabels") == {"app.kubernetes.io/name": "upstreams"}
            and rule["ports"] == [{"port": int(url.split(":")[2].split("/")[0]), "protocol": "TCP"}]
            for rule in egress
            for peer in rule.get("to", [])
        ), name
    ingress = find(objects, "NetworkPolicy", "upstreams")["spec"]["ingress"]
    callers = {v for r in ingress for p in r["from"] for v in p["podSelector"]["matchExpressions"][0]["values"]}
    assert callers == set(expected)
    for stack in ("dev", "prod"):
        assert not [o for o in rendered[stack] if o["metadata"]["name"] == "upstreams"]


def test_qdrant_server_config_carries_key_and_seed_numbers() -> None:
    from components.qdrant import server_config

    config = yaml.safe_load(server_config("k3y", distributed=True))
    assert config["service"]["api_key"] == "k3y" and config["cluster"]["enabled"] is True
    assert config["storage"]["hnsw_index"] == {"m": 16, "ef_construct": 200, "full_scan_threshold_kb": 10000}
    assert config["storage"]["optimizers"]["default_segment_number"] == 2
    assert config["storage"]["performance"]["max_optimization_threads"] == 2


def test_redis_acl_has_a_user_per_caller_and_no_plaintext() -> None:
    text = acl_file({"mcp-context": "pw-one", "mcp-agents": "pw-two"}, "pw-exp")
    lines = text.splitlines()
    assert lines[0] == "user default off"
    assert f"user mcp-agents on #{hashlib.sha256(b'pw-two').hexdigest()} ~* &* +@all -@dangerous" in lines
    assert any(line.startswith("user exporter on #") and "-@all" in line for line in lines)
    assert "pw-one" not in text and "pw-exp" not in text


@pytest.mark.parametrize("stack,persistent", [("local", False), ("dev", False), ("prod", True)])
def test_redis_is_a_bounded_cache_with_auth(
    rendered: dict[str, list[dict[str, Any]]], stack: str, persistent: bool
) -> None:
    objects = rendered[stack]
    conf = find(objects, "ConfigMap", "redis-config")["data"]["redis.conf"]
    # Only keys with a TTL (the cache's) are evicted, never index state or task streams.
    assert "maxmemory-policy volatile-lru" in conf and "aclfile /etc/redis/acl/users.acl" in conf
    assert ("appendonly yes" in conf) == persistent
    sts = find(objects, "StatefulSet", "redis")
    assert ("volumeClaimTemplates" in sts["spec"]) == persistent
    assert find(objects, "Service", sts["spec"]["serviceName"])["spec"]["clusterIP"] == "None"
    assert sts["spec"]["template"]["spec"]["containers"][0]["image"].startswith("redis:")
    callers = {s.name for s in discover() if "redis" in s.calls.datastores}
    rule = find(objects, "NetworkPolicy", "redis")["spec"]["ingress"][0]
    assert set(rule["from"][0]["podSelector"]["matchExpressions"][0]["values"]) == callers
    assert find(objects, "NetworkPolicy", "redis")["spec"]["egress"] == []


def test_services_get_their_data_store_connections(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    env = {
        e["name"]: e.get("value")
        for e in find(objects, "Deployment", "mcp-context")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert env["QDRANT_URL"] == "http://qdrant.sophia-data.svc.cluster.local:6333"
    assert env["REDIS_URL"] == "redis://mcp-context@redis.sophia-data.svc.cluster.local:6379/0"
    assert env["EMBEDDING_CACHE_TTL_SECONDS"] == "86400"
    agents = {
        e["name"]: e.get("value")
        for e in find(objects, "Deployment", "mcp-agents")["spec"]["template"]["spec"]["containers"][0]["env"]
    }
    assert agents["PGHOST"] == "pgbouncer.sophia-data.svc.cluster.local" and agents["PGDATABASE"] == "sophia"


def test_pgbouncer_pools_primary_and_read_replica() -> None:
    args = PgBouncerArgs(namespace="d", database_url="", client_password="", services_namespace="s")
    ini = pgbouncer_ini(
        "postgresql://app:p%40ss@ep-1.neon.tech/sophia?sslmode=require",
        "postgresql://app:pw@ep-1-ro.neon.tech:5433/sophia",
        args,
    )
    assert "sophia = host=ep-1.neon.tech port=5432 dbname=sophia user=app password=p@ss" in ini
    assert "sophia_ro = host=ep-1-ro.neon.tech port=5433 dbname=sophia" in ini
    assert "pool_mode = transaction" in ini and "server_tls_sslmode = require" in ini
    assert "sophia_ro" not in pgbouncer_ini("postgresql://a:b@h/sophia", "", args)
    with pytest.raises(DatabaseUrlError, match="not a postgres URL"):
        pgbouncer_ini("mysql://a:b@h/db", None, args)


def checksums(objects: list[dict[str, Any]]) -> dict[str, str]:
    return {
        o["metadata"]["name"]: o["spec"]["template"]["metadata"]["annotations"]["sophia.ai/config-checksum"]
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet")
        and "sophia.ai/config-checksum" in o["spec"]["template"]["metadata"].get("annotations", {})
    }


def test_a_rotation_rolls_no_pod_but_qdrant_which_takes_the_key_its_callers_already_hold() -> None:
    """Redis, PgBouncer and the services take rotated credentials live (docs/secrets.md); Qdrant reads
    its one key at start, so it rolls, to the key one rotation old."""
    first, second, third = (checksums(render_objects("dev", {"secret_rotation": n})) for n in (0, 1, 2))
    assert first == checksums(render_objects("dev"))  # deterministic
    assert first == second  # the first rotation hands the callers the next key, and changes no server key
    assert {name for name in second if second[name] != third[name]} == {"qdrant"}
    assert {"redis", "pgbouncer", "mcp-agents", "mcp-context"} <= set(first)


def test_an_esc_secret_change_rolls_only_its_services() -> None:
    before = checksums(render_objects("dev"))
    after = checksums(render_objects("dev", {"secrets": {"GITHUB_TOKEN": "rotated-by-operator"}}))
    assert {n for n in before if before[n] != after[n]} == {s.name for s in discover() if "GITHUB_TOKEN" in s.secrets}


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_a_namespace_per_concern_with_guard_rails(rendered: dict[str, list[dict[str, Any]]], stack: str) -> None:
    objects = rendered[stack]
    namespaces = {o["metadata"]["name"]: o for o in objects if o["kind"] == "Namespace"}
    assert set(namespaces) == OUR_NAMESPACES
    for name, ns in namespaces.items():
        level = ns["metadata"]["labels"]["pod-security.kubernetes.io/enforce"]
        assert level == ("privileged" if name == "sophia-observability" else "restricted")
        find(in_namespace(objects, name, "ResourceQuota"), "ResourceQuota", "quota")
        find(in_namespace(objects, name, "LimitRange"), "LimitRange", "defaults")
        find(in_namespace(objects, name, "RoleBinding"), "RoleBinding", "sophia-viewer")
    for name in ("sophia", "sophia-data"):
        deny = find(in_namespace(objects, name, "NetworkPolicy"), "NetworkPolicy", "default-deny")
        assert deny["spec"] == {"podSelector": {}, "policyTypes": ["Ingress", "Egress"]}


def test_roles_are_least_privilege(rendered: dict[str, list[dict[str, Any]]]) -> None:
    for role in (o for o in rendered["prod"] if o["kind"] in ("Role", "ClusterRole")):
        for rule in role["rules"]:
            assert "*" not in rule["verbs"] and "*" not in rule["resources"], role["metadata"]
            if role["metadata"]["name"] == "sophia-viewer":
                assert set(rule["verbs"]) == {"get", "list", "watch"} and "secrets" not in rule["resources"]


def test_prod_has_a_pdb_for_every_workload(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    workloads = {
        (o["metadata"]["namespace"], o["metadata"]["name"])
        for o in objects
        if o["kind"] in ("Deployment", "StatefulSet") and o["metadata"]["namespace"] in OUR_NAMESPACES
    }
    pdbs = {(o["metadata"]["namespace"], o["metadata"]["name"]) for o in objects if o["kind"] == "PodDisruptionBudget"}
    assert workloads and workloads <= pdbs
    assert find(objects, "Deployment", "pgbouncer")["spec"]["replicas"] >= 2


def test_gpu_pools_label_taint_and_advertise(rendered: dict[str, list[dict[str, Any]]]) -> None:
    prod = rendered["prod"]
    runtime = find(prod, "RuntimeClass", "nvidia")
    assert runtime["handler"] == "nvidia"
    assert runtime["scheduling"]["tolerations"] == [
        {"effect": "NoSchedule", "key": "nvidia.com/gpu", "operator": "Exists"}
    ]
    plugin = find(prod, "DaemonSet", "nvidia-device-plugin")["spec"]["template"]["spec"]
    assert plugin["nodeSelector"] == {"sophia.ai/gpu": "true"}
    for kind, name in (("RuntimeClass", "nvidia"), ("DaemonSet", "nvidia-device-plugin")):
        assert not [o for o in rendered["dev"] if o["kind"] == kind and o["metadata"]["name"] == name]


def test_listed_gpu_nodes_are_labelled_and_tainted() -> None:
    objects = render_objects("prod", {"gpu_pools": [{"name": "gh200", "node_count": 2, "nodes": ["gh200-a"]}]})
    node = find(objects, "Node", "gh200-a")
    assert node["metadata"]["labels"]["sophia.ai/gpu-pool"] == "gh200"
    assert node["spec"]["taints"] == [{"effect": "NoSchedule", "key": "nvidia.com/gpu", "value": "present"}]


def test_rotating_secret_is_random_alphanumeric_and_renewed_only_on_a_new_keeper() -> None:
    from components.secrets import ALPHABET, _RotatingSecretProvider

    provider = _RotatingSecretProvider()
    first = provider.create({"keeper": "0", "length": 40}).outs["result"]
    second = provider.create({"keeper": "0", "length": 40}).outs["result"]
    assert len(first) == 40 and set(first) <= set(ALPHABET) and first != second
    same = provider.diff("id", {"keeper": "0", "length": 40, "result": first}, {"keeper": "0", "length": 40})
    bumped = provider.diff("id", {"keeper": "0", "length": 40, "result": first}, {"keeper": "1", "length": 40})
    assert (same.changes, same.replaces) == (False, [])
    assert (bumped.changes, bumped.replaces) == (True, [])  # updated in place, keeping the value before
    renewed = provider.update("id", {"keeper": "0", "length": 40, "result": first}, {"keeper": "1", "length": 40})
    assert renewed.outs["previous"] == first and renewed.outs["result"] not in (first, "")
    longer = provider.diff("id", {"keeper": "0", "length": 40, "result": first}, {"keeper": "0", "length": 48})
    assert longer.replaces == ["length"]


@pytest.mark.parametrize("stack", ["local", "prod"])
def test_every_internet_egress_excludes_the_same_private_ranges(
    rendered: dict[str, list[dict[str, Any]]], stack: str
) -> None:
    from components.workload import PRIVATE_RANGES

    blocks = {
        o["metadata"]["name"]: peer["ipBlock"]
        for o in rendered[stack]
        if o["kind"] == "NetworkPolicy"
        for rule in o["spec"].get("egress", [])
        for peer in rule.get("to", [])
        if peer.get("ipBlock", {}).get("cidr") == "0.0.0.0/0"
    }
    backups = {"qdrant-backup", "redis-backup"} if stack == "prod" else set()  # to object storage (sophia:backup)
    models = {"vllm"} if stack == "prod" else set()  # the model's weights from Hugging Face
    assert set(blocks) == {"pgbouncer"} | backups | models | {s.name for s in discover() if s.calls.external}
    assert "100.64.0.0/10" in PRIVATE_RANGES  # carrier-grade NAT: some CNIs put pods there
    for block in blocks.values():
        assert block == {"cidr": "0.0.0.0/0", "except": list(PRIVATE_RANGES)}


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_every_container_bounds_its_ephemeral_storage(rendered: dict[str, list[dict[str, Any]]], stack: str) -> None:
    pods = [
        o["spec"]["template"]["spec"]
        for o in rendered[stack]
        if o["kind"] in ("Deployment", "StatefulSet", "DaemonSet")
    ]
    containers = [c for pod in pods for c in pod["containers"] + pod.get("initContainers", [])]
    assert containers
    for c in containers:
        assert {"requests", "limits"} <= set(c["resources"]), c["name"]
        assert c["resources"]["requests"]["ephemeral-storage"] and c["resources"]["limits"]["ephemeral-storage"], c[
            "name"
        ]


@pytest.mark.parametrize("stack,expected", [("local", None), ("prod", ("2", "1", "3"))])
def test_a_clustered_qdrant_keeps_two_copies_of_every_shard(
    rendered: dict[str, list[dict[str, Any]]], stack: str, expected: tuple[str, str, str] | None
) -> None:
    container = find(rendered[stack], "Deployment", "mcp-context")["spec"]["template"]["spec"]["containers"][0]
    env = {e["name"]: e.get("value") for e in container["env"]}
    names = ("QDRANT_REPLICATION_FACTOR", "QDRANT_WRITE_CONSISTENCY_FACTOR", "QDRANT_SHARD_NUMBER")
    if expected is None:
        assert not set(names) & set(env)  # one node: nothing to replicate
    else:
        assert tuple(env[n] for n in names) == expected
        replicas = find(rendered[stack], "StatefulSet", "qdrant")["spec"]["replicas"]
        assert int(env["QDRANT_SHARD_NUMBER"]) == replicas > int(env["QDRANT_REPLICATION_FACTOR"]) >= 2
