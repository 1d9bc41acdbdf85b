"""The test-set bound in bits/dim: exact in t on a seeded subset, and Monte Carlo with importance sampling over t.

The test split, sigma_t^2 and clipping are the preset's EvaluationConfig's; the exact bound is reported under every
reverse variance the checkpoint supports (`checkpoint_variances`), from one pass of the network.

1. Exact in t on a subset: `ddpm.core.bound.elbo_terms` sums all T + 1 terms for each of
   `elbo_exact_images` test images (one x_t ~ q(x_t | x_0) per (image, t)): T network calls per image. The
   subset is the first n of a permutation of the test split drawn from phase_generator(seed, "subset_exact")
   (MNIST's test file is ordered, a prefix would be biased). Its standard error is the standard deviation of
   the per-image bounds over sqrt(n).
2. Monte Carlo on the whole test split (or the first `elbo_mc_images` of a second seeded permutation; the
   number used is stated as elbo_num_images): `ddpm.core.bound.elbo_monte_carlo` with
   `elbo_mc_draws_per_image` draws (t, x_t) per image, L_T added exactly. One draw per image is the cheapest
   way to a given standard error: with sigma_b^2 the variance between images and sigma_w^2 the variance of one
   draw about its image's bound, B images with M draws each give variance (sigma_b^2 + sigma_w^2 / M) / B
   for C = M B network calls, i.e. (M sigma_b^2 + sigma_w^2) / C, smallest at M = 1.
   t is drawn by importance sampling: the proposal p(t) is proportional to sqrt(E[L_{t-1}^2]) (the second
   moment of the term t selects, estimated on the exact subset; Nichol & Dhariwal 2021, section 3.3, use the
   same form), mixed with the uniform distribution:

       p(t) = (1 - UNIFORM_MIX) sqrt(m_t) / sum_s sqrt(m_s) + UNIFORM_MIX / T,  m_t = subset mean of L_{t-1}^2.

   Each draw is L_T + L_{t-1} / p(t) (weight 1 / (T p(t)) relative to the uniform estimator T L_{t-1}). For any
   fixed p with p(t) > 0 for every t, E_t[L_{t-1} / p(t)] = sum_t L_{t-1}, so the estimator is unbiased; the
   proposal is fixed (computed from the exact subset, whose draws are finished) before the first Monte Carlo
   draw, and the Monte Carlo draws use a separate generator, so it is a fixed p for them. The variance of one
   draw, sum_t E[L_{t-1}^2] / p(t) - (E[sum_t L_{t-1}])^2, is smallest for p proportional to sqrt(E[L_{t-1}^2]);
   the uniform mixture keeps every p(t) >= UNIFORM_MIX / T (weights at most 1 / UNIFORM_MIX, so a term the
   subset underestimated cannot blow up the variance) and costs at most a factor 1 / (1 - UNIFORM_MIX) in
   variance over the unmixed proposal. metrics.json states the predicted per-draw variance of the uniform and
   the importance estimators from the subset and their ratio (network calls saved per unit of variance).
   With elbo_exact_images = 0 the Monte Carlo estimate falls back to t ~ Uniform{1..T}.
   `elbo_bits_per_dim` (the headline) is the Monte Carlo estimate; its `elbo_bits_per_dim_stderr` is the
   standard deviation of the per-image estimates over sqrt(B), which includes the variation between test images.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import numpy as np
import torch

from ddpm.core.bound import ElboTerms, MonteCarloElbo, elbo_monte_carlo, elbo_terms_by_variance
from ddpm.core.bound_statistics import (
    UNIFORM_MIX,
    TimestepProposal,
    importance_proposal,
    per_term_matrix,
    standard_error,
)
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.variance import ReverseVariance
from ddpm.evaluation.errors import EvaluationError
from ddpm.evaluation.randomness import phase_generator, random_subset
from ddpm.evaluation.run_folder import METRICS_FORMAT_VERSION
from ddpm.images import data
from ddpm.runtime.devices import synchronize
from ddpm.training.checkpoint import Checkpoint
from ddpm.training.config import EvaluationConfig

Tensor = torch.Tensor

# Every tabled reverse variance a checkpoint supports once its Gamma_t is estimated (a learned-variance model adds
# "learned": `checkpoint_variances`); the exact bound is reported under each.
VARIANCES = tuple(choice.value for choice in ReverseVariance.tabled())


def checkpoint_variances(checkpoint: Checkpoint) -> tuple[str, ...]:
    """The reverse variances the checkpoint's model supports: beta, beta_tilde, optimal, and learned if it has one."""
    return VARIANCES + (("learned",) if checkpoint.preset.model.learn_variance else ())


