"""(e) The loss weights lambda_t and constant C_t, against the paper and a NumPy evaluation of the KL.

Each check is also run on deliberately wrong formulas (mutants) to show it can reject them.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from derivations import loss_weights as lw
from derivations.symbols import alpha_bar_prev, beta_t, eps, eps_theta, sigma2
from testkit import tolerances

pytestmark = pytest.mark.symbolic

alpha_t = 1 - beta_t
alpha_bar_t = alpha_bar_prev * alpha_t


def paper_weight(sigma_sq):
    """Ho et al. (2020), eq. (12): beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t))."""
    return beta_t**2 / (2 * sigma_sq * alpha_t * (1 - alpha_bar_t))


def weight_check(candidate) -> bool:
    return sp.simplify(lw.LOSS_WEIGHT - candidate) == 0


# --- symbolic ------------------------------------------------------------------------------------


def test_weight_equals_paper_eq12():
    assert weight_check(paper_weight(sigma2))


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(beta_t / (2 * sigma2 * alpha_t * (1 - alpha_bar_t)), id="square-on-beta-dropped"),
        pytest.param(beta_t**2 / (2 * sigma2 * alpha_t * (1 - alpha_bar_prev)), id="alpha-bar-t-minus-1-for-t"),
        pytest.param(beta_t**2 / (2 * sigma2 * sp.sqrt(alpha_t) * (1 - alpha_bar_t)), id="sqrt-on-alpha"),
        pytest.param(
            beta_t**2 / (2 * sigma2 * alpha_t * sp.sqrt(1 - alpha_bar_t)), id="sqrt-kept-on-1-minus-alpha-bar"
        ),
        pytest.param(-paper_weight(sigma2), id="sign-flipped"),
    ],
)
def test_weight_check_rejects_mutant(mutant):
    assert weight_check(paper_weight(sigma2)), "the check must accept the paper's weight"
    assert not weight_check(mutant)


def test_two_fixed_variances():
    beta_tilde = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
    assert sp.simplify(lw.LOSS_WEIGHT_LARGE - paper_weight(beta_t)) == 0
    assert sp.simplify(lw.LOSS_WEIGHT_SMALL - paper_weight(beta_tilde)) == 0
    assert sp.simplify(lw.LOSS_CONSTANT.subs(sigma2, beta_tilde)) == 0


def test_constant_depends_on_schedule_and_sigma_only():
    assert lw.LOSS_CONSTANT.free_symbols == {beta_t, alpha_bar_prev, sigma2}
    assert lw.LOSS_WEIGHT.free_symbols == {beta_t, alpha_bar_prev, sigma2}
    # ... and it is all that is left of the KL besides the weighted square.
    assert sp.simplify(lw.KL_IN_EPS - lw.LOSS_WEIGHT * (eps - eps_theta) ** 2 - lw.LOSS_CONSTANT) == 0


def test_t1_small_weight_is_undefined_and_large_weight_is_one_over_two_alpha():
    assert sp.simplify(lw.LOSS_WEIGHT_LARGE.subs(alpha_bar_prev, 1) - 1 / (2 * alpha_t)) == 0
    with pytest.raises(ZeroDivisionError):
        lw.loss_weight_small(0.01, 1.0)


# --- numeric -------------------------------------------------------------------------------------

betas = st.floats(min_value=1e-4, max_value=0.5)
alpha_bars_prev = st.floats(min_value=0.01, max_value=0.999)
reals = st.floats(min_value=-3.0, max_value=3.0)
variances = st.floats(min_value=1e-4, max_value=1.0)


def paper_kl_term(beta, ab_prev, s2, x0, noise, noise_pred) -> float:
    """KL(q(x_{t-1}|x_t,x_0) || N(mu_theta, s2)) from the paper's eqs. (4), (7), (11), at 50 digits (mpmath)."""
    with mpmath.workdps(50):
        values = (beta, ab_prev, s2, x0, noise, noise_pred)
        beta, ab_prev, s2, x0, noise, noise_pred = (mpmath.mpf(float(v)) for v in values)
        alpha = 1 - beta
        ab = ab_prev * alpha
        xt = mpmath.sqrt(ab) * x0 + mpmath.sqrt(1 - ab) * noise
        mu_tilde = mpmath.sqrt(ab_prev) * beta / (1 - ab) * x0 + mpmath.sqrt(alpha) * (1 - ab_prev) / (1 - ab) * xt
        beta_tilde = (1 - ab_prev) / (1 - ab) * beta
        mu_theta = (xt - beta / mpmath.sqrt(1 - ab) * noise_pred) / mpmath.sqrt(alpha)
        return float((mpmath.log(s2 / beta_tilde) - 1 + beta_tilde / s2 + (mu_tilde - mu_theta) ** 2 / s2) / 2)


POINTS = [(0.02, 0.9, 0.01, 0.5, -1.2, 0.3), (0.3, 0.2, 0.5, -1.0, 0.7, 0.7), (0.001, 0.999, 0.002, 2.0, 0.1, -1.5)]


def matches_paper(weight_fn) -> bool:
    return all(
        np.allclose(
            weight_fn(b, a, s2) * (e - ep) ** 2 + lw.loss_constant(b, a, s2),
            paper_kl_term(b, a, s2, x0, e, ep),
            **tolerances.FLOAT64.kwargs(),
        )
        for b, a, s2, x0, e, ep in POINTS
    )


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(beta=betas, ab_prev=alpha_bars_prev, s2=variances, x0=reals, noise=reals, pred=reals)
@example(beta=0.02, ab_prev=0.999, s2=0.02, x0=1.0, noise=0.5, pred=-0.5)
def test_weighted_square_plus_constant_equals_paper_kl(beta, ab_prev, s2, x0, noise, pred):
    assert_allclose(
        lw.loss_weight(beta, ab_prev, s2) * (noise - pred) ** 2 + lw.loss_constant(beta, ab_prev, s2),
        paper_kl_term(beta, ab_prev, s2, x0, noise, pred),
        **tolerances.FLOAT64.kwargs(),
        err_msg="lambda_t (eps - eps_theta)^2 + C_t != KL(q || p_theta) from the paper's formulas",
    )


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(lambda b, a, s2: 2 * lw.loss_weight(b, a, s2), id="half-dropped"),
        pytest.param(lambda b, a, s2: b**2 / (2 * s2 * (1 - b) * (1 - a)), id="alpha-bar-t-minus-1-for-t"),
        pytest.param(lambda b, a, s2: b**2 / (2 * s2 * np.sqrt(1 - b) * (1 - a * (1 - b))), id="sqrt-on-alpha"),
    ],
)
def test_numeric_check_rejects_mutant(mutant):
    assert matches_paper(lw.loss_weight), "the check must accept the true weight"
    assert not matches_paper(mutant)


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(beta=betas, ab_prev=alpha_bars_prev, s2=variances)
@example(beta=1e-4, ab_prev=1.0, s2=1e-4)  # t = 1
def test_weights_are_positive_and_ordered(beta, ab_prev, s2):
    assert lw.loss_weight(beta, ab_prev, s2) > 0
    assert lw.loss_weight_large(beta, ab_prev) > 0
    assert lw.loss_constant(beta, ab_prev, s2) >= 0 if ab_prev < 1 else True
    if ab_prev < 1:
        # beta_tilde_t <= beta_t, so the weight at beta_tilde_t is the larger one.
        assert lw.loss_weight_small(beta, ab_prev) >= lw.loss_weight_large(beta, ab_prev)
        assert lw.loss_constant_large(beta, ab_prev) >= 0
