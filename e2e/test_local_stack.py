"""Preview, up, inspect through the Kubernetes API, no-op up, destroy — in this order."""

from __future__ import annotations

import json
import re
import secrets
import subprocess
import sys
import time

import local_stack
import monitoring
import pytest
import traces
from lightkube.generic_resource import create_namespaced_resource
from lightkube.resources.apps_v1 import DaemonSet, Deployment, StatefulSet
from lightkube.resources.autoscaling_v2 import HorizontalPodAutoscaler
from lightkube.resources.core_v1 import ConfigMap, Namespace, Node, Pod, Service
from lightkube.resources.networking_v1 import NetworkPolicy
from lightkube.resources.node_v1 import RuntimeClass
from lightkube.resources.policy_v1 import PodDisruptionBudget
from steps import CHANGES, OUR_NAMESPACES, failed_rollouts, kubectl, namespaces_left

from components.upstreams import UPSTREAMS
from infra.discovery import discover
from infra.stack import LOCAL_TENANT
from sophia_testing.otlp_receiver import service_hops

SERVICES = [s for s in discover()]
GenericGateway = create_namespaced_resource("gateway.networking.k8s.io", "v1", "Gateway", "gateways")
GenericHTTPRoute = create_namespaced_resource("gateway.networking.k8s.io", "v1", "HTTPRoute", "httproutes")
GenericServiceMonitor = create_namespaced_resource("monitoring.coreos.com", "v1", "ServiceMonitor", "servicemonitors")
GenericPrometheusRule = create_namespaced_resource("monitoring.coreos.com", "v1", "PrometheusRule", "prometheusrules")


@pytest.fixture(scope="module")
def kube():
    return local_stack.client()


@pytest.fixture(scope="module")
def api_key() -> str:
    """The local stack's generated API key (tenant `local`, every scope): every route but the
    health checks needs an identity."""
    return local_stack.outputs()["api_key"]


def test_preview_then_up(timings) -> None:
    local_stack.ensure_stack()
    step, proc = local_stack.timed("preview", "preview", "--diff", capture=True)
    timings.append((step.label, step.seconds))
    assert "error" not in proc.stderr.lower(), proc.stderr
    step, _ = local_stack.timed("up", "up", "--yes", "--skip-preview")
    timings.append((step.label, step.seconds))


@pytest.mark.parametrize("service", SERVICES, ids=[s.name for s in SERVICES])
def test_every_service_is_available_with_its_objects(kube, service) -> None:
    deployment = kube.get(Deployment, service.name, namespace="sophia")
    available = {c.type: c.status for c in deployment.status.conditions or []}
    assert available.get("Available") == "True", deployment.status
    assert (deployment.status.readyReplicas or 0) >= 1
    hpa = kube.get(HorizontalPodAutoscaler, service.name, namespace="sophia")
    assert hpa.spec.scaleTargetRef.name == service.name
    kube.get(PodDisruptionBudget, service.name, namespace="sophia")
    kube.get(NetworkPolicy, service.name, namespace="sophia")
    kube.get(Service, service.name, namespace="sophia")


def test_gpu_pods_run_only_on_gpu_nodes(kube) -> None:
    gpu_nodes = {n.metadata.name for n in kube.list(Node) if (n.metadata.labels or {}).get("sophia.ai/gpu") == "true"}
    assert gpu_nodes, "the local cluster has no GPU node"
    # A service asks for a GPU only if its manifest declares one (none does today).
    gpu_services = {s.name for s in SERVICES if s.gpu is not None}
    for pod in kube.list(Pod, namespace="sophia"):
        wants_gpu = any(
            "nvidia.com/gpu" in ((c.resources.limits or {}) if c.resources else {}) for c in pod.spec.containers
        )
        name = pod.metadata.labels["app.kubernetes.io/name"]
        assert wants_gpu == (name in gpu_services), pod.metadata.name
        if pod.spec.nodeName:
            assert (pod.spec.nodeName in gpu_nodes) == wants_gpu, (pod.metadata.name, pod.spec.nodeName)
    # The GPU pool's device plugin is scheduled onto the simulated GPU node(s) only.
    plugin_nodes = {
        p.spec.nodeName
        for p in kube.list(Pod, namespace="kube-system", labels={"app.kubernetes.io/name": "nvidia-device-plugin"})
    }
    assert plugin_nodes and plugin_nodes <= gpu_nodes, plugin_nodes