@dataclass(frozen=True)
class ExactBound:
    """The bound summed over all T + 1 terms on the seeded exact subset, under one reverse variance, in bits/dim.

    bits_per_dim and stderr: mean and standard error (std / sqrt(n), NaN below 2 images) of the per-image bounds;
    per_term_bits_per_dim and per_term_stderr [T + 1]: L_0, L_1, .., L_T, mean over the subset and its standard
    error (NaN when the subset is empty); terms: the per-image terms (None for an empty subset).
    """

    variance: str
    bits_per_dim: float
    stderr: float
    num_images: int
    per_term_bits_per_dim: np.ndarray  # [T + 1]
    per_term_stderr: np.ndarray  # [T + 1]
    terms: ElboTerms | None
    seconds: float


@dataclass(frozen=True)
class ElboEvaluation:
    """The test-set bound in bits/dim: exact-in-t on a subset and Monte Carlo (importance over t) on more images."""

    exact: ExactBound
    monte_carlo: MonteCarloElbo
    proposal: TimestepProposal | None
    monte_carlo_seconds: float
    by_variance: Mapping[str, ExactBound] = dataclasses.field(default_factory=dict)
    """The exact bound on the same subset and x_t under each variance evaluated (the headline's is `exact`)."""

    @property
    def exact_bits_per_dim(self) -> float:
        """Mean exact bound over the subset (NaN if empty)."""
        return self.exact.bits_per_dim

    @property
    def exact_stderr(self) -> float:
        """Standard error of the exact bound over the subset (NaN below 2 images)."""
        return self.exact.stderr

    @property
    def exact_num_images(self) -> int:
        """Images in the exact subset."""
        return self.exact.num_images

    @property
    def per_term_bits_per_dim(self) -> np.ndarray:
        """[T + 1]: L_0 .. L_T, mean over the exact subset (NaN if empty)."""
        return self.exact.per_term_bits_per_dim

    @property
    def per_term_stderr(self) -> np.ndarray:
        """[T + 1]: standard errors of per_term_bits_per_dim."""
        return self.exact.per_term_stderr

    @property
    def exact_seconds(self) -> float:
        """Seconds of the exact sum (and the proposal built from it)."""
        return self.exact.seconds


@dataclass(frozen=True)
class BoundSettings:
    """How the test-set bound is computed: the EvaluationConfig fields it reads, and the evaluation's seed.

    exact_images: test images of the exact sum over t (a seeded subset; 0: none, and the Monte Carlo estimate
    draws t uniformly); seed: the evaluation's seed (`ddpm.evaluation.randomness.phase_generator`); mc_images: test
    images of the Monte Carlo estimate (None: the whole split); draws_per_image: its (t, x_t) draws per image;
    variance: the headline's sigma_t^2; clip_x0: clip the predicted x_0 to [-1, 1]; batch_size: (image, t) pairs
    per network call; uniform_mix: the uniform distribution's share of the proposal over t.
    """

    exact_images: int
    seed: int
    mc_images: int | None = None
    draws_per_image: int = 1
    variance: str = "beta"
    clip_x0: bool = False
    batch_size: int = 256
    uniform_mix: float = UNIFORM_MIX

    @classmethod
    def from_config(cls, config: EvaluationConfig, seed: int) -> BoundSettings:
        """The settings of an evaluation with `config` (the preset's, with the caller's overrides) and `seed`."""
        return cls(exact_images=config.elbo_exact_images, seed=seed, mc_images=config.elbo_mc_images,
                   draws_per_image=config.elbo_mc_draws_per_image, variance=config.variance,
                   clip_x0=config.clip_x0, batch_size=config.elbo_batch_size)


