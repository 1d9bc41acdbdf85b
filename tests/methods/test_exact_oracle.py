"""Exact-oracle tests: data whose optimal denoiser eps*(x_t, t) = E[eps | x_t] is known in closed form.

The closed forms and their derivations are in tests/testkit/optimal_denoisers.py; the first tests here cross-check them
(SymPy for the Gaussian case, 30-digit quadrature and Tweedie's formula for mixtures and points). Then, with
eps* plugged into ddpm as the network:
  (i)   L_simple (Algorithm 1, `training_loss`) at eps* equals its analytic minimum, and a perturbed denoiser
        eps* + g pays exactly E||g||^2 more (so eps* is below it);
  (ii)  Algorithm 2 (`ancestral_sample`, both variances) reproduces the data: for Gaussian data the exact law
        of its output, for a finite set of points the point frequencies and the spread around the points;
  (iii) for discretised Gaussian data the bound (`elbo_terms`, bits/dim) lies above the exact negative
        log-likelihood (the ELBO below the log-likelihood), and the gap is reported and matches its analytic
        value term by term.
Statistical tests use `seed_base` + a fixed offset and a Holm-corrected family at their ALPHA.
"""

from __future__ import annotations

import math

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch
from numpy.testing import assert_allclose
from scipy import stats

from ddpm.core.bound import elbo_terms
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.losses import training_loss
from ddpm.core.samplers import ancestral_sample
from ddpm.core.schedules import make_betas
from testkit import tolerances
from testkit.optimal_denoisers import (
    GRID,
    DiscretisedGaussian,
    EpsStar,
    GaussianData,
    GaussianMixture,
    algorithm2_gaussian_law,
    alpha_bars,
    gaussian_reverse_gap,
)
from testkit.stat_checks import Family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F64 = tolerances.FLOAT64.kwargs()
LN2 = math.log(2.0)
f64 = torch.float64

GAUSSIAN = GaussianData(mean=0.1, std=0.25)
# Four points on the 8-bit grid (pixel values (64, 192), (192, 192), (128, 40), (230, 20)) with unequal weights.
POINTS = GaussianMixture(
    weights=(0.1, 0.2, 0.3, 0.4),
    means=((GRID[64], GRID[192]), (GRID[192], GRID[192]), (GRID[128], GRID[40]), (GRID[230], GRID[20])),
    stds=(0.0, 0.0, 0.0, 0.0),
)
MIXTURE_1D = GaussianMixture(weights=(0.3, 0.5, 0.2), means=((-0.6,), (0.1,), (0.7,)), stds=(0.1, 0.2, 0.05))
# Mixed: a Gaussian blob and a point, in 2-D.
MIXTURE_2D = GaussianMixture(weights=(0.35, 0.65), means=((-0.3, 0.2), (0.4, -0.1)), stds=(0.15, 0.0))
LAWS = {"gaussian": GAUSSIAN, "points": POINTS, "mixture": MIXTURE_1D}
# T = 20 with beta_t alternating 0.02, 0.2: neighbouring steps differ tenfold, so an index slip shows at once.
JAGGED_BETAS = np.tile([0.02, 0.2], 10)


def _eps_star(law, x: np.ndarray, alpha_bar: float) -> np.ndarray:
    """law.eps_star at one x [D] (float64 NumPy in and out)."""
    xt = torch.tensor(np.atleast_1d(x), dtype=f64)[None, :]
    return law.eps_star(xt, torch.tensor([alpha_bar], dtype=f64))[0].numpy()


