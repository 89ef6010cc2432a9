"""Drive the local stack with the real Pulumi engine: up, down, and what is running.

Run through `make up` / `make down` / `make e2e`, which first put the hermetic
toolchain on PATH (toolchain/env.sh) and start the local control plane. State lives
in a file backend under the project (.state/pulumi); the local stack's passphrase
protects nothing secret (there is no cloud account) and is fixed here.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
STATE = REPO / ".state"
STACK = "local"
KUBECONFIG = STATE / "kubeconfig"


def pulumi_env() -> dict[str, str]:
    env = dict(os.environ)
    env.setdefault("PULUMI_BACKEND_URL", f"file://{STATE / 'pulumi'}")  # as toolchain/env.sh
    env.setdefault("PULUMI_CONFIG_PASSPHRASE", "local-only-not-a-secret")  # as toolchain/env.sh
    env.update(
        {
            "PULUMI_SKIP_UPDATE_CHECK": "true",
            "PULUMI_DISABLE_AUTOMATIC_PLUGIN_ACQUISITION": "true",
            "PULUMI_SKIP_CONFIRMATIONS": "true",
        }
    )
    return env


def ensure_backend(env: dict[str, str]) -> None:
    """A file backend's directory must exist before pulumi can use it."""
    url = env["PULUMI_BACKEND_URL"]
    if url.startswith("file://"):
        Path(url.removeprefix("file://")).mkdir(parents=True, exist_ok=True)


def pulumi(
    *args: str, capture: bool = False, check: bool = True, stack: str = STACK
) -> subprocess.CompletedProcess[str]:
    ensure_backend(pulumi_env())
    cmd = ["pulumi", *args, "--stack", stack, "--non-interactive"]
    return subprocess.run(cmd, cwd=REPO, env=pulumi_env(), text=True, check=check, capture_output=capture)


def ensure_stack(stack: str = STACK) -> None:
    ensure_backend(pulumi_env())
    listed = subprocess.run(
        ["pulumi", "stack", "ls", "--json", "--non-interactive"],
        cwd=REPO,
        env=pulumi_env(),
        text=True,
        capture_output=True,
        check=True,
    )
    if not any(s["name"] == stack for s in json.loads(listed.stdout or "[]")):
        subprocess.run(
            ["pulumi", "stack", "init", stack, "--non-interactive"], cwd=REPO, env=pulumi_env(), text=True, check=True
        )


@dataclass
class Timed:
    label: str
    seconds: float


def timed(
    label: str, *args: str, capture: bool = False, stack: str = STACK
) -> tuple[Timed, subprocess.CompletedProcess[str]]:
    started = time.perf_counter()
    proc = pulumi(*args, capture=capture, stack=stack)
    return Timed(label, time.perf_counter() - started), proc


def outputs(stack: str = STACK) -> dict[str, Any]:
    return json.loads(pulumi("stack", "output", "--json", "--show-secrets", capture=True, stack=stack).stdout or "{}")


def client():
    from lightkube import Client
    from lightkube.config.kubeconfig import KubeConfig

    return Client(KubeConfig.from_file(str(KUBECONFIG)), field_manager="sophia-e2e")


