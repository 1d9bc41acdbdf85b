"""(m) The full-covariance Gaussian KL: against an independent NumPy formula, and its checks under mutations."""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
from numpy.testing import assert_allclose

from derivations import gaussian_kl_full as m
from testkit import tolerances

pytestmark = pytest.mark.symbolic

_ARGS = (m.l11, m.l21, m.l22, m.n11, m.n21, m.n22, *m.m1, *m.m2)
_kl = sp.lambdify(_ARGS, m.KL_FROM_INTEGRAL, modules="numpy")


def _numpy_kl(mu1, s1, mu2, s2) -> float:
    """1/2 [log det S2 / det S1 - d + tr(S2^-1 S1) + (mu2 - mu1)^T S2^-1 (mu2 - mu1)] with numpy.linalg."""
    inv = np.linalg.inv(s2)
    diff = mu2 - mu1
    return 0.5 * (np.log(np.linalg.det(s2) / np.linalg.det(s1)) - 2 + np.trace(inv @ s1) + diff @ inv @ diff)


def test_derived_kl_matches_numpy_on_random_covariances():
    rng = np.random.default_rng(0)
    for _ in range(50):
        L = np.tril(rng.normal(size=(2, 2)))
        M = np.tril(rng.normal(size=(2, 2)))
        L[np.diag_indices(2)] = np.abs(L[np.diag_indices(2)]) + 0.1
        M[np.diag_indices(2)] = np.abs(M[np.diag_indices(2)]) + 0.1
        mu1, mu2 = rng.normal(size=2), rng.normal(size=2)
        got = _kl(L[0, 0], L[1, 0], L[1, 1], M[0, 0], M[1, 0], M[1, 1], *mu1, *mu2)
        assert_allclose(got, _numpy_kl(mu1, L @ L.T, mu2, M @ M.T), **tolerances.FLOAT64.kwargs())
        assert got >= 0
    same = _kl(1.0, 0.3, 0.7, 1.0, 0.3, 0.7, 0.2, -0.1, 0.2, -0.1)
    assert abs(same) < 1e-15, "KL of a law with itself is 0"


def _result(index: int):
    return m.derivation().results[index]


@pytest.mark.parametrize("index, wrong", [
    (0, m.KL_SEED_FORMULA + 1),  # the -d dropped
    (0, m.KL_SEED_FORMULA.subs({m.n21: m.l21})),  # a covariance entry confused
    (1, (m.A.trace() - 1 - sp.log(m.A.det())) / 2),  # wrong constant, the mean term dropped
])
def test_kl_results_fail_under_mutation(index, wrong):
    step = _result(index)
    mutated = type(step)(step.description, step.lhs, wrong, step.check, domains=step.domains)
    assert step.holds_at_random_rationals()
    assert not mutated.holds_at_random_rationals()


def test_gap_is_the_kl_from_q_to_the_model_posterior_not_the_reverse():
    kl_gap, gap, q_mean, q_cov, p_mean, p_cov = m.gap_as_full_kl()
    step = _result(2)
    assert step.holds_at_random_rationals()
    # private: the derivation's matrix KL, evaluated the other way round
    reverse = m._matrix_kl(p_mean, p_cov, q_mean, q_cov)  # KL(p_theta || q): not the gap
    mutated = type(step)(step.description, step.lhs, reverse, step.check, domains=step.domains)
    assert not mutated.holds_at_random_rationals()
    assert sp.simplify(q_cov[0, 1]) != 0 and sp.simplify(p_cov[0, 1]) != 0, "both covariances are non-diagonal"
