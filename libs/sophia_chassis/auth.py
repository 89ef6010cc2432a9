"""Who is calling: every non-health request carries an identity, resolved here once.

Three kinds of credential, all as `Authorization: Bearer <credential>`:

- an API key `sk_<id>_<secret>`: looked up by its id in the key table (secret file
  API_KEYS, a JSON list of {id, tenant, scopes, sha256, revoked}, values from ESC) and
  checked by SHA-256 with a timing-safe comparison; the key itself is never stored;
- an OIDC access token (a JWT) from the configured issuer, for the configured audience,
  signed by a key of the issuer's JWKS (fetched over HTTP, cached); tenant and scopes
  come from its claims;
- a service token: a Kubernetes projected ServiceAccount token whose audience is this
  service, from the cluster's issuer, for a ServiceAccount named in ALLOWED_CALLERS (the
  inverted `calls.services` of the manifests, the same source as the NetworkPolicies).
  A service acts for an end user's tenant, sent in X-Sophia-Tenant, trusted only here.

The tenant always comes from the identity, never from a request body. Routes declare
the scope they need next to themselves (`Depends(require("context:write"))`); MCP tools
call `tool_identity(ctx, scope)`. Every denied request and every write emits one audit
event (sophia_chassis.audit). Failures answer RFC 9457 problems (401, 403, 429).
"""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import secrets
import time
from collections.abc import Iterable
from contextvars import ContextVar
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import jwt
import structlog
from fastapi import FastAPI, Request
from starlette.types import ASGIApp, Receive, Scope, Send

from sophia_chassis.audit import audit
from sophia_chassis.problems import problem

OPEN_PATHS = frozenset({"/healthz", "/readyz", "/metrics"})
IDENTITY_KEY = "sophia.identity"
AUDIT_KEY = "sophia.audit"
TENANT_HEADER = "x-sophia-tenant"
KEY_PREFIX = "sk_"
JWT_ALGORITHMS = ["RS256", "RS384", "RS512", "ES256", "ES384", "PS256"]
SA_PREFIX = "system:serviceaccount:"
ALL = "*"
AUTHENTICATED = ""  # require(AUTHENTICATED): any identity, no particular scope

# The tenant the current request acts for, set from the caller's identity by `require` and
# `tool_identity`: outbound calls to other services name it (ServiceCredentials.headers).
acting_for: ContextVar[str | None] = ContextVar("acting_for", default=None)


@dataclass(frozen=True)
class Identity:
    subject: str  # key id, token subject, or the calling service's name
    tenant: str
    scopes: frozenset[str]
    kind: str  # api_key | oidc | service | none

    def allows(self, scope: str) -> bool:
        return scope == AUTHENTICATED or ALL in self.scopes or scope in self.scopes


class AuthError(Exception):
    """A request that may not go on: 401 (who are you?) or 403 (not allowed)."""

    def __init__(self, status: int, reason: str, detail: str):
        super().__init__(detail)
        self.status, self.reason, self.detail = status, reason, detail


def unauthenticated(reason: str, detail: str) -> AuthError:
    return AuthError(401, reason, detail)


def forbidden(reason: str, detail: str) -> AuthError:
    return AuthError(403, reason, detail)


# --- API keys -----------------------------------------------------------------------------


@dataclass(frozen=True)
class ApiKey:
    id: str
    tenant: str
    scopes: frozenset[str]
    sha256: str
    revoked: bool = False
    rate_per_minute: int | None = None


def key_digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def issue_key(tenant: str, scopes: Iterable[str], key_id: str | None = None) -> tuple[str, dict[str, Any]]:
    """A new key and its table entry (what goes into ESC's API_KEYS; the key goes to the tenant)."""
    key_id = key_id or secrets.token_hex(6)
    if not key_id.isalnum():
        raise ValueError("a key id is letters and digits")
    key = f"{KEY_PREFIX}{key_id}_{secrets.token_urlsafe(32)}"
    entry = {"id": key_id, "tenant": tenant, "scopes": sorted(set(scopes)), "sha256": key_digest(key), "revoked": False}
    return key, entry


