"""(k) Learned-range variances: eq. (15) vs Nichol & Dhariwal, its ends, its bound term, the stop-gradient, t = 1.

The derived Sigma_theta(v) and L_{t-1}(v, Delta_t) are compared with the paper's forms typed here and with an
improved-diffusion-style NumPy evaluation (log-variance interpolation, normal_kl on log-variances); the
bound term's minimiser in v is derivation (j)'s optimum; the hybrid objective's gradients are rebuilt here with
and without the stop-gradient. Every check that accepts the derived result is also run on wrong formulas.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import derivations
from derivations import eps_parameterisation as ep
from derivations import gaussian_kl as gk
from derivations import learned_variance as lv
from derivations import loss_weights, posterior
from derivations.chain import Check
from derivations.symbols import alpha_bar_prev, beta_t, eps, eps_theta
from testkit import tolerances
from testkit.symbolic import is_zero, is_zero_on_domain, step_cases

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
v = lv.v
D = lv.MEAN_GAP
bt = lv.beta_tilde  # beta_tilde_t as a positive symbol
alpha_t = 1 - beta_t
alpha_bar_t = alpha_bar_prev * alpha_t

# Nichol & Dhariwal (2021), eq. (15), with improved-diffusion's frac = (v + 1) / 2, typed from the paper.
PAPER_BETA_TILDE = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
PAPER_FRAC = (v + 1) / 2


def eq15(frac: sp.Expr, beta_tilde: sp.Expr = PAPER_BETA_TILDE) -> sp.Expr:
    """Sigma_theta = exp(frac log beta_t + (1 - frac) log beta_tilde_t)."""
    return sp.exp(frac * sp.log(beta_t) + (1 - frac) * sp.log(beta_tilde))


def kl(mean_gap: sp.Expr, beta_tilde: sp.Expr, sigma: sp.Expr) -> sp.Expr:
    """KL(N(mu_tilde, beta_tilde) || N(mu_theta, Sigma)) with mu_tilde - mu_theta = mean_gap, typed here."""
    return (sp.log(sigma / beta_tilde) + (beta_tilde + mean_gap**2) / sigma - 1) / 2


# The schedule's domain as beta_t = 1 / (1 + r), alpha_bar_{t-1} = 1 / (1 + u), r, u > 0 (see test_strided.py).
_r, _u = sp.symbols("r u", positive=True)
_DOMAIN = {beta_t: 1 / (1 + _r), alpha_bar_prev: 1 / (1 + _u)}


# --- the checks, each usable on the true result and on a mutant ---------------------------------
def has_the_range_ends(sigma: sp.Expr) -> bool:
    """v = 1 gives beta_t and v = -1 gives beta_tilde_t (for the positive symbol beta_tilde_t)."""
    return is_zero(sigma.subs(v, 1) - beta_t) and is_zero(sigma.subs(v, -1) - bt)


def is_minimised_at_the_optimum(bound_term: sp.Expr, sigma: sp.Expr) -> bool:
    """The v-gradient of the bound term vanishes where Sigma_theta(v) = beta_tilde_t + Delta_t^2 (derivation (j))."""
    solutions = sp.solve(sp.Eq(sp.diff(bound_term, v), 0), v)
    log_sigma = sp.expand_log(sp.log(sigma))  # split while v is a symbol (positive bases, real exponents)
    return len(solutions) == 1 and is_zero(log_sigma.subs(v, solutions[0]) - sp.log(bt + D**2))


# --- registration and exports -------------------------------------------------------------------
def test_registered_as_derivation_k():
    assert "learned_variance" in derivations.MODULES
    assert derivations.MODULES.index("learned_variance") > derivations.MODULES.index("optimal_variance")
    (d,) = [d for d in derivations.all_derivations() if d.key == "k"]
    assert d.module == "derivations.learned_variance"
    assert all(step.check in (Check.SIMPLIFY, Check.DEFINITION) for step in d.all_steps()), "all closed by SymPy"


def test_every_checked_step_is_covered_by_the_generic_step_test():
    (d,) = [d for d in derivations.all_derivations() if d.key == "k"]
    ids = {case.id for case in step_cases()}
    expected = {
        f"k-learned_variance-{i}" for i, step in enumerate(d.all_steps(), start=1) if step.check is not Check.DEFINITION
    }
    assert expected and expected <= ids


@pytest.mark.parametrize(
    ("name", "symbols"),
    [
        ("SIGMA_LEARNED_RANGE", {v, beta_t, alpha_bar_prev}),
        ("LEARNED_KL", {v, beta_t, alpha_bar_prev, D}),
    ],
)
def test_exported_expression_symbols(name, symbols):
    assert getattr(lv, name).free_symbols == symbols, f"{name} is not an expression in {symbols}"


# --- results equal the paper --------------------------------------------------------------------
def test_sigma_is_eq15():
    assert is_zero(lv.SIGMA_GENERIC - eq15(PAPER_FRAC, bt)), "generic beta_tilde_t"
    assert is_zero_on_domain(lv.SIGMA_LEARNED_RANGE - eq15(PAPER_FRAC), _DOMAIN), "with (b)'s beta_tilde_t"


def test_learned_kl_is_the_gaussian_kl_with_eq15():
    assert is_zero(lv.KL_V - kl(D, bt, eq15(PAPER_FRAC, bt))), "generic beta_tilde_t"
    paper_kl = kl(D, PAPER_BETA_TILDE, eq15(PAPER_FRAC))
    assert is_zero_on_domain(lv.LEARNED_KL - paper_kl, _DOMAIN), "with (b)'s beta_tilde_t"
    # and derivation (c)'s exported KL with Sigma_theta substituted
    from_c = gk.NORMAL_KL.subs({gk.MEAN_1: D, gk.VAR_1: bt, gk.MEAN_2: 0, gk.VAR_2: lv.SIGMA_GENERIC})
    assert is_zero(sp.expand_log(from_c - lv.KL_V))


def test_ends_and_monotonicity():
    assert has_the_range_ends(lv.SIGMA_GENERIC)
    assert is_zero(lv.SIGMA_LEARNED_RANGE.subs(v, 1) - beta_t)
    assert is_zero(lv.SIGMA_LEARNED_RANGE.subs(v, -1) - PAPER_BETA_TILDE)
    # d log Sigma / dv = log(beta_t / beta_tilde_t) / 2, positive because beta_tilde_t < beta_t.
    assert is_zero(sp.diff(sp.log(eq15(PAPER_FRAC, bt)), v) - sp.log(beta_t / bt) / 2)
    assert is_zero(beta_t - PAPER_BETA_TILDE - alpha_bar_prev * beta_t**2 / (1 - alpha_bar_t))


def test_bound_term_is_minimised_at_derivation_j_optimum():
    assert is_minimised_at_the_optimum(lv.KL_V, lv.SIGMA_GENERIC)
    second = sp.diff(lv.KL_V, v, 2)
    assert is_zero(second - sp.log(beta_t / bt) ** 2 * (bt + D**2) / (8 * lv.SIGMA_GENERIC)), "convex in v"


# --- the hybrid objective and the stop-gradient, rebuilt here -----------------------------------
def test_stop_gradient():
    lam, sigma = sp.symbols("lambda Sigma", positive=True)
    frozen = sp.Symbol("frozen", real=True)
    mean_gap = ep.EPS_MEAN - ep.MU_THETA  # mu_tilde - mu_theta in eps form (derivation (d))
    l_simple = (eps - eps_theta) ** 2
    l_vlb = kl(mean_gap, bt, sigma)
    weight = beta_t**2 / (2 * sigma * alpha_t * (1 - alpha_bar_t))  # Ho et al. eq. (12)'s lambda_t at Sigma
    without = sp.diff(l_simple + lam * l_vlb, eps_theta)
    assert is_zero(without - 2 * (eps_theta - eps) * (1 + lam * weight)), "no stop-gradient: extra lambda lambda_t"
    assert is_zero(weight - loss_weights.LOSS_WEIGHT.subs(loss_weights.sigma2, sigma)), "derivation (e)'s weight"
    assert is_zero(
        weight.subs(sigma, PAPER_BETA_TILDE) - loss_weights.LOSS_WEIGHT_SMALL
    ), "at Sigma = beta_tilde_t, (e)'s weight at beta_tilde_t"
    with_sg = l_simple + lam * l_vlb.subs(eps_theta, frozen).subs(sigma, lv.SIGMA_GENERIC)
    assert is_zero(sp.diff(with_sg, eps_theta) - 2 * (eps_theta - eps)), "the mean sees L_simple alone"
    v_gradient = sp.diff(with_sg, v).subs(frozen, eps_theta)
    assert is_zero(v_gradient - lam * sp.diff(l_vlb.subs(sigma, lv.SIGMA_GENERIC), v)), "the v-gradient is unchanged"


def test_t1():
    w = sp.Symbol("w", positive=True)
    assert sp.limit(lv.SIGMA_GENERIC.subs(v, 1 - 2 * w), bt, 0, "+") == 0, "every v < 1 collapses to 0"
    assert lv.SIGMA_GENERIC.subs({v: 1}) == beta_t
    assert lv.sigma2_learned_range(0.3, 0.02, 1.0) == 0.0
    assert lv.sigma2_learned_range(-1.0, 0.02, 1.0) == 0.0
    assert_allclose(lv.sigma2_learned_range(1.0, 0.02, 1.0), 0.02, **F64.kwargs(), err_msg="v = 1 at t = 1")
    # improved-diffusion's substitute beta_tilde_2, from a schedule's first two betas.
    betas = np.array([1e-4, 1.2e-4])  # [2]
    abar = np.cumprod(1.0 - betas)  # [2]
    beta_tilde_2 = (1.0 - abar[0]) / (1.0 - abar[1]) * betas[1]
    beta_1, beta_2 = sp.symbols(r"\beta_1 \beta_2", positive=True)
    assert_allclose(
        float(lv.BETA_TILDE_2.subs({beta_1: betas[0], beta_2: betas[1]})), beta_tilde_2, **F64.kwargs(),
        err_msg="beta_tilde_2",
    )
    assert beta_tilde_2 < betas[0], "the t = 1 range [beta_tilde_2, beta_1] is not empty"


# --- float64 functions vs an improved-diffusion-style numpy evaluation ---------------------------
def np_learned_range(v_, beta, abp):
    """improved-diffusion: frac = (v + 1) / 2; exp(frac log beta_t + (1 - frac) log beta_tilde_t)."""
    beta_tilde = (1.0 - abp) * beta / ((1.0 - abp) + abp * beta)
    frac = (v_ + 1.0) / 2.0
    return np.exp(frac * np.log(beta) + (1.0 - frac) * np.log(beta_tilde)), beta_tilde


def np_normal_kl(mean1, logvar1, mean2, logvar2):
    """improved-diffusion's normal_kl on log-variances."""
    return 0.5 * (-1.0 + logvar2 - logvar1 + np.exp(logvar1 - logvar2) + (mean1 - mean2) ** 2 * np.exp(-logvar2))


