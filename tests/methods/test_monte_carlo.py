"""Monte Carlo checks of the forward process, the posterior, the Gaussian KL, the decoder and the ELBO estimators.

Every test here is a hypothesis test: it draws from local generators seeded with `seed_base + offset`
(conftest; `nox -s sweep` varies the base), gathers its comparisons into one `stat_checks.Family` and fails iff
a Holm-adjusted p-value is <= its ALPHA (family-wise error rate; the sweep measures the observed false-failure
rate against it). Expected values come from the code under test where the test is about a distributional
property of the code (its closed forms must describe what sampling produces), and the samples are produced
independently of the code (NumPy chains written from the paper) wherever the code's formulas are the subject.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose
from scipy import stats

from ddpm.core.bound import discretized_gaussian_log_likelihood, elbo_monte_carlo, elbo_terms, normal_kl
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.schedules import make_betas
from testkit import tolerances
from testkit.doubles import TinyEps
from testkit.optimal_denoisers import GRID, alpha_bars
from testkit.stat_checks import Family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

T = 1000
f64 = torch.float64


def _timesteps(t: int, n: int) -> torch.Tensor:
    return torch.full((n,), t, dtype=torch.int64)


# ------------------------------------------------------------------------------ forward chain vs eq. (4)
ALPHA_FORWARD = 1e-3  # family-wise, Holm over (t, x_0, statistic): 6 x 3 x 6 = 108 comparisons
CHAIN_STEPS = (1, 2, 10, 100, 500, T)
CHAIN_X0 = (-1.0, -0.25, 0.6)
N_CHAIN = 10_000


@pytest.mark.statistical(alpha=ALPHA_FORWARD)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_iterated_forward_steps_match_closed_form(schedule, seed_base, record_property):
    """x_t from t steps x_s = sqrt(1 - beta_s) x_{s-1} + sqrt(beta_s) z (NumPy, the definition) ~ q(x_t | x_0).

    Against the code's closed form N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t)) from `q_mean_variance`: mean (z
    with the closed-form variance), variance (chi-square, N - 1 dof) and shape (KS against that normal CDF). The
    code's reparameterised `q_sample` draws are compared with the chain as two samples: Welch z on the means,
    F on the variance ratio, two-sample KS. t = 1 and t = T included.
    """
    betas = make_betas(schedule, T)
    diffusion = GaussianDiffusion(betas)
    rng = np.random.default_rng(seed_base + 101)
    gen = torch.Generator().manual_seed(seed_base + 102)
    x0 = np.asarray(CHAIN_X0)  # [K]
    K = x0.shape[0]
    x = np.broadcast_to(x0, (N_CHAIN, K)).copy()  # [N, K]
    chain = {}
    for t in range(1, T + 1):
        beta = betas[t - 1]
        x = math.sqrt(1.0 - beta) * x + math.sqrt(beta) * rng.standard_normal((N_CHAIN, K))
        if t in CHAIN_STEPS:
            chain[t] = x.copy()

    family = Family(f"iterated q(x_t | x_(t-1)) vs q(x_t | x_0), {schedule}", ALPHA_FORWARD)
    x0_rows = torch.tensor(x0, dtype=f64).expand(N_CHAIN, K).contiguous()  # [N, K]
    for t in CHAIN_STEPS:
        mean, var = diffusion.q_mean_variance(torch.tensor(x0, dtype=f64)[:, None], _timesteps(t, K))  # [K, 1]
        noise = torch.randn((N_CHAIN, K), generator=gen, dtype=f64)
        direct = diffusion.q_sample(x0_rows, _timesteps(t, N_CHAIN), noise).numpy()  # [N, K]
        for k in range(K):
            mu, v = float(mean[k, 0]), float(var[k, 0])
            xs, ys = chain[t][:, k], direct[:, k]
            tag = f"t={t}, x0={x0[k]}"
            family.z_test(f"{tag}: chain mean", xs.mean(), mu, math.sqrt(v / N_CHAIN))
            family.variance_chi2(f"{tag}: chain variance", ((xs - xs.mean()) ** 2).sum(), N_CHAIN - 1, v)
            family.ks(f"{tag}: chain shape", xs, "norm", (mu, math.sqrt(v)))
            se = math.sqrt(xs.var(ddof=1) / N_CHAIN + ys.var(ddof=1) / N_CHAIN)
            family.z_test(f"{tag}: q_sample mean vs chain", ys.mean() - xs.mean(), 0.0, se)
            f = ys.var(ddof=1) / xs.var(ddof=1)
            p_f = 2.0 * min(stats.f.cdf(f, N_CHAIN - 1, N_CHAIN - 1), stats.f.sf(f, N_CHAIN - 1, N_CHAIN - 1))
            family.add(f"{tag}: q_sample variance vs chain", min(1.0, p_f), f"F {f:.4g}")
            family.add(f"{tag}: q_sample shape vs chain", stats.ks_2samp(xs, ys).pvalue)
    family.check(record_property)


# --------------------------------------------------------------------------- posterior by regression
ALPHA_POSTERIOR = 1e-3  # family-wise, Holm over (t, x_0) x {slope, intercept, residual variance}: 36 comparisons
REGRESSION_STEPS = (2, 3, 10, 100, 500, T)
REGRESSION_X0 = (-0.5, 0.75)
N_PAIRS = 20_000


def _regression_tests(family: Family, tag: str, x: np.ndarray, y: np.ndarray, slope: float, intercept: float,
                      variance: float) -> None:
    """Ordinary least squares of y on x [N] against a Gaussian conditional law y | x ~ N(intercept + slope x,
    variance): Student t tests (N - 2 dof) on slope and intercept with the usual OLS standard errors, chi-square
    (N - 2 dof) on the residual variance."""
    n = x.shape[0]
    xm, ym = x.mean(), y.mean()
    sxx = ((x - xm) ** 2).sum()
    fitted_slope = ((x - xm) * (y - ym)).sum() / sxx
    fitted_intercept = ym - fitted_slope * xm
    ssr = ((y - fitted_intercept - fitted_slope * x) ** 2).sum()
    s2 = ssr / (n - 2)
    family.t_test(f"{tag}: slope", fitted_slope, slope, math.sqrt(s2 / sxx), n - 2)
    family.t_test(f"{tag}: intercept", fitted_intercept, intercept, math.sqrt(s2 * (1.0 / n + xm**2 / sxx)), n - 2)
    family.variance_chi2(f"{tag}: residual variance", ssr, n - 2, variance)


@pytest.mark.statistical(alpha=ALPHA_POSTERIOR)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_sampled_pairs_regress_to_the_posterior(schedule, seed_base, record_property):
    """Pairs x_{t-1} ~ q(x_{t-1} | x_0), x_t = sqrt(alpha_t) x_{t-1} + sqrt(beta_t) z (NumPy) regress like eq. (6)-(7).

    E[x_{t-1} | x_t, x_0] = coef_xt x_t + coef_x0 x_0 and Var = beta_tilde_t, so ordinary least squares of
    x_{t-1} on x_t (fixed x_0) has slope coef_xt, intercept coef_x0 x_0 and residual variance beta_tilde_t,
    all read from the code's `q_posterior_mean_variance` (slope = its mean at x_0 = 0, x_t = 1; intercept = at
    x_t = 0). Student t tests (N - 2 dof) on slope and intercept with the usual OLS standard errors, chi-square
    (N - 2 dof) on the residual variance. At t = 1 (alpha_bar_0 = 1) x_0 is the only possible x_{t-1}: checked
    exactly (mean x_0, variance 0).
    """
    betas = make_betas(schedule, T)
    diffusion = GaussianDiffusion(betas)
    ab = alpha_bars(betas)  # [T + 1], NumPy, independent of ddpm
    rng = np.random.default_rng(seed_base + 201)
    family = Family(f"(x_(t-1), x_t) regression vs q(x_(t-1) | x_t, x_0), {schedule}", ALPHA_POSTERIOR)
    for t in REGRESSION_STEPS:
        for x0 in REGRESSION_X0:
            x_prev = math.sqrt(ab[t - 1]) * x0 + math.sqrt(1.0 - ab[t - 1]) * rng.standard_normal(N_PAIRS)
            x_t = math.sqrt(1.0 - betas[t - 1]) * x_prev + math.sqrt(betas[t - 1]) * rng.standard_normal(N_PAIRS)
            tt = _timesteps(t, 1)
            one, zero = torch.ones(1, 1, dtype=f64), torch.zeros(1, 1, dtype=f64)
            coef_xt = float(diffusion.q_posterior_mean_variance(zero, one, tt)[0])
            mean_at_0, var = diffusion.q_posterior_mean_variance(torch.full((1, 1), x0, dtype=f64), zero, tt)
            _regression_tests(family, f"t={t}, x0={x0}", x_t, x_prev, coef_xt, float(mean_at_0), float(var))

    # t = 1: q(x_0 | x_1, x_0) is the point mass at x_0.
    x0 = torch.tensor(REGRESSION_X0, dtype=f64)[:, None]  # [K, 1]
    z = torch.randn(x0.shape, dtype=f64, generator=torch.Generator().manual_seed(seed_base + 202))
    x1 = math.sqrt(ab[1]) * x0 + math.sqrt(1.0 - ab[1]) * z
    mean, var = diffusion.q_posterior_mean_variance(x0, x1, _timesteps(1, x0.shape[0]))
    assert_allclose(mean.numpy(), x0.numpy(), **tolerances.FLOAT64.kwargs(), err_msg="mu_tilde_1 must be x_0")
    assert float(var.abs().max()) == 0.0, "beta_tilde_1 must be exactly 0"
    family.check(record_property)


# ------------------------------------------------------------------------- strided posterior (derivation (i))
ALPHA_STRIDED = 1e-3  # family-wise, Holm over (stride, x_0, statistic): 3 x 2 x 3 = 18 comparisons per schedule
STRIDES = ((50, 20), (400, 100), (T, 600))  # (t, s): x_s ~ q(x_s | x_0), then t - s single forward steps
N_STRIDED = 20_000


@pytest.mark.statistical(alpha=ALPHA_STRIDED)
@pytest.mark.parametrize("schedule", ["linear", "cosine"])
def test_sampled_strides_regress_to_the_strided_posterior(schedule, seed_base, record_property):
    """x_s ~ q(x_s | x_0), then x_t by t - s single steps x_u = sqrt(alpha_u) x_{u-1} + sqrt(beta_u) z (NumPy, the
    definition; no stride formula): OLS of x_s on x_t at fixed x_0 has the slope, intercept and residual variance of
    q(x_s | x_t, x_0), read from the code's `strided_ancestral_step` ("beta_tilde") with the eps that makes x0_hat
    = x_0: its mean at z = 0 (linear in x_t: slope from x_t = 1 minus x_t = 0) and its sigma (z = 1 minus z = 0).
    Student t tests on slope and intercept, chi-square on the residual variance."""
    from ddpm.core.samplers import strided_ancestral_step

    betas = make_betas(schedule, T)
    diffusion = GaussianDiffusion(betas)
    ab = alpha_bars(betas)  # [T + 1]
    rng = np.random.default_rng(seed_base + 251)
    family = Family(f"(x_s, x_t) regression vs q(x_s | x_t, x_0), {schedule}", ALPHA_STRIDED)

    def step(t: int, s: int, xt: float, x0: float, z: float) -> float:
        eps = (xt - math.sqrt(ab[t]) * x0) / math.sqrt(1.0 - ab[t])  # the eps whose x0_hat is x_0
        one = lambda value: torch.full((1, 1), value, dtype=f64)  # noqa: E731
        return float(strided_ancestral_step(diffusion, one(eps), one(xt), t, s, one(z), "beta_tilde"))

    for t, s in STRIDES:
        for x0 in REGRESSION_X0:
            x_s = math.sqrt(ab[s]) * x0 + math.sqrt(1.0 - ab[s]) * rng.standard_normal(N_STRIDED)
            x_t = x_s.copy()
            for u in range(s + 1, t + 1):
                x_t = math.sqrt(1.0 - betas[u - 1]) * x_t + math.sqrt(betas[u - 1]) * rng.standard_normal(N_STRIDED)
            mean_at_0 = step(t, s, 0.0, x0, 0.0)
            code_slope = step(t, s, 1.0, x0, 0.0) - mean_at_0
            sigma = step(t, s, 0.0, x0, 1.0) - mean_at_0
            _regression_tests(family, f"t={t}, s={s}, x0={x0}", x_t, x_s, code_slope, mean_at_0, sigma**2)
    family.check(record_property)


# ------------------------------------------------------------------------------------ Gaussian KL
ALPHA_KL = 1e-3  # family-wise, Holm over the cases below
N_KL = 100_000


def _kl_cases(betas: np.ndarray) -> list[tuple[str, float, float, float, float]]:
    """(label, m1, v1, m2, v2): generic pairs, and the bound's pairs q(x_{t-1}|x_t,x_0) vs p_theta at t = 10, 500."""
    ab = alpha_bars(betas)
    cases = [
        ("shifted, wider N2", 0.3, 1.0, -0.2, 2.5),
        ("narrower N2", 2.0, 4.0, 0.0, 1.0),
        ("narrow both", -1.0, 0.5, 1.0, 0.3),
        ("close", 1.0, 0.04, 0.9, 0.05),
    ]
    for t in (10, 500):
        beta_tilde = (1.0 - ab[t - 1]) / (1.0 - ab[t]) * betas[t - 1]
        shifted = 0.2 + 0.5 * math.sqrt(beta_tilde)
        cases.append((f"posterior vs p_theta(beta), t={t}", 0.2, beta_tilde, shifted, betas[t - 1]))
    return cases


