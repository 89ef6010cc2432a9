"""Build the index of an embedded Qdrant shard in its own process: `python -m
mcp_context.indexer <shard directory>`. optimize() holds the GIL for the whole build, so the
service runs it here, on a copy of its shard, and swaps the result in (store.py). Runs at a
lower CPU priority than the service it works for."""

from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import qdrant_edge as edge

from mcp_context.store import INDEXED_MARK


def main(argv: list[str]) -> int:
    [directory] = argv
    os.nice(10)
    started = time.monotonic()
    shard = edge.EdgeShard.load(directory, None)  # the configuration the service persisted
    try:
        shard.optimize()
        shard.flush()
        info = shard.info()
    finally:
        shard.close()
    (Path(directory) / INDEXED_MARK).write_text(
        f"{info.indexed_vectors_count} of {info.points_count} points indexed in {time.monotonic() - started:.1f}s\n"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
