"""Audit events: one structured line per write and per denied request, on their own stream.

Each event is a JSON log line with `stream: audit` (Alloy turns it into a Loki label, and
Loki keeps that stream longer: components/observability.py), carrying who (subject and
credential kind), tenant, action, target, outcome and the request id. Nothing secret: a
subject is a key id, a token's `sub` or a service name, never a credential."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import structlog

if TYPE_CHECKING:
    from sophia_chassis.auth import Identity

STREAM = "audit"
_log = structlog.get_logger("audit")


def audit(
    action: str,
    target: str,
    outcome: str,
    *,
    identity: Identity | None = None,
    reason: str | None = None,
    **extra: Any,
) -> None:
    """outcome: success | failure | denied. Request id comes from the bound context."""
    _log.info(
        "audit",
        stream=STREAM,
        action=action,
        target=target,
        outcome=outcome,
        subject=identity.subject if identity else None,
        kind=identity.kind if identity else None,
        tenant=identity.tenant if identity else None,
        **({"reason": reason} if reason else {}),
        **extra,
    )
