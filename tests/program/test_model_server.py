"""The model server on the GPU pool (vLLM, components/model_server.py) as each stack renders it:
placement and GPUs from the pool, weights on a volume, who may call it, the coordinator pointed
at it, the quota and the GPU capacity rule."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from components.model_server import MODELS_MOUNT, PORT
from infra.config import ConfigError, ModelServer
from infra.render import kubernetes_objects, offline_config, run_program, stack_file_config

from .conftest import find, render_objects
from .test_discovery import add_service

POD_KINDS = ("Deployment", "StatefulSet", "DaemonSet", "Job", "CronJob")
COORDINATOR_TABLE = Path(__file__).resolve().parents[2] / "services/agno-coordinator/agno_coordinator/models.yaml"


def pod_spec(obj: dict[str, Any]) -> dict[str, Any]:
    spec = obj["spec"]
    return spec["jobTemplate"]["spec"]["template"]["spec"] if obj["kind"] == "CronJob" else spec["template"]["spec"]


def gpu_requests(objects: list[dict[str, Any]]) -> dict[str, str]:
    """Workload name -> GPUs its containers request, for every workload that requests any."""
    found = {}
    for obj in objects:
        if obj["kind"] in POD_KINDS:
            for c in pod_spec(obj)["containers"]:
                requests = c.get("resources", {}).get("requests", {})
                if "nvidia.com/gpu" in requests:
                    found[obj["metadata"]["name"]] = requests["nvidia.com/gpu"]
    return found


def env_of(deployment: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod_spec(deployment)["containers"][0].get("env", [])}


def test_prod_runs_vllm_on_every_gh200_node_with_its_gpus(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    pool = next(p for p in stack_file_config("prod")["sophia:gpu_pools"] if p["name"] == "gh200")
    sts = find(objects, "StatefulSet", "vllm")
    assert sts["metadata"]["namespace"] == "sophia" and sts["spec"]["replicas"] == pool["node_count"]
    spec = pod_spec(sts)
    [container] = spec["containers"]
    assert container["image"] == stack_file_config("prod")["sophia:model_server"]["image"]
    assert container["image"].startswith("vllm/vllm-openai@sha256:") and container["imagePullPolicy"] == "Always"
    gpus = str(pool["gpus_per_node"])
    assert container["resources"]["requests"]["nvidia.com/gpu"] == container["resources"]["limits"]["nvidia.com/gpu"]
    assert container["resources"]["limits"]["nvidia.com/gpu"] == gpus
    assert f"--tensor-parallel-size={gpus}" in container["args"]
    # GH200 is Grace (arm64): the pool's nodes, by label, under the GPU taint and runtime.
    assert spec["nodeSelector"] == {"sophia.ai/gpu-pool": "gh200", "kubernetes.io/arch": "arm64"}
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["runtimeClassName"] == "nvidia"
    # The model's weights and caches on the replica's own claim; nothing else writable but scratch.
    [claim] = sts["spec"]["volumeClaimTemplates"]
    assert claim["metadata"]["name"] == "models" and claim["spec"]["resources"]["requests"]["storage"] == "100Gi"
    mounts = {m["name"]: m["mountPath"] for m in container["volumeMounts"]}
    assert mounts["models"] == MODELS_MOUNT and env_of(sts)["HF_HOME"].startswith(MODELS_MOUNT + "/")
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert spec["securityContext"]["runAsNonRoot"] is True
    # Rolled one pod at a time, never surged (no spare GPU), behind a headless governing Service.
    assert sts["spec"]["updateStrategy"] == {"type": "RollingUpdate"}
    headless = find(objects, "Service", sts["spec"]["serviceName"])
    assert headless["spec"]["clusterIP"] == "None"
    probes = {k: container[k]["httpGet"]["path"] for k in ("startupProbe", "livenessProbe", "readinessProbe")}
    assert probes["livenessProbe"] != probes["readinessProbe"]
    assert container["startupProbe"]["failureThreshold"] * container["startupProbe"]["periodSeconds"] >= 1800


def test_the_coordinator_and_only_it_reaches_vllm(rendered: dict[str, list[dict[str, Any]]]) -> None:
    objects = rendered["prod"]
    coordinator = find(objects, "Deployment", "agno-coordinator")
    assert env_of(coordinator)["LOCAL_MODEL_URL"] == f"http://vllm.sophia.svc.cluster.local:{PORT}/v1"
    callers = [d["metadata"]["name"] for d in objects if d["kind"] == "Deployment" and "LOCAL_MODEL_URL" in env_of(d)]
    assert callers == ["agno-coordinator"]
    egress = find(objects, "NetworkPolicy", "agno-coordinator")["spec"]["egress"]
    assert any(
        peer.get("podSelector", {}).get("matchLabels") == {"app.kubernetes.io/name": "vllm"}
        and rule["ports"] == [{"port": PORT, "protocol": "TCP"}]
        for rule in egress
        for peer in rule["to"]
    )
    ingress = find(objects, "NetworkPolicy", "vllm")["spec"]["ingress"]
    allowed = [
        expr["values"]
        for rule in ingress
        for peer in rule["from"]
        for expr in peer.get("podSelector", {}).get("matchExpressions", [])
    ]
    assert allowed == [["agno-coordinator"]]


def test_the_vllm_model_is_the_coordinators_local_tier() -> None:
    """vLLM serves the model under its Hugging Face id; the coordinator's table asks for it by that name."""
    table = yaml.safe_load(COORDINATOR_TABLE.read_text())["models"]
    [local] = [m for m in table if m["provider"] == "local"]
    assert local["upstream"] == ModelServer().model
    assert local["tier"] == "low" and local["input_usd_per_mtok"] == min(m["input_usd_per_mtok"] for m in table)
    sts = find(render_objects("prod"), "StatefulSet", "vllm")
    args = pod_spec(sts)["containers"][0]["args"]
    assert args[0] == local["upstream"] and f"--served-model-name={local['upstream']}" in args


