"""Every step of every derivation holds: SymPy closes it, or exact rational substitution does.

These are the generic checks; each derivation also has its own tests (tests/test_derive_*.py) that
pin the results against the paper's formulas and show that a mutated formula is caught.
"""

from __future__ import annotations

import pytest

from derivations import all_derivations
from derivations.chain import Check

pytestmark = pytest.mark.symbolic

CASES = [
    pytest.param(step, id=f"{d.key}-{d.module.split('.')[-1]}-{i}")
    for d in all_derivations()
    for i, step in enumerate(d.all_steps(), start=1)
    if step.check is not Check.DEFINITION
]


@pytest.mark.parametrize("step", CASES)
def test_step_holds(step):
    if step.check is Check.SIMPLIFY:
        assert step.holds_symbolically(), f"simplify(lhs - rhs) != 0 for: {step.description}"
    else:
        assert step.holds_at_random_rationals(), f"nonzero at a rational point: {step.description}"
