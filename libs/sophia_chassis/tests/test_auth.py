"""Authentication on the chassis: API keys, OIDC tokens and service tokens against a real
issuer (real RSA/EC keys, JWKS over HTTP on loopback), each failure's problem, scopes,
rate limits, and the audit stream (a real server process: its stdout is what Loki gets)."""

from __future__ import annotations

import base64
import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import jwt
import pytest
from fastapi import Depends

from sophia_chassis import ServiceSettings, create_app
from sophia_chassis.auth import Identity, ServiceCredentials, issue_key, require
from sophia_testing.oidc_issuer import Issuer, running_issuer
from sophia_testing.servers import free_port, serve

PROBLEM = "application/problem+json"


@pytest.fixture(scope="module")
def oidc() -> Iterator[Issuer]:
    with running_issuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def cluster() -> Iterator[Issuer]:
    with running_issuer() as issuer:
        yield issuer


@pytest.fixture(scope="module")
def keys() -> dict[str, tuple[str, dict]]:
    return {
        "reader": issue_key("acme", ["things:read"]),
        "writer": issue_key("acme", ["things:read", "things:write"]),
        "revoked": issue_key("acme", ["things:read"]),
        "other": issue_key("globex", ["things:read", "things:write"]),
    }


def key_table(keys) -> str:
    entries = [dict(entry) for _, entry in keys.values()]
    entries[2]["revoked"] = True
    return json.dumps(entries)


def settings_for(oidc: Issuer, cluster: Issuer, keys, **overrides) -> ServiceSettings:
    values = dict(
        auth_mode="required",
        service_name="test-service",
        api_keys=key_table(keys),
        oidc_issuer=oidc.url,
        oidc_jwks_url=oidc.jwks_url,
        service_token_issuer=cluster.url,
        service_token_jwks_url=cluster.jwks_url,
        service_token_namespace="sophia",
        allowed_callers="mcp-agents,agno-teams",
    )
    return ServiceSettings(**(values | overrides))


def build(settings: ServiceSettings):
    app = create_app(settings)

    @app.get("/things")
    async def things(who: Identity = Depends(require("things:read"))) -> dict:
        return {"subject": who.subject, "tenant": who.tenant, "kind": who.kind}

    @app.post("/things", status_code=201)
    async def make(who: Identity = Depends(require("things:write"))) -> dict:
        return {"tenant": who.tenant}

    return app


