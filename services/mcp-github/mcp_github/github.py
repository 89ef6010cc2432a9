"""GitHub REST v3 through the chassis client: token auth, `Link` pagination, ETag
conditional requests and GitHub's rate-limit signalling.

GitHub says "slow down" in three ways: 429, 403 with `Retry-After` (secondary limits),
and 403/429 with `x-ratelimit-remaining: 0` and `x-ratelimit-reset` (primary limit). The
`RateLimitTransport` turns each into what the chassis honours (429 + `Retry-After`), so
the one resilient client backs off for the time GitHub asks; a wait longer than
`max_wait` is not slept through but raised as `RateLimited`, which callers see as a 429
problem with `Retry-After`.
"""

from __future__ import annotations

import base64
import math
import re
import time
from collections import OrderedDict
from dataclasses import dataclass
from email.utils import parsedate_to_datetime
from typing import Annotated, Any
from urllib.parse import quote

import httpx
from pydantic import AfterValidator, StringConstraints

from sophia_chassis import ResilientClient
from sophia_chassis.http import UpstreamError

API_VERSION = "2022-11-28"
# GitHub's documented advice when a secondary limit gives no header: wait at least a minute.
SECONDARY_LIMIT_DEFAULT_WAIT = 60.0

# GitHub's grammars for what a caller names. Each value becomes a URL path segment (or a
# query parameter) of a call made with the organisation's token, so nothing outside them may
# pass: no `/`, `..`, `?` or `#` to steer the call to another endpoint.
OWNER = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")  # logins: alphanumerics and hyphens, 39 at most
REPO = re.compile(r"[A-Za-z0-9._-]{1,100}")
REF_CHARS = re.compile(r"[^\x00-\x20\x7f~^:?*\[\\]{1,255}")  # git check-ref-format's forbidden characters
PATH_CHARS = re.compile(r"[^\x00-\x1f\x7f\\?#]{1,1024}")
SHA = re.compile(r"[0-9a-f]{40}|[0-9a-f]{64}")


def check_owner(value: str) -> str:
    if not OWNER.fullmatch(value):
        raise ValueError("a GitHub owner is 1-39 letters, digits or hyphens, starting with a letter or digit")
    return value


def check_repo(value: str) -> str:
    if not REPO.fullmatch(value) or value in (".", ".."):
        raise ValueError("a repository name is 1-100 letters, digits, '.', '-' or '_' (not '.' or '..')")
    return value


def check_ref(value: str) -> str:
    bad = (
        not REF_CHARS.fullmatch(value)
        or ".." in value
        or "@{" in value
        or "//" in value
        or value.startswith(("/", ".", "-"))
        or value.endswith(("/", ".", ".lock"))
        or "/." in value
    )
    if bad:
        raise ValueError("not a git ref (branch, tag or SHA): see `git check-ref-format`")
    return value


def check_path(value: str) -> str:
    segments = value.strip("/").split("/")
    if not PATH_CHARS.fullmatch(value) or any(s in ("", ".", "..") for s in segments):
        raise ValueError("a file path is 1-1024 characters of '/'-separated names, without '.', '..' or empty parts")
    return value


def check_full_name(value: str) -> str:
    owner, _, repo = value.partition("/")
    check_owner(owner)
    check_repo(repo)
    return value


Owner = Annotated[str, StringConstraints(min_length=1, max_length=39), AfterValidator(check_owner)]
RepoName = Annotated[str, StringConstraints(min_length=1, max_length=100), AfterValidator(check_repo)]
Ref = Annotated[str, StringConstraints(min_length=1, max_length=255), AfterValidator(check_ref)]
FilePath = Annotated[str, StringConstraints(min_length=1, max_length=1024), AfterValidator(check_path)]
FullName = Annotated[str, StringConstraints(min_length=3, max_length=140), AfterValidator(check_full_name)]


