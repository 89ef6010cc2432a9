"""index_repository: walk a repository's tree at a commit and send its text files, in
line-aligned chunks, to mcp-context so agents can search the code semantically.

Incremental: the last indexed commit and each file's blob SHA are kept (`state.py`). The
same commit again is a no-op; otherwise only files whose blob SHA changed are fetched
and sent, and the old chunks of changed or deleted files are removed from mcp-context.
State is saved after every group of files, so an interrupted run resumes where it failed.
"""

from __future__ import annotations

import asyncio
from dataclasses import asdict, dataclass
from pathlib import PurePosixPath
from typing import Any

from mcp_github.context import ContextClient
from mcp_github.github import GitHubClient, decode_text
from mcp_github.state import FileState, RepoState, StateStore

SKIP_DIRS = frozenset(
    {
        ".git",
        "node_modules",
        "vendor",
        "third_party",
        "dist",
        "build",
        "__pycache__",
        ".venv",
        "venv",
        ".tox",
        ".mypy_cache",
        "target",
    }
)
SKIP_NAMES = frozenset(
    {
        "package-lock.json",
        "yarn.lock",
        "pnpm-lock.yaml",
        "poetry.lock",
        "Cargo.lock",
        "go.sum",
        "uv.lock",
        "composer.lock",
        "Gemfile.lock",
    }
)
BINARY_SUFFIXES = frozenset(
    {
        ".png",
        ".jpg",
        ".jpeg",
        ".gif",
        ".bmp",
        ".ico",
        ".webp",
        ".pdf",
        ".zip",
        ".gz",
        ".tgz",
        ".bz2",
        ".xz",
        ".tar",
        ".jar",
        ".war",
        ".whl",
        ".egg",
        ".so",
        ".dll",
        ".dylib",
        ".exe",
        ".bin",
        ".o",
        ".a",
        ".pyc",
        ".class",
        ".woff",
        ".woff2",
        ".ttf",
        ".otf",
        ".eot",
        ".mp3",
        ".mp4",
        ".mov",
        ".avi",
        ".wav",
        ".ogg",
        ".psd",
        ".sqlite",
        ".db",
        ".parquet",
        ".npy",
        ".pkl",
        ".pt",
        ".onnx",
        ".safetensors",
    }
)


@dataclass(frozen=True)
class Chunk:
    start_line: int
    end_line: int
    text: str


def chunk_text(text: str, max_chars: int = 1500, overlap_lines: int = 2) -> list[Chunk]:
    """Line-aligned chunks of at most `max_chars` (a longer line is split), consecutive
    chunks sharing `overlap_lines` lines of context."""
    lines = text.splitlines()
    pieces: list[tuple[int, str]] = []  # (line number, text) with over-long lines split
    for number, line in enumerate(lines, 1):
        if len(line) <= max_chars:
            pieces.append((number, line))
        else:
            pieces.extend((number, line[i : i + max_chars]) for i in range(0, len(line), max_chars))
    chunks: list[Chunk] = []
    start = 0
    while start < len(pieces):
        end, size = start, 0
        while end < len(pieces) and (end == start or size + len(pieces[end][1]) + 1 <= max_chars):
            size += len(pieces[end][1]) + 1
            end += 1
        body = "\n".join(p[1] for p in pieces[start:end])
        if body.strip():
            chunks.append(Chunk(pieces[start][0], pieces[end - 1][0], body))
        if end >= len(pieces):
            break
        start = max(end - overlap_lines, start + 1)
    return chunks


def eligible(entry: dict[str, Any], max_file_bytes: int) -> bool:
    path = PurePosixPath(entry["path"])
    if any(part in SKIP_DIRS for part in path.parts[:-1]) or path.name in SKIP_NAMES:
        return False
    if path.suffix.lower() in BINARY_SUFFIXES:
        return False
    return entry.get("size", 0) <= max_file_bytes


@dataclass
class IndexSummary:
    repository: str
    ref: str
    commit: str
    status: str  # indexed | unchanged
    files_total: int = 0
    files_sent: int = 0
    files_unchanged: int = 0
    files_removed: int = 0
    files_skipped: int = 0  # binary or empty content found on fetch, or over max_files
    chunks_sent: int = 0
    chunks_deleted: int = 0

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


