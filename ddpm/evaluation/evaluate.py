"""Evaluate a trained checkpoint on its dataset's test split: the bound in bits/dim, Algorithm-2 samples, FID/KID.

`evaluate_checkpoint(checkpoint, out_dir)` writes into out_dir (all files atomically: temp file + rename):

- optimal_variance.json (`ddpm.evaluation.optimal_variance.FILE_NAME`): Gamma_t of the checkpoint's EMA model, its
  standard errors, images per t, seed and checkpoint step (`save_gamma`): what the "optimal" variance of this run's
  bound and samples is built from, and what `sample --variance optimal` reads next to the checkpoint (so it finds it
  when out_dir is the run folder).
- elbo_terms.json: the per-term bound of Ho et al. eq. 5 on the exact subset (bits/dim of L_0 .. L_T) under the
  headline variance, the same under every variance ("by_variance"), and the importance proposal over t, for the
  report's plots.
- samples_uint8.npz (key "images", uint8 [N, C, H, W]): the N Algorithm-2 samples, kept for FID re-use.
- samples.png (a grid of the first samples) and trajectory.png (rows: samples; columns: x_t at ~10 t from T to 0).
- metrics.json: every number (keys below), written last. A run directory whose metrics.json exists is a
  finished evaluation.

metrics.json keys (the headline ones first, then details): dataset, preset, device, seed (of the evaluation),
train_steps, train_images_per_second (images seen / training seconds, from the checkpoint), sample_images_per_second
(N / Algorithm-2 seconds), elbo_bits_per_dim and elbo_bits_per_dim_stderr (the Monte Carlo estimate),
elbo_num_images (its images), fid, kid_mean (null with --skip-fid), fid_num_samples (N), wall_seconds (training
seconds from the checkpoint + this evaluation's seconds); then elbo_exact_* (the exact subset), elbo_mc_* (draws,
proposal and its predicted variance reduction), elbo_variance (the headline's sigma_t^2: the Monte Carlo bound,
elbo_exact_* and the samples behind FID all use it), elbo_exact_by_variance, decoder_interior_bins and
optimal_variance (below), kid_std (spread over subsets), kid_stderr (the standard error of kid_mean,
`ddpm.images.fid.kid_standard_error`), kid_subsets, kid_subset_size, fid_reference (the reference set and its cache
name), fid_real_vs_real, kid_real_vs_real_mean and kid_real_vs_real_std (the floor: N real training images against
the same test reference, `ddpm.images.fid.real_vs_real`, cached) with real_vs_real {split, num_images, subset_seed,
cached}, timings {train, load, optimal_variance, elbo_exact (the exact subset under every variance, one pass of the
network), elbo_monte_carlo, decoder_bins, sampling, write_images, fid_kid (floor included)} in seconds (metrics
written before that pass was shared also have elbo_exact_other_variances), the command, package versions (now and at
training), the preset and the evaluation settings used. Values that are undefined (a
standard error of one image) are null.

- elbo_exact_by_variance: {"beta" | "beta_tilde" | "optimal" | "learned": {"bits_per_dim", "stderr", "images"}},
  the exact bound (`ddpm.evaluation.bounds`) on the same subset with the same x_t under each reverse variance the
  checkpoint supports ("learned" for a learned-variance model: `checkpoint_variances`); the headline variance's entry is
  elbo_exact_bits_per_dim and its stderr themselves (not recomputed). They share the network's
  outputs, so their differences are the variances' alone (not noise between subsets).
- decoder_interior_bins: the decoder's interior bins on the exact subset (`ddpm.evaluation.decoder_bins`, derivation
  (t)) under the headline variance, the model's mu_theta(x_1, 1) and sigma_1 per pixel with the exact bound's x_1:
  {"variance", "images", "decoder_bits_per_dim" (L_0), "density_width_bits_per_dim" (L_0 with each interior bin's
  cost taken as -log N(x; mu, sigma^2) - log 2h), "error_bits_per_dim" (L_0 minus that: the exact interior-bin error
  E, mean over images, bits/dim) and its "error_bits_per_dim_stderr", "interior_fraction" (pixels in bins 1..254),
  "sigma_over_h_mean", "sigma_over_h_min", "sigma_over_h_max" (sigma_1 / h over interior pixels, h = 1/255),
  "seconds"}; null when the exact subset is empty. Absent from runs evaluated before it existed.
- optimal_variance: {"file" (name in out_dir), "reused" (an existing file of this checkpoint step, T and images per
  t was used), "previous_file" (a stale file set aside, or null), "split" ("train"), "train_split_images" (null
  when reused), "images_per_t", "seed" and "step" (the estimate's: a reused file keeps the seed it was drawn
  with), "gamma_stderr_max" (the largest standard error of Gamma_t over t), "gamma_clipped_timesteps" (how many
  Gamma_t the bounds of `GaussianDiffusion.with_optimal_variance` changed), "seconds"}.

The phases, in order (`evaluate_checkpoint`), each in the module named after what it does:

1. validate: the checkpoint, the settings (the preset's EvaluationConfig with the caller's overrides), the data and
   the network; every error about the request is raised here, before anything in out_dir changes.
2. prepare the run folder (`ddpm.evaluation.run_folder`): an older metrics.json is set aside, never overwritten.
3. Gamma_t for the "optimal" variance (`ddpm.evaluation.optimal_variance`).
4. the bound: exact subset and Monte Carlo (`ddpm.evaluation.bounds`), elbo_terms.json; then the decoder's
   interior bins on the exact subset (`ddpm.evaluation.decoder_bins`).
5. samples by Algorithm 2 and their files (`ddpm.evaluation.sampling`).
6. FID and KID with their floor (`ddpm.evaluation.sample_quality`), unless skipped.
7. metrics.json, written last.

Each phase draws from its own seeded generator (`ddpm.evaluation.randomness`).
"""


