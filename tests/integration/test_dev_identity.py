"""`make dev` runs the services with authentication on: scripts/dev_identity.py (run as make dev
runs it) gives a key that opens mcp-context, and tokens that let exactly the manifests' callers
in, each only at the callee it was issued for; the key survives a restart of make dev."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from mcp_context.main import Settings as ContextSettings
from mcp_context.main import build_app as build_context
from sophia_testing.servers import serve

REPO = Path(__file__).resolve().parents[2]


def start_identity(state: Path) -> tuple[subprocess.Popen[str], dict[str, str]]:
    process = subprocess.Popen(
        [sys.executable, "scripts/dev_identity.py", "--state", str(state), "--secrets-dir", str(state / "secrets")],
        cwd=REPO,
        stdout=subprocess.PIPE,
        text=True,
    )
    env: dict[str, str] = {}
    for line in process.stdout:  # type: ignore[union-attr]
        if line.strip() == "ready":
            return process, env
        name, _, value = line.strip().partition("=")
        env[name] = value
    raise AssertionError(f"dev_identity exited with {process.wait()} before it was ready")


@pytest.fixture(scope="module")
def dev(tmp_path_factory) -> Iterator[tuple[Path, dict[str, str]]]:
    state = tmp_path_factory.mktemp("dev-state")
    process, env = start_identity(state)
    try:
        yield state, env
    finally:
        process.terminate()
        process.wait(10)


@pytest.fixture(scope="module")
def context_url(dev) -> Iterator[str]:
    state, env = dev
    settings = ContextSettings(
        embedding_provider="local",
        qdrant_collection="dev-identity",
        auth_mode="required",
        api_keys=(state / "secrets" / "API_KEYS").read_text(),
        service_token_issuer=env["SERVICE_TOKEN_ISSUER"],
        service_token_jwks_url=env["SERVICE_TOKEN_JWKS_URL"],
        service_token_namespace=env["SERVICE_TOKEN_NAMESPACE"],
        allowed_callers=env["ALLOWED_CALLERS_MCP_CONTEXT"],
    )
    with serve(build_context(settings)) as url:
        yield url


def test_the_printed_key_opens_the_service_and_nothing_else_does(dev, context_url) -> None:
    _, env = dev
    memory = {"text": "Acme renews in May"}
    assert httpx.post(f"{context_url}/memories", json=memory).status_code == 401
    forged = {"Authorization": f"Bearer {env['SOPHIA_API_KEY'][:-2]}xx"}
    assert httpx.post(f"{context_url}/memories", json=memory, headers=forged).status_code == 401
    created = httpx.post(
        f"{context_url}/memories", json=memory, headers={"Authorization": f"Bearer {env['SOPHIA_API_KEY']}"}
    )
    assert created.status_code == 201, created.text


def test_callers_get_in_with_their_token_for_this_callee_only(dev, context_url) -> None:
    state, env = dev
    assert set(env["ALLOWED_CALLERS_MCP_CONTEXT"].split(",")) >= {"mcp-agents", "mcp-github"}

    def search(token_file: Path) -> httpx.Response:
        headers = {"Authorization": f"Bearer {token_file.read_text()}", "X-Sophia-Tenant": "local"}
        return httpx.post(f"{context_url}/memories/search", json={"query": "Acme"}, headers=headers)

    tokens = state / "dev-tokens"
    assert search(tokens / "mcp-github" / "mcp-context").status_code == 200
    refused = search(tokens / "mcp-agents" / "agno-coordinator")  # issued for another callee
    assert (refused.status_code, refused.json()["reason"]) == (401, "wrong_audience")
    assert not (tokens / "mcp-context").exists() or not any((tokens / "mcp-context").iterdir())  # calls nobody


def test_the_key_is_kept_across_restarts(dev) -> None:
    state, env = dev
    again, env_again = start_identity(state)
    again.terminate()
    again.wait(10)
    assert env_again["SOPHIA_API_KEY"] == env["SOPHIA_API_KEY"]
