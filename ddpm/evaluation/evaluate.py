"""Evaluate a trained checkpoint on its dataset's test split: the bound in bits/dim, Algorithm-2 samples, FID/KID.

`evaluate_checkpoint(checkpoint, out_dir)` writes into out_dir (all files atomically: temp file + rename):

- optimal_variance.json (`ddpm.evaluation.optimal_variance.FILE_NAME`): Gamma_t of the checkpoint's EMA model, its standard
  errors, images per t, seed and checkpoint step (`save_gamma`): what the "optimal" variance of this run's bound
  and samples is built from, and what `sample --variance optimal` reads next to the checkpoint (so it finds it
  when out_dir is the run folder).
- elbo_terms.json: the per-term bound of Ho et al. eq. 5 on the exact subset (bits/dim of L_0 .. L_T) under the
  headline variance, the same under every variance ("by_variance"), and the importance proposal over t, for the
  report's plots.
- samples_uint8.npz (key "images", uint8 [N, C, H, W]): the N Algorithm-2 samples, kept for FID re-use.
- samples.png (a grid of the first samples) and trajectory.png (rows: samples; columns: x_t at ~10 t from T to 0).
- metrics.json: every number (keys below), written last. A run directory whose metrics.json exists is a
  finished evaluation.

metrics.json keys (issue 4's list, then details): dataset, preset, device, seed (of the evaluation), train_steps,
train_images_per_second (images seen / training seconds, from the checkpoint), sample_images_per_second (N /
Algorithm-2 seconds), elbo_bits_per_dim and elbo_bits_per_dim_stderr (the Monte Carlo estimate), elbo_num_images
(its images), fid, kid_mean (null with --skip-fid), fid_num_samples (N), wall_seconds (training seconds from the
checkpoint + this evaluation's seconds); then elbo_exact_* (the exact subset), elbo_mc_* (draws, proposal and its
predicted variance reduction), elbo_variance (the headline's sigma_t^2: the Monte Carlo bound, elbo_exact_* and
the samples behind FID all use it), elbo_exact_by_variance and optimal_variance (below), kid_std (spread over subsets), kid_stderr (the standard
error of kid_mean, `ddpm.images.fid.kid_standard_error`), kid_subsets,
kid_subset_size, fid_reference (the reference set and its cache name), fid_real_vs_real, kid_real_vs_real_mean and
kid_real_vs_real_std (the floor: N real training images against the same test reference, `ddpm.images.fid.real_vs_real`,
cached) with real_vs_real {split, num_images, subset_seed, cached}, timings {train, load, optimal_variance,
elbo_exact (the exact subset under every variance, one pass of the network), elbo_monte_carlo, sampling,
write_images, fid_kid (floor included)} in seconds (metrics written before that pass was shared also have
elbo_exact_other_variances), the command,
package versions (now and at training), the preset and the evaluation settings used. Values that are undefined (a
standard error of one image) are null.

- elbo_exact_by_variance: {"beta" | "beta_tilde" | "optimal" | "learned": {"bits_per_dim", "stderr", "images"}},
  the exact bound (item 1 below) on the same subset with the same x_t under each reverse variance the checkpoint
  supports ("learned" for a learned-variance model: `checkpoint_variances`); the headline variance's entry is
  elbo_exact_bits_per_dim and its stderr themselves (not recomputed). They share the network's
  outputs, so their differences are the variances' alone (not noise between subsets).
- optimal_variance: {"file" (name in out_dir), "reused" (an existing file of this checkpoint step, T and images per
  t was used), "previous_file" (a stale file set aside, or null), "split" ("train"), "train_split_images" (null
  when reused), "images_per_t", "seed" and "step" (the estimate's: a reused file keeps the seed it was drawn
  with), "gamma_stderr_max" (the largest standard error of Gamma_t over t), "gamma_clipped_timesteps" (how many
  Gamma_t the bounds of `GaussianDiffusion.with_optimal_variance` changed), "seconds"}.

The bound (test split, sigma_t^2 and clipping as in the preset's EvaluationConfig)
--------------------------------------------------------------------------------
1. Exact in t on a subset: `ddpm.core.bound.elbo_terms` sums all T + 1 terms for each of
   `elbo_exact_images` test images (one x_t ~ q(x_t | x_0) per (image, t)): T network calls per image. The
   subset is the first n of a permutation of the test split drawn from torch.Generator().manual_seed(seed)
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

The "optimal" variance (Gamma_t)
--------------------------------
sigma*_t^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t)) (1 - Gamma_t) with Gamma_t = E||eps_theta(x_t,
t)||^2 / d (Bao et al. 2022; `ddpm.core.diffusion.ReverseVariance`), Gamma_t estimated on the TRAINING split:
`estimate_gamma` with the EMA model, x_0 = to_model_range(load_images(dataset, "train")) (drawn with replacement),
generator = phase_generator(seed, "gamma"), gamma_images_per_t images per t (EvaluationConfig) in batches of
elbo_batch_size: T * gamma_images_per_t network calls. It is stored as out_dir/optimal_variance.json with the seed
and checkpoint step; an existing file there with the checkpoint's step and T and the requested images per t is
reused instead (a different one is renamed to optimal_variance.previous-<UTC mtime>.json first). The bounds of
`with_optimal_variance` clip each Gamma_t before use. Every variance is then available to the bound and the
sampler; the headline uses `variance` (EvaluationConfig, `evaluate --variance`).

Samples, FID and KID
--------------------
N = fid_num_samples samples by Algorithm 2 at the trained T with the EMA weights and the headline variance, in
batches of sample_batch_size (one generator, batches drawn in order), with sample images/s = N / sampling seconds;
with EvaluationConfig.compile_sampler the network runs through torch.compile (compiled once; its compile time is
part of the sampling seconds; metrics.json "sampling_compiled").
FID and KID (`ddpm.images.fid.fid_kid`: torch-fidelity's network and metrics with the TF FID Inception, one feature
extractor for the samples, the reference and the floor) against the reference set: N test images, a seeded subset
when N is smaller than the test split (ReferenceSet(dataset, "test", N, seed=0)), its features cached keyed by
dataset, split, N, subset seed, data fingerprint and weights. FID is compared only
at equal N, so N larger than the test split is an error. KID is the mean (and standard deviation) of the
unbiased MMD^2 over KID_SUBSETS random subsets of min(1000, N // 2) images a side (subsets of all N images would
all be the same set, with a standard deviation of 0). Inception Score is never computed.

Randomness
----------
Every phase has its own CPU torch.Generator seeded from (seed, phase) through numpy's SeedSequence, so a phase
can be rerun alone and CUDA and CPU runs draw the same numbers (drawn on the CPU, then moved).

An existing metrics.json
------------------------
A finished metrics.json is never overwritten or lost: before the first expensive step, an existing
out_dir/metrics.json is renamed to metrics.previous-<UTC time of its last change>.json (a counter is appended
if that name is taken). The other files are then regenerated, and the new metrics.json appears only when
everything it describes has been written, so a directory never pairs a metrics.json with another run's images.
"""

