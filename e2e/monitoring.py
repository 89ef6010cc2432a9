"""The local stack's Prometheus and Alertmanager as the e2e test reads them: their HTTP APIs through
the API server's service proxy (nothing listens on the machine for them), load through the gateway
from a thread, and the upstream stand-ins' latency knob (sophia_testing.upstreams)."""

from __future__ import annotations

import json
import subprocess
import threading
import time
import urllib.parse
from collections import Counter
from typing import Any

import local_stack
from steps import kubectl

OBS = "sophia-observability"
PROMETHEUS = f"/api/v1/namespaces/{OBS}/services/prometheus-operated:web/proxy"
ALERTMANAGER = f"/api/v1/namespaces/{OBS}/services/alertmanager-operated:web/proxy"


def get(path: str, **params: str) -> Any:
    query = f"?{urllib.parse.urlencode(params)}" if params else ""
    return json.loads(kubectl("get", "--raw", path + query, timeout=60).stdout)


def query(expr: str) -> list[dict[str, Any]]:
    """An instant query's result (a vector's samples; an empty list is "no data")."""
    answer = get(f"{PROMETHEUS}/api/v1/query", query=expr)
    assert answer["status"] == "success", answer
    return answer["data"]["result"]


def targets() -> list[dict[str, Any]]:
    """Prometheus' active targets; none while Prometheus itself is not serving yet (right after an up,
    the operator is still creating its StatefulSet: the API server's proxy then answers an error)."""
    try:
        return get(f"{PROMETHEUS}/api/v1/targets", state="active")["data"]["activeTargets"]
    except subprocess.CalledProcessError:
        return []


def firing_now() -> list[dict[str, str]]:
    """The labels of every alert firing now."""
    alerts = get(f"{PROMETHEUS}/api/v1/alerts")["data"]["alerts"]
    return [a["labels"] for a in alerts if a["state"] == "firing"]


def firing(alertname: str, service: str) -> bool:
    return any(a.get("alertname") == alertname and a.get("service") == service for a in firing_now())


def in_alertmanager(alertname: str, service: str) -> bool:
    alerts = get(f"{ALERTMANAGER}/api/v2/alerts", active="true")
    return any(a["labels"].get("alertname") == alertname and a["labels"].get("service") == service for a in alerts)


def dashboards() -> dict[str, dict[str, Any]]:
    """The dashboards as deployed (the program's ConfigMaps, what Grafana's sidecar would load)."""
    maps = json.loads(kubectl("-n", OBS, "get", "configmap", "-l", "grafana_dashboard=1", "-o", "json").stdout)
    return {name: json.loads(board) for cm in maps["items"] for name, board in cm["data"].items()}


def set_latency(port: int, seconds: float, token: str) -> None:
    """Every answer of the stand-in on `port` delayed by `seconds` (0: as fast as before), from inside its pod."""
    code = (
        "import json, sys, urllib.request; urllib.request.urlopen(urllib.request.Request("
        f"'http://127.0.0.1:{port}/_upstream/latency', data=json.dumps({{'seconds': float(sys.argv[1])}}).encode(), "
        "headers={'content-type': 'application/json', 'authorization': 'Bearer ' + sys.argv[2]}))"
    )
    kubectl("-n", "sophia-data", "exec", "deploy/upstreams", "--", "python", "-c", code, str(seconds), token)


class Load:
    """Every service's probe route (or only those of `services`) through the gateway, round-robin at
    about `rate` requests per second from a thread, until stopped; counts answers by status."""

    def __init__(self, api_key: str, rate: float = 4.0, services: tuple[str, ...] | None = None):
        self.api_key, self.interval = api_key, 1 / rate
        self.probes = [p for name, p in local_stack.PROBES.items() if services is None or name in services]
        self.statuses: Counter[int] = Counter()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> Load:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=60)

    def _run(self) -> None:
        probes = self.probes
        i = 0
        while not self._stop.is_set():
            started = time.monotonic()
            method, path = probes[i % len(probes)]
            status, _ = local_stack.through_gateway(method, path, api_key=self.api_key, timeout=30)
            self.statuses[status] += 1
            i += 1
            if status == 429:  # the key's rate limit: back off, as the repo's clients do
                self._stop.wait(1)
            self._stop.wait(max(0.0, self.interval - (time.monotonic() - started)))
