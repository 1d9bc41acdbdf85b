"""Every step of every derivation holds: SymPy closes it, or exact rational substitution does.

These are the generic checks; each derivation also has its own tests (tests/derivations/test_<module>.py) that
pin the results against the paper's formulas and show that a mutated formula is caught.
"""

from __future__ import annotations

import pytest

from derivations.chain import Check
from testkit.symbolic import step_cases

pytestmark = pytest.mark.symbolic


@pytest.mark.parametrize("step", step_cases())
def test_step_holds(step):
    if step.check is Check.SIMPLIFY:
        assert step.holds_symbolically(), f"simplify(lhs - rhs) != 0 for: {step.description}"
    else:
        assert step.holds_at_random_rationals(), f"nonzero at a rational point: {step.description}"