@pytest.mark.statistical(alpha=ALPHA_KL)
def test_monte_carlo_kl_matches_normal_kl(seed_base, record_property):
    """E_{x ~ N1}[log N1(x) - log N2(x)] (sample mean of SciPy log-densities, N draws) = normal_kl(N1, N2).

    z test with the sample standard error (the log-ratio is a quadratic in a Gaussian: finite moments, CLT).
    """
    rng = np.random.default_rng(seed_base + 301)
    cases = _kl_cases(make_betas("linear", T))
    m1, v1, m2, v2 = (torch.tensor([c[i] for c in cases], dtype=f64) for i in range(1, 5))
    closed = normal_kl(m1, v1, m2, v2).numpy()
    family = Family("Monte Carlo KL vs normal_kl", ALPHA_KL)
    for (label, a, va, b, vb), kl in zip(cases, closed, strict=True):
        x = a + math.sqrt(va) * rng.standard_normal(N_KL)
        log_ratio = stats.norm.logpdf(x, a, math.sqrt(va)) - stats.norm.logpdf(x, b, math.sqrt(vb))
        family.z_test(label, log_ratio.mean(), float(kl), log_ratio.std(ddof=1) / math.sqrt(N_KL))
    family.check(record_property)


# ------------------------------------------------------------------------------ discretised decoder
ALPHA_DECODER = 1e-3  # family-wise, Holm over the cases below
N_DECODER = 100_000
DECODER_CASES = ((0.0, 0.01), (0.97, 0.004), (-0.3, 1e-4), (0.2, 4.0), (-0.999, 2e-5))