from __future__ import annotations

import dataclasses
import io
import math
import os
import time
from collections.abc import Callable, Iterable, Mapping
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm.images import data
from ddpm.training.checkpoint import Checkpoint, build_eps_model, diffusion_from, load_checkpoint
from ddpm.training.config import EvaluationConfig
from ddpm.core.diffusion import GaussianDiffusion, ReverseVariance
from ddpm.evaluation.generate import save_npz
from ddpm.core.bound_statistics import (
    UNIFORM_MIX,
    TimestepProposal,
    importance_proposal,
    per_term_matrix,
    standard_error,
)
from ddpm.core.bound import ElboTerms, MonteCarloElbo, elbo_monte_carlo, elbo_terms_by_variance
from ddpm.evaluation.optimal_variance import FILE_NAME as OPTIMAL_VARIANCE_FILE
from ddpm.evaluation.optimal_variance import GammaEstimate, estimate_gamma, load_gamma, save_gamma
from ddpm.core.samplers import ancestral_sample
from ddpm.runtime.devices import resolve_device, synchronize
from ddpm.runtime.files import (
    atomic_write_bytes,
    finite_or_none,
    keep_previous_file,
    move_folder_aside,
    write_json_atomic,
)
from ddpm.runtime.provenance import command_line, device_description, versions

Tensor = torch.Tensor

METRICS_FILE = "metrics.json"
ELBO_TERMS_FILE = "elbo_terms.json"
SAMPLES_NPZ = "samples_uint8.npz"
SAMPLES_PNG = "samples.png"
TRAJECTORY_PNG = "trajectory.png"
RUN_FILES_COPIED = ("run.json", "train_log.jsonl")  # copied next to the metrics when out_dir is elsewhere
METRICS_FORMAT_VERSION = 1

GRID_MAX_IMAGES = 100  # samples.png shows the first min(N, 100) samples, 10 per row
TRAJECTORY_ROWS = 8  # trajectory.png shows the first 8 samples of the first batch
MIN_DISPLAY_PIXELS = 56  # images are upscaled (nearest) by an integer factor to at least this height

KID_SUBSETS = 100  # KID: mean and standard deviation of the unbiased MMD^2 over this many random subsets ...
KID_SUBSET_MAX = 1000  # ... of min(1000, N // 2) images a side (N // 2, not N: subsets of all N would all be equal)

# Phases and their generator streams (SeedSequence(seed, spawn_key=(index,))); new phases are appended, so the
# streams of the older ones never change.
PHASES = ("elbo_exact", "elbo_mc", "sampling", "subset_exact", "subset_mc", "gamma")

# Every tabled reverse variance a checkpoint supports once its Gamma_t is estimated (a learned-variance model adds
# "learned": `checkpoint_variances`); the exact bound is reported under each.
VARIANCES = tuple(choice.value for choice in ReverseVariance.tabled())


def checkpoint_variances(checkpoint: Checkpoint) -> tuple[str, ...]:
    """The reverse variances the checkpoint's model supports: beta, beta_tilde, optimal, and learned if it has one."""
    return VARIANCES + (("learned",) if checkpoint.preset.model.learn_variance else ())


class EvaluationError(ValueError):
    """A problem with what evaluation was asked to do (sizes, paths); the message is one line."""


# ------------------------------------------------------------------------------------------------ files
def keep_previous_metrics(out_dir: str | os.PathLike) -> Path | None:
    """Rename an existing out_dir/metrics.json to metrics.previous-<UTC mtime>[-k].json; its new path or None."""
    return keep_previous_file(Path(out_dir) / METRICS_FILE)


def move_run_aside(run_dir: str | os.PathLike) -> Path | None:
    """Rename a non-empty run folder to <name>.previous-<UTC now>[-k] next to it; its new path (None: nothing to move).

    Lets a fixed output folder (`nox -s train_small` uses reports/train_small) start a new run without deleting
    the last one: `train` refuses a non-empty folder, and nothing is ever overwritten.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise EvaluationError(f"{str(path)!r} is not a folder")
    return move_folder_aside(path)


def png_bytes(image) -> bytes:
    """A PIL image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


