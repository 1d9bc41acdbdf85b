"""Every step of every derivation holds: SymPy closes it, or exact rational substitution does; and its label is honest.

These are the generic checks; each derivation also has its own tests (tests/derivations/test_<module>.py) that
pin the results against the paper's formulas and show that a mutated formula is caught.
"""

from __future__ import annotations

import pytest
import sympy as sp

from derivations import all_derivations
from derivations.chain import Check, Step
from testkit.symbolic import step_cases

pytestmark = pytest.mark.symbolic


@pytest.mark.parametrize("step", step_cases())
def test_step_holds(step):
    if step.check is Check.SIMPLIFY:
        assert step.holds_symbolically(), f"simplify(lhs - rhs) != 0 for: {step.description}"
    else:
        assert step.holds_at_random_rationals(), f"nonzero at a rational point: {step.description}"


# --- honest labels: why a step is not closed symbolically, and what a definition step is ----------------------
# A definition step claims nothing that is not named as such: its description starts with one of these.
DEFINITION_PREFIXES = ("Definition", "Assumption", "Model", "Theorem assumed")


def _labelled_steps(check: Check) -> list:
    return [
        pytest.param(step, id=f"{d.key}-{d.module.split('.')[-1]}-{i}")
        for d in all_derivations()
        for i, step in enumerate(d.all_steps(), start=1)
        if step.check is check
    ]


@pytest.mark.parametrize("step", _labelled_steps(Check.RATIONAL))
def test_a_random_rational_step_says_why_sympy_does_not_close_it(step):
    assert len(step.reason.split()) >= 5, f"a RATIONAL step without a concrete reason: {step.description}"


def test_only_random_rational_steps_carry_a_reason():
    stray = [s.description for d in all_derivations() for s in d.all_steps()
             if s.reason and s.check is not Check.RATIONAL]
    assert stray == []


@pytest.mark.parametrize("step", _labelled_steps(Check.DEFINITION))
def test_a_definition_step_says_what_it_is(step):
    """One case per definition step (its id names the derivation and the step), so `pytest -v` lists them all."""
    assert step.description.startswith(DEFINITION_PREFIXES), (
        f"a DEFINITION step must be a definition, a model assumption or a named assumed theorem, and say so "
        f"({' / '.join(DEFINITION_PREFIXES)}): {step.description}"
    )


def test_the_label_rules_reject_unlabelled_steps():
    assert len(_labelled_steps(Check.DEFINITION)) >= 30
    claim = Step("Bayes' rule at every t.", sp.Symbol("a"), sp.Symbol("b"), Check.DEFINITION)
    assert not claim.description.startswith(DEFINITION_PREFIXES)
    assert Step("x", sp.Symbol("a"), sp.Symbol("a"), Check.RATIONAL).reason == ""
