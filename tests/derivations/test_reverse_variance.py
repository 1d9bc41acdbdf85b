"""(h) The fixed reverse variances: sigma*^2(s^2) against the precision-matrix formula, the two ends, oracles, mutants.

The optimal variance for x_0 ~ N(0, s^2) is checked against an independent route (the inverse of the
(x_{t-1}, x_t) precision matrix), a Monte Carlo-free numpy computation, and the paper's two choices
beta_t (s^2 = 1) and beta_tilde_t (s^2 -> 0). Each check is also run on deliberately wrong formulas.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from derivations import gaussian_kl
from derivations import reverse_variance as rv
from derivations.numeric import float64_function
from derivations.posterior import posterior_variance
from derivations.symbols import alpha_bar_prev, alpha_bar_t, alpha_t, beta_t, sigma2
from testkit import tolerances
from testkit.symbolic import is_zero

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
S2 = rv.DATA_VARIANCE
betas = st.floats(min_value=1e-8, max_value=0.999, allow_nan=False)
alpha_bar_prevs = st.floats(min_value=1e-12, max_value=1.0, allow_nan=False)
data_variances = st.floats(min_value=0.0, max_value=4.0, allow_nan=False)
examples = settings(max_examples=60, deadline=None)

PAPER_BETA_TILDE = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t


@functools.cache
def conditional_variance_by_precision_matrix() -> sp.Expr:
    """Var(x_{t-1} | x_t) = 1 / (Sigma^{-1})_{11} for the covariance Sigma of (x_{t-1}, x_t), built by hand."""
    v = alpha_bar_prev * S2 + 1 - alpha_bar_prev  # Var(x_{t-1}) for x_0 ~ N(0, s^2)
    sigma = sp.Matrix([[v, sp.sqrt(alpha_t) * v], [sp.sqrt(alpha_t) * v, alpha_t * v + beta_t]])
    return 1 / sigma.inv()[0, 0]


# --- the checks, each usable on the true result and on a mutant ---------------------------------
def is_the_conditional_variance(expr: sp.Expr) -> bool:
    # Both sides are rational functions of beta_t, alpha_bar_{t-1}, s^2 (and of square roots the
    # mutants introduce, which cancel() treats as extra variables): cancel decides it exactly.
    return sp.cancel(expr - conditional_variance_by_precision_matrix()) == 0


def has_the_paper_ends(expr: sp.Expr) -> bool:
    """s^2 = 1 gives beta_t and s^2 -> 0 gives beta_tilde_t."""
    return is_zero(expr.subs(S2, 1) - beta_t) and is_zero(sp.limit(expr, S2, 0) - PAPER_BETA_TILDE)


def np_conditional_variance(beta, abp, s2):
    """1 / (Sigma^{-1})_{11} with numpy's inverse."""
    v = abp * s2 + (1.0 - abp)
    a = 1.0 - beta
    sigma = np.array([[v, np.sqrt(a) * v], [np.sqrt(a) * v, a * v + beta]])
    return 1.0 / np.linalg.inv(sigma)[0, 0]


# --- results ------------------------------------------------------------------------------------
def test_optimal_variance_is_the_gaussian_conditional_variance():
    assert is_the_conditional_variance(rv.SIGMA2_OPTIMAL_GAUSSIAN)


def test_large_and_small_are_the_paper_choices():
    assert is_zero(rv.SIGMA2_LARGE - beta_t), "sigma_t^2 = beta_t"
    assert is_zero(rv.SIGMA2_SMALL - PAPER_BETA_TILDE), "sigma_t^2 = beta_tilde_t"
    assert has_the_paper_ends(rv.SIGMA2_OPTIMAL_GAUSSIAN)


def test_kl_lemma_is_the_gaussian_kl_with_equal_means():
    m = sp.Symbol("m", real=True)
    kl = gaussian_kl.NORMAL_KL.subs(
        {gaussian_kl.MEAN_1: m, gaussian_kl.MEAN_2: m, gaussian_kl.VAR_1: rv.v, gaussian_kl.VAR_2: sigma2}
    )
    assert is_zero(sp.expand_log(kl - rv.KL_SAME_MEAN, force=True)), "KL(N(m, v) || N(m, sigma^2))"
    assert rv.KL_MINIMISER == rv.v and rv.KL_SECOND_DERIVATIVE_AT_MINIMISER.is_positive