def parse_key_table(raw: str | None) -> dict[str, ApiKey]:
    if not raw or not raw.strip():
        return {}
    table = {}
    for entry in json.loads(raw):
        key = ApiKey(
            id=str(entry["id"]),
            tenant=str(entry["tenant"]),
            scopes=frozenset(entry.get("scopes", [])),
            sha256=str(entry["sha256"]).lower(),
            revoked=bool(entry.get("revoked", False)),
            rate_per_minute=entry.get("rate_per_minute"),
        )
        if key.id in table:
            raise ValueError(f"API_KEYS: key id {key.id!r} appears twice")
        table[key.id] = key
    return table


# --- JWKS ----------------------------------------------------------------------------------


class Jwks:
    """An issuer's signing keys, fetched over HTTP and cached; refetched (at most every
    `min_refresh` seconds) when a token names a key id not seen yet, so a rotation is picked up."""

    def __init__(
        self,
        url: str,
        *,
        ttl: float = 300.0,
        min_refresh: float = 30.0,
        verify: str | bool = True,
        token_file: str | None = None,
    ):
        self.url, self.ttl, self.min_refresh, self.verify = url, ttl, min_refresh, verify
        # The API server serves its JWKS to ServiceAccounts only (RBAC: service-account-issuer-discovery):
        # a projected token, read per fetch since the kubelet rotates it.
        self.token_file = Path(token_file) if token_file else None
        self._keys: dict[str, Any] = {}
        self._fetched_at = float("-inf")
        self._lock = asyncio.Lock()

    async def _refresh(self) -> None:
        headers = {"Authorization": f"Bearer {self.token_file.read_text().strip()}"} if self.token_file else {}
        async with httpx.AsyncClient(timeout=5.0, verify=self.verify) as client:
            response = await client.get(self.url, headers=headers)
            response.raise_for_status()
        keyset = jwt.PyJWKSet.from_dict(response.json())
        self._keys = {k.key_id: k for k in keyset.keys if k.key_id}
        self._fetched_at = time.monotonic()

    async def key(self, kid: str | None) -> Any:
        if kid is None:
            raise unauthenticated("malformed", "the token names no signing key (kid)")
        age = time.monotonic() - self._fetched_at
        if kid not in self._keys or age > self.ttl:
            async with self._lock:
                age = time.monotonic() - self._fetched_at
                if (kid not in self._keys and age > self.min_refresh) or age > self.ttl:
                    try:
                        await self._refresh()
                    except (httpx.HTTPError, OSError, ValueError, jwt.PyJWKError) as exc:
                        if not self._keys:
                            raise AuthError(
                                503, "jwks_unavailable", "the token issuer's keys cannot be fetched"
                            ) from exc
        if kid not in self._keys:
            raise unauthenticated("unknown_key", "the token is signed by a key the issuer does not publish")
        return self._keys[kid].key


# --- the authenticator ---------------------------------------------------------------------


@dataclass
class AuthConfig:
    service: str
    api_keys: dict[str, ApiKey] = field(default_factory=dict)
    oidc_issuer: str | None = None
    oidc_audience: str | None = None
    oidc_jwks: Jwks | None = None
    oidc_tenant_claim: str = "tenant"
    service_issuer: str | None = None
    service_jwks: Jwks | None = None
    service_namespace: str | None = None
    allowed_callers: frozenset[str] = frozenset()
    enabled: bool = True
    rate_per_minute: int = 600
    rate_burst: int = 60

    @classmethod
    def from_settings(cls, settings: Any) -> AuthConfig:
        ca = settings.service_token_ca_file or True
        refresh = settings.jwks_min_refresh_seconds
        return cls(
            service=settings.service_name,
            api_keys=parse_key_table(settings.api_keys),
            oidc_issuer=settings.oidc_issuer,
            oidc_audience=settings.oidc_audience or settings.service_name,
            oidc_jwks=Jwks(settings.oidc_jwks_url, min_refresh=refresh) if settings.oidc_jwks_url else None,
            oidc_tenant_claim=settings.oidc_tenant_claim,
            service_issuer=settings.service_token_issuer,
            service_jwks=(
                Jwks(
                    settings.service_token_jwks_url,
                    min_refresh=refresh,
                    verify=ca,
                    token_file=settings.service_token_jwks_token_file,
                )
                if settings.service_token_jwks_url
                else None
            ),
            service_namespace=settings.service_token_namespace,
            allowed_callers=frozenset(c.strip() for c in (settings.allowed_callers or "").split(",") if c.strip()),
            enabled=settings.auth_mode != "off",
            rate_per_minute=settings.rate_limit_per_minute,
            rate_burst=settings.rate_limit_burst,
        )


