"""The conformance oracle's forms are the derived results: each equals the expression of derivations (a), (b), (d), (i).

The forms in ddpm/conformance/oracle.py are written over the intermediates an implementation forms (a_t, a_s,
al, b, m_t, m_s); substituting their definitions must give the derived SymPy expressions exactly. Where SymPy
cannot simplify square roots of products (DDIM), the identity is checked at random rational points at 60 digits
(the test name says so). Also: the rounding model's tolerance scales with u and catches a relative error of 1e-9
in a float64 implementation; chain_law agrees with tests/optimal_denoisers.algorithm2_gaussian_law. The data laws'
exact denoisers, posterior means, variances and CDFs are derivation (p)'s float64 functions, and their posterior
samplers draw the law whose CDF they report.
"""

from __future__ import annotations

import random

import numpy as np
import pytest
import sympy as sp
import torch
from numpy.testing import assert_allclose
from scipy import stats

from ddpm.conformance import oracle
from ddpm.conformance.cases import Context, SuiteConfig, chain_law
from ddpm.conformance.protocol import Prediction, VarianceKind
from derivations import data_posterior, eps_parameterisation, forward_marginal, posterior, strided
from derivations.symbols import alpha_bar, alpha_bar_prev, beta_t, eps, x_0, x_t
from testkit.stat_checks import Correction, adjusted_p_values

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


# ------------------------------------------------------------------------------------------ the data laws
ALPHA_BARS = np.array([0.9999, 0.97, 0.6, 0.2, 1e-3, 0.0])  # a table [T] in the adapter's convention (base 0)
MIXTURES = [oracle.GaussianMixtureData(), oracle.GaussianMixtureData(0.5, (0.4, -0.4), 0.3),
            oracle.GaussianMixtureData(0.8, (-0.9, 0.2), 0.05)]


def _exact_outputs(data, x: np.ndarray) -> dict:
    """{prediction: output [T, n]} of data.model at every row of ALPHA_BARS (t = 0..T-1), x [n]."""
    t = torch.arange(len(ALPHA_BARS)).repeat_interleave(len(x))
    xs = torch.tensor(np.tile(x, len(ALPHA_BARS)), dtype=torch.float64)
    return {p: data.model(ALPHA_BARS, 0, p)(xs, t).numpy().reshape(len(ALPHA_BARS), -1) for p in Prediction}


@pytest.mark.parametrize("data", MIXTURES, ids=["default", "symmetric-wide", "narrow"])
def test_mixture_model_and_posterior_are_derivation_p(data):
    x = np.linspace(-3.0, 3.0, 13)
    out = _exact_outputs(data, x)
    args = (data.weight, *data.means, data.std)
    for k, a in enumerate(ALPHA_BARS[:-1]):  # the 50-digit functions are evaluated away from a = 0 (their 1 - a)
        assert_allclose(out[Prediction.X0][k], data_posterior.mixture_posterior_mean(x, a, *args), rtol=1e-12,
                        atol=1e-14)
        assert_allclose(out[Prediction.EPS][k], data_posterior.mixture_eps_star(x, a, *args), rtol=1e-10,
                        atol=1e-12)
        assert_allclose(out[Prediction.V][k], np.sqrt(a) * out[Prediction.EPS][k] - np.sqrt(1 - a)
                        * out[Prediction.X0][k], rtol=1e-12, atol=1e-14)
        pi_1, *_ = data.posterior_components(x, a)
        # a weight is a probability: compared absolutely below 1e-15 (its logit, a sum of terms ~1e3 that cancel for the
        # narrow mixture, carries rounding of ~1e-13 absolute, relative in exp(logit))
        assert_allclose(pi_1, data_posterior.mixture_weight(x, a, *args), rtol=1e-12, atol=1e-15)
        assert_allclose(data.posterior_mean(x, a), out[Prediction.X0][k], rtol=1e-12, atol=1e-14)
        y = np.linspace(-1.5, 1.5, 13)
        assert_allclose(data.posterior_cdf(y, x, a), data_posterior.mixture_posterior_cdf(y, x, a, *args),
                        rtol=1e-10, atol=1e-14)
    # alpha_bar = 0 (a cosine schedule's last t): x_0* is the prior mean and eps* = x_t
    prior_mean = data.weight * data.means[0] + (1 - data.weight) * data.means[1]
    assert_allclose(out[Prediction.X0][-1], prior_mean, rtol=1e-14, atol=1e-15)
    assert_allclose(out[Prediction.EPS][-1], x, rtol=1e-14, atol=1e-15)


def test_gaussian_posterior_is_derivation_p():
    data = oracle.GaussianData()
    x = np.linspace(-3.0, 3.0, 13)
    out = _exact_outputs(data, x)
    for k, a in enumerate(ALPHA_BARS[:-1]):
        assert_allclose(data.posterior_mean(x, a), data_posterior.gaussian_posterior_mean(x, a, data.mean, data.std),
                        rtol=1e-12, atol=1e-14)
        assert_allclose(out[Prediction.X0][k], data.posterior_mean(x, a), rtol=1e-12, atol=1e-14)
        assert_allclose(out[Prediction.EPS][k], data_posterior.gaussian_eps_star(x, a, data.mean, data.std),
                        rtol=1e-10, atol=1e-12)
        assert_allclose(data.posterior_variance(x, a), data_posterior.gaussian_posterior_variance(a, data.std),
                        rtol=1e-12)


@pytest.mark.statistical(alpha=1e-3)
@pytest.mark.parametrize("data", [oracle.GaussianData(), MIXTURES[0]], ids=["gaussian", "mixture"])
def test_posterior_sampler_draws_the_law_of_its_cdf(data, seed_base):
    """KS tests (alpha 1e-3, Holm over the 4): posterior draws at two fixed x_t against the posterior CDF; the PIT
    F(x_0 | x_t) of (x_0, x_t) ~ q is uniform; posterior draws at x_t ~ q(x_t) follow the data law."""
    rng = np.random.default_rng(seed_base + 23)
    a = 0.4
    p_values = []
    for given in (-0.6, 0.9):
        draws = data.sample_posterior(np.full(4000, given), a, rng)
        p_values.append(stats.kstest(draws, lambda y, given=given: data.posterior_cdf(y, np.full(np.shape(y), given),
                                                                                      a)).pvalue)
    x0 = data.sample(rng, (4000,))
    xt_draws = np.sqrt(a) * x0 + np.sqrt(1 - a) * rng.standard_normal(4000)
    p_values.append(stats.kstest(data.posterior_cdf(x0, xt_draws, a), "uniform").pvalue)
    p_values.append(stats.kstest(data.sample_posterior(xt_draws, a, rng), lambda y: _prior_cdf(data, y)).pvalue)
    assert adjusted_p_values(np.array(p_values), Correction.HOLM).min() > 1e-3, p_values


def _prior_cdf(data, y):
    """P(x_0 <= y) of the data law (posterior draws at x_t ~ q(x_t) are draws of it)."""
    if isinstance(data, oracle.GaussianData):
        return stats.norm.cdf(y, data.mean, data.std)
    return (data.weight * stats.norm.cdf(y, data.means[0], data.std)
            + (1 - data.weight) * stats.norm.cdf(y, data.means[1], data.std))
