"""reports/derivations.md is generated from derivations/ and must be current."""

from __future__ import annotations

import pytest

from derivations import all_derivations
from derivations.report import DEFAULT_PATH, render

pytestmark = pytest.mark.symbolic


def test_report_is_current():
    assert DEFAULT_PATH.exists(), "reports/derivations.md is missing: run `nox -s derive`"
    assert DEFAULT_PATH.read_text(encoding="utf-8") == render(), (
        "reports/derivations.md is out of date with derivations/: run `nox -s derive`"
    )


def test_report_shows_every_derivation_and_step():
    text = render()
    for derivation in all_derivations():
        assert f"## ({derivation.key}) {derivation.title}" in text
        assert f"`{derivation.module}`" in text
        for step in derivation.all_steps():
            assert step.latex() in text, f"step missing from report: {step.description}"


def test_derivations_never_import_torch():
    import subprocess
    import sys

    code = "import sys, derivations; derivations.all_derivations(); print('torch' in sys.modules)"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False", "derivations/ imported torch"