def test_platform_components_exist(kube) -> None:
    names = {n.metadata.name for n in kube.list(Namespace)}
    assert names >= OUR_NAMESPACES
    sts = kube.get(StatefulSet, "redis", namespace="sophia-data")
    assert (sts.status.readyReplicas or 0) == sts.spec.replicas
    # Locally there is no Qdrant server (mcp-context embeds Qdrant Edge) and PostgreSQL runs as a pod.
    assert not [s for s in kube.list(StatefulSet, namespace="sophia-data") if s.metadata.name == "qdrant"]
    for name in ("pgbouncer", "postgres"):
        dep = kube.get(Deployment, name, namespace="sophia-data")
        assert (dep.status.readyReplicas or 0) == dep.spec.replicas, name
    kube.get(DaemonSet, "nvidia-device-plugin", namespace="kube-system")
    kube.get(RuntimeClass, "nvidia")
    for service in SERVICES:
        kube.get(ConfigMap, f"dashboard-{service.name}", namespace="sophia-observability")
    # Custom resources were accepted (and schema-checked) by the API server through the toolchain's CRDs.
    gateway = kube.get(GenericGateway, "sophia", namespace="sophia-ingress")
    assert gateway.spec["gatewayClassName"] == "nginx"
    routes = kube.list(GenericHTTPRoute, namespace="sophia-ingress")
    assert len(list(routes)) == sum(len(s.routes) for s in SERVICES)
    kube.get(GenericServiceMonitor, "sophia-services", namespace="sophia-observability")
    kube.get(GenericPrometheusRule, "sophia-slo", namespace="sophia-observability")
    # The GPU pool's node carries the pool's label from the program's NodePatch too.
    node = kube.get(Node, "kwok-gpu-local-gpu-0")
    assert node.metadata.labels["sophia.ai/instance-type"] == "simulated"


# ---------------------------------------------------------------- the real node
REAL_NODE = "sophia-node"


def test_gateway_started(timings) -> None:
    started = time.perf_counter()
    subprocess.run(["toolchain/cluster.sh", "gateway"], cwd=local_stack.REPO, check=True, timeout=300)
    timings.append(("gateway", time.perf_counter() - started))


def test_every_pod_is_ready_on_the_real_node(kube) -> None:
    """Not simulated: each service and data store pod runs on the real node, Ready by its own probes."""
    for ns in ("sophia", "sophia-data", "sophia-observability"):
        pods = list(kube.list(Pod, namespace=ns))
        assert pods, ns
        for pod in pods:
            if pod.metadata.deletionTimestamp:
                continue
            assert pod.spec.nodeName == REAL_NODE, (pod.metadata.name, pod.spec.nodeName)
            ready = {c.type: c.status for c in pod.status.conditions or []}.get("Ready")
            assert ready == "True", (pod.metadata.name, pod.status.conditions)
            for c in pod.spec.containers:
                # The operator's config-reloader sidecar (beside Prometheus and Alertmanager) has no
                # probe upstream; the pod's readiness rests on the server's own.
                operated = (pod.metadata.labels or {}).get("app.kubernetes.io/managed-by") == "prometheus-operator"
                if operated and c.name == "config-reloader":
                    continue
                assert c.readinessProbe is not None, (pod.metadata.name, c.name)