# ------------------------------------------------------------------------------- cross-checks of eps*
@pytest.mark.symbolic
def test_gaussian_eps_star_by_completing_the_square():
    """p(eps | x_t) is proportional to exp(E(eps)) with E quadratic: its mean B/(2A), variance 1/(2A) match (a)."""
    eps, x, m = sp.symbols("epsilon x_t m", real=True)
    a, b, s = sp.symbols("a b s", positive=True)
    x0 = (x - b * eps) / a  # x_0 given x_t and eps, eq. (4)
    exponent = -(eps**2) / 2 - (x0 - m) ** 2 / (2 * s**2)  # log N(eps; 0, 1) + log N(x_0; m, s^2) + const
    poly = sp.Poly(sp.expand(exponent), eps)
    assert poly.degree() == 2
    A, B = -poly.coeff_monomial(eps**2), poly.coeff_monomial(eps)
    assert sp.simplify(B / (2 * A) - b * (x - a * m) / (a**2 * s**2 + b**2)) == 0, "E[eps | x_t]"
    assert sp.simplify(1 / (2 * A) - a**2 * s**2 / (a**2 * s**2 + b**2)) == 0, "Var(eps | x_t)"
    # With a^2 + b^2 = 1 the variance is the module's 1 - (1 - ab) / (ab s^2 + 1 - ab).
    ab = sp.Symbol("alpha_bar", positive=True)
    variance = (a**2 * s**2 / (a**2 * s**2 + b**2)).subs({a: sp.sqrt(ab), b: sp.sqrt(1 - ab)})
    assert sp.simplify(variance - (1 - (1 - ab) / (ab * s**2 + 1 - ab))) == 0


@pytest.mark.parametrize("law", [GAUSSIAN, MIXTURE_1D], ids=["gaussian", "mixture"])
def test_eps_star_matches_30_digit_quadrature(law):
    """eps*(x_t) = int eps N(eps) p_data((x_t - b eps)/a) d eps / int N(eps) p_data((x_t - b eps)/a) d eps (1-D)."""
    if isinstance(law, GaussianData):
        components = [(1.0, law.mean, law.std)]
    else:
        components = [(w, mu[0], s) for w, mu, s in zip(law.weights, law.means, law.stds, strict=True)]
    with mpmath.workdps(30):
        for ab, x in ((0.9999, -0.7), (0.9, 0.05), (0.5, 0.9), (0.01, 0.3)):
            a, b = mpmath.sqrt(ab), mpmath.sqrt(1 - mpmath.mpf(ab))
            density = lambda e, x=x, a=a, b=b: mpmath.npdf(e) * sum(  # noqa: E731
                w * mpmath.npdf((x - b * e) / a, mu, s) for w, mu, s in components
            )
            # Breakpoints: a grid over the bulk of N(eps) plus where x_0 hits a component mean (narrow peaks).
            peaks = [(x - a * mu) / b for _, mu, _ in components]
            nodes = [-mpmath.inf, *sorted({*np.linspace(-12.0, 12.0, 9).tolist(), *peaks}), mpmath.inf]
            mean = mpmath.quad(lambda e, density=density: e * density(e), nodes) / mpmath.quad(density, nodes)
            assert_allclose(_eps_star(law, x, ab), [float(mean)], **F64, err_msg=f"eps* at x_t={x}, ab={ab}")


@pytest.mark.parametrize("law", [GAUSSIAN, POINTS, MIXTURE_2D], ids=["gaussian", "points", "mixture2d"])
def test_eps_star_is_tweedie(law):
    """eps*(x_t) = -b grad log p_t(x_t), p_t = sum_k w_k N(a mu_k, v_k I), by 50-digit numerical differentiation."""
    if isinstance(law, GaussianData):
        law = GaussianMixture(weights=(1.0,), means=((law.mean, law.mean),), stds=(law.std,))
    D = law.dim
    with mpmath.workdps(50):
        for ab in (0.999, 0.7, 0.2):
            a, b2 = mpmath.sqrt(ab), 1 - mpmath.mpf(ab)

            def log_p(*x, a=a, b2=b2):
                total = mpmath.mpf(0)
                for w, mu, s in zip(law.weights, law.means, law.stds, strict=True):
                    v = a**2 * mpmath.mpf(s) ** 2 + b2
                    d2 = sum((xi - a * mi) ** 2 for xi, mi in zip(x, mu, strict=True))
                    total += w * mpmath.exp(-d2 / (2 * v)) / (2 * mpmath.pi * v) ** (mpmath.mpf(D) / 2)
                return mpmath.log(total)

            for x in ((-0.4, 0.3), (0.35, -0.05), (0.9, 0.8)):
                grad = [mpmath.diff(log_p, x, tuple(int(i == j) for j in range(D))) for i in range(D)]
                tweedie = [float(-mpmath.sqrt(b2) * g) for g in grad]
                got = _eps_star(law, np.array(x), ab)
                assert_allclose(got, tweedie, **F64, err_msg=f"eps* vs Tweedie at {x}, ab={ab}")


