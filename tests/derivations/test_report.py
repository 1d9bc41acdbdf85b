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


def test_no_derived_expression_is_hidden_behind_its_name():
    """Where an equation shows only a name for its derived left side (too long to print inline, or a named
    quantity), the derived expression is folded under the step (without it, (b)'s step 8 showed only "R = 0")."""
    text = render()
    for d in all_derivations():
        for step in d.all_steps():
            derived = step.folded_lhs_latex()
            if derived is not None:
                assert f"$$\n{derived}\n$$\n\n</details>" in text, f"({d.key}) {step.description[:60]}"
    assert "the derived expression behind $R$" in text


def test_t_1_statements_are_written_with_index_1():
    """Results stated at t = 1 render beta_1, sigma_1^2 (the check keeps the generic symbols)."""
    text = render()
    assert r"L_0 = \frac{\log{\left(2 \pi \sigma^{2}_{1} \right)}}{2}" in text
    for d in all_derivations():
        for step in d.all_steps():
            if step.display:
                shown = step.latex()
                assert r"\beta_{t}" not in shown and r"\sigma^{2}_{t}" not in shown, step.description[:60]