def test_the_hpas_read_cpu_from_metrics_server(kube, timings) -> None:
    """metrics-server (toolchain) serves the resource metrics API for the real node's pods, and
    every service's HPA turns it into a current CPU utilization (what it scales on)."""
    started = time.perf_counter()
    deadline = time.monotonic() + 180
    while True:
        waiting = []
        for service in SERVICES:
            hpa = kube.get(HorizontalPodAutoscaler, service.name, namespace="sophia")
            cpu = [
                m.resource.current.averageUtilization
                for m in (hpa.status.currentMetrics or [])
                if m.type == "Resource" and m.resource and m.resource.name == "cpu"
            ]
            if not cpu or cpu[0] is None:
                waiting.append(service.name)
        if not waiting or time.monotonic() > deadline:
            break
        time.sleep(5)
    timings.append(("HPAs reading metrics", time.perf_counter() - started))
    assert not waiting, f"HPAs without a current CPU utilization: {waiting}"
    pods = json.loads(kubectl("get", "--raw", "/apis/metrics.k8s.io/v1beta1/namespaces/sophia/pods").stdout)
    assert {p["metadata"]["name"].rsplit("-", 2)[0] for p in pods["items"]} >= {s.name for s in SERVICES}


def test_every_route_answers_through_the_gateway(timings, api_key) -> None:
    started = time.perf_counter()
    failures = {}
    for service in SERVICES:
        method, path = local_stack.PROBES[service.name]
        status, body = local_stack.through_gateway(method, path, api_key=api_key)
        deadline = time.monotonic() + 60
        while status in (0, 404, 502, 503) and time.monotonic() < deadline:  # routes still being programmed
            time.sleep(2)
            status, body = local_stack.through_gateway(method, path, api_key=api_key)
        if status != 200:
            failures[service.name] = (status, body[:300])
    timings.append(("requests through the gateway", time.perf_counter() - started))
    assert not failures, failures


def test_a_route_refuses_a_caller_without_an_identity() -> None:
    status, body = local_stack.through_gateway("POST", "/memories/search", {"query": "anything"})
    assert status == 401, body


def test_a_memory_stored_through_the_gateway_is_found(timings, api_key) -> None:
    started = time.perf_counter()
    text = f"e2e memory {time.time_ns()}: the deploy freeze starts on Friday"
    status, body = local_stack.through_gateway("POST", "/memories", {"text": text}, api_key=api_key)
    assert status in (200, 201), body
    status, body = local_stack.through_gateway(
        "POST", "/memories/search", {"query": "when does the deploy freeze start"}, api_key=api_key
    )
    assert status == 200, body
    assert text in body, body
    timings.append(("memory store + search", time.perf_counter() - started))


def script_the_model(*replies: dict) -> None:
    """Queue the fake model provider's next replies (the upstream stand-ins' pod, from inside it)."""
    code = (
        "import json, sys, urllib.request; urllib.request.urlopen(urllib.request.Request("
        "'http://127.0.0.1:8081/_upstream/script', data=sys.argv[1].encode(), "
        "headers={'content-type': 'application/json'}))"
    )
    kubectl(
        "-n", "sophia-data", "exec", "deploy/upstreams", "--", "python", "-c", code, json.dumps({"replies": replies})
    )


AGENT_ANSWER = "The deploy freeze starts on Friday at 12:00 UTC (docs/deploys.md)."


def run_the_agent_flow(api_key: str, headers: dict[str, str] | None = None) -> dict:
    """Index the demo repository and answer from it (the model scripted); the finished task."""
    answer = AGENT_ANSWER
    script_the_model(
        {"tool_calls": [["github__index_repository", {"owner": "sophia-demo", "repo": "handbook"}]]},
        {"tool_calls": [["context__search_memories", {"query": "when does the deploy freeze start", "top_k": 3}]]},
        {"content": answer},
    )
    status, body = local_stack.through_gateway(
        "POST",
        "/agents/tasks",
        {"goal": "When does the deploy freeze start, according to sophia-demo/handbook?"},
        api_key=api_key,
        headers={"Idempotency-Key": f"e2e-{time.time_ns()}", **(headers or {})},
    )
    assert status == 202, body
    task_id = json.loads(body)["id"]
    deadline = time.monotonic() + 180
    while True:
        status, body = local_stack.through_gateway("GET", f"/agents/tasks/{task_id}", api_key=api_key)
        task = json.loads(body)
        if task.get("state") in ("succeeded", "failed") or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert task["state"] == "succeeded", task
    assert task["result"] == answer and task["steps"] == 3, task
    return task