@pytest.fixture(scope="module")
def url(oidc, cluster, keys) -> Iterator[str]:
    with serve(build(settings_for(oidc, cluster, keys))) as base:
        yield base


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def bearer(credential: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {credential}"}


def assert_problem(response: httpx.Response, status: int, reason: str) -> None:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == PROBLEM
    body = response.json()
    assert body["status"] == status and body["reason"] == reason and body["detail"]
    if status == 401:
        assert response.headers["www-authenticate"].startswith("Bearer")


def test_health_readiness_and_metrics_stay_open(url):
    for path in ("/healthz", "/readyz", "/metrics"):
        assert httpx.get(url + path).status_code == 200


@pytest.mark.parametrize(
    "header, reason",
    [
        (None, "missing"),
        ("Basic dXNlcjpwYXNz", "malformed"),
        ("Bearer", "malformed"),
        ("Bearer not-a-jwt-nor-a-key", "malformed"),
        ("Bearer sk_nounderscore", "invalid_key"),
        ("Bearer sk_unknownid_secret", "invalid_key"),
    ],
)
def test_missing_or_malformed_credentials_are_401(url, header, reason):
    headers = {"Authorization": header} if header else {}
    assert_problem(httpx.get(f"{url}/things", headers=headers), 401, reason)
    assert_problem(httpx.get(f"{url}/no/such/route", headers=headers), 401, reason)  # even a 404 needs an identity


def test_api_key_gives_its_tenant_and_scopes(url, keys):
    key, entry = keys["reader"]
    answer = httpx.get(f"{url}/things", headers=bearer(key))
    assert answer.json() == {"subject": entry["id"], "tenant": "acme", "kind": "api_key"}
    assert_problem(httpx.post(f"{url}/things", headers=bearer(key)), 403, "missing_scope")
    assert httpx.post(f"{url}/things", headers=bearer(keys["writer"][0])).json() == {"tenant": "acme"}


def test_wrong_secret_for_a_known_key_id_and_revoked_key_are_401(url, keys):
    key, _ = keys["reader"]
    assert_problem(httpx.get(f"{url}/things", headers=bearer(key[:-4] + "AAAA")), 401, "invalid_key")
    assert_problem(httpx.get(f"{url}/things", headers=bearer(keys["revoked"][0])), 401, "revoked_key")


def test_key_table_holds_only_hashes(keys):
    key, entry = keys["reader"]
    assert key not in json.dumps(entry) and key.split("_", 2)[2] not in json.dumps(entry)


def test_oidc_token_valid_and_each_failure(url, oidc):
    good = oidc.token(aud="test-service", tenant="acme", scope="things:read things:write")
    answer = httpx.get(f"{url}/things", headers=bearer(good))
    assert answer.json() == {"subject": "user-1", "tenant": "acme", "kind": "oidc"}
    assert httpx.post(f"{url}/things", headers=bearer(good)).status_code == 201

    cases = {
        "expired": oidc.token(tenant="acme", scope="things:read", expires_in=-120),
        "wrong_audience": oidc.token(aud="another-service", tenant="acme", scope="things:read"),
        "unknown_issuer": oidc.token(iss="https://evil.example", tenant="acme", scope="things:read"),
        "unknown_key": oidc.token(tenant="acme", scope="things:read", kid="not-published"),
    }
    for reason, token in cases.items():
        assert_problem(httpx.get(f"{url}/things", headers=bearer(token)), 401, reason)
    forged = Issuer()  # its own keys, claiming the real issuer's kid
    forged_token = forged.token(iss=oidc.url, kid=oidc.keys[0].kid, tenant="acme", scope="things:read")
    assert_problem(httpx.get(f"{url}/things", headers=bearer(forged_token)), 401, "invalid_token")
    head, _, signature = good.split(".")
    claims = jwt.decode(good, options={"verify_signature": False}) | {"tenant": "globex"}
    tampered = f"{head}.{b64(json.dumps(claims).encode())}.{signature}"  # another tenant, the old signature
    assert_problem(httpx.get(f"{url}/things", headers=bearer(tampered)), 401, "invalid_token")
    no_tenant = oidc.token(scope="things:read")
    assert_problem(httpx.get(f"{url}/things", headers=bearer(no_tenant)), 403, "no_tenant")
    read_only = oidc.token(tenant="acme", scope="things:read")
    assert_problem(httpx.post(f"{url}/things", headers=bearer(read_only)), 403, "missing_scope")
    payload = oidc.token(tenant="acme", scope="things:read").split(".")[1]
    none_alg = b64(json.dumps({"alg": "none", "kid": oidc.keys[0].kid}).encode()) + f".{payload}."
    assert_problem(httpx.get(f"{url}/things", headers=bearer(none_alg)), 401, "malformed")


def test_oidc_key_rotation_is_picked_up_and_ec_keys_work(oidc, cluster, keys):
    settings = settings_for(oidc, cluster, keys, jwks_min_refresh_seconds=1.5)
    with serve(build(settings)) as base:
        first = oidc.token(tenant="acme", scope="things:read")
        assert httpx.get(f"{base}/things", headers=bearer(first)).status_code == 200
        new = oidc.rotate("ES256")  # published after the service cached the JWKS
        fetched, started = oidc.jwks_requests, time.monotonic()
        unknown = oidc.token(tenant="acme", scope="things:read", kid="nobody")
        for _ in range(10):  # unknown key ids do not make the service hammer the issuer
            assert_problem(httpx.get(f"{base}/things", headers=bearer(unknown)), 401, "unknown_key")
        assert oidc.jwks_requests - fetched <= 1 + (time.monotonic() - started) / 1.5
        time.sleep(1.6)
        rotated = oidc.token(key=new, tenant="acme", scope="things:read")
        assert httpx.get(f"{base}/things", headers=bearer(rotated)).status_code == 200


def test_service_token_of_an_allowed_caller_acts_for_the_named_tenant(url, cluster):
    token = cluster.service_token("mcp-agents", audience="test-service")
    answer = httpx.get(f"{url}/things", headers={**bearer(token), "X-Sophia-Tenant": "acme"})
    assert answer.json() == {"subject": "mcp-agents", "tenant": "acme", "kind": "service"}
    # The tenant header means nothing from anyone else.
    denied = {
        "caller_not_allowed": (cluster.service_token("mcp-hubspot", audience="test-service"), "acme"),
        "no_tenant": (token, None),
    }
    for reason, (credential, tenant) in denied.items():
        headers = {**bearer(credential), **({"X-Sophia-Tenant": tenant} if tenant else {})}
        assert_problem(httpx.get(f"{url}/things", headers=headers), 403, reason)
    other_ns = cluster.service_token("mcp-agents", audience="test-service", namespace="elsewhere")
    assert_problem(
        httpx.get(f"{url}/things", headers={**bearer(other_ns), "X-Sophia-Tenant": "a"}), 403, "caller_not_allowed"
    )
    for_another = cluster.service_token("mcp-agents", audience="mcp-context")
    assert_problem(
        httpx.get(f"{url}/things", headers={**bearer(for_another), "X-Sophia-Tenant": "a"}), 401, "wrong_audience"
    )


def test_the_cluster_jwks_is_fetched_with_the_mounted_token_and_refused_without(oidc, keys, tmp_path):
    # The API server serves its keys to ServiceAccounts only; the kubelet rotates the token file.
    with running_issuer(jwks_bearer="api-server-token") as api_server:
        token_file = tmp_path / "token"
        token_file.write_text("stale-token\n")
        settings = settings_for(oidc, api_server, keys, service_token_jwks_token_file=str(token_file))
        call = api_server.service_token("mcp-agents", "test-service")
        headers = {**bearer(call), "X-Sophia-Tenant": "acme"}
        with serve(build(settings)) as base:
            assert_problem(httpx.get(f"{base}/things", headers=headers), 503, "jwks_unavailable")
            token_file.write_text("api-server-token\n")  # rotated: read again on the next fetch
            assert httpx.get(f"{base}/things", headers=headers).json()["kind"] == "service"


def test_service_credentials_read_the_projected_token_file(tmp_path):
    (tmp_path / "mcp-context").write_text("the-token\n")
    headers = ServiceCredentials(str(tmp_path)).headers("mcp-context", "acme")
    assert headers == {"X-Sophia-Tenant": "acme", "Authorization": "Bearer the-token"}
    assert ServiceCredentials(str(tmp_path)).headers("agno-coordinator", "acme") == {"X-Sophia-Tenant": "acme"}


def test_rate_limit_per_key_answers_429_with_retry_after(oidc, cluster, keys):
    settings = settings_for(oidc, cluster, keys, rate_limit_per_minute=6, rate_limit_burst=3)
    with serve(build(settings)) as base:
        key, other = keys["reader"][0], keys["other"][0]
        answers = [httpx.get(f"{base}/things", headers=bearer(key)).status_code for _ in range(4)]
        assert answers == [200, 200, 200, 429]
        limited = httpx.get(f"{base}/things", headers=bearer(key))
        assert limited.headers["content-type"] == PROBLEM and int(limited.headers["retry-after"]) >= 1
        assert httpx.get(f"{base}/things", headers=bearer(other)).status_code == 200  # another key, its own bucket


# --- audit, through a real server process -------------------------------------------------------

AUDIT_APP = """
import json, os
from fastapi import Depends
from sophia_chassis import ServiceSettings, create_app
from sophia_chassis.auth import require

def build_app():
    app = create_app(ServiceSettings.load(service_name="test-service"))

    @app.get("/things")
    async def things(who=Depends(require("things:read"))):
        return {"tenant": who.tenant}

    @app.post("/things", status_code=201)
    async def make(who=Depends(require("things:write"))):
        return {"tenant": who.tenant}

    return app
"""


def test_audit_events_for_writes_and_denials_and_no_secret_in_any_log(oidc, cluster, keys, tmp_path):
    (tmp_path / "audit_app.py").write_text(AUDIT_APP)
    secrets_dir = tmp_path / "secrets"
    secrets_dir.mkdir()
    (secrets_dir / "API_KEYS").write_text(key_table(keys))
    port = free_port()
    env = {
        **os.environ,
        "PYTHONPATH": str(tmp_path),
        "SOPHIA_SECRETS_DIR": str(secrets_dir),
        "AUTH_MODE": "required",
        "OIDC_ISSUER": oidc.url,
        "OIDC_JWKS_URL": oidc.jwks_url,
    }
    proc = subprocess.Popen(
        [sys.executable, "-m", "uvicorn", "--factory", "audit_app:build_app", "--port", str(port), "--no-access-log"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                httpx.get(f"{base}/healthz")
                break
            except httpx.TransportError:
                assert proc.poll() is None and time.monotonic() < deadline, "server did not start"
                time.sleep(0.1)
        writer, reader = keys["writer"][0], keys["reader"][0]
        token = oidc.token(tenant="acme", scope="things:read")
        assert httpx.post(f"{base}/things", headers={**bearer(writer), "X-Request-Id": "req-write"}).status_code == 201
        assert httpx.get(f"{base}/things", headers=bearer(reader)).status_code == 200  # a read: no audit event
        assert httpx.get(f"{base}/things", headers=bearer(token)).status_code == 200
        assert httpx.post(f"{base}/things", headers={**bearer(reader), "X-Request-Id": "req-scope"}).status_code == 403
        assert httpx.post(f"{base}/things", headers={**bearer(token)}).status_code == 403
        assert (
            httpx.get(f"{base}/things", headers={**bearer(writer[:-3] + "xyz"), "X-Request-Id": "req-bad"}).status_code
            == 401
        )
    finally:
        proc.terminate()
        output = proc.communicate(timeout=20)[0].decode()
    for secret in (writer, reader, token, writer.split("_", 2)[2], reader.split("_", 2)[2], token.split(".")[2]):
        assert secret not in output
    events = [json.loads(line) for line in output.splitlines() if line.startswith("{")]
    audits = [e for e in events if e.get("stream") == "audit"]
    by_request = {e.get("request_id"): e for e in audits}
    write = by_request["req-write"]
    assert write["outcome"] == "success" and write["action"] == "POST /things" and write["target"] == "POST /things"
    assert write["tenant"] == "acme" and write["kind"] == "api_key" and write["subject"] == keys["writer"][1]["id"]
    scope = by_request["req-scope"]
    assert scope["outcome"] == "denied" and scope["reason"] == "scope" and scope["subject"] == keys["reader"][1]["id"]
    bad = by_request["req-bad"]
    assert bad["outcome"] == "denied" and bad["reason"] == "invalid_key" and bad["subject"] is None
    assert len(audits) == 4  # one write, three denials; reads are not audited
    assert all(e["event"] == "audit" for e in audits)
