"""The architecture diagram says what the manifests say: every service-to-service,
service-to-data-store and service-to-internet arrow is a declared call, and back."""

from __future__ import annotations

import re
from pathlib import Path

from infra.discovery import discover

ARCHITECTURE = Path(__file__).resolve().parents[2] / "docs" / "architecture.md"
# A node definition: id, then [label], [(label)], ((label)) or [[label]].
NODE = re.compile(r"(\w+)(?:\[\[|\[\(|\(\(|\[)([^\]\)]*)(?:\]\]|\)\]|\)\)|\])")
ARROW = re.compile(r"\s*-->(\|[^|]*\|)?\s*")
# Diagram label -> the data store a manifest names.
STORES = {"Redis": "redis", "Qdrant": "qdrant", "PgBouncer": "postgres"}


def diagram_edges() -> tuple[dict[str, str], set[tuple[str, str, str]]]:
    """The node labels (first line) by id, and the solid arrows as (from, to, arrow label)."""
    text = ARCHITECTURE.read_text()
    block = re.search(r"```mermaid\n(.*?)```", text, re.S).group(1)  # type: ignore[union-attr]
    labels: dict[str, str] = {}
    edges: set[tuple[str, str, str]] = set()
    for raw in block.splitlines():
        line = raw.strip()
        if not line or line.split()[0] in ("flowchart", "subgraph", "end") or "-." in line:
            continue
        for node_id, label in NODE.findall(line):
            labels[node_id] = label.split("<br/>")[0].strip()
        parts = ARROW.split(NODE.sub(lambda m: m.group(1), line))
        # [nodes, label, nodes, label, nodes, ...]
        for i in range(0, len(parts) - 2, 2):
            for source in parts[i].split("&"):
                for target in parts[i + 2].split("&"):
                    edges.add((source.strip(), target.strip(), (parts[i + 1] or "").strip("|")))
    return labels, edges


def test_the_architecture_diagram_draws_exactly_the_declared_calls() -> None:
    specs = {s.name: s for s in discover()}
    labels, edges = diagram_edges()
    name = {node: labels.get(node, node) for edge in edges for node in edge[:2]}
    services = {n for n, label in name.items() if label in specs}
    assert {name[n] for n in services} == set(specs), "every service is drawn"

    drawn_calls = {(name[a], name[b]) for a, b, _ in edges if a in services and b in services}
    drawn_stores = {(name[a], STORES[name[b]]) for a, b, _ in edges if a in services and name[b] in STORES}
    drawn_external = {name[a] for a, b, label in edges if a in services and label == "HTTPS"}
    gateway_targets = {name[b] for a, b, _ in edges if name[a].startswith("NGINX Gateway") and b in services}

    assert drawn_calls == {(s.name, c) for s in specs.values() for c in s.calls.services}
    assert drawn_stores == {(s.name, d) for s in specs.values() for d in s.calls.datastores}
    assert drawn_external == {s.name for s in specs.values() if s.calls.external}
    assert gateway_targets == {s.name for s in specs.values() if s.routes}