@settings(max_examples=60, deadline=None)
@given(
    v_=st.floats(min_value=-1.0, max_value=1.0, allow_nan=False),
    beta=st.floats(min_value=1e-6, max_value=0.999, allow_nan=False),
    abp=st.floats(min_value=1e-6, max_value=0.999999, allow_nan=False),
    gap=st.floats(min_value=-1.0, max_value=1.0, allow_nan=False),
)
@example(v_=-1.0, beta=1.2e-4, abp=0.9999, gap=0.0)  # about t = 2 of the paper's schedule, small end
@example(v_=1.0, beta=0.02, abp=4e-5, gap=1.0)  # t = T, large end
def test_numeric_oracles_match_numpy(v_, beta, abp, gap):
    expected, beta_tilde = np_learned_range(v_, beta, abp)
    got = lv.sigma2_learned_range(v_, beta, abp)
    assert_allclose(got, expected, **F64.kwargs(), err_msg="Sigma_theta(v)")
    slack = F64.rtol * beta
    assert beta_tilde - slack <= got <= beta + slack, "beta_tilde_t <= Sigma_theta <= beta_t for v in [-1, 1]"
    expected_kl = np_normal_kl(gap, np.log(beta_tilde), 0.0, np.log(expected))
    assert_allclose(lv.learned_kl(v_, beta, abp, gap), expected_kl, **F64.kwargs(), err_msg="L_{t-1}(v, Delta)")


