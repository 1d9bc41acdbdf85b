"""Gamma_t = E||eps_theta(x_t, t)||^2 / d estimated by Monte Carlo: what the "optimal" reverse variance needs.

Derivation (j) (Bao et al. 2022, Analytic-DPM, Theorem 1): with the eps-parameterised mean, the reverse variance
that minimises the expected bound term is sigma*_t^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t))
(1 - Gamma_t), Gamma_t = E_{x_0, eps} ||eps_theta(x_t, t)||^2 / d, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t)
eps. `estimate_gamma` averages ||eps_theta||^2 / d over `images_per_t` training images (drawn with replacement)
and fresh eps at every t = 1..T, and returns the per-t mean with its standard error (the spread of the per-image
values over sqrt(n)). `GaussianDiffusion.with_optimal_variance(estimate.gamma)` clips each value to its bounds
and builds the tables the sampler and the bound read. The estimate is stored next to a checkpoint as
`optimal_variance.json` (gamma, stderr, images per t, seed, checkpoint step).

In an evaluation (`optimal_variance_phase`), Gamma_t of the EMA model is estimated on the TRAINING split:
x_0 = to_model_range(load_images(dataset, "train")) (drawn with replacement), generator = phase_generator(seed,
"gamma"), gamma_images_per_t images per t (EvaluationConfig) in batches of elbo_batch_size: T * gamma_images_per_t
network calls. It is stored as out_dir/optimal_variance.json with the seed and checkpoint step; an existing file
there with the checkpoint's step and T and the requested images per t is reused instead (`reusable_gamma`; a
different one is renamed to optimal_variance.previous-<UTC mtime>.json first). The bounds of `with_optimal_variance`
clip each Gamma_t before use. Every variance is then available to the bound and the sampler; the headline uses
`variance` (EvaluationConfig, `evaluate --variance`).
"""

from __future__ import annotations

import dataclasses
import json
import os
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm.core.diffusion import GaussianDiffusion, check_generator, standard_normal
from ddpm.core.forward import compute_dtype, forward_sample
from ddpm.core.kernels import model_output
from ddpm.evaluation.errors import EvaluationError
from ddpm.evaluation.randomness import phase_generator
from ddpm.images import data
from ddpm.runtime.devices import synchronize
from ddpm.runtime.files import atomic_write_text, keep_previous_file

Tensor = torch.Tensor
FILE_NAME = "optimal_variance.json"
FORMAT_VERSION = 1


@dataclass(frozen=True)
class GammaEstimate:
    """Gamma_t for t = 1..T (index t - 1) with its Monte Carlo standard error and the sample size per t."""

    gamma: tuple[float, ...]
    stderr: tuple[float, ...]
    images_per_t: int
    seed: int | None = None
    step: int | None = None

    def __post_init__(self) -> None:
        if len(self.gamma) != len(self.stderr) or not self.gamma:
            raise ValueError("gamma and stderr must be non-empty and of the same length T")

    @property
    def T(self) -> int:
        return len(self.gamma)


@torch.no_grad()
def estimate_gamma(
    eps_model,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    generator: torch.Generator,
    images_per_t: int = 32,
    batch_size: int = 256,
    progress: bool = True,
) -> GammaEstimate:
    """Gamma_t = E||eps_theta(x_t, t)||^2 / d for every t, from `images_per_t` images of x0 [N, C, H, W] per t.

    Images are drawn with replacement (one randint call per batch), then eps ~ N(0, I), both from `generator`;
    batches mix timesteps (t runs over 1..T, `images_per_t` times each). x0 must be in the model's range [-1, 1]
    and on the diffusion's device.
    """
    check_generator(generator)
    for name, value in (("images_per_t", images_per_t), ("batch_size", batch_size)):
        if isinstance(value, bool) or not isinstance(value, int) or value < 2 - (name == "batch_size"):
            raise ValueError(f"{name} must be an int >= {2 - (name == 'batch_size')}, got {value!r}")
    diffusion.check_x("x0", x0)
    T, n = diffusion.T, images_per_t
    dtype = compute_dtype(x0.dtype)
    t_all = torch.arange(1, T + 1, device=x0.device).repeat_interleave(n)  # [T n], t-major
    values = torch.empty(T * n, dtype=torch.float64, device=x0.device)
    for start in tqdm(range(0, T * n, batch_size), desc="Gamma_t", disable=not progress, leave=False):
        t = t_all[start : start + batch_size]  # [b]
        index = torch.randint(0, x0.shape[0], (t.shape[0],), generator=generator, device=generator.device)
        images = x0[index.to(x0.device)]  # [b, C, H, W]
        noise = standard_normal(tuple(images.shape), generator, dtype, x0.device)
        eps, _ = model_output(eps_model, forward_sample(diffusion, images, t, noise), t)
        values[start : start + t.shape[0]] = eps.to(torch.float64).pow(2).flatten(1).mean(1)
    per_t = values.reshape(T, n).cpu().numpy()
    gamma = per_t.mean(axis=1)
    stderr = per_t.std(axis=1, ddof=1) / np.sqrt(n)
    return GammaEstimate(tuple(float(g) for g in gamma), tuple(float(s) for s in stderr), n)


