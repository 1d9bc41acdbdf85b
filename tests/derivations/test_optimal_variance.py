"""(j) The KL-optimal reverse variance: results vs Analytic-DPM, reductions to (b) and (h), bounds, oracles, mutants.

The derived sigma*^2(Gamma_t) is compared with the forms typed here from Bao et al. (2022), reduced to
derivation (h)'s Gaussian optimum and to derivation (b)'s beta_tilde_t, checked on non-Gaussian data
(x_0 = +-1, by quadrature at 30 digits), and its bounds are checked at random rational points. Every check
that accepts the derived result is also run on deliberately wrong formulas.
"""

from __future__ import annotations

import dataclasses
import random

import mpmath
import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

import derivations
from derivations import gaussian_kl as gk
from derivations import optimal_variance as ov
from derivations import posterior
from derivations import reverse_variance as rv
from derivations.chain import Check
from derivations.numeric import alpha_bar_from_betas
from derivations.symbols import alpha_bar_prev, beta_t, sigma2
from testkit import strategies, tolerances
from testkit.symbolic import is_zero, is_zero_on_domain, step_cases

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64
G = ov.GAMMA
S2 = rv.DATA_VARIANCE
alpha_t = 1 - beta_t
alpha_bar_t = alpha_bar_prev * alpha_t

# Typed from the papers: Ho et al. (2020) eq. (7), Bao et al. (2022) Theorems 1 and 2 with lambda_t^2 = beta_tilde_t
# (the DDPM reverse process), beta_bar = 1 - alpha_bar, and (1 - alpha_bar_t) E||score||^2 / d = Gamma_t.
PAPER_BETA_TILDE = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
PAPER_C0 = sp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)
PAPER_SIGMA2_OPTIMAL = PAPER_BETA_TILDE + beta_t**2 / (alpha_t * (1 - alpha_bar_t)) * (1 - G)
BAO_THEOREM_1 = PAPER_BETA_TILDE + (
    sp.sqrt((1 - alpha_bar_t) / alpha_t) - sp.sqrt(1 - alpha_bar_prev - PAPER_BETA_TILDE)
) ** 2 * (1 - G)
BAO_THEOREM_2_UPPER = BAO_THEOREM_1.subs(G, 0)
BAO_THEOREM_2_UPPER_DATA = PAPER_BETA_TILDE + (
    sp.sqrt(alpha_bar_prev) - sp.sqrt(1 - alpha_bar_prev - PAPER_BETA_TILDE) * sp.sqrt(alpha_bar_t / (1 - alpha_bar_t))
) ** 2 * ((1 - (-1)) / sp.Integer(2)) ** 2
PAPER_GAMMA_LOWER = 1 - alpha_bar_t / (1 - alpha_bar_t)
GAMMA_GAUSSIAN = (1 - alpha_bar_t) / (alpha_bar_t * S2 + 1 - alpha_bar_t)  # E (E[eps | x_t])^2 for N(0, s^2) data

# The schedule's domain 0 < beta_t < 1, 0 < alpha_bar_{t-1} < 1 as beta_t = 1 / (1 + r), alpha_bar_{t-1} = 1 / (1 + u)
# with r, u > 0: every quantity under a square root then factors into positive terms SymPy can take apart.
_r, _u = sp.symbols("r u", positive=True)
_DOMAIN = {beta_t: 1 / (1 + _r), alpha_bar_prev: 1 / (1 + _u)}


# --- the checks, each usable on the true result and on a mutant ---------------------------------
def reduces_to_gaussian_optimum(sigma2_of_gamma: sp.Expr) -> bool:
    """Gamma_t of N(0, s^2) data gives derivation (h)'s optimum for every s^2."""
    return sp.cancel(sigma2_of_gamma.subs(G, GAMMA_GAUSSIAN) - rv.SIGMA2_OPTIMAL_GAUSSIAN) == 0


def reduces_to_point_mass(sigma2_of_gamma: sp.Expr) -> bool:
    """Gamma_t = 1 (a point mass) gives beta_tilde_t."""
    return is_zero(sigma2_of_gamma.subs(G, 1) - PAPER_BETA_TILDE)


def upper_data_bound_holds(sigma2_of_gamma: sp.Expr, gamma_lower: sp.Expr) -> bool:
    """At the lower end of Gamma_t for data in [-1, 1] the optimum is beta_tilde_t + c_0^2."""
    return is_zero(sigma2_of_gamma.subs(G, gamma_lower) - (PAPER_BETA_TILDE + PAPER_C0**2))