# ---------------------------------------------------------------------------- (i) L_simple at eps*
ALPHA_LSIMPLE_T = 1e-3  # family-wise, Holm over the 6 timesteps
LSIMPLE_STEPS = (1, 2, 10, 100, 500, 1000)
LSIMPLE_IMAGES = 2000  # of 1 x 4 x 4: 32,000 squared residuals per t


@pytest.mark.statistical(alpha=ALPHA_LSIMPLE_T)
def test_l_simple_per_t_at_eps_star_is_the_conditional_variance(seed_base, record_property):
    """Gaussian data: at each t, sum (eps - eps*(x_t))^2 / Var(eps | x_t) ~ chi-square(n) exactly.

    x_t from ddpm's q_sample, eps* from (a). The residual eps - eps* is N(0, Var(eps | x_t)) and independent
    across coordinates and draws, so its mean square estimates the analytic minimum 1 - (1 - ab)/(ab s^2 + 1 - ab)
    per dimension with an exact chi-square test (two-sided).
    """
    betas = make_betas("linear", 1000)
    diffusion = GaussianDiffusion(betas)
    ab = alpha_bars(betas)
    model = EpsStar(GAUSSIAN, betas)
    rng = np.random.default_rng(seed_base + 601)
    gen = torch.Generator().manual_seed(seed_base + 602)
    family = Family("L_simple at eps* per t vs Var(eps | x_t)", ALPHA_LSIMPLE_T)
    shape = (LSIMPLE_IMAGES, 1, 4, 4)
    for t in LSIMPLE_STEPS:
        x0 = torch.tensor(GAUSSIAN.sample(rng, shape), dtype=f64)
        noise = torch.randn(shape, generator=gen, dtype=f64)
        tt = torch.full((LSIMPLE_IMAGES,), t, dtype=torch.int64)
        xt = diffusion.q_sample(x0, tt, noise)
        residual2 = float(((noise - model(xt, tt)) ** 2).sum())
        n = noise.numel()
        family.variance_chi2(f"t={t}", residual2, n, float(GAUSSIAN.eps_conditional_variance(ab[t])))
    family.check(record_property)


ALPHA_LSIMPLE = 1e-3  # family-wise, Holm over {minimum (Gaussian only), two perturbation costs}
LSIMPLE_BATCHES = 24
BATCH_SHAPES = {"gaussian": (256, 1, 4, 4), "points": (2048, 1, 1, 2), "mixture": (4096, 1, 1, 1)}
DELTA = 0.1  # g = DELTA (constant): costs DELTA^2
SCALE = 0.1  # g = SCALE x_t: costs SCALE^2 E[x_t^2]