def test_an_agent_indexes_a_repository_and_answers_in_the_cluster(timings, api_key) -> None:
    """The integration test's flow on the real node, every hop a pod: mcp-agents -> agno-coordinator
    -> the model provider (the stand-in, scripted) -> mcp-github (against the GitHub stand-in) ->
    mcp-context; services prove themselves to each other with their projected tokens."""
    started = time.perf_counter()
    run_the_agent_flow(api_key)
    timings.append(("agent flow", time.perf_counter() - started))


FLOW = ("mcp-agents", "agno-coordinator", "mcp-github", "mcp-context")


def test_one_trace_in_jaeger_spans_the_four_services_under_an_id_the_caller_did_not_choose(timings, api_key) -> None:
    """The collector and Jaeger (built from their Go modules) on the real node: the agent flow,
    sent through the gateway with a sampled `traceparent` of the caller's, is one trace in Jaeger
    joining the four services, parent by parent, under a trace id of the platform's own: the
    gateway removed the caller's context, and nothing was stored under the caller's id."""
    started = time.perf_counter()
    callers_trace, callers_span = secrets.token_hex(16), secrets.token_hex(8)
    task = run_the_agent_flow(api_key, {"traceparent": f"00-{callers_trace}-{callers_span}-01"})
    with local_stack.jaeger_query() as jaeger:
        deadline = time.monotonic() + 120  # the services export every 5 s, the collector batches
        while True:
            found = traces.task_trace(jaeger, task["id"])
            services = {s.service for t in found for s in traces.from_jaeger(t) if s.kind == "server"}
            if (len(found) == 1 and services >= set(FLOW)) or time.monotonic() > deadline:
                break
            time.sleep(3)
        assert len(found) == 1 and services >= set(FLOW), (len(found), services)
        assert local_stack.jaeger_get(jaeger, f"/api/traces/{callers_trace}")[0] == 404
    trace_id = found[0]["traceID"]
    spans = traces.from_jaeger(found[0])
    assert trace_id != callers_trace and {s.trace_id for s in spans} == {trace_id}
    by_id = {s.span_id: s for s in spans}
    # One root, the submit request, with no parent: not the caller's span.
    (root,) = [s for s in spans if s.parent_span_id not in by_id]
    assert (root.service, root.kind, root.name, root.parent_span_id) == (
        "mcp-agents",
        "server",
        "POST /agents/tasks",
        None,
    )
    process = next(s for s in spans if s.name == "process agents:tasks")
    assert process.attributes["sophia.task.id"] == task["id"]
    hops = {(parent.service, span.service) for parent, span in service_hops(spans)}
    # The model's three steps: the coordinator, mcp-github's index_repository, mcp-context's search.
    # (mcp-github's batch to mcp-context happened in the test above: the repository is unchanged now.)
    assert {("mcp-agents", "agno-coordinator"), ("mcp-agents", "mcp-github"), ("mcp-agents", "mcp-context")} <= hops
    # The worker's log line of the finished task carries the same trace id.
    logs = kubectl("-n", "sophia", "logs", "-l", "app.kubernetes.io/name=mcp-agents", "--tail=-1").stdout
    finished = [json.loads(line) for line in logs.splitlines() if '"task_finished"' in line and task["id"] in line]
    assert finished and finished[0]["trace_id"] == trace_id, finished
    print(f"trace {trace_id} ({len(spans)} spans)", *traces.tree(spans), sep="\n")
    timings.append(("trace in jaeger", time.perf_counter() - started))


def _connect_from(pod_args: list[str], host: str, port: int) -> bool:
    code = f"import socket; socket.create_connection(({host!r}, {port}), 3); print('connected')"
    proc = kubectl(*pod_args, "--", "python", "-c", code, check=False, timeout=120)
    return "connected" in proc.stdout