# --- registration and exports -------------------------------------------------------------------
def test_registered_as_derivation_j():
    assert "optimal_variance" in derivations.MODULES
    (d,) = [d for d in derivations.all_derivations() if d.key == "j"]
    assert d.module == "derivations.optimal_variance"
    checks = {step.check for step in d.all_steps()}
    assert Check.SIMPLIFY in checks
    # A RATIONAL step says why SymPy does not close it; (j) has none left (Bao's form closes on the domain).
    assert all(step.reason for step in d.all_steps() if step.check is Check.RATIONAL)


def test_every_checked_step_is_covered_by_the_generic_step_test():
    (d,) = [d for d in derivations.all_derivations() if d.key == "j"]
    ids = {case.id for case in step_cases()}
    expected = {
        f"j-optimal_variance-{i}" for i, step in enumerate(d.all_steps(), start=1) if step.check is not Check.DEFINITION
    }
    assert expected and expected <= ids


@pytest.mark.parametrize(
    ("name", "symbols"),
    [
        ("SIGMA2_OPTIMAL", {beta_t, alpha_bar_prev, G}),
        ("GAMMA_LOWER", {beta_t, alpha_bar_prev}),
        ("SIGMA2_UPPER", {beta_t}),
        ("SIGMA2_UPPER_DATA", {beta_t, alpha_bar_prev}),
    ],
)
def test_exported_expression_symbols(name, symbols):
    assert getattr(ov, name).free_symbols == symbols, f"{name} is not an expression in {symbols}"
    assert ov.GAMMA.is_positive and ov.GAMMA.name == r"\Gamma_t"


# --- results equal the papers -------------------------------------------------------------------
@pytest.mark.parametrize(
    ("derived", "paper", "name"),
    [
        (ov.SIGMA2_OPTIMAL, PAPER_SIGMA2_OPTIMAL, "sigma*^2 = beta_tilde + beta^2 / (alpha (1 - abar)) (1 - Gamma)"),
        (ov.SIGMA2_UPPER, beta_t / alpha_t, "sigma*^2 at Gamma = 0 is beta_t / alpha_t"),
        (ov.SIGMA2_UPPER, PAPER_BETA_TILDE + beta_t**2 / (alpha_t * (1 - alpha_bar_t)), "upper end"),
        (ov.GAMMA_LOWER, PAPER_GAMMA_LOWER, "Gamma_t >= 1 - abar_t / (1 - abar_t)"),
        (ov.SIGMA2_UPPER_DATA, PAPER_BETA_TILDE + PAPER_C0**2, "beta_tilde + c_0^2"),
        (ov.SIGMA2_UPPER_DATA, PAPER_BETA_TILDE + posterior.MEAN_COEF_X0**2, "beta_tilde + (b)'s c_0^2"),
    ],
)
def test_results_equal_paper(derived, paper, name):
    assert is_zero(derived - paper), name


@pytest.mark.parametrize(
    ("derived", "paper", "name"),
    [
        (ov.SIGMA2_OPTIMAL, BAO_THEOREM_1, "Bao et al. Theorem 1"),
        (ov.SIGMA2_UPPER, BAO_THEOREM_2_UPPER, "Bao et al. Theorem 2, upper bound"),
        (ov.SIGMA2_UPPER_DATA, BAO_THEOREM_2_UPPER_DATA, "Bao et al. Theorem 2, upper bound for data in [-1, 1]"),
    ],
)
def test_results_equal_bao_on_the_schedule_domain(derived, paper, name):
    # Symbolic after the substitution _DOMAIN; the module checks Theorem 1 at random rational points instead.
    assert is_zero_on_domain(derived - paper, _DOMAIN), name


def test_expected_kl_is_gaussian_kl_with_the_mean_square():
    m_tilde, m_theta = sp.symbols("m_tilde m_theta", real=True)
    kl = gk.NORMAL_KL.subs({gk.MEAN_1: m_tilde, gk.VAR_1: ov.beta_tilde, gk.MEAN_2: m_theta, gk.VAR_2: sigma2})
    # Affine in the square d^2 = (m_tilde - m_theta)^2: its mean replaces d^2 by M_t.
    d2 = sp.Symbol("d2", nonnegative=True)
    kl_in_d2 = sp.expand(kl.subs(m_tilde, m_theta + sp.sqrt(d2)))
    assert sp.diff(kl_in_d2, d2, 2) == 0, "the KL is affine in the squared mean difference"
    assert is_zero(kl_in_d2.subs(d2, ov.M) - ov.EXPECTED_KL)
    (minimiser,) = sp.solve(sp.diff(ov.EXPECTED_KL, sigma2), sigma2)
    assert is_zero(minimiser - (ov.beta_tilde + ov.M))


