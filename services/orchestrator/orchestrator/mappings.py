"""The domain of the bridge: which new service and path now serve each legacy path."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Mapping:
    legacy: str  # old path prefix
    service: str  # the service that owns it now
    successor: str  # the new path prefix on that service


# The mapping table (docs/orchestrator.md); the longest matching legacy prefix wins.
MAPPINGS = (
    Mapping("/api/memory/search", "mcp-context", "/memories/search"),
    Mapping("/api/memory", "mcp-context", "/memories"),
    Mapping("/api/github", "mcp-github", "/github"),
    Mapping("/api/crm", "mcp-hubspot", "/hubspot"),
    Mapping("/api/agents", "mcp-agents", "/agents"),
    Mapping("/api/teams", "agno-teams", "/teams"),
)


def resolve(path: str) -> tuple[Mapping, str] | None:
    """The mapping for a legacy path and the path on the new service."""
    for mapping in sorted(MAPPINGS, key=lambda m: len(m.legacy), reverse=True):
        if path == mapping.legacy or path.startswith(mapping.legacy + "/"):
            return mapping, mapping.successor + path[len(mapping.legacy) :]
    return None
