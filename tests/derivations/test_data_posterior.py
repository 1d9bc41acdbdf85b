"""(p) q(x_0 | x_t) of Gaussian and two-Gaussian-mixture data: the steps, the exports against NumPy and SciPy, mutants.

The float64 functions are compared with formulas written here independently (NumPy, SciPy's normal density and
CDF) and with Bayes' rule evaluated by numerical integration over x_0; each checked result fails when its formula
is mutated.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import integrate, stats

from derivations import data_posterior as dp
from derivations.chain import Check, Step
from derivations.symbols import normal_density, x_0, x_t
from testkit import tolerances
from testkit.symbolic import step_cases

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
examples = settings(max_examples=25, deadline=None)
alpha_bars = st.floats(1e-6, 1.0 - 1e-6)
xts = st.floats(-4.0, 4.0)


# --- NumPy references, written independently ------------------------------------------------------------------
def np_gaussian(xt, a, m, s):
    r = a * s**2 + 1.0 - a
    return m + np.sqrt(a) * s**2 / r * (xt - np.sqrt(a) * m), (1.0 - a) * s**2 / r


def np_mixture(xt, a, w, mu1, mu2, s):
    """(pi_1, component posterior means (m_1, m_2), component variance v) by Bayes with SciPy's densities."""
    r = a * s**2 + 1.0 - a
    e1 = w * stats.norm.pdf(xt, np.sqrt(a) * mu1, np.sqrt(r))
    e2 = (1 - w) * stats.norm.pdf(xt, np.sqrt(a) * mu2, np.sqrt(r))
    (m1, v), (m2, _) = np_gaussian(xt, a, mu1, s), np_gaussian(xt, a, mu2, s)
    return e1 / (e1 + e2), (m1, m2), v


def _holds(step: Step) -> bool:
    return step.holds_symbolically() if step.check is Check.SIMPLIFY else step.holds_at_random_rationals()


# --- the steps ---------------------------------------------------------------------------------------------
def test_every_checked_step_is_among_the_generic_step_cases():
    ids = [case.id for case in step_cases() if case.id.startswith("p-data_posterior-")]
    checked = [step for step in dp.derivation().all_steps() if step.check is not Check.DEFINITION]
    assert len(ids) == len(checked) >= 15


def test_stated_results():
    assert sp.simplify(dp.POSTERIOR_VARIANCE - (1 - dp.a) * dp.s**2 / (dp.a * dp.s**2 + 1 - dp.a)) == 0
    assert sp.simplify(dp.GAIN - sp.sqrt(dp.a) * dp.s**2 / (dp.a * dp.s**2 + 1 - dp.a)) == 0
    # the posterior variance is below both the prior's and the one the likelihood alone would give
    assert sp.simplify(dp.s**2 - dp.POSTERIOR_VARIANCE - dp.a * dp.s**4 / (dp.a * dp.s**2 + 1 - dp.a)) == 0
    # a = 0: the posterior is the prior; a -> 1: the point mass at x_t
    assert sp.simplify(dp.POSTERIOR_MEAN.subs(dp.a, 0) - dp.m) == 0 and dp.POSTERIOR_VARIANCE.subs(dp.a, 0) == dp.s**2
    assert sp.simplify(sp.limit(dp.POSTERIOR_MEAN, dp.a, 1) - x_t) == 0 and dp.POSTERIOR_VARIANCE.subs(dp.a, 1) == 0


# --- mutants ----------------------------------------------------------------------------------------------
def test_mutants_fail_the_checks():
    results = dp.derivation().results
    domains = results[2].domains  # the mixture step's rational domain (x's in [-3, 3], 0 < a < 1, ...)
    # the posterior variance without the likelihood's precision: s^2
    assert not _holds(Step("mutant", dp.BAYES_RATIO, normal_density(x_0, dp.STATED_MEAN, dp.s**2), Check.RATIONAL,
                           domains=domains))
    # the gain without sqrt(a)
    wrong_mean = dp.m + dp.a * dp.s**2 / dp.R * (x_t - sp.sqrt(dp.a) * dp.m)
    assert not _holds(Step("mutant", dp.BAYES_RATIO, normal_density(x_0, wrong_mean, dp.STATED_VARIANCE),
                           Check.RATIONAL, domains=domains))
    # eps* with sqrt(1 - a) in the numerator dropped
    assert not _holds(Step("mutant", dp.EPS_STAR, (x_t - sp.sqrt(dp.a) * dp.m) / dp.R))
    # the logistic weight with the sign of l flipped, and with the prior weights left out
    weight = next(step for step in dp.derivation().steps if step.lhs is dp.MIXTURE_WEIGHT)
    for wrong in (1 / (1 + sp.exp(dp.LOGIT)), 1 / (1 + sp.exp(-(dp.LOGIT - sp.log(dp.w / (1 - dp.w)))))):
        assert not _holds(Step("mutant", wrong, weight.rhs, Check.RATIONAL, domains=weight.domains))
    # the mixture posterior with the prior weights w, 1 - w instead of the posterior ones
    mixture = results[2]
    prior_weighted = mixture.rhs.subs(dp.MIXTURE_WEIGHT, dp.w)
    assert not _holds(Step("mutant", mixture.lhs, prior_weighted, Check.RATIONAL, domains=mixture.domains))
    # the tanh form without the factor (1 - sqrt(a) g)
    tanh = next(step for step in results if step.lhs is dp.SYMMETRIC_POSTERIOR_MEAN)
    no_factor = dp.STATED_GAIN * x_t + dp.c * sp.tanh(sp.sqrt(dp.a) * dp.c * x_t / dp.R)
    assert not _holds(Step("mutant", tanh.lhs, no_factor, Check.RATIONAL, domains=tanh.domains))