def _checked(check, value: str) -> str:
    """Validated again where the URL is built (the indexer and the tools call in too)."""
    try:
        return check(value)
    except ValueError as exc:
        raise GitHubError(422, f"{value!r:.80}: {exc}") from None


def repo_path(owner: str, repo: str) -> str:
    return f"/repos/{quote(_checked(check_owner, owner), safe='')}/{quote(_checked(check_repo, repo), safe='')}"


def sha_segment(sha: str) -> str:
    if not isinstance(sha, str) or not SHA.fullmatch(sha):
        raise GitHubError(502, f"GitHub sent an object id that is not a SHA: {sha!r:.80}")
    return sha


class GitHubError(RuntimeError):
    def __init__(self, status: int, message: str):
        super().__init__(f"GitHub answered {status}: {message}")
        self.status, self.message = status, message


class RateLimited(RuntimeError):
    def __init__(self, retry_after: float, message: str = "GitHub rate limit"):
        super().__init__(f"{message}; retry after {math.ceil(retry_after)} s")
        self.retry_after = retry_after


def rate_limit_wait(response: httpx.Response, now: float | None = None) -> float | None:
    """Seconds GitHub asks us to wait, or None when the response is not a rate limit."""
    if response.status_code not in (403, 429):
        return None
    now = time.time() if now is None else now
    headers = response.headers
    if "retry-after" in headers:
        value = headers["retry-after"]
        try:
            return max(0.0, float(value))
        except ValueError:
            try:
                return max(0.0, parsedate_to_datetime(value).timestamp() - now)
            except (TypeError, ValueError):
                return SECONDARY_LIMIT_DEFAULT_WAIT
    if headers.get("x-ratelimit-remaining") == "0" and "x-ratelimit-reset" in headers:
        try:
            return max(0.0, float(headers["x-ratelimit-reset"]) - now)
        except ValueError:
            return SECONDARY_LIMIT_DEFAULT_WAIT
    if response.status_code == 429:
        return SECONDARY_LIMIT_DEFAULT_WAIT
    # A 403 without rate-limit headers is a secondary limit only if the body says so;
    # otherwise it is a permission answer and must not be retried.
    try:
        message = str(response.json().get("message", ""))
    except (ValueError, AttributeError):
        message = ""
    return SECONDARY_LIMIT_DEFAULT_WAIT if "rate limit" in message.lower() else None


class RateLimitTransport(httpx.AsyncBaseTransport):
    """Normalises GitHub's rate-limit answers to 429 + Retry-After for the chassis' backoff."""

    def __init__(self, max_wait: float, inner: httpx.AsyncBaseTransport | None = None):
        self.max_wait = max_wait
        self.inner = inner or httpx.AsyncHTTPTransport()
        self.rate_limited = 0  # answers that were rate limits, for tests and logs

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        response = await self.inner.handle_async_request(request)
        if response.status_code not in (403, 429):
            return response
        await response.aread()
        wait = rate_limit_wait(response)
        if wait is None:
            return response
        self.rate_limited += 1
        if wait > self.max_wait:
            await response.aclose()
            raise RateLimited(wait)
        headers = [
            (k, v)
            for k, v in response.headers.multi_items()
            if k.lower() not in ("retry-after", "content-length", "content-encoding", "transfer-encoding")
        ]
        headers.append(("retry-after", f"{wait:.3f}"))
        return httpx.Response(429, headers=headers, content=response.content, request=request)

    async def aclose(self) -> None:
        await self.inner.aclose()


@dataclass
class _Cached:
    etag: str
    data: Any
    links: dict[str, str]


@dataclass
class Page:
    data: Any
    links: dict[str, str]
    from_cache: bool