def test_numeric_range_is_increasing_in_v():
    vs = np.linspace(-1.0, 1.0, 21)  # [21]
    sigmas = lv.sigma2_learned_range(vs, 0.02, 0.5)
    assert sigmas.shape == (21,)
    assert np.all(np.diff(sigmas) > 0), "Sigma_theta increases with v"


@pytest.mark.parametrize(("beta", "abp", "gap"), [(0.02, 0.5, 0.05), (1e-3, 0.99, 0.01), (0.5, 0.1, 0.2)])
def test_numeric_minimum_is_at_the_optimal_variance(beta, abp, gap):
    # v* from Sigma_theta(v*) = beta_tilde_t + Delta^2 (may lie outside [-1, 1]); the KL is larger on either side.
    beta_tilde = float(posterior.posterior_variance(beta, abp))
    v_star = 2.0 * np.log((beta_tilde + gap**2) / beta_tilde) / np.log(beta / beta_tilde) - 1.0
    assert_allclose(lv.sigma2_learned_range(v_star, beta, abp), beta_tilde + gap**2, **F64.kwargs(),
                    err_msg="Sigma_theta(v*) = beta_tilde + Delta^2")
    at = lv.learned_kl(v_star, beta, abp, gap)
    assert at < lv.learned_kl(v_star - 1e-3, beta, abp, gap) and at < lv.learned_kl(v_star + 1e-3, beta, abp, gap)


