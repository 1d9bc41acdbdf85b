"""The posterior-calibration case (ddpm/conformance/cases/calibration.py): its predicted laws, ranks, starts, and
what it is applicable to. That the reference passes it and a chain with compensated noise fails it (while passing
chain[...]) is tested with the other cases in tests/conformance/test_suite.py.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import stats

from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.cases import Context, Status, SuiteConfig, chain_law
from ddpm.conformance.cases.calibration import (
    case_calibration,
    conditional_law,
    ranks,
    simulate_chain,
    start_indices,
    uniform_ranks_p,
)
from ddpm.conformance.protocol import Chain
from testkit import broken_adapters
from testkit.optimal_denoisers import GaussianData, algorithm2_gaussian_law
from testkit.stat_checks import Correction, adjusted_p_values


@pytest.fixture(scope="module")
def reference():
    adapter = ReferenceAdapter("linear", 100)
    return adapter, Context(adapter, SuiteConfig())


@pytest.mark.parametrize("index", [0, 1], ids=["beta", "beta_tilde"])
@pytest.mark.parametrize("start", [100, 60, 2])
def test_conditional_law_is_the_algorithm2_recursion_from_a_point_mass(reference, index, start):
    adapter, ctx = reference
    chain = adapter.chains()[index]
    data = ctx.config.data
    law = conditional_law(ctx, chain, data, list(chain.timesteps).index(start))
    independent = GaussianData(data.mean, data.std)
    B, V = algorithm2_gaussian_law(adapter.betas(), independent, chain.variance, start, (0.0, 0.0))
    A_plus_B, _ = algorithm2_gaussian_law(adapter.betas(), independent, chain.variance, start, (1.0, 0.0))
    assert_allclose([law.A, law.B, law.V], [A_plus_B - B, B, V], rtol=1e-12, atol=1e-15)
    # from x_T ~ N(0, 1) it is chain_law's marginal
    if start == 100:
        assert_allclose([law.B, law.A**2 + law.V], chain_law(ctx, chain), rtol=1e-12, atol=1e-15)


def test_the_mean_given_x_t_is_exact_and_the_variance_is_the_chains_own(reference):
    """E[x_0 | x_t] of the chain is the data's posterior mean (the gain g, derivation (p)); its variance given x_t is
    not Var[x_0 | x_t]: beta_tilde is below it, which is why the case ranks against the chain's predicted law."""
    adapter, ctx = reference
    data = ctx.config.data
    a = ctx.alpha_bar(50)
    law = conditional_law(ctx, adapter.chains()[1], data, 50)  # beta_tilde from paper t = 50
    assert_allclose(law.A, data.gain(np.float64(a)), rtol=1e-10)
    assert_allclose(law.B, data.mean * (1 - law.A * np.sqrt(a)), rtol=1e-10)
    assert law.V < 0.97 * float(data.posterior_variance(np.zeros(1), a)[0])


@pytest.mark.statistical(alpha=1e-3)
def test_the_oracle_chain_draws_the_conditional_law(reference, seed_base):
    """simulate_chain with Gaussian data draws N(A x + B, V) (KS, alpha 1e-3, Holm over chains and starts)."""
    adapter, ctx = reference
    rng = np.random.default_rng(seed_base + 31)
    p_values = []
    for chain in adapter.chains():
        if chain.eta == 0.0:
            continue
        for first in start_indices(ctx, chain):
            x = np.full(4000, 0.7)
            law = conditional_law(ctx, chain, ctx.config.data, first)
            draws = simulate_chain(ctx, chain, ctx.config.data, first, x, rng)
            p_values.append(stats.kstest(draws, "norm", args=(law.A * 0.7 + law.B, np.sqrt(law.V))).pvalue)
    assert len(p_values) == 9
    assert adjusted_p_values(np.array(p_values), Correction.HOLM).min() > 1e-3, p_values


