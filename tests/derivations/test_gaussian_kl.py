"""(c) KL between Gaussians: the derived result against the textbook form, quadrature and matrices.

Each check is also run on deliberately wrong formulas (mutants) to show it can reject them.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import integrate, stats

from derivations import gaussian_kl as gk
from derivations.symbols import normal_density, normal_log_density
from testkit import tolerances
from testkit.symbolic import textbook_kl

pytestmark = pytest.mark.symbolic

M1, V1, M2, V2 = gk.MEAN_1, gk.VAR_1, gk.MEAN_2, gk.VAR_2
_x = sp.Symbol("x", real=True)

means = st.floats(min_value=-5.0, max_value=5.0, allow_nan=False, allow_infinity=False)
variances = st.floats(min_value=0.05, max_value=20.0, allow_nan=False, allow_infinity=False)


def derived_kl():
    """The KL as the derivation computed it (the lhs of its result step), before any tidying."""
    return gk.derivation().results[0].lhs


def agrees_symbolically(candidate) -> bool:
    return sp.simplify(derived_kl() - candidate) == 0


def quadrature_kl(m1, v1, m2, v2) -> float:
    """int N(x; m1, v1) log(N(x; m1, v1)/N(x; m2, v2)) dx by adaptive quadrature (SciPy)."""
    s1 = np.sqrt(v1)

    def integrand(x):
        return stats.norm.pdf(x, m1, s1) * (stats.norm.logpdf(x, m1, s1) - stats.norm.logpdf(x, m2, np.sqrt(v2)))

    value, _ = integrate.quad(integrand, m1 - 40 * s1, m1 + 40 * s1, points=[m1], epsabs=1e-14, epsrel=1e-13, limit=200)
    return value


QUADRATURE_POINTS = [(0.0, 1.0, 1.0, 2.0), (0.3, 0.5, -1.2, 0.7), (-2.0, 4.0, 0.5, 0.25), (1.0, 1.0, 1.0, 1.0)]


def matches_quadrature(kl_function) -> bool:
    return all(
        np.allclose(kl_function(*p), quadrature_kl(*p), **tolerances.FLOAT64.kwargs()) for p in QUADRATURE_POINTS
    )


# --- symbolic ------------------------------------------------------------------------------------


def test_derived_kl_equals_textbook_formula():
    assert agrees_symbolically(textbook_kl(M1, V1, M2, V2)), "derived KL != log(s2/s1) + (s1^2+dm^2)/(2 s2^2) - 1/2"


def test_exported_kl_equals_derived():
    assert sp.simplify(gk.NORMAL_KL - derived_kl()) == 0


def test_kl_integrated_in_one_go_at_a_rational_point():
    """An independent route: SymPy integrates the whole integrand at once (no moments)."""
    point = {M1: sp.Rational(1, 3), V1: sp.Rational(1, 2), M2: sp.Integer(-1), V2: sp.Integer(2)}
    integrand = normal_density(_x, point[M1], point[V1]) * (
        normal_log_density(_x, point[M1], point[V1]) - normal_log_density(_x, point[M2], point[V2])
    )
    direct = sp.integrate(integrand, (_x, -sp.oo, sp.oo))
    assert sp.simplify(direct - gk.NORMAL_KL.subs(point)) == 0


def test_kl_is_zero_when_the_gaussians_coincide():
    assert sp.simplify(gk.NORMAL_KL.subs({M2: M1, V2: V1})) == 0


def test_diagonal_kl_equals_seed_matrix_formula_for_d3():
    seed_form, coordinate_sum = gk.derivation().results[1].lhs, gk.derivation().results[1].rhs
    assert sp.simplify(seed_form - coordinate_sum) == 0


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(-textbook_kl(M1, V1, M2, V2), id="sign-flipped"),
        pytest.param(
            sp.Rational(1, 2) * (sp.log(V1 / V2) - 1 + V1 / V2 + (M1 - M2) ** 2 / V2), id="log-ratio-inverted"
        ),
        pytest.param(
            sp.Rational(1, 2) * (sp.log(V2 / V1) - 1 + V1 / V2 + (M1 - M2) ** 2 / sp.sqrt(V2)), id="sqrt-misplaced"
        ),
        pytest.param(sp.log(V2 / V1) - 1 + V1 / V2 + (M1 - M2) ** 2 / V2, id="half-dropped"),
        pytest.param(
            sp.Rational(1, 2) * (sp.log(V2 / V1) - 1 + V2 / V1 + (M1 - M2) ** 2 / V1), id="arguments-swapped"
        ),
    ],
)
def test_symbolic_check_rejects_mutant(mutant):
    assert agrees_symbolically(textbook_kl(M1, V1, M2, V2)), "the check must accept the true formula"
    assert not agrees_symbolically(mutant), "the symbolic check accepted a wrong KL formula"


# --- numeric -------------------------------------------------------------------------------------


@settings(deadline=None, max_examples=15)  # each example is an adaptive quadrature
@given(m1=means, v1=variances, m2=means, v2=variances)
@example(m1=0.0, v1=1.0, m2=0.0, v2=1.0)
def test_normal_kl_matches_quadrature(m1, v1, m2, v2):
    assert_allclose(
        gk.normal_kl(m1, v1, m2, v2),
        quadrature_kl(m1, v1, m2, v2),
        **tolerances.FLOAT64.kwargs(),
        err_msg="normal_kl != int N1 log(N1/N2) dx (scipy.integrate.quad)",
    )


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param(
            lambda m1, v1, m2, v2: 0.5 * (np.log(v1 / v2) - 1 + v1 / v2 + (m1 - m2) ** 2 / v2), id="log-inverted"
        ),
        pytest.param(
            lambda m1, v1, m2, v2: 0.5 * (np.log(v2 / v1) - 1 + v1 / v2 + (m1 - m2) ** 2 / np.sqrt(v2)), id="sqrt"
        ),
        pytest.param(lambda m1, v1, m2, v2: gk.normal_kl(m2, v2, m1, v1), id="arguments-swapped"),
    ],
)
def test_quadrature_check_rejects_mutant(mutant):
    assert matches_quadrature(gk.normal_kl), "the check must accept the true normal_kl"
    assert not matches_quadrature(mutant), "the quadrature check accepted a wrong KL"


def test_normal_kl_broadcasts():
    means1 = np.array([[0.0], [1.0]])  # [2, 1]
    out = gk.normal_kl(means1, np.array([1.0, 2.0, 3.0]), 0.5, 1.5)  # [2, 3]
    assert out.shape == (2, 3)
    assert_allclose(out[1, 2], gk.normal_kl(1.0, 3.0, 0.5, 1.5), **tolerances.FLOAT64.kwargs())


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(m1=means, v1=variances, m2=means, v2=variances)
def test_normal_kl_is_non_negative(m1, v1, m2, v2):
    assert gk.normal_kl(m1, v1, m2, v2) >= 0.0


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(m=means, v=variances)
def test_normal_kl_is_zero_for_equal_gaussians(m, v):
    assert gk.normal_kl(m, v, m, v) == 0.0


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(
    m1=means,
    v1=variances,
    dm=st.floats(min_value=0.1, max_value=3.0),
    log_ratio=st.floats(min_value=0.1, max_value=2.0),
    signs=st.tuples(st.sampled_from([-1.0, 1.0]), st.sampled_from([-1.0, 1.0])),
    which=st.sampled_from(["mean", "variance", "both"]),
)
def test_normal_kl_is_positive_when_gaussians_differ(m1, v1, dm, log_ratio, signs, which):
    m2 = m1 + signs[0] * dm if which in ("mean", "both") else m1
    v2 = v1 * np.exp(signs[1] * log_ratio) if which in ("variance", "both") else v1
    # Lower bounds from the derivation's split KL = f(r)/2 + dm^2/(2 v2), f(r) = r - 1 - log r.
    r = v1 / v2
    bound = 0.5 * (r - 1 - np.log(r)) + (m1 - m2) ** 2 / (2 * v2)
    assert bound > 0
    assert gk.normal_kl(m1, v1, m2, v2) > 0.5 * bound


def _matrix_kl(mu_x, var_x, mu_y, var_y) -> float:
    """The seed's matrix formula evaluated with NumPy linear algebra (full matrices, diagonal here)."""
    cov_x, cov_y = np.diag(var_x), np.diag(var_y)
    d = len(mu_x)
    diff = mu_y - mu_x
    _, logdet_x = np.linalg.slogdet(cov_x)
    _, logdet_y = np.linalg.slogdet(cov_y)
    inv_y = np.linalg.inv(cov_y)
    return 0.5 * (logdet_y - logdet_x - d + np.trace(inv_y @ cov_x) + diff @ inv_y @ diff)


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(data=st.data(), d=st.integers(min_value=1, max_value=6))
def test_diagonal_normal_kl_matches_matrix_formula(data, d):
    arrays = [np.array(data.draw(st.lists(s, min_size=d, max_size=d))) for s in (means, variances, means, variances)]
    assert_allclose(
        gk.diagonal_normal_kl(*arrays),
        _matrix_kl(*arrays),
        **tolerances.FLOAT64.kwargs(),
        err_msg="diagonal_normal_kl != seed matrix formula",
    )
    assert_allclose(gk.diagonal_normal_kl(*arrays), np.sum(gk.normal_kl(*arrays)), **tolerances.FLOAT64.kwargs())


def test_diagonal_normal_kl_rejects_mismatched_shapes():
    with pytest.raises(ValueError, match="1-D"):
        gk.diagonal_normal_kl([0.0, 1.0], [1.0], [0.0, 1.0], [1.0, 1.0])
    with pytest.raises(ValueError, match="1-D"):
        gk.diagonal_normal_kl(np.zeros((2, 2)), np.ones((2, 2)), np.zeros((2, 2)), np.ones((2, 2)))
