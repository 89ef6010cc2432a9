"""Input types the services validate at their edge, shared by REST models and MCP tools
(pydantic Annotated types: one rule, one place). Anything a store, a database or an
upstream URL cannot take is refused here as a 422 naming the field, never as a 500 later.

What goes wrong without them: NUL bytes and lone surrogates cannot be encoded as UTF-8
(PostgreSQL, Qdrant and our own JSON answers fail on them); NaN/Infinity are not JSON;
integers past 64 bits do not fit a store's numbers; JSON nested past a store's decoder
limit is written but can never be read back."""

from __future__ import annotations

import math
import re
from typing import Annotated, Any

from pydantic import AfterValidator, Field, StringConstraints

INT64 = 2**63 - 1
MAX_JSON_DEPTH = 8  # nesting a JSON value in a request may have (objects and arrays)
MAX_JSON_NODES = 2000  # values in one JSON document (bounded work for every reader)
CONTROL = re.compile(r"[\x00-\x1f\x7f]")
# Upstream id grammars more than one service checks (the caller's value becomes a URL segment).
HUBSPOT_RECORD_ID = r"^[0-9]{1,20}$"  # HubSpot CRM record ids are decimal numbers


def clean_text(value: str) -> str:
    """Text every store can hold: no NUL, no lone surrogates (they are not UTF-8)."""
    if "\x00" in value:
        raise ValueError("must not contain NUL (\\u0000) characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("must be valid Unicode: lone surrogate code points (\\ud800-\\udfff) are not text") from None
    return value


def single_line(value: str) -> str:
    """Names and ids: printable, one line (control characters end up in logs and URLs)."""
    clean_text(value)
    if CONTROL.search(value):
        raise ValueError("must not contain control characters")
    return value


def Text(max_length: int, min_length: int = 0) -> Any:  # noqa: N802 (a type factory)
    """Free text of at most `max_length` characters."""
    return Annotated[str, StringConstraints(min_length=min_length, max_length=max_length), AfterValidator(clean_text)]


def Name(max_length: int = 200, pattern: str | None = None) -> Any:  # noqa: N802
    """A non-empty single-line name (namespace, user, label); `pattern` narrows it further."""
    return Annotated[
        str,
        StringConstraints(min_length=1, max_length=max_length, pattern=pattern),
        AfterValidator(single_line),
    ]


HubSpotRecordId = Annotated[
    str, StringConstraints(pattern=HUBSPOT_RECORD_ID), Field(description="a HubSpot record id (decimal digits)")
]
FiniteFloat = Annotated[float, Field(allow_inf_nan=False)]
Int64 = Annotated[int, Field(ge=-INT64 - 1, le=INT64)]


def check_json(value: Any, *, max_depth: int = MAX_JSON_DEPTH, max_string: int = 10_000) -> Any:
    """A JSON value every store round-trips: bounded depth and size, finite numbers, 64-bit
    integers, clean text in keys and strings. Iterative, so a hostile depth costs no stack."""
    pending: list[tuple[Any, int]] = [(value, 0)]
    nodes = 0
    while pending:
        item, depth = pending.pop()
        nodes += 1
        if nodes > MAX_JSON_NODES:
            raise ValueError(f"holds more than {MAX_JSON_NODES} values")
        if isinstance(item, dict | list):
            if depth >= max_depth:
                raise ValueError(f"nests deeper than {max_depth} levels")
            if isinstance(item, dict):
                for key, child in item.items():
                    if not isinstance(key, str) or not key or len(key) > 200:
                        raise ValueError("object keys must be 1 to 200 characters")
                    single_line(key)
                    pending.append((child, depth + 1))
            else:
                pending.extend((child, depth + 1) for child in item)
        elif isinstance(item, bool) or item is None:
            continue
        elif isinstance(item, int):
            if not -INT64 - 1 <= item <= INT64:
                raise ValueError("integers must fit in 64 bits")
        elif isinstance(item, float):
            if not math.isfinite(item):
                raise ValueError("numbers must be finite (no NaN or Infinity)")
        elif isinstance(item, str):
            if len(item) > max_string:
                raise ValueError(f"strings must be at most {max_string} characters")
            clean_text(item)
        else:
            raise ValueError(f"{type(item).__name__} is not a JSON value")
    return value


def JsonObject(max_depth: int = MAX_JSON_DEPTH, max_keys: int = 64) -> Any:  # noqa: N802
    """A JSON object (e.g. metadata) a store can write and read back."""
    return Annotated[
        dict[str, Any],
        Field(max_length=max_keys),
        AfterValidator(lambda v: check_json(v, max_depth=max_depth)),
    ]


def json_depth_exceeds(value: Any, limit: int) -> bool:
    """Whether a parsed JSON value nests deeper than `limit` (iterative)."""
    pending = [(value, 0)]
    while pending:
        item, depth = pending.pop()
        if isinstance(item, dict | list):
            if depth >= limit:
                return True
            pending.extend((c, depth + 1) for c in (item.values() if isinstance(item, dict) else item))
    return False
