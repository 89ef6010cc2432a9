"""Entry point the Pulumi language host runs (`main: infra/` in Pulumi.yaml)."""

import sys
from pathlib import Path

# The program imports `infra` and `components` as packages from the repo root.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra.program import run  # noqa: E402

run()
