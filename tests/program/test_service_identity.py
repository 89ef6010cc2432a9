"""Who may call whom, as deployed: each service gets the chassis' auth settings, a projected
token per callee (audience: the callee), a token and CA to read the cluster's JWKS, egress to
the API server, and the API key table; the local stack's generated key opens the services."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from components.service import CLUSTER_IDENTITY_MOUNT, SERVICE_TOKENS_MOUNT
from infra.discovery import discover
from infra.stack import key_entry
from sophia_chassis.auth import AuthConfig, Authenticator, AuthError, parse_key_table

from .conftest import find

STACKS = ["local", "dev", "prod"]


def callers_by_manifest() -> dict[str, set[str]]:
    specs = discover()
    return {s.name: {c.name for c in specs if s.name in c.calls.services} for s in specs}


def pod_spec(objects: list[dict[str, Any]], name: str) -> dict[str, Any]:
    return find(objects, "Deployment", name)["spec"]["template"]["spec"]


def env_of(pod: dict[str, Any]) -> dict[str, str]:
    return {e["name"]: e.get("value") for e in pod["containers"][0]["env"]}


def volume(pod: dict[str, Any], name: str) -> dict[str, Any] | None:
    return next((v for v in pod.get("volumes", []) if v["name"] == name), None)


@pytest.mark.parametrize("stack", STACKS)
def test_each_service_accepts_exactly_its_manifest_callers(rendered, stack: str) -> None:
    for name, callers in callers_by_manifest().items():
        env = env_of(pod_spec(rendered[stack], name))
        assert env["AUTH_MODE"] == "required"
        assert set(filter(None, env["ALLOWED_CALLERS"].split(","))) == callers, name
        assert env["SERVICE_TOKEN_NAMESPACE"] == "sophia"
        assert env["SERVICE_TOKEN_ISSUER"].startswith("https://")
        assert env["SERVICE_TOKEN_CA_FILE"] == f"{CLUSTER_IDENTITY_MOUNT}/ca.crt"
        assert env["SERVICE_TOKEN_JWKS_TOKEN_FILE"] == f"{CLUSTER_IDENTITY_MOUNT}/token"


@pytest.mark.parametrize("stack", STACKS)
def test_each_service_holds_one_token_per_callee_for_that_callee_only(rendered, stack: str) -> None:
    for spec in discover():
        pod = pod_spec(rendered[stack], spec.name)
        env, tokens = env_of(pod), volume(pod, "service-tokens")
        if not spec.calls.services:
            assert tokens is None and "SERVICE_TOKENS_DIR" not in env
            continue
        assert env["SERVICE_TOKENS_DIR"] == SERVICE_TOKENS_MOUNT
        projected = [s["serviceAccountToken"] for s in tokens["projected"]["sources"]]
        assert {(t["audience"], t["path"]) for t in projected} == {(c, c) for c in spec.calls.services}
        assert all(600 <= t["expirationSeconds"] <= 86400 for t in projected)
        # The API-server token has the API server's audience (none given), never a peer's.
        cluster = volume(pod, "cluster-identity")["projected"]["sources"]
        assert [s["serviceAccountToken"] for s in cluster if "serviceAccountToken" in s] == [
            {"path": "token", "expirationSeconds": projected[0]["expirationSeconds"]}
        ]
        assert {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}} in cluster
        mounts = {m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
        assert {SERVICE_TOKENS_MOUNT, CLUSTER_IDENTITY_MOUNT} <= mounts
        assert pod["automountServiceAccountToken"] is False  # only the projected, audience-bound tokens


@pytest.mark.parametrize("stack", STACKS)
def test_each_service_may_reach_the_api_server_for_the_jwks_and_nothing_more(rendered, stack: str) -> None:
    for spec in discover():
        policy = find(rendered[stack], "NetworkPolicy", spec.name)
        rules = [r for r in policy["spec"]["egress"] if any("ipBlock" in p for p in r.get("to", []))]
        api = [r for r in rules if all("except" not in p["ipBlock"] for p in r["to"])]
        assert len(api) == 1, spec.name
        assert {p["port"] for p in api[0]["ports"]} == {443, 6443}
        assert all(p["ipBlock"]["cidr"] != "0.0.0.0/0" for p in api[0]["to"])


def test_the_local_key_opens_the_services_and_a_forged_one_does_not() -> None:
    # The program's entry format is the one the chassis checks; the entry holds only the key's hash.
    key = "sk_local_" + "k" * 40
    assert key not in json.dumps(key_entry(key))
    auth = Authenticator(AuthConfig(service="mcp-context", api_keys=parse_key_table(json.dumps([key_entry(key)]))))
    who = asyncio.run(auth.identify(f"Bearer {key}", None))
    assert (who.tenant, who.kind, who.allows("context:write")) == ("local", "api_key", True)
    with pytest.raises(AuthError) as refused:
        asyncio.run(auth.identify(f"Bearer {key[:-1]}x", None))
    assert refused.value.status == 401


def test_the_local_keys_rate_limit_comes_from_the_stack() -> None:
    """sophia:auth.local_key_rate_per_minute reaches the key table the chassis reads; unset, the
    entry names none and the services' default applies."""
    key = "sk_local_" + "k" * 40
    assert parse_key_table(json.dumps([key_entry(key, 60000)]))["local"].rate_per_minute == 60000
    assert parse_key_table(json.dumps([key_entry(key)]))["local"].rate_per_minute is None
    from infra.config import Auth

    assert Auth().local_key_rate_per_minute is None
    with pytest.raises(ValueError, match="local_key_rate_per_minute"):
        Auth(local_key_rate_per_minute=0)
