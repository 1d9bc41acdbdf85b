"""(s) The score view: Tweedie's formula against the exact optimal denoisers and ddpm's Algorithm 2.

For Gaussian data, a finite point set and a Gaussian mixture, torch autograd of the exact log q_t(x_t)
(`log_marginal` of testkit.optimal_denoisers, written from the mixture density) must equal
-eps*(x_t) / sqrt(1 - alpha_bar_t) with the closed-form eps* of the same module, and ddpm's reverse mean with
eps_theta = eps* must equal the score form (x_t + beta_t score) / sqrt(alpha_t) computed from that autograd score.
Both sides are float64, so the tolerance is float64's.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.schedules import make_betas
from derivations import score as sc
from derivations.symbols import alpha_bar, eps, eps_theta
from testkit import tolerances
from testkit.optimal_denoisers import GaussianData, GaussianMixture, alpha_bars

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
T = 1000
BETAS = make_betas("linear", T)
TIMES = (1, 20, 250, 700, 1000)
LAWS = {
    "gaussian": GaussianData(0.3, 0.7),
    "points": GaussianMixture((0.5, 0.3, 0.2), ((-0.8, 0.5), (0.6, -0.4), (0.1, 0.9)), (0.0, 0.0, 0.0)),
    "mixture": GaussianMixture((0.6, 0.4), ((-0.5, 0.2), (0.7, -0.3)), (0.25, 0.4)),
}


# --- symbolic checks beside the steps (tests/derivations/test_steps.py checks each step) ---------------------------
def test_dsm_weight():
    """L_simple's term is DSM weighted by 1 - alpha_bar_t; weight 1 (plain DSM) is rejected."""
    b = sp.sqrt(1 - alpha_bar)
    assert sp.simplify(sc.DSM_TERM - (eps - eps_theta) ** 2) == 0
    assert sp.simplify(sc.DSM_TERM / b**2 - (eps - eps_theta) ** 2) != 0


# --- against the exact denoisers -----------------------------------------------------------------------------------
def _points(law, rng: np.random.Generator, n: int = 6) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(x_t [n * len(TIMES), D], t, alpha_bar_t) with x_t drawn from q_t, float64."""
    ab_table = alpha_bars(BETAS)
    ts = np.repeat(np.array(TIMES), n)
    x0 = law.sample(rng, (ts.shape[0], 3)) if isinstance(law, GaussianData) else law.sample(rng, ts.shape[0])[0]
    ab = ab_table[ts][:, None]
    xt = np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * rng.standard_normal(x0.shape)
    return torch.tensor(xt), torch.tensor(ts), torch.tensor(ab_table[ts])


def _autograd_score(law, xt: torch.Tensor, ab: torch.Tensor) -> torch.Tensor:
    x = xt.clone().requires_grad_(True)
    (grad,) = torch.autograd.grad(law.log_marginal(x, ab).sum(), x)
    return grad


@pytest.mark.parametrize("name", sorted(LAWS))
def test_autograd_score_is_minus_eps_star_over_b(name):
    law = LAWS[name]
    xt, _, ab = _points(law, np.random.default_rng(11))
    score = _autograd_score(law, xt, ab).numpy()
    eps_star = law.eps_star(xt, ab).numpy()
    assert_allclose(score, sc.score_from_eps(eps_star, ab.numpy()[:, None]), **F64)
    # the comparison is sharp enough to see a slip: dividing by 1 - alpha_bar instead of its square root
    assert not np.allclose(score, -eps_star / (1.0 - ab.numpy()[:, None]), **F64)


def test_gaussian_score_is_the_closed_form():
    """For N(m, s^2) data the autograd score is -(x_t - a m) / (a^2 s^2 + b^2): log_marginal checked independently."""
    law = LAWS["gaussian"]
    xt, _, ab = _points(law, np.random.default_rng(12))
    a2 = ab.numpy()[:, None]
    expected = -(xt.numpy() - np.sqrt(a2) * law.mean) / (a2 * law.std**2 + 1.0 - a2)
    assert_allclose(_autograd_score(law, xt, ab).numpy(), expected, **F64)


@pytest.mark.parametrize("name", sorted(LAWS))
def test_algorithm2_mean_is_the_score_form(name):
    law = LAWS[name]
    xt, t, ab = _points(law, np.random.default_rng(13))
    score = _autograd_score(law, xt, ab).numpy()
    mean, _ = GaussianDiffusion(BETAS).p_mean_variance(law.eps_star(xt, ab), xt, t, "beta")
    beta = np.asarray(BETAS, dtype=np.float64)[t.numpy() - 1][:, None]
    assert_allclose(mean.numpy(), sc.mean_from_score(xt.numpy(), score, beta), **F64)
    assert not np.allclose(mean.numpy(), sc.mean_from_score(xt.numpy(), -score, beta), **F64), "sign of the score"