# --- float64 exports against NumPy, SciPy and Bayes' rule by quadrature -----------------------------------
@examples
@given(xt=xts, a=alpha_bars, m=st.floats(-1, 1), s=st.floats(0.05, 2.0))
@example(xt=1.0, a=1e-6, m=0.1, s=0.25)
@example(xt=-2.0, a=1.0 - 1e-6, m=0.1, s=0.25)
def test_gaussian_exports_match_numpy(xt, a, m, s):
    mean, var = np_gaussian(xt, a, m, s)
    assert_allclose(dp.gaussian_posterior_mean(xt, a, m, s), mean, **F64)
    assert_allclose(dp.gaussian_posterior_variance(a, s), var, **F64)
    assert_allclose(dp.gaussian_eps_star(xt, a, m, s), (xt - np.sqrt(a) * mean) / np.sqrt(1 - a), rtol=1e-9,
                    atol=1e-9)  # the NumPy side loses digits in x_t - sqrt(a) mean near a = 1


@examples
@given(xt=xts, a=st.floats(1e-4, 0.9999), w=st.floats(0.05, 0.95), mu1=st.floats(-1, 1), mu2=st.floats(-1, 1),
       s=st.floats(0.05, 1.0))
@example(xt=0.3, a=0.5, w=0.3, mu1=-0.5, mu2=0.5, s=0.15)
def test_mixture_exports_match_numpy(xt, a, w, mu1, mu2, s):
    pi1, (m1, m2), v = np_mixture(xt, a, w, mu1, mu2, s)
    mean = pi1 * m1 + (1 - pi1) * m2
    assert_allclose(dp.mixture_weight(xt, a, w, mu1, mu2, s), pi1, rtol=1e-12, atol=1e-300)
    assert_allclose(dp.mixture_posterior_mean(xt, a, w, mu1, mu2, s), mean, rtol=1e-10, atol=1e-12)
    assert_allclose(dp.mixture_eps_star(xt, a, w, mu1, mu2, s), (xt - np.sqrt(a) * mean) / np.sqrt(1 - a),
                    rtol=1e-8, atol=1e-8)
    for y in (m1, m2, 0.0, m1 + 2 * np.sqrt(v)):
        cdf = pi1 * stats.norm.cdf(y, m1, np.sqrt(v)) + (1 - pi1) * stats.norm.cdf(y, m2, np.sqrt(v))
        assert_allclose(dp.mixture_posterior_cdf(y, xt, a, w, mu1, mu2, s), cdf, rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize(("xt", "a"), [(0.4, 0.3), (-1.2, 0.9), (2.0, 0.02)])
def test_mixture_posterior_is_bayes_rule_by_quadrature(xt, a):
    """prior(x_0) q(x_t | x_0) / integral of the same over x_0: the exported density, mean and CDF."""
    w, mu1, mu2, s = 0.3, -0.5, 0.5, 0.15

    def joint(y):
        prior = w * stats.norm.pdf(y, mu1, s) + (1 - w) * stats.norm.pdf(y, mu2, s)
        return prior * stats.norm.pdf(xt, np.sqrt(a) * y, np.sqrt(1 - a))

    evidence = integrate.quad(joint, -5, 5, epsabs=1e-14, limit=200)[0]
    mean = integrate.quad(lambda y: y * joint(y), -5, 5, epsabs=1e-14, limit=200)[0] / evidence
    assert_allclose(dp.mixture_posterior_mean(xt, a, w, mu1, mu2, s), mean, rtol=1e-8)
    for y in (-0.6, 0.0, 0.45):
        assert_allclose(dp.mixture_posterior_density(y, xt, a, w, mu1, mu2, s), joint(y) / evidence, rtol=1e-8)
        below = integrate.quad(joint, -5, y, epsabs=1e-14, limit=200)[0] / evidence
        assert_allclose(dp.mixture_posterior_cdf(y, xt, a, w, mu1, mu2, s), below, rtol=1e-7, atol=1e-12)


@examples
@given(xt=xts, a=st.floats(1e-4, 0.999), c=st.floats(0.1, 1.0))
def test_two_point_limit_is_the_tanh_form_and_the_narrow_mixture_tends_to_it(xt, a, c):
    expected = c * np.tanh(np.sqrt(a) * c * xt / (1 - a))
    assert_allclose(dp.two_point_posterior_mean(xt, a, c), expected, **F64)
    narrow = dp.mixture_posterior_mean(xt, a, 0.5, c, -c, 1e-6)
    assert_allclose(narrow, expected, rtol=1e-6, atol=1e-6)