def test_network_policy_is_enforced(kube, timings) -> None:
    """kube-router's policy controller: a declared caller reaches Redis, any other pod does not."""
    started = time.perf_counter()
    # By address, not by name: the intruder's egress (default deny) has no DNS either, and a
    # failed lookup must not pass for a refused connection.
    redis = kube.get(Service, "redis", namespace="sophia-data").spec.clusterIP
    assert _connect_from(["-n", "sophia", "exec", "deploy/mcp-context", "-c", "mcp-context"], redis, 6379)
    image = kube.get(Deployment, "mcp-context", namespace="sophia").spec.template.spec.containers[0].image
    overrides = {
        "spec": {
            "securityContext": {"runAsNonRoot": True, "runAsUser": 10001, "seccompProfile": {"type": "RuntimeDefault"}},
            "containers": [
                {
                    "name": "intruder",
                    "image": image,
                    "command": ["sleep", "300"],
                    "securityContext": {"allowPrivilegeEscalation": False, "capabilities": {"drop": ["ALL"]}},
                }
            ],
        }
    }
    kubectl("-n", "sophia", "delete", "pod", "intruder", "--ignore-not-found", "--wait=true")
    kubectl(
        "-n", "sophia", "run", "intruder", f"--image={image}", "--restart=Never", f"--overrides={json.dumps(overrides)}"
    )
    try:
        kubectl("-n", "sophia", "wait", "--for=condition=Ready", "pod/intruder", "--timeout=120s")
        assert not _connect_from(["-n", "sophia", "exec", "intruder"], redis, 6379)
    finally:
        kubectl("-n", "sophia", "delete", "pod", "intruder", "--wait=false", check=False)
    timings.append(("network policy", time.perf_counter() - started))


# ---------------------------------------------------------------- monitoring that sees it
SLOW_SERVICE, SLOW_UPSTREAM = "mcp-hubspot", UPSTREAMS["HUBSPOT_ACCESS_TOKEN"]
BURN_ALERT = "LatencyBudgetBurn1H"  # the fast-burn page: 14.4x the budget over 1 h and 5 min


