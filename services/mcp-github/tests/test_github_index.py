"""index_repository end to end: the fake GitHub's tree and blobs, chunks sent to a real
mcp-context (embedded Qdrant, offline MiniLM), searched back; incremental re-index by
commit and blob SHA; state in a real Redis; mcp-context failing."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse

from mcp_context.main import Settings as ContextSettings
from mcp_context.main import build_app as build_context
from mcp_github.main import Settings, build_app
from sophia_testing.github_fake import TOKEN, FakeGitHub
from sophia_testing.servers import serve

NAMESPACE = "github:acme/billing"


@pytest.fixture(scope="module")
def context_url() -> Iterator[str]:
    with serve(build_context(ContextSettings(embedding_provider="local", qdrant_collection="github-code"))) as url:
        yield url


def settings(github_url: str, context: str, **overrides) -> Settings:
    return Settings(
        **{
            **dict(
                github_token=TOKEN, github_api_url=github_url, mcp_context_url=context, github_backoff_max_seconds=1.0
            ),
            **overrides,
        }
    )


def index(url: str, **body: Any) -> dict[str, Any]:
    response = httpx.post(f"{url}/github/repos/acme/billing/index", json=body or None, timeout=60)
    assert response.status_code == 200, response.text
    return response.json()


def search(context: str, query: str) -> list[dict[str, Any]]:
    return httpx.post(
        f"{context}/memories/search", json={"query": query, "namespace": NAMESPACE, "top_k": 10}, timeout=30
    ).json()["results"]


def test_index_search_and_reindex_only_what_changed(fake: FakeGitHub, github_url: str, context_url: str) -> None:
    repo = fake.repos["acme/billing"]
    with serve(build_app(settings(github_url, context_url))) as url:
        first = index(url)
        blobs_after_first = len(fake.statuses_prefix("/repos/acme/billing/git/blobs/"))
        again = index(url)
        state = httpx.get(f"{url}/github/repos/acme/billing/index").json()
        files = dict(repo.commits[0].files)
        files["src/billing/retry.py"] += b"# retries are capped at five attempts, then the invoice run fails\n"
        del files["README.md"]
        files["src/billing/tax.py"] = (
            b"def vat(cents):\n    # value added tax for European customers\n    return cents // 5\n"
        )
        repo.commit(files, "tax and retry cap")
        changed = index(url)
        blobs_total = len(fake.statuses_prefix("/repos/acme/billing/git/blobs/"))

    assert first["status"] == "indexed" and first["commit"] == repo.commits[1].sha and first["ref"] == "main"
    # README, retry.py, invoice.py; the png, node_modules and the binary .dat are not sent.
    assert (first["files_total"], first["files_sent"], first["chunks_sent"]) == (4, 3, 3)
    assert first["files_skipped"] == 1  # data/blob.dat: binary content found on fetch
    assert blobs_after_first == 4
    assert again["status"] == "unchanged" and again["files_sent"] == 0
    assert state["indexed"] and state["files"] == 4 and state["chunks"] == 3 and state["namespace"] == NAMESPACE
    assert (changed["files_sent"], changed["files_unchanged"], changed["files_removed"]) == (
        2,
        2,
        1,
    )  # the binary is remembered
    assert changed["chunks_deleted"] == 2  # README's chunk and retry.py's old one
    assert blobs_total == blobs_after_first + 2  # only the changed blobs were fetched

    hits = search(context_url, "how do we back off when an upstream is flaky?")
    assert hits[0]["metadata"]["path"] == "src/billing/retry.py"
    assert hits[0]["metadata"]["commit"] == repo.commits[0].sha and "capped at five" in hits[0]["text"]
    paths = [h["metadata"]["path"] for h in hits]
    assert "README.md" not in paths and paths.count("src/billing/retry.py") == 1 and "src/billing/tax.py" in paths


def test_truncated_trees_are_walked_and_force_resends(fake: FakeGitHub, github_url: str, context_url: str) -> None:
    fake.truncate_trees = True
    fake.repos["acme/billing"].default_branch = "main"
    with serve(build_app(settings(github_url, context_url))) as url:
        first = index(url, ref="main")
        forced = index(url, ref="main", force=True)
    assert first["files_total"] == 4 and first["files_sent"] == 3
    tree_calls = fake.statuses_prefix("/repos/acme/billing/git/trees/")
    assert len(tree_calls) >= 4  # root (truncated), then root, src, src/billing, ... one by one
    assert forced["status"] == "indexed" and forced["files_sent"] == 3 and forced["chunks_deleted"] == 3


def test_state_in_redis_survives_a_restart(
    fake: FakeGitHub, github_url: str, context_url: str, redis_server: str
) -> None:
    config = settings(github_url, context_url, redis_url=redis_server)
    with serve(build_app(config)) as url:
        first = index(url)
        ready = httpx.get(f"{url}/readyz").json()
    with serve(build_app(config)) as url:  # a new process: nothing in memory
        again = index(url)
    assert first["status"] == "indexed" and again["status"] == "unchanged"
    assert ready == {"status": "ready", "checks": [], "optional": ["github", "mcp-context", "redis"]}


def flaky_context(calls: list[int], failing: dict[str, bool]) -> FastAPI:
    """mcp-context's batch endpoint, answering 500 while `failing["now"]`."""
    app = FastAPI()

    @app.post("/memories/batch", status_code=201)
    async def batch(request: Request):
        items = await request.json()
        calls.append(len(items))
        if failing["now"]:
            return JSONResponse({"title": "Internal error", "status": 500}, status_code=500)
        return {"ids": [f"m{len(calls)}-{i}" for i in range(len(items))]}

    @app.get("/healthz")
    async def healthz():
        return {"status": "ok"}

    return app


def test_mcp_context_failing_is_a_502_and_the_next_run_resumes(fake: FakeGitHub, github_url: str) -> None:
    calls: list[int] = []
    failing = {"now": True}
    with serve(flaky_context(calls, failing)) as context, serve(build_app(settings(github_url, context))) as url:
        failed = httpx.post(f"{url}/github/repos/acme/billing/index", timeout=30)
        state = httpx.get(f"{url}/github/repos/acme/billing/index").json()
        failing["now"] = False
        resumed = index(url)
    assert failed.status_code == 502 and failed.json()["title"] == "Upstream error"
    assert "mcp-context" in failed.json()["detail"] and "500" in failed.json()["detail"]
    assert calls[0] == 3 and len(calls) == 2  # one batch for three files; a write is sent once, not retried
    assert state["indexed"] is False
    assert resumed["status"] == "indexed" and resumed["files_sent"] == 3
