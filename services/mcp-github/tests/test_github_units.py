"""mcp-github logic on its own: GitHub's rate-limit signals, chunking, what gets indexed."""

from __future__ import annotations

import time

import httpx

from mcp_github.github import SECONDARY_LIMIT_DEFAULT_WAIT, decode_text, rate_limit_wait
from mcp_github.indexer import chunk_text, eligible
from mcp_github.state import FileState, RepoState


def answer(status: int, headers: dict[str, str] | None = None, body: dict | None = None) -> httpx.Response:
    return httpx.Response(status, headers=headers, json=body or {"message": "x"})


def test_rate_limit_signals() -> None:
    now = 1_000_000.0
    assert rate_limit_wait(answer(200), now) is None
    assert rate_limit_wait(answer(403, body={"message": "Resource not accessible by integration"}), now) is None
    assert rate_limit_wait(answer(403, {"retry-after": "7"}), now) == 7.0  # secondary limit
    assert rate_limit_wait(answer(429, {"retry-after": "2"}), now) == 2.0
    primary = {"x-ratelimit-remaining": "0", "x-ratelimit-reset": str(int(now) + 90)}
    assert rate_limit_wait(answer(403, primary), now) == 90.0
    assert rate_limit_wait(answer(429, primary), now) == 90.0
    assert rate_limit_wait(answer(403, {"x-ratelimit-remaining": "12", "x-ratelimit-reset": "1"}), now) is None
    secondary = {"message": "You have exceeded a secondary rate limit"}
    assert rate_limit_wait(answer(403, body=secondary), now) == SECONDARY_LIMIT_DEFAULT_WAIT
    http_date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 30))
    assert abs(rate_limit_wait(answer(429, {"retry-after": http_date}), now) - 30) < 1


def test_chunks_are_line_aligned_bounded_and_overlap() -> None:
    text = "\n".join(f"line {i:03d} " + "x" * 40 for i in range(1, 101))
    chunks = chunk_text(text, max_chars=500, overlap_lines=2)
    assert chunks[0].start_line == 1 and chunks[-1].end_line == 100
    assert all(len(c.text) <= 500 for c in chunks)
    for before, after in zip(chunks, chunks[1:], strict=False):
        assert after.start_line == before.end_line - 1  # two lines shared
    assert chunks[0].text.splitlines()[0].startswith("line 001")
    long = chunk_text("a" * 1200 + "\nshort", max_chars=500)
    assert all(len(c.text) <= 500 for c in long) and long[-1].text.endswith("short")
    assert chunk_text("") == [] and chunk_text("\n\n   \n") == []


def test_what_gets_indexed() -> None:
    assert eligible({"path": "src/app.py", "size": 100}, 1000)
    assert not eligible({"path": "src/app.py", "size": 5000}, 1000)
    assert not eligible({"path": "web/node_modules/x/index.js", "size": 10}, 1000)
    assert not eligible({"path": "assets/logo.PNG", "size": 10}, 1000)
    assert not eligible({"path": "package-lock.json", "size": 10}, 1000)
    assert decode_text(b"plain text") == "plain text"
    assert decode_text(b"\x00\x01binary") is None and decode_text(b"\xff\xfe\xfa") is None


def test_index_state_round_trips() -> None:
    state = RepoState("abc", "main", {"a.py": FileState("s1", ["m1", "m2"])})
    assert RepoState.from_json(state.to_json()) == state