def test_monitoring_sees_the_platform(timings, api_key) -> None:
    """The local Prometheus (the operator's, configured by the program's ServiceMonitors and rules):
    every service's target is up; after load through the gateway every dashboard panel's query
    returns data; a slow dependency (the HubSpot stand-in's latency knob) makes the latency
    burn-rate alert fire, reach Alertmanager, and resolve once the dependency is fast again."""
    started = time.perf_counter()
    deadline = time.monotonic() + 300
    want = {s.name for s in SERVICES}
    while True:
        up = {t["labels"].get("service") for t in monitoring.targets() if t["health"] == "up"}
        if want <= up or time.monotonic() > deadline:
            break
        time.sleep(5)
    assert want <= up, f"targets not up: {sorted(want - up)}"
    assert {t["labels"].get("job") for t in monitoring.targets()} >= {"kube-state-metrics"}
    timings.append(("prometheus scraping every service", time.perf_counter() - started))

    with monitoring.Load(api_key) as load:
        # Agent work too, so the agents' and the model router's panels have something to show.
        script_the_model(
            {"tool_calls": [["context__search_memories", {"query": "deploy freeze", "top_k": 3}]]},
            {"content": "On Friday."},
        )
        status, body = local_stack.through_gateway(
            "POST",
            "/agents/tasks",
            {"goal": "When is the deploy freeze?"},
            api_key=api_key,
            headers={"Idempotency-Key": f"e2e-monitoring-{time.time_ns()}"},
        )
        assert status == 202, body

        # Every panel's every query, as deployed, against Prometheus; rates need a few scrapes of the load.
        started = time.perf_counter()
        boards = monitoring.dashboards()
        assert set(boards) == {f"{s.name}.json" for s in SERVICES}
        queries = {
            (b["title"], p["title"], t["expr"]) for b in boards.values() for p in b["panels"] for t in p["targets"]
        }
        deadline = time.monotonic() + 300
        while True:
            empty = sorted(q for q in queries if not monitoring.query(q[2]))
            if not empty or time.monotonic() > deadline:
                break
            time.sleep(15)
        timings.append(
            (
                f"dashboard queries with data: {len(queries) - len(empty)} of {len(queries)}",
                time.perf_counter() - started,
            )
        )
        # Reported at the end: the alert's half runs either way.
        no_data = "\n".join(f"{b} / {p}: {e}" for b, p, e in empty)

        # The latency fault: no latency budget burning anywhere before it (minutes of load so far;
        # mcp-agents burned all four windows here while its /agents/tools opened three MCP sessions
        # per request), firing with the slow dependency, resolved after.
        burning = sorted(
            f"{a['alertname']} {a.get('service')}"
            for a in monitoring.firing_now()
            if a["alertname"].startswith("LatencyBudgetBurn")
        )
        assert not burning, f"latency budget burning before any fault: {burning}"
        monitoring.set_latency(SLOW_UPSTREAM.port, 0.5, SLOW_UPSTREAM.token)
        fault = time.perf_counter()
        # More of its callers' requests, beside the round-robin's: the MCP sessions mcp-agents opens
        # to it are callers too (fast, they never reach HubSpot) and dilute the slow share.
        with monitoring.Load(api_key, rate=4.0, services=(SLOW_SERVICE,)):
            try:
                deadline = time.monotonic() + 480
                while not monitoring.firing(BURN_ALERT, SLOW_SERVICE) and time.monotonic() < deadline:
                    time.sleep(5)
                assert monitoring.firing(BURN_ALERT, SLOW_SERVICE), f"{BURN_ALERT} did not fire for {SLOW_SERVICE}"
                timings.append((f"{BURN_ALERT} firing after the fault", time.perf_counter() - fault))
                deadline = time.monotonic() + 120
                while not monitoring.in_alertmanager(BURN_ALERT, SLOW_SERVICE) and time.monotonic() < deadline:
                    time.sleep(5)
                assert monitoring.in_alertmanager(BURN_ALERT, SLOW_SERVICE), "the alert did not reach Alertmanager"
                timings.append(("in Alertmanager after the fault", time.perf_counter() - fault))
            finally:
                monitoring.set_latency(SLOW_UPSTREAM.port, 0, SLOW_UPSTREAM.token)
        healed = time.perf_counter()
        deadline = time.monotonic() + 720
        while monitoring.firing(BURN_ALERT, SLOW_SERVICE) and time.monotonic() < deadline:
            time.sleep(10)
        assert not monitoring.firing(BURN_ALERT, SLOW_SERVICE), f"{BURN_ALERT} still firing 12 min after the fault"
        timings.append((f"{BURN_ALERT} resolved after the fault's end", time.perf_counter() - healed))
    sent = sum(load.statuses.values())
    print(f"\nload through the gateway: {sent} requests, answers {dict(sorted(load.statuses.items()))}")
    assert load.statuses[200] >= 0.95 * sent, load.statuses
    assert not no_data, "panels without data:\n" + no_data


# ---------------------------------------------------------------- flags and a canary, by config
CANARY_SERVICE, CANARY_PROBE, CANARY_WEIGHT = "agno-teams", "/teams", 10
DEDUPE = "memory-search-dedupe"


class Gateway:
    """Requests to the gateway over one kept-alive connection; (status, headers, body)."""

    def __init__(self, api_key: str):
        import http.client

        self.api_key = api_key
        self.conn = http.client.HTTPConnection("127.0.0.1", local_stack.GATEWAY_PORT, timeout=15)

    def request(self, method: str, path: str, body=None, headers=None) -> tuple[int, dict[str, str], str]:
        sent = {"Host": local_stack.DOMAIN, "Authorization": f"Bearer {self.api_key}", **(headers or {})}
        payload = None
        if body is not None:
            payload, sent["Content-Type"] = json.dumps(body), "application/json"
        try:
            self.conn.request(method, path, body=payload, headers=sent)
            resp = self.conn.getresponse()
            return resp.status, {k.lower(): v for k, v in resp.getheaders()}, resp.read().decode(errors="replace")
        except OSError:
            self.conn.close()  # reconnects on the next request
            raise

    def track(self, headers=None) -> str:
        status, got, body = self.request("GET", CANARY_PROBE, headers=headers)
        while status == 429:  # the key's rate limit: wait as told, as the repo's clients do
            time.sleep(float(got.get("retry-after", "1")))
            status, got, body = self.request("GET", CANARY_PROBE, headers=headers)
        assert status == 200, (status, body[:300])
        return got["x-sophia-track"]