@contextmanager
def jaeger_query() -> Iterator[str]:
    """The base URL of the local stack's Jaeger query API on a free local port, for as long as the
    block runs: `kubectl port-forward` enters the pod's own network namespace (its NetworkPolicy
    admits queries from the observability namespace only)."""
    proc = subprocess.Popen(
        [
            "kubectl",
            "--kubeconfig",
            str(KUBECONFIG),
            "-n",
            "sophia-observability",
            "port-forward",
            "svc/jaeger",
            ":16686",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        line = proc.stdout.readline() if proc.stdout else ""  # "Forwarding from 127.0.0.1:41234 -> 16686"
        found = re.search(r"127\.0\.0\.1:(\d+)", line)
        if not found:
            raise RuntimeError(
                f"kubectl port-forward to Jaeger failed: {line}{proc.stderr.read() if proc.stderr else ''}"
            )
        yield f"http://127.0.0.1:{found.group(1)}"
    finally:
        proc.terminate()
        proc.wait(timeout=10)


def jaeger_get(base: str, path: str, **params: str) -> tuple[int, dict[str, Any]]:
    """A GET of Jaeger's query API (HTTP JSON, /api/...); (status, body), {} for an error's body."""
    import urllib.error
    import urllib.parse
    import urllib.request

    url = f"{base}{path}" + (f"?{urllib.parse.urlencode(params)}" if params else "")
    try:
        with urllib.request.urlopen(url, timeout=15) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, {}


def running_summary() -> list[str]:
    """One line per namespace of ours: workloads ready/desired, and where GPU pods run."""
    from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
    from lightkube.resources.core_v1 import Namespace, Pod

    kube = client()
    lines = []
    for ns in sorted(n.metadata.name for n in kube.list(Namespace, labels={"app.kubernetes.io/part-of": "sophia"})):
        parts = []
        for kind in (Deployment, StatefulSet):
            for obj in kube.list(kind, namespace=ns):
                ready = obj.status.readyReplicas or 0 if obj.status else 0
                parts.append(f"{obj.metadata.name} {ready}/{obj.spec.replicas}")
        lines.append(f"{ns}: " + (", ".join(parts) if parts else "(no workloads)"))
    for ds in kube.list(DaemonSet, namespace="kube-system", labels={"app.kubernetes.io/part-of": "sophia"}):
        lines.append(f"kube-system: {ds.metadata.name} {ds.status.numberReady}/{ds.status.desiredNumberScheduled}")
    gpu_pods = [
        p
        for p in kube.list(Pod, namespace="sophia")
        if any("nvidia.com/gpu" in ((c.resources.limits or {}) if c.resources else {}) for c in p.spec.containers)
    ]
    for p in gpu_pods:
        lines.append(f"GPU pod {p.metadata.name} on node {p.spec.nodeName}")
    return lines


GATEWAY_PORT = int(os.environ.get("SOPHIA_GATEWAY_PORT", "80"))
DOMAIN = "sophia.localhost"  # Pulumi.local.yaml sophia:domain; the Gateway's listener hostname
# One real request per service through the gateway: an endpoint of the service's own (not a
# health check), answered by its code.
PROBES: dict[str, tuple[str, str]] = {
    "agno-coordinator": ("GET", "/v1/models"),
    "agno-teams": ("GET", "/teams"),
    "mcp-agents": ("GET", "/agents/tools"),
    "mcp-context": ("GET", "/embeddings/info"),
    "mcp-github": ("GET", "/github/repos?limit=1"),
    "mcp-hubspot": ("GET", "/hubspot/contacts?limit=1"),
    "orchestrator": ("GET", "/api/teams"),
}
LOCAL_NOT_DEPLOYED = [
    "a Qdrant server: no binary or image can be had offline; mcp-context embeds Qdrant Edge on a "
    "PersistentVolume instead (the Qdrant StatefulSet stays for dev/prod)",
    "GPU workloads run on simulated (kwok) GPU nodes: no GPU here",
    "redis, redis_exporter, pgbouncer and postgres images are stand-ins made from Debian packages "
    "(redis 7.0, pgbouncer 1.18, ...) under the public names (toolchain/image-build.sh mirror)",
    "the model API, GitHub and HubSpot are stand-ins (the tests' fakes, pod sophia-data/upstreams; "
    "sophia:local_upstreams): no route off this machine, no keys",
    "the OpenTelemetry Collector and Jaeger images are built from their Go modules (toolchain/build.sh: "
    "a Collector distribution of the components the stack uses; Jaeger without its UI, whose query API "
    "answers on port 16686) under the public names",
]
# Locally the Gateway and routes are served, by Traefik in NGF's place (toolchain/node.sh).
LOCAL_GATEWAY = "the Gateway and HTTPRoutes are served locally by Traefik (make up step 5) instead"


def local_view(line: str) -> str:
    """A stack's not-deployed note as it stands on the local cluster."""
    if line.startswith("ingress controller:"):
        return line.replace("the Gateway and routes are created but nothing serves them", LOCAL_GATEWAY)
    return line


def gateway_url() -> str:
    return f"http://{DOMAIN}" + ("" if GATEWAY_PORT == 80 else f":{GATEWAY_PORT}")


def through_gateway(
    method: str,
    path: str,
    body: Any = None,
    timeout: float = 15,
    api_key: str | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, str]:
    """A request to the gateway on 127.0.0.1 for the stack's hostname; (status, body). Every
    route but the health checks needs an identity: `api_key` (the stack's output) is sent."""
    import http.client

    conn = http.client.HTTPConnection("127.0.0.1", GATEWAY_PORT, timeout=timeout)
    headers = {"Host": DOMAIN, **(headers or {})}
    if api_key:
        headers["Authorization"] = f"Bearer {api_key}"
    payload = None
    if body is not None:
        payload = json.dumps(body)
        headers["Content-Type"] = "application/json"
    try:
        conn.request(method, path, body=payload, headers=headers)
        resp = conn.getresponse()
        return resp.status, resp.read().decode(errors="replace")
    except OSError as exc:
        return 0, f"{type(exc).__name__}: {exc}"
    finally:
        conn.close()


def service_table(api_key: str | None = None) -> list[tuple[str, str, str, str]]:
    """(service, pods ready/wanted, routes, status of a real request through the gateway)."""
    from lightkube.resources.apps_v1 import Deployment

    from infra.discovery import discover

    kube = client()
    rows = []
    for spec in discover():
        try:
            dep = kube.get(Deployment, spec.name, namespace="sophia")
            ready = f"{(dep.status.readyReplicas or 0) if dep.status else 0}/{dep.spec.replicas}"
        except Exception:  # not deployed (disabled)
            ready = "-"
        routes = " ".join(r.path for r in spec.routes) or "-"
        method, path = PROBES.get(spec.name, ("GET", spec.routes[0].path if spec.routes else "/"))
        status, _ = through_gateway(method, path, api_key=api_key)
        rows.append((spec.name, ready, routes, f"{status or 'no answer'} {method} {path}"))
    return rows


def print_table(rows: list[tuple[str, ...]], header: tuple[str, ...]) -> None:
    widths = [max(len(str(r[i])) for r in [header, *rows]) for i in range(len(header))]
    for r in [header, *rows]:
        print("  " + "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)))


def image_sizes() -> list[tuple[str, str, str]]:
    """(service, size, reference) of the images the stack deployed, from the builder's state."""
    rows = []
    state = json.loads(pulumi("stack", "export", capture=True).stdout or "{}")
    for res in state.get("deployment", {}).get("resources", []):
        outs = res.get("outputs", {})
        if "content_hash" in outs and "digest" in outs:
            name = outs["repository"].rsplit("/", 1)[-1]
            size = str(outs.get("size") or "?")
            rows.append((name, size, f"{outs['repository']}@{outs['digest']}"))
    return sorted(rows)


def cluster_was_replaced() -> bool:
    """The stack's state lists resources but the cluster has none of its namespaces: the cluster
    was made anew under it (`make e2e`, `make cluster-down`, a reboot) without `make down`."""
    from lightkube.core.exceptions import ApiError
    from lightkube.resources.core_v1 import Namespace

    try:
        client().get(Namespace, "sophia")
        return False
    except ApiError as exc:
        if exc.status.code != 404:
            raise
    state = json.loads(pulumi("stack", "export", capture=True).stdout or "{}")
    return any(
        r.get("type") == "kubernetes:core/v1:Namespace" for r in state.get("deployment", {}).get("resources", [])
    )


def cmd_up() -> int:
    ensure_stack()
    if cluster_was_replaced():
        # Forget what is gone, or every update of it fails with "not found".
        print("[up] the cluster was made anew since the last pulumi up: refreshing the stack's state first")
        timed("pulumi refresh", "refresh", "--yes", "--skip-preview")
    step, _ = timed("pulumi up", "up", "--yes", "--skip-preview")
    print(f"[up] pulumi up finished in {step.seconds:.0f}s")
    stack_outputs = outputs()
    api_key = stack_outputs.pop("api_key", None)
    print("[up] stack outputs:")
    print(json.dumps(stack_outputs, indent=2))
    if api_key:
        # Every route but /healthz, /readyz and /metrics needs an identity (docs/auth.md).
        print(f"[up] the local stack's API key (tenant 'local', every scope): export SOPHIA_API_KEY={api_key}")
        print('[up]   e.g. curl -H "Authorization: Bearer $SOPHIA_API_KEY" ...; again: make api-key')
    print("[up] images (built from services/, deployed by digest):")
    print_table(image_sizes(), ("service", "size", "image"))
    print("[up] running:")
    for line in running_summary():
        print(f"  {line}")
    print("[up] not deployed locally, or not for real, and why:")
    for line in [local_view(n) for n in stack_outputs.get("not_deployed", [])] + LOCAL_NOT_DEPLOYED:
        print(f"  - {line}")
    return 0


def not_running(rows: list[tuple[str, str, str, str]], deployed: set[str]) -> list[str]:
    """The services the stack deployed that are not all Ready or do not answer 2xx through the
    gateway, each with what is wrong."""
    wrong = []
    for name, ready, _, request in rows:
        if name not in deployed:
            continue
        have, _, want = ready.partition("/")
        if not (have.isdigit() and want.isdigit() and int(want) > 0 and have == want):
            wrong.append(f"{name} ({ready} pods ready)")
        elif not request.startswith("2"):
            wrong.append(f"{name} (request through the gateway: {request})")
    return wrong


def cmd_report() -> int:
    """The gateway URL and, per service, pods ready, its routes and a real request's status.
    Fails, naming them, when a service the stack deployed is not running: `done` means all are."""
    stack_outputs = outputs()
    api_key = stack_outputs.get("api_key")
    deployed = set(stack_outputs.get("services", {}))
    deadline = time.monotonic() + 60
    rows = service_table(api_key)
    # The gateway picks up routes within seconds of starting; give it that long.
    while not_running(rows, deployed) and time.monotonic() < deadline:
        time.sleep(3)
        rows = service_table(api_key)
    print(f"[up] gateway: {gateway_url()}  (Traefik on 127.0.0.1:{GATEWAY_PORT}, Host: {DOMAIN})")
    print_table(rows, ("service", "pods ready", "routes", "request through the gateway"))
    if wrong := not_running(rows, deployed):
        print(f"[up] FAILED: deployed but not running: {', '.join(wrong)}", file=sys.stderr)
        print("[up]   see: kubectl -n sophia get pods; kubectl -n sophia describe pod <name>", file=sys.stderr)
        return 1
    print("[up] try it (SOPHIA_API_KEY: the key printed above, or make api-key):")
    for path, body in (("/memories", '{"text": "The deploy freeze starts on Friday at noon"}'),
                       ("/memories/search", '{"query": "when does the deploy freeze start"}')):  # fmt: skip
        print(
            f"  curl -s -H 'Host: {DOMAIN}' -H \"Authorization: Bearer $SOPHIA_API_KEY\" "
            f"-H 'content-type: application/json' http://127.0.0.1:{GATEWAY_PORT}{path} -d '{body}'"
        )
    return 0


def cmd_down() -> int:
    ensure_stack()
    step, _ = timed("pulumi destroy", "destroy", "--yes", "--skip-preview")
    print(f"[down] pulumi destroy finished in {step.seconds:.0f}s")
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("command", choices=["up", "down", "summary", "report", "api-key"])
    args = parser.parse_args(argv)
    if args.command == "summary":
        print("\n".join(running_summary()))
        return 0
    if args.command == "api-key":
        print(pulumi("stack", "output", "--show-secrets", "api_key", capture=True).stdout.strip())
        return 0
    return {"up": cmd_up, "down": cmd_down, "report": cmd_report}[args.command]()


if __name__ == "__main__":
    sys.exit(main())
