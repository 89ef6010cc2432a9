"""`make dev`'s identities, so the services run with authentication on, as deployed.

- An API key for tenant `local` with every scope, kept in .state/dev-api-key across runs; its
  table entry is the secret file API_KEYS in the services' secrets directory.
- A local ServiceAccount issuer in the cluster's place (sophia_testing's OIDC issuer: real keys,
  a real JWKS over HTTP): each service gets a token per callee, audience the callee, in
  .state/dev-tokens/<service>/<callee>, as the kubelet projects them.

Prints `NAME=value` lines for the services' environment, then `ready`, and serves the JWKS
until stopped.
"""

from __future__ import annotations

import argparse
import json
import threading
from pathlib import Path

from infra.discovery import discover, service_callers
from sophia_chassis.auth import issue_key
from sophia_testing.oidc_issuer import running_issuer

TOKEN_HOURS = 24
NAMESPACE = "sophia"  # the callers' namespace the services are told to trust


def local_key(state: Path, secrets_dir: Path) -> str:
    key_file = state / "dev-api-key"
    table = secrets_dir / "API_KEYS"
    if key_file.is_file() and table.is_file():
        return key_file.read_text().strip()
    key, entry = issue_key("local", ["*"], key_id="local")
    secrets_dir.mkdir(parents=True, exist_ok=True)
    table.write_text(json.dumps([entry]))
    key_file.write_text(key + "\n")
    key_file.chmod(0o600)
    return key


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--state", type=Path, default=Path(".state"))
    parser.add_argument("--secrets-dir", type=Path, default=Path(".state/dev-secrets"))
    args = parser.parse_args(argv)
    key = local_key(args.state, args.secrets_dir)
    specs = discover()
    with running_issuer() as issuer:
        for spec in specs:
            folder = args.state / "dev-tokens" / spec.name
            folder.mkdir(parents=True, exist_ok=True)
            for callee in spec.calls.services:
                token = issuer.service_token(spec.name, callee, NAMESPACE, expires_in=TOKEN_HOURS * 3600)
                (folder / callee).write_text(token)
        for spec in specs:
            callers = service_callers(specs, spec.name)
            print(f"ALLOWED_CALLERS_{spec.name.upper().replace('-', '_')}={','.join(callers)}")
        print(f"SERVICE_TOKEN_ISSUER={issuer.url}")
        print(f"SERVICE_TOKEN_JWKS_URL={issuer.jwks_url}")
        print(f"SERVICE_TOKEN_NAMESPACE={NAMESPACE}")
        print(f"SOPHIA_API_KEY={key}")
        print("ready", flush=True)
        threading.Event().wait()


if __name__ == "__main__":
    main()
