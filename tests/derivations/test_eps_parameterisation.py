"""(d) The eps-parameterised mean against eq. (10) / Algorithm 2, numeric oracles, consistency with (a), (b); mutants.

The key relation: the posterior mean mu_tilde_t(x_t, x_0) evaluated at the reparameterised
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps equals the eps-mean at (x_t, eps). Every check is
also run on deliberately wrong formulas to show that it rejects them.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from derivations import eps_parameterisation as ep
from derivations import posterior as post
from derivations.forward_marginal import q_xt_mean_coef, q_xt_variance
from derivations.numeric import float64_function
from derivations.symbols import alpha_bar_prev, alpha_bar_t, alpha_t, beta_t, eps, eps_theta, x_0, x_t
from testkit import tolerances
from testkit.symbolic import is_zero

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
betas = st.floats(min_value=1e-8, max_value=0.999, allow_nan=False)
alpha_bar_prevs = st.floats(min_value=1e-12, max_value=1.0, allow_nan=False)
values = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False)
examples = settings(max_examples=60, deadline=None)

# Algorithm 2, line 4 as the seed writes it (1 - alpha_t where the paper's eq. 10 writes beta_t).
SEED_MEAN = (x_t - (1 - alpha_t) / sp.sqrt(1 - alpha_bar_t) * eps) / sp.sqrt(alpha_t)
PAPER_X0 = (x_t - sp.sqrt(1 - alpha_bar_t) * eps) / sp.sqrt(alpha_bar_t)
FORWARD_SAMPLE = sp.sqrt(alpha_bar_t) * x_0 + sp.sqrt(1 - alpha_bar_t) * eps

# A rational parameterisation of the domain, so that identities reduce to sympy.cancel: alpha_bar_{t-1} = b^2,
# alpha_t = a^2 with a b = p = 2u / (1 + u^2), hence 1 - alpha_bar_t = c^2 with c = (1 - u^2) / (1 + u^2),
# for b, u in (0, 1) and p < b. Every square root of (a), (b) and (d) is then rational.
_a, _b, _u = (sp.Symbol(n, positive=True) for n in "abu")
_p = 2 * _u / (1 + _u**2)
_c = (1 - _u**2) / (1 + _u**2)


def _is_zero_fast(expr: sp.Expr) -> bool:
    """expr == 0 on the domain, decided by cancelling a rational function (see _a, _b, _u)."""
    squares = expr.subs({beta_t: 1 - _a**2, alpha_bar_prev: _b**2})
    one_minus_abt = 1 - _a**2 * _b**2
    squares = squares.replace(
        lambda e: e.is_Pow and sp.expand(e.base) == one_minus_abt, lambda e: _c ** (2 * e.exp)
    )
    rational = squares.subs(_a, _p / _b)
    assert not rational.has(sp.sqrt(one_minus_abt)), "a square root survived the parameterisation"
    return sp.cancel(sp.expand(rational)) == 0


# --- the checks, each usable on the true result and on a mutant ---------------------------------
POSTERIOR_MEAN_OF_FORWARD_SAMPLE = post.POSTERIOR_MEAN.subs(x_t, FORWARD_SAMPLE)


def reproduces_posterior_mean(eps_mean: sp.Expr) -> bool:
    """mu_tilde_t(x_t(x_0, eps), x_0) == eps_mean(x_t(x_0, eps), eps) for all x_0, eps."""
    return _is_zero_fast(POSTERIOR_MEAN_OF_FORWARD_SAMPLE - eps_mean.subs(x_t, FORWARD_SAMPLE))


def inverts_forward_sample(x0_of_xt_eps: sp.Expr) -> bool:
    return _is_zero_fast(x0_of_xt_eps.subs(x_t, FORWARD_SAMPLE) - x_0)


# --- numpy reference, written independently (1 - alpha_bar_t = (1 - alpha_bar_{t-1}) + alpha_bar_{t-1} beta_t)
def np_coefs(beta, abp):
    one_minus_abt = (1.0 - abp) + abp * beta
    abt = abp * (1.0 - beta)
    return {
        "eps_mean_coef_xt": 1.0 / np.sqrt(1.0 - beta),
        "eps_mean_coef_eps": -beta / (np.sqrt(1.0 - beta) * np.sqrt(one_minus_abt)),
        "x0_from_eps_coef_xt": 1.0 / np.sqrt(abt),
        "x0_from_eps_coef_eps": -np.sqrt(one_minus_abt) / np.sqrt(abt),
    }


def consistent_numerically(eps_coef_xt, eps_coef_eps, beta, abp, x0, noise) -> bool:
    """Posterior mean (oracle of b) at the reparameterised x_t equals the eps-mean; rtol on the sum of |terms|."""
    abt = mpmath.mpf(abp) * (1 - mpmath.mpf(beta))  # alpha_bar_t at 50 digits, as oracles take it
    xt = q_xt_mean_coef(abt) * x0 + np.sqrt(q_xt_variance(abt)) * noise
    c0, ct = post.posterior_mean_coef_x0(beta, abp), post.posterior_mean_coef_xt(beta, abp)
    a, e = eps_coef_xt(beta, abp), eps_coef_eps(beta, abp)
    scale = abs(c0 * x0) + abs(ct * xt) + abs(a * xt) + abs(e * noise)
    return abs((c0 * x0 + ct * xt) - (a * xt + e * noise)) <= F64.atol + F64.rtol * scale


# --- results equal the paper --------------------------------------------------------------------
def test_results_equal_algorithm_2_line_4():
    assert is_zero(ep.EPS_MEAN - SEED_MEAN), "eps-mean differs from Algorithm 2, line 4"
    assert is_zero(ep.MU_THETA - SEED_MEAN.subs(eps, eps_theta)), "mu_theta differs from eq. (11)"
    assert is_zero(ep.EPS_MEAN_COEF_XT - 1 / sp.sqrt(alpha_t))
    assert is_zero(ep.EPS_MEAN_COEF_EPS + beta_t / (sp.sqrt(alpha_t) * sp.sqrt(1 - alpha_bar_t)))
    assert is_zero(ep.X0_FROM_EPS_COEF_XT - 1 / sp.sqrt(alpha_bar_t))
    assert is_zero(ep.X0_FROM_EPS_COEF_EPS + sp.sqrt(1 - alpha_bar_t) / sp.sqrt(alpha_bar_t))
    assert not ep.EPS_MEAN.has(x_0), "the eps-mean must not depend on x_0"


def test_eps_mean_reproduces_posterior_mean_and_x0_inverts_forward_sample():
    assert reproduces_posterior_mean(ep.EPS_MEAN)
    assert inverts_forward_sample(ep.X0_FROM_EPS)


MEAN_MUTANTS = [
    pytest.param((x_t - beta_t / (1 - alpha_bar_t) * eps) / sp.sqrt(alpha_t), id="sqrt-dropped-on-1-alpha_bar_t"),
    pytest.param((x_t + beta_t / sp.sqrt(1 - alpha_bar_t) * eps) / sp.sqrt(alpha_t), id="sign-flipped"),
    pytest.param((x_t - beta_t / sp.sqrt(1 - alpha_bar_prev) * eps) / sp.sqrt(alpha_t), id="alpha_bar_t-vs-t-1"),
    pytest.param((x_t - beta_t / sp.sqrt(1 - alpha_bar_t) * eps) / alpha_t, id="sqrt-dropped-on-alpha_t"),
    pytest.param((x_t - sp.sqrt(beta_t) / sp.sqrt(1 - alpha_bar_t) * eps) / sp.sqrt(alpha_t), id="sqrt-beta"),
]


@pytest.mark.parametrize("mutant", MEAN_MUTANTS)
def test_consistency_check_rejects_mean_mutant(mutant):
    assert not reproduces_posterior_mean(mutant)


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param((x_t - sp.sqrt(1 - alpha_bar_t) * eps) / alpha_bar_t, id="sqrt-dropped"),
        pytest.param((x_t + sp.sqrt(1 - alpha_bar_t) * eps) / sp.sqrt(alpha_bar_t), id="sign-flipped"),
        pytest.param((x_t - sp.sqrt(1 - alpha_bar_prev) * eps) / sp.sqrt(alpha_bar_prev), id="alpha_bar_t-vs-t-1"),
    ],
)
def test_inversion_check_rejects_mutant(mutant):
    assert not inverts_forward_sample(mutant)


@pytest.mark.parametrize(
    ("coef_xt", "coef_eps"),
    [
        pytest.param(1 / alpha_t, ep.EPS_MEAN_COEF_EPS, id="xt-sqrt-dropped"),
        pytest.param(ep.EPS_MEAN_COEF_XT, -ep.EPS_MEAN_COEF_EPS, id="eps-sign-flipped"),
        pytest.param(ep.EPS_MEAN_COEF_XT, -beta_t / (sp.sqrt(alpha_t) * sp.sqrt(1 - alpha_bar_prev)), id="t-vs-t-1"),
    ],
)
def test_numeric_consistency_rejects_mutant(coef_xt, coef_eps):
    a = float64_function(coef_xt, (beta_t, alpha_bar_prev), "mutant_xt")
    e = float64_function(coef_eps, (beta_t, alpha_bar_prev), "mutant_eps")
    assert not consistent_numerically(a, e, 0.3, 0.6, 1.0, 1.0)


# --- numeric oracles ----------------------------------------------------------------------------
@examples
@given(beta=betas, abp=alpha_bar_prevs)
@example(beta=1e-8, abp=1.0)  # t = 1, smallest beta
@example(beta=0.999, abp=1.0)  # t = 1, largest beta
@example(beta=1e-8, abp=1.0 - 2.0**-53)
@example(beta=0.999, abp=1e-12)
def test_numeric_oracles_match_numpy(beta, abp):
    want = np_coefs(beta, abp)
    for name, value in want.items():
        assert_allclose(getattr(ep, name)(beta, abp), value, **F64.kwargs(), err_msg=name)


@examples
@given(beta=betas, abp=alpha_bar_prevs, x0=values, noise=values)
@example(beta=1e-8, abp=1.0, x0=1.0, noise=-1.0)
@example(beta=0.999, abp=1.0, x0=-0.5, noise=2.0)
@example(beta=0.02, abp=1e-12, x0=1.0, noise=1.0)
def test_posterior_mean_of_reparameterised_xt_is_the_eps_mean(beta, abp, x0, noise):
    assert consistent_numerically(ep.eps_mean_coef_xt, ep.eps_mean_coef_eps, beta, abp, x0, noise)
    # The whole-map oracles agree with their coefficients.
    xt = 0.7
    assert_allclose(
        ep.eps_mean(xt, noise, beta, abp),
        ep.eps_mean_coef_xt(beta, abp) * xt + ep.eps_mean_coef_eps(beta, abp) * noise,
        **F64.kwargs(),
    )


@examples
@given(beta=betas, abp=st.floats(min_value=1e-6, max_value=1.0), x0=values, noise=values)
@example(beta=1e-8, abp=1.0, x0=1.0, noise=-1.0)
def test_x0_from_eps_inverts_the_forward_sample(beta, abp, x0, noise):
    abt = mpmath.mpf(abp) * (1 - mpmath.mpf(beta))
    xt = q_xt_mean_coef(abt) * x0 + np.sqrt(q_xt_variance(abt)) * noise
    got = ep.x0_from_eps(xt, noise, beta, abp)
    # x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t): the rounding of x_t is amplified by
    # 1 / sqrt(alpha_bar_t).
    scale = (abs(xt) + abs(noise)) / np.sqrt(float(abt))
    assert abs(got - x0) <= F64.atol + F64.rtol * scale, "x_0 recovered from (x_t, eps)"


@examples
@given(beta=betas, abp=alpha_bar_prevs)
def test_coefficient_signs(beta, abp):
    assert ep.eps_mean_coef_xt(beta, abp) >= 1.0, "1/sqrt(alpha_t) >= 1"
    assert ep.eps_mean_coef_eps(beta, abp) < 0.0
    assert ep.x0_from_eps_coef_xt(beta, abp) >= 1.0 and ep.x0_from_eps_coef_eps(beta, abp) < 0.0
