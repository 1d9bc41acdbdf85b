"""(l) Why Algorithm 2 adds sigma_t z: the variance recursion against ddpm's sampler step, and mutated formulas.

ddpm's reverse step (`GaussianDiffusion.p_mean_variance` with the exact eps* of N(0, s^2) data) is linear in x_t, so
the variance of the chain's x_{t-1} is c_t^2 Var(x_t) + sigma_t^2 exactly, c_t being the step's mean at x_t = 1.
Propagating that through ddpm's own coefficients over the linear schedule at T = 1000 must give the derivation's
closed forms: the noiseless chain's final fraction alpha_bar_T s^2 / v_T, and for s^2 = 1 with sigma_t^2 = beta_t
(the optimal variance at s^2 = 1) the data variance less the last step's loss beta_1 / (alpha_1 s^2 + beta_1).
Each closed form is also checked to fail when its formula is mutated.
"""

from __future__ import annotations

import numpy as np
import pytest
import sympy as sp
import torch
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.schedules import make_betas
from derivations import sampling_noise as sn
from derivations.symbols import alpha_bar_prev, alpha_bar_t, beta_t, sigma2
from testkit import tolerances
from testkit.optimal_denoisers import EpsStar, GaussianData, alpha_bars

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
S2 = sn.S2


def _chain_variance(s2: float, variance: str | None) -> tuple[float, float]:
    """(Var(x_0) of ddpm's Algorithm 2 chain from x_T ~ N(0, v_T), alpha_bar_T); variance None: no noise at all."""
    betas = make_betas("linear", 1000)
    d = GaussianDiffusion(betas)
    star = EpsStar(GaussianData(0.0, float(np.sqrt(s2))), betas)
    alpha_bar = alpha_bars(betas)  # [T + 1]
    V = alpha_bar[-1] * s2 + 1.0 - alpha_bar[-1]  # v_T
    one = torch.ones(1, 1, dtype=torch.float64)
    for t_value in range(1000, 0, -1):
        t = torch.tensor([t_value])
        mean, var = d.p_mean_variance(star(one, t), one, t, variance or "beta")
        added = 0.0 if variance is None or t_value == 1 else float(var)  # z = 0 at t = 1 (Algorithm 2 line 3)
        V = float(mean) ** 2 * V + added
    return V, float(alpha_bar[-1])


@pytest.mark.parametrize("s2", [0.25, 1.0, 2.0])
def test_noiseless_chain_collapses_by_the_derived_fraction(s2):
    V0, alpha_bar_T = _chain_variance(s2, None)
    assert_allclose(V0 / s2, sn.noiseless_final_fraction(alpha_bar_T, s2), **F64)
    assert V0 / s2 < 1e-4, "without sigma_t z the samples collapse onto the mean"
    assert 3.9e-5 < alpha_bar_T < 4.1e-5, "the summary's '~4e-5' is alpha_bar_T of the linear schedule at T = 1000"


def test_noisy_chain_reproduces_the_data_variance_up_to_the_last_step():
    V0, _ = _chain_variance(1.0, "beta")  # sigma_t^2 = beta_t is the conditional variance at s^2 = 1
    beta_1 = float(make_betas("linear", 1000)[0])
    assert_allclose(V0, 1.0 - sn.last_step_lost(beta_1, 1.0), **F64)


def test_exact_step_keeps_every_marginal_and_noiseless_step_does_not():
    v_prev = alpha_bar_prev * S2 + 1 - alpha_bar_prev
    assert sp.cancel(sn.VAR_AFTER_EXACT_STEP - v_prev) == 0
    assert sp.cancel(sn.NOISELESS_KEPT - 1) != 0
    kept = sn.noiseless_step_kept(np.array([1e-4, 0.02]), np.array([0.9, 0.1]), np.array([1.0, 0.25]))
    assert np.all((kept > 0) & (kept < 1))


def _recursion_closes(var_after_step: sp.Expr) -> bool:
    """A candidate Var(x_{t-1}) formula reproduces v_{t-1} from v_t with the conditional variance of (h)."""
    v_prev = alpha_bar_prev * S2 + 1 - alpha_bar_prev
    exact = var_after_step.subs({sn.V: sn.VAR_T, sigma2: sn.SIGMA2_STAR})
    return sp.cancel(exact - v_prev) == 0


def _induction_closes(claim) -> bool:
    """A candidate W_t formula is carried from t to t - 1 by the noiseless step."""
    v_now = alpha_bar_t * S2 + 1 - alpha_bar_t
    v_prev = alpha_bar_prev * S2 + 1 - alpha_bar_prev
    return sp.cancel(sn.NOISELESS_KEPT * claim(alpha_bar_t, v_now) - claim(alpha_bar_prev, v_prev)) == 0


def test_the_checks_catch_mutated_formulas():
    assert _recursion_closes(sn.VAR_AFTER_STEP)
    assert not _recursion_closes(sn.MEAN_COEF * sn.V + sigma2), "c_t V instead of c_t^2 V"
    assert not _recursion_closes(sn.MEAN_COEF**2 * sn.V), "the noise term dropped"
    assert _induction_closes(lambda a, v: sn.alpha_bar_T / a * v / sn.v_T)
    assert not _induction_closes(lambda a, v: sn.alpha_bar_T / a * sn.v_T / v), "v_T / v_t instead of v_t / v_T"
    assert not _induction_closes(lambda a, v: a / sn.alpha_bar_T * v / sn.v_T), "alpha_bar_t / alpha_bar_T"
    # The final fraction against ddpm's chain: dropping its s^2 (alpha_bar_T / v_T) is caught at s^2 = 0.25.
    V0, alpha_bar_T = _chain_variance(0.25, None)
    assert not np.isclose(V0 / 0.25, alpha_bar_T / (alpha_bar_T * 0.25 + 1 - alpha_bar_T), rtol=1e-6)


MUTATED_RESULTS = {
    # result index in derivation().results -> a wrong right-hand side
    0: alpha_bar_t * S2 + 1 - alpha_bar_t,  # v_t instead of v_{t-1}
    1: sn.alpha_bar_T * S2,  # the final fraction without its denominator
    2: beta_t,  # beta_tilde_1 taken as beta_1
    3: beta_t / S2,  # the first-order loss stated as exact
}


@pytest.mark.parametrize("index", sorted(MUTATED_RESULTS))
def test_each_result_fails_under_a_mutation(index):
    step = sn.derivation().results[index]
    assert step.holds_symbolically()
    mutated = type(step)(step.description, step.lhs, MUTATED_RESULTS[index], step.check)
    assert not mutated.holds_symbolically(), f"result {index + 1} of (l) accepted {MUTATED_RESULTS[index]}"