# ------------------------------------------------------------------------------------------- randomness
def kid_subset_size(num: int) -> int:
    """Images per KID subset for N samples vs N reference images: min(1000, N // 2), at least 2."""
    return max(2, min(KID_SUBSET_MAX, num // 2))


def phase_generator(seed: int, phase: str) -> torch.Generator:
    """A CPU torch.Generator for one evaluation phase, seeded from SeedSequence(seed, spawn_key=(phase index,))."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; options: {', '.join(PHASES)}")
    state = np.random.SeedSequence(int(seed), spawn_key=(PHASES.index(phase),)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) | (int(state[1]) << 32)) & ((1 << 63) - 1))


def random_subset(num_available: int, num: int, generator: torch.Generator) -> Tensor:
    """The first `num` of torch.randperm(num_available), sorted: int64 [num] indices of a uniform random subset."""
    if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num <= num_available:
        raise EvaluationError(f"subset size must be an integer in 0..{num_available}, got {num!r}")
    return torch.randperm(num_available, generator=generator)[:num].sort().values


# --------------------------------------------------------------------------------------------- the bound
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


def exact_bounds(
    eps_model,
    diffusion: GaussianDiffusion,
    test_images: Tensor,
    *,
    exact_images: int,
    seed: int,
    variances: Iterable[str],
    clip_x0: bool = False,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> dict[str, ExactBound]:
    """L_T + sum_t L_{t-1} (eq. 5) summed over every t on `exact_images` seeded test images, bits/dim, under each of
    `variances` ({value: ExactBound}; "optimal" needs a diffusion made by `GaussianDiffusion.with_optimal_variance`).

    The subset is drawn from phase_generator(seed, "subset_exact") and every x_t from phase_generator(seed,
    "elbo_exact") whatever the variances, and one pass of the network serves them all
    (`ddpm.core.bound.elbo_terms_by_variance`): the same images, the same x_t and the same eps_theta(x_t, t), so
    the differences are the variances' alone (L_0 and L_T agree), and each entry equals its own `exact_bound` call.
    Every entry's `seconds` is the shared pass's.
    """
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
    by_variance = elbo_terms_by_variance(eps_model, diffusion, x0, phase_generator(seed, "elbo_exact"), choices,
                                         batch_size=batch_size, clip_x0=clip_x0)
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
    *,
    exact_images: int,
    seed: int,
    variance: str = "beta",
    clip_x0: bool = False,
    batch_size: int = 256,
    device: torch.device | str = "cpu",
) -> ExactBound:
    """`exact_bounds` under one reverse variance: two calls that differ only in `variance` see the same images, the
    same x_t and the same eps_theta(x_t, t)."""
    choice = ReverseVariance.from_value(variance).value
    return exact_bounds(eps_model, diffusion, test_images, exact_images=exact_images, seed=seed, variances=(choice,),
                        clip_x0=clip_x0, batch_size=batch_size, device=device)[choice]


def evaluate_elbo(
    eps_model,
    diffusion: GaussianDiffusion,
    test_images: Tensor,
    *,
    exact_images: int,
    mc_images: int | None,
    draws_per_image: int,
    seed: int,
    variance: str = "beta",
    clip_x0: bool = False,
    batch_size: int = 256,
    uniform_mix: float = UNIFORM_MIX,
    device: torch.device | str = "cpu",
    other_variances: Iterable[str] = (),
) -> ElboEvaluation:
    """The bound -log p_theta(x_0) <= L_T + sum_t L_{t-1} (eq. 5) on uint8 test images [N, C, H, W], bits/dim.

    Exact in t on `exact_images` images (a seeded random subset, `exact_bounds`) under `variance` and, from the same
    pass of the network, under each of `other_variances` (`ElboEvaluation.by_variance`); then Monte Carlo with t
    drawn from the importance proposal built from the headline's subset on `mc_images` images (None: all N).
    Module docstring: the estimator, its unbiasedness and the seeds.
    """
    device = torch.device(device)
    num = test_images.shape[0]
    mc_num = num if mc_images is None else mc_images
    if isinstance(mc_num, bool) or not isinstance(mc_num, int) or not 1 <= mc_num <= num:
        raise EvaluationError(
            f"elbo_mc_images must be an integer in 1..{num} (the test split) or None, got {mc_images!r}"
        )
    diffusion = diffusion.to(device)
    headline = ReverseVariance.from_value(variance).value
    by_variance = exact_bounds(eps_model, diffusion, test_images, exact_images=exact_images, seed=seed,
                               variances=(headline, *other_variances), clip_x0=clip_x0, batch_size=batch_size,
                               device=device)
    exact = by_variance[headline]
    start = time.perf_counter()
    proposal = None if exact.terms is None else importance_proposal(exact.terms, uniform_mix)
    exact = dataclasses.replace(exact, seconds=exact.seconds + time.perf_counter() - start)
    by_variance[headline] = exact

    start = time.perf_counter()
    index = torch.arange(num) if mc_num == num else random_subset(num, mc_num, phase_generator(seed, "subset_mc"))
    x0 = data.to_model_range(test_images[index]).to(device)
    mc = elbo_monte_carlo(
        eps_model, diffusion, x0, phase_generator(seed, "elbo_mc"), draws_per_image=draws_per_image,
        proposal=None if proposal is None else proposal.probabilities, variance=variance,
        batch_size=batch_size, clip_x0=clip_x0,
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


# ------------------------------------------------------------------------------------- Gamma_t (optimal)
@dataclass(frozen=True)
class OptimalVarianceRun:
    """Gamma_t of the evaluated checkpoint (`optimal_variance_phase`): the estimate and where it came from.

    path: the optimal_variance.json read or written; reused: True when an existing file was used; previous: where
    a stale file was set aside (None: there was none); train_images: the training images drawn from (None when
    reused); seconds: time of the phase (estimate and file, or reading the file).
    """

    estimate: GammaEstimate
    path: Path
    reused: bool
    previous: Path | None
    train_images: int | None
    seconds: float


def reusable_gamma(path: str | os.PathLike, step: int, T: int, images_per_t: int) -> GammaEstimate | None:
    """The estimate in `path` when it is this checkpoint's (same step and T) at `images_per_t`; None otherwise.

    None also for a missing file or one that is not an estimate (it is then set aside and replaced).
    """
    path = Path(path)
    if not path.is_file():
        return None
    try:
        estimate = load_gamma(path)
    except ValueError:
        return None
    if estimate.step != step or estimate.T != T or estimate.images_per_t != images_per_t:
        return None
    return estimate


def optimal_variance_phase(
    eps_model,
    diffusion: GaussianDiffusion,
    path: str | os.PathLike,
    *,
    reuse: GammaEstimate | None,
    train_images: Tensor | None,
    step: int,
    seed: int,
    images_per_t: int,
    batch_size: int,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> OptimalVarianceRun:
    """Gamma_t = E||eps_theta(x_t, t)||^2 / d for the "optimal" variance: `reuse` when given, else estimated.

    The estimate is `estimate_gamma(eps_model, diffusion, to_model_range(train_images), phase_generator(seed,
    "gamma"), images_per_t, batch_size)` (training images, drawn with replacement), stored with `seed` and `step`
    in `path` (an older file there is first renamed to <name>.previous-<UTC mtime>.json).
    """
    path = Path(path)
    start = time.perf_counter()
    if reuse is not None:
        return OptimalVarianceRun(reuse, path, True, None, None, time.perf_counter() - start)
    if train_images is None:
        raise EvaluationError("Gamma_t must be estimated but no training images were given")
    device = torch.device(device)
    x0 = data.to_model_range(train_images).to(device)  # [M, C, H, W]
    estimate = estimate_gamma(eps_model, diffusion.to(device), x0, phase_generator(seed, "gamma"),
                              images_per_t=images_per_t, batch_size=batch_size, progress=progress)
    estimate = dataclasses.replace(estimate, seed=int(seed), step=int(step))
    previous = keep_previous_file(path)
    save_gamma(path, estimate)
    synchronize(device)
    return OptimalVarianceRun(estimate, path, False, previous, int(train_images.shape[0]),
                              time.perf_counter() - start)


# ------------------------------------------------------------------------------------------------ samples
@dataclass(frozen=True)
class SampleRun:
    """N Algorithm-2 samples as uint8 [N, C, H, W], snapshots {t: uint8 [k, C, H, W]} of the first batch, timing."""

    images: Tensor
    trajectory: Mapping[int, Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """N / sampling seconds."""
        return self.images.shape[0] / self.seconds if self.seconds > 0 else math.nan


def draw_samples(
    eps_model,
    diffusion: GaussianDiffusion,
    num: int,
    image_shape: tuple[int, int, int],
    *,
    batch_size: int,
    generator: torch.Generator,
    variance: str = "beta",
    clip_x0: bool = False,
    trajectory_steps: Iterable[int] | None = None,
    trajectory_rows: int = TRAJECTORY_ROWS,
    device: torch.device | str = "cpu",
    progress: bool = True,
    compile: bool = False,
) -> SampleRun:
    """`num` samples of p_theta(x_0) by Algorithm 2 in batches of `batch_size`, as uint8 (clamped to [-1, 1]).

    `compile=True` wraps the network in torch.compile(dynamic=False) once for all batches (a smaller last batch
    compiles its own shape); the compile time counts in `seconds`."""
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise EvaluationError(f"number of samples must be an integer >= 1, got {num!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EvaluationError(f"sample batch size must be an integer >= 1, got {batch_size!r}")
    device = torch.device(device)
    diffusion = diffusion.to(device)
    if compile:
        eps_model = torch.compile(eps_model, dynamic=False)
    out = torch.empty((num, *image_shape), dtype=torch.uint8)  # [N, C, H, W]
    trajectory: dict[int, Tensor] = {}
    start = time.perf_counter()
    bar = tqdm(total=num, desc="samples", unit="img", disable=not progress)
    done = 0
    while done < num:
        b = min(batch_size, num - done)
        result = ancestral_sample(
            eps_model, diffusion, (b, *image_shape), generator, variance=variance, clip_x0=clip_x0,
            progress=progress, trajectory_steps=trajectory_steps if done == 0 else None, device=device,
        )
        out[done : done + b] = data.to_uint8(result.x0).cpu()
        if done == 0:
            trajectory = {t: data.to_uint8(x[:trajectory_rows]).cpu() for t, x in result.trajectory.items()}
        done += b
        bar.update(b)
        bar.set_postfix(img_per_s=f"{done / max(time.perf_counter() - start, 1e-9):.2f}")
    bar.close()
    synchronize(device)
    return SampleRun(images=out, trajectory=trajectory, seconds=time.perf_counter() - start)


def _display_scale(height: int) -> int:
    return max(1, math.ceil(MIN_DISPLAY_PIXELS / height))


def image_grid(images: Tensor, columns: int = 10, padding: int = 2, scale: int | None = None):
    """uint8 [N, C, H, W] (C = 1 or 3) as one PIL image: `columns` per row, padded, upscaled by `scale` (nearest)."""
    from PIL import Image

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        raise ValueError(
            f"image_grid needs uint8 [N, 1 or 3, H, W] with N >= 1, got {images.dtype} {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    scale = _display_scale(h) if scale is None else scale
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, dtype=np.uint8)
    pixels = images.permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y : y + h, x : x + w] = pixels[i]
    canvas = canvas[:, :, 0] if c == 1 else canvas
    image = Image.fromarray(canvas, mode="L" if c == 1 else "RGB")
    return image.resize((image.width * scale, image.height * scale), Image.NEAREST)


def trajectory_strip(trajectory: Mapping[int, Tensor], scale: int | None = None):
    """Rows = samples, columns = x_t for t descending (x_T left, x_0 right), as one PIL image."""
    if not trajectory:
        raise ValueError("trajectory_strip needs at least one snapshot")
    steps = sorted(trajectory, reverse=True)
    stacked = torch.stack([trajectory[t] for t in steps], dim=1)  # [k, S, C, H, W]
    k, s = stacked.shape[:2]
    return image_grid(stacked.reshape(k * s, *stacked.shape[2:]), columns=s, scale=scale)


# ------------------------------------------------------------------------------------------ the whole run
@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_checkpoint` wrote: the metrics record, the folder, and where an older metrics.json went."""

    metrics: Mapping[str, object]
    out_dir: Path
    previous_metrics: Path | None


@dataclass(frozen=True)
class _Inputs:
    """What the validation phase established; nothing in out_dir has changed yet."""

    checkpoint: Checkpoint
    config: EvaluationConfig
    seed: int
    device: torch.device
    test_images: Tensor  # [N, C, H, W] uint8
    info: data.DatasetInfo
    eps_model: torch.nn.Module
    diffusion: GaussianDiffusion  # the fixed variances only; Gamma_t adds "optimal"
    gamma_path: Path
    reusable_gamma: GammaEstimate | None
    train_images: Tensor | None  # [M, C, H, W] uint8, loaded only when Gamma_t must be estimated

    @property
    def image_shape(self) -> tuple[int, int, int]:
        return tuple(int(v) for v in self.test_images.shape[1:])


def _copy_run_files(checkpoint_path: Path, out_dir: Path) -> list[str]:
    """Copy run.json / train_log.jsonl from the checkpoint's folder into out_dir when that is another folder."""
    source_dir = checkpoint_path.resolve().parent
    if source_dir == out_dir.resolve():
        return []
    copied = []
    for name in RUN_FILES_COPIED:
        source = source_dir / name
        if source.is_file():
            atomic_write_bytes(out_dir / name, source.read_bytes())
            copied.append(name)
    return copied


def _evaluation_config(preset, *, fid_samples=None, elbo_exact_images=None, elbo_mc_images=None,
                       sample_batch_size=None, variance=None, gamma_images_per_t=None) -> EvaluationConfig:
    """The preset's EvaluationConfig with the given overrides (validated); elbo_mc_images = 0: the whole split."""
    changes = {name: value for name, value in (
        ("fid_num_samples", fid_samples), ("elbo_exact_images", elbo_exact_images),
        ("sample_batch_size", sample_batch_size), ("variance", variance), ("gamma_images_per_t", gamma_images_per_t),
    ) if value is not None}
    if elbo_mc_images is not None:
        changes["elbo_mc_images"] = None if elbo_mc_images == 0 else elbo_mc_images
    return preset.evaluation.replace(**changes) if changes else preset.evaluation


def _check_sizes(checkpoint: Checkpoint, config: EvaluationConfig, test_images: Tensor, skip_fid: bool) -> None:
    """EvaluationError unless the test split fits the checkpoint and holds the images the config asks for."""
    image_shape = tuple(int(v) for v in test_images.shape[1:])
    expected = (int(checkpoint.channels), int(checkpoint.height), int(checkpoint.width))
    if image_shape != expected:
        raise EvaluationError(
            f"test images of {checkpoint.dataset!r} have shape {image_shape}, the checkpoint was trained on {expected}"
        )
    num_test = test_images.shape[0]
    if config.elbo_exact_images > num_test or (config.elbo_mc_images or 0) > num_test:
        raise EvaluationError(
            f"the test split of {checkpoint.dataset!r} has {num_test} images; asked for "
            f"{config.elbo_exact_images} exact and {config.elbo_mc_images} Monte Carlo bound images"
        )
    if not skip_fid and config.fid_num_samples > num_test:
        raise EvaluationError(
            f"FID compares N samples with N test images: N = {config.fid_num_samples} exceeds the "
            f"{num_test} test images of {checkpoint.dataset!r} (lower --fid-samples or pass --skip-fid)"
        )


def _check_fid_weights(cache_dir) -> None:
    """Before hours of sampling: the FID weights must be there (mapped once, then cached)."""
    from ddpm.images.fid import FidWeightsError, inception_weights_path

    try:
        inception_weights_path(cache_dir)
    except FidWeightsError as error:
        raise EvaluationError(f"{error} (or pass --skip-fid)") from None


def _load_inputs(checkpoint_path: Path, out_dir: Path, overrides: Mapping[str, object], seed: int | None,
                 device, skip_fid: bool, cache_dir) -> _Inputs:
    """Phase 1 (validation): checkpoint, settings, data, network; raises before anything in out_dir changes."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = _evaluation_config(checkpoint.preset, **overrides)
    seed = int(checkpoint.seed if seed is None else seed)
    if isinstance(seed, bool) or seed < 0:
        raise EvaluationError(f"seed must be an integer >= 0, got {seed!r}")
    torch_device = resolve_device(device)
    test_images = data.load_images(checkpoint.dataset, "test")  # [N, C, H, W] uint8
    info = data.dataset_info(checkpoint.dataset)
    _check_sizes(checkpoint, config, test_images, skip_fid)
    if config.variance not in checkpoint_variances(checkpoint):
        raise EvaluationError(f"variance {config.variance!r} needs a model that learns its variance; this checkpoint "
                              f"supports {', '.join(checkpoint_variances(checkpoint))}")
    if not skip_fid:
        _check_fid_weights(cache_dir)
    gamma_path = out_dir / OPTIMAL_VARIANCE_FILE
    reuse = reusable_gamma(gamma_path, int(checkpoint.step), int(checkpoint.T), config.gamma_images_per_t)
    train_images = data.load_images(checkpoint.dataset, "train") if reuse is None else None
    return _Inputs(
        checkpoint=checkpoint, config=config, seed=seed, device=torch_device, test_images=test_images, info=info,
        eps_model=build_eps_model(checkpoint, use_ema=True, device=torch_device),
        diffusion=diffusion_from(checkpoint).to(torch_device), gamma_path=gamma_path, reusable_gamma=reuse,
        train_images=train_images,
    )


def _prepare_out_dir(checkpoint_path: Path, out_dir: Path, say: Callable[[str], None]) -> tuple[Path | None, list]:
    """Phase 2: create out_dir, set an older metrics.json aside, copy the run files; (previous metrics, copied)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = keep_previous_metrics(out_dir)
    if previous is not None:
        say(f"kept the previous {METRICS_FILE} as {previous.name}")
    return previous, _copy_run_files(checkpoint_path, out_dir)


def _gamma_phase(inputs: _Inputs, progress: bool, say: Callable[[str], None]) -> OptimalVarianceRun:
    """Phase 3: Gamma_t of the EMA model on the training split (or the checkpoint's existing estimate)."""
    config, checkpoint = inputs.config, inputs.checkpoint
    if inputs.reusable_gamma is not None:
        say(f"Gamma_t: reusing {inputs.gamma_path} (step {checkpoint.step})")
    else:
        say(f"Gamma_t: {config.gamma_images_per_t} training images x T = {checkpoint.T} -> {inputs.gamma_path}")
    return optimal_variance_phase(
        inputs.eps_model, inputs.diffusion, inputs.gamma_path, reuse=inputs.reusable_gamma,
        train_images=inputs.train_images, step=int(checkpoint.step), seed=inputs.seed,
        images_per_t=config.gamma_images_per_t, batch_size=config.elbo_batch_size, device=inputs.device,
        progress=progress,
    )


def _bound_phase(inputs: _Inputs, diffusion: GaussianDiffusion, out_dir: Path, say: Callable[[str], None]):
    """Phase 4: the headline bound (exact subset + Monte Carlo) and, from the same pass of the network, the exact
    bound under every variance the checkpoint supports.

    Returns (ElboEvaluation, {variance: ExactBound}); writes elbo_terms.json.
    """
    config, seed = inputs.config, inputs.seed
    num_test = inputs.test_images.shape[0]
    variances = checkpoint_variances(inputs.checkpoint)
    say(f"bound: exact on {config.elbo_exact_images} images x T = {diffusion.T} under {', '.join(variances)} (one "
        f"pass of the network), Monte Carlo on {config.elbo_mc_images or num_test} images, sigma_t^2 = "
        f"{config.variance}")
    elbo = evaluate_elbo(
        inputs.eps_model, diffusion, inputs.test_images, exact_images=config.elbo_exact_images,
        mc_images=config.elbo_mc_images, draws_per_image=config.elbo_mc_draws_per_image, seed=seed,
        variance=config.variance, clip_x0=config.clip_x0, batch_size=config.elbo_batch_size, device=inputs.device,
        other_variances=variances,
    )
    by_variance = {variance: elbo.by_variance[variance] for variance in variances}
    write_json_atomic(out_dir / ELBO_TERMS_FILE, elbo_terms_record(elbo, config.variance, config.clip_x0, by_variance))
    return elbo, by_variance


def _sampling_phase(inputs: _Inputs, diffusion: GaussianDiffusion, out_dir: Path, progress: bool,
                    say: Callable[[str], None]) -> tuple[SampleRun, float]:
    """Phase 5: N Algorithm-2 samples and their files; (the samples, seconds spent writing the files)."""
    config = inputs.config
    say(f"sampling: {config.fid_num_samples} images by Algorithm 2 at T = {diffusion.T}, sigma_t^2 = "
        f"{config.variance}")
    samples = draw_samples(
        inputs.eps_model, diffusion, config.fid_num_samples, inputs.image_shape, batch_size=config.sample_batch_size,
        generator=phase_generator(inputs.seed, "sampling"), variance=config.variance, clip_x0=config.clip_x0,
        trajectory_steps=config.trajectory_steps, device=inputs.device, progress=progress,
        compile=config.compile_sampler,
    )
    start = time.perf_counter()
    save_npz(out_dir / SAMPLES_NPZ, samples.images)
    atomic_write_bytes(out_dir / SAMPLES_PNG, png_bytes(image_grid(samples.images[:GRID_MAX_IMAGES])))
    atomic_write_bytes(out_dir / TRAJECTORY_PNG, png_bytes(trajectory_strip(samples.trajectory)))
    return samples, time.perf_counter() - start


def _fid_phase(inputs: _Inputs, samples: SampleRun, cache_dir, progress: bool,
               say: Callable[[str], None]) -> tuple[dict, float]:
    """Phase 6: FID and KID of the samples against N test images; (the metrics entries, seconds)."""
    from ddpm.images.fid import REAL_VS_REAL_SEED, ReferenceSet, fid_kid, real_vs_real, reference_cache_name

    config, checkpoint = inputs.config, inputs.checkpoint
    n = config.fid_num_samples
    say(f"FID/KID: {n} samples vs {n} test images")
    start = time.perf_counter()
    reference = ReferenceSet(checkpoint.dataset, "test", n, seed=0)
    subset = kid_subset_size(n)
    result = fid_kid(samples.images, reference, kid_subsets=KID_SUBSETS, kid_subset_size=subset,
                     kid_seed=inputs.seed, device=inputs.device.type, cache=cache_dir, verbose=progress)
    say(f"FID/KID floor: {n} training images vs the same {n} test images (cached after the first run)")
    floor, cached = real_vs_real(checkpoint.dataset, n, kid_subsets=KID_SUBSETS, kid_subset_size=subset,
                                 kid_seed=inputs.seed, device=inputs.device.type, cache=cache_dir, verbose=progress)
    seconds = time.perf_counter() - start
    num_test = inputs.test_images.shape[0]
    return {
        "fid": result.fid,
        "kid_mean": result.kid_mean,
        "kid_std": result.kid_std,
        "kid_stderr": result.kid_stderr,
        "fid_real_vs_real": floor.fid,
        "kid_real_vs_real_mean": floor.kid_mean,
        "kid_real_vs_real_std": floor.kid_std,
        "real_vs_real": {"split": "train", "num_images": floor.num_generated, "subset_seed": REAL_VS_REAL_SEED,
                         "cached": cached},
        "kid_subsets": KID_SUBSETS,
        "kid_subset_size": subset,
        "fid_reference": {
            "dataset": inputs.info.name,
            "split": "test",
            "num_images": result.num_reference,
            "subset": "whole split" if result.num_reference == num_test else "seeded random subset (seed 0)",
            "cache_name": reference_cache_name(checkpoint.dataset, "test", n, 0),
            "feature_extractor": result.feature_extractor,
            "weights_sha256": result.weights_sha256,
        },
    }, seconds


FID_SKIPPED = {"fid": None, "kid_mean": None, "kid_std": None, "kid_stderr": None, "kid_subsets": None, "kid_subset_size": None,
               "fid_reference": None, "fid_real_vs_real": None, "kid_real_vs_real_mean": None,
               "kid_real_vs_real_std": None, "real_vs_real": None}


def _bound_metrics(inputs: _Inputs, elbo: ElboEvaluation, by_variance: Mapping[str, ExactBound]) -> dict:
    """metrics.json entries of the bound beyond the headline (module docstring)."""
    config, proposal = inputs.config, elbo.proposal
    return {
        "elbo_mc_num_draws": elbo.monte_carlo.num_draws,
        "elbo_mc_draws_per_image": config.elbo_mc_draws_per_image,
        "elbo_mc_proposal": "uniform" if proposal is None else "importance",
        "elbo_mc_uniform_mix": None if proposal is None else proposal.uniform_mix,
        "elbo_mc_predicted_draw_variance_uniform": None if proposal is None else proposal.predicted_variance_uniform,
        "elbo_mc_predicted_draw_variance_importance": (
            None if proposal is None else proposal.predicted_variance_importance
        ),
        "elbo_mc_predicted_variance_reduction": None if proposal is None else proposal.variance_reduction,
        "elbo_exact_bits_per_dim": elbo.exact_bits_per_dim,
        "elbo_exact_bits_per_dim_stderr": elbo.exact_stderr,
        "elbo_exact_num_images": elbo.exact_num_images,
        "elbo_exact_by_variance": {
            name: {"bits_per_dim": bound.bits_per_dim, "stderr": bound.stderr, "images": bound.num_images}
            for name, bound in by_variance.items()
        },
        "elbo_test_split_images": int(inputs.test_images.shape[0]),
        "elbo_variance": config.variance,
        "elbo_clip_x0": config.clip_x0,
    }


def _optimal_variance_metrics(run: OptimalVarianceRun, diffusion: GaussianDiffusion) -> dict:
    """The metrics.json entry "optimal_variance": where Gamma_t came from, its size, error and clipping."""
    estimate = run.estimate
    clipped = diffusion.optimal_gamma.cpu().numpy()[1:]  # [T], Gamma_t after the bounds
    return {
        "file": run.path.name,
        "reused": run.reused,
        "previous_file": None if run.previous is None else run.previous.name,
        "split": "train",
        "train_split_images": run.train_images,
        "images_per_t": estimate.images_per_t,
        "seed": estimate.seed,
        "step": estimate.step,
        "gamma_stderr_max": float(np.max(estimate.stderr)),
        "gamma_clipped_timesteps": int(np.sum(clipped != np.asarray(estimate.gamma, dtype=np.float64))),
        "seconds": run.seconds,
    }


def _sample_metrics(inputs: _Inputs, samples: SampleRun, fid_record: Mapping, skip_fid: bool, T: int) -> dict:
    """metrics.json entries of the samples and FID beyond the headline."""
    return {
        "kid_std": fid_record["kid_std"],
        "kid_stderr": fid_record["kid_stderr"],
        "kid_subsets": fid_record["kid_subsets"],
        "kid_subset_size": fid_record["kid_subset_size"],
        "fid_reference": fid_record["fid_reference"],
        "fid_real_vs_real": fid_record["fid_real_vs_real"],
        "kid_real_vs_real_mean": fid_record["kid_real_vs_real_mean"],
        "kid_real_vs_real_std": fid_record["kid_real_vs_real_std"],
        "real_vs_real": fid_record["real_vs_real"],
        "fid_skipped": bool(skip_fid),
        "sample_count": int(samples.images.shape[0]),
        "sample_batch_size": inputs.config.sample_batch_size,
        "sampling_compiled": inputs.config.compile_sampler,
        "sample_seconds": samples.seconds,
        "sample_network_evaluations_per_second": samples.images_per_second * T,
        "trajectory_timesteps": sorted(samples.trajectory, reverse=True),
        "T": T,
    }


def _provenance_metrics(inputs: _Inputs, checkpoint_path: Path, timings: Mapping[str, float], evaluate_seconds: float,
                        command: str | None, copied: list, previous: Path | None) -> dict:
    """metrics.json entries that say how the numbers were produced."""
    checkpoint, config = inputs.checkpoint, inputs.config
    return {
        "checkpoint": str(checkpoint_path),
        "checkpoint_step": int(checkpoint.step),
        "num_parameters": sum(p.numel() for p in inputs.eps_model.parameters()),
        "image_shape": list(inputs.image_shape),
        "train_seconds": float(checkpoint.train_seconds),
        "evaluate_seconds": evaluate_seconds,
        "timings": {"train": float(checkpoint.train_seconds), **timings},
        "evaluation_config": {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(config).items()},
        "preset_config": checkpoint.preset.to_dict(),
        "command": command if command is not None else command_line(),
        "versions": versions("scipy", "torch-fidelity", "matplotlib", "pillow", "tqdm"),
        "checkpoint_versions": dict(getattr(checkpoint, "versions", {}) or {}),
        "files_copied_from_checkpoint_dir": copied,
        "previous_metrics": None if previous is None else previous.name,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def evaluate_checkpoint(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    *,
    fid_samples: int | None = None,
    device: str | torch.device | None = None,
    seed: int | None = None,
    skip_fid: bool = False,
    elbo_exact_images: int | None = None,
    elbo_mc_images: int | None = None,
    sample_batch_size: int | None = None,
    variance: str | None = None,
    gamma_images_per_t: int | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate a checkpoint on its dataset's test split and write the files of the module docstring into out_dir.

    Defaults come from the checkpoint's preset (EvaluationConfig) and seed; the keyword arguments override
    them. `elbo_mc_images=0` means the whole test split; `variance` is the headline's sigma_t^2 (bound and
    samples). Errors about the request (sizes, device, data, checkpoint) are raised before anything in out_dir
    changes. The phases, in order: validate, prepare out_dir, Gamma_t, the bound, samples, FID/KID, metrics.json.
    """
    say = log or (lambda message: None)
    wall_start = time.perf_counter()
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    overrides = dict(fid_samples=fid_samples, elbo_exact_images=elbo_exact_images, elbo_mc_images=elbo_mc_images,
                     sample_batch_size=sample_batch_size, variance=variance, gamma_images_per_t=gamma_images_per_t)
    inputs = _load_inputs(checkpoint_path, out_dir, overrides, seed, device, skip_fid, cache_dir)
    timings: dict[str, float] = {"load": time.perf_counter() - wall_start}
    previous, copied = _prepare_out_dir(checkpoint_path, out_dir, say)

    optimal = _gamma_phase(inputs, progress, say)
    timings["optimal_variance"] = optimal.seconds
    diffusion = inputs.diffusion.with_optimal_variance(optimal.estimate.gamma)  # every variance, one diffusion
    elbo, by_variance = _bound_phase(inputs, diffusion, out_dir, say)
    timings.update(elbo_exact=elbo.exact_seconds, elbo_monte_carlo=elbo.monte_carlo_seconds)
    samples, write_seconds = _sampling_phase(inputs, diffusion, out_dir, progress, say)
    timings.update(sampling=samples.seconds, write_images=write_seconds)
    fid_record = FID_SKIPPED
    if not skip_fid:
        fid_record, timings["fid_kid"] = _fid_phase(inputs, samples, cache_dir, progress, say)

    evaluate_seconds = time.perf_counter() - wall_start
    checkpoint, config, mc = inputs.checkpoint, inputs.config, elbo.monte_carlo
    metrics = {
        "format_version": METRICS_FORMAT_VERSION,
        "dataset": inputs.info.name,
        "preset": checkpoint.preset.name,
        "device": device_description(inputs.device),
        "seed": inputs.seed,
        "train_steps": int(checkpoint.step),
        "train_images_per_second": checkpoint.train_images_per_second,
        "sample_images_per_second": samples.images_per_second,
        "elbo_bits_per_dim": mc.bits_per_dim,
        "elbo_bits_per_dim_stderr": mc.stderr,
        "elbo_num_images": mc.num_images,
        "fid": fid_record["fid"],
        "kid_mean": fid_record["kid_mean"],
        "fid_num_samples": config.fid_num_samples,
        "wall_seconds": float(checkpoint.train_seconds) + evaluate_seconds,
        **_bound_metrics(inputs, elbo, by_variance),
        "optimal_variance": _optimal_variance_metrics(optimal, diffusion),
        **_sample_metrics(inputs, samples, fid_record, skip_fid, diffusion.T),
        **_provenance_metrics(inputs, checkpoint_path, timings, evaluate_seconds, command, copied, previous),
    }
    metrics = finite_or_none(metrics)  # what metrics.json holds: JSON has no NaN, so undefined values are null
    write_json_atomic(out_dir / METRICS_FILE, metrics)
    return EvaluationResult(metrics=metrics, out_dir=out_dir, previous_metrics=previous)


__all__ = [
    "VARIANCES",
    "checkpoint_variances",
    "ElboEvaluation",
    "EvaluationError",
    "EvaluationResult",
    "ExactBound",
    "OptimalVarianceRun",
    "SampleRun",
    "draw_samples",
    "elbo_terms_record",
    "evaluate_checkpoint",
    "evaluate_elbo",
    "exact_bound",
    "exact_bounds",
    "image_grid",
    "keep_previous_metrics",
    "kid_subset_size",
    "move_run_aside",
    "optimal_variance_phase",
    "phase_generator",
    "random_subset",
    "reusable_gamma",
    "trajectory_strip",
]
