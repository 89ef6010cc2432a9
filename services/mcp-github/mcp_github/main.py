"""mcp-github: repository awareness over the GitHub REST API, as REST (under /github) and
as MCP tools (streamable HTTP at /mcp) from one app, plus `index_repository`, which sends
a repository's files in chunks to mcp-context so agents can search them.

Run with `uvicorn --factory mcp_github.main:build_app` (settings are read when the app is
built, not at import); `mcp_github.main:app` works too and builds it on first access."""

from __future__ import annotations

import math
from typing import Annotated, Any, Literal

from fastapi import Depends, FastAPI, Query, Request
from mcp.server.mcpserver import Context, MCPServer
from mcp.server.mcpserver.exceptions import ToolError
from pydantic import BaseModel, ConfigDict, Field

from mcp_github.context import ContextClient, ContextError
from mcp_github.github import FilePath, FullName, GitHubClient, GitHubError, Owner, RateLimited, Ref, RepoName
from mcp_github.indexer import Indexer
from mcp_github.settings import Settings
from mcp_github.state import MemoryStateStore, RedisStateStore, StateStore
from sophia_chassis import CircuitOpenError, create_app
from sophia_chassis.auth import Identity, ServiceCredentials, require, tool_identity
from sophia_chassis.http import UpstreamError
from sophia_chassis.inputs import Text
from sophia_chassis.mcp import McpEndpoint
from sophia_chassis.problems import problem

# The edge's types, shared by the REST routes and the MCP tools (github.py holds GitHub's grammars).
SearchQuery = Text(256, min_length=1)  # GitHub code search refuses longer queries
PullState = Literal["open", "closed", "all"]
RepoLimit = Annotated[int, Field(ge=1, le=1000)]
SearchLimit = Annotated[int, Field(ge=1, le=100)]
ListLimit = Annotated[int, Field(ge=1, le=500)]


class IndexIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    ref: Ref | None = Field(None, description="branch, tag or SHA; the default branch when unset")
    force: bool = Field(False, description="re-send every file even if unchanged")


def repo_summary(r: dict[str, Any]) -> dict[str, Any]:
    return {
        "full_name": r["full_name"],
        "private": r.get("private", False),
        "default_branch": r.get("default_branch"),
        "description": r.get("description"),
        "language": r.get("language"),
        "updated_at": r.get("updated_at"),
        "html_url": r.get("html_url"),
    }


def commit_summary(c: dict[str, Any]) -> dict[str, Any]:
    return {
        "sha": c["sha"],
        "message": c["commit"]["message"],
        "author": (c.get("author") or {}).get("login") or c["commit"]["author"]["name"],
        "date": c["commit"]["author"].get("date"),
        "html_url": c.get("html_url"),
    }


def pull_summary(p: dict[str, Any]) -> dict[str, Any]:
    return {
        "number": p["number"],
        "title": p["title"],
        "state": p["state"],
        "user": p["user"]["login"],
        "draft": p.get("draft", False),
        "merged_at": p.get("merged_at"),
        "updated_at": p.get("updated_at"),
        "head": p["head"]["ref"],
        "base": p["base"]["ref"],
        "html_url": p.get("html_url"),
    }


def code_hit(i: dict[str, Any]) -> dict[str, Any]:
    return {
        "repository": i["repository"]["full_name"],
        "path": i["path"],
        "sha": i.get("sha"),
        "html_url": i.get("html_url"),
    }


