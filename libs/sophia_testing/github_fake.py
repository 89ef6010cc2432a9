"""A fake GitHub REST v3 server (a real FastAPI app, run with uvicorn on loopback).

Speaks the real paths and shapes the service uses, with git's own blob SHAs, bearer
token auth (401 "Bad credentials"), ETags on every JSON answer (If-None-Match -> 304,
which costs no rate limit, as on GitHub), `Link` pagination with page/per_page, the
x-ratelimit-* headers with a primary budget (403 + remaining 0 + reset when spent), and
injectable secondary limits (403 + Retry-After), 429s, 5xx answers and slow answers.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import json
import time
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse, Response

TOKEN = "ghp_fake_token_for_tests"


def blob_sha(content: bytes) -> str:
    return hashlib.sha1(b"blob %d\0" % len(content) + content).hexdigest()


def tree_sha(files: dict[str, bytes]) -> str:
    return hashlib.sha1("".join(f"{p}\0{blob_sha(c)}" for p, c in sorted(files.items())).encode()).hexdigest()


@dataclass
class Commit:
    sha: str
    message: str
    author: str
    date: str
    files: dict[str, bytes]


@dataclass
class Repo:
    owner: str
    name: str
    default_branch: str = "main"
    private: bool = False
    commits: list[Commit] = field(default_factory=list)  # newest first
    pulls: list[dict[str, Any]] = field(default_factory=list)

    def commit(self, files: dict[str, bytes], message: str, author: str = "octocat") -> Commit:
        parent = self.commits[0].sha if self.commits else ""
        sha = hashlib.sha1(f"{tree_sha(files)}{parent}{message}".encode()).hexdigest()
        commit = Commit(sha, message, author, f"2026-11-{len(self.commits) + 1:02d}T10:00:00Z", dict(files))
        self.commits.insert(0, commit)
        return commit

    @property
    def full_name(self) -> str:
        return f"{self.owner}/{self.name}"


@dataclass
class FakeGitHub:
    repos: dict[str, Repo] = field(default_factory=dict)
    orgs: set[str] = field(default_factory=set)
    rate_limit: int = 5000
    used: int = 0
    reset_in: int = 3600
    # Fault injection, consumed one request at a time: "secondary" (403 + Retry-After),
    # "secondary-nohdr" (403, message only), "429", "500", "502", "slow".
    faults: list[str] = field(default_factory=list)
    retry_after: str = "1"
    slow_seconds: float = 2.0
    requests: list[tuple[str, str, int]] = field(default_factory=list)  # (method, path+query, status)
    targets: list[str] = field(default_factory=list)  # every request's raw path and query, as received
    conditional_hits: int = 0
    truncate_trees: bool = False
    page_size_cap: int = 100  # GitHub's; lower it to exercise Link pagination with few items

    def add_repo(self, owner: str, name: str, files: dict[str, str | bytes], **kwargs: Any) -> Repo:
        repo = Repo(owner, name, **kwargs)
        repo.commit({p: c.encode() if isinstance(c, str) else c for p, c in files.items()}, "initial import")
        self.repos[repo.full_name] = repo
        return repo

    def statuses(self, path: str) -> list[int]:
        return [s for _, p, s in self.requests if p.split("?")[0] == path]

    def statuses_prefix(self, prefix: str) -> list[int]:
        return [s for _, p, s in self.requests if p.startswith(prefix)]


def _rate_headers(gh: FakeGitHub) -> dict[str, str]:
    return {
        "x-ratelimit-limit": str(gh.rate_limit),
        "x-ratelimit-remaining": str(max(0, gh.rate_limit - gh.used)),
        "x-ratelimit-used": str(gh.used),
        "x-ratelimit-reset": str(int(time.time()) + gh.reset_in),
        "x-ratelimit-resource": "core",
    }


def _error(status: int, message: str, headers: dict[str, str] | None = None) -> JSONResponse:
    return JSONResponse(
        {"message": message, "documentation_url": "https://docs.github.com/rest", "status": str(status)},
        status_code=status,
        headers=headers,
    )


def build_fake_github(gh: FakeGitHub) -> FastAPI:
    app = FastAPI()

    @app.middleware("http")
    async def github_rules(request: Request, call_next):
        path = request.url.path + (f"?{request.url.query}" if request.url.query else "")
        query = request.scope["query_string"].decode("latin-1")
        gh.targets.append(request.scope["raw_path"].decode("latin-1") + (f"?{query}" if query else ""))
        response = await _apply_rules(gh, request, call_next)
        gh.requests.append((request.method, path, response.status_code))
        return response

    def paged(request: Request, items: list[Any], wrap=None) -> Response:
        per_page = min(gh.page_size_cap, int(request.query_params.get("per_page", 30)))
        page = int(request.query_params.get("page", 1))
        last = max(1, -(-len(items) // per_page))
        body = items[(page - 1) * per_page : page * per_page]
        links = []
        base = str(request.url).split("?")[0]
        query = {k: v for k, v in request.query_params.items() if k != "page"}
        for rel, number in (("prev", page - 1), ("next", page + 1), ("first", 1), ("last", last)):
            if (rel in ("prev", "first") and page > 1) or (rel in ("next", "last") and page < last):
                links.append(f'<{base}?{urlencode({**query, "page": number})}>; rel="{rel}"')
        return etagged(request, wrap(body) if wrap else body, {"link": ", ".join(links)} if links else {})

    def etagged(request: Request, body: Any, headers: dict[str, str] | None = None) -> Response:
        payload = json.dumps(body, sort_keys=True)
        etag = 'W/"' + hashlib.sha256(payload.encode()).hexdigest()[:32] + '"'
        if request.headers.get("if-none-match") == etag:
            gh.conditional_hits += 1
            return Response(status_code=304, headers={"etag": etag})
        return Response(
            payload,
            media_type="application/json; charset=utf-8",
            headers={"etag": etag, "cache-control": "private, max-age=60", **(headers or {})},
        )

    def repo_json(repo: Repo) -> dict[str, Any]:
        return {
            "id": abs(hash(repo.full_name)) % 10**8,
            "name": repo.name,
            "full_name": repo.full_name,
            "private": repo.private,
            "owner": {"login": repo.owner},
            "default_branch": repo.default_branch,
            "description": f"{repo.name} repository",
            "language": "Python",
            "html_url": f"https://github.com/{repo.full_name}",
            "updated_at": "2026-11-20T00:00:00Z",
        }

    def find(owner: str, name: str) -> Repo | None:
        return gh.repos.get(f"{owner}/{name}")

    def resolve(repo: Repo, ref: str) -> Commit | None:
        if ref in ("HEAD", repo.default_branch):
            return repo.commits[0]
        return next((c for c in repo.commits if c.sha == ref or c.sha.startswith(ref) and len(ref) >= 7), None)

    def commit_json(repo: Repo, c: Commit) -> dict[str, Any]:
        return {
            "sha": c.sha,
            "html_url": f"https://github.com/{repo.full_name}/commit/{c.sha}",
            "author": {"login": c.author},
            "commit": {
                "message": c.message,
                "author": {"name": c.author.title(), "date": c.date},
                "tree": {"sha": tree_sha(c.files)},
            },
        }

    not_found = lambda: _error(404, "Not Found")  # noqa: E731

    @app.get("/rate_limit")
    async def rate_limit():
        left = max(0, gh.rate_limit - gh.used)
        return {
            "resources": {"core": {"limit": gh.rate_limit, "remaining": left, "used": gh.used}},
            "rate": {"limit": gh.rate_limit, "remaining": left, "used": gh.used},
        }

    @app.get("/user/repos")
    async def my_repos(request: Request):
        return paged(request, [repo_json(r) for r in gh.repos.values()])

    @app.get("/users/{login}")
    async def user(login: str, request: Request):
        if login in gh.orgs:
            return etagged(request, {"login": login, "type": "Organization"})
        if any(r.owner == login for r in gh.repos.values()):
            return etagged(request, {"login": login, "type": "User"})
        return not_found()

    @app.get("/orgs/{org}/repos")
    async def org_repos(org: str, request: Request):
        if org not in gh.orgs:
            return not_found()
        return paged(request, [repo_json(r) for r in gh.repos.values() if r.owner == org])

    @app.get("/users/{login}/repos")
    async def user_repos(login: str, request: Request):
        return paged(request, [repo_json(r) for r in gh.repos.values() if r.owner == login])

    @app.get("/repos/{owner}/{name}")
    async def repository(owner: str, name: str, request: Request):
        repo = find(owner, name)
        return etagged(request, repo_json(repo)) if repo else not_found()

    @app.get("/repos/{owner}/{name}/commits")
    async def commits(owner: str, name: str, request: Request):
        repo = find(owner, name)
        if repo is None:
            return not_found()
        ref = request.query_params.get("sha")
        start = resolve(repo, ref) if ref else repo.commits[0]
        if start is None:
            return not_found()
        history = repo.commits[repo.commits.index(start) :]
        return paged(request, [commit_json(repo, c) for c in history])

    @app.get("/repos/{owner}/{name}/commits/{ref}")
    async def commit(owner: str, name: str, ref: str, request: Request):
        repo = find(owner, name)
        found = resolve(repo, ref) if repo else None
        if found is None:
            return _error(422, f"No commit found for SHA: {ref}") if repo else not_found()
        return etagged(request, commit_json(repo, found))

    @app.get("/repos/{owner}/{name}/git/trees/{sha}")
    async def tree(owner: str, name: str, sha: str, request: Request):
        repo = find(owner, name)
        if repo is None:
            return not_found()
        recursive = request.query_params.get("recursive") not in (None, "", "0", "false")
        files = _trees(repo).get(sha)
        if files is None:
            return not_found()
        return etagged(
            request,
            {
                "sha": tree_sha(files),
                "url": str(request.url).split("?")[0],
                "tree": _tree_entries(files, recursive and not gh.truncate_trees),
                "truncated": recursive and gh.truncate_trees,
            },
        )

    @app.get("/repos/{owner}/{name}/git/blobs/{sha}")
    async def blob(owner: str, name: str, sha: str, request: Request):
        repo = find(owner, name)
        for c in repo.commits if repo else []:
            for content in c.files.values():
                if blob_sha(content) == sha:
                    return etagged(
                        request,
                        {
                            "sha": sha,
                            "size": len(content),
                            "encoding": "base64",
                            "content": base64.encodebytes(content).decode(),
                        },
                    )
        return not_found()

    @app.get("/repos/{owner}/{name}/contents/{path:path}")
    async def contents(owner: str, name: str, path: str, request: Request):
        repo = find(owner, name)
        c = resolve(repo, request.query_params.get("ref") or "HEAD") if repo else None
        if c is None:
            return not_found()
        if path in c.files:
            content = c.files[path]
            return etagged(
                request,
                {
                    "type": "file",
                    "encoding": "base64",
                    "size": len(content),
                    "name": path.rsplit("/", 1)[-1],
                    "path": path,
                    "sha": blob_sha(content),
                    "content": base64.encodebytes(content).decode(),
                    "html_url": f"https://github.com/{repo.full_name}/blob/{c.sha}/{path}",
                },
            )
        below = sorted({p[len(path) + 1 :].split("/")[0] for p in c.files if p.startswith(path.rstrip("/") + "/")})
        if not below:
            return not_found()
        return etagged(
            request,
            [
                {
                    "type": "file" if f"{path}/{n}" in c.files else "dir",
                    "name": n,
                    "path": f"{path}/{n}",
                    "size": len(c.files.get(f"{path}/{n}", b"")),
                }
                for n in below
            ],
        )

    @app.get("/repos/{owner}/{name}/pulls")
    async def pulls(owner: str, name: str, request: Request):
        repo = find(owner, name)
        if repo is None:
            return not_found()
        state = request.query_params.get("state", "open")
        chosen = [p for p in repo.pulls if state == "all" or p["state"] == state]
        chosen.sort(key=lambda p: p["updated_at"], reverse=request.query_params.get("direction", "desc") == "desc")
        return paged(request, chosen)

    @app.get("/search/code")
    async def search_code(request: Request):
        q = request.query_params.get("q", "")
        terms = [t for t in q.split() if not t.startswith("repo:")]
        scope = [t[5:] for t in q.split() if t.startswith("repo:")]
        if not terms:
            return _error(422, "Validation Failed")
        hits = []
        for repo in gh.repos.values():
            if scope and repo.full_name not in scope:
                continue
            for path, content in sorted(repo.commits[0].files.items()):
                if all(t.lower().encode() in content.lower() for t in terms):
                    hits.append(
                        {
                            "name": path.rsplit("/", 1)[-1],
                            "path": path,
                            "sha": blob_sha(content),
                            "repository": {"full_name": repo.full_name},
                            "score": 1.0,
                            "html_url": f"https://github.com/{repo.full_name}/blob/main/{path}",
                        }
                    )
        return paged(
            request, hits, wrap=lambda items: {"total_count": len(hits), "incomplete_results": False, "items": items}
        )

    return app


def _trees(repo: Repo) -> dict[str, dict[str, bytes]]:
    """Every tree of every commit by SHA (a commit SHA names its root tree too, as on GitHub)."""
    out: dict[str, dict[str, bytes]] = {}
    for c in repo.commits:
        out[c.sha] = out[tree_sha(c.files)] = c.files
        for path in c.files:
            parts = path.split("/")
            for i in range(1, len(parts)):
                prefix = "/".join(parts[:i]) + "/"
                sub = {q[len(prefix) :]: b for q, b in c.files.items() if q.startswith(prefix)}
                out[tree_sha(sub)] = sub
    return out


def _tree_entries(files: dict[str, bytes], recursive: bool) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    dirs: dict[str, dict[str, bytes]] = {}
    for path, content in sorted(files.items()):
        if "/" in path:
            top, rest = path.split("/", 1)
            dirs.setdefault(top, {})[rest] = content
        else:
            entries.append(
                {"path": path, "mode": "100644", "type": "blob", "sha": blob_sha(content), "size": len(content)}
            )
    for top, sub in sorted(dirs.items()):
        entries.append({"path": top, "mode": "040000", "type": "tree", "sha": tree_sha(sub)})
        if recursive:
            entries.extend({**e, "path": f"{top}/{e['path']}"} for e in _tree_entries(sub, True))
    return entries


async def _apply_rules(gh: FakeGitHub, request: Request, call_next) -> Response:
    if request.headers.get("authorization") != f"Bearer {TOKEN}":
        return _error(401, "Bad credentials")
    if request.url.path == "/rate_limit":  # never limited, never counted
        return await call_next(request)
    if gh.faults:
        fault = gh.faults.pop(0)
        if fault == "secondary":
            return _error(
                403,
                "You have exceeded a secondary rate limit. Please wait a few minutes before you try again.",
                {"retry-after": gh.retry_after, **_rate_headers(gh)},
            )
        if fault == "secondary-nohdr":
            return _error(403, "You have exceeded a secondary rate limit.")
        if fault == "429":
            return _error(429, "Too Many Requests", {"retry-after": gh.retry_after})
        if fault in ("500", "502"):
            return _error(int(fault), "Server Error")
        if fault == "slow":
            await asyncio.sleep(gh.slow_seconds)
    if gh.used >= gh.rate_limit:
        return _error(403, "API rate limit exceeded for user.", _rate_headers(gh))
    response = await call_next(request)
    if response.status_code != 304:  # conditional hits are free on GitHub
        gh.used += 1
    for key, value in _rate_headers(gh).items():
        response.headers[key] = value
    return response