from __future__ import annotations

import os
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import torch

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.evaluation.bounds import (
    BoundSettings,
    ElboEvaluation,
    ExactBound,
    checkpoint_variances,
    elbo_terms_record,
    evaluate_elbo,
)
from ddpm.evaluation.decoder_bins import METRICS_KEY as DECODER_BINS_KEY
from ddpm.evaluation.decoder_bins import DecoderBins, decoder_bins
from ddpm.evaluation.errors import EvaluationError
from ddpm.evaluation.optimal_variance import FILE_NAME as OPTIMAL_VARIANCE_FILE
from ddpm.evaluation.optimal_variance import (
    GammaEstimate,
    GammaRequest,
    OptimalVarianceRun,
    optimal_variance_phase,
    reusable_gamma,
)
from ddpm.evaluation.randomness import phase_generator
from ddpm.evaluation.run_folder import ELBO_TERMS_FILE, METRICS_FILE, METRICS_FORMAT_VERSION, prepare_run_folder
from ddpm.evaluation.sample_quality import FID_SKIPPED, check_fid_weights, measure_sample_quality
from ddpm.evaluation.sampling import SampleRequest, SampleRun, draw_samples, write_sample_files
from ddpm.images import data
from ddpm.runtime.devices import resolve_device
from ddpm.runtime.files import finite_or_none, write_json_atomic
from ddpm.runtime.provenance import command_line, device_description, portable_command, versions
from ddpm.training.checkpoint import Checkpoint, build_eps_model, diffusion_from, load_checkpoint
from ddpm.training.config import EvaluationConfig, Preset

Tensor = torch.Tensor

EVALUATION_PACKAGES = ("scipy", "torch-fidelity", "matplotlib", "pillow", "tqdm")  # versions beyond the base record


@dataclass(frozen=True)
class EvaluationResult:
    """What `evaluate_checkpoint` wrote: the metrics record, the folder, and where an older metrics.json went."""

    metrics: Mapping[str, Any]  # the JSON record of metrics.json
    out_dir: Path
    previous_metrics: Path | None


# ------------------------------------------------------------------------------------------- 1. validate
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
        channels, height, width = self.test_images.shape[1:]  # [N, C, H, W], checked by _check_sizes
        return int(channels), int(height), int(width)