class GitHubService:
    """The behaviour the REST routes and the MCP tools share."""

    def __init__(self, settings: Settings):
        self.github = GitHubClient(
            settings.github_token,
            settings.github_api_url,
            timeout=settings.github_timeout_seconds,
            attempts=settings.github_attempts,
            backoff_max=settings.github_backoff_max_seconds,
            max_rate_limit_wait=settings.github_max_rate_limit_wait_seconds,
        )
        self.context = ContextClient(
            settings.mcp_context_url, credentials=ServiceCredentials(settings.service_tokens_dir)
        )
        self.state: StateStore = (
            RedisStateStore(settings.redis_url, settings.redis_password) if settings.redis_url else MemoryStateStore()
        )
        self.indexer = Indexer(
            self.github,
            self.context,
            self.state,
            max_file_bytes=settings.index_max_file_bytes,
            max_files=settings.index_max_files,
            chunk_chars=settings.index_chunk_chars,
        )

    async def list_repositories(self, owner: str | None, limit: int) -> list[dict[str, Any]]:
        return [repo_summary(r) for r in await self.github.repositories(owner, limit)]

    async def get_file(self, owner: str, repo: str, path: str, ref: str | None) -> dict[str, Any]:
        return {
            "repository": f"{owner}/{repo}",
            "path": path,
            "ref": ref,
            "text": await self.github.file(owner, repo, path, ref),
        }

    async def search_code(self, query: str, repo: str | None, limit: int) -> list[dict[str, Any]]:
        q = f"{query} repo:{repo}" if repo else query
        return [code_hit(i) for i in await self.github.search_code(q, limit)]

    async def recent_commits(self, owner: str, repo: str, ref: str | None, limit: int) -> list[dict[str, Any]]:
        return [commit_summary(c) for c in await self.github.commits(owner, repo, limit, ref)]

    async def pull_requests(self, owner: str, repo: str, state: str, limit: int) -> list[dict[str, Any]]:
        return [pull_summary(p) for p in await self.github.pulls(owner, repo, state, limit)]

    async def index(self, owner: str, repo: str, ref: str | None, force: bool, tenant: str) -> dict[str, Any]:
        return (await self.indexer.index(owner, repo, ref, force, tenant=tenant)).as_dict()

    async def aclose(self) -> None:
        await self.github.aclose()
        await self.context.aclose()
        await self.state.aclose()


# What a tool reports to the agent as a failed call (a message it can act on), not a crash.
EXPECTED_ERRORS = (GitHubError, RateLimited, ContextError, UpstreamError, CircuitOpenError)


async def tool_call(coro):
    try:
        return await coro
    except EXPECTED_ERRORS as exc:
        raise ToolError(str(exc)) from exc