# --- mutants are rejected by the same checks ----------------------------------------------------
@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(beta_t**v * bt ** (1 - v), id="frac-is-v"),
        pytest.param(bt**PAPER_FRAC * beta_t ** (1 - PAPER_FRAC), id="ends-swapped"),
        pytest.param(beta_t**PAPER_FRAC * bt**PAPER_FRAC, id="second-exponent-not-1-minus-frac"),
    ],
)
def test_ends_check_rejects_mutant(mutant):
    assert not has_the_range_ends(mutant)


def test_eq15_check_rejects_arithmetic_interpolation():
    # Right ends, wrong path: interpolating the variances instead of their logs.
    mutant = PAPER_FRAC * beta_t + (1 - PAPER_FRAC) * bt
    assert has_the_range_ends(mutant)
    assert not is_zero(mutant - eq15(PAPER_FRAC, bt))


def test_ends_check_on_mutated_frac_in_the_module_expression():
    mutant = lv.SIGMA_GENERIC.subs(v, 2 * v + 1)  # frac = v instead of (v + 1) / 2
    assert mutant != lv.SIGMA_GENERIC
    assert not has_the_range_ends(mutant)


def test_optimum_check_rejects_swapped_kl():
    # KL in the wrong direction, KL(N(mu_theta, Sigma) || N(mu_tilde, beta_tilde)): minimised at Sigma = beta_tilde.
    swapped = (sp.log(bt / lv.SIGMA_GENERIC) + (lv.SIGMA_GENERIC + D**2) / bt - 1) / 2
    assert is_minimised_at_the_optimum(lv.KL_V, lv.SIGMA_GENERIC)
    assert not is_minimised_at_the_optimum(sp.expand_log(swapped), lv.SIGMA_GENERIC)


def test_step_check_rejects_mutated_ends():
    (step,) = [s for s in lv.derivation().results if s.description.startswith("... and v = -1 gives")]
    assert step.holds_symbolically()
    assert not dataclasses.replace(step, lhs=lv.SIGMA_LEARNED_RANGE.subs(v, 0)).holds_symbolically()
