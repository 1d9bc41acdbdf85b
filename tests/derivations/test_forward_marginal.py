"""(a) q(x_t | x_0): the derived results against eq. (4), the Gaussian integral by sympy.integrate, oracles, mutants.

Every check that accepts the derived result is also run on deliberately wrong formulas (a square root
dropped, variances added without squaring the coefficients, alpha_bar_{t-1} for alpha_bar_t) to show
that it rejects them.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from derivations import forward_marginal as fm
from derivations.chain import Step
from derivations.numeric import alpha_bar_from_betas, float64_function
from derivations.symbols import (
    alpha_bar,
    alpha_bar_prev,
    alpha_bar_t,
    beta_t,
    eps,
    normal_density,
    x_0,
    x_t,
)
from testkit import strategies, tolerances
from testkit.symbolic import is_zero

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
alpha_bars = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
examples = settings(max_examples=60, deadline=None)


# --- the checks, each usable on the true result and on a mutant ---------------------------------
def equals_paper_mean_coef(expr: sp.Expr) -> bool:
    return is_zero(expr - sp.sqrt(alpha_bar))


def equals_paper_variance(expr: sp.Expr) -> bool:
    return is_zero(expr - (1 - alpha_bar))


def two_step_merge_is_one_step(x2: sp.Expr) -> bool:
    """x_2, linear in independent N(0, 1) noises eps_1, eps_2, has mean sqrt(a1 a2) x_0 and variance 1 - a1 a2."""
    x2 = sp.expand(x2)
    mean = x2.subs({fm.eps_1: 0, fm.eps_2: 0})
    variance = x2.coeff(fm.eps_1) ** 2 + x2.coeff(fm.eps_2) ** 2
    return is_zero(mean - sp.sqrt(fm.alpha_1 * fm.alpha_2) * x_0) and is_zero(
        variance - (1 - fm.alpha_1 * fm.alpha_2)
    )


def convolution_is_marginal(marginal_mean_coef: sp.Expr, marginal_variance: sp.Expr) -> bool:
    """The derived convolution equals N(x_t; c x_0, v) at exact rational points (the framework's check)."""
    want = normal_density(x_t, marginal_mean_coef * x_0, marginal_variance)
    step = Step("convolution", fm.CONVOLUTION, want, domains=((x_0, (-3, 3)), (x_t, (-3, 3))))
    return step.holds_at_random_rationals(trials=4)


# --- results equal the paper --------------------------------------------------------------------
def test_results_equal_eq4():
    assert equals_paper_mean_coef(fm.MEAN_COEF), "mean coefficient differs from sqrt(alpha_bar_t)"
    assert equals_paper_variance(fm.VARIANCE), "variance differs from 1 - alpha_bar_t"
    assert is_zero(fm.X_T_REPARAMETERISED - (sp.sqrt(alpha_bar) * x_0 + sp.sqrt(1 - alpha_bar) * eps))
    assert fm.MEAN_COEF.free_symbols == {alpha_bar} and fm.VARIANCE.free_symbols == {alpha_bar}


def test_two_step_composition():
    assert two_step_merge_is_one_step(fm.X2_COMPOSED)
    # The merged variance, term by term as the seed writes it: a2 (1 - a1) + (1 - a2).
    assert is_zero(fm.X2_VARIANCE_SUM - (fm.alpha_2 * (1 - fm.alpha_1) + (1 - fm.alpha_2)))


def test_inductive_step_in_terms_of_alpha_bar_t():
    assert is_zero(fm.MEAN_COEF_T - sp.sqrt(alpha_bar_t))
    assert is_zero(fm.VARIANCE_T - (1 - alpha_bar_t))
    # Applying the step t times from alpha_bar_0 = 1 reproduces prod alpha_s: unroll T = 3 symbolically.
    a = sp.symbols("a1:4", positive=True)
    coef, var = sp.Integer(1), sp.Integer(0)
    for a_s in a:
        coef = fm.MEAN_COEF_T.subs({alpha_bar_prev: coef**2, beta_t: 1 - a_s})
        var = fm.VARIANCE_T.subs({alpha_bar_prev: 1 - var, beta_t: 1 - a_s})
    assert is_zero(coef - sp.sqrt(a[0] * a[1] * a[2]))
    assert is_zero(var - (1 - a[0] * a[1] * a[2]))


def test_gaussian_integral_lemma_by_sympy_integrate():
    u, A, B = fm.u, fm.A, fm.B
    integral = sp.integrate(sp.exp(-A * u**2 + B * u), (u, -sp.oo, sp.oo))
    assert is_zero(integral - fm.GAUSSIAN_INTEGRAL)


def test_convolution_is_the_marginal_density():
    # With the lemma proved above, the chain lemma -> completed square -> marginal is checked here.
    assert convolution_is_marginal(sp.sqrt(alpha_bar_t), 1 - alpha_bar_t)


# --- mutants are rejected by the same checks ----------------------------------------------------
@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(alpha_bar, id="sqrt-dropped"),
        pytest.param(-sp.sqrt(alpha_bar), id="sign-flipped"),
        pytest.param(sp.sqrt(1 - alpha_bar), id="noise-coefficient-for-mean"),
    ],
)
def test_mean_check_rejects_mutant(mutant):
    assert not equals_paper_mean_coef(mutant)