@pytest.mark.statistical(alpha=ALPHA_LSIMPLE)
@pytest.mark.parametrize("law_name", [*LAWS, "gaussian-jagged"])
def test_training_loss_at_eps_star_is_minimal(law_name, seed_base, record_property):
    """Algorithm 1's loss (`training_loss`, t ~ U{1..T}) at eps*, at eps* + DELTA and at eps* + SCALE x_t.

    Each batch draws x_0 (NumPy) and runs the three losses with identically seeded generators, so t and eps are
    shared and the differences are paired. By the Pythagoras identity of testkit/optimal_denoisers.py the
    expected excess of eps* + g is E[g^2] per dimension: DELTA^2, and SCALE^2 mean_t(ab_t E[x_0^2] + 1 - ab_t)
    (E[x_t (eps - eps*)] = 0). Student t tests over the batches; for Gaussian data also E L_simple(eps*) =
    mean_t Var(eps | x_t), the analytic minimum. Finally eps* must be below both perturbed denoisers: the
    lower confidence bound of each excess (one-sided, level ALPHA) must be positive. Linear T = 1000, and for
    Gaussian data also JAGGED_BETAS (where x_t built at the wrong step would show).
    """
    law = LAWS[law_name.removesuffix("-jagged")]
    betas = JAGGED_BETAS if law_name.endswith("-jagged") else make_betas("linear", 1000)
    diffusion = GaussianDiffusion(betas)
    ab = alpha_bars(betas)[1:]  # [T], t = 1..T
    models = {
        "eps*": EpsStar(law, betas),
        "eps*+delta": EpsStar(law, betas, perturb=lambda eps, x, a: torch.full_like(eps, DELTA)),
        "eps*+c x_t": EpsStar(law, betas, perturb=lambda eps, x, a: SCALE * x),
    }
    rng = np.random.default_rng(seed_base + 701)
    shape = BATCH_SHAPES[law_name.removesuffix("-jagged")]
    losses = {name: [] for name in models}
    for j in range(LSIMPLE_BATCHES):
        if isinstance(law, GaussianData):
            x0 = law.sample(rng, shape)
        else:
            x0 = law.sample(rng, shape[0])[0].reshape(shape)
        x0 = torch.tensor(x0, dtype=f64)
        for name, model in models.items():
            gen = torch.Generator().manual_seed(seed_base + 10_000 + j)
            losses[name].append(float(training_loss(model, diffusion, x0, gen, objective="simple")))
    base = np.array(losses["eps*"])
    if isinstance(law, GaussianData):
        second_moment = law.std**2 + law.mean**2
    else:
        mean, var = law.moments()
        second_moment = float(np.mean(var + mean**2))
    expected_excess = {
        "eps*+delta": DELTA**2,
        "eps*+c x_t": SCALE**2 * float(np.mean(ab * second_moment + 1.0 - ab)),
    }
    family = Family(f"L_simple at eps* and perturbations, {law_name}", ALPHA_LSIMPLE)
    if isinstance(law, GaussianData):
        minimum = float(np.mean(law.eps_conditional_variance(ab)))
        family.mean_test("E L_simple(eps*) = mean_t Var(eps | x_t)", base, minimum)
    z = stats.norm.isf(ALPHA_LSIMPLE)
    for name, expected in expected_excess.items():
        excess = np.array(losses[name]) - base
        family.mean_test(f"excess of {name} = E g^2", excess, expected)
        lower = excess.mean() - z * excess.std(ddof=1) / math.sqrt(excess.shape[0])
        assert lower > 0.0, f"{law_name}: L_simple({name}) is not above L_simple(eps*): lower bound {lower:.3g}"
    family.check(record_property)


# ------------------------------------------------------------------------- (ii) Algorithm 2 with eps*
ALPHA_SAMPLE_GAUSSIAN = 1e-3  # family-wise, Holm over {mean, variance, KS, Cramer-von Mises (, mean vs data)}
SAMPLE_GAUSSIAN_T = 1000
SAMPLE_GAUSSIAN_N = 10_000
JAGGED_N = 20_000


def _normal_kl(m1: float, v1: float, m2: float, v2: float) -> float:
    return 0.5 * (math.log(v2 / v1) + (v1 + (m1 - m2) ** 2) / v2 - 1.0)


def _sample_against_law(betas, variance: str, n: int, seed: int, name: str) -> tuple[Family, np.ndarray, float, float]:
    """Run Algorithm 2 with eps* of GAUSSIAN; a Family already holding the four comparisons with its exact law."""
    diffusion = GaussianDiffusion(betas)
    gen = torch.Generator().manual_seed(seed)
    model = EpsStar(GAUSSIAN, betas)
    x = ancestral_sample(model, diffusion, (n, 1), gen, variance=variance, progress=False, dtype=f64).x0.numpy()
    x = x.reshape(-1)
    mu, v = algorithm2_gaussian_law(betas, GAUSSIAN, variance)
    family = Family(f"Algorithm 2 with eps* of N(m, s^2), {name}, sigma^2 = {variance}", ALPHA_SAMPLE_GAUSSIAN)
    family.z_test("mean vs law", x.mean(), mu, math.sqrt(v / n))
    family.variance_chi2("variance vs law", ((x - x.mean()) ** 2).sum(), n - 1, v)
    family.ks("KS vs law", x, "norm", (mu, math.sqrt(v)))
    family.cramervonmises("CvM vs law", x, "norm", (mu, math.sqrt(v)))
    return family, x, mu, v