def save_gamma(path: str | os.PathLike, estimate: GammaEstimate) -> Path:
    """Write the estimate as JSON (atomically); returns the path."""
    path = Path(path)
    atomic_write_text(path, json.dumps({"format_version": FORMAT_VERSION, **asdict(estimate)}, indent=1) + "\n")
    return path


def load_gamma(path: str | os.PathLike) -> GammaEstimate:
    """The estimate stored by `save_gamma`; ValueError naming the file when it is not one."""
    path = Path(path)
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        if record.pop("format_version") != FORMAT_VERSION:
            raise ValueError("unknown format version")
        return GammaEstimate(**{**record, "gamma": tuple(record["gamma"]), "stderr": tuple(record["stderr"])})
    except (OSError, ValueError, KeyError, TypeError) as error:
        raise ValueError(f"{path} is not a Gamma_t estimate written by ddpm ({error})") from None


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


@dataclass(frozen=True)
class GammaRequest:
    """The Gamma_t estimate an evaluation needs: of the checkpoint at `step`, from `images_per_t` training images per
    t in batches of `batch_size`, drawn from phase_generator(`seed`, "gamma")."""

    step: int
    seed: int
    images_per_t: int
    batch_size: int


def optimal_variance_phase(
    eps_model,
    diffusion: GaussianDiffusion,
    path: str | os.PathLike,
    request: GammaRequest,
    *,
    reuse: GammaEstimate | None = None,
    train_images: Tensor | None = None,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> OptimalVarianceRun:
    """Gamma_t = E||eps_theta(x_t, t)||^2 / d for the "optimal" variance: `reuse` when given, else estimated.

    The estimate is `estimate_gamma(eps_model, diffusion, to_model_range(train_images), phase_generator(seed,
    "gamma"), images_per_t, batch_size)` (training images, drawn with replacement), stored with the request's seed
    and step in `path` (an older file there is first renamed to <name>.previous-<UTC mtime>.json).
    """
    seed, step = request.seed, request.step
    path = Path(path)
    start = time.perf_counter()
    if reuse is not None:
        return OptimalVarianceRun(reuse, path, True, None, None, time.perf_counter() - start)
    if train_images is None:
        raise EvaluationError("Gamma_t must be estimated but no training images were given")
    device = torch.device(device)
    x0 = data.to_model_range(train_images).to(device)  # [M, C, H, W]
    estimate = estimate_gamma(eps_model, diffusion.to(device), x0, phase_generator(seed, "gamma", device),
                              images_per_t=request.images_per_t, batch_size=request.batch_size,
                              progress=progress)
    estimate = dataclasses.replace(estimate, seed=int(seed), step=int(step))
    previous = keep_previous_file(path)
    save_gamma(path, estimate)
    synchronize(device)
    return OptimalVarianceRun(estimate, path, False, previous, int(train_images.shape[0]),
                              time.perf_counter() - start)


__all__ = [
    "FILE_NAME",
    "GammaEstimate",
    "GammaRequest",
    "OptimalVarianceRun",
    "estimate_gamma",
    "load_gamma",
    "optimal_variance_phase",
    "reusable_gamma",
    "save_gamma",
]