# --- mutants ------------------------------------------------------------------------------------
V = alpha_bar_prev * S2 + 1 - alpha_bar_prev
MUTANTS = [
    pytest.param(V - alpha_t * V / (alpha_t * V + beta_t), id="covariance-not-squared"),
    pytest.param(beta_t * V / (alpha_t * V + beta_t) / alpha_t, id="extra-1/alpha_t"),
    pytest.param(
        beta_t * (alpha_bar_t * S2 + 1 - alpha_bar_t) / (alpha_t * (alpha_bar_t * S2 + 1 - alpha_bar_t) + beta_t),
        id="alpha_bar_t-vs-t-1",
    ),
    pytest.param(sp.sqrt(beta_t) * V / (alpha_t * V + beta_t), id="sqrt-beta"),
]


@pytest.mark.parametrize("mutant", MUTANTS)
def test_conditional_variance_check_rejects_mutant(mutant):
    assert not is_the_conditional_variance(mutant)


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(beta_t * S2, id="large-only"),
        pytest.param(rv.SIGMA2_OPTIMAL_GAUSSIAN.subs(S2, 1 - S2), id="ends-swapped"),
        pytest.param(MUTANTS[2].values[0], id="alpha_bar_t-vs-t-1"),
    ],
)
def test_ends_check_rejects_mutant(mutant):
    assert not has_the_paper_ends(mutant)


def test_numeric_check_rejects_mutant():
    mutant = float64_function(MUTANTS[0].values[0], (beta_t, alpha_bar_prev, S2), "mutant")
    assert not np.isclose(mutant(0.3, 0.6, 0.5), np_conditional_variance(0.3, 0.6, 0.5), rtol=F64.rtol, atol=F64.atol)


# --- numeric oracles ----------------------------------------------------------------------------
@examples
@given(beta=st.floats(min_value=1e-3, max_value=0.999), abp=st.floats(min_value=1e-3, max_value=1.0),
       s2=st.floats(min_value=1e-3, max_value=4.0))
@example(beta=0.02, abp=1.0, s2=1.0)  # t = 1
@example(beta=0.999, abp=1e-3, s2=1e-3)
def test_optimal_oracle_matches_numpy_matrix_inverse(beta, abp, s2):
    # numpy's 2x2 inverse loses digits as Sigma becomes singular (beta -> 0), hence the milder ranges here.
    assert_allclose(rv.sigma2_optimal_gaussian(beta, abp, s2), np_conditional_variance(beta, abp, s2),
                    **F64.kwargs(), err_msg="sigma*^2 vs numpy precision matrix")


@examples
@given(beta=betas, abp=alpha_bar_prevs, s2=data_variances)
@example(beta=1e-8, abp=1.0, s2=0.0)  # t = 1, deterministic x_0
@example(beta=0.999, abp=1.0, s2=1.0)
@example(beta=0.02, abp=1e-12, s2=0.5)
def test_ordering_and_ends(beta, abp, s2):
    small, large = rv.sigma2_small(beta, abp), rv.sigma2_large(beta, abp)
    optimal = rv.sigma2_optimal_gaussian(beta, abp, s2)
    assert_allclose(large, beta, **F64.kwargs())
    assert_allclose(small, posterior_variance(beta, abp), **F64.kwargs(), err_msg="sigma2_small = beta_tilde_t of (b)")
    assert 0.0 <= small <= large, "beta_tilde_t <= beta_t"
    if s2 <= 1.0:
        assert small <= optimal <= large, "beta_tilde_t and beta_t bracket the optimum for data variance <= 1"
    else:
        assert optimal >= large
    assert_allclose(rv.sigma2_optimal_gaussian(beta, abp, 0.0), small, **F64.kwargs(), err_msg="s^2 = 0")
    assert_allclose(rv.sigma2_optimal_gaussian(beta, abp, 1.0), large, **F64.kwargs(), err_msg="s^2 = 1")


def test_oracle_names_used_by_the_diffusion_tests():
    assert rv.sigma2_beta is rv.sigma2_large and rv.sigma2_beta_tilde is rv.sigma2_small
    assert rv.sigma2_beta_tilde(0.02, 1.0) == 0.0, "beta_tilde_1 = 0"
