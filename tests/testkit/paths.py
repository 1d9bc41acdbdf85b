"""Where things are: the repository root (the working directory of the CLI subprocesses the tests start)."""

from __future__ import annotations

from pathlib import Path

TESTS = Path(__file__).resolve().parents[1]
REPO = TESTS.parent