@pytest.mark.statistical(alpha=ALPHA_DECODER)
def test_decoder_probabilities_are_bin_frequencies(seed_base, record_property):
    """exp(discretized_gaussian_log_likelihood(x_k, mean, var)) over the 256 grid values = frequencies of N(mean, var).

    Draws binned by the nearest grid index k = round((x + 1) * 127.5), clipped to 0..255 (so the edge bins
    collect the tails); Pearson chi-square against the code's probabilities (cells with expectation < 5 pooled).
    """
    rng = np.random.default_rng(seed_base + 401)
    grid = torch.tensor(GRID, dtype=f64)  # [256]
    family = Family("decoder probabilities vs binned N(mean, var) draws", ALPHA_DECODER)
    for mean, var in DECODER_CASES:
        x = mean + math.sqrt(var) * rng.standard_normal(N_DECODER)
        k = np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.int64)
        counts = np.bincount(k, minlength=256)
        probs = discretized_gaussian_log_likelihood(grid, torch.full_like(grid, mean), var).exp().numpy()
        family.chi2_counts(f"mean={mean}, var={var}", counts, probs)
    family.check(record_property)


# ------------------------------------------------------------------------------------ ELBO estimators
ALPHA_ELBO = 1e-3  # family-wise, Holm over images x {uniform, importance} and the stderr check: 7 comparisons
ELBO_T = 1000
ELBO_IMAGES = 3
ELBO_REFERENCE_REPEATS = 64  # exact-in-t sums (elbo_terms) per image
ELBO_DRAWS = 20_000  # (t, x_t) draws per image and estimator
STDERR_CALLS = 48
STDERR_DRAWS = 200


