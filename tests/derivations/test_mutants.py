"""Each step of the results listed below fails under a mutation of its formula: its check is not vacuous.

The mutation is a sign slip: in the stated right side the first sum met (pre-order) has its first term negated (a
right side with no sum is doubled and shifted, 2 r + 3). The mutated step is checked the way the step itself is
(simplify, or exact rational points) and must fail: the check is not vacuous, and a plausible slip in the formula
is caught. The steps: every step of the modules in `EVERY_STEP` ((j) optimal_variance, (l) sampling_noise, (m)
gaussian_kl_full, (n) decoder_mean, (o) parameterisations, and the third pass's (q), (r), (s), (t) and (u)); (f)'s
every-T induction; (g)'s steps on general densities; (h)'s steps that take the Gaussian-KL lemma from (c).
"""

from __future__ import annotations

import dataclasses

import pytest
import sympy as sp

from derivations import (
    decoder_mean,
    denoising_minimiser,
    elbo,
    gaussian_kl_full,
    interior_bin,
    maximum_likelihood,
    optimal_reverse,
    optimal_variance,
    parameterisations,
    reverse_variance,
    sampling_noise,
    score,
    variational_bound,
)
from derivations.chain import Check, Step

pytestmark = pytest.mark.symbolic


def mutate(expr: sp.Basic) -> sp.Basic:
    """The first sum (pre-order) with its first term negated; 2 expr + 3 when there is no sum."""
    for node in sp.preorder_traversal(expr):
        if isinstance(node, sp.Add):
            args = list(node.args)
            args[0] = -args[0]
            return expr.xreplace({node: sp.Add(*args)})
    return 2 * expr + 3


# The modules whose every step is a mutant target, one per line.
EVERY_STEP = (
    sampling_noise,
    gaussian_kl_full,
    decoder_mean,
    parameterisations,
    variational_bound,
    denoising_minimiser,
    score,
    interior_bin,
    optimal_reverse,
    optimal_variance,
)


def _new_steps() -> list[tuple[str, Step]]:
    chosen = []
    for module in EVERY_STEP:
        d = module.derivation()
        chosen += [(f"{d.key}-{i}", s) for i, s in enumerate(d.all_steps(), start=1)]
    # private: the every-T steps are the mutants' targets
    chosen += [(f"f-every-T-{i}", s) for i, s in enumerate(elbo._every_T_steps(), start=1)]
    # (g) opens with its general-family steps (up to the law-of-large-numbers definition), (h) with the KL lemma
    general = maximum_likelihood.derivation().all_steps()
    general = general[:next(i for i, s in enumerate(general) if s.check is Check.DEFINITION)]
    chosen += [(f"g-general-{i}", s) for i, s in enumerate(general, start=1)]
    lemma = reverse_variance.derivation().all_steps()
    lemma = lemma[:next(i for i, s in enumerate(lemma) if s.check is Check.DEFINITION)]
    chosen += [(f"h-lemma-{i}", s) for i, s in enumerate(lemma, start=1)]
    return [(name, step) for name, step in chosen if step.check is not Check.DEFINITION]


CASES = [pytest.param(step, id=name) for name, step in _new_steps()]


def _holds(step: Step) -> bool:
    return step.holds_symbolically() if step.check is Check.SIMPLIFY else step.holds_at_random_rationals()


def test_the_selection_covers_each_new_result():
    names = {name.rsplit("-", 1)[0] for name, _ in _new_steps()}
    assert {"j", "l", "m", "n", "o", "q", "r", "s", "t", "u", "f-every-T", "g-general", "h-lemma"} <= names
    general = [step for name, step in _new_steps() if name.startswith("g-general")]
    assert len(general) == 3 and general[0].description.startswith("Any family")
    lemma = [step for name, step in _new_steps() if name.startswith("h-lemma")]
    assert len(lemma) == 3 and "KL(N(m, v) || N(m, sigma^2))" in lemma[0].description


@pytest.mark.parametrize("step", CASES)
def test_mutated_step_fails(step):
    mutant = dataclasses.replace(step, rhs=mutate(sp.sympify(step.rhs)))
    assert mutant.rhs != step.rhs
    assert not _holds(mutant), f"the sign-slip mutant of this step passes its check: {step.description}"