@dataclass(frozen=True)
class EvaluationOverrides:
    """What a caller asks for on top of the checkpoint's preset (its EvaluationConfig) and seed; None keeps the
    checkpoint's own (the options of `python -m ddpm evaluate`).

    fid_samples: N, the Algorithm-2 samples compared with N test images; elbo_exact_images: test images of the exact
    bound; elbo_mc_images: test images of the Monte Carlo bound (0: the whole test split); sample_batch_size: images
    per Algorithm-2 batch; variance: the headline's sigma_t^2 (bound, samples and FID); gamma_images_per_t: training
    images per t of the Gamma_t estimate; seed: the evaluation's seed; skip_fid: draw the samples but compute no
    FID/KID.
    """

    fid_samples: int | None = None
    elbo_exact_images: int | None = None
    elbo_mc_images: int | None = None
    sample_batch_size: int | None = None
    variance: str | None = None
    gamma_images_per_t: int | None = None
    seed: int | None = None
    skip_fid: bool = False

    def config(self, preset: Preset) -> EvaluationConfig:
        """The preset's EvaluationConfig with these overrides (validated by EvaluationConfig.replace)."""
        changes: dict[str, int | str | None] = {name: value for name, value in (
            ("fid_num_samples", self.fid_samples), ("elbo_exact_images", self.elbo_exact_images),
            ("sample_batch_size", self.sample_batch_size), ("variance", self.variance),
            ("gamma_images_per_t", self.gamma_images_per_t),
        ) if value is not None}
        if self.elbo_mc_images is not None:
            changes["elbo_mc_images"] = None if self.elbo_mc_images == 0 else self.elbo_mc_images
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