class Indexer:
    def __init__(
        self,
        github: GitHubClient,
        context: ContextClient,
        state: StateStore,
        *,
        max_file_bytes: int = 200_000,
        max_files: int = 5000,
        chunk_chars: int = 1500,
        group_chunks: int = 200,
        concurrency: int = 8,
    ):
        self.github, self.context, self.state = github, context, state
        self.max_file_bytes, self.max_files, self.chunk_chars = max_file_bytes, max_files, chunk_chars
        self.group_chunks = group_chunks
        self._fetch_slots = asyncio.Semaphore(concurrency)
        self._locks: dict[str, asyncio.Lock] = {}

    @staticmethod
    def namespace(owner: str, repo: str) -> str:
        return f"github:{owner}/{repo}"

    @staticmethod
    def state_key(tenant: str, owner: str, repo: str) -> str:
        """Each tenant indexes into its own memories (mcp-context scopes them), so its own state."""
        return f"{tenant}/{owner}/{repo}"

    async def index(
        self, owner: str, repo: str, ref: str | None = None, force: bool = False, *, tenant: str
    ) -> IndexSummary:
        state_key = self.state_key(tenant, owner, repo)
        # One run per repository and tenant at a time in this process; a second waits and finds it unchanged.
        async with self._locks.setdefault(state_key, asyncio.Lock()):
            return await self._index(owner, repo, f"{owner}/{repo}", ref, force, state_key)

    async def _index(
        self, owner: str, repo: str, key: str, ref: str | None, force: bool, state_key: str
    ) -> IndexSummary:
        ref = ref or (await self.github.get(f"/repos/{owner}/{repo}"))["default_branch"]
        commit = await self.github.get(f"/repos/{owner}/{repo}/commits/{ref}")
        commit_sha, tree_sha = commit["sha"], commit["commit"]["tree"]["sha"]
        previous = await self.state.get(state_key) or RepoState()
        summary = IndexSummary(key, ref, commit_sha, "unchanged")
        if previous.commit == commit_sha and not force:
            summary.files_total = summary.files_unchanged = len(previous.files)
            return summary
        summary.status = "indexed"

        entries = [e for e in await self.github.tree(owner, repo, tree_sha) if eligible(e, self.max_file_bytes)]
        entries.sort(key=lambda e: e["path"])
        if len(entries) > self.max_files:
            summary.files_skipped += len(entries) - self.max_files
            entries = entries[: self.max_files]
        summary.files_total = len(entries)
        current = {e["path"]: e["sha"] for e in entries}
        files = dict(previous.files)
        changed = [e for e in entries if force or files.get(e["path"], FileState("")).sha != e["sha"]]
        summary.files_unchanged = len(entries) - len(changed)
        state = RepoState(previous.commit, ref, files)

        try:
            # Deleted files first: their chunks must not answer searches any more.
            for path in [p for p in files if p not in current]:
                summary.chunks_deleted += await self.context.delete(files.pop(path).ids)
                summary.files_removed += 1
            group: list[tuple[dict[str, Any], list[Chunk]]] = []
            for start in range(0, len(changed), 32):
                fetched = await asyncio.gather(*(self._fetch(owner, repo, e) for e in changed[start : start + 32]))
                for entry, chunks in fetched:
                    if not chunks:  # binary or blank: remembered, so it is not fetched again
                        summary.files_skipped += 1
                        old = files.get(entry["path"])
                        if old and old.ids:
                            summary.chunks_deleted += await self.context.delete(old.ids)
                        files[entry["path"]] = FileState(entry["sha"], [])
                        continue
                    group.append((entry, chunks))
                    if sum(len(c) for _, c in group) >= self.group_chunks:
                        await self._send(key, ref, commit_sha, group, files, summary)
                        group = []
                        await self.state.put(state_key, state)
            await self._send(key, ref, commit_sha, group, files, summary)
            state.commit = commit_sha
        finally:
            await self.state.put(state_key, state)
        return summary

    async def _fetch(self, owner: str, repo: str, entry: dict[str, Any]) -> tuple[dict[str, Any], list[Chunk]]:
        async with self._fetch_slots:
            content = await self.github.blob_bytes(owner, repo, entry["sha"])
        text = decode_text(content)
        return entry, (chunk_text(text, self.chunk_chars) if text else [])

    async def _send(
        self,
        key: str,
        ref: str,
        commit: str,
        group: list[tuple[dict[str, Any], list[Chunk]]],
        files: dict[str, FileState],
        summary: IndexSummary,
    ) -> None:
        if not group:
            return
        owner, repo = key.split("/", 1)
        memories = [
            {
                "text": f"{key}:{entry['path']} (lines {c.start_line}-{c.end_line})\n{c.text}",
                "namespace": self.namespace(owner, repo),
                "metadata": {
                    "source": "github",
                    "repository": key,
                    "path": entry["path"],
                    "ref": ref,
                    "commit": commit,
                    "blob_sha": entry["sha"],
                    "chunk": n,
                    "start_line": c.start_line,
                    "end_line": c.end_line,
                },
            }
            for entry, chunks in group
            for n, c in enumerate(chunks)
        ]
        ids = await self.context.add(memories)
        offset = 0
        for entry, chunks in group:
            new_ids = ids[offset : offset + len(chunks)]
            offset += len(chunks)
            old = files.get(entry["path"])
            files[entry["path"]] = FileState(entry["sha"], new_ids)
            if old and old.ids:  # the new chunks are in; the old ones go
                summary.chunks_deleted += await self.context.delete(old.ids)
            summary.files_sent += 1
            summary.chunks_sent += len(chunks)
