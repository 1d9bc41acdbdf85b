"""ddpm.core.bound: Gaussian KL, the discretised decoder, ElboTerms, the exact ELBO and the importance-weighted
estimator.

The exact ELBO is compared with a slow reference written from the paper (one network call per t, KLs from
the two means, the decoder from 60-digit normal CDFs); the estimator's unbiasedness is checked exactly by
enumerating t for a deterministic toy (one data point and its optimal denoiser). Statistical (Monte Carlo)
tests live elsewhere.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.bound import (
    ElboTerms,
    bound_estimate,
    discretized_gaussian_log_likelihood,
    elbo_monte_carlo,
    elbo_terms,
    normal_kl,
)
from ddpm.core.diffusion import GaussianDiffusion
from derivations.gaussian_kl import normal_kl as oracle_normal_kl
from testkit import strategies, tolerances
from testkit.doubles import STEEP_SLOPES, ToyEps, grid_data

F64 = tolerances.FLOAT64.kwargs()
LN2 = math.log(2.0)
GRID = np.arange(256) / 127.5 - 1.0  # the 256 bin centres, x = k / 127.5 - 1


# ------------------------------------------------------------------------------------------------ normal_kl
@settings(max_examples=60)
@given(
    m1=strategies.finite_floats(10.0),
    m2=strategies.finite_floats(10.0),
    v1=strategies.log_uniform_floats(1e-6, 1e6),
    v2=strategies.log_uniform_floats(1e-6, 1e6),
)
@example(m1=0.0, m2=0.0, v1=1.0, v2=1.0)
@example(m1=0.3, m2=0.3, v1=1.0 + 1e-9, v2=1.0)
@example(m1=-10.0, m2=10.0, v1=1e-6, v2=1e6)
def test_normal_kl_matches_oracle(m1, m2, v1, v2):
    expected = oracle_normal_kl(m1, v1, m2, v2)
    got = normal_kl(torch.tensor(m1, dtype=torch.float64), torch.tensor(v1, dtype=torch.float64), m2, v2)
    assert got.dtype == torch.float64
    assert_allclose(got.item(), expected, **F64, err_msg="normal_kl != 1/2 (log(v2/v1) - 1 + v1/v2 + (m1-m2)^2/v2)")
    # float32 inputs: compared with the oracle at the float32-rounded inputs.
    r = [float(np.float32(v)) for v in (m1, v1, m2, v2)]
    got32 = normal_kl(*(torch.tensor(v, dtype=torch.float32) for v in r))
    assert got32.dtype == torch.float32
    assert_allclose(got32.item(), oracle_normal_kl(r[0], r[1], r[2], r[3]), **tolerances.FLOAT32.kwargs())


@settings(max_examples=40)
@given(
    m1=strategies.finite_floats(5.0),
    m2=strategies.finite_floats(5.0),
    v1=strategies.log_uniform_floats(1e-4, 1e4),
    v2=strategies.log_uniform_floats(1e-4, 1e4),
)
def test_normal_kl_nonnegative_and_zero_iff_equal(m1, m2, v1, v2):
    kl = normal_kl(torch.tensor([m1, m1]), torch.tensor([v1, v1]), torch.tensor([m2, m1]), torch.tensor([v2, v1]))
    assert kl[0] >= 0.0
    assert kl[1] == 0.0, "KL(N || N) must be exactly 0"


def test_normal_kl_broadcasts_and_handles_point_mass():
    kl = normal_kl(torch.zeros(2, 3), 1.0, torch.zeros(3), torch.tensor([1.0, 2.0, 4.0]))
    assert kl.shape == (2, 3)
    assert_allclose(kl[0].numpy(), [oracle_normal_kl(0, 1, 0, v) for v in (1.0, 2.0, 4.0)],
                    **tolerances.FLOAT32.kwargs())
    assert normal_kl(0.0, 0.0, 0.0, 1.0).item() == math.inf, "a point mass has infinite KL to a Gaussian"


# ------------------------------------------------------------------------------------ discretised decoder
def mp_log_bin_probability(k: int, mean: float, var: float) -> float:
    """log P(bin k) under N(mean, var) from 60-digit normal CDFs, the edge bins open (mirrored right tail)."""
    k = int(k)
    with mpmath.workdps(60):
        m, sd = mpmath.mpf(float(mean)), mpmath.sqrt(mpmath.mpf(float(var)))
        lo = -mpmath.inf if k == 0 else mpmath.mpf(2 * k - 1) / 255 - 1
        hi = mpmath.inf if k == 255 else mpmath.mpf(2 * k + 1) / 255 - 1
        if lo > m:  # Phi(b) - Phi(a) = Phi(-a) - Phi(-b): keep both CDFs small
            p = mpmath.ncdf((m - lo) / sd) - mpmath.ncdf((m - hi) / sd)
        else:
            p = mpmath.ncdf((hi - m) / sd) - mpmath.ncdf((lo - m) / sd)
        return float(mpmath.log(p))


means = st.one_of(
    strategies.finite_floats(1.5), strategies.finite_floats(1e3), st.sampled_from([-1.0, 1.0, 1.0 / 255, 0.0])
)
variances = strategies.log_uniform_floats(1e-10, 1e10)


@settings(max_examples=40)
@given(mean=means, var=variances)
@example(mean=0.0, var=1e-10)
@example(mean=1e3, var=1e-10)
@example(mean=-1.0, var=1e10)
@example(mean=0.5, var=1e20)
@example(mean=1.0 - 1.0 / 255, var=1e-4)
def test_decoder_probabilities_sum_to_one(mean, var):
    x = torch.tensor(GRID, dtype=torch.float64)  # [256], every bin once
    logp = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), var)
    assert logp.dtype == torch.float64 and bool(torch.isfinite(logp).all()), "log-likelihood must be finite"
    assert bool((logp <= 0).all())
    total = torch.logsumexp(logp, 0).exp().item()
    assert_allclose(total, 1.0, **F64, err_msg="the 256 bin probabilities must sum to 1")


@settings(max_examples=25)
@given(mean=means, var=variances, ks=st.lists(st.integers(0, 255), min_size=1, max_size=4))
@example(mean=0.3, var=0.01, ks=[0, 255, 128])
@example(mean=-0.99, var=1e-8, ks=[0, 1, 255])
@example(mean=0.99, var=1e-8, ks=[254, 255, 0])
def test_decoder_matches_60_digit_cdf(mean, var, ks):
    x = torch.tensor(GRID[ks], dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), var).numpy()
    expected = np.array([mp_log_bin_probability(k, mean, var) for k in ks])
    assert_allclose(got, expected, **F64, err_msg="log P(bin) != log(Phi(b) - Phi(a)) with open edge bins")


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16])
def test_edge_bins_chosen_by_index_for_every_dtype(dtype):
    # bfloat16 rounds 0.999 to 1.0: a threshold test x > 0.999 in the data dtype would close the top bin.
    x = torch.tensor(GRID, dtype=torch.float64).to(dtype)  # [256]
    mean = torch.full((256,), 0.2, dtype=torch.float64)
    got = discretized_gaussian_log_likelihood(x, mean, 0.3).numpy()
    expected = discretized_gaussian_log_likelihood(torch.tensor(GRID), mean, 0.3).numpy()
    assert_allclose(got, expected, **F64)
    sd = math.sqrt(0.3)
    from scipy.special import log_ndtr

    assert_allclose(got[0], log_ndtr((-1 + 1 / 255 - 0.2) / sd), **F64, err_msg="bin 0 must extend to -inf")
    assert_allclose(got[255], log_ndtr(-(1 - 1 / 255 - 0.2) / sd), **F64, err_msg="bin 255 must extend to +inf")


def test_decoder_gradients_finite_everywhere():
    # torch.where evaluates every branch: an inf in an unused branch would poison the gradient.
    x = torch.tensor(GRID, dtype=torch.float64)
    for mean_value, var in [(0.0, 1e-8), (5.0, 1e-3), (-1.0, 1e6), (1.0, 1e-4)]:
        mean = torch.full((256,), mean_value, dtype=torch.float64, requires_grad=True)
        discretized_gaussian_log_likelihood(x, mean, var).sum().backward()
        assert bool(torch.isfinite(mean.grad).all()), f"non-finite gradient at mean={mean_value}, var={var}"


# ---------------------------------------------------------------------------------------------- ElboTerms
def test_elbo_terms_record_arithmetic():
    prior = torch.tensor([0.5, 1.5], dtype=torch.float64)
    kl = torch.tensor([[1.0, 2.0, 3.0], [4.0, 5.0, 6.0]], dtype=torch.float64)  # L_1, L_2, L_3
    decoder = torch.tensor([7.0, 9.0], dtype=torch.float64)
    terms = ElboTerms(prior=prior, kl=kl, decoder=decoder, num_dims=4)
    assert terms.T == 4
    assert_allclose(terms.total().numpy(), [0.5 + 6.0 + 7.0, 1.5 + 15.0 + 9.0], **F64)
    assert_allclose(terms.bits_per_dim().numpy(), [13.5 / (4 * LN2), 25.5 / (4 * LN2)], **F64)
    per_t = terms.per_timestep_bits_per_dim().numpy()  # L_0, L_1, L_2, L_3, L_T
    assert_allclose(per_t, np.array([8.0, 2.5, 3.5, 4.5, 1.0]) / (4 * LN2), **F64)
    assert_allclose(per_t.sum(), terms.bits_per_dim().mean().item(), **F64)
    single = ElboTerms(prior=prior, kl=torch.zeros(2, 0, dtype=torch.float64), decoder=decoder, num_dims=1)
    assert single.T == 1 and single.per_timestep_bits_per_dim().shape == (2,)


# ---------------------------------------------------------------------------------- exact ELBO vs reference
def reference_elbo(model, betas, x0, seed, variance, clip_x0=False):
    """The bound of eq. 5 the slow way: per t one network call on all images, KLs from the two means."""
    alphas = 1.0 - betas
    ab = np.concatenate([[1.0], np.cumprod(alphas)])  # index t
    T, B = len(betas), x0.shape[0]
    g = torch.Generator().manual_seed(seed)
    noise_dtype = torch.float64 if x0.dtype == torch.float64 else torch.float32
    x0_64 = x0.double()
    flat = lambda v: v.reshape(B, -1)  # noqa: E731
    # L_T = sum_d KL(N(sqrt(ab_T) x0, 1 - ab_T) || N(0, 1))
    m = np.sqrt(ab[T]) * flat(x0_64).numpy()
    prior = (0.5 * (np.log(1.0 / (1 - ab[T])) - 1 + (1 - ab[T]) + m**2)).sum(1)
    kl = np.zeros((B, T - 1))
    decoder = np.zeros(B)
    for t in range(1, T + 1):
        noise = torch.randn(x0.shape, generator=g, dtype=noise_dtype).double()
        xt = np.sqrt(ab[t]) * x0_64 + np.sqrt(1 - ab[t]) * noise
        eps = model(xt.to(x0.dtype), torch.full((B,), t, dtype=torch.int64)).double()
        beta_tilde = (1 - ab[t - 1]) / (1 - ab[t]) * betas[t - 1]
        sigma2 = betas[t - 1] if (variance == "beta" or t == 1) else beta_tilde
        coef_x0 = np.sqrt(ab[t - 1]) * betas[t - 1] / (1 - ab[t])
        coef_xt = np.sqrt(alphas[t - 1]) * (1 - ab[t - 1]) / (1 - ab[t])
        if clip_x0:
            x0_hat = ((xt - np.sqrt(1 - ab[t]) * eps) / np.sqrt(ab[t])).clamp(-1, 1)
            mu_theta = coef_x0 * x0_hat + coef_xt * xt
        else:
            mu_theta = (xt - betas[t - 1] / np.sqrt(1 - ab[t]) * eps) / np.sqrt(alphas[t - 1])
        if t == 1:
            ks = np.rint((flat(x0_64).numpy() + 1) * 127.5).astype(int)
            mus = flat(mu_theta).numpy()
            decoder = -np.array(
                [
                    sum(mp_log_bin_probability(k, mu, sigma2) for k, mu in zip(ks[b], mus[b], strict=True))
                    for b in range(B)
                ]
            )
        else:
            mu_tilde = coef_x0 * x0_64 + coef_xt * xt
            d2 = flat((mu_tilde - mu_theta) ** 2).numpy()
            kl[:, t - 2] = (0.5 * (np.log(sigma2 / beta_tilde) - 1 + beta_tilde / sigma2 + d2 / sigma2)).sum(1)
    return prior, kl, decoder


@pytest.mark.parametrize("clip_x0", [False, True])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_elbo_terms_equal_slow_reference(variance, clip_x0):
    T = 12
    betas = np.linspace(1e-3, 0.3, T)
    x0 = grid_data((3, 1, 2, 2), 0)
    model = ToyEps(T, STEEP_SLOPES)
    terms = elbo_terms(model, GaussianDiffusion(betas), x0, torch.Generator().manual_seed(5), variance=variance,
                       batch_size=7, clip_x0=clip_x0)
    prior, kl, decoder = reference_elbo(model, betas, x0, 5, variance, clip_x0)
    assert terms.kl.shape == (3, T - 1) and terms.num_dims == 4
    assert_allclose(terms.prior.numpy(), prior, **F64, err_msg="L_T")
    assert_allclose(terms.kl.numpy(), kl, **F64, err_msg="L_{t-1}, t = 2..T")
    assert_allclose(terms.decoder.numpy(), decoder, **F64, err_msg="L_0")


def test_elbo_terms_float32_data_equal_reference():
    T = 6
    betas = np.linspace(1e-3, 0.3, T)
    x0 = grid_data((2, 1, 3, 3), 1, torch.float32)
    model = ToyEps(T, STEEP_SLOPES)
    terms = elbo_terms(model, GaussianDiffusion(betas), x0, torch.Generator().manual_seed(8))
    prior, kl, decoder = reference_elbo(model, betas, x0, 8, "beta")
    tol = tolerances.FLOAT32.kwargs()
    assert_allclose(terms.prior.numpy(), prior, **tol)
    assert_allclose(terms.kl.numpy(), kl, **tol)
    assert_allclose(terms.decoder.numpy(), decoder, **tol)


def test_elbo_terms_independent_of_batch_size_and_t1_variance_convention():
    T = 9
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = grid_data((4, 1, 2, 2), 2)
    model = ToyEps(T, STEEP_SLOPES)
    runs = [elbo_terms(model, d, x0, torch.Generator().manual_seed(3), batch_size=n) for n in (1, 3, 4, 5, 1000)]
    for other in runs[1:]:
        for name in ("prior", "kl", "decoder"):
            assert_allclose(getattr(other, name).numpy(), getattr(runs[0], name).numpy(), **F64)
    # sigma_1^2 = beta_1 for both choices: same decoder term.
    tilde = elbo_terms(model, d, x0, torch.Generator().manual_seed(3), variance="beta_tilde")
    assert_allclose(tilde.decoder.numpy(), runs[0].decoder.numpy(), **F64)


def test_single_step_chain():
    betas = np.array([0.3])
    x0 = grid_data((2, 1, 2, 2), 3)
    terms = elbo_terms(ToyEps(1, STEEP_SLOPES), GaussianDiffusion(betas), x0, torch.Generator().manual_seed(0))
    prior, kl, decoder = reference_elbo(ToyEps(1, STEEP_SLOPES), betas, x0, 0, "beta")
    assert terms.kl.shape == (2, 0)
    assert_allclose(terms.prior.numpy(), prior, **F64)
    assert_allclose(terms.decoder.numpy(), decoder, **F64)


# ------------------------------------------------------------- importance-weighted estimator, enumerated t
def optimal_denoiser(betas, point):
    """eps*(x_t, t) = (x_t - sqrt(alpha_bar_t) c) / sqrt(1 - alpha_bar_t) for data that is the single point c."""
    ab = torch.tensor(np.concatenate([[1.0], np.cumprod(1.0 - betas)]))

    def model(xt, t):
        shape = (-1,) + (1,) * (xt.ndim - 1)
        a = ab[t].reshape(shape).to(xt.dtype)
        return (xt - a.sqrt() * point) / (1 - a).sqrt()

    return model


@pytest.mark.parametrize("proposal_kind", ["uniform", "random"])
def test_estimator_unbiased_by_enumerating_t(proposal_kind):
    T = 15
    betas = np.linspace(1e-3, 0.2, T)
    d = GaussianDiffusion(betas)
    point = grid_data((1, 1, 2, 2), 4)
    x0 = point.expand(3, -1, -1, -1).contiguous()
    model = optimal_denoiser(betas, point)
    if proposal_kind == "uniform":
        proposal, p = None, np.full(T, 1.0 / T)
    else:
        p = np.random.default_rng(0).dirichlet(np.ones(T))
        proposal = torch.tensor(p)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    # E_{t ~ p}[estimate] = sum_t p(t) estimate(t), enumerated exactly.
    expectation = sum(
        p[t - 1] * bound_estimate(model, d, x0, torch.full((3,), t), noise, proposal=proposal).numpy()
        for t in range(1, T + 1)
    )
    exact = elbo_terms(model, d, x0, torch.Generator().manual_seed(2)).total().numpy()
    assert_allclose(expectation, exact, **F64, err_msg="E_t[L_T + L_{t-1}/p(t)] != L_T + sum_t L_{t-1}")


def test_zero_variance_proposal_gives_the_exact_bound():
    # With p(t) proportional to L_{t-1} every draw equals the bound: the weights 1/p(t) are exactly right.
    T = 10
    betas = np.linspace(1e-3, 0.2, T)
    d = GaussianDiffusion(betas)
    point = grid_data((1, 1, 3, 3), 6)
    x0 = point.expand(4, -1, -1, -1).contiguous()
    model = optimal_denoiser(betas, point)
    exact = elbo_terms(model, d, x0, torch.Generator().manual_seed(0))
    per_t = exact.per_timestep_bits_per_dim()[:-1]  # L_0 .. L_{T-1}, all > 0
    assert bool((per_t > 0).all())
    proposal = per_t / per_t.sum()
    mc = elbo_monte_carlo(model, d, x0, torch.Generator().manual_seed(1), draws_per_image=3, proposal=proposal)
    assert (mc.num_images, mc.num_draws) == (4, 12)
    assert_allclose(mc.bits_per_dim, exact.bits_per_dim().mean().item(), **F64)
    assert_allclose(mc.stderr, 0.0, **F64)


def test_monte_carlo_reproducible_and_stderr_cases():
    T = 8
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = grid_data((3, 1, 2, 2), 7)
    model = ToyEps(T, STEEP_SLOPES)
    a = elbo_monte_carlo(model, d, x0, torch.Generator().manual_seed(0), draws_per_image=2, batch_size=4)
    b = elbo_monte_carlo(model, d, x0, torch.Generator().manual_seed(0), draws_per_image=2, batch_size=4)
    assert a == b
    assert math.isfinite(a.stderr) and a.stderr > 0
    one = elbo_monte_carlo(model, d, x0[:1], torch.Generator().manual_seed(0), draws_per_image=1)
    assert math.isnan(one.stderr), "one image, one draw: no standard error"
    many = elbo_monte_carlo(model, d, x0[:1], torch.Generator().manual_seed(0), draws_per_image=5)
    assert math.isfinite(many.stderr)
