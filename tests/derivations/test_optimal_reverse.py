"""(u) The KL-optimal Gaussian reverse kernel: steps, exports against independent computations, the code at t = 1.

The cross-entropy is checked against a non-Gaussian q (a uniform density) integrated by SymPy; the joint optimum
against perturbed (mu, sigma^2) on a discrete toy problem; the decoder's optimum at t = 1 against two-point data by
quadrature; Sheppard's correction against the exact discretised decoder by quadrature; and the library's t = 1
variance against the derived optimum.
"""

from __future__ import annotations

import dataclasses

import mpmath
import numpy as np
import pytest
import sympy as sp
from numpy.testing import assert_allclose

from derivations import optimal_reverse as u
from derivations import optimal_variance as ov
from derivations.chain import Check
from derivations.symbols import alpha_bar_prev, beta_t
from testkit import tolerances
from testkit.symbolic import is_zero

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
G = ov.GAMMA


def _steps():
    d = u.derivation()
    steps = enumerate(d.all_steps(), start=1)
    return [pytest.param(s, id=f"u-{i}") for i, s in steps if s.check is not Check.DEFINITION]


def test_every_checked_step_is_closed_symbolically():
    """tests/derivations/test_steps.py checks each step; here: none of (u)'s needs random rational points."""
    assert _steps() and all(case.values[0].check is Check.SIMPLIFY for case in _steps())


def test_derivation_shape():
    d = u.derivation()
    assert d.key == "u" and d.module == "derivations.optimal_reverse"
    assert sum(s.check is Check.DEFINITION for s in d.all_steps()) == 2, "the moments of q and the sum rule"


def test_cross_entropy_of_a_uniform_density():
    # q uniform on [a, b]: m = (a + b) / 2, v = (b - a)^2 / 12; E_q[-log N] integrated directly.
    a, b = sp.Rational(-1, 3), sp.Rational(5, 4)
    mu, s2 = sp.Rational(2, 7), sp.Rational(3, 5)
    y = sp.Symbol("y", real=True)
    direct = sp.integrate((sp.log(2 * sp.pi * s2) / 2 + (y - mu) ** 2 / (2 * s2)) / (b - a), (y, a, b))
    point = {u.COND_MEAN: (a + b) / 2, u.COND_VAR: (b - a) ** 2 / 12, u.MU: mu, u.SIGMA2: s2}
    assert is_zero(direct - u.CROSS_ENTROPY.subs(point))
    assert not is_zero(direct - u.CROSS_ENTROPY.subs(u.COND_VAR, 0).subs(point)), "the variance term matters"


def test_joint_optimum_beats_perturbations():
    # x_t on 3 values (weights w), d = 2 coordinates, q(x_{t-1} | x_t) with means m and variances v per coordinate.
    rng = np.random.default_rng(20220201)
    w = np.array([0.2, 0.5, 0.3])
    m = rng.normal(size=(3, 2))
    v = rng.uniform(0.1, 2.0, size=(3, 2))

    def objective(mu, s2):  # E_{x_t} sum_i cross-entropy (the entropy of q is a constant)
        return float(np.sum(w[:, None] * (0.5 * np.log(2 * np.pi * s2) + (v + (m - mu) ** 2) / (2 * s2))))

    mu_star = np.asarray(m)  # MU_STAR = m
    assert u.MU_STAR == u.COND_MEAN
    s2_star = float(np.sum(w[:, None] * v) / 2)  # SIGMA2_STAR = V, the mean conditional variance
    assert u.SIGMA2_STAR == u.V
    best = objective(mu_star, s2_star)
    for _ in range(200):
        mu = mu_star + rng.normal(scale=0.3, size=mu_star.shape)
        s2 = s2_star * np.exp(rng.normal(scale=0.3))
        assert objective(mu, s2) > best
        assert objective(mu_star, s2) >= best and objective(mu, s2_star) >= best