def _load_inputs(checkpoint_path: Path, out_dir: Path, overrides: EvaluationOverrides, device,
                 cache_dir) -> _Inputs:
    """Phase 1 (validation): checkpoint, settings, data, network; raises before anything in out_dir changes."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = overrides.config(checkpoint.preset)
    seed = int(checkpoint.seed if overrides.seed is None else overrides.seed)
    if isinstance(seed, bool) or seed < 0:
        raise EvaluationError(f"seed must be an integer >= 0, got {seed!r}")
    torch_device = resolve_device(device)
    test_images = data.load_images(checkpoint.dataset, "test")  # [N, C, H, W] uint8
    info = data.dataset_info(checkpoint.dataset)
    _check_sizes(checkpoint, config, test_images, overrides.skip_fid)
    if config.variance not in checkpoint_variances(checkpoint):
        raise EvaluationError(f"variance {config.variance!r} needs a model that learns its variance; this checkpoint "
                              f"supports {', '.join(checkpoint_variances(checkpoint))}")
    if not overrides.skip_fid:
        check_fid_weights(cache_dir)
    gamma_path = out_dir / OPTIMAL_VARIANCE_FILE
    reuse = reusable_gamma(gamma_path, int(checkpoint.step), int(checkpoint.T), config.gamma_images_per_t)
    train_images = data.load_images(checkpoint.dataset, "train") if reuse is None else None
    return _Inputs(
        checkpoint=checkpoint, config=config, seed=seed, device=torch_device, test_images=test_images, info=info,
        eps_model=build_eps_model(checkpoint, use_ema=True, device=torch_device),
        diffusion=diffusion_from(checkpoint).to(torch_device), gamma_path=gamma_path, reusable_gamma=reuse,
        train_images=train_images,
    )


# ----------------------------------------------------------------------------------------- 2. - 6. phases
def _prepare_out_dir(checkpoint_path: Path, out_dir: Path, say: Callable[[str], None]) -> tuple[Path | None, list]:
    """Phase 2: create out_dir, set an older metrics.json aside, copy the run files; (previous metrics, copied)."""
    previous, copied = prepare_run_folder(checkpoint_path, out_dir)
    if previous is not None:
        say(f"kept the previous {METRICS_FILE} as {previous.name}")
    return previous, copied


def _gamma_phase(inputs: _Inputs, progress: bool, say: Callable[[str], None]) -> OptimalVarianceRun:
    """Phase 3: Gamma_t of the EMA model on the training split (or the checkpoint's existing estimate)."""
    config, checkpoint = inputs.config, inputs.checkpoint
    if inputs.reusable_gamma is not None:
        say(f"Gamma_t: reusing {inputs.gamma_path} (step {checkpoint.step})")
    else:
        say(f"Gamma_t: {config.gamma_images_per_t} training images x T = {checkpoint.T} -> {inputs.gamma_path}")
    request = GammaRequest(step=int(checkpoint.step), seed=inputs.seed, images_per_t=config.gamma_images_per_t,
                           batch_size=config.elbo_batch_size)
    return optimal_variance_phase(inputs.eps_model, inputs.diffusion, inputs.gamma_path, request,
                                  reuse=inputs.reusable_gamma, train_images=inputs.train_images,
                                  device=inputs.device, progress=progress)


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
    elbo = evaluate_elbo(inputs.eps_model, diffusion, inputs.test_images, BoundSettings.from_config(config, seed),
                         other_variances=variances, device=inputs.device)
    by_variance = {variance: elbo.by_variance[variance] for variance in variances}
    write_json_atomic(out_dir / ELBO_TERMS_FILE, elbo_terms_record(elbo, config.variance, config.clip_x0, by_variance))
    return elbo, by_variance


def _decoder_bins_phase(inputs: _Inputs, diffusion: GaussianDiffusion,
                        say: Callable[[str], None]) -> DecoderBins | None:
    """Phase 4, continued: the decoder's interior bins on the exact subset (one network pass at t = 1)."""
    config = inputs.config
    say(f"decoder bins: L_0 vs density times bin width on {config.elbo_exact_images} images, sigma_1 of "
        f"{config.variance}")
    return decoder_bins(inputs.eps_model, diffusion, inputs.test_images,
                        BoundSettings.from_config(config, inputs.seed), device=inputs.device)


def _sampling_phase(inputs: _Inputs, diffusion: GaussianDiffusion, out_dir: Path, progress: bool,
                    say: Callable[[str], None]) -> tuple[SampleRun, float]:
    """Phase 5: N Algorithm-2 samples and their files; (the samples, seconds spent writing the files)."""
    config = inputs.config
    say(f"sampling: {config.fid_num_samples} images by Algorithm 2 at T = {diffusion.T}, sigma_t^2 = "
        f"{config.variance}")
    samples = draw_samples(inputs.eps_model, diffusion, SampleRequest.from_config(config, inputs.image_shape),
                           phase_generator(inputs.seed, "sampling", inputs.device), device=inputs.device,
                           progress=progress)
    start = time.perf_counter()
    write_sample_files(out_dir, samples)
    return samples, time.perf_counter() - start


def _fid_phase(inputs: _Inputs, samples: SampleRun, cache_dir, progress: bool,
               say: Callable[[str], None]) -> tuple[dict, float]:
    """Phase 6: FID and KID of the samples against N test images; (the metrics entries, seconds)."""
    start = time.perf_counter()
    quality = measure_sample_quality(samples.images, inputs.checkpoint.dataset, inputs.seed,
                                     device=inputs.device.type, cache=cache_dir, progress=progress, say=say)
    seconds = time.perf_counter() - start
    return quality.metrics(inputs.checkpoint.dataset, inputs.info.name, int(inputs.test_images.shape[0])), seconds


# ------------------------------------------------------------------------------------------ 7. metrics.json
@dataclass(frozen=True)
class _Outcome:
    """What phases 2 - 6 produced; metrics.json is built from it."""

    previous_metrics: Path | None
    copied: list[str]
    optimal: OptimalVarianceRun
    diffusion: GaussianDiffusion  # every variance, Gamma_t's included
    elbo: ElboEvaluation
    by_variance: Mapping[str, ExactBound]
    decoder_bins: DecoderBins | None
    samples: SampleRun
    quality: Mapping[str, object]  # the FID/KID entries (FID_SKIPPED's keys)
    timings: Mapping[str, float]


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
        "command": command_line() if command is None else portable_command(command),
        "versions": versions(*EVALUATION_PACKAGES),
        "checkpoint_versions": dict(getattr(checkpoint, "versions", {}) or {}),
        "files_copied_from_checkpoint_dir": copied,
        "previous_metrics": None if previous is None else previous.name,
        "created_utc": datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ"),
    }


