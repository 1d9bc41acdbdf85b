"""The conformance oracle's forms are the derived results: each equals the expression of derivations (a), (b), (d), (i).

The forms in ddpm/conformance/oracle.py are written over the intermediates an implementation forms (a_t, a_s,
al, b, m_t, m_s); substituting their definitions must give the derived SymPy expressions exactly. Where SymPy
cannot simplify square roots of products (DDIM), the identity is checked at random rational points at 60 digits
(the test name says so). Also: the rounding model's tolerance scales with u and catches a relative error of 1e-9
in a float64 implementation; chain_law agrees with tests/optimal_denoisers.algorithm2_gaussian_law.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy as sp
import torch

from ddpm.conformance import oracle
from ddpm.conformance.cases import Context, SuiteConfig, chain_law
from ddpm.conformance.protocol import VarianceKind
from derivations import eps_parameterisation, forward_marginal, posterior, strided
from derivations.symbols import alpha_bar, alpha_bar_prev, beta_t, eps, x_0, x_t

pytestmark = pytest.mark.symbolic

ab_s = strided.ALPHA_BAR_S
# One step t -> t - 1 in the symbols of (b) and (d); a stride t -> s in those of (i).
ONE_STEP = {oracle.a_s: alpha_bar_prev, oracle.a_t: alpha_bar_prev * (1 - beta_t), oracle.al: 1 - beta_t,
            oracle.b: beta_t, oracle.m_t: 1 - alpha_bar_prev * (1 - beta_t), oracle.m_s: 1 - alpha_bar_prev}
STRIDE = {oracle.a_s: ab_s, oracle.a_t: alpha_bar, oracle.al: alpha_bar / ab_s, oracle.b: 1 - alpha_bar / ab_s,
          oracle.m_t: 1 - alpha_bar, oracle.m_s: 1 - ab_s}
DATA = {oracle.x0: x_0, oracle.xt: x_t, oracle.eps: eps, oracle.noise: eps}


def _same(form: sp.Expr, derived: sp.Expr, step: dict) -> bool:
    return sp.simplify(form.subs(step).subs(DATA) - derived) == 0


def test_q_sample_is_derivation_a():
    step = {oracle.a_t: alpha_bar, oracle.m_t: 1 - alpha_bar}
    assert _same(oracle.Q_SAMPLE, forward_marginal.X_T_REPARAMETERISED, step)


@pytest.mark.parametrize("form, derived", [
    (oracle.POSTERIOR_MEAN, posterior.POSTERIOR_MEAN),
    (oracle.POSTERIOR_VARIANCE, posterior.VARIANCE),
    (oracle.MEAN_FORMS[0], eps_parameterisation.EPS_MEAN),
    (oracle.MEAN_FORMS[1], eps_parameterisation.EPS_MEAN),
    (oracle.SIGMA[VarianceKind.BETA] ** 2, beta_t),
    (oracle.SIGMA[VarianceKind.BETA_TILDE] ** 2, posterior.VARIANCE),
], ids=["posterior_mean", "posterior_variance", "eps_mean", "x0_route_mean", "sigma_beta", "sigma_beta_tilde"])
def test_one_step_forms_are_derivations_b_and_d(form, derived):
    assert _same(form, derived, ONE_STEP)


@pytest.mark.parametrize("form, derived", [
    (oracle.POSTERIOR_MEAN, strided.STRIDED_POSTERIOR_MEAN),
    (oracle.POSTERIOR_VARIANCE, strided.STRIDED_BETA_TILDE),
    (oracle.MEAN_FORMS[0], strided.STRIDED_EPS_MEAN),
    (oracle.MEAN_FORMS[1], strided.STRIDED_EPS_MEAN),
    (oracle.SIGMA[VarianceKind.BETA] ** 2, strided.STRIDED_BETA),
    (oracle.DDIM_SIGMA2.subs(oracle.eta, strided.eta), strided.DDIM_SIGMA2),
], ids=["mean", "beta_tilde", "eps_mean", "x0_route_mean", "beta", "ddim_sigma2"])
def test_stride_forms_are_derivation_i(form, derived):
    assert _same(form, derived, STRIDE)


def _rational_residuals(lhs: sp.Expr, rhs: sp.Expr, trials: int = 12) -> list[sp.Float]:
    rng = random.Random(7)
    out = []
    for _ in range(trials):
        s_val = sp.Rational(rng.randint(5000, 9999), 10000)
        point = {ab_s: s_val, alpha_bar: s_val * sp.Rational(rng.randint(1, 9999), 10000),
                 strided.eta: sp.Rational(rng.randint(0, 10000), 10000),
                 x_t: sp.Rational(rng.randint(-30000, 30000), 10000),
                 eps: sp.Rational(rng.randint(-30000, 30000), 10000)}
        out.append(abs(sp.N((lhs - rhs).subs(point), 60)))
    return out


@pytest.mark.parametrize("form", oracle.DDIM_FORMS, ids=["as_written", "coefficients"])
def test_ddim_forms_are_derivation_i_at_random_rationals(form):
    lhs = form.subs(oracle.z, 0).subs(oracle.eta, strided.eta).subs(STRIDE).subs(DATA)
    assert max(_rational_residuals(lhs, strided.DDIM_MEAN)) < 1e-50


def test_a_mutated_form_is_rejected():
    """The check can fail: a missing square root on alpha_t in the eps-form mean is not derivation (d)."""
    mutated = (oracle.xt - oracle.b / sp.sqrt(oracle.m_t) * oracle.eps) / oracle.al
    assert not _same(mutated, eps_parameterisation.EPS_MEAN, ONE_STEP)


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_tolerance_scales_with_unit_roundoff(dtype):
    u = oracle.unit_roundoff(dtype)
    values = {**oracle.stride_intermediates(np.array([0.5]), np.array([0.6]), np.array([1 - 0.5 / 0.6])),
              oracle.xt: np.array([1.0]), oracle.eps: np.array([-0.5])}
    value, tol = oracle.evaluate(oracle.MEAN_FORMS, values, u)
    assert u == {torch.float32: 2.0**-24, torch.float64: 2.0**-53}[dtype]
    assert 0 < tol[0] < 100 * u * (1 + abs(value[0])), "tolerance is a small multiple of u, not a loose constant"
    assert abs(value[0] * 1e-9) > tol[0] or dtype is torch.float32, "a 1e-9 relative error fails in float64"


def test_chain_law_matches_the_independent_algorithm2_recursion():
    """chain_law (conformance) and optimal_denoisers.algorithm2_gaussian_law (tests) agree on the full chain."""
    from ddpm.conformance.adapters.reference import ReferenceAdapter
    from testkit.optimal_denoisers import GaussianData, algorithm2_gaussian_law

    adapter = ReferenceAdapter("linear", 200)
    ctx = Context(adapter, SuiteConfig())
    data = ctx.config.data
    for chain in adapter.chains()[:2]:
        mean, var = chain_law(ctx, chain)
        expected = algorithm2_gaussian_law(adapter.betas(), GaussianData(data.mean, data.std), chain.variance)
        np.testing.assert_allclose([mean, var], expected, rtol=1e-12, atol=1e-14,
                                   err_msg=f"chain_law vs algorithm2_gaussian_law, {chain.label}")


def test_ddim_coefficient_of_x0_is_the_derivative_of_eq_12_with_eps_rederived():
    eps_from_x0 = (oracle.xt - sp.sqrt(oracle.a_t) * oracle.x0) / sp.sqrt(oracle.m_t)
    eq12 = (sp.sqrt(oracle.a_s) * oracle.x0 + sp.sqrt(oracle.m_s - oracle.DDIM_SIGMA2) * eps_from_x0
            + sp.sqrt(oracle.DDIM_SIGMA2) * oracle.z)
    assert sp.simplify(sp.diff(eq12, oracle.x0) - oracle.DDIM_COEF_X0) == 0


def test_dynamic_threshold_by_hand():
    """Image 0: |x| = (0.5, 1.0, 2.0, 4.0), the 0.5-quantile 1.5 is s; image 1: quantile 0.35 < 1, so s = 1 (clipping);
    image 2: quantile 5 > s_max = 3, so s = 3."""
    x = np.array([[0.5, -1.0, 2.0, -4.0], [0.1, -0.2, 0.3, 1.7], [-4.0, 5.0, 6.0, 7.0]]).reshape(3, 1, 2, 2)
    tol = np.full(x.shape, 1e-7)
    out, out_tol = oracle.dynamic_threshold(x, tol, 0.5, 3.0, 2.0**-24)
    expected = np.array([[0.5 / 1.5, -1.0 / 1.5, 1.0, -1.0], [0.1, -0.2, 0.3, 1.0],
                         [-1.0, 1.0, 1.0, 1.0]]).reshape(x.shape)
    np.testing.assert_allclose(out, expected, rtol=1e-15)
    clamped = np.abs(x) >= np.array([1.5, 1.0, 3.0]).reshape(3, 1, 1, 1)
    assert np.all(out_tol[clamped] == 0.0), "a clamped element is exactly +-1"
    assert np.all(out_tol[~clamped] > tol[~clamped] / 3.0), "the others keep their tolerance, divided by s"
    k_u = oracle.ROUNDING_FACTOR * 2.0**-24
    tol_s = 1e-7 + k_u * 1.5  # image 0's s = 1.5 interpolates two values of tolerance 1e-7, plus its own rounding
    np.testing.assert_allclose(out_tol[0, 0, 0, 0], (1e-7 + 0.5 * tol_s / 1.5) / 1.5 + k_u * 0.5 / 1.5, rtol=1e-12,
                               err_msg="a dynamic s adds its own tolerance")
    np.testing.assert_allclose(out_tol[1, 0, 0, 0], 1e-7 + k_u * 0.1, rtol=1e-12, err_msg="s = 1 by the clamp: exact")


def test_dynamic_threshold_with_s_max_1_is_clipping():
    rng = np.random.default_rng(3)
    x = rng.normal(0.0, 2.0, (5, 1, 2, 2))
    tol = np.full(x.shape, 1e-7)
    for p in (0.5, 0.995):
        out, out_tol = oracle.dynamic_threshold(x, tol, p, 1.0, 2.0**-24)
        clipped, clipped_tol = oracle.clip_x0(x, tol)
        np.testing.assert_array_equal(out, clipped)
        division = oracle.ROUNDING_FACTOR * 2.0**-24 * np.abs(out)  # the rounding of x / s, s = 1
        np.testing.assert_allclose(out_tol, np.where(clipped_tol > 0, clipped_tol + division, 0.0), rtol=1e-12)
