"""Releasing, at the render level: feature flags as a ConfigMap the pods read without rolling,
canary tracks with weighted and pinned routes, and each service's own version."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from components.ingress import TRACE_CONTEXT_HEADERS
from components.workload import CHECKSUM_ANNOTATION as CHECKSUM
from infra.config import ConfigError
from infra.render import DYNAMIC_RESOURCE, kubernetes_objects, offline_config, run_program, stack_file_config
from tests.program.conftest import find, render_objects

DEDUPE = "memory-search-dedupe"
FLAGS = "feature-flags"
STRIP_TRACE_CONTEXT = {
    "type": "RequestHeaderModifier",
    "requestHeaderModifier": {"remove": list(TRACE_CONTEXT_HEADERS)},
}


def by_identity(objects: list[dict[str, Any]]) -> dict[tuple[str, str], dict[str, Any]]:
    return {(o["kind"], o["metadata"].get("namespace", "") + "/" + o["metadata"]["name"]): o for o in objects}


def changed(before: list[dict[str, Any]], after: list[dict[str, Any]]) -> set[tuple[str, str]]:
    old, new = by_identity(before), by_identity(after)
    return {key for key in old.keys() | new.keys() if old.get(key) != new.get(key)}


# ---------------------------------------------------------------- feature flags


def test_flags_are_a_configmap_every_service_mounts_as_a_directory() -> None:
    flags = {DEDUPE: {"percentage": 10, "tenants": ["acme"]}}
    objects = render_objects("local", {"flags": flags})
    document = json.loads(find(objects, "ConfigMap", "feature-flags")["data"]["flags.json"])
    assert document == {"flags": {DEDUPE: {"default": False, "percentage": 10.0, "tenants": ["acme"], "users": []}}}
    for deployment in [o for o in objects if o["kind"] == "Deployment" and o["metadata"]["namespace"] == "sophia"]:
        pod = deployment["spec"]["template"]["spec"]
        [volume] = [v for v in pod["volumes"] if v["name"] == "flags"]
        assert volume["configMap"]["name"] == "feature-flags"
        [container] = pod["containers"]
        [mount] = [m for m in container["volumeMounts"] if m["name"] == "flags"]
        # Not a subPath: the kubelet only updates a ConfigMap mounted as a whole directory.
        assert "subPath" not in mount and mount["mountPath"] == "/etc/sophia/flags"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["FLAGS_FILE"] == "/etc/sophia/flags/flags.json"


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_configmaps_are_updated_in_place_by_the_one_kubernetes_provider(stack: str) -> None:
    """The provider replaces a changed ConfigMap by default; with a fixed name it deletes it first,
    and every Deployment depending on it with it (seen in make e2e for the flags). The stack's one
    provider updates them in place (a second provider for the flags cost a plugin process and an
    OpenAPI fetch on every up), unless one is marked immutable, which none is."""
    resources = run_program(stack, offline_config(stack))
    [provider] = [r for r in resources if r.type == "pulumi:providers:kubernetes"]
    assert provider.inputs.get("enableConfigMapMutable") in (True, "true"), provider.inputs
    # A provider reference is `<provider URN>::<id>`; the URN ends with the provider's name.
    kubernetes = [r for r in resources if r.custom and r.type.startswith("kubernetes:")]
    assert kubernetes and all(f"::{provider.name}::" in r.provider for r in kubernetes)
    config_maps = [r for r in resources if r.type == "kubernetes:core/v1:ConfigMap"]
    assert "feature-flags" in {r.name for r in config_maps}
    assert [r.name for r in config_maps if r.inputs.get("immutable")] == []


def pod_templates(obj: dict[str, Any]) -> list[dict[str, Any]]:
    spec = obj.get("spec") or {}
    if obj["kind"] in ("Deployment", "StatefulSet", "DaemonSet", "Job"):
        return [spec["template"]]
    if obj["kind"] == "CronJob":
        return [spec["jobTemplate"]["spec"]["template"]]
    return []


def mounted_config_maps(pod: dict[str, Any]) -> set[str]:
    names = set()
    for volume in pod.get("volumes") or []:
        sources = [volume, *((volume.get("projected") or {}).get("sources") or [])]
        names |= {source["configMap"]["name"] for source in sources if "configMap" in source}
    for container in (pod.get("containers") or []) + (pod.get("initContainers") or []):
        names |= {e["configMapRef"]["name"] for e in container.get("envFrom") or [] if "configMapRef" in e}
        refs = [(e.get("valueFrom") or {}).get("configMapKeyRef") for e in container.get("env") or []]
        names |= {ref["name"] for ref in refs if ref}
    return names


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_a_configmap_changed_in_place_rolls_the_pods_that_read_it(rendered, stack: str) -> None:
    """Updated in place, a ConfigMap reaches running pods only when they restart (or, mounted as a
    directory, after the kubelet's sync): every workload reading one of the program's ConfigMaps
    carries its content's checksum, so a change rolls it. The flags are the exception on purpose:
    the services re-read them, nothing rolls."""
    objects = rendered[stack]
    own = {o["metadata"]["name"] for o in objects if o["kind"] == "ConfigMap"} - {FLAGS}
    readers = [
        (obj["metadata"]["name"], template)
        for obj in objects
        for template in pod_templates(obj)
        if mounted_config_maps(template["spec"]) & own
    ]
    assert readers
    unrolled = [name for name, t in readers if CHECKSUM not in ((t.get("metadata") or {}).get("annotations") or {})]
    assert unrolled == []


def test_a_changed_configmap_changes_its_readers_checksum() -> None:
    before = render_objects("local")
    tracing = stack_file_config("local")["sophia:tracing"]
    after = render_objects("local", {"tracing": {**tracing, "retention_hours": 2 * tracing["retention_hours"]}})
    assert changed(before, after) == {
        ("ConfigMap", "sophia-observability/jaeger-config"),
        ("Deployment", "sophia-observability/jaeger"),
    }
    annotations = [
        find(o, "Deployment", "jaeger")["spec"]["template"]["metadata"]["annotations"] for o in (before, after)
    ]
    assert annotations[0][CHECKSUM] != annotations[1][CHECKSUM]


def test_flipping_a_flag_changes_the_configmap_and_rolls_nothing() -> None:
    off = render_objects("local", {"flags": {DEDUPE: {"default": False}}})
    on = render_objects("local", {"flags": {DEDUPE: {"default": True, "percentage": 50}}})
    assert changed(off, on) == {("ConfigMap", "sophia/feature-flags")}


@pytest.mark.parametrize(
    ("flags", "message"),
    [
        (
            {"memory-serch-dedupe": {}},
            r"sophia:flags\.memory-serch-dedupe: no service reads this flag .*memory-search-dedupe",
        ),
        ({DEDUPE: {"percentage": 150}}, r"sophia:flags\.memory-search-dedupe\.percentage: .*less than or equal to 100"),
        ({DEDUPE: {"precentage": 5}}, r"sophia:flags\.memory-search-dedupe\.precentage: unknown key"),
        ({"Bad_Key": {}}, r"sophia:flags: .*flag key 'Bad_Key' is not valid"),
    ],
)
def test_a_bad_flag_is_refused_naming_the_field(flags: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_objects("local", {"flags": flags})


# ---------------------------------------------------------------- canary and A/B

CANARY = {"weight": 10, "image": "registry.example.com/sophia/mcp-github@sha256:" + "b" * 64, "version": "0.2.0"}


def github_with(canary: dict[str, Any] | None) -> dict[str, Any]:
    override: dict[str, Any] = {"min_replicas": 2, "max_replicas": 4}
    return {"services": {"mcp-github": {**override, **({"canary": canary} if canary else {})}}}


def test_a_canary_is_a_second_track_with_its_own_scaling_and_a_weighted_route() -> None:
    objects = render_objects("dev", github_with(CANARY))
    stable, canary = find(objects, "Deployment", "mcp-github"), find(objects, "Deployment", "mcp-github-canary")
    assert stable["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "mcp-github",
        "sophia.ai/track": "stable",
    }
    assert canary["spec"]["selector"]["matchLabels"] == {
        "app.kubernetes.io/name": "mcp-github",
        "sophia.ai/track": "canary",
    }
    pod = canary["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"
    assert pod["spec"]["containers"][0]["image"] == CANARY["image"]
    env = {e["name"]: e.get("value") for e in pod["spec"]["containers"][0]["env"]}
    assert (env["SERVICE_TRACK"], env["SERVICE_VERSION"]) == ("canary", "0.2.0")
    # The same identity and policy: one ServiceAccount, one NetworkPolicy selecting both tracks.
    assert pod["spec"]["serviceAccountName"] == stable["spec"]["template"]["spec"]["serviceAccountName"]
    policy = find(objects, "NetworkPolicy", "mcp-github")
    assert policy["spec"]["podSelector"]["matchLabels"] == {"app.kubernetes.io/name": "mcp-github"}
    # Per track: Service, HPA (its own bounds), PDB.
    for track, name in (("stable", "mcp-github"), ("canary", "mcp-github-canary")):
        assert find(objects, "Service", name)["spec"]["selector"]["sophia.ai/track"] == track
        assert find(objects, "PodDisruptionBudget", name)["spec"]["selector"]["matchLabels"]["sophia.ai/track"] == track
        assert find(objects, "HorizontalPodAutoscaler", name)["spec"]["scaleTargetRef"]["name"] == name
    assert find(objects, "HorizontalPodAutoscaler", "mcp-github-canary")["spec"]["minReplicas"] == 1
    assert find(objects, "HorizontalPodAutoscaler", "mcp-github-canary")["spec"]["maxReplicas"] == 4

    rules = find(objects, "HTTPRoute", "mcp-github-github")["spec"]["rules"]
    weighted = rules[-1]
    assert [(b["name"], b["weight"]) for b in weighted["backendRefs"]] == [
        ("mcp-github", 90),
        ("mcp-github-canary", 10),
    ]
    pinned = {rule["backendRefs"][0]["name"]: rule["matches"] for rule in rules[:-1]}
    assert set(pinned) == {"mcp-github", "mcp-github-canary"}
    header, cookie = pinned["mcp-github-canary"]
    assert header["headers"] == [{"type": "Exact", "name": "X-Sophia-Track", "value": "canary"}]
    assert cookie["headers"][0]["name"] == "Cookie"
    pattern = re.compile(cookie["headers"][0]["value"])
    assert pattern.search("a=1; sophia-track=canary") and not pattern.search("sophia-track=canary-not")


def test_the_canary_counts_in_the_services_quota() -> None:
    without = render_objects("dev", github_with(None))
    with_canary = render_objects("dev", github_with(CANARY))

    def quota(objects: list[dict[str, Any]]) -> str:
        [q] = [o for o in objects if o["kind"] == "ResourceQuota" and o["metadata"]["namespace"] == "sophia"]
        return q["spec"]["hard"]["pods"]

    # The canary's HPA maximum (4) plus a rollout's surge (1).
    assert int(quota(with_canary)) == int(quota(without)) + 5


def test_rolling_back_or_promoting_a_canary_is_a_config_change() -> None:
    # Roll back: the canary's share to 0, then away; the stable track is untouched throughout.
    base = render_objects("dev", github_with(None))
    zero = render_objects("dev", github_with({**CANARY, "weight": 0}))
    weighted = find(zero, "HTTPRoute", "mcp-github-github")["spec"]["rules"][-1]["backendRefs"]
    assert [b["weight"] for b in weighted] == [100, 0]
    assert not {k for k in changed(base, zero) if k[1].endswith("/mcp-github")} - {
        ("HTTPRoute", "sophia-ingress/mcp-github-github")
    }
    route = find(base, "HTTPRoute", "mcp-github-github")["spec"]["rules"]
    assert route == [
        {
            "matches": [{"path": {"type": "PathPrefix", "value": "/github"}}],
            "backendRefs": [{"name": "mcp-github", "namespace": "sophia", "port": 80}],
            "filters": [STRIP_TRACE_CONTEXT],
        }
    ]
    assert not [o for o in base if o["metadata"]["name"] == "mcp-github-canary"]
    # Promote: the stable track takes the canary's image and version; no canary left.
    promoted = render_objects(
        "dev",
        {"services": {"mcp-github": {"min_replicas": 2, "image": CANARY["image"], "version": CANARY["version"]}}},
    )
    pod = find(promoted, "Deployment", "mcp-github")["spec"]["template"]
    assert pod["spec"]["containers"][0]["image"] == CANARY["image"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"


@pytest.mark.parametrize(
    ("stack", "services", "message"),
    [
        ("dev", {"mcp-github": {"canary": {"weight": 110}}}, r"sophia:services\.mcp-github\.canary\.weight: .*100"),
        (
            "dev",
            {"mcp-github": {"canary": {"weight": 10, "image": "x/y:1"}}},
            r"sophia:services\.mcp-github\.canary: canary\.version: a canary running a given image names its version",
        ),
        (
            "dev",
            {"mcp-github": {"canary": {"weight": 10, "version": "one"}}},
            r"canary\.version: 'one' is not a semantic version",
        ),
        (
            "local",
            {"mcp-context": {"canary": {"weight": 10}}},
            r"sophia:services\.mcp-context\.canary: mcp-context embeds Qdrant",
        ),
    ],
)
def test_a_bad_canary_is_refused_naming_the_field(stack: str, services: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError, match=message):
        render_objects(stack, {"services": services})


# ---------------------------------------------------------------- versions


def set_version(services_dir: Path, service: str, version: str) -> None:
    path = services_dir / service / "pyproject.toml"
    path.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{version}"', path.read_text()))


def render_local(services_dir: Path) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """The local stack's objects, and its image builds (tag, content hash) by resource name."""
    resources = run_program("local", offline_config("local", services_dir), services_dir)
    builds = [
        {"name": r.name, "tag": r.inputs["tag"], "content_hash": r.inputs["content_hash"]}
        for r in resources
        if r.type == DYNAMIC_RESOURCE and "content_hash" in r.inputs
    ]
    return kubernetes_objects(resources), builds


def test_each_image_is_tagged_with_its_services_version_and_deployed_by_digest() -> None:
    objects = render_objects("dev")
    pod = find(objects, "Deployment", "mcp-github")["spec"]["template"]
    assert re.fullmatch(
        r"registry\.example\.com/sophia/mcp-github@sha256:[0-9a-f]{64}", pod["spec"]["containers"][0]["image"]
    )
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "0.1.0"


def test_a_version_bump_rebuilds_and_rolls_only_that_service(services_copy: Path) -> None:
    before, builds_before = render_local(services_copy)
    set_version(services_copy, "mcp-hubspot", "0.2.0")
    after, builds_after = render_local(services_copy)
    # The image: a new build of mcp-hubspot only, tagged with its new version.
    old, new = ({b["name"]: b for b in builds} for builds in (builds_before, builds_after))
    assert old.keys() == new.keys()
    differ = [(old[name], new[name]) for name in sorted(old) if old[name] != new[name]]
    assert [(b["name"], b["tag"], a["tag"]) for b, a in differ] == [("mcp-hubspot-image", "0.1.0", "0.2.0")]
    assert differ[0][0]["content_hash"] != differ[0][1]["content_hash"]
    # The objects: only mcp-hubspot's own, and its Deployment's pod template (a rollout).
    touched = changed(before, after)
    assert touched and all(name.split("/")[1] == "mcp-hubspot" for _, name in touched), touched
    assert ("Deployment", "sophia/mcp-hubspot") in touched
    pod = find(after, "Deployment", "mcp-hubspot")["spec"]["template"]
    assert pod["metadata"]["labels"]["app.kubernetes.io/version"] == "0.2.0"


def test_a_version_lives_in_the_package_only(services_copy: Path) -> None:
    from infra.discovery import ManifestError, discover

    manifest = services_copy / "mcp-hubspot" / "service.yaml"
    manifest.write_text(manifest.read_text() + "version: 9.9.9\n")
    with pytest.raises(ManifestError, match=r"services/mcp-hubspot/service.yaml: version: .*pyproject.toml"):
        discover(services_copy)
    manifest.write_text(manifest.read_text().replace("version: 9.9.9\n", ""))
    set_version(services_copy, "mcp-hubspot", "1.0")
    with pytest.raises(
        ManifestError,
        match=r"services/mcp-hubspot/pyproject.toml: \[project\]: version: '1.0' is not a semantic version",
    ):
        discover(services_copy)
