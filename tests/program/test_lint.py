"""The program's code has no unused imports, undefined names or dead assignments."""

from pathlib import Path

from pyflakes.api import checkPath
from pyflakes.reporter import Reporter

REPO = Path(__file__).resolve().parents[2]


class Collect(Reporter):
    def __init__(self) -> None:
        self.problems: list[str] = []

    def unexpectedError(self, filename, msg):  # noqa: N802 (pyflakes API)
        self.problems.append(f"{filename}: {msg}")

    def syntaxError(self, filename, msg, lineno, offset, text):  # noqa: N802
        self.problems.append(f"{filename}:{lineno}: {msg}")

    def flake(self, message):
        self.problems.append(str(message))


def test_program_code_is_clean() -> None:
    reporter = Collect()
    paths = [p for folder in ("infra", "components", "tests/program") for p in sorted((REPO / folder).rglob("*.py"))]
    for path in paths + [REPO / "bench" / "bench_program.py"]:
        checkPath(str(path), reporter)
    assert reporter.problems == []
