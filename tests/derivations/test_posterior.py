"""(b) q(x_{t-1} | x_t, x_0): the derived results against eq. (7), exact normalisation, numeric oracles, mutants.

Every check that accepts the derived result is also run on deliberately wrong formulas (a square root
dropped, a sign flipped, alpha_bar_{t-1} and alpha_bar_t swapped) to show that it rejects them.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import stats

from derivations import posterior as post
from derivations.numeric import alpha_bar_from_betas, float64_function
from derivations.symbols import (
    alpha_bar_prev,
    alpha_bar_t,
    alpha_t,
    beta_t,
    normal_log_density,
    x_0,
    x_prev,
    x_t,
)
from testkit import strategies, tolerances
from testkit.symbolic import is_zero

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
betas = st.floats(min_value=1e-8, max_value=0.999, allow_nan=False)
alpha_bar_prevs = st.floats(min_value=1e-12, max_value=1.0, allow_nan=False)
examples = settings(max_examples=60, deadline=None)

# eq. (7) of Ho et al., typed from the paper (REFERENCE.md section 1).
PAPER_C0 = sp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)
PAPER_CT = sp.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
PAPER_VAR = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t


# --- numpy reference, written independently (stable: 1 - alpha_bar_t = (1 - alpha_bar_{t-1}) + alpha_bar_{t-1} beta_t)
def np_one_minus_alpha_bar_t(beta, abp):
    return (1.0 - abp) + abp * beta


def np_c0(beta, abp):
    return np.sqrt(abp) * beta / np_one_minus_alpha_bar_t(beta, abp)


def np_ct(beta, abp):
    return np.sqrt(1.0 - beta) * (1.0 - abp) / np_one_minus_alpha_bar_t(beta, abp)


def np_var(beta, abp):
    return (1.0 - abp) / np_one_minus_alpha_bar_t(beta, abp) * beta


# --- the checks, each usable on the true result and on a mutant ---------------------------------
def equals_paper(derived: sp.Expr, paper: sp.Expr) -> bool:
    return is_zero(derived - paper)


# On the domain 0 < beta_t < 1, 0 < alpha_bar_{t-1} <= 1 write alpha_t = a^2 and alpha_bar_{t-1} = b^2 with
# a, b > 0: every square root of the posterior becomes rational, so identities reduce to sympy.cancel.
_a = sp.Symbol("a", positive=True)
_b = sp.Symbol("b", positive=True)
_RATIONAL = {beta_t: 1 - _a**2, alpha_bar_prev: _b**2}


def density_is_exact(mean: sp.Expr, variance: sp.Expr) -> bool:
    """log q(x_t|x_{t-1}) + log q(x_{t-1}|x_0) - log q(x_t|x_0) - log N(x_{t-1}; mean, variance) == 0.

    The difference splits into log terms (the normalisers) and the rest (the exponents). The rest must
    cancel to 0 and exp(2 * logs), a rational function once alpha_t = a^2, alpha_bar_{t-1} = b^2, to 1.
    """
    log_ratio = (
        normal_log_density(x_t, post.STEP_MEAN, post.STEP_VARIANCE)
        + normal_log_density(x_prev, post.PREV_MEAN, post.PREV_VARIANCE)
        - normal_log_density(x_t, post.MARGINAL_MEAN, post.MARGINAL_VARIANCE)
    )
    difference = sp.expand(log_ratio - normal_log_density(x_prev, mean, variance))
    logs = sp.Add(*[term for term in sp.Add.make_args(difference) if term.has(sp.log)])
    exponents = difference - logs
    return sp.cancel(exponents.subs(_RATIONAL)) == 0 and sp.cancel(sp.exp(2 * logs).subs(_RATIONAL)) == 1


def matches_numpy(function, reference, points) -> bool:
    """The oracle agrees with the numpy formula at every point (an oracle that divides by zero does not)."""
    try:
        got = np.array([function(b, a) for b, a in points])
    except ZeroDivisionError:
        return False
    want = np.array([reference(b, a) for b, a in points])
    return bool(np.allclose(got, want, rtol=F64.rtol, atol=F64.atol))


POINTS = [(1e-8, 1.0), (0.02, 1.0), (1e-4, 0.999), (0.5, 0.3), (0.999, 1e-6), (0.3, 0.9999999)]


# --- results equal the paper --------------------------------------------------------------------
def test_mean_coefficients_and_variance_equal_eq7():
    assert equals_paper(post.MEAN_COEF_X0, PAPER_C0), "coefficient of x_0 differs from eq. (7)"
    assert equals_paper(post.MEAN_COEF_XT, PAPER_CT), "coefficient of x_t differs from eq. (7)"
    assert equals_paper(post.VARIANCE, PAPER_VAR), "beta_tilde_t differs from eq. (7)"
    assert equals_paper(post.POSTERIOR_MEAN, PAPER_C0 * x_0 + PAPER_CT * x_t)


def test_seed_precision_form():
    # The seed's bracket: 1/beta_tilde = alpha_t / (1 - alpha_t) + 1 / (1 - alpha_bar_{t-1}).
    assert is_zero(1 / post.VARIANCE - (alpha_t / (1 - alpha_t) + 1 / (1 - alpha_bar_prev)))


def test_density_is_exactly_the_bayes_ratio_normalisation_included():
    assert density_is_exact(post.POSTERIOR_MEAN, post.VARIANCE)


def test_t1_is_a_point_mass_at_x0():
    assert post.VARIANCE.subs(alpha_bar_prev, 1) == 0
    assert is_zero(post.POSTERIOR_MEAN.subs(alpha_bar_prev, 1) - x_0)
    assert post.posterior_variance(0.02, 1.0) == 0.0, "beta_tilde_1 must be exactly 0"
    assert post.posterior_mean_coef_x0(0.02, 1.0) == 1.0
    assert post.posterior_mean_coef_xt(0.02, 1.0) == 0.0


def test_variance_gap_is_a_square_times_positive():
    # beta_t - beta_tilde_t = beta_t^2 alpha_bar_{t-1} / (1 - alpha_bar_t) >= 0, zero only as beta_t -> 0.
    assert is_zero(beta_t - post.VARIANCE - beta_t**2 * alpha_bar_prev / (1 - alpha_bar_t))


# --- mutants are rejected by the same checks ----------------------------------------------------
MUTANTS = [
    pytest.param(post.MEAN_COEF_X0.subs(sp.sqrt(alpha_bar_prev), alpha_bar_prev), PAPER_C0, id="c0-sqrt-dropped"),
    pytest.param(-post.MEAN_COEF_X0, PAPER_C0, id="c0-sign-flipped"),
    pytest.param(
        sp.sqrt(alpha_t) * (1 - alpha_bar_t) / (1 - alpha_bar_prev), PAPER_CT, id="ct-alpha-bar-t-and-t-1-swapped"
    ),
    pytest.param(post.MEAN_COEF_XT.subs(sp.sqrt(1 - beta_t), 1 - beta_t), PAPER_CT, id="ct-sqrt-dropped"),
    pytest.param((1 - alpha_bar_t) / (1 - alpha_bar_prev) * beta_t, PAPER_VAR, id="var-t-and-t-1-swapped"),
    pytest.param(post.VARIANCE / beta_t, PAPER_VAR, id="var-beta-dropped"),
]


@pytest.mark.parametrize(("mutant", "paper"), MUTANTS)
def test_paper_check_rejects_mutant(mutant, paper):
    assert not equals_paper(mutant, paper)


@pytest.mark.parametrize(
    ("mean", "variance"),
    [
        pytest.param(-post.MEAN_COEF_X0 * x_0 + post.MEAN_COEF_XT * x_t, post.VARIANCE, id="mean-sign-flipped"),
        pytest.param(post.POSTERIOR_MEAN, post.VARIANCE * 2, id="normaliser-off-by-constant"),
    ],
)
def test_exact_density_check_rejects_mutant(mean, variance):
    assert not density_is_exact(mean, variance)


@pytest.mark.parametrize(
    ("expr", "reference"),
    [
        pytest.param(sp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_prev), np_c0, id="c0-with-1-alpha_bar_prev"),
        pytest.param(PAPER_CT.subs(sp.sqrt(alpha_t), alpha_t), np_ct, id="ct-sqrt-dropped"),
        pytest.param(beta_t * (1 - alpha_bar_t) / (1 - alpha_bar_prev), np_var, id="var-t-and-t-1-swapped"),
    ],
)
def test_numeric_check_rejects_mutant(expr, reference):
    mutant = float64_function(expr, (beta_t, alpha_bar_prev), "mutant")
    assert not matches_numpy(mutant, reference, POINTS)


# --- numeric oracles vs independent numpy formulas ----------------------------------------------
@examples
@given(beta=betas, abp=alpha_bar_prevs)
@example(beta=1e-8, abp=1.0)  # t = 1 with the smallest beta
@example(beta=0.999, abp=1.0)  # t = 1 with the largest beta
@example(beta=1e-8, abp=1.0 - 2.0**-53)  # t = 2 right after a tiny first beta
@example(beta=0.999, abp=1e-12)  # late in a harsh schedule
def test_numeric_oracles_match_numpy(beta, abp):
    for function, reference, name in [
        (post.posterior_mean_coef_x0, np_c0, "coefficient of x_0"),
        (post.posterior_mean_coef_xt, np_ct, "coefficient of x_t"),
        (post.posterior_variance, np_var, "beta_tilde_t"),
    ]:
        assert_allclose(function(beta, abp), reference(beta, abp), **F64.kwargs(), err_msg=name)
    assert matches_numpy(post.posterior_variance, np_var, [(beta, abp)])


@examples
@given(beta=betas, abp=alpha_bar_prevs)
@example(beta=1e-8, abp=1.0)
@example(beta=0.999, abp=1.0)
def test_bounds_and_signs(beta, abp):
    var = post.posterior_variance(beta, abp)
    assert 0.0 <= var <= beta, "0 <= beta_tilde_t <= beta_t"
    assert (var == 0.0) == (abp == 1.0), "beta_tilde_t = 0 exactly when alpha_bar_{t-1} = 1 (t = 1)"
    assert post.posterior_mean_coef_x0(beta, abp) > 0.0
    assert post.posterior_mean_coef_xt(beta, abp) >= 0.0


@settings(max_examples=15, deadline=None)
@given(beta=st.floats(0.05, 0.95), abp=st.floats(0.05, 0.95), x0=st.floats(-2, 2), xt=st.floats(-2, 2),
       xprev=st.floats(-2, 2))  # ranges keep every density above float64 underflow
@example(beta=0.02, abp=0.99, x0=1.0, xt=-1.0, xprev=0.5)
def test_bayes_ratio_with_scipy_densities(beta, abp, x0, xt, xprev):
    # q(x_t|x_{t-1}) q(x_{t-1}|x_0) / q(x_t|x_0) with scipy's normal densities = N(x_{t-1}; mu_tilde, beta_tilde).
    abt = abp * (1 - beta)
    ratio = (
        stats.norm.pdf(xt, np.sqrt(1 - beta) * xprev, np.sqrt(beta))
        * stats.norm.pdf(xprev, np.sqrt(abp) * x0, np.sqrt(1 - abp))
        / stats.norm.pdf(xt, np.sqrt(abt) * x0, np.sqrt(1 - abt))
    )
    mean = post.posterior_mean_coef_x0(beta, abp) * x0 + post.posterior_mean_coef_xt(beta, abp) * xt
    density = stats.norm.pdf(xprev, mean, np.sqrt(post.posterior_variance(beta, abp)))
    assert_allclose(density, ratio, **F64.kwargs(), err_msg="posterior density vs Bayes ratio (scipy)")


@settings(max_examples=20, deadline=None)
@given(betas=strategies.schedules(max_T=200))
@example(betas=strategies.PAPER_T1000)
@example(betas=strategies.SINGLE_STEP_TINY)
@example(betas=strategies.SINGLE_STEP_LARGE)
def test_along_a_schedule(betas):
    alpha_bar = alpha_bar_from_betas(betas)  # 50-digit, index t = 0..T
    assert all(alpha_bar[t] < alpha_bar[t - 1] for t in range(1, len(alpha_bar))), "alpha_bar decreasing"
    beta_tilde = post.posterior_variance(betas, alpha_bar[:-1])  # [T], t = 1..T
    assert beta_tilde[0] == 0.0, "beta_tilde_1 = 0"
    assert np.all(beta_tilde[1:] > 0.0) and np.all(beta_tilde <= betas), "0 < beta_tilde_t <= beta_t for t >= 2"
