"""agno-teams tests: the chassis, the service and its real peers (mcp-hubspot against the fake
HubSpot, mcp-context with its offline embedder and embedded Qdrant) importable."""

from __future__ import annotations

import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[3]
for path in (ROOT / "libs", ROOT / "services" / "agno-teams", ROOT / "services" / "mcp-hubspot",
             ROOT / "services" / "mcp-context", ROOT / "tests" / "services" / "mcp-hubspot"):
    if str(path) not in sys.path:
        sys.path.insert(0, str(path))
