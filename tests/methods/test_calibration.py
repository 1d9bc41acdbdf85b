"""Calibration of every error bar the project prints: over R independent repeats, the spread of an estimate
matches the standard error it reports (an error bar that is not tested can be off by any factor unnoticed).

Each family compares, with `stat_checks.Family.spread_test` (a t-test of Var(estimate) = E[stderr^2] over the
repeats, valid for non-Gaussian estimates), the reported standard errors of:

- the Monte Carlo bound (`elbo_monte_carlo`): one image with many draws (stderr = the draws' spread over
  sqrt(draws), exact for a fixed image), and many images with one draw each, the images drawn afresh from the data
  law at every repeat (stderr = the per-image spread over sqrt(images), the error for i.i.d. test images), each
  with t uniform and t from the importance proposal (`bound_statistics.importance_proposal`);
- the exact-in-t bound on a seeded subset (`evaluate.exact_bound`): its total and its L_0 term, the subset drawn
  from a 4096-image pool by the seed (16 images: the finite-population factor sqrt(1 - 16/4096) is 0.998);
- Gamma_t of the optimal variance (`optimal_variance.estimate_gamma`) at three t;
- KID (`fid.kid_standard_error` from torch-fidelity's std over subsets), on features of two different Gaussian
  laws drawn afresh at every repeat, at s = N / 2 (the small preset) and s = N / 5.

An error bar off by a factor 1.5 or more fails each family with probability > 0.99 (variance ratio >= 2.25 over
R >= 120 repeats); a correct one fails with probability <= ALPHA (Holm within the family).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from ddpm.core.bound import elbo_monte_carlo, elbo_terms
from ddpm.core.bound_statistics import importance_proposal
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.pixels import to_model_range
from ddpm.core.schedules import make_betas
from ddpm.evaluation.bounds import BoundSettings, exact_bound
from ddpm.evaluation.optimal_variance import estimate_gamma
from ddpm.images.fid import kid_standard_error
from testkit.doubles import TinyEps
from testkit.stat_checks import Family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALPHA = 1e-3  # family-wise per test, Holm
T = 40
SHAPE = (1, 2, 2)
REPEATS = 150


def _setup(seed: int):
    diffusion = GaussianDiffusion(make_betas("linear", T))
    gen = torch.Generator().manual_seed(seed)
    model = TinyEps(T, int(np.prod(SHAPE)), gen)
    return diffusion, gen, model


def _images(n: int, gen: torch.Generator) -> torch.Tensor:
    """n images with i.i.d. uniform 8-bit pixels, as uint8 [n, 1, 2, 2]."""
    return torch.randint(0, 256, (n, *SHAPE), generator=gen, dtype=torch.uint8)


@pytest.mark.statistical(alpha=ALPHA)
def test_monte_carlo_bound_stderr_matches_its_spread(seed_base, record_property):
    diffusion, gen, model = _setup(seed_base + 901)
    pilot = elbo_terms(model, diffusion, to_model_range(_images(64, gen)), gen)
    proposal = importance_proposal(pilot).probabilities
    image = to_model_range(_images(1, gen))
    family = Family("Monte Carlo bound: reported stderr vs spread over repeats", ALPHA)
    for name, p in (("uniform", None), ("importance", proposal)):
        one = [elbo_monte_carlo(model, diffusion, image, gen, draws_per_image=64, proposal=p) for _ in range(REPEATS)]
        family.spread_test(f"one image, 64 draws, t {name}", [r.bits_per_dim for r in one], [r.stderr for r in one])
        many = [elbo_monte_carlo(model, diffusion, to_model_range(_images(64, gen)), gen, proposal=p)
                for _ in range(REPEATS)]
        assert all(r.num_images == 64 and r.num_draws == 64 for r in many)
        family.spread_test(f"64 fresh images, one draw each, t {name}", [r.bits_per_dim for r in many],
                           [r.stderr for r in many])
    family.check(record_property)


@pytest.mark.statistical(alpha=ALPHA)
def test_exact_subset_stderr_matches_its_spread(seed_base, record_property):
    diffusion, gen, model = _setup(seed_base + 902)
    pool = _images(4096, gen)
    runs = [exact_bound(model, diffusion, pool, BoundSettings(exact_images=16, seed=seed_base * 1000 + r))
            for r in range(REPEATS)]
    family = Family("exact-in-t bound on a seeded subset: reported stderr vs spread", ALPHA)
    family.spread_test("total", [r.bits_per_dim for r in runs], [r.stderr for r in runs])
    family.spread_test("L_0", [r.per_term_bits_per_dim[0] for r in runs], [r.per_term_stderr[0] for r in runs])
    family.spread_test(f"L_{T // 2}", [r.per_term_bits_per_dim[T // 2] for r in runs],
                       [r.per_term_stderr[T // 2] for r in runs])
    family.check(record_property)


@pytest.mark.statistical(alpha=ALPHA)
def test_gamma_stderr_matches_its_spread(seed_base, record_property):
    diffusion, gen, model = _setup(seed_base + 903)
    x0 = to_model_range(_images(4096, gen))
    runs = [estimate_gamma(model, diffusion, x0, gen, images_per_t=32, progress=False) for _ in range(REPEATS)]
    family = Family("Gamma_t: reported stderr vs spread", ALPHA)
    for t in (1, T // 2, T):
        family.spread_test(f"t = {t}", [float(r.gamma[t - 1]) for r in runs], [float(r.stderr[t - 1]) for r in runs])
    family.check(record_property)


@pytest.mark.statistical(alpha=ALPHA)
def test_kid_stderr_matches_the_spread_of_kid_over_independent_samples(seed_base, record_property):
    from torch_fidelity.metric_kid import KEY_METRIC_KID_MEAN, KEY_METRIC_KID_STD, kid_features_to_metric

    rng = np.random.default_rng(seed_base + 904)
    subsets = 100
    family = Family("KID: kid_standard_error vs the spread of KID over independent feature sets", ALPHA)
    for n, s in ((200, 100), (400, 80)):
        means, errors = [], []
        for _ in range(REPEATS):
            real = torch.from_numpy(rng.standard_normal((n, 16)))
            fake = torch.from_numpy(0.8 * rng.standard_normal((n, 16)) + 0.5)  # a different law: non-degenerate
            m = kid_features_to_metric(real, fake, kid_subsets=subsets, kid_subset_size=s, kid_degree=3,
                                       kid_gamma=None, kid_coef0=1, rng_seed=int(rng.integers(2**31)),
                                       verbose=False)
            means.append(m[KEY_METRIC_KID_MEAN])
            errors.append(kid_standard_error(m[KEY_METRIC_KID_STD], s, n, subsets))
        family.spread_test(f"N = {n}, s = {s}", means, errors)
    family.check(record_property)


def test_kid_standard_error_formula():
    """SE^2 = std^2 (s / (N - s) + 1 / subsets); NaN when every subset is the whole set."""
    assert kid_standard_error(0.02, 500, 1000, 100) == pytest.approx(0.02 * np.sqrt(1 + 0.01), rel=1e-15)
    assert kid_standard_error(0.03, 1000, 10000, 100) == pytest.approx(0.03 * np.sqrt(1 / 9 + 0.01), rel=1e-15)
    assert np.isnan(kid_standard_error(0.02, 1000, 1000, 100))
