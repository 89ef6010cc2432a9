"""How hard a chat request looks, from the request alone: deterministic and cheap, so the
same request always routes the same way. A caller who knows better says so with the
`X-Sophia-Complexity` header."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from agno_coordinator.table import TIER_NAMES

# Words that signal multi-step reasoning rather than lookup or chit-chat.
REASONING = re.compile(
    r"\b(step[- ]by[- ]step|prove|proof|derive|analy[sz]e|analysis|architecture|design|trade-?offs?|debug|"
    r"optimi[sz]e|refactor|root cause|algorithm|complexity|reason about|compare|plan)\b",
    re.IGNORECASE,
)
CODE_FENCE = "```"
CHARS_PER_TOKEN = 4  # OpenAI's rule of thumb; routing needs a size, not an exact count


def message_text(message: dict[str, Any]) -> str:
    """A message's text: plain string content or the text parts of a content list."""
    content = message.get("content")
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "\n".join(p.get("text", "") for p in content if isinstance(p, dict) and p.get("type") == "text")
    return ""


def estimate_tokens(body: dict[str, Any]) -> int:
    """Prompt tokens as the provider will count them, roughly: messages and tool schemas."""
    size = len(json.dumps(body.get("messages") or [])) + len(json.dumps(body.get("tools") or []))
    return max(1, size // CHARS_PER_TOKEN)


@dataclass
class Complexity:
    tier: int  # 1 low, 2 medium, 3 high
    explicit: bool = False  # set by the caller's header, not estimated
    signals: list[str] = field(default_factory=list)


def estimate(body: dict[str, Any]) -> Complexity:
    messages = body.get("messages") or []
    text = "\n".join(message_text(m) for m in messages if isinstance(m, dict))
    users = [m for m in messages if isinstance(m, dict) and m.get("role") == "user"]
    last_user = message_text(users[-1]) if users else ""
    score, signals = 0, []

    tokens = len(text) // CHARS_PER_TOKEN
    if tokens >= 8000:
        score, signals = score + 2, signals + [f"long ({tokens} tokens)"]
    elif tokens >= 2000:
        score, signals = score + 1, signals + [f"long ({tokens} tokens)"]
    if text.count(CODE_FENCE) >= 2:
        score, signals = score + 1, signals + ["code"]
    # Only the question being asked: earlier turns' wording says little about this one.
    words = {w.lower().replace("-", " ") for w in REASONING.findall(last_user)}
    if len(words) >= 3:
        score, signals = score + 2, signals + [f"reasoning ({', '.join(sorted(words))})"]
    elif words:
        score, signals = score + 1, signals + [f"reasoning ({', '.join(sorted(words))})"]
    tools = len(body.get("tools") or [])
    if tools >= 6:
        score, signals = score + 2, signals + [f"{tools} tools"]
    elif tools:
        score, signals = score + 1, signals + [f"{tools} tools"]
    if len(messages) > 12:
        score, signals = score + 1, signals + [f"{len(messages)} messages"]

    tier = 1 if score <= 1 else 2 if score <= 3 else 3
    return Complexity(tier=tier, signals=signals)


def from_header(value: str) -> Complexity:
    """`low`/`medium`/`high` or 1-3; ValueError otherwise."""
    text = value.strip().lower()
    tier = TIER_NAMES.get(text) or (int(text) if text in ("1", "2", "3") else None)
    if tier is None:
        raise ValueError(f"X-Sophia-Complexity must be low, medium, high or 1-3, not {value!r}")
    return Complexity(tier=tier, explicit=True, signals=["header"])