class Authenticator:
    def __init__(self, config: AuthConfig):
        self.config = config

    async def identify(self, authorization: str | None, tenant_header: str | None) -> Identity:
        if not self.config.enabled:
            return Identity("anonymous", tenant_header or "default", frozenset({ALL}), "none")
        if not authorization:
            raise unauthenticated("missing", "send Authorization: Bearer <API key or token>")
        scheme, _, credential = authorization.partition(" ")
        credential = credential.strip()
        if scheme.lower() != "bearer" or not credential:
            raise unauthenticated("malformed", "the Authorization header must be `Bearer <credential>`")
        if credential.startswith(KEY_PREFIX):
            return self._api_key(credential)
        return await self._token(credential, tenant_header)

    def _api_key(self, credential: str) -> Identity:
        key_id, sep, _ = credential[len(KEY_PREFIX) :].partition("_")
        entry = self.config.api_keys.get(key_id) if sep else None
        # Compare against something even for an unknown id, so both paths cost the same.
        expected = entry.sha256 if entry else "0" * 64
        matches = hmac.compare_digest(key_digest(credential), expected)
        if entry is None or not matches:
            raise unauthenticated("invalid_key", "the API key is not valid")
        if entry.revoked:
            raise unauthenticated("revoked_key", "the API key has been revoked")
        return Identity(entry.id, entry.tenant, entry.scopes, "api_key")

    async def _token(self, credential: str, tenant_header: str | None) -> Identity:
        try:
            header = jwt.get_unverified_header(credential)
            issuer = jwt.decode(credential, options={"verify_signature": False}).get("iss")
        except jwt.PyJWTError:
            raise unauthenticated("malformed", "the bearer credential is neither an API key nor a JWT") from None
        if issuer is not None and issuer == self.config.service_issuer and self.config.service_jwks:
            claims = await self._verify(credential, header, self.config.service_jwks, issuer, self.config.service)
            return self._service(claims, tenant_header)
        if issuer is not None and issuer == self.config.oidc_issuer and self.config.oidc_jwks:
            claims = await self._verify(
                credential, header, self.config.oidc_jwks, issuer, self.config.oidc_audience or self.config.service
            )
            tenant = claims.get(self.config.oidc_tenant_claim)
            if not isinstance(tenant, str) or not tenant:
                raise forbidden("no_tenant", f"the token has no `{self.config.oidc_tenant_claim}` claim")
            return Identity(str(claims["sub"]), tenant, _token_scopes(claims), "oidc")
        raise unauthenticated("unknown_issuer", "the token's issuer is not trusted here")

    async def _verify(self, credential: str, header: dict, jwks: Jwks, issuer: str, audience: str) -> dict[str, Any]:
        if header.get("alg") not in JWT_ALGORITHMS:
            raise unauthenticated("malformed", "the token's signing algorithm is not accepted")
        key = await jwks.key(header.get("kid"))
        try:
            return jwt.decode(
                credential,
                key,
                algorithms=JWT_ALGORITHMS,
                audience=audience,
                issuer=issuer,
                leeway=30,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError:
            raise unauthenticated("expired", "the token has expired") from None
        except jwt.InvalidAudienceError:
            raise unauthenticated("wrong_audience", f"the token is not meant for {audience}") from None
        except jwt.PyJWTError as exc:
            raise unauthenticated("invalid_token", f"the token is not valid ({type(exc).__name__})") from None

    def _service(self, claims: dict[str, Any], tenant_header: str | None) -> Identity:
        subject = str(claims["sub"])
        namespace, _, caller = subject.removeprefix(SA_PREFIX).partition(":")
        if not subject.startswith(SA_PREFIX) or not caller:
            raise forbidden("not_a_service", "the token is not a ServiceAccount's")
        if self.config.service_namespace and namespace != self.config.service_namespace:
            raise forbidden("caller_not_allowed", f"{subject} is outside the platform's namespace")
        if caller not in self.config.allowed_callers:
            raise forbidden("caller_not_allowed", f"{caller} does not call {self.config.service} (manifests' calls)")
        if not tenant_header:
            raise forbidden("no_tenant", "a service call names the tenant it acts for in X-Sophia-Tenant")
        return Identity(caller, tenant_header, frozenset({ALL}), "service")


def _token_scopes(claims: dict[str, Any]) -> frozenset[str]:
    raw = claims.get("scope", claims.get("scp", []))
    return frozenset(raw.split() if isinstance(raw, str) else [str(s) for s in raw])


# --- rate limits ---------------------------------------------------------------------------


class TokenBuckets:
    """Per-key (API keys) or per-tenant (OIDC) token buckets in this replica: `rate` requests a
    minute on average, bursts of `burst`. Service callers are not limited (their users are)."""

    def __init__(self, rate_per_minute: int, burst: int, max_buckets: int = 100_000):
        self.rate, self.burst, self.max_buckets = rate_per_minute / 60.0, burst, max_buckets
        self._buckets: dict[str, tuple[float, float]] = {}

    def take(self, key: str, rate_per_minute: int | None = None) -> float:
        """0 when allowed, else the seconds to wait."""
        rate = (rate_per_minute / 60.0) if rate_per_minute else self.rate
        now = time.monotonic()
        tokens, at = self._buckets.get(key, (float(self.burst), now))
        tokens = min(float(self.burst), tokens + (now - at) * rate)
        if tokens < 1.0:
            self._buckets[key] = (tokens, now)
            return (1.0 - tokens) / rate
        if len(self._buckets) >= self.max_buckets and key not in self._buckets:
            self._buckets.clear()  # bounded memory; a reset only ever lets a burst through
        self._buckets[key] = (tokens - 1.0, now)
        return 0.0


# --- wiring into an app --------------------------------------------------------------------


def denied_response(error: AuthError, identity: Identity | None = None):
    titles = {401: "Unauthorized", 403: "Forbidden", 429: "Too Many Requests", 503: "Service Unavailable"}
    response = problem(error.status, titles.get(error.status, "Error"), error.detail, reason=error.reason)
    if error.status == 401:
        response.headers["WWW-Authenticate"] = 'Bearer realm="sophia"'
    return response


class Authenticate:
    """ASGI middleware: no identity, no entry (except health, readiness and metrics). Audits
    every denied request and, once answered, every request a route marked as a write."""

    def __init__(self, app: ASGIApp, authenticator: Authenticator, buckets: TokenBuckets):
        self.app, self.authenticator, self.buckets = app, authenticator, buckets

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS:
            await self.app(scope, receive, send)
            return
        headers = {k.decode("latin-1").lower(): v.decode("latin-1") for k, v in scope["headers"]}
        target = f"{scope['method']} {scope['path']}"
        try:
            identity = await self.authenticator.identify(headers.get("authorization"), headers.get(TENANT_HEADER))
        except AuthError as error:
            audit("authenticate", target, "denied", reason=error.reason, status=error.status)
            await denied_response(error)(scope, receive, send)
            return
        if identity.kind in ("api_key", "oidc"):
            entry = self.authenticator.config.api_keys.get(identity.subject) if identity.kind == "api_key" else None
            bucket = f"key:{identity.subject}" if identity.kind == "api_key" else f"tenant:{identity.tenant}"
            wait = self.buckets.take(bucket, entry.rate_per_minute if entry else None)
            if wait > 0:
                audit("rate_limit", target, "denied", identity=identity, reason="rate_limited", status=429)
                response = problem(429, "Too Many Requests", "slow down: this key's request rate is exceeded")
                response.headers["Retry-After"] = str(max(1, int(wait + 0.999)))
                await response(scope, receive, send)
                return
        scope[IDENTITY_KEY] = identity
        status = {"code": 500}

        async def send_observed(message) -> None:
            if message["type"] == "http.response.start":
                status["code"] = message["status"]
            await send(message)

        try:
            await self.app(scope, receive, send_observed)
        finally:
            action = scope.get(AUDIT_KEY)
            if action is not None and status["code"] not in (401, 403):  # denials were audited already
                outcome = "success" if status["code"] < 400 else "failure"
                audit(action, target, outcome, identity=identity, status=status["code"])


def identity_of(scope_or_request: Any) -> Identity:
    scope = getattr(scope_or_request, "scope", scope_or_request)
    identity = scope.get(IDENTITY_KEY)
    if identity is None:  # an open path, or the middleware is not installed: never silently anonymous
        raise unauthenticated("missing", "no identity on this request")
    return identity


class require:  # noqa: N801 (reads as a dependency: Depends(require("x:read")))
    """A route's scope, declared next to it. Writes (scopes ending ':write') and model use are audited."""

    def __init__(self, scope: str, *, audited: bool | None = None):
        self.scope = scope
        self.audited = scope.endswith(":write") if audited is None else audited

    async def __call__(self, request: Request) -> Identity:
        identity = identity_of(request)
        route = getattr(request.scope.get("route"), "path", request.url.path)
        if not identity.allows(self.scope):
            audit(
                route, f"{request.method} {request.url.path}", "denied", identity=identity, reason="scope", status=403
            )
            raise forbidden("missing_scope", f"this needs the `{self.scope}` scope")
        if self.audited:
            request.scope[AUDIT_KEY] = f"{request.method} {route}"
        acting_for.set(identity.tenant)
        return identity


def tool_identity(ctx: Any, scope: str, action: str) -> Identity:
    """The identity behind an MCP tool call (the HTTP request that carried it), with `scope` checked.
    Raises ToolError, which the MCP server reports to the client as the tool's error, reason included."""
    from mcp.server.mcpserver.exceptions import ToolError

    request = getattr(getattr(ctx, "request_context", None), "request", None)
    identity = request.scope.get(IDENTITY_KEY) if request is not None else None
    if identity is None:
        raise ToolError("forbidden: no identity on this call")
    if not identity.allows(scope):
        audit(f"mcp:{action}", "POST /mcp", "denied", identity=identity, reason="scope", status=403)
        raise ToolError(f"forbidden: this tool needs the `{scope}` scope")
    if scope.endswith(":write"):
        audit(f"mcp:{action}", "POST /mcp", "success", identity=identity)
    acting_for.set(identity.tenant)
    return identity


def install_auth(app: FastAPI, settings: Any) -> Authenticator:
    authenticator = Authenticator(AuthConfig.from_settings(settings))
    if not authenticator.config.enabled:
        structlog.get_logger().warning("auth_off", detail="AUTH_MODE=off: every caller is trusted (tests only)")

    @app.exception_handler(AuthError)
    async def auth_error(_: Request, exc: AuthError):
        return denied_response(exc)

    app.add_middleware(
        Authenticate,
        authenticator=authenticator,
        buckets=TokenBuckets(authenticator.config.rate_per_minute, authenticator.config.rate_burst),
    )
    app.state.authenticator = authenticator
    return authenticator


# --- calling another service as oneself ----------------------------------------------------


class ServiceCredentials:
    """This service's identity towards its callees: the projected ServiceAccount token the
    kubelet keeps fresh at <tokens_dir>/<callee> (audience: the callee). Read per call, since the
    kubelet rotates it. No file (auth off, tests without a cluster): no Authorization header."""

    def __init__(self, tokens_dir: str | None):
        self.tokens_dir = Path(tokens_dir) if tokens_dir else None

    def headers(self, callee: str, tenant: str | None = None) -> dict[str, str]:
        """Authorization for `callee`, acting for `tenant` (default: the current request's)."""
        tenant = tenant or acting_for.get()
        headers = {"X-Sophia-Tenant": tenant} if tenant else {}
        if self.tokens_dir is not None:
            path = self.tokens_dir / callee
            if path.is_file():
                headers["Authorization"] = f"Bearer {path.read_text().strip()}"
        return headers


def main(argv: list[str] | None = None) -> None:
    """`python -m sophia_chassis.auth issue --tenant acme --scopes context:read,context:write`:
    prints the key (give it to the tenant, once) and the entry for ESC's API_KEYS."""
    import argparse

    parser = argparse.ArgumentParser(prog="python -m sophia_chassis.auth")
    sub = parser.add_subparsers(dest="command", required=True)
    issue = sub.add_parser("issue", help="issue an API key")
    issue.add_argument("--tenant", required=True)
    issue.add_argument("--scopes", required=True, help="comma-separated, e.g. context:read,context:write,models:use")
    issue.add_argument("--id", default=None)
    args = parser.parse_args(argv)
    key, entry = issue_key(args.tenant, [s.strip() for s in args.scopes.split(",") if s.strip()], args.id)
    print(json.dumps({"key": key, "entry": entry}, indent=2))


if __name__ == "__main__":
    main()
