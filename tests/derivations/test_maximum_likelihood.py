"""(g) Maximum likelihood = minimum KL, and the VAE bound, against textbook forms and quadrature.

Each check is also run on deliberately wrong formulas (mutants) to show it can reject them.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import integrate, stats

from derivations import maximum_likelihood as ml
from testkit import tolerances
from testkit.symbolic import is_zero, textbook_kl

pytestmark = pytest.mark.symbolic

m, s2, mu, v = ml.DATA_MEAN, ml.DATA_VAR, ml.MODEL_MEAN, ml.MODEL_VAR
X, W, B, VX, MQ, VQ = ml.X, ml.W, ml.B, ml.NOISE_VAR, ml.Q_MEAN, ml.Q_VAR

reals = st.floats(min_value=-3.0, max_value=3.0, allow_nan=False, allow_infinity=False)
positives = st.floats(min_value=0.05, max_value=5.0, allow_nan=False, allow_infinity=False)


def _step(fragment: str):
    """The derivation step whose description contains `fragment` (so tests read the derived lhs)."""
    (step,) = [s for s in ml.derivation().all_steps() if fragment in s.description]
    return step


# --- part 1: maximum likelihood ------------------------------------------------------------------


def test_expected_log_likelihood_is_minus_kl_minus_entropy():
    derived = _step("integrated through the first two moments").lhs
    entropy = sp.Rational(1, 2) + sp.log(2 * sp.pi * s2) / 2  # textbook differential entropy of N(m, s^2)
    assert is_zero(derived - (-textbook_kl(m, s2, mu, v) - entropy))


@pytest.mark.parametrize(
    "mutant_entropy",
    [
        pytest.param(-(sp.Rational(1, 2) + sp.log(2 * sp.pi * s2) / 2), id="entropy-sign-flipped"),
        pytest.param(sp.Rational(1, 2) + sp.log(2 * sp.pi * sp.sqrt(s2)) / 2, id="variance-for-std"),
    ],
)
def test_kl_decomposition_check_rejects_mutant(mutant_entropy):
    derived = _step("integrated through the first two moments").lhs
    assert not is_zero(derived - (-textbook_kl(m, s2, mu, v) - mutant_entropy))


def test_maximiser_is_data_mean_and_variance():
    assert is_zero(_step("has mu = m").lhs - m)
    assert is_zero(_step("... and v = s^2.").lhs - s2)


def test_sample_maximiser_is_sample_moments():
    xs = sp.symbols("x^1:4", real=True)
    mean = (xs[0] + xs[1] + xs[2]) / 3
    assert is_zero(_step("gives the sample mean").lhs - mean)
    assert is_zero(_step("biased) sample variance").lhs - (sum(xi**2 for xi in xs) / 3 - mean**2))


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(data_mean=reals, data_var=positives, model_mean=reals, model_var=positives)
def test_expected_log_likelihood_is_maximal_at_data_parameters(data_mean, data_var, model_mean, model_var):
    best = ml.expected_log_likelihood(data_mean, data_var, data_mean, data_var)
    other = ml.expected_log_likelihood(data_mean, data_var, model_mean, model_var)
    assert other <= best + tolerances.FLOAT64.rtol * abs(best)


def _quad(f, centre, scale):
    lo, hi = centre - 40 * scale, centre + 40 * scale
    value, _ = integrate.quad(f, lo, hi, points=[centre], epsabs=1e-14, epsrel=1e-13, limit=200)
    return value


@settings(deadline=None, max_examples=10)  # each example is an adaptive quadrature
@given(data_mean=reals, data_var=positives, model_mean=reals, model_var=positives)
def test_expected_log_likelihood_matches_quadrature(data_mean, data_var, model_mean, model_var):
    s = np.sqrt(data_var)
    value = _quad(
        lambda x: stats.norm.pdf(x, data_mean, s) * stats.norm.logpdf(x, model_mean, np.sqrt(model_var)), data_mean, s
    )
    assert_allclose(
        ml.expected_log_likelihood(data_mean, data_var, model_mean, model_var),
        value,
        **tolerances.FLOAT64.kwargs(),
        err_msg="E_data[log P_theta] != int P_data log P_theta (quad)",
    )


# --- part 2: the VAE bound -----------------------------------------------------------------------


def test_marginal_and_posterior_equal_textbook_linear_gaussian_formulas():
    """Bishop, PRML eqs. 2.115-2.117 with prior N(0, 1), likelihood N(w z + b, v_x)."""
    marginal = -sp.log(2 * sp.pi * (W**2 + VX)) / 2 - (X - B) ** 2 / (2 * (W**2 + VX))
    assert is_zero(_step("So the marginal p(x)").lhs - marginal)
    posterior_var = 1 / (1 + W**2 / VX)
    posterior_mean = posterior_var * W * (X - B) / VX
    assert is_zero(ml.VAE_POSTERIOR_VAR - posterior_var)
    assert is_zero(ml.VAE_POSTERIOR_MEAN - posterior_mean)


def test_log_marginal_equals_elbo_plus_posterior_kl():
    log_marginal = _step("So the marginal p(x)").lhs
    elbo = _step("The first term's expectation under q").lhs
    kl = textbook_kl(MQ, VQ, ml.VAE_POSTERIOR_MEAN, ml.VAE_POSTERIOR_VAR)
    assert is_zero(log_marginal - elbo - kl)


@pytest.mark.parametrize(
    "mutant_kl",
    [
        pytest.param(textbook_kl(ml.VAE_POSTERIOR_MEAN, ml.VAE_POSTERIOR_VAR, MQ, VQ), id="kl-direction-reversed"),
        pytest.param(textbook_kl(MQ, VQ, ml.VAE_POSTERIOR_MEAN, VX / (W + VX)), id="square-dropped-in-posterior-var"),
        pytest.param(-textbook_kl(MQ, VQ, ml.VAE_POSTERIOR_MEAN, ml.VAE_POSTERIOR_VAR), id="sign-flipped"),
    ],
)
def test_vae_identity_check_rejects_mutant(mutant_kl):
    log_marginal = _step("So the marginal p(x)").lhs
    elbo = _step("The first term's expectation under q").lhs
    assert not is_zero(log_marginal - elbo - mutant_kl)


def _log_joint(z, x, w, b, vx):
    return stats.norm.logpdf(z) + stats.norm.logpdf(x, w * z + b, np.sqrt(vx))


def quadrature_log_marginal(x, w, b, vx):
    """log int p(x, z) dz, with the integrand rescaled by its largest value on a grid (no underflow)."""
    grid = np.linspace(-40.0, 40.0, 8001)
    log_values = _log_joint(grid, x, w, b, vx)
    peak, z_peak = log_values.max(), grid[log_values.argmax()]
    value, _ = integrate.quad(
        lambda z: np.exp(_log_joint(z, x, w, b, vx) - peak),
        -40.0,
        40.0,
        points=[z_peak],
        epsabs=0.0,
        epsrel=1e-13,
        limit=200,
    )
    return peak + np.log(value)


def quadrature_elbo(x, w, b, vx, mq, vq):
    sq = np.sqrt(vq)
    return _quad(
        lambda z: stats.norm.pdf(z, mq, sq) * (_log_joint(z, x, w, b, vx) - stats.norm.logpdf(z, mq, sq)), mq, sq
    )


def quadrature_posterior_kl(x, w, b, vx, mq, vq):
    sq = np.sqrt(vq)
    log_px = quadrature_log_marginal(x, w, b, vx)
    return _quad(
        lambda z: stats.norm.pdf(z, mq, sq) * (stats.norm.logpdf(z, mq, sq) - (_log_joint(z, x, w, b, vx) - log_px)),
        mq,
        sq,
    )


VAE_POINTS = [(0.7, 1.3, -0.2, 0.5, 0.1, 0.3), (-2.0, 0.4, 1.0, 2.0, -1.0, 1.5), (1.5, -2.0, 0.3, 0.1, 0.5, 0.05)]


def matches_quadrature_elbo(elbo_function) -> bool:
    return all(np.allclose(elbo_function(*p), quadrature_elbo(*p), **tolerances.FLOAT64.kwargs()) for p in VAE_POINTS)


@settings(deadline=None, max_examples=8)  # each example runs three adaptive quadratures
@given(x=reals, w=reals, b=reals, vx=positives, mq=reals, vq=positives)
def test_vae_functions_match_quadrature(x, w, b, vx, mq, vq):
    f64 = tolerances.FLOAT64.kwargs()
    assert_allclose(ml.vae_log_marginal(x, w, b, vx), quadrature_log_marginal(x, w, b, vx), **f64)
    assert_allclose(ml.vae_elbo(x, w, b, vx, mq, vq), quadrature_elbo(x, w, b, vx, mq, vq), **f64)
    assert_allclose(
        ml.vae_posterior_kl(x, w, b, vx, mq, vq),
        quadrature_posterior_kl(x, w, b, vx, mq, vq),
        **tolerances.FLOAT64.kwargs(),
        err_msg="KL(q || p(z|x)) != quadrature with p(z|x) = p(x, z)/p(x)",
    )


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(
            lambda x, w, b, vx, mq, vq: ml.vae_elbo(x, w, b, vx, mq, vq) - np.log(2 * np.pi * np.e * vq),
            id="entropy-sign-flipped",
        ),
        pytest.param(
            lambda x, w, b, vx, mq, vq: ml.vae_elbo(x, w, b, vx, mq, vq) + w**2 * vq / (2 * vx),
            id="q-variance-term-dropped",
        ),
        pytest.param(lambda x, w, b, vx, mq, vq: ml.vae_log_marginal(x, w, b, vx), id="elbo-equals-log-marginal"),
    ],
)
def test_elbo_quadrature_check_rejects_mutant(mutant):
    assert matches_quadrature_elbo(ml.vae_elbo), "the check must accept the true ELBO"
    assert not matches_quadrature_elbo(mutant)


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(x=reals, w=reals, b=reals, vx=positives, mq=reals, vq=positives)
def test_elbo_is_a_lower_bound_and_the_gap_is_the_posterior_kl(x, w, b, vx, mq, vq):
    log_px = ml.vae_log_marginal(x, w, b, vx)
    elbo = ml.vae_elbo(x, w, b, vx, mq, vq)
    assert elbo <= log_px + tolerances.FLOAT64.rtol * abs(log_px)
    assert_allclose(log_px - elbo, ml.vae_posterior_kl(x, w, b, vx, mq, vq), **tolerances.FLOAT64.kwargs())


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(x=reals, w=reals, b=reals, vx=positives)
def test_elbo_is_tight_at_the_exact_posterior(x, w, b, vx):
    mq, vq = ml.vae_posterior_mean(x, w, b, vx), ml.vae_posterior_var(w, vx)
    assert_allclose(ml.vae_elbo(x, w, b, vx, mq, vq), ml.vae_log_marginal(x, w, b, vx), **tolerances.FLOAT64.kwargs())
    assert abs(ml.vae_posterior_kl(x, w, b, vx, mq, vq)) <= tolerances.FLOAT64.atol


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(x=reals, w=reals, b=reals, vx=positives, shift=st.floats(min_value=0.1, max_value=2.0))
def test_elbo_is_strictly_below_away_from_the_posterior(x, w, b, vx, shift):
    mq, vq = ml.vae_posterior_mean(x, w, b, vx) + shift, ml.vae_posterior_var(w, vx)
    assert ml.vae_elbo(x, w, b, vx, mq, vq) < ml.vae_log_marginal(x, w, b, vx)


def test_general_family_identity_and_its_mutations():
    """E_data[log p_theta] = -KL - H for any positive densities: the merged integrand is 0; a sign error in the
    entropy or a swapped KL direction leaves a non-zero integrand."""
    from derivations import maximum_likelihood as ml

    def vanishes(expr):
        return sp.simplify(ml.merge_integrals(expr).function) == 0

    E, KL, H = ml.GENERAL_EXPECTED_LOG_LIKELIHOOD, ml.GENERAL_KL, ml.GENERAL_ENTROPY
    assert vanishes(E + KL + H)
    assert not vanishes(E + KL - H), "entropy with the wrong sign"
    # private: the derivation's integration variable
    swapped = sp.Integral(ml.P_THETA * sp.log(ml.P_THETA / ml.P_DATA), (ml._x, -sp.oo, sp.oo))
    assert not vanishes(E + swapped + H), "KL(P_theta || P_data) instead of KL(P_data || P_theta)"
    assert vanishes(sp.diff(E, ml.THETA) + sp.diff(KL, ml.THETA)), "the entropy has no theta"


def test_exports_are_the_derived_expressions():
    from derivations import maximum_likelihood as ml

    for derived, paper in ((ml.EXPECTED_LOG_LIKELIHOOD, ml.EXPECTED_LOG_LIKELIHOOD_PAPER),
                           (ml.DATA_ENTROPY, ml.DATA_ENTROPY_PAPER), (ml.VAE_LOG_MARGINAL, ml.VAE_LOG_MARGINAL_PAPER),
                           (ml.VAE_POSTERIOR_MEAN, ml.VAE_POSTERIOR_MEAN_PAPER),
                           (ml.VAE_POSTERIOR_VAR, ml.VAE_POSTERIOR_VAR_PAPER), (ml.VAE_ELBO, ml.VAE_ELBO_PAPER)):
        assert sp.simplify(sp.expand_log(derived - paper, force=True)) == 0