@pytest.mark.statistical(alpha=ALPHA_ELBO)
def test_monte_carlo_elbo_is_unbiased_for_the_exact_sum(seed_base, record_property):
    """elbo_monte_carlo (t uniform, and t ~ a proposal with weights 1/(T p(t))) has mean = the exact T-term sum.

    For each image the reference is the mean of elbo_terms' bits/dim over repeated exact-in-t sums (each with
    its own x_t draws), with its standard error; the estimator runs on that image alone (so its stderr is the
    per-draw spread over sqrt(draws), exact for a fixed image). z = (estimate - reference) / sqrt(se^2 + se_ref^2).
    The proposal is proportional to the reference's per-timestep terms (fixed before the estimator draws, so the
    estimator stays unbiased). Last, the reported stderr is checked against the spread of repeated estimates
    (importance-sampled, near-Gaussian): sum (e_i - mean)^2 / mean(stderr_i^2) ~ chi-square(calls - 1).
    """
    betas = make_betas("linear", ELBO_T)
    diffusion = GaussianDiffusion(betas)
    gen = torch.Generator().manual_seed(seed_base + 501)
    model = TinyEps(ELBO_T, 4, gen)
    pixels = torch.randint(0, 256, (ELBO_IMAGES, 1, 2, 2), generator=gen)
    images = pixels.to(torch.float32) / 127.5 - 1.0  # [n, 1, 2, 2] on the 8-bit grid
    family = Family("Monte Carlo ELBO vs exact sum over t", ALPHA_ELBO)
    proposal = None
    for i in range(ELBO_IMAGES):
        x0 = images[i : i + 1]
        reference = elbo_terms(model, diffusion, x0.expand(ELBO_REFERENCE_REPEATS, -1, -1, -1), gen, batch_size=8192)
        bpd = reference.bits_per_dim().numpy()
        ref, ref_se = bpd.mean(), bpd.std(ddof=1) / math.sqrt(bpd.shape[0])
        per_t = reference.per_timestep_bits_per_dim().numpy()[:ELBO_T]  # L_0 .. L_{T-1}, i.e. t = 1..T
        proposal = np.maximum(per_t, 1e-3 * per_t.mean())
        proposal = proposal / proposal.sum()
        for name, p in (("uniform", None), ("importance", proposal)):
            mc = elbo_monte_carlo(model, diffusion, x0, gen, draws_per_image=ELBO_DRAWS, proposal=p, batch_size=8192)
            assert mc.num_draws == ELBO_DRAWS and mc.num_images == 1
            se = math.sqrt(mc.stderr**2 + ref_se**2)
            family.z_test(f"image {i}, {name}", mc.bits_per_dim, ref, se)
    # stderr calibration on the last image, with its proposal
    runs = [
        elbo_monte_carlo(model, diffusion, x0, gen, draws_per_image=STDERR_DRAWS, proposal=proposal, batch_size=8192)
        for _ in range(STDERR_CALLS)
    ]
    estimates = np.array([r.bits_per_dim for r in runs])
    mean_var = float(np.mean([r.stderr**2 for r in runs]))
    spread = ((estimates - estimates.mean()) ** 2).sum()
    family.variance_chi2("stderr vs spread of repeated estimates", spread, STDERR_CALLS - 1, mean_var)
    family.check(record_property)