@pytest.mark.statistical(alpha=ALPHA_SAMPLE_GAUSSIAN)
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_algorithm2_with_eps_star_gaussian(variance, seed_base, record_property):
    """Algorithm 2 driven by eps* of N(m, s^2) samples its exact output law N(mu_T, v_T), which tends to the data.

    `algorithm2_gaussian_law` propagates mean and variance through the affine steps (derived there). Tests:
    mean (z with the law's variance), variance (chi-square, N - 1 dof), shape (KS and Cramer-von Mises against
    N(mu_T, v_T)), and the mean against the data mean m directly (the law's mean is within 1e-6 of m). The law
    itself is compared with the data by its KL divergence, printed and recorded; that KL shrinks as T grows
    (checked for T = 100, 200, 1000) - the variance, not the mean, carries the discretisation error.
    """
    betas = make_betas("linear", SAMPLE_GAUSSIAN_T)
    family, x, mu, v = _sample_against_law(betas, variance, SAMPLE_GAUSSIAN_N, seed_base + 801, "linear T=1000")
    m, s2 = GAUSSIAN.mean, GAUSSIAN.std**2
    family.z_test("mean vs data mean m", x.mean(), m, x.std(ddof=1) / math.sqrt(x.shape[0]))

    kls = {}
    for T in (100, 200, SAMPLE_GAUSSIAN_T):
        mu_T, v_T = algorithm2_gaussian_law(make_betas("linear", T), GAUSSIAN, variance)
        kls[T] = _normal_kl(mu_T, v_T, m, s2)
    print(f"\nAlgorithm 2 + eps*, sigma^2 = {variance}: output N({mu:.7f}, {v:.6g}) vs data N({m}, {s2}); "
          f"KL(output || data) nats/dim by T: " + ", ".join(f"{T}: {kl:.3g}" for T, kl in kls.items()))
    record_property("output_variance_over_data_variance", v / s2)
    record_property("kl_output_data_nats", kls[SAMPLE_GAUSSIAN_T])
    assert kls[100] > kls[200] > kls[SAMPLE_GAUSSIAN_T] > 0.0, f"the law does not approach the data as T grows: {kls}"
    family.check(record_property)


@pytest.mark.statistical(alpha=ALPHA_SAMPLE_GAUSSIAN)
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_algorithm2_with_eps_star_gaussian_jagged_schedule(variance, seed_base, record_property):
    """As above on JAGGED_BETAS (T = 20, beta_t alternating 0.02 and 0.2): the output law is far from the data but
    known exactly, and a slip between t and t - 1 in any coefficient of the step moves it by many standard errors."""
    family, *_ = _sample_against_law(JAGGED_BETAS, variance, JAGGED_N, seed_base + 811, "jagged T=20")
    family.check(record_property)


ALPHA_SAMPLE_POINTS = 1e-3  # family-wise, Holm over {chi-square of the nearest point, mean of each coordinate}
SAMPLE_POINTS_T = 400
SAMPLE_POINTS_N = 3000


