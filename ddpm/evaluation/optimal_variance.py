"""Gamma_t = E||eps_theta(x_t, t)||^2 / d estimated by Monte Carlo: what the "optimal" reverse variance needs.

Derivation (j) (Bao et al. 2022, Analytic-DPM, Theorem 1): with the eps-parameterised mean, the reverse variance
that minimises the expected bound term is sigma*_t^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t))
(1 - Gamma_t), Gamma_t = E_{x_0, eps} ||eps_theta(x_t, t)||^2 / d, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t)
eps. `estimate_gamma` averages ||eps_theta||^2 / d over `images_per_t` training images (drawn with replacement)
and fresh eps at every t = 1..T, and returns the per-t mean with its standard error (the spread of the per-image
values over sqrt(n)). `GaussianDiffusion.with_optimal_variance(estimate.gamma)` clips each value to its bounds
and builds the tables the sampler and the bound read. The estimate is stored next to a checkpoint as
`optimal_variance.json` (gamma, stderr, images per t, seed, checkpoint step).
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm.core.diffusion import GaussianDiffusion, check_generator, compute_dtype, standard_normal
from ddpm.core.kernels import model_output
from ddpm.runtime.files import atomic_write_text

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
    diffusion._check_x("x0", x0)
    T, n = diffusion.T, images_per_t
    dtype = compute_dtype(x0.dtype)
    t_all = torch.arange(1, T + 1, device=x0.device).repeat_interleave(n)  # [T n], t-major
    values = torch.empty(T * n, dtype=torch.float64, device=x0.device)
    for start in tqdm(range(0, T * n, batch_size), desc="Gamma_t", disable=not progress, leave=False):
        t = t_all[start : start + batch_size]  # [b]
        index = torch.randint(0, x0.shape[0], (t.shape[0],), generator=generator, device=generator.device)
        images = x0[index.to(x0.device)]  # [b, C, H, W]
        noise = standard_normal(tuple(images.shape), generator, dtype, x0.device)
        eps, _ = model_output(eps_model, diffusion._q_sample(images, t, noise), t)
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


__all__ = ["FILE_NAME", "GammaEstimate", "estimate_gamma", "load_gamma", "save_gamma"]