def test_ranks_count_the_draws_below_and_break_ties_at_random():
    rng = np.random.default_rng(0)
    draws = np.array([[0.0, 1.0], [2.0, 1.0], [3.0, 1.0]])  # L = 3 draws of two values
    got = ranks(draws, np.array([2.5, 5.0]), rng)
    assert got.tolist() == [2, 3]
    tied = np.stack([ranks(draws, np.array([9.0, 1.0]), rng)[1] for _ in range(4000)])
    assert set(tied.tolist()) == {0, 1, 2, 3}  # all three draws tie: uniform on 0..3
    assert uniform_ranks_p(tied, 3) > 1e-3
    assert uniform_ranks_p(np.zeros(100, dtype=np.int64), 3) < 1e-10


def test_starts_are_visited_timesteps_near_the_fractions_of_T():
    adapter = ReferenceAdapter("linear", 1000)
    ctx = Context(adapter, SuiteConfig())
    chains = adapter.chains()
    assert [chains[0].timesteps[k] for k in start_indices(ctx, chains[0])] == [250, 500, 750]
    assert [chains[3].timesteps[k] for k in start_indices(ctx, chains[3])] == [253, 495, 748]  # DDIM, 100 steps
    short = Context(ReferenceAdapter("linear", 30), SuiteConfig(calibration_starts=(0.0, 0.01, 1.0)))
    ancestral = short.adapter.chains()[0]
    # never the last step t = 1 (it adds no noise), no start twice
    assert [ancestral.timesteps[k] for k in start_indices(short, ancestral)] == [2, 30]


def test_not_applicable_without_resume_or_for_a_deterministic_chain(reference):
    adapter, ctx = reference
    chain = adapter.chains()[0]
    without = Chain(chain.label, chain.kind, chain.timesteps, chain.run, variance=chain.variance)
    result = case_calibration(ctx, without)
    assert result.status is Status.NOT_APPLICABLE and "no resume" in result.detail
    ddim_eta_0 = adapter.chains()[2]
    assert ddim_eta_0.eta == 0.0
    result = case_calibration(ctx, ddim_eta_0)
    assert result.status is Status.NOT_APPLICABLE and "point mass" in result.detail


def test_the_criterion_states_sizes_starts_alpha_and_holm(reference):
    adapter, ctx = reference
    result = case_calibration(Context(adapter, SuiteConfig(calibration_draws=8, calibration_samples=4)),
                              adapter.chains()[1])
    for needle in ("N = 8 x_t", "L = 4 chain draws", "starts t = [25, 50, 75]", "0.25, 0.5, 0.75 of T",
                   "chi-square on 5 bins", "Holm", f"family-wise alpha = {ctx.config.alpha:g}"):
        assert needle in result.criterion, needle
    assert result.p_value is not None and "Gaussian, t = 25" in result.detail and "mixture, t = 75" in result.detail


def test_compensated_noise_keeps_the_marginal_and_changes_the_law_given_x_t():
    """The broken chain's scales, put into the independent Algorithm 2 recursion: the same output law from x_T, a third
    less variance given x_t at T/4 and T/2."""
    adapter = broken_adapters.compensated_chain_noise()[0]
    scales = adapter.noise_scales()
    betas, data = adapter.betas(), GaussianData(0.1, 0.25)
    assert_allclose(algorithm2_gaussian_law(betas, data, "beta_tilde", noise_scales=scales),
                    algorithm2_gaussian_law(betas, data, "beta_tilde"), rtol=1e-12)
    T = broken_adapters.T
    for start in (T // 4, T // 2):
        _, broken = algorithm2_gaussian_law(betas, data, "beta_tilde", start, (0.0, 0.0), scales)
        _, claimed = algorithm2_gaussian_law(betas, data, "beta_tilde", start, (0.0, 0.0))
        assert_allclose(broken / claimed, 2 / 3, rtol=0.02)
    resumed = adapter.chains()[0].resume(lambda x, t: torch.zeros_like(x), torch.zeros(2, 1, 2, 2, dtype=torch.float64),
                                         T // 2, torch.Generator().manual_seed(0))
    assert resumed.shape == (2, 1, 2, 2)