def _metrics_record(inputs: _Inputs, outcome: _Outcome, checkpoint_path: Path, evaluate_seconds: float,
                    command: str | None, skip_fid: bool) -> dict:
    """metrics.json: the headline keys, then the bound's, Gamma_t's, the samples' and the provenance entries."""
    checkpoint, config, mc = inputs.checkpoint, inputs.config, outcome.elbo.monte_carlo
    return {
        "format_version": METRICS_FORMAT_VERSION,
        "dataset": inputs.info.name,
        "preset": checkpoint.preset.name,
        "device": device_description(inputs.device),
        "seed": inputs.seed,
        "train_steps": int(checkpoint.step),
        "train_images_per_second": checkpoint.train_images_per_second,
        "sample_images_per_second": outcome.samples.images_per_second,
        "elbo_bits_per_dim": mc.bits_per_dim,
        "elbo_bits_per_dim_stderr": mc.stderr,
        "elbo_num_images": mc.num_images,
        "fid": outcome.quality["fid"],
        "kid_mean": outcome.quality["kid_mean"],
        "fid_num_samples": config.fid_num_samples,
        "wall_seconds": float(checkpoint.train_seconds) + evaluate_seconds,
        **_bound_metrics(inputs, outcome.elbo, outcome.by_variance),
        DECODER_BINS_KEY: None if outcome.decoder_bins is None else outcome.decoder_bins.metrics(),
        "optimal_variance": _optimal_variance_metrics(outcome.optimal, outcome.diffusion),
        **_sample_metrics(inputs, outcome.samples, outcome.quality, skip_fid, outcome.diffusion.T),
        **_provenance_metrics(inputs, checkpoint_path, outcome.timings, evaluate_seconds, command, outcome.copied,
                              outcome.previous_metrics),
    }


# ------------------------------------------------------------------------------------------ the whole run
def evaluate_checkpoint(
    checkpoint_path: str | os.PathLike,
    out_dir: str | os.PathLike,
    overrides: EvaluationOverrides | None = None,
    *,
    device: str | torch.device | None = None,
    cache_dir: str | os.PathLike | None = None,
    progress: bool = True,
    command: str | None = None,
    log: Callable[[str], None] | None = None,
) -> EvaluationResult:
    """Evaluate a checkpoint on its dataset's test split and write the files of the module docstring into out_dir.

    Defaults come from the checkpoint's preset (EvaluationConfig) and seed; `overrides` changes them. `device`: cpu,
    cuda or cuda:N (None: cuda when available); `cache_dir`: FID weights and reference features; `command`: what
    metrics.json records as the command (None: this process's command line); `log`: receives one line per phase.
    Errors about the request (sizes, device, data, checkpoint) are raised before anything in out_dir changes. The
    phases, in order: validate, prepare out_dir, Gamma_t, the bound, samples, FID/KID, metrics.json.
    """
    say = log or (lambda message: None)
    overrides = EvaluationOverrides() if overrides is None else overrides
    skip_fid = overrides.skip_fid
    wall_start = time.perf_counter()
    checkpoint_path, out_dir = Path(checkpoint_path), Path(out_dir)
    inputs = _load_inputs(checkpoint_path, out_dir, overrides, device, cache_dir)
    timings: dict[str, float] = {"load": time.perf_counter() - wall_start}
    previous, copied = _prepare_out_dir(checkpoint_path, out_dir, say)
    optimal = _gamma_phase(inputs, progress, say)
    timings["optimal_variance"] = optimal.seconds
    diffusion = inputs.diffusion.with_optimal_variance(optimal.estimate.gamma)  # every variance, one diffusion
    elbo, by_variance = _bound_phase(inputs, diffusion, out_dir, say)
    timings.update(elbo_exact=elbo.exact_seconds, elbo_monte_carlo=elbo.monte_carlo_seconds)
    bins = _decoder_bins_phase(inputs, diffusion, say)
    timings["decoder_bins"] = 0.0 if bins is None else bins.seconds
    samples, write_seconds = _sampling_phase(inputs, diffusion, out_dir, progress, say)
    timings.update(sampling=samples.seconds, write_images=write_seconds)
    quality = FID_SKIPPED
    if not skip_fid:
        quality, timings["fid_kid"] = _fid_phase(inputs, samples, cache_dir, progress, say)
    outcome = _Outcome(previous, copied, optimal, diffusion, elbo, by_variance, bins, samples, quality, timings)
    metrics = _metrics_record(inputs, outcome, checkpoint_path, time.perf_counter() - wall_start, command, skip_fid)
    metrics = finite_or_none(metrics)  # what metrics.json holds: JSON has no NaN, so undefined values are null
    write_json_atomic(out_dir / METRICS_FILE, metrics)
    return EvaluationResult(metrics=metrics, out_dir=out_dir, previous_metrics=previous)


__all__ = ["EVALUATION_PACKAGES", "EvaluationOverrides", "EvaluationResult", "evaluate_checkpoint"]
