"""The unchecked kernels of the forward process q: x_t from x_0, x_0 and eps from each other, eps from a
v-prediction, the posterior mean.

Public fast paths (CONTRIBUTING.md, "Checked fronts, unchecked kernels"): these functions do no validation and no
host sync, so loops that call them stay on the device and `torch.compile` traces them without breaks. The checked
front is `ddpm.core.diffusion.GaussianDiffusion` (its public methods check, then call these); the bound, the losses,
the samplers and the Gamma_t estimate check their own inputs and call these directly.

Every input is a tensor on the diffusion's device; `diffusion` is a `GaussianDiffusion` (its float64 tables [T + 1]
indexed by t); t is int64 [B] in {1..T}. Arithmetic runs in `compute_dtype(x.dtype)` with each table entry gathered
in float64 and cast once (`gather`); the functions return the compute dtype unless they say otherwise.
May import torch only (GaussianDiffusion only for type hints).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import torch

if TYPE_CHECKING:
    from ddpm.core.diffusion import GaussianDiffusion

Tensor = torch.Tensor

HALF_DTYPES = (torch.bfloat16, torch.float16)


def compute_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype arithmetic runs in for inputs of `dtype`: float32 for half types, else `dtype` itself."""
    return torch.float32 if dtype in HALF_DTYPES else dtype


def gather(table: Tensor, t: Tensor, like: Tensor, dtype: torch.dtype) -> Tensor:
    """table[t] cast to `dtype` and shaped [B, 1, ..., 1] to broadcast against `like` [B, ...]."""
    return table[t].to(dtype).reshape((t.shape[0],) + (1,) * (like.ndim - 1))  # [B, 1, ...]


def forward_sample(diffusion: GaussianDiffusion, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
    """x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise (eq. 4), in x0's dtype."""
    dtype = compute_dtype(x0.dtype)
    mean_coef = gather(diffusion.sqrt_alpha_bars, t, x0, dtype)
    std = gather(diffusion.sqrt_one_minus_alpha_bars, t, x0, dtype)
    return (mean_coef * x0.to(dtype) + std * noise.to(dtype)).to(x0.dtype)  # [B, ...]


def x0_from_eps(diffusion: GaussianDiffusion, xt: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    """x0_hat = x_t / sqrt(alpha_bar_t) - sqrt(1 / alpha_bar_t - 1) eps (eq. 4 solved for x_0), compute dtype."""
    dtype = compute_dtype(xt.dtype)
    a = gather(diffusion.sqrt_recip_alpha_bars, t, xt, dtype)
    b = gather(diffusion.sqrt_recipm1_alpha_bars, t, xt, dtype)
    return a * xt.to(dtype) - b * eps.to(dtype)  # [B, ...]


def eps_from_x0(diffusion: GaussianDiffusion, xt: Tensor, t: Tensor, x0: Tensor) -> Tensor:
    """eps = (x_t / sqrt(alpha_bar_t) - x_0) / sqrt(1 / alpha_bar_t - 1), the inverse of `x0_from_eps`, compute
    dtype."""
    dtype = compute_dtype(xt.dtype)
    a = gather(diffusion.sqrt_recip_alpha_bars, t, xt, dtype)
    b = gather(diffusion.sqrt_recipm1_alpha_bars, t, xt, dtype)
    return (a * xt.to(dtype) - x0.to(dtype)) / b  # [B, ...]


def eps_from_v(diffusion: GaussianDiffusion, xt: Tensor, t: Tensor, v: Tensor) -> Tensor:
    """eps = sqrt(alpha_bar_t) v + sqrt(1 - alpha_bar_t) x_t, the noise a v-prediction v = sqrt(alpha_bar_t) eps -
    sqrt(1 - alpha_bar_t) x_0 implies at x_t (Salimans & Ho 2022; eq. 4 substituted for x_0), compute dtype."""
    dtype = compute_dtype(xt.dtype)
    a = gather(diffusion.sqrt_alpha_bars, t, xt, dtype)
    b = gather(diffusion.sqrt_one_minus_alpha_bars, t, xt, dtype)
    return a * v.to(dtype) + b * xt.to(dtype)  # [B, ...]


def posterior_mean(diffusion: GaussianDiffusion, x0: Tensor, xt: Tensor, t: Tensor, dtype: torch.dtype) -> Tensor:
    """mu_tilde_t(x_t, x_0) = coef_x0_t x_0 + coef_xt_t x_t, the mean of q(x_{t-1} | x_t, x_0) (eqs. 6-7), in
    `dtype`."""
    c0 = gather(diffusion.posterior_mean_coef_x0, t, xt, dtype)
    ct = gather(diffusion.posterior_mean_coef_xt, t, xt, dtype)
    return c0 * x0.to(dtype) + ct * xt.to(dtype)  # [B, ...]


__all__ = ["compute_dtype", "eps_from_v", "eps_from_x0", "forward_sample", "gather", "posterior_mean", "x0_from_eps"]