def stack_file_with(changes: dict) -> str:
    """Pulumi.local.yaml with `changes` to its config, as another file (`pulumi up --config-file`),
    so the repository's stack file is never edited by the test."""
    import yaml

    doc = yaml.safe_load((local_stack.REPO / "Pulumi.local.yaml").read_text())
    doc["config"].update(changes(doc["config"]) if callable(changes) else changes)
    path = local_stack.STATE / "e2e-releases.yaml"
    path.write_text(yaml.safe_dump(doc))
    return str(path)


def rolled_state(kube) -> dict[str, tuple[int, frozenset[str]]]:
    """Per Deployment in the services namespace: its generation and its pods' names."""
    pods: dict[str, set[str]] = {}
    for pod in kube.list(Pod, namespace="sophia"):
        if not pod.metadata.deletionTimestamp:
            labels = pod.metadata.labels or {}
            name, track = labels.get("app.kubernetes.io/name", ""), labels.get("sophia.ai/track", "stable")
            pods.setdefault(name if track == "stable" else f"{name}-{track}", set()).add(pod.metadata.name)
    return {
        d.metadata.name: (d.metadata.generation, frozenset(pods.get(d.metadata.name, ())))
        for d in kube.list(Deployment, namespace="sophia")
    }


def dedupe_search(gateway: Gateway, namespace: str) -> list[str]:
    query = {"query": "when does the release train leave", "top_k": 2, "namespace": namespace}
    status, _, body = gateway.request("POST", "/memories/search", query)
    assert status == 200, body
    return [r["text"] for r in json.loads(body)["results"]]


def test_a_flag_and_a_canary_by_config_roll_nothing_else(kube, timings, api_key) -> None:
    """One `up` turns mcp-context's memory-search-dedupe on for the local tenant and gives agno-teams
    a canary at 10 %: the flag takes effect within seconds with no pod restarted, and the gateway
    splits agno-teams' requests 90/10 (pinned by header or cookie on request)."""
    gateway = Gateway(api_key)
    namespace = f"e2e-dedupe-{time.time_ns()}"
    copy = {"text": "The release train leaves every Tuesday.", "namespace": namespace}
    other = {"text": "Releases are cut from the main branch.", "namespace": namespace}
    status, _, body = gateway.request("POST", "/memories/batch", [copy, copy, copy, other])
    assert status == 201, body
    assert dedupe_search(gateway, namespace) == [copy["text"], copy["text"]]  # the flag is off
    before = rolled_state(kube)

    def changes(config: dict) -> dict:
        services = json.loads(json.dumps(config["sophia:services"]))
        services[CANARY_SERVICE]["canary"] = {"weight": CANARY_WEIGHT}
        return {"sophia:services": services, "sophia:flags": {DEDUPE: {"tenants": [LOCAL_TENANT]}}}

    step, _ = local_stack.timed(
        "up: flag + canary", "up", "--yes", "--skip-preview", "--config-file", stack_file_with(changes)
    )
    timings.append((step.label, step.seconds))
    applied = time.monotonic()
    while dedupe_search(gateway, namespace) != [copy["text"], other["text"]]:
        assert time.monotonic() - applied < 120, "the flag did not take effect within 120 s"
        time.sleep(1)
    timings.append(("flag took effect after up", time.monotonic() - applied))
    after = rolled_state(kube)
    # Nothing that ran before was rolled: same generations, same pods; only the canary is new.
    assert {name: after[name] for name in before} == before, (before, after)
    assert set(after) - set(before) == {f"{CANARY_SERVICE}-canary"}

    started = time.perf_counter()
    deadline = time.monotonic() + 90
    while gateway.track() != "canary":  # Traefik programs the new route weights
        assert time.monotonic() < deadline, "no request reached the canary within 90 s"
    tracks = [gateway.track() for _ in range(400)]
    share = tracks.count("canary") / len(tracks)
    timings.append((f"canary share {share:.3f} of 400", time.perf_counter() - started))
    assert abs(share - CANARY_WEIGHT / 100) <= 0.05, share
    assert {gateway.track({"X-Sophia-Track": "canary"}) for _ in range(10)} == {"canary"}
    assert {gateway.track({"X-Sophia-Track": "stable"}) for _ in range(10)} == {"stable"}
    assert {gateway.track({"Cookie": "theme=dark; sophia-track=canary"}) for _ in range(10)} == {"canary"}