@pytest.mark.parametrize(
    "mutant",
    [pytest.param(sp.sqrt(1 - alpha_bar), id="std-for-variance"), pytest.param(alpha_bar, id="complement")],
)
def test_variance_check_rejects_mutant(mutant):
    assert not equals_paper_variance(mutant)


@pytest.mark.parametrize(
    "mutant",
    [
        # The noise coefficient of the second step not under the root: variance a2 (1-a1) + (1-a2)^2.
        pytest.param(
            sp.sqrt(fm.alpha_2) * fm.X1 + (1 - fm.alpha_2) * fm.eps_2, id="sqrt-dropped-on-step-noise"
        ),
        # x_1 scaled by alpha_2 instead of sqrt(alpha_2).
        pytest.param(fm.alpha_2 * fm.X1 + sp.sqrt(1 - fm.alpha_2) * fm.eps_2, id="sqrt-dropped-on-scale"),
        # Standard deviations added instead of variances (one noise of std sqrt(a2(1-a1)) + sqrt(1-a2)).
        pytest.param(
            sp.sqrt(fm.alpha_1 * fm.alpha_2) * x_0
            + (sp.sqrt(fm.alpha_2 * (1 - fm.alpha_1)) + sp.sqrt(1 - fm.alpha_2)) * fm.eps_1,
            id="stds-added",
        ),
    ],
)
def test_two_step_check_rejects_mutant(mutant):
    assert not two_step_merge_is_one_step(mutant)


@pytest.mark.parametrize(
    ("mean_coef", "variance"),
    [
        pytest.param(sp.sqrt(alpha_bar_prev), 1 - alpha_bar_prev, id="alpha_bar_t-vs-t-1"),
        pytest.param(sp.sqrt(alpha_bar_t), 1 - alpha_bar_t**2, id="variance-squared"),
        pytest.param(alpha_bar_t, 1 - alpha_bar_t, id="sqrt-dropped"),
    ],
)
def test_convolution_check_rejects_mutant(mean_coef, variance):
    assert not convolution_is_marginal(mean_coef, variance)


def test_numeric_check_rejects_mutant():
    mutant = float64_function(alpha_bar, (alpha_bar,), "mutant")  # sqrt dropped
    points = np.array([0.1, 0.5, 0.99])
    assert not np.allclose(mutant(points), np.sqrt(points), rtol=F64.rtol, atol=F64.atol)


# --- numeric oracles ----------------------------------------------------------------------------
@examples
@given(ab=alpha_bars)
@example(ab=1.0 - 1e-8)  # t = 1 with beta_1 = 1e-8
@example(ab=1.0 - 2.0**-53)
@example(ab=1e-300)  # t = T of a harsh schedule
@example(ab=0.0)  # alpha_bar underflowed
def test_numeric_oracles_match_numpy(ab):
    assert_allclose(fm.q_xt_mean_coef(ab), np.sqrt(ab), **F64.kwargs(), err_msg="sqrt(alpha_bar_t)")
    assert_allclose(fm.q_xt_variance(ab), 1.0 - ab, **F64.kwargs(), err_msg="1 - alpha_bar_t")
    # Mean^2 + variance = 1: q(x_t | x_0) preserves unit variance for unit-variance data.
    assert_allclose(fm.q_xt_mean_coef(ab) ** 2 + fm.q_xt_variance(ab), 1.0, **F64.kwargs())


@settings(max_examples=20, deadline=None)
@given(betas=strategies.schedules(max_T=200))
@example(betas=strategies.PAPER_T1000)
@example(betas=strategies.SINGLE_STEP_TINY)
@example(betas=strategies.SINGLE_STEP_LARGE)
def test_inductive_identity_along_a_schedule(betas):
    alpha_bar_ = alpha_bar_from_betas(betas)  # 50-digit, index t = 0..T
    assert all(0 < alpha_bar_[t] < alpha_bar_[t - 1] <= 1 for t in range(1, len(alpha_bar_))), "alpha_bar decreasing"
    variance = fm.q_xt_variance(alpha_bar_)  # [T + 1]
    coef = fm.q_xt_mean_coef(alpha_bar_)
    assert variance[0] == 0.0 and coef[0] == 1.0, "t = 0: x_0 itself"
    # One forward step maps the marginal at t - 1 onto the marginal at t.
    assert_allclose(coef[1:], np.sqrt(1 - betas) * coef[:-1], **F64.kwargs(), err_msg="sqrt(alpha_t) c_{t-1}")
    assert_allclose(variance[1:], (1 - betas) * variance[:-1] + betas, **F64.kwargs(),
                    err_msg="alpha_t (1 - alpha_bar_{t-1}) + beta_t")
    assert np.all(np.diff(variance) >= 0), "the forward variance grows with t"