def exact_bounds(
    eps_model,
    diffusion: GaussianDiffusion,
    test_images: Tensor,
    settings: BoundSettings,
    variances: Iterable[str],
    *,
    device: torch.device | str = "cpu",
) -> dict[str, ExactBound]:
    """L_T + sum_t L_{t-1} (eq. 5) summed over every t on `settings.exact_images` seeded test images, bits/dim,
    under each of `variances` ({value: ExactBound}; "optimal" needs a diffusion made by
    `GaussianDiffusion.with_optimal_variance`). Reads exact_images, seed, clip_x0 and batch_size of `settings`.

    The subset is drawn from phase_generator(seed, "subset_exact") and every x_t from phase_generator(seed,
    "elbo_exact", device) whatever the variances, and one pass of the network serves them all
    (`ddpm.core.bound.elbo_terms_by_variance`): the same images, the same x_t and the same eps_theta(x_t, t), so
    the differences are the variances' alone (L_0 and L_T agree), and each entry equals its own `exact_bound` call.
    Every entry's `seconds` is the shared pass's.
    """
    exact_images, seed = settings.exact_images, settings.seed
    num = test_images.shape[0]
    if isinstance(exact_images, bool) or not isinstance(exact_images, int) or not 0 <= exact_images <= num:
        raise EvaluationError(
            f"elbo_exact_images must be an integer in 0..{num} (the test split), got {exact_images!r}"
        )
    choices = tuple(dict.fromkeys(ReverseVariance.from_value(variance).value for variance in variances))
    device = torch.device(device)
    diffusion = diffusion.to(device)
    T = diffusion.T
    start = time.perf_counter()
    if exact_images == 0:
        empty = np.full(T + 1, np.nan)
        return {choice: ExactBound(choice, math.nan, math.nan, 0, empty, empty.copy(), None,
                                   time.perf_counter() - start) for choice in choices}
    index = random_subset(num, exact_images, phase_generator(seed, "subset_exact"))
    x0 = data.to_model_range(test_images[index]).to(device)  # [n, C, H, W]
    by_variance = elbo_terms_by_variance(eps_model, diffusion, x0, phase_generator(seed, "elbo_exact", device),
                                         choices, batch_size=settings.batch_size, clip_x0=settings.clip_x0)
    synchronize(device)
    seconds = time.perf_counter() - start
    out = {}
    for choice, terms in by_variance.items():
        per_image = terms.bits_per_dim().cpu()  # [n]
        matrix = per_term_matrix(terms)  # [n, T + 1]
        per_term_se = (matrix.std(dim=0, unbiased=True) / math.sqrt(exact_images)).numpy() if exact_images >= 2 \
            else np.full(T + 1, np.nan)
        out[choice] = ExactBound(choice, float(per_image.mean()), standard_error(per_image), exact_images,
                                 matrix.mean(dim=0).numpy(), per_term_se, terms, seconds)
    return out


def exact_bound(
    eps_model,
    diffusion: GaussianDiffusion,
    test_images: Tensor,
    settings: BoundSettings,
    *,
    device: torch.device | str = "cpu",
) -> ExactBound:
    """`exact_bounds` under `settings.variance` alone: two calls that differ only in the variance see the same images,
    the same x_t and the same eps_theta(x_t, t)."""
    choice = ReverseVariance.from_value(settings.variance).value
    return exact_bounds(eps_model, diffusion, test_images, settings, (choice,), device=device)[choice]