def _two_point_t1(beta: float) -> tuple[mpmath.mpf, mpmath.mpf]:
    """(Gamma_1, E(x_0 - mu*(x_1))^2) for x_0 = +-1 with probability 1/2 at t = 1, by quadrature at 30 digits."""
    with mpmath.workdps(30):
        beta = mpmath.mpf(beta)
        a, s = mpmath.sqrt(1 - beta), mpmath.sqrt(beta)

        def density(x):
            return (mpmath.npdf(x, a, s) + mpmath.npdf(x, -a, s)) / 2

        def x0_hat(x):
            return mpmath.tanh(a * x / beta)

        def eps_star_sq(x):
            return ((x - a * x0_hat(x)) / s) ** 2

        def decoder_error(x):  # E[(x_0 - x0_hat)^2 | x_1] = 1 - x0_hat^2 for x_0 = +-1
            return 1 - x0_hat(x) ** 2

        nodes = [-mpmath.inf, -a - 1, -a, 0, a, a + 1, mpmath.inf]
        return tuple(mpmath.quad(lambda x, f=f: density(x) * f(x), nodes) for f in (eps_star_sq, decoder_error))


@pytest.mark.parametrize("beta", [0.5, 0.3])
def test_decoder_optimum_on_two_point_data(beta):
    gamma, error = _two_point_t1(beta)
    # The optimal decoder mean is E[x_0 | x_1]: its mean square error is the optimum sigma_1^2.
    assert_allclose(u.sigma2_decoder(beta, gamma), float(error), **F64.kwargs(), err_msg="sigma*_1^2 = E_1")
    assert_allclose(ov.sigma2_optimal(beta, 1.0, gamma), float(error), **F64.kwargs(), err_msg="(j) at t = 1")
    assert not np.isclose(beta, float(error), rtol=1e-3), "the code's beta_1 is not the optimum for these data"


def test_sheppard_correction_against_the_exact_discretised_decoder():
    # z = x_0 - mu_theta ~ N(0, E_1), bins of width delta: minimise the exact expected -log P(bin) over sigma^2
    # (Gauss-Hermite quadrature in float64, golden-section search).
    from scipy.optimize import minimize_scalar
    from scipy.special import ndtr

    e1, delta = 1.0, 0.2
    nodes, weights = np.polynomial.hermite_e.hermegauss(80)  # for the weight exp(-z^2 / 2)
    z = np.sqrt(e1) * nodes
    weights = weights / weights.sum()

    def cost(s2):
        sd = np.sqrt(s2)
        far = np.abs(z)  # P(bin) is even in z; the lower tail keeps its digits
        return float(np.sum(weights * -np.log(ndtr((delta / 2 - far) / sd) - ndtr((-delta / 2 - far) / sd))))

    found = minimize_scalar(cost, bounds=(0.5, 1.5), method="bounded", options={"xatol": 1e-10}).x
    derived = float(u.SIGMA2_DECODER_DISCRETE.subs({u.E1: e1, u.DELTA: delta}))
    assert abs(found - derived) < delta**4, "E_1 - delta^2 / 12 up to O(delta^4)"
    assert abs(found - e1) > delta**2 / 24, "the correction is not negligible at this delta"


def test_code_t1_variance_is_beta_1_whatever_gamma_1():
    torch = pytest.importorskip("torch")  # noqa: F841  the library is a torch library
    from ddpm.core.diffusion import GaussianDiffusion

    betas = np.linspace(1e-4, 0.02, 10)
    for gamma_1 in (0.0, float(betas[0]), 0.5, 1.0):
        gamma = np.concatenate([[gamma_1], np.full(9, 0.999)])
        got = GaussianDiffusion(betas).with_optimal_variance(gamma).reverse_variance("optimal").numpy()[1]
        assert got == betas[0], "the code keeps sigma_1^2 = beta_1"
        derived = u.sigma2_decoder(betas[0], gamma_1)
        if gamma_1 == float(betas[0]):
            assert_allclose(got, derived, **F64.kwargs(), err_msg="beta_1 is the optimum at Gamma_1 = beta_1")
        else:
            assert not np.isclose(got, derived, rtol=F64.rtol), f"differs from the optimum at Gamma_1 = {gamma_1}"


def test_t1_matches_derivation_j_and_rejects_mutants():
    assert is_zero(u.SIGMA2_DECODER - ov.SIGMA2_OPTIMAL.subs(alpha_bar_prev, 1))
    (step,) = [s for s in u.derivation().results if s.description.startswith("t = 1, from the decoder")]
    assert not dataclasses.replace(step, rhs=beta_t * (1 - G)).holds_symbolically(), "alpha_1 dropped"
    assert not dataclasses.replace(step, rhs=beta_t * G / (1 - beta_t)).holds_symbolically(), "Gamma for 1 - Gamma"
