"""A faithful OIDC issuer for tests: real RSA and EC keys, a real JWKS served over HTTP on
loopback (discovery document included), and tokens signed with them (pyjwt). Also plays
the Kubernetes API server's ServiceAccount issuer: projected tokens are JWTs of the same
shape (`sub: system:serviceaccount:<ns>:<name>`, audience the callee)."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from sophia_testing.servers import serve


class SigningKey:
    def __init__(self, alg: str = "RS256"):
        self.alg, self.kid = alg, uuid.uuid4().hex[:12]
        if alg.startswith("ES"):
            self.private = ec.generate_private_key(ec.SECP256R1())
        else:
            self.private = rsa.generate_private_key(public_exponent=65537, key_size=2048)

    def jwk(self) -> dict[str, Any]:
        algorithm = jwt.algorithms.ECAlgorithm if self.alg.startswith("ES") else jwt.algorithms.RSAAlgorithm
        public = json.loads(algorithm.to_jwk(self.private.public_key()))
        return {**public, "kid": self.kid, "use": "sig", "alg": self.alg}


class Issuer:
    """Serves /.well-known/openid-configuration and /jwks; `token(...)` signs claims."""

    def __init__(self, jwks_bearer: str | None = None) -> None:
        self.keys = [SigningKey("RS256")]
        self.url = ""
        self.jwks_requests = 0
        # As the Kubernetes API server: the JWKS only for a caller with this bearer token.
        self.jwks_bearer = jwks_bearer
        app = FastAPI()

        @app.get("/.well-known/openid-configuration")
        async def discovery() -> dict[str, Any]:
            return {
                "issuer": self.url,
                "jwks_uri": f"{self.url}/jwks",
                "id_token_signing_alg_values_supported": ["RS256", "ES256"],
            }

        @app.get("/jwks")
        async def jwks(request: Request) -> Any:
            self.jwks_requests += 1
            if self.jwks_bearer and request.headers.get("authorization") != f"Bearer {self.jwks_bearer}":
                return JSONResponse({"kind": "Status", "code": 401, "reason": "Unauthorized"}, status_code=401)
            return {"keys": [k.jwk() for k in self.keys]}

        self.app = app

    @property
    def jwks_url(self) -> str:
        return f"{self.url}/jwks"

    def rotate(self, alg: str = "RS256") -> SigningKey:
        key = SigningKey(alg)
        self.keys.append(key)
        return key

    def token(
        self,
        *,
        sub: str = "user-1",
        aud: str | list[str] = "test-service",
        key: SigningKey | None = None,
        expires_in: float = 300,
        iss: str | None = None,
        kid: str | None = None,
        **claims: Any,
    ) -> str:
        key = key or self.keys[0]
        now = int(time.time())
        payload = {"iss": iss or self.url, "sub": sub, "aud": aud, "iat": now, "nbf": now, "exp": now + int(expires_in)}
        payload.update(claims)
        return jwt.encode(payload, key.private, algorithm=key.alg, headers={"kid": kid or key.kid})

    def service_token(self, caller: str, audience: str, namespace: str = "sophia", **claims: Any) -> str:
        """A projected ServiceAccount token as the kubelet mounts it."""
        return self.token(
            sub=f"system:serviceaccount:{namespace}:{caller}",
            aud=[audience],
            **{"kubernetes.io": {"namespace": namespace, "serviceaccount": {"name": caller}}},
            **claims,
        )


@contextmanager
def running_issuer(jwks_bearer: str | None = None) -> Iterator[Issuer]:
    issuer = Issuer(jwks_bearer)
    with serve(issuer.app) as url:
        issuer.url = url
        yield issuer
