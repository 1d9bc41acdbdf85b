"""The conformance oracle's forms are the derived results: each equals the expression of derivations (a), (b), (d), (i),
and the DDIM inversion forms are eq. 12 at eta = 0 solved for x_t.

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
from derivations import data_posterior, eps_parameterisation, forward_marginal, parameterisations, posterior, strided
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


COMPLEMENTS = {oracle.m_t: 1 - oracle.a_t, oracle.m_s: 1 - oracle.a_s}
DDIM_ETA_0 = {oracle.z: 0, oracle.eta: 0}


def _output_at_t(prediction: Prediction) -> dict:
    """The network output at t that carries the same (x0_hat, eps_hat) as the output at s (the inversion's input)."""
    if prediction is Prediction.V:
        x0_hat, eps_hat = oracle.X0_HATS_AT_S[prediction], oracle.EPS_HATS_AT_S[prediction]
        return {oracle.vel: sp.sqrt(oracle.a_t) * eps_hat - sp.sqrt(oracle.m_t) * x0_hat}
    return {}  # eps and x_0 predictions: the same output


@pytest.mark.parametrize("prediction", list(Prediction), ids=[p.value for p in Prediction])
def test_inversion_is_eq12_at_eta_0_solved_for_x_t(prediction):
    """The DDIM step (eq. 12, eta = 0) from t back to s, applied to the inversion's x_t, returns x_s exactly."""
    ddim = oracle.DDIM_BY_PREDICTION[prediction][0].subs(DDIM_ETA_0)
    for form in oracle.INVERSION_BY_PREDICTION[prediction]:
        back = ddim.subs({oracle.xt: form, **_output_at_t(prediction)}, simultaneous=True)
        assert sp.simplify((back - oracle.xs).subs(COMPLEMENTS)) == 0, form


@pytest.mark.parametrize("prediction", [Prediction.X0, Prediction.V], ids=["x0", "v"])
def test_inversion_parameterisations_are_the_eps_form_at_their_eps_hat(prediction):
    """x_0 and v outputs give the eps form at eps_hat, with x_s = sqrt(a_s) x0_hat + sqrt(1 - a_s) eps_hat."""
    eps_hat = oracle.EPS_HATS_AT_S[prediction]
    (form,) = oracle.INVERSION_BY_PREDICTION[prediction]
    assert sp.simplify((form - oracle.INVERSION_FORMS[0].subs(oracle.eps, eps_hat)).subs(COMPLEMENTS)) == 0
    consistent = sp.sqrt(oracle.a_s) * oracle.X0_HATS_AT_S[prediction] + sp.sqrt(oracle.m_s) * eps_hat
    assert sp.simplify((consistent - oracle.xs).subs(COMPLEMENTS)) == 0


def test_an_inversion_with_the_forward_s_is_rejected():
    """The check can fail: x_t = sqrt(a_s) x0_hat + sqrt(1 - a_s) eps (the forward step's target) is not eq. 12
    solved for x_t."""
    mutated = (sp.sqrt(oracle.a_s) * oracle.X0_HATS_AT_S[Prediction.EPS] + sp.sqrt(oracle.m_s) * oracle.eps)
    back = oracle.DDIM_FORMS[0].subs(DDIM_ETA_0).subs(oracle.xt, mutated)
    assert sp.simplify((back - oracle.xs).subs(COMPLEMENTS)) != 0


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


# ------------------------------------------------------------------------------------------- parameterisations
PARAMETERISED = {**DATA, oracle.vel: parameterisations.V}
FORWARD_AT_T = {oracle.a_t: alpha_bar, oracle.m_t: 1 - alpha_bar}


@pytest.mark.parametrize("form, derived", [
    (oracle.EPS_FROM_X0, parameterisations.EPS_FROM_X0),
    (oracle.X0_FROM_V, parameterisations.X0_FROM_V),
    (oracle.EPS_FROM_V, parameterisations.EPS_FROM_V),
    (oracle.X0_HAT, parameterisations.X0_FROM_EPS),
], ids=["eps_from_x0", "x0_from_v", "eps_from_v", "x0_from_eps"])
def test_conversions_are_derivation_o(form, derived):
    assert sp.simplify(form.subs(FORWARD_AT_T).subs(PARAMETERISED) - derived) == 0


@pytest.mark.parametrize("prediction, derived", [
    (Prediction.EPS, parameterisations.MEAN_FROM_EPS),
    (Prediction.X0, parameterisations.MEAN_FROM_X0),
    (Prediction.V, parameterisations.MEAN_FROM_V),
], ids=["eps", "x0", "v"])
def test_every_route_to_each_parameterisations_mean_is_derivation_o(prediction, derived):
    for form in oracle.MEANS[prediction]:
        assert sp.simplify(form.subs(STRIDE).subs(PARAMETERISED) - derived) == 0


@pytest.mark.parametrize("prediction, derived", [
    (Prediction.X0, parameterisations.DDIM_MEAN_FROM_X0),
    (Prediction.V, parameterisations.DDIM_MEAN_FROM_V),
], ids=["x0", "v"])
def test_ddim_in_each_parameterisation_is_derivation_o_at_eta_0(prediction, derived):
    (form,) = oracle.DDIM_BY_PREDICTION[prediction]
    deterministic = derived.subs(strided.sigma2_ddim, 0)
    assert sp.simplify(form.subs(oracle.eta, 0).subs(STRIDE).subs(PARAMETERISED) - deterministic) == 0


@pytest.mark.parametrize("prediction", list(Prediction), ids=lambda p: p.value)
def test_gaussian_data_minima_and_exact_outputs_are_derivation_o(prediction):
    data = oracle.GaussianData(0.1, 0.25)
    abars = np.array([1e-6, 0.01, 0.3, 0.7, 0.999])
    expected = parameterisations.loss_minimum(prediction.value, abars, 0.25)
    got = np.array([data.loss_minimum(a, prediction) for a in abars])
    np.testing.assert_allclose(got, expected, rtol=1e-12)
    # The exact outputs are one point seen three ways: v* = sqrt(a) eps* - sqrt(1 - a) x0*, x0* = x0_hat(eps*).
    x = torch.linspace(-3, 3, 7, dtype=torch.float64).reshape(7, 1, 1, 1)
    t = torch.full((7,), 3, dtype=torch.int64)
    outputs = {p: data.model(abars, 1, p)(x, t).reshape(-1).numpy() for p in Prediction}
    a, xs = abars[2], x.reshape(-1).numpy()
    np.testing.assert_allclose(outputs[Prediction.X0], parameterisations.x0_from_eps(xs, outputs[Prediction.EPS], a),
                               rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(outputs[Prediction.V], np.sqrt(a) * outputs[Prediction.EPS]
                               - np.sqrt(1 - a) * outputs[Prediction.X0], rtol=1e-12, atol=1e-12)


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