# --- reductions ---------------------------------------------------------------------------------
def test_gaussian_data_gives_derivation_h():
    assert is_zero(ov.GAMMA_GAUSSIAN - GAMMA_GAUSSIAN), "Gamma_t for N(0, s^2) data"
    assert reduces_to_gaussian_optimum(ov.SIGMA2_OPTIMAL)
    assert is_zero(ov.SIGMA2_OPTIMAL.subs(G, GAMMA_GAUSSIAN.subs(S2, 1)) - rv.SIGMA2_LARGE), "s^2 = 1: beta_t"


def test_point_mass_gives_posterior_variance():
    assert reduces_to_point_mass(ov.SIGMA2_OPTIMAL)
    assert is_zero(ov.SIGMA2_OPTIMAL.subs(G, 1) - posterior.VARIANCE), "derivation (b)'s beta_tilde_t"
    assert is_zero(sp.limit(GAMMA_GAUSSIAN, S2, 0) - 1), "a point mass is N(0, s^2) with s^2 -> 0"


def test_law_of_total_variance():
    # Var(x_{t-1} | x_t) = beta_tilde_t + c_0^2 Var(x_0 | x_t),
    # with 1 - Gamma_t = abar_t / (1 - abar_t) E Var(x_0 | x_t).
    V = sp.Symbol("V", nonnegative=True)
    gamma_of_v = 1 - alpha_bar_t / (1 - alpha_bar_t) * V
    assert is_zero(ov.SIGMA2_OPTIMAL.subs(G, gamma_of_v) - (PAPER_BETA_TILDE + PAPER_C0**2 * V))


def test_t1():
    # alpha_bar_0 = 1: beta_tilde_1 = 0, c_0 = 1.
    t1 = {alpha_bar_prev: 1}
    assert is_zero(ov.SIGMA2_OPTIMAL.subs(t1) - beta_t * (1 - G) / (1 - beta_t))
    assert is_zero(ov.SIGMA2_UPPER_DATA.subs(t1) - 1), "Popoviciu's bound itself at t = 1"
    assert is_zero(ov.GAMMA_LOWER.subs(t1) - (2 * beta_t - 1) / beta_t)
    assert ov.sigma2_upper_data(0.02, 1.0) == 1.0
    assert_allclose(ov.sigma2_optimal(0.02, 1.0, 0.25), 0.02 * 0.75 / 0.98, **F64.kwargs(), err_msg="sigma*_1^2")


# --- the tower property and the bound through the linear MMSE ------------------------------------
def test_tower_moments_on_a_finite_support():
    # Independent of the module's construction: E[X E[X|Y]] = E[E[X|Y]^2] for a random joint pmf of (X, Y).
    rng = random.Random(7)
    xs = [sp.Rational(rng.randint(-50, 50), 10) for _ in range(2)]
    p = [[sp.Rational(rng.randint(1, 100), 600) for _ in range(3)] for _ in range(2)]
    cond = [(p[0][j] * xs[0] + p[1][j] * xs[1]) / (p[0][j] + p[1][j]) for j in range(3)]
    cross = sum(p[i][j] * xs[i] * cond[j] for i in range(2) for j in range(3))
    square = sum((p[0][j] + p[1][j]) * cond[j] ** 2 for j in range(3))
    assert cross == square
    symbols = sorted(ov.TOWER_CROSS_MOMENT.free_symbols, key=lambda s: s.name)
    assert len(symbols) == 8, "e_1, e_2 and the six p_ij"
    point = dict(zip(symbols, [*xs, p[0][0], p[0][1], p[0][2], p[1][0], p[1][1], p[1][2]], strict=True))
    assert ov.TOWER_CROSS_MOMENT.subs(point) == cross
    assert ov.TOWER_SQUARE_MOMENT.subs(point) == square
    # Not a tautology: E[X g(Y)] = E[g(Y)^2] fails for g other than E[X | Y].
    wrong = sum(p[i][j] * xs[i] * (cond[j] + 1) for i in range(2) for j in range(3))
    assert wrong != sum((p[0][j] + p[1][j]) * (cond[j] + 1) ** 2 for j in range(3))


