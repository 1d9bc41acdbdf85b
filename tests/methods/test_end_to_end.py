"""End to end: Algorithm 1 through the real trainer (`ddpm.training.trainer`) and Algorithm 2 through the real sampler,
on data whose law is known exactly, checked against that law.

The law: 8x8 gray images x_0 = the 8-bit grid value of a draw of the two-component Gaussian mixture
0.35 N(P, s^2 I) + 0.65 N(-P, s^2 I), s = 0.15, P a smooth +-0.4 pattern (`LAW`). Its optimal denoiser eps* is in
closed form (tests/testkit/optimal_denoisers.py, case (b)) and so is the exact likelihood of a grid image (per pixel a
difference of normal CDFs, case (c), mixed over the two components). 2560 such images are written as PNGs and the
`tiny` preset is trained on the folder for 600 updates (~25 s on one core).

Checks (ALPHA family-wise per test, Holm), each with its margin stated where the trained model is compared with an
optimum it can only approach:
- L_simple: on shared draws (x_0, t, eps), the trained EMA model's ||eps - eps_theta||^2 / D minus eps*'s has mean
  >= 0 (no model beats the optimum: one-sided z-test) and <= MARGIN_SIMPLE (measured 0.0009 at 600 updates; the
  minimum itself is 0.063, an untrained zero-output model scores 1.0).
- Samples (Algorithm 2, 512, variance beta) against 512 draws of the law: component share (nearest mean) binomial
  test against 0.35; Anderson-Darling k-sample test on the projection onto the axis P; energy distance with a
  permutation p-value (200 permutations) on the 64-D vectors; and the within-component per-pixel variance within a
  factor VARIANCE_FACTOR of s^2 (measured 1.18x: the margin of a 600-update model).
- Bound (exact in t, variance beta) on 128 held-out images of the folder's test split: its mean minus the true
  -log p(x_0) is >= 0 (Gibbs: E[bound] >= E[-log p_theta] >= H, one-sided z-test) and <= MARGIN_BOUND bits/dim
  (measured 0.17).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image
from scipy import special, stats

from ddpm.core.bound import elbo_terms
from ddpm.core.samplers import ancestral_sample
from ddpm.images import data
from ddpm.training.checkpoint import build_eps_model, diffusion_from, load_checkpoint
from ddpm.training.config import get_preset
from ddpm.training.trainer import TrainOptions, train
from testkit.optimal_denoisers import EpsStar, GaussianMixture, discretised_normal_log_prob
from testkit.stat_checks import Family
from testkit.threads import one_thread

pytestmark = [pytest.mark.slow, pytest.mark.usefixtures("one_torch_thread")]

ALPHA = 1e-3
UPDATES = 600
SIDE = 8
D = SIDE * SIDE
STD = 0.15
WEIGHTS = (0.35, 0.65)
MARGIN_SIMPLE = 0.005  # per dimension
VARIANCE_FACTOR = 1.5
MARGIN_BOUND = 0.5  # bits/dim
NUM_SAMPLES = 512


def _pattern() -> np.ndarray:
    y, x = np.mgrid[0:SIDE, 0:SIDE] / (SIDE - 1.0)
    return (0.4 * np.cos(np.pi * x) * np.cos(0.5 * np.pi * y)).ravel()  # [64], in [-0.4, 0.4]


LAW = GaussianMixture(WEIGHTS, (tuple(_pattern()), tuple(-_pattern())), (STD, STD))


def _to_grid(x: np.ndarray) -> torch.Tensor:
    """Draws of the continuous law as 8-bit pixels (the data map's inverse: round and clamp), uint8."""
    return data.to_uint8(torch.from_numpy(x))


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """(eps model, diffusion, data folder) after UPDATES updates of the tiny preset on 2560 images of LAW."""
    with one_thread():  # 8x8 images: one intra-op thread is faster than two, and a second fights other jobs
        root = tmp_path_factory.mktemp("mixture")
        folder = root / "images"
        folder.mkdir()
        x, _ = LAW.sample(np.random.default_rng(2024), 2560)
        for i, image in enumerate(_to_grid(x).reshape(-1, SIDE, SIDE).numpy()):
            Image.fromarray(image, mode="L").save(folder / f"{i:05d}.png")
        preset = get_preset("tiny")
        preset = preset.replace(training=preset.training.replace(max_steps=UPDATES, ema_decay=0.995))
        train(str(folder), root / "run", preset, options=TrainOptions(seed=0), progress=False)
        checkpoint = load_checkpoint(root / "run" / "checkpoint.pt")
        return build_eps_model(checkpoint), diffusion_from(checkpoint), folder, checkpoint.betas


@pytest.mark.statistical(alpha=ALPHA)
def test_trained_l_simple_approaches_the_analytic_minimum(trained, seed_base, record_property):
    model, diffusion, _, betas = trained
    gen = torch.Generator().manual_seed(seed_base + 1101)
    rng = np.random.default_rng(seed_base + 1101)
    n = 4096
    x0 = data.to_model_range(_to_grid(LAW.sample(rng, n)[0]), torch.float64).reshape(n, 1, SIDE, SIDE)
    t = torch.randint(1, diffusion.T + 1, (n,), generator=gen)
    eps = torch.randn(x0.shape, generator=gen, dtype=torch.float64)
    star = EpsStar(LAW, np.asarray(betas, dtype=np.float64))
    ab = star.alpha_bar[t][:, None, None, None]
    xt = ab.sqrt() * x0 + (1.0 - ab).sqrt() * eps
    with torch.no_grad():
        loss_model = ((eps - model(xt.float(), t).double()) ** 2).flatten(1).mean(1)
    loss_star = ((eps - star(xt, t)) ** 2).flatten(1).mean(1)
    excess = (loss_model - loss_star).numpy()
    mean, se = float(excess.mean()), float(excess.std(ddof=1) / math.sqrt(n))
    record_property("l_simple_excess", mean)
    family = Family("trained L_simple vs the analytic minimum", ALPHA)
    family.z_test("no model beats eps*", mean, 0.0, se, alternative="less")
    family.check(record_property)
    assert mean <= MARGIN_SIMPLE, f"L_simple is {mean:.4f} above its minimum {loss_star.mean():.4f} per dimension"


@pytest.mark.statistical(alpha=ALPHA)
def test_algorithm_2_samples_follow_the_data_law(trained, seed_base, record_property):
    model, diffusion, _, _ = trained
    samples = ancestral_sample(model, diffusion, (NUM_SAMPLES, 1, SIDE, SIDE),
                               torch.Generator().manual_seed(seed_base + 1102), progress=False).x0
    x = data.to_model_range(data.to_uint8(samples)).double().reshape(NUM_SAMPLES, D)  # on the grid, as the data
    rng = np.random.default_rng(seed_base + 1102)
    ref = data.to_model_range(_to_grid(LAW.sample(rng, NUM_SAMPLES)[0]), torch.float64)
    means = torch.tensor(LAW.means, dtype=torch.float64)  # [2, D]
    component = ((x[:, None, :] - means[None]) ** 2).sum(-1).argmin(1)  # [n]
    family = Family("Algorithm 2 samples vs the data law", ALPHA)
    family.add("share of component 0", stats.binomtest(int((component == 0).sum()), NUM_SAMPLES, WEIGHTS[0]).pvalue)
    axis = (means[0] - means[1]) / (means[0] - means[1]).norm()
    family.add("Anderson-Darling, projection on P",
               stats.anderson_ksamp([(x @ axis).numpy(), (ref @ axis).numpy()],
                                    variant="midrank",
                                    method=stats.PermutationMethod(n_resamples=200, random_state=rng)).pvalue)
    family.add("energy distance, permutation", _energy_permutation_p(x, ref, rng))
    family.check(record_property)
    variance = float((x - means[component]).pow(2).mean())
    record_property("within_component_variance_ratio", variance / STD**2)
    assert STD**2 / VARIANCE_FACTOR <= variance <= STD**2 * VARIANCE_FACTOR, (
        f"within-component variance {variance:.4f}, the law's {STD ** 2:.4f}")


def _energy(a: torch.Tensor, b: torch.Tensor) -> float:
    return float(2 * torch.cdist(a, b).mean() - torch.cdist(a, a).mean() - torch.cdist(b, b).mean())


def _energy_permutation_p(a: torch.Tensor, b: torch.Tensor, rng: np.random.Generator, permutations: int = 200):
    """P(energy distance of a random split >= the observed one), (count + 1) / (permutations + 1)."""
    observed = _energy(a, b)
    pooled = torch.cat([a, b])
    n = a.shape[0]
    count = 0
    for _ in range(permutations):
        order = torch.from_numpy(rng.permutation(pooled.shape[0]))
        count += _energy(pooled[order[:n]], pooled[order[n:]]) >= observed
    return (count + 1) / (permutations + 1)


@pytest.mark.statistical(alpha=ALPHA)
def test_bound_on_held_out_images_is_above_the_true_nll_within_a_gap(trained, seed_base, record_property):
    model, diffusion, folder, _ = trained
    test = data.load_images(str(folder), "test")[:128]
    terms = elbo_terms(model, diffusion, data.to_model_range(test), torch.Generator().manual_seed(seed_base + 1103),
                       variance="beta")
    bound = terms.bits_per_dim().double().numpy()
    k = test.reshape(test.shape[0], -1).numpy().astype(np.int64)
    log_p = np.stack([math.log(w) + discretised_normal_log_prob(k, np.asarray(m)[None, :], s).sum(1)
                      for w, m, s in zip(LAW.weights, LAW.means, LAW.stds, strict=True)], axis=1)  # [n, 2]
    nll = -special.logsumexp(log_p, axis=1) / (D * math.log(2.0))
    gap = bound - nll
    mean, se = float(gap.mean()), float(gap.std(ddof=1) / math.sqrt(gap.shape[0]))
    record_property("bound_gap_bits_per_dim", mean)
    family = Family("bound vs the true -log p", ALPHA)
    family.z_test("bound >= -log p_data on average", mean, 0.0, se, alternative="less")
    family.check(record_property)
    assert mean <= MARGIN_BOUND, f"bound {bound.mean():.4f} is {mean:.4f} bits/dim above -log p {nll.mean():.4f}"
