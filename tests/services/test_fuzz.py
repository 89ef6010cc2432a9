"""The fuzzer (tests/services/fuzz.py) over every service's OpenAPI, each service running for
real with its upstreams replaced by the same fakes the service tests use."""

from __future__ import annotations

from .conftest import importable, serve
from .fuzz import check, fuzz

importable("services/orchestrator", "services/mcp-context")


def test_fuzz_orchestrator() -> None:
    from orchestrator.main import Settings, build_app

    from .test_orchestrator_hostile import capturing_backend

    seen: list[str] = []
    with serve(capturing_backend(seen)) as backend:
        urls = {f"{n}_url": backend for n in ("mcp_context", "mcp_github", "mcp_hubspot", "mcp_agents", "agno_teams")}
        with serve(build_app(Settings(**urls))) as url:
            check(fuzz("orchestrator", url))


def test_fuzz_mcp_context() -> None:
    from mcp_context.main import Settings, build_app

    with serve(build_app(Settings(embedding_provider="local", qdrant_collection="fuzz"))) as url:
        check(fuzz("mcp-context", url))