def test_linear_mmse_bound_is_the_gaussian_gamma():
    assert is_zero(ov.GAMMA_LOWER_VARIANCE - GAMMA_GAUSSIAN)
    assert is_zero(ov.SIGMA2_UPPER_VARIANCE - rv.SIGMA2_OPTIMAL_GAUSSIAN)
    assert is_zero(ov.SIGMA2_UPPER_VARIANCE.subs(S2, 1) - beta_t), "variance <= 1: sigma*^2 <= beta_t"
    # Best linear estimator's error for x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, typed from the textbook formula
    # Var(x_0) - Cov(x_0, x_t)^2 / Var(x_t).
    textbook = S2 - (sp.sqrt(alpha_bar_t) * S2) ** 2 / (alpha_bar_t * S2 + 1 - alpha_bar_t)
    assert is_zero(ov.LINEAR_MMSE - textbook)
    beta, abp, s2 = 0.02, 0.7, 0.4
    abt = abp * (1.0 - beta)
    assert_allclose(ov.gamma_lower_variance(beta, abp, s2), (1.0 - abt) / (abt * s2 + 1.0 - abt), **F64.kwargs())


# --- bounds at random rational points -----------------------------------------------------------
def test_bounds_at_random_rational_points():
    rng = random.Random(20220201)
    for _ in range(40):
        point = {
            beta_t: sp.Rational(rng.randint(1, 999), 1000),
            alpha_bar_prev: sp.Rational(rng.randint(1, 1000), 1000),  # 1000 / 1000 is t = 1
        }
        lower = max(sp.Integer(0), ov.GAMMA_LOWER.subs(point))
        beta_tilde = PAPER_BETA_TILDE.subs(point)
        upper = ov.SIGMA2_UPPER.subs(point)
        upper_data = ov.SIGMA2_UPPER_DATA.subs(point)
        assert 0 <= lower <= 1, f"Gamma_t's lower bound outside [0, 1] at {point}"
        assert upper_data <= upper or ov.GAMMA_LOWER.subs(point) <= 0, "the data bound binds only where it is > 0"
        for gamma in (lower, 1, lower + (1 - lower) * sp.Rational(rng.randint(0, 1000), 1000)):
            sigma = ov.SIGMA2_OPTIMAL.subs(point).subs(G, gamma)
            where = f"at {point}, Gamma = {gamma}"
            assert beta_tilde <= sigma <= upper, f"beta_tilde <= sigma*^2 <= beta_t / alpha_t {where}"
            assert sigma <= upper_data, f"sigma*^2 <= beta_tilde + c_0^2 {where}"


# --- non-Gaussian data: x_0 = +-1 with probability 1/2, by quadrature at 30 digits ----------------
def two_point_moments(beta: float, abp: float) -> tuple[mpmath.mpf, mpmath.mpf, mpmath.mpf]:
    """(Gamma_t, E Var(x_0 | x_t), E Var(x_{t-1} | x_t)) for x_0 = +-1, each an integral over x_t.

    E[x_0 | x_t] = tanh(sqrt(abar_t) x_t / (1 - abar_t)); eps* = (x_t - sqrt(abar_t) E[x_0 | x_t]) / sqrt(1 - abar_t);
    x_{t-1} | x_t is the two-component mixture of the posteriors N(c_0 x_0 + c_t x_t, beta_tilde_t).
    """
    with mpmath.workdps(30):
        beta, abp = mpmath.mpf(beta), mpmath.mpf(abp)
        abt = abp * (1 - beta)
        one_minus_abt = (1 - abp) + abp * beta
        a = mpmath.sqrt(abt)
        beta_tilde = (1 - abp) * beta / one_minus_abt
        c0 = mpmath.sqrt(abp) * beta / one_minus_abt
        ct = mpmath.sqrt(1 - beta) * (1 - abp) / one_minus_abt

        def density(x):
            return (mpmath.npdf(x, a, mpmath.sqrt(one_minus_abt)) + mpmath.npdf(x, -a, mpmath.sqrt(one_minus_abt))) / 2

        def eps_star_sq(x):
            return ((x - a * mpmath.tanh(a * x / one_minus_abt)) / mpmath.sqrt(one_minus_abt)) ** 2

        def var_x0(x):
            return 1 - mpmath.tanh(a * x / one_minus_abt) ** 2

        def var_prev(x):
            w = (1 + mpmath.tanh(a * x / one_minus_abt)) / 2  # P(x_0 = 1 | x_t)
            m_plus, m_minus = c0 + ct * x, -c0 + ct * x
            mean = w * m_plus + (1 - w) * m_minus
            return beta_tilde + w * m_plus**2 + (1 - w) * m_minus**2 - mean**2

        nodes = [-mpmath.inf, -a - 10, -a, 0, a, a + 10, mpmath.inf]
        return tuple(mpmath.quad(lambda x, f=f: density(x) * f(x), nodes) for f in (eps_star_sq, var_x0, var_prev))


