"""(i) Strided posterior q(x_s | x_t, x_0) and DDIM: results vs Song et al. (2021), reductions, oracles, mutants.

The derived results are compared with the paper's forms typed here, reduced to derivations (b) and (d)
at s = t - 1, and DDIM's eta = 1 step is shown to be the strided posterior exactly. Every check that
accepts the derived result is also run on deliberately wrong formulas to show that it rejects them.
"""

from __future__ import annotations

import dataclasses

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import derivations
from derivations import eps_parameterisation as ep
from derivations import posterior as post
from derivations import strided
from derivations.chain import Check, Step
from derivations.numeric import DIGITS
from derivations.symbols import alpha_bar, alpha_bar_prev, alpha_bar_t, beta_t, eps, normal_density, x_0, x_t
from testkit import tolerances
from testkit.symbolic import is_zero, is_zero_on_domain

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
S = strided.ALPHA_BAR_S
eta = strided.eta

# Song et al. (2021) eqs. (7), (12), (16), with their alpha written abar, typed from the paper.
PAPER_C0 = sp.sqrt(S) * (1 - alpha_bar / S) / (1 - alpha_bar)
PAPER_CT = sp.sqrt(alpha_bar / S) * (1 - S) / (1 - alpha_bar)
PAPER_BETA_TILDE = (1 - S) / (1 - alpha_bar) * (1 - alpha_bar / S)
PAPER_BETA = 1 - alpha_bar / S
PAPER_EPS_MEAN = sp.sqrt(S / alpha_bar) * (x_t - (1 - alpha_bar / S) / sp.sqrt(1 - alpha_bar) * eps)
PAPER_SIGMA2 = eta**2 * (1 - S) / (1 - alpha_bar) * (1 - alpha_bar / S)
PAPER_X0_HAT = (x_t - sp.sqrt(1 - alpha_bar) * eps) / sp.sqrt(alpha_bar)
PAPER_DDIM_MEAN = sp.sqrt(S) * PAPER_X0_HAT + sp.sqrt(1 - S - PAPER_SIGMA2) * eps

# s = t - 1 in the symbols of derivations/symbols.py.
ONE_STEP = {S: alpha_bar_prev, alpha_bar: alpha_bar_t}

# The domain 0 < abar_t < abar_s < 1 as abar_s = 1 / (1 + w), abar_t / abar_s = 1 / (1 + v) with w, v > 0:
# every quantity under a square root then factors into sums of positive terms, which SymPy can take apart.
_w, _v = sp.symbols("w v", positive=True)
_DOMAIN = {S: 1 / (1 + _w), alpha_bar: 1 / ((1 + _w) * (1 + _v))}


def _result(description_start: str) -> Step:
    """The result step of derivation (i) whose description starts with `description_start`."""
    (step,) = [s for s in strided.derivation().results if s.description.startswith(description_start)]
    return step


# --- registration and exports -------------------------------------------------------------------
def test_registered_as_derivation_i():
    assert "strided" in derivations.MODULES
    (d,) = [d for d in derivations.all_derivations() if d.key == "i"]
    assert d.module == "derivations.strided"
    checks = {step.check for step in d.all_steps()}
    assert Check.SIMPLIFY in checks and Check.RATIONAL not in checks, "every checked step is closed by SymPy"


@pytest.mark.parametrize(
    ("name", "symbols"),
    [
        ("STRIDED_MEAN_COEF_X0", {alpha_bar, S}),
        ("STRIDED_MEAN_COEF_XT", {alpha_bar, S}),
        ("STRIDED_POSTERIOR_MEAN", {alpha_bar, S, x_0, x_t}),
        ("STRIDED_BETA_TILDE", {alpha_bar, S}),
        ("STRIDED_BETA", {alpha_bar, S}),
        ("STRIDED_EPS_MEAN", {alpha_bar, S, x_t, eps}),
        ("DDIM_SIGMA2", {alpha_bar, S, eta}),
        ("DDIM_MEAN", {alpha_bar, S, x_t, eps, eta}),
    ],
)
def test_exported_expression_symbols(name, symbols):
    assert getattr(strided, name).free_symbols == symbols, f"{name} is not an expression in {symbols}"