def test_nothing_else_requests_a_gpu(rendered: dict[str, list[dict[str, Any]]]) -> None:
    assert gpu_requests(rendered["prod"]) == {"vllm": "1"}
    # dev has no pool; locally the pool is simulated and vLLM is off (Pulumi.local.yaml).
    assert gpu_requests(rendered["dev"]) == {} and gpu_requests(rendered["local"]) == {}
    for stack in ("dev", "local"):
        assert not [o for o in rendered[stack] if o["metadata"]["name"] == "vllm"]
        assert "LOCAL_MODEL_URL" not in env_of(find(rendered[stack], "Deployment", "agno-coordinator"))


def test_the_services_quota_holds_vllm_at_its_replicas(rendered: dict[str, list[dict[str, Any]]]) -> None:
    hard = find([o for o in rendered["prod"] if o["metadata"].get("namespace") == "sophia"], "ResourceQuota", "quota")
    assert hard["spec"]["hard"]["requests.nvidia.com/gpu"] == "2"
    dev = find([o for o in rendered["dev"] if o["metadata"].get("namespace") == "sophia"], "ResourceQuota", "quota")
    # vLLM's two pods (4 CPU, 24Gi requested each) on top of the services' numbers.
    cpu = lambda q: int(q["spec"]["hard"]["requests.cpu"].removesuffix("m"))  # noqa: E731
    pods = lambda q: int(q["spec"]["hard"]["pods"])  # noqa: E731
    assert cpu(hard) - cpu(dev) == 2 * 4000 and pods(hard) - pods(dev) == 2


def test_a_pool_without_an_image_digest_is_refused_naming_the_key() -> None:
    config = offline_config("prod")
    del config["sophia:model_server"]
    with pytest.raises(ConfigError) as err:
        run_program("prod", config)
    assert "sophia:model_server.image: GPU pool gh200 runs vLLM's OpenAI-compatible server" in str(err.value)
    assert "linux/arm64" in str(err.value)
    config["sophia:model_server"] = {"image": "vllm/vllm-openai:v0.11.0"}
    with pytest.raises(ConfigError, match=r"sophia:model_server.image: 'vllm/vllm-openai:v0.11.0' is not an image "):
        run_program("prod", config)
    config["sophia:model_server"] = {"enabled": False}
    run_program("prod", config)  # no model server, no image needed


def test_an_unknown_pool_for_the_model_server_is_refused() -> None:
    config = offline_config("prod")
    config["sophia:model_server"] = {**config["sophia:model_server"], "pool": "h100"}
    with pytest.raises(ConfigError, match=r"sophia:model_server.pool: no GPU pool 'h100' with nodes"):
        run_program("prod", config)


def test_gpu_workloads_beyond_the_pools_are_refused(services_copy: Path) -> None:
    """The model server holds every GPU of its pool; a GPU service at its maximum plus surge
    needs more, so the stack is refused until the pool grows or the server is off."""
    add_service(services_copy, "trainer", "gpu: {count: 1}\nscaling: {min_replicas: 2, max_replicas: 2}\n")
    config = offline_config("prod", services_copy)
    with pytest.raises(ConfigError) as err:
        run_program("prod", config, services_copy)
    assert (
        "sophia:gpu_pools: the GPU workloads need 5 GPUs at once (trainer 3 x 1; model server 2 x 1: pods at "
        "max_replicas plus rolling-update surge, times GPUs each) but the pools have 2"
    ) in str(err.value)
    # A second pool for the trainer's three pods at peak: it fits.
    config["sophia:gpu_pools"] = [*config["sophia:gpu_pools"], {"name": "train", "node_count": 3}]
    objects = kubernetes_objects(run_program("prod", config, services_copy))
    assert gpu_requests(objects) == {"trainer": "1", "vllm": "1"}
    assert find(objects, "StatefulSet", "vllm")["spec"]["replicas"] == 2
    quota = find([o for o in objects if o["metadata"].get("namespace") == "sophia"], "ResourceQuota", "quota")
    assert quota["spec"]["hard"]["requests.nvidia.com/gpu"] == "5"
