"""`make up` says `done` only when every service the stack deployed runs (issue 19): the report
names each deployed service that is not all Ready or does not answer through the gateway."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

SCRIPT = Path(__file__).resolve().parents[2] / "scripts" / "local_stack.py"
_spec = importlib.util.spec_from_file_location("local_stack", SCRIPT)
local_stack = importlib.util.module_from_spec(_spec)
sys.modules.setdefault("local_stack", local_stack)  # its dataclasses look their module up
_spec.loader.exec_module(local_stack)

DEPLOYED = {"mcp-context", "mcp-github"}


def row(name: str, ready: str, request: str) -> tuple[str, str, str, str]:
    return (name, ready, "/memories", request)


def test_every_deployed_service_ready_and_answering_is_running() -> None:
    rows = [row("mcp-context", "2/2", "200 GET /embeddings/info"), row("mcp-github", "1/1", "200 GET /x")]
    assert local_stack.not_running(rows, DEPLOYED) == []


def test_an_empty_cluster_names_every_deployed_service() -> None:
    # What issue 19's empty cluster looked like: no Deployment, no answer through the gateway.
    rows = [row("mcp-context", "-", "no answer GET /e"), row("mcp-github", "-", "no answer GET /x")]
    assert local_stack.not_running(rows, DEPLOYED) == ["mcp-context (- pods ready)", "mcp-github (- pods ready)"]


def test_pods_short_of_wanted_or_a_failing_request_is_named() -> None:
    rows = [
        row("mcp-context", "1/2", "200 GET /e"),
        row("mcp-github", "1/1", "503 GET /x"),
        row("orchestrator", "0/1", "-"),
    ]
    assert local_stack.not_running(rows, DEPLOYED) == [
        "mcp-context (1/2 pods ready)",
        "mcp-github (request through the gateway: 503 GET /x)",
    ]


def test_zero_wanted_is_not_running() -> None:
    assert local_stack.not_running([row("mcp-context", "0/0", "200 GET /e")], {"mcp-context"}) == [
        "mcp-context (0/0 pods ready)"
    ]
