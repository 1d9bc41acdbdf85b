"""The "optimal" reverse variance (derivation (j)): its tables, its bounds, and Gamma_t estimated by Monte Carlo.

Exact-oracle: for Gaussian data the exact Gamma_t gives derivation (h)'s optimal variance and for a point mass
beta_tilde_t; the estimate from the exact eps* of Gaussian data matches the analytic Gamma_t within its own
standard error (z-tests, Holm); at eps* the expected bound term with the optimal variance is never above the one
with beta_t or beta_tilde_t.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.schedules import make_betas
from ddpm.evaluation.optimal_variance import GammaEstimate, estimate_gamma, load_gamma, save_gamma
from derivations import reverse_variance
from testkit import strategies
from testkit.optimal_denoisers import EpsStar, GaussianData, alpha_bars
from testkit.stat_checks import Family
from testkit.threads import one_thread
from testkit.tolerances import FLOAT64

ALPHA = 1e-3


def _gaussian_gamma(betas: np.ndarray, std: float) -> np.ndarray:
    """Gamma_t = E eps*^2 = (1 - ab) / (ab s^2 + 1 - ab) for x_0 ~ N(m, s^2), t = 1..T."""
    ab = alpha_bars(betas)[1:]
    return (1.0 - ab) / (ab * std**2 + 1.0 - ab)


@settings(max_examples=25, deadline=None)
@given(betas=strategies.schedules(min_T=2, max_T=300), s2=st.floats(1e-3, 1.0))
@example(betas=make_betas("linear", 1000), s2=1.0)
def test_gaussian_gamma_gives_derivation_h(betas, s2):
    d = GaussianDiffusion(betas).with_optimal_variance(_gaussian_gamma(betas, np.sqrt(s2)))
    ab = alpha_bars(betas)
    t = np.arange(2, len(betas) + 1)
    expected = reverse_variance.sigma2_optimal_gaussian(betas[t - 1], ab[t - 1], s2)
    assert_allclose(d.reverse_variance("optimal").numpy()[2:], expected, **FLOAT64.kwargs(),
                    err_msg="sigma*^2 at Gaussian Gamma_t != derivation (h)")
    assert d.reverse_variance("optimal")[1] == float(betas[0]), "t = 1 keeps sigma_1^2 = beta_1"


def test_point_mass_and_bounds():
    betas = make_betas("linear", 200)
    d = GaussianDiffusion(betas)
    beta_tilde = d.posterior_variance.numpy()[2:]
    assert_allclose(d.with_optimal_variance(np.ones(200)).reverse_variance("optimal").numpy()[2:], beta_tilde,
                    **FLOAT64.kwargs(), err_msg="Gamma = 1 (a point mass) gives beta_tilde")
    above = d.with_optimal_variance(np.full(200, 1.7)).reverse_variance("optimal").numpy()[2:]
    assert_allclose(above, beta_tilde, **FLOAT64.kwargs(), err_msg="Gamma > 1 is clipped to 1")
    low = d.with_optimal_variance(np.full(200, -3.0))
    c0 = d.posterior_mean_coef_x0.numpy()[2:]
    upper = np.minimum(beta_tilde + c0**2, d.betas.numpy()[2:] / d.alphas.numpy()[2:])
    assert_allclose(low.reverse_variance("optimal").numpy()[2:], upper, rtol=1e-12, atol=0,
                    err_msg="Gamma below its lower bound is clipped: sigma*^2 <= beta_tilde + c0^2 and beta / alpha")


@settings(max_examples=40, deadline=None)
@given(betas=strategies.schedules(min_T=2, max_T=300), seed=st.integers(0, 2**16))
@example(betas=make_betas("cosine", 1000), seed=0)
def test_expected_bound_term_at_eps_star_is_smallest_with_the_optimal_variance(betas, seed):
    """E L_{t-1} / d = C_t + lambda_t (1 - Gamma_t) at the optimal denoiser; the optimal sigma^2 minimises it."""
    d = GaussianDiffusion(betas)
    gamma = np.random.default_rng(seed).uniform(0.0, 1.0, len(betas))
    d = d.with_optimal_variance(gamma)
    g = d.optimal_gamma.numpy()
    terms = {c: d.kl_variance_terms(c).numpy()[2:] + d.loss_weights(c).numpy()[2:] * (1.0 - g[2:])
             for c in ("beta", "beta_tilde", "optimal")}
    slack = 1e-12 * (1.0 + np.abs(terms["optimal"]))
    for fixed in ("beta", "beta_tilde"):
        worse = np.flatnonzero(terms["optimal"] > terms[fixed] + slack)
        assert worse.size == 0, f"optimal above {fixed} at t = {worse[:5] + 2}"


def test_gamma_file_round_trip_and_errors(tmp_path):
    estimate = GammaEstimate((0.5, 0.9), (0.01, 0.02), 8, seed=3, step=10)
    path = save_gamma(tmp_path / "g.json", estimate)
    assert load_gamma(path) == estimate
    (tmp_path / "bad.json").write_text("{}")
    with pytest.raises(ValueError, match="is not a Gamma_t estimate"):
        load_gamma(tmp_path / "bad.json")
    with pytest.raises(ValueError, match="must hold T = 3 finite values"):
        GaussianDiffusion(make_betas("linear", 3, rescale=False)).with_optimal_variance([0.5, np.nan, 0.5])
    with pytest.raises(ValueError, match="needs Gamma_t estimates"):
        GaussianDiffusion(make_betas("linear", 3, rescale=False)).reverse_variance("optimal")


@pytest.mark.statistical(alpha=ALPHA)
def test_estimated_gamma_with_eps_star_matches_the_analytic_gamma(seed_base, record_property):
    """The Monte Carlo Gamma_t of the exact eps* of N(0.1, 0.5^2) data is the analytic one within its stderr."""
    T, n = 40, 200
    betas = make_betas("linear", T)
    data = GaussianData(0.1, 0.5)
    rng = np.random.default_rng(seed_base + 501)
    x0 = torch.tensor(data.sample(rng, (50_000, 1, 2, 2)))  # a pool much larger than the draws
    generator = torch.Generator().manual_seed(seed_base + 502)
    estimate = estimate_gamma(EpsStar(data, betas), GaussianDiffusion(betas), x0, generator, images_per_t=n,
                              batch_size=1000, progress=False)
    family = Family("Gamma_t estimate vs (1 - ab) / (ab s^2 + 1 - ab)", ALPHA)
    rows = zip(estimate.gamma, estimate.stderr, _gaussian_gamma(betas, 0.5), strict=True)
    for t, (g, se, want) in enumerate(rows, start=1):
        family.z_test(f"t = {t}", g, want, se)
    family.check(record_property)
    assert estimate.images_per_t == n and estimate.T == T


def test_sampler_and_bound_read_the_optimal_tables():
    """Gamma_t = 1 makes the optimal variance beta_tilde_t: Algorithm 2 and the exact bound then agree with it."""
    from ddpm.core.bound import elbo_terms
    from ddpm.core.samplers import ancestral_sample, strided_sample

    T = 30
    betas = make_betas("linear", T, rescale=False)
    d = GaussianDiffusion(betas)
    d_opt = d.with_optimal_variance(np.ones(T))
    model = EpsStar(GaussianData(0.0, 0.4), betas)
    shape = (3, 1, 2, 2)
    a = ancestral_sample(model, d, shape, torch.Generator().manual_seed(1), variance="beta_tilde", progress=False,
                         dtype=torch.float64).x0
    b = ancestral_sample(model, d_opt, shape, torch.Generator().manual_seed(1), variance="optimal", progress=False,
                         dtype=torch.float64).x0
    assert_allclose(b.numpy(), a.numpy(), **FLOAT64.kwargs())
    # Strided sampling used to read "optimal" as beta_tilde over every stride (this test, at Gamma_t = 1, could not
    # tell); the optimal variance is estimated per single step, so strided sampling now refuses it.
    with pytest.raises(ValueError, match="strided sampling offers .* 'optimal' one is estimated for single steps"):
        strided_sample(model, d_opt, shape, torch.Generator().manual_seed(1), num_steps=T, variance="optimal",
                       progress=False, dtype=torch.float64)
    x0 = torch.tensor(np.array([0, 100, 255, 30], dtype=np.float64) / 127.5 - 1.0).reshape(1, 1, 2, 2)
    fixed = elbo_terms(model, d, x0, torch.Generator().manual_seed(2), variance="beta_tilde")
    optimal = elbo_terms(model, d_opt, x0, torch.Generator().manual_seed(2), variance="optimal")
    assert_allclose(optimal.total().numpy(), fixed.total().numpy(), **FLOAT64.kwargs())


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    from ddpm.training.trainer import TrainOptions, train

    run = tmp_path_factory.mktemp("optimal") / "run"
    with one_thread():
        train("digits", run, "tiny", options=TrainOptions(seed=5, max_steps=3), progress=False)
    return run / "checkpoint.pt"


def test_sample_with_the_optimal_variance_reads_the_estimate_next_to_the_checkpoint(tmp_path, capsys,
                                                                                   tiny_checkpoint):
    from ddpm.cli import main
    from ddpm.evaluation.generate import SamplerOptions, generate
    from ddpm.evaluation.optimal_variance import FILE_NAME
    from ddpm.images.data import load_images, to_model_range
    from ddpm.training.checkpoint import build_eps_model, diffusion_from, load_checkpoint

    checkpoint = load_checkpoint(tiny_checkpoint)
    argv = ["sample", "--checkpoint", str(tiny_checkpoint), "--num", "3", "--variance", "optimal", "--device", "cpu",
            "--no-progress", "--out"]
    gamma_path = tiny_checkpoint.parent / FILE_NAME
    assert main([*argv, str(tmp_path / "a.png")]) == 2
    assert "needs" in capsys.readouterr().err and not (tmp_path / "a.png").exists()
    x0 = to_model_range(load_images("digits", "train")[:64]).to(torch.float32)
    estimate = estimate_gamma(build_eps_model(checkpoint), diffusion_from(checkpoint, "cpu"), x0,
                              torch.Generator().manual_seed(0), images_per_t=4, progress=False)
    save_gamma(gamma_path, GammaEstimate(estimate.gamma, estimate.stderr, 4, seed=0, step=checkpoint.step + 1))
    assert main([*argv, str(tmp_path / "a.png")]) == 2
    assert "was estimated at step" in capsys.readouterr().err
    save_gamma(gamma_path, GammaEstimate(estimate.gamma, estimate.stderr, 4, seed=0, step=checkpoint.step))
    assert main([*argv, str(tmp_path / "b.png"), "--npz", str(tmp_path / "b.npz")]) == 0
    expected = generate(checkpoint, 3, torch.Generator().manual_seed(0),
                        SamplerOptions(variance="optimal", gamma=estimate.gamma), progress=False)
    with np.load(tmp_path / "b.npz") as stored:
        assert np.array_equal(stored["images"], expected.numpy())
    with pytest.raises(ValueError, match="needs the checkpoint's Gamma_t"):
        generate(checkpoint, 1, torch.Generator(), SamplerOptions(variance="optimal"), progress=False)


@settings(max_examples=15, deadline=None)
@given(betas=strategies.schedules(min_T=2, max_T=120), seed=st.integers(0, 2**16))
@example(betas=make_betas("linear", 100), seed=1)
def test_optimal_tables_match_derivation_j(betas, seed):
    """Code vs oracle: sigma*^2 at a Gamma_t inside its bounds is derivation (j)'s SIGMA2_OPTIMAL."""
    from derivations import optimal_variance

    T = len(betas)
    ab = alpha_bars(betas)
    t = np.arange(2, T + 1)
    lower = np.maximum(0.0, optimal_variance.gamma_lower(betas[t - 1], ab[t - 1]))
    gamma = np.concatenate([[1.0], lower + np.random.default_rng(seed).uniform(0, 1, T - 1) * (1.0 - lower)])
    got = GaussianDiffusion(betas).with_optimal_variance(gamma).reverse_variance("optimal").numpy()[2:]
    want = optimal_variance.sigma2_optimal(betas[t - 1], ab[t - 1], gamma[1:])
    assert_allclose(got, want, **FLOAT64.kwargs(), err_msg="with_optimal_variance != derivation (j)")