def build_app(settings: Settings | None = None) -> FastAPI:
    settings = settings or Settings.load()
    service = GitHubService(settings)
    mcp = MCPServer(
        "mcp-github",
        instructions="Read GitHub repositories (files, code search, commits, pull "
        "requests) and index them into mcp-context for semantic search.",
    )

    @mcp.tool()
    async def list_repositories(
        ctx: Context, owner: Owner | None = None, limit: RepoLimit = 50
    ) -> list[dict[str, Any]]:
        """Repositories of an organisation or user, or the token's own when no owner is given."""
        tool_identity(ctx, "github:read", "list_repositories")
        return await tool_call(service.list_repositories(owner, limit))

    @mcp.tool()
    async def get_file(
        ctx: Context, owner: Owner, repo: RepoName, path: FilePath, ref: Ref | None = None
    ) -> dict[str, Any]:
        """A text file's content at a ref (default branch when unset)."""
        tool_identity(ctx, "github:read", "get_file")
        return await tool_call(service.get_file(owner, repo, path, ref))

    @mcp.tool()
    async def search_code(
        ctx: Context, query: SearchQuery, repo: FullName | None = None, limit: SearchLimit = 20
    ) -> list[dict[str, Any]]:
        """GitHub code search (its query syntax); `repo` as owner/name narrows it to one repository."""
        tool_identity(ctx, "github:read", "search_code")
        return await tool_call(service.search_code(query, repo, limit))

    @mcp.tool()
    async def recent_commits(
        ctx: Context, owner: Owner, repo: RepoName, ref: Ref | None = None, limit: ListLimit = 20
    ) -> list[dict[str, Any]]:
        """Latest commits on a branch (default branch when unset): sha, message, author, date."""
        tool_identity(ctx, "github:read", "recent_commits")
        return await tool_call(service.recent_commits(owner, repo, ref, limit))

    @mcp.tool()
    async def pull_requests(
        ctx: Context, owner: Owner, repo: RepoName, state: PullState = "open", limit: ListLimit = 20
    ) -> list[dict[str, Any]]:
        """Pull requests by state (open, closed, all), most recently updated first."""
        tool_identity(ctx, "github:read", "pull_requests")
        return await tool_call(service.pull_requests(owner, repo, state, limit))

    @mcp.tool()
    async def index_repository(
        ctx: Context, owner: Owner, repo: RepoName, ref: Ref | None = None, force: bool = False
    ) -> dict[str, Any]:
        """Send the repository's text files in chunks to mcp-context (namespace github:<owner>/<repo>);
        a re-run sends only files changed since the last indexed commit."""
        who = tool_identity(ctx, "github:write", "index_repository")
        return await tool_call(service.index(owner, repo, ref, force, who.tenant))

    endpoint = McpEndpoint(mcp)

    # Nothing it cannot serve without: Redis (the index state), GitHub and mcp-context being down only
    # degrade it (indexing, or reads, fail meanwhile), so a Redis restart or an outage does not empty
    # the Service and take the reads with it.
    degraded = {"github": service.github.ping, "mcp-context": service.context.ping}
    if settings.redis_url:
        degraded["redis"] = service.state.ping
    app = create_app(
        settings,
        degraded=degraded,
        on_startup=[endpoint.start],
        on_shutdown=[endpoint.stop, service.aclose],
    )
    app.state.service = service

    @app.exception_handler(GitHubError)
    async def github_error(_: Request, exc: GitHubError):
        if exc.status == 401:
            return problem(502, "Upstream error", f"GitHub rejected the token (GITHUB_TOKEN): {exc.message}")
        if exc.status in (403, 404, 409, 422):  # no access, no such thing, empty repository, bad query
            return problem(exc.status, "GitHub: " + exc.message, str(exc))
        return problem(502, "Upstream error", str(exc))

    @app.exception_handler(RateLimited)
    async def rate_limited(_: Request, exc: RateLimited):
        response = problem(429, "GitHub rate limit", str(exc))
        response.headers["Retry-After"] = str(math.ceil(exc.retry_after))
        return response

    @app.exception_handler(ContextError)
    async def context_error(_: Request, exc: ContextError):
        return problem(502, "Upstream error", str(exc))

    read = [Depends(require("github:read"))]

    @app.get("/github/repos", dependencies=read)
    async def repos(owner: Owner | None = None, limit: Annotated[RepoLimit, Query()] = 50) -> dict[str, Any]:
        return {"results": await service.list_repositories(owner, limit)}

    @app.get("/github/repos/{owner}/{repo}/contents/{path:path}", dependencies=read)
    async def contents(owner: Owner, repo: RepoName, path: FilePath, ref: Ref | None = None) -> dict[str, Any]:
        return await service.get_file(owner, repo, path, ref)

    @app.get("/github/search/code", dependencies=read)
    async def code(
        q: SearchQuery, repo: FullName | None = None, limit: Annotated[SearchLimit, Query()] = 20
    ) -> dict[str, Any]:
        return {"results": await service.search_code(q, repo, limit)}

    @app.get("/github/repos/{owner}/{repo}/commits", dependencies=read)
    async def commits(
        owner: Owner, repo: RepoName, ref: Ref | None = None, limit: Annotated[ListLimit, Query()] = 20
    ) -> dict[str, Any]:
        return {"results": await service.recent_commits(owner, repo, ref, limit)}

    @app.get("/github/repos/{owner}/{repo}/pulls", dependencies=read)
    async def pulls(
        owner: Owner, repo: RepoName, state: PullState = "open", limit: Annotated[ListLimit, Query()] = 20
    ) -> dict[str, Any]:
        return {"results": await service.pull_requests(owner, repo, state, limit)}

    @app.post("/github/repos/{owner}/{repo}/index")
    async def index(
        owner: Owner, repo: RepoName, body: IndexIn | None = None, who: Identity = Depends(require("github:write"))
    ) -> dict[str, Any]:
        body = body or IndexIn()
        return await service.index(owner, repo, body.ref, body.force, who.tenant)

    @app.get("/github/repos/{owner}/{repo}/index")
    async def index_state(
        owner: Owner, repo: RepoName, who: Identity = Depends(require("github:read"))
    ) -> dict[str, Any]:
        state = await service.state.get(Indexer.state_key(who.tenant, owner, repo))
        if state is None:
            return {"repository": f"{owner}/{repo}", "indexed": False}
        return {
            "repository": f"{owner}/{repo}",
            "indexed": state.commit is not None,
            "commit": state.commit,
            "ref": state.ref,
            "files": len(state.files),
            "chunks": sum(len(f.ids) for f in state.files.values()),
            "namespace": Indexer.namespace(owner, repo),
        }

    endpoint.attach(app)
    return app


def __getattr__(name: str) -> Any:
    # `uvicorn mcp_github.main:app` (no --factory) builds the app on first access, not at import.
    if name == "app":
        return build_app()
    raise AttributeError(name)