def test_rolling_the_canary_back_is_the_stack_file_again(kube, timings, api_key) -> None:
    step, _ = local_stack.timed("up: canary rolled back", "up", "--yes", "--skip-preview")
    timings.append((step.label, step.seconds))
    assert f"{CANARY_SERVICE}-canary" not in {d.metadata.name for d in kube.list(Deployment, namespace="sophia")}
    gateway = Gateway(api_key)
    deadline = time.monotonic() + 60
    while True:
        tracks = {gateway.track() for _ in range(20)}
        if tracks == {"stable"} or time.monotonic() > deadline:
            break
        time.sleep(1)
    assert tracks == {"stable"}
    outputs = local_stack.outputs()["services"][CANARY_SERVICE]["tracks"]
    assert set(outputs) == {"stable"} and "@sha256:" in outputs["stable"]["image"], outputs


def test_rollout_restart_of_every_deployment_completes(kube, timings) -> None:
    """Catches quota / HPA / surge deadlocks (the GPU one was): every Deployment rolls, one namespace at a time."""
    started = time.perf_counter()
    failed = failed_rollouts(kube)
    timings.append(("rollout restart", time.perf_counter() - started))
    assert not failed, failed


def test_second_up_changes_nothing(timings) -> None:
    step, proc = local_stack.timed("no-op up", "up", "--yes", "--skip-preview", "--expect-no-changes", capture=True)
    timings.append((step.label, step.seconds))
    assert not CHANGES.search(proc.stdout), proc.stdout


def test_up_after_the_cluster_is_recreated_deploys_everything_again(timings) -> None:
    """Issue 19: the stack's state outlives its cluster (cluster-down/up, a lost disk). `make up`'s
    own steps on the new, empty cluster must converge to every service running, not say `done`
    over nothing."""
    started = time.perf_counter()
    for command in ("down", "up"):
        subprocess.run(["toolchain/cluster.sh", command], cwd=local_stack.REPO, check=True, timeout=600)
    timings.append(("cluster recreated", time.perf_counter() - started))
    started = time.perf_counter()
    up = subprocess.run(
        [sys.executable, "scripts/local_stack.py", "up"], cwd=local_stack.REPO, text=True, capture_output=True
    )
    assert up.returncode == 0, up.stdout[-3000:] + up.stderr[-3000:]
    assert "refreshing the stack's state first" in up.stdout, up.stdout[-3000:]
    subprocess.run(["toolchain/cluster.sh", "gateway"], cwd=local_stack.REPO, check=True, timeout=300)
    report = subprocess.run(
        [sys.executable, "scripts/local_stack.py", "report"], cwd=local_stack.REPO, text=True, capture_output=True
    )
    timings.append(("up on the recreated cluster", time.perf_counter() - started))
    assert report.returncode == 0, report.stdout + report.stderr
    for service in SERVICES:
        assert re.search(rf"^\s+{service.name}\s+(\d+)/\1\s.*\s200 ", report.stdout, re.M), report.stdout


def test_destroy_removes_the_namespaces(timings) -> None:
    kube = local_stack.client()  # the cluster, and its CA, may be new since the module's client (above)
    step, _ = local_stack.timed("destroy", "destroy", "--yes", "--skip-preview")
    timings.append((step.label, step.seconds))
    assert namespaces_left(kube) == set()