TWO_POINT_CASES = [(0.02, 0.9), (0.02, 0.3), (0.5, 0.1), (1e-3, 1.0), (0.01, 1e-3)]


@pytest.mark.parametrize(("beta", "abp"), TWO_POINT_CASES)
def test_two_point_data(beta, abp):
    gamma, var_x0, var_prev = two_point_moments(beta, abp)
    assert float(ov.gamma_lower(beta, abp)) <= float(gamma) <= 1.0, "gamma_lower <= Gamma_t <= 1 for data in [-1, 1]"
    assert_allclose(
        ov.sigma2_optimal(beta, abp, gamma), float(var_prev), **F64.kwargs(),
        err_msg="sigma*^2(Gamma_t) is E Var(x_{t-1} | x_t) of the two-point data",
    )
    upper = min(ov.sigma2_upper(beta, abp), ov.sigma2_upper_data(beta, abp))
    assert ov.sigma2_optimal(beta, abp, gamma) <= upper, "sigma*^2 <= min(beta_t / alpha_t, beta_tilde_t + c_0^2)"
    assert 0.0 <= float(var_x0) <= 1.0, "Popoviciu"
    # x_0 = +-1 has variance 1: the optimal denoiser beats the best linear one, Gamma_t >= 1 - alpha_bar_t.
    assert float(gamma) >= (1.0 - abp * (1.0 - beta)) * (1.0 - F64.rtol), "Gamma_t >= 1 - alpha_bar_t"
    assert ov.gamma_lower_variance(beta, abp, 1.0) <= float(gamma) * (1.0 + F64.rtol)


def test_two_point_check_rejects_mutant():
    beta, abp = TWO_POINT_CASES[0]
    gamma, _, var_prev = two_point_moments(beta, abp)
    unsquared = PAPER_BETA_TILDE + beta_t / (alpha_t * (1 - alpha_bar_t)) * (1 - G)  # beta_t for beta_t^2
    mutant = sp.lambdify((beta_t, alpha_bar_prev, G), unsquared)
    assert not np.isclose(mutant(beta, abp, float(gamma)), float(var_prev), rtol=F64.rtol, atol=F64.atol)


# --- float64 functions vs independent numpy formulas --------------------------------------------
def np_beta_tilde_and_scale(beta, abp):
    one_minus_abt = (1.0 - abp) + abp * beta  # 1 - abar_t without cancellation
    return (1.0 - abp) * beta / one_minus_abt, beta**2 / ((1.0 - beta) * one_minus_abt), one_minus_abt


@settings(max_examples=60, deadline=None)
@given(
    beta=st.floats(min_value=1e-8, max_value=0.999, allow_nan=False),
    abp=st.floats(min_value=1e-6, max_value=1.0, allow_nan=False),
    gamma=st.floats(min_value=0.0, max_value=1.0, allow_nan=False),
)
@example(beta=1e-4, abp=1.0, gamma=0.5)  # t = 1
@example(beta=0.02, abp=4e-5, gamma=1.0)  # t = T of the paper's schedule
@example(beta=0.999, abp=1.0, gamma=0.0)
def test_numeric_oracles_match_numpy(beta, abp, gamma):
    beta_tilde, scale, one_minus_abt = np_beta_tilde_and_scale(beta, abp)
    assert_allclose(ov.sigma2_optimal(beta, abp, gamma), beta_tilde + scale * (1.0 - gamma), **F64.kwargs(),
                    err_msg="sigma*^2")
    assert_allclose(ov.sigma2_upper(beta, abp), beta / (1.0 - beta), **F64.kwargs(), err_msg="beta_t / alpha_t")
    abt = abp * (1.0 - beta)
    assert_allclose(ov.gamma_lower(beta, abp), 1.0 - abt / one_minus_abt, **F64.kwargs(), err_msg="Gamma lower")
    c0 = np.sqrt(abp) * beta / one_minus_abt
    assert_allclose(ov.sigma2_upper_data(beta, abp), beta_tilde + c0**2, **F64.kwargs(), err_msg="beta_tilde + c_0^2")