@pytest.mark.statistical(alpha=ALPHA_SAMPLE_POINTS)
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_algorithm2_with_eps_star_points(variance, seed_base, record_property):
    """Algorithm 2 driven by eps* of a finite set of points samples the points with their weights.

    Shape: Pearson chi-square of the nearest-point counts against the weights (3 dof); moments: z tests of the
    two coordinate means against the data's (sample standard errors). Spread: Algorithm 2's last step has
    z = 0 and returns mu_theta(x_1, 1) = E[x_0 | x_1] = sum_k r_k(x_1) mu_k, which sits on a point unless x_1 is
    within ~(1 - alpha_bar_1) / distance of a bisector (probability ~ exp(-distance^2 / (8 (1 - alpha_bar_1))),
    nil here); so every sample must lie within half a bin (1/255) of its point - it quantises to the point's
    pixel values.
    """
    betas = make_betas("linear", SAMPLE_POINTS_T)
    diffusion = GaussianDiffusion(betas)
    gen = torch.Generator().manual_seed(seed_base + 901)
    result = ancestral_sample(
        EpsStar(POINTS, betas), diffusion, (SAMPLE_POINTS_N, 1, 1, 2), gen, variance=variance, progress=False, dtype=f64
    )
    x = result.x0.numpy().reshape(SAMPLE_POINTS_N, 2)
    points = np.asarray(POINTS.means)  # [K, 2]
    distance = np.sqrt(((x[:, None, :] - points[None, :, :]) ** 2).sum(axis=2))  # [N, K]
    nearest = distance.argmin(axis=1)
    spread = distance.min(axis=1)
    print(f"\nAlgorithm 2 + eps* of points, sigma^2 = {variance}: largest distance to a point {spread.max():.3g}")
    assert spread.max() <= 1.0 / 255.0, f"a sample is {spread.max():.3g} from every point (more than half a bin)"

    family = Family(f"Algorithm 2 with eps* of 4 points, sigma^2 = {variance}", ALPHA_SAMPLE_POINTS)
    counts = np.bincount(nearest, minlength=len(POINTS.weights))
    family.chi2_counts("nearest-point counts vs weights", counts, np.asarray(POINTS.weights))
    mean, _ = POINTS.moments()
    for d in range(2):
        se = x[:, d].std(ddof=1) / math.sqrt(SAMPLE_POINTS_N)
        family.z_test(f"mean of coordinate {d}", x[:, d].mean(), mean[d], se)
    family.check(record_property)


# ------------------------------------------------------------------ (iii) the bound vs the log-likelihood
ALPHA_GAP = 1e-3  # family-wise, Holm over the term-wise comparisons and the sign
GAP_T = 1000
GAP_IMAGES = 256  # of 1 x 8 x 8
DISCRETE_GAUSSIAN = DiscretisedGaussian(mean=0.1, std=0.25)
KL_BLOCKS = ((2, 10), (11, 100), (101, GAP_T))