def evaluate_elbo(
    eps_model,
    diffusion: GaussianDiffusion,
    test_images: Tensor,
    settings: BoundSettings,
    *,
    other_variances: Iterable[str] = (),
    device: torch.device | str = "cpu",
) -> ElboEvaluation:
    """The bound -log p_theta(x_0) <= L_T + sum_t L_{t-1} (eq. 5) on uint8 test images [N, C, H, W], bits/dim.

    Exact in t on `settings.exact_images` images (a seeded random subset, `exact_bounds`) under `settings.variance`
    and, from the same pass of the network, under each of `other_variances` (`ElboEvaluation.by_variance`); then
    Monte Carlo with t drawn from the importance proposal built from the headline's subset on `settings.mc_images`
    images (None: all N). Module docstring: the estimator, its unbiasedness and the seeds.
    """
    mc_images, seed, variance = settings.mc_images, settings.seed, settings.variance
    device = torch.device(device)
    num = test_images.shape[0]
    mc_num = num if mc_images is None else mc_images
    if isinstance(mc_num, bool) or not isinstance(mc_num, int) or not 1 <= mc_num <= num:
        raise EvaluationError(
            f"elbo_mc_images must be an integer in 1..{num} (the test split) or None, got {mc_images!r}"
        )
    diffusion = diffusion.to(device)
    headline = ReverseVariance.from_value(variance).value
    by_variance = exact_bounds(eps_model, diffusion, test_images, settings, (headline, *other_variances),
                               device=device)
    exact = by_variance[headline]
    start = time.perf_counter()
    proposal = None if exact.terms is None else importance_proposal(exact.terms, settings.uniform_mix)
    exact = dataclasses.replace(exact, seconds=exact.seconds + time.perf_counter() - start)
    by_variance[headline] = exact

    start = time.perf_counter()
    index = torch.arange(num) if mc_num == num else random_subset(num, mc_num, phase_generator(seed, "subset_mc"))
    x0 = data.to_model_range(test_images[index]).to(device)
    mc = elbo_monte_carlo(
        eps_model, diffusion, x0, phase_generator(seed, "elbo_mc", device), draws_per_image=settings.draws_per_image,
        proposal=None if proposal is None else proposal.probabilities, variance=variance,
        batch_size=settings.batch_size, clip_x0=settings.clip_x0,
    )
    synchronize(device)
    return ElboEvaluation(exact=exact, monte_carlo=mc, proposal=proposal,
                          monte_carlo_seconds=time.perf_counter() - start, by_variance=by_variance)


def _per_term_record(bound: ExactBound) -> dict:
    return {
        "bits_per_dim": bound.per_term_bits_per_dim.tolist(),
        "bits_per_dim_stderr": bound.per_term_stderr.tolist(),
        "total_bits_per_dim": bound.bits_per_dim,
        "total_bits_per_dim_stderr": bound.stderr,
        "num_images": bound.num_images,
    }


def elbo_terms_record(evaluation: ElboEvaluation, variance: str, clip_x0: bool,
                      by_variance: Mapping[str, ExactBound] | None = None) -> dict:
    """The content of elbo_terms.json: per-term bits/dim L_0 .. L_T of the exact subset and the proposal.

    The top-level terms are those of `variance` (the headline's); `by_variance` adds the same record for every
    variance evaluated on the same subset (key "by_variance": {variance: {bits_per_dim, bits_per_dim_stderr,
    total_bits_per_dim, total_bits_per_dim_stderr, num_images}}).
    """
    proposal = evaluation.proposal
    T = evaluation.per_term_bits_per_dim.shape[0] - 1
    record = {
        "format_version": METRICS_FORMAT_VERSION,
        "T": T,
        "num_images": evaluation.exact_num_images,
        "variance": variance,
        "clip_x0": clip_x0,
        "term_index": list(range(T + 1)),
        "term_index_meaning": "k: L_k; L_0 = -log p(x_0|x_1), L_k = KL(q(x_k|x_{k+1},x_0) || p(x_k|x_{k+1})) for "
        "1 <= k <= T-1, L_T = KL(q(x_T|x_0) || N(0,I)); all in bits/dim, mean over the exact subset",
        "bits_per_dim": evaluation.per_term_bits_per_dim.tolist(),
        "bits_per_dim_stderr": evaluation.per_term_stderr.tolist(),
        "total_bits_per_dim": evaluation.exact_bits_per_dim,
        "proposal_t": list(range(1, T + 1)),
        "proposal": None if proposal is None else proposal.probabilities.tolist(),
        "proposal_second_moments": None if proposal is None else proposal.second_moments.tolist(),
        "proposal_uniform_mix": None if proposal is None else proposal.uniform_mix,
    }
    if by_variance is not None:
        record["by_variance"] = {name: _per_term_record(bound) for name, bound in by_variance.items()}
    return record


__all__ = [
    "VARIANCES",
    "BoundSettings",
    "ElboEvaluation",
    "ExactBound",
    "checkpoint_variances",
    "elbo_terms_record",
    "evaluate_elbo",
    "exact_bound",
    "exact_bounds",
]