# --- results equal the paper --------------------------------------------------------------------
@pytest.mark.parametrize(
    ("derived", "paper", "name"),
    [
        (strided.STRIDED_MEAN_COEF_X0, PAPER_C0, "c_0"),
        (strided.STRIDED_MEAN_COEF_XT, PAPER_CT, "c_t"),
        (strided.STRIDED_POSTERIOR_MEAN, PAPER_C0 * x_0 + PAPER_CT * x_t, "mu_tilde_{t,s}"),
        (strided.STRIDED_BETA_TILDE, PAPER_BETA_TILDE, "beta_tilde_{t,s}"),
        (strided.STRIDED_BETA, PAPER_BETA, "1 - abar_t / abar_s"),
        (strided.STRIDED_EPS_MEAN, PAPER_EPS_MEAN, "eps-mean"),
        (strided.DDIM_SIGMA2, PAPER_SIGMA2, "sigma^2(eta), eq. 16"),
        (strided.DDIM_MEAN, PAPER_DDIM_MEAN, "DDIM mean, eq. 12"),
    ],
)
def test_results_equal_paper(derived, paper, name):
    assert is_zero(derived - paper), f"{name} differs from Song et al. (2021)"


def test_stride_composes_to_q_xt_given_x0():
    # sqrt(abar_t / abar_s) sqrt(abar_s) = sqrt(abar_t);
    # (abar_t / abar_s)(1 - abar_s) + 1 - abar_t / abar_s = 1 - abar_t.
    assert is_zero(strided.STRIDE_MEAN_COEF * sp.sqrt(S) - sp.sqrt(alpha_bar))
    assert is_zero(strided.STRIDE_MEAN_COEF**2 * (1 - S) + strided.STRIDED_BETA - (1 - alpha_bar))


def test_density_is_exactly_the_bayes_ratio():
    assert _result("The Bayes ratio is exactly").holds_at_random_rationals(trials=6, seed=1)


# --- reductions to (b) and (d) at s = t - 1 ------------------------------------------------------
@pytest.mark.parametrize(
    ("strided_expr", "one_step_expr", "name"),
    [
        (strided.STRIDED_MEAN_COEF_X0, post.MEAN_COEF_X0, "c_0 -> (b)"),
        (strided.STRIDED_MEAN_COEF_XT, post.MEAN_COEF_XT, "c_t -> (b)"),
        (strided.STRIDED_BETA_TILDE, post.VARIANCE, "beta_tilde_{t,s} -> beta_tilde_t"),
        (strided.STRIDED_BETA, beta_t, "1 - abar_t / abar_s -> beta_t"),
        (strided.STRIDED_EPS_MEAN, ep.EPS_MEAN, "eps-mean -> Algorithm 2 line 4 (d)"),
    ],
)
def test_reduces_to_one_step(strided_expr, one_step_expr, name):
    assert is_zero(strided_expr.subs(ONE_STEP, simultaneous=True) - one_step_expr), name


def test_s0_is_the_point_mass_at_x0():
    assert strided.STRIDED_BETA_TILDE.subs(S, 1) == 0
    assert is_zero(strided.STRIDED_POSTERIOR_MEAN.subs(S, 1) - x_0)
    assert strided.strided_beta_tilde(0.3, 1.0) == 0.0, "beta_tilde_{t,0} must be exactly 0"
    assert strided.strided_posterior_mean_coef_x0(0.3, 1.0) == 1.0
    assert strided.strided_posterior_mean_coef_xt(0.3, 1.0) == 0.0


# --- DDIM ---------------------------------------------------------------------------------------
def test_ddim_eta1_is_the_strided_posterior():
    q_sigma_mean_eta1 = strided.Q_SIGMA_MEAN.subs(strided.sigma2_ddim, strided.DDIM_SIGMA2.subs(eta, 1))
    assert is_zero(strided.DDIM_SIGMA2.subs(eta, 1) - strided.STRIDED_BETA_TILDE), "variance at eta = 1"
    assert is_zero_on_domain(q_sigma_mean_eta1 - strided.STRIDED_POSTERIOR_MEAN, _DOMAIN), "mean at eta = 1"
    assert is_zero_on_domain(strided.DDIM_MEAN.subs(eta, 1) - strided.STRIDED_EPS_MEAN, _DOMAIN), "eps-mean at eta = 1"


def test_ddim_eta0_is_deterministic():
    assert strided.DDIM_SIGMA2.subs(eta, 0) == 0
    assert is_zero(strided.DDIM_MEAN.subs(eta, 0) - (sp.sqrt(S) * PAPER_X0_HAT + sp.sqrt(1 - S) * eps))


