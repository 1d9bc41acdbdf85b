"""(r) The minimiser of L_simple: the tests' exact eps* oracles attain the derived minimum.

- Gaussian data N(m, s^2): the derived minimum per dimension equals testkit's Var(eps | x_t) closed form, and the
  Monte Carlo mean of (eps - eps*)^2 matches it.
- A one-dimensional Gaussian mixture: the Monte Carlo mean of (eps - eps*)^2 matches E Var(eps | x_t) computed by
  quadrature from the mixture's density alone (not from the oracle).
- A finite point set in 2-D: the derived minimum is D (1 - Gamma_t), Gamma_t = E||eps*||^2 / D; the paired difference
  ||eps - eps*||^2 - (D - ||eps*||^2) has mean zero (the tower property E[eps . eps*] = E||eps*||^2).
- A perturbation g(x_t) costs exactly E||g||^2: with common random numbers the difference
  ||eps - eps* - g||^2 - ||eps - eps*||^2 - ||g||^2 has mean zero, for each law; a wrong eps* (0.8 eps*) is rejected.
Statistical comparisons: one-sample t-tests, each family at alpha = 0.01 with Holm over its (law, t) comparisons,
draws seeded from seed_base.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from numpy.testing import assert_allclose
from scipy import stats

from ddpm.core.schedules import make_betas
from derivations import denoising_minimiser as dm
from derivations.symbols import eps
from testkit import tolerances
from testkit.optimal_denoisers import GaussianData, GaussianMixture, alpha_bars
from testkit.stat_checks import Family

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
ALPHA = 0.01
N = 20_000
AB = alpha_bars(make_betas("linear", 1000))
TIMES = (150, 450, 900)  # t where no law leaves eps determined by x_t up to rounding
GAUSSIAN = GaussianData(0.3, 0.7)
MIXTURE_1D = GaussianMixture((0.6, 0.4), ((-0.7,), (0.8,)), (0.3, 0.2))
POINTS_2D = GaussianMixture((0.5, 0.3, 0.2), ((-0.8, 0.5), (0.6, -0.4), (0.1, 0.9)), (0.0, 0.0, 0.0))


# --- symbolic checks beside the steps (tests/derivations/test_steps.py checks each step) ---------------------------
def test_split_integrals_refuses_a_coefficient_it_cannot_take_out():
    """Linearity only: a term free of the integration variable over the whole line is not a finite integral."""
    with pytest.raises(ValueError, match="free of"):
        dm.split_integrals(dm.conditional(eps) + sp.Integral(1, (eps, -sp.oo, sp.oo)))


def test_gaussian_minimum_is_the_conditional_variance():
    ab = np.array([AB[t] for t in (1, *TIMES, 1000)])
    for s2 in (0.05, 0.49, 1.0, 4.0):
        derived = dm.minimum_gaussian(ab, s2)
        assert_allclose(derived, GaussianData(0.0, float(np.sqrt(s2))).eps_conditional_variance(ab), **F64)
        assert_allclose(derived + dm.gamma_gaussian(ab, s2), 1.0, **F64)


# --- Monte Carlo against the oracles -------------------------------------------------------------------------------
def _draw(law, t: int, rng: np.random.Generator):
    """(eps, x_t, alpha_bar_t [N]) float64 tensors for N draws of x_0 from `law` at step t."""
    x0 = law.sample(rng, (N, 3)) if isinstance(law, GaussianData) else law.sample(rng, N)[0]
    eps = rng.standard_normal(x0.shape)
    a = AB[t]
    xt = np.sqrt(a) * x0 + np.sqrt(1.0 - a) * eps
    return torch.tensor(eps), torch.tensor(xt), torch.full((N,), a, dtype=torch.float64)


def _expected_variance_by_quadrature(law: GaussianMixture, a: float) -> float:
    """E Var(eps | x_t) for a 1-D mixture with s_k > 0 from its density alone: p(x | e) = sum_k w_k N(x; sqrt(a) mu_k
    + sqrt(1 - a) e, a s_k^2), the moments of eps given x by quadrature over e, then averaged over x."""
    e = np.linspace(-9.0, 9.0, 1801)
    x = np.linspace(-8.0, 8.0, 2001)
    like = sum(w * stats.norm.pdf(x[:, None], np.sqrt(a) * mu[0] + np.sqrt(1.0 - a) * e[None, :], np.sqrt(a) * s)
               for w, mu, s in zip(law.weights, law.means, law.stds, strict=True))
    joint = like * stats.norm.pdf(e)[None, :]  # [x, e]
    m0 = np.trapezoid(joint, e, axis=1)
    m1 = np.trapezoid(joint * e, e, axis=1)
    m2 = np.trapezoid(joint * e**2, e, axis=1)
    return float(np.trapezoid(m2 - m1**2 / np.maximum(m0, 1e-300), x))


def test_oracles_attain_the_derived_minimum(seed_base, record_property):
    family = Family("E (eps - eps*)^2 = E Var(eps | x_t)", ALPHA)
    for i, t in enumerate(TIMES):
        rng = np.random.default_rng(seed_base + 7100 + i)
        eps, xt, ab = _draw(GAUSSIAN, t, rng)
        loss = ((eps - GAUSSIAN.eps_star(xt, ab)) ** 2).mean(dim=1).numpy()
        family.mean_test(f"gaussian t={t}", loss, float(dm.minimum_gaussian(AB[t], GAUSSIAN.std**2)))

        eps, xt, ab = _draw(MIXTURE_1D, t, rng)
        loss = ((eps - MIXTURE_1D.eps_star(xt, ab)) ** 2).sum(dim=1).numpy()
        family.mean_test(f"mixture t={t}", loss, _expected_variance_by_quadrature(MIXTURE_1D, AB[t]))

        eps, xt, ab = _draw(POINTS_2D, t, rng)
        star = POINTS_2D.eps_star(xt, ab)
        paired = (((eps - star) ** 2).sum(dim=1) - (POINTS_2D.dim - (star**2).sum(dim=1))).numpy()
        family.mean_test(f"points t={t}: D (1 - Gamma_t)", paired, 0.0)
    family.check(record_property)


def _g(xt: torch.Tensor) -> torch.Tensor:
    """A perturbation that is a function of x_t alone."""
    return 0.3 * torch.sin(2.0 * xt) + 0.1


def _perturbation_excess(law, t: int, rng: np.random.Generator, scale: float = 1.0) -> np.ndarray:
    eps, xt, ab = _draw(law, t, rng)
    star, g = scale * law.eps_star(xt, ab), _g(xt)
    return (((eps - star - g) ** 2).sum(dim=1) - ((eps - star) ** 2).sum(dim=1) - (g**2).sum(dim=1)).numpy()


def test_a_perturbation_costs_its_mean_square(seed_base, record_property):
    family = Family("E||eps - eps* - g||^2 - E||eps - eps*||^2 = E||g||^2", ALPHA)
    for name, law in (("gaussian", GAUSSIAN), ("mixture", MIXTURE_1D), ("points", POINTS_2D)):
        for i, t in enumerate(TIMES):
            rng = np.random.default_rng(seed_base + 7200 + 10 * i + len(name))
            family.mean_test(f"{name} t={t}", _perturbation_excess(law, t, rng), 0.0)
    family.check(record_property)


def test_the_perturbation_test_rejects_a_wrong_minimiser(seed_base):
    """With 0.8 eps* in place of eps* the cross term no longer vanishes: the same test rejects it."""
    family = Family("wrong eps*", ALPHA)
    family.mean_test("gaussian t=300, 0.8 eps*",
                     _perturbation_excess(GAUSSIAN, 300, np.random.default_rng(seed_base + 7300), 0.8), 0.0)
    with pytest.raises(AssertionError, match="rejected"):
        family.check()