@settings(max_examples=40, deadline=None)
@given(betas=strategies.schedules(max_T=1000), u=strategies.fractions, w=st.floats(0.0, 1.0))
@example(betas=strategies.PAPER_T1000, u=0.0, w=0.5)  # t = 1
@example(betas=strategies.PAPER_T1000, u=1.0, w=0.0)  # t = T
@example(betas=strategies.SINGLE_STEP_TINY, u=0.0, w=1.0)
def test_clipped_gamma_keeps_sigma_in_its_bounds(betas, u, w):
    # What the ddpm code will do: clip a Gamma_t estimate to [max(0, gamma_lower), 1].
    t = strategies.timestep_from_fraction(u, len(betas))
    abp = alpha_bar_from_betas(betas)[t - 1]  # alpha_bar_{t-1} at 50 digits
    beta = betas[t - 1]
    lower = max(0.0, float(ov.gamma_lower(beta, abp)))
    gamma = lower + w * (1.0 - lower)
    sigma = float(ov.sigma2_optimal(beta, abp, gamma))
    small = float(posterior.posterior_variance(beta, abp))
    upper = min(float(ov.sigma2_upper(beta, abp)), float(ov.sigma2_upper_data(beta, abp)))
    slack = F64.rtol * upper
    assert small - slack <= sigma <= upper + slack, f"beta_tilde <= sigma*^2 <= upper at t = {t}"


def test_numeric_oracles_broadcast():
    beta = np.array([0.02, 1e-4, 0.5])  # [3]
    gamma = np.array([0.0, 0.5, 1.0])  # [3]
    got = ov.sigma2_optimal(beta, 0.9, gamma)
    assert got.shape == (3,)
    beta_tilde, scale, _ = np_beta_tilde_and_scale(beta, 0.9)
    assert_allclose(got, beta_tilde + scale * (1.0 - gamma), **F64.kwargs(), err_msg="sigma*^2 over an array")


# --- mutants are rejected by the same checks ----------------------------------------------------
def test_gaussian_check_rejects_unsquared_beta():
    mutant = PAPER_BETA_TILDE + beta_t / (alpha_t * (1 - alpha_bar_t)) * (1 - G)
    assert reduces_to_point_mass(mutant), "the point mass alone cannot see the missing square"
    assert not reduces_to_gaussian_optimum(mutant)


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(PAPER_BETA_TILDE + beta_t**2 / (alpha_t * (1 - alpha_bar_t)) * G, id="Gamma-for-1-minus-Gamma"),
        pytest.param(
            (1 - alpha_bar_t) / (1 - alpha_bar_t * alpha_t) * beta_t
            + beta_t**2 / (alpha_t * (1 - alpha_bar_t)) * (1 - G),
            id="beta-tilde-at-t-vs-t-1",
        ),
        pytest.param(PAPER_BETA_TILDE + beta_t**2 / (1 - alpha_bar_t) * (1 - G), id="alpha_t-dropped"),
    ],
)
def test_reduction_checks_reject_mutant(mutant):
    assert not (reduces_to_gaussian_optimum(mutant) and reduces_to_point_mass(mutant))


def test_data_bound_check_rejects_unscaled_gamma_lower():
    assert upper_data_bound_holds(ov.SIGMA2_OPTIMAL, ov.GAMMA_LOWER)
    assert not upper_data_bound_holds(ov.SIGMA2_OPTIMAL, 1 - alpha_bar_t), "1 - abar_t forgets / (1 - abar_t)"


def test_step_check_rejects_mutated_mean_gap():
    (step,) = [s for s in ov.derivation().steps if s.description.startswith("... with coefficient")]
    assert step.holds_symbolically()
    assert not dataclasses.replace(step, lhs=step.lhs**2).holds_symbolically()
    (step,) = [s for s in ov.derivation().results if s.description.startswith("... in Bao et al.")]
    assert step.check is Check.SIMPLIFY and step.holds_symbolically()
    assert not dataclasses.replace(step, lhs=step.lhs.subs(G, G**2)).holds_symbolically()