def test_ddim_keeps_the_marginal_for_every_sigma2():
    # x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) e and x_s = mean_sigma(x_t, x_0) + sigma z:
    # x_s | x_0 ~ N(sqrt(abar_s) x_0, 1 - abar_s).
    e, z = sp.symbols("e z", real=True)
    x_s = sp.expand(
        strided.Q_SIGMA_MEAN.subs(x_t, sp.sqrt(alpha_bar) * x_0 + sp.sqrt(1 - alpha_bar) * e)
        + sp.sqrt(strided.sigma2_ddim) * z
    )
    assert is_zero(x_s.subs({e: 0, z: 0}) - sp.sqrt(S) * x_0), "mean of x_s given x_0"
    assert is_zero(x_s.coeff(e) ** 2 + x_s.coeff(z) ** 2 - (1 - S)), "variance of x_s given x_0"


def test_sigma2_at_eta1_leaves_a_real_square_root():
    # 1 - abar_s - sigma^2(1) = (abar_t / abar_s)(1 - abar_s)^2 / (1 - abar_t) >= 0.
    gap = 1 - S - strided.DDIM_SIGMA2.subs(eta, 1)
    assert is_zero(gap - (alpha_bar / S) * (1 - S) ** 2 / (1 - alpha_bar))


# --- mutants are rejected by the same checks ----------------------------------------------------
MUTANTS = [
    pytest.param(strided.STRIDED_MEAN_COEF_XT.subs(sp.sqrt(alpha_bar), alpha_bar), PAPER_CT, id="ct-sqrt-dropped"),
    pytest.param(-strided.STRIDED_MEAN_COEF_X0, PAPER_C0, id="c0-sign-flipped"),
    pytest.param(sp.sqrt(S) * (1 - alpha_bar / S) / (1 - S), PAPER_C0, id="c0-abar-t-and-s-swapped"),
    pytest.param((1 - alpha_bar) / (1 - S) * PAPER_BETA, PAPER_BETA_TILDE, id="beta-tilde-t-and-s-swapped"),
    pytest.param(strided.STRIDED_BETA_TILDE * eta, PAPER_SIGMA2, id="sigma2-eta-not-squared"),
    pytest.param(
        sp.sqrt(S / alpha_bar) * (x_t - (1 - alpha_bar / S) / (1 - alpha_bar) * eps), PAPER_EPS_MEAN,
        id="eps-mean-sqrt-dropped",
    ),
]


@pytest.mark.parametrize(("mutant", "paper"), MUTANTS)
def test_paper_check_rejects_mutant(mutant, paper):
    assert not is_zero(mutant - paper)


def test_step_check_rejects_sqrt_dropped_in_mean_coefficient():
    step = _result("Strided posterior mean coefficient of x_t")
    assert step.holds_symbolically()
    mutant_lhs = step.lhs.subs(sp.sqrt(alpha_bar), alpha_bar)
    assert mutant_lhs != step.lhs, "the mutation changed nothing"
    assert not dataclasses.replace(step, lhs=mutant_lhs).holds_symbolically()


def test_rational_check_rejects_wrong_variance_in_bayes_density():
    step = _result("The Bayes ratio is exactly")
    wrong = normal_density(strided.x_s, strided.STRIDED_POSTERIOR_MEAN, strided.STRIDED_BETA)
    assert not dataclasses.replace(step, rhs=wrong).holds_at_random_rationals(trials=3)


def test_eta1_check_rejects_the_large_variance():
    # With sigma^2 = 1 - abar_t / abar_s (the forward variance over the stride) q_sigma is not the strided posterior.
    step = _result("... and the q_sigma mean is the strided posterior mean")
    mutant = strided.Q_SIGMA_MEAN.subs(strided.sigma2_ddim, strided.STRIDED_BETA)
    assert not dataclasses.replace(step, lhs=mutant).holds_at_random_rationals(trials=3)
    assert not is_zero_on_domain(mutant - strided.STRIDED_POSTERIOR_MEAN, _DOMAIN)


# --- numeric oracles vs independent numpy formulas ----------------------------------------------
# abar_s - abar_t is exact in float64 when the two are close (Sterbenz), so these forms keep their digits.
def np_beta(abt, abs_):
    return (abs_ - abt) / abs_


def np_beta_tilde(abt, abs_):
    return (1.0 - abs_) / (1.0 - abt) * np_beta(abt, abs_)


def np_c0(abt, abs_):
    return np.sqrt(abs_) * np_beta(abt, abs_) / (1.0 - abt)


