"""(t) The decoder's interior bin: the exact error against ddpm's discretised decoder, and the expansion.

The exact error E(delta, eta) must be what ddpm's own decoder (`discretized_gaussian_log_likelihood`) loses to the
density-times-width approximation, bin for bin; the expansion's remainder must shrink at its derived order; the sign
structure and the calibrated mean are checked on the exact error, which does not use the expansion.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.core.bound import BIN_HALF_WIDTH, discretized_gaussian_log_likelihood
from derivations import interior_bin as ib
from testkit import tolerances

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
def test_every_step_renders():
    for step in ib.derivation().all_steps():
        assert "=" in step.latex()


def _library_error(k: np.ndarray, mean: np.ndarray, sigma: np.ndarray) -> np.ndarray:
    """ddpm's -log P(bin k) minus the density times width -log N(x; mean, sigma^2) - log 2h, float64."""
    x = torch.as_tensor(k / 127.5 - 1.0, dtype=torch.float64)
    mu = torch.as_tensor(mean, dtype=torch.float64)
    var = torch.as_tensor(sigma, dtype=torch.float64) ** 2
    cost = -discretized_gaussian_log_likelihood(x, mu, var)
    density_width = 0.5 * torch.log(2 * math.pi * var) + (x - mu) ** 2 / (2 * var) - math.log(2 * BIN_HALF_WIDTH)
    return (cost - density_width).numpy()


def _grid() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Interior bins k, decoder means and standard deviations, |delta| up to ~20 (float64 logs stay below ~200)."""
    k = np.array([1, 2, 37, 127, 128, 200, 253, 254], dtype=np.float64)
    sigma = np.array([0.003, 0.01, 0.0392, 0.1, 1.0])
    offsets = np.array([-20.0, -3.0, -1.2, -1.0, -0.4, 0.0, 0.7, 1.0, 2.5, 9.0])  # delta, before the grid's rounding
    K, S, D = np.meshgrid(k, sigma, offsets, indexing="ij")
    mean = (K / 127.5 - 1.0) - D * S
    return K.ravel(), mean.ravel(), S.ravel()


def test_exact_error_is_what_the_library_decoder_loses_to_density_times_width():
    k, mean, sigma = _grid()
    x = k / 127.5 - 1.0
    delta, eta = (x - mean) / sigma, BIN_HALF_WIDTH / sigma
    library = _library_error(k, mean, sigma)
    assert_allclose(library, ib.interior_bin_error(delta, eta), **F64)
    # The comparison can fail: at sigma_1 ~ 0.01 (eta = 0.39) the leading term alone is off by far more.
    near = np.abs(sigma - 0.01) < 1e-12
    assert not np.allclose(library[near], ib.interior_bin_error_leading(delta, eta)[near], **F64)


@pytest.mark.parametrize("delta", [0.0, 0.5, 1.0, 2.0])
def test_remainders_shrink_at_their_derived_order(delta):
    etas = np.array([0.04, 0.02, 0.01])
    exact = ib.interior_bin_error(delta, etas)
    after_leading = exact - ib.interior_bin_error_leading(delta, etas)  # O(eta^4)
    after_two = exact - ib.interior_bin_error_two_terms(delta, etas)  # O(eta^6)
    # halving eta divides an O(eta^p) remainder by 2^p (up to its own next order, eta^2 relative)
    assert_allclose(after_leading[:-1] / after_leading[1:], 16.0, rtol=0.02)
    assert_allclose(after_two[:-1] / after_two[1:], 64.0, rtol=0.02)
    # and the eta^4 coefficient is the derived one
    assert_allclose(after_leading[-1] / etas[-1] ** 4, (delta**4 + 4 * delta**2 - 2) / 180, rtol=5e-3, atol=1e-4)


def test_sign_structure():
    etas = np.array([1e-3, 0.05, 0.39, 1.0, 3.0, 10.0])
    for delta in (0.0, 0.3, -0.8, 1.0, -1.0):
        assert np.all(ib.interior_bin_error(delta, etas) > 0), "|delta| <= 1: E > 0 for every eta"
    for delta in (1.05, -1.5, 3.0):
        root = float(mpmath.findroot(lambda e: mpmath.log(mpmath.cosh(delta * e)) - e**2 / 2, 2 * abs(delta)))  # noqa: B023  called inside the loop
        assert root > 0
        below = root * np.array([1e-3, 0.1, 0.5, 0.9, 1.0])
        assert np.all(ib.interior_bin_error(delta, below) < 0), "|delta| > 1: E < 0 up to the root"
    # beyond the root the sign may turn: a wide bin in the tail costs more than its centre's density says
    assert ib.interior_bin_error(1.5, 5.0) > 0


@pytest.mark.parametrize("spread", [1.0, 1.3])
def test_mean_error_under_gaussian_residuals(spread):
    nodes, weights = np.polynomial.hermite_e.hermegauss(40)  # weight exp(-z^2/2)
    weights = weights / math.sqrt(2 * math.pi)
    eta = 0.03
    mean = float(np.sum(weights * ib.interior_bin_error(spread * nodes, eta)))
    series = float(ib.expected_interior_bin_error_series(spread, eta))
    assert_allclose(mean, series, rtol=0.01)
    if spread == 1.0:
        assert_allclose(series, eta**4 / 36, rtol=1e-12)