@pytest.mark.statistical(alpha=ALPHA_GAP)
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_elbo_at_eps_star_is_below_the_exact_log_likelihood(variance, seed_base, record_property):
    """For discretised Gaussian data, bound(x_0) >= -log p_data(x_0) in expectation; the gap is reported.

    Data: each pixel is the 8-bit grid value of the bin of a N(0.1, 0.25^2) draw (edge bins open), so the data
    law is discrete and its exact log-likelihood is log P(k) = log(Phi(upper_k) - Phi(lower_k)) summed over
    pixels - we compare with this discretised likelihood, not with a density plus log bin width, because the
    decoder is a distribution over the same 256 bins. eps_theta = eps* of the continuous N(0.1, 0.25^2).

    Gibbs: E_data[bound] - H = KL(q(x_{0:T}) || p_theta(x_{0:T})) >= 0, H the entropy per dimension; so the gap
    (bits/dim) is >= 0, and `DiscretisedGaussian.expected_bound` gives its value in closed form (up to
    Gauss-Hermite quadrature of the decoder). Decomposition printed: for continuous data the gap would be the
    reverse-variance mismatch sum_t (rho_t - 1 - log rho_t)/2 plus KL(q(x_T) || N(0, 1)) (`gaussian_reverse_gap`),
    which for sigma^2 = beta shrinks like 1/T; the rest comes from the discrete data (decoder and small t).

    Statistical part: per image, gap_i = bits/dim of elbo_terms - (-log p_data(x_0)) / (D ln 2) (the exact
    log-likelihood as a control variate); z tests of the mean gap and of the mean prior, decoder and three KL
    blocks against their analytic values, and a one-sided test that the gap is not negative.
    """
    betas = make_betas("linear", GAP_T)
    diffusion = GaussianDiffusion(betas)
    rng = np.random.default_rng(seed_base + 1001)
    gen = torch.Generator().manual_seed(seed_base + 1002)
    k = DISCRETE_GAUSSIAN.sample_indices(rng, (GAP_IMAGES, 1, 8, 8))
    x0 = torch.tensor(GRID[k], dtype=f64)
    D = 64
    model = EpsStar(DISCRETE_GAUSSIAN.continuous, betas)
    terms = elbo_terms(model, diffusion, x0, gen, variance=variance, batch_size=8192)
    bpd = terms.bits_per_dim().numpy()
    nll = DISCRETE_GAUSSIAN.nll_nats(k) / (D * LN2)
    gap = bpd - nll

    analytic = DISCRETE_GAUSSIAN.expected_bound(betas, variance)
    finer = DISCRETE_GAUSSIAN.expected_bound(betas, variance, quadrature_nodes=192)
    assert_allclose(analytic.decoder, finer.decoder, **F64, err_msg="Gauss-Hermite quadrature of L_0 has not converged")
    entropy_bits = DISCRETE_GAUSSIAN.entropy_nats() / LN2
    analytic_gap = analytic.total() / LN2 - entropy_bits
    steps, prior_kl = gaussian_reverse_gap(betas, DISCRETE_GAUSSIAN.continuous, variance)
    continuous_part = (steps.sum() + prior_kl) / LN2
    se = gap.std(ddof=1) / math.sqrt(GAP_IMAGES)
    print(
        f"\nELBO gap at eps*, sigma^2 = {variance}, T = {GAP_T}: entropy {entropy_bits:.5f} bits/dim, expected bound "
        f"{analytic.total() / LN2:.5f}; gap analytic {analytic_gap:.5f} (reverse-variance mismatch "
        f"{steps.sum() / LN2:.5f} + prior {prior_kl / LN2:.2g} + discrete-data/decoder rest "
        f"{analytic_gap - continuous_part:.5f}), Monte Carlo {gap.mean():.5f} +- {se:.5f} bits/dim "
        f"({GAP_IMAGES} images)"
    )
    record_property("elbo_gap_bits_per_dim_analytic", analytic_gap)
    record_property("elbo_gap_bits_per_dim_monte_carlo", float(gap.mean()))
    record_property("elbo_gap_bits_per_dim_stderr", se)
    assert analytic_gap > continuous_part > 0.0, "the analytic gap must be positive and exceed its continuous part"
    # The reverse-variance mismatch shrinks as T grows (per step O(beta_t^2) for sigma^2 = beta, so O(1/T) in all).
    law = DISCRETE_GAUSSIAN.continuous
    mismatch = {T: gaussian_reverse_gap(make_betas("linear", T), law, variance)[0].sum() for T in (100, 200, GAP_T)}
    assert mismatch[100] > mismatch[200] > mismatch[GAP_T] > 0.0, f"mismatch does not shrink with T: {mismatch}"

    family = Family(f"ELBO at eps* vs exact log-likelihood, sigma^2 = {variance}", ALPHA_GAP)
    family.z_test("mean gap = analytic gap", gap.mean(), analytic_gap, se)
    family.z_test("gap >= 0 (one-sided)", gap.mean(), 0.0, se, alternative="less")
    per_dim = lambda v: np.asarray(v) / D  # noqa: E731  nats per image -> nats per dim
    parts = {
        "prior L_T": (per_dim(terms.prior.numpy()), analytic.prior),
        "decoder L_0": (per_dim(terms.decoder.numpy()), analytic.decoder),
    }
    kl = terms.kl.numpy()  # [B, T - 1], column t - 2
    for lo, hi in KL_BLOCKS:
        block = slice(lo - 2, hi - 1)  # columns of t = lo..hi
        parts[f"L_(t-1), t={lo}..{hi}"] = (per_dim(kl[:, block].sum(axis=1)), float(analytic.kl[block].sum()))
    for label, (values, expected) in parts.items():
        family.mean_test(label, values, expected)
    family.check(record_property)