class GitHubClient:
    """GitHub REST v3: token auth, ETag conditional GETs (304 reuses the cached body and
    costs no rate limit), `Link: rel="next"` pagination, rate limits waited out."""

    def __init__(
        self,
        token: str | None,
        base_url: str = "https://api.github.com",
        *,
        timeout: float = 15.0,
        attempts: int = 3,
        backoff_max: float = 10.0,
        max_rate_limit_wait: float = 30.0,
        failure_threshold: int = 5,
        reset_timeout: float = 30.0,
        cache_size: int = 2048,
        transport: httpx.AsyncBaseTransport | None = None,
    ):
        headers = {
            "Accept": "application/vnd.github+json",
            "X-GitHub-Api-Version": API_VERSION,
            "User-Agent": "sophia-mcp-github",
        }
        if token:
            headers["Authorization"] = f"Bearer {token}"
        self.transport = RateLimitTransport(max_rate_limit_wait, transport)
        self.http = ResilientClient(
            base_url.rstrip("/"),
            timeout=timeout,
            attempts=attempts,
            backoff_max=backoff_max,
            failure_threshold=failure_threshold,
            reset_timeout=reset_timeout,
            headers=headers,
            transport=self.transport,
        )
        self._etags: OrderedDict[str, _Cached] = OrderedDict()
        self._cache_size = cache_size
        self.not_modified = 0

    async def _send(self, url: str, params: dict[str, Any] | None, headers: dict[str, str]) -> httpx.Response:
        try:
            return await self.http.get(url, params=params, headers=headers)
        except UpstreamError as exc:
            # The chassis gave up; if GitHub was rate limiting, say so with the wait it asked for.
            retry_after = getattr(exc.__cause__, "retry_after", None)
            if retry_after is not None and "answered 429" in str(exc.__cause__):
                raise RateLimited(retry_after) from exc
            raise

    async def page(self, url: str, params: dict[str, Any] | None = None) -> Page:
        """One GET with If-None-Match when a previous answer had an ETag."""
        key = str(self.http._client.build_request("GET", url, params=params).url)
        cached = self._etags.get(key)
        response = await self._send(url, params, {"If-None-Match": cached.etag} if cached else {})
        if response.status_code == 304 and cached is not None:
            self._etags.move_to_end(key)
            self.not_modified += 1
            return Page(cached.data, cached.links, True)
        if response.status_code >= 400:
            raise GitHubError(response.status_code, _message(response))
        data = response.json()
        links = {rel: link["url"] for rel, link in response.links.items() if "url" in link}
        etag = response.headers.get("etag")
        if etag:
            self._etags[key] = _Cached(etag, data, links)
            self._etags.move_to_end(key)
            while len(self._etags) > self._cache_size:
                self._etags.popitem(last=False)
        return Page(data, links, False)

    async def get(self, url: str, params: dict[str, Any] | None = None) -> Any:
        return (await self.page(url, params)).data

    async def paginate(
        self, url: str, params: dict[str, Any] | None = None, limit: int = 100, items_key: str | None = None
    ) -> list[Any]:
        """Follows `Link: rel="next"` until `limit` items; search answers keep them under `items`."""
        params = {**(params or {}), "per_page": min(100, max(1, limit))}
        results: list[Any] = []
        next_url: str | None = url
        while next_url and len(results) < limit:
            page = await self.page(next_url, params)
            params = None  # the next link carries every parameter
            results.extend(page.data[items_key] if items_key else page.data)
            next_url = page.links.get("next")
        return results[:limit]

    async def repositories(self, owner: str | None = None, limit: int = 100) -> list[dict[str, Any]]:
        """The token's own repositories, or an organisation's (a user's when `owner` is not an org)."""
        if owner is None:
            return await self.paginate("/user/repos", {"sort": "updated"}, limit)
        try:
            return await self.paginate(f"/orgs/{quote(_checked(check_owner, owner), safe='')}/repos", {}, limit)
        except GitHubError as exc:
            if exc.status != 404:
                raise
            return await self.paginate(f"/users/{quote(owner, safe='')}/repos", {"sort": "updated"}, limit)

    async def file(self, owner: str, repo: str, path: str, ref: str | None = None) -> str:
        segments = quote(_checked(check_path, path).strip("/"), safe="/")
        data = await self.get(
            f"{repo_path(owner, repo)}/contents/{segments}", {"ref": _checked(check_ref, ref)} if ref else None
        )
        if isinstance(data, list) or data.get("type") != "file":
            raise GitHubError(422, f"{path} is not a file")
        if data.get("encoding") == "base64" and data.get("content"):
            content = base64.b64decode(data["content"])
        else:  # over 1 MB the contents API leaves the content out; the blob API has it
            content = await self.blob_bytes(owner, repo, data["sha"])
        text = decode_text(content)
        if text is None:
            raise GitHubError(422, f"{path} is a binary file")
        return text

    async def blob_bytes(self, owner: str, repo: str, sha: str) -> bytes:
        data = await self.get(f"{repo_path(owner, repo)}/git/blobs/{sha_segment(sha)}")
        return base64.b64decode(data["content"]) if data.get("encoding") == "base64" else data["content"].encode()

    async def blob(self, owner: str, repo: str, sha: str) -> str:
        """A blob's text; binary content decodes with replacement characters."""
        return (await self.blob_bytes(owner, repo, sha)).decode("utf-8", errors="replace")

    async def head_sha(self, owner: str, repo: str, ref: str = "HEAD") -> str:
        return (await self.get(f"{repo_path(owner, repo)}/commits/{quote(_checked(check_ref, ref), safe='')}"))["sha"]

    async def tree(self, owner: str, repo: str, tree_ish: str) -> list[dict[str, Any]]:
        """Every blob under a tree (or commit); walks subtrees when GitHub truncates the recursive answer."""
        base = f"{repo_path(owner, repo)}/git/trees"
        data = await self.get(f"{base}/{sha_segment(tree_ish)}", {"recursive": "1"})
        if not data.get("truncated"):
            return [e for e in data["tree"] if e["type"] == "blob"]
        blobs: list[dict[str, Any]] = []
        pending = [("", tree_ish)]
        while pending:
            prefix, sha = pending.pop()
            for entry in (await self.get(f"{base}/{sha_segment(sha)}"))["tree"]:
                path = f"{prefix}{entry['path']}"
                if entry["type"] == "tree":
                    pending.append((path + "/", entry["sha"]))
                elif entry["type"] == "blob":
                    blobs.append({**entry, "path": path})
        return blobs

    async def search_code(self, query: str, limit: int = 20) -> list[dict[str, Any]]:
        return await self.paginate("/search/code", {"q": query}, limit, items_key="items")

    async def commits(self, owner: str, repo: str, limit: int = 10, ref: str | None = None) -> list[dict[str, Any]]:
        params = {"sha": _checked(check_ref, ref)} if ref else {}
        return await self.paginate(f"{repo_path(owner, repo)}/commits", params, limit)

    async def pulls(self, owner: str, repo: str, state: str = "open", limit: int = 30) -> list[dict[str, Any]]:
        return await self.paginate(
            f"{repo_path(owner, repo)}/pulls",
            {"state": state, "sort": "updated", "direction": "desc"},
            limit,
        )

    async def ping(self) -> bool:
        """Readiness: /rate_limit does not count against the rate limit."""
        response = await self.http.get("/rate_limit")
        if response.status_code >= 400:
            raise GitHubError(response.status_code, _message(response))
        return True

    async def aclose(self) -> None:
        await self.http.aclose()


def decode_text(content: bytes) -> str | None:
    """UTF-8 text, or None for binary content (a NUL byte or undecodable bytes)."""
    if b"\x00" in content[:8192]:
        return None
    try:
        return content.decode("utf-8")
    except UnicodeDecodeError:
        return None


def _message(response: httpx.Response) -> str:
    try:
        return str(response.json().get("message", response.text[:200]))
    except (ValueError, AttributeError):
        return response.text[:200]