def np_ct(abt, abs_):
    return np.sqrt(abt / abs_) * (1.0 - abs_) / (1.0 - abt)


NUMERIC = [
    (strided.strided_posterior_mean_coef_x0, np_c0, "c_0"),
    (strided.strided_posterior_mean_coef_xt, np_ct, "c_t"),
    (strided.strided_beta_tilde, np_beta_tilde, "beta_tilde_{t,s}"),
    (strided.strided_beta, np_beta, "1 - abar_t / abar_s"),
]
POINTS = [(0.5, 0.9), (1e-4, 0.999), (0.98, 0.99), (0.3, 1.0), (1e-6, 1e-3), (0.999999, 1.0), (0.4, 0.4000001)]


@pytest.mark.parametrize(("abt", "abs_"), POINTS)
def test_numeric_oracles_match_numpy(abt, abs_):
    for function, reference, name in NUMERIC:
        assert_allclose(function(abt, abs_), reference(abt, abs_), **F64.kwargs(), err_msg=name)
    for e in (0.0, 0.5, 1.0):
        assert_allclose(
            strided.ddim_sigma2(abt, abs_, e), e**2 * np_beta_tilde(abt, abs_), **F64.kwargs(), err_msg="sigma^2(eta)"
        )


def test_numeric_oracles_broadcast():
    abt = np.array([0.5, 1e-4, 0.98])  # [3]
    abs_ = np.array([0.9, 0.999, 0.99])  # [3]
    got = strided.strided_beta_tilde(abt, abs_)
    assert got.shape == (3,)
    assert_allclose(got, np_beta_tilde(abt, abs_), **F64.kwargs(), err_msg="beta_tilde_{t,s} over an array")


@pytest.mark.parametrize(("beta", "abp"), [(1e-3, 1.0), (0.02, 0.9), (0.5, 0.3)])
def test_numeric_reduces_to_posterior(beta, abp):
    # abar_t = abar_{t-1} (1 - beta_t) at 50 digits, so that no float64 rounding enters 1 - abar_t / abar_s.
    with mpmath.workdps(DIGITS):
        abt = mpmath.mpf(abp) * (1 - mpmath.mpf(beta))
    for function, one_step, name in [
        (strided.strided_posterior_mean_coef_x0, post.posterior_mean_coef_x0, "c_0 -> (b)"),
        (strided.strided_posterior_mean_coef_xt, post.posterior_mean_coef_xt, "c_t -> (b)"),
        (strided.strided_beta_tilde, post.posterior_variance, "beta_tilde_{t,s} -> beta_tilde_t"),
    ]:
        assert_allclose(function(abt, mpmath.mpf(abp)), one_step(beta, abp), **F64.kwargs(), err_msg=name)
    assert_allclose(strided.strided_beta(abt, mpmath.mpf(abp)), beta, **F64.kwargs(), err_msg="strided beta -> beta_t")


@settings(max_examples=40, deadline=None)
@given(
    abs_=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False),
    ratio=st.floats(min_value=1e-9, max_value=1.0 - 1e-9, allow_nan=False),
    e=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
@example(abs_=1.0, ratio=0.5, e=1.0)  # s = 0
@example(abs_=1.0, ratio=1.0 - 1e-9, e=0.0)  # s = 0, t = 1 with a tiny beta_1
@example(abs_=1e-6, ratio=1e-9, e=1.0)  # late in a harsh schedule
def test_bounds(abs_, ratio, e):
    abt = abs_ * ratio
    beta_tilde = strided.strided_beta_tilde(abt, abs_)
    assert 0.0 <= beta_tilde <= strided.strided_beta(abt, abs_), "0 <= beta_tilde_{t,s} <= 1 - abar_t / abar_s"
    assert (beta_tilde == 0.0) == (abs_ == 1.0), "beta_tilde_{t,s} = 0 exactly when abar_s = 1 (s = 0)"
    sigma2 = strided.ddim_sigma2(abt, abs_, e)
    assert 0.0 <= sigma2 <= beta_tilde, "0 <= sigma^2(eta) <= beta_tilde_{t,s} for eta in [0, 1]"
    assert sigma2 <= 1.0 - abs_, "sigma^2(eta) <= 1 - abar_s: eq. (12)'s square root is real"
    assert strided.ddim_sigma2(abt, abs_, 1.0) == beta_tilde, "sigma^2(1) is beta_tilde_{t,s}"
