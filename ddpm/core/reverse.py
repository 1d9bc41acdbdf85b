"""The reverse process p_theta(x_{t-1} | x_t): its mean, its variance and Algorithm 2's step, in one implementation.

`ReverseStep` is the only code that computes mu_theta, Sigma_theta and x_next = mu_theta + sigma z. It runs on a
`StepTables` record of per-step constants in the working dtype, indexed by a step key k:
- single steps t -> t - 1 (`single_step_tables`, k = t): Algorithm 2 (`ancestral_sample`), the checked
  `GaussianDiffusion.p_sample` / `p_mean_variance`, the bound's decoder and KL terms and the training losses;
- strides t -> s < t (`stride_tables`, k = the index of the stride): strided Algorithm 2 (derivation (i)).
k is a Python int (one step for the whole batch: the samplers' loops, no gather, no host sync) or an int64 tensor
[B] (one step per row: the bound, the losses, `p_sample`); both give the same values bit for bit, since a table
entry cast to the working dtype is the same number whether it is gathered first or cast first.

The mean is a (x_t - b eps) (Algorithm 2 line 4: a = 1/sqrt(alpha_t), b = beta_t / sqrt(1 - alpha_bar_t); for a
stride, a = sqrt(alpha_bar_s / alpha_bar_t), b = (1 - alpha_bar_t / alpha_bar_s) / sqrt(1 - alpha_bar_t)), or with
`clip_x0` the posterior mean at clamp(x0_hat, -1, 1) (single steps only). The variance is a table of sigma_k
(fixed choices) or, learned, exp(frac log hi_k + (1 - frac) log lo_k), frac = (v + 1) / 2, per dimension
(Nichol & Dhariwal eq. 15, derivation (k); v unclipped). Steps that add no noise (t = 1; s = 0) return the mean.

Unchecked (CONTRIBUTING.md, "Checked fronts, unchecked kernels"): callers validate first. May import torch, numpy
and the modules of `ddpm.core` below it (`variance`, `forward`).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import torch

from ddpm.core.forward import compute_dtype
from ddpm.core.variance import ReverseVariance, learned_output

if TYPE_CHECKING:
    from ddpm.core.diffusion import GaussianDiffusion

Tensor = torch.Tensor
StepKey = int | Tensor


@dataclass(frozen=True)
class ClipTables:
    """The constants of the clipped mean mu_tilde(clamp(x0_hat, -1, 1), x_t), each [K] in the working dtype."""

    x0_from_xt: Tensor  # 1 / sqrt(alpha_bar_t)
    x0_from_eps: Tensor  # sqrt(1 / alpha_bar_t - 1)
    posterior_x0: Tensor  # sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
    posterior_xt: Tensor  # sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t)


@dataclass(frozen=True)
class StepTables:
    """Per-step constants of the reverse step, each a tensor [K] in `dtype` indexed by the step key (module docstring).

    mean_scale, eps_scale: a and b of the mean a (x - b eps). sigma: the fixed standard deviation (None when the
    variance is learned or not needed); learned_log_ends: (log hi, log lo), the learned variance's two ends (None
    unless learned). adds_noise: per key, whether the step adds sigma z (bool tensor [K] and the same as a tuple for
    int keys). clip: the clipped mean's constants (None: the eps form).
    """

    dtype: torch.dtype
    mean_scale: Tensor
    eps_scale: Tensor
    adds_noise: Tensor
    adds_noise_at: tuple[bool, ...]
    sigma: Tensor | None = None
    learned_log_ends: tuple[Tensor, Tensor] | None = None
    clip: ClipTables | None = None


def single_step_tables(diffusion: GaussianDiffusion, variance: ReverseVariance | None, clip_x0: bool,
                       dtype: torch.dtype) -> StepTables:
    """The tables of the steps t -> t - 1 (k = t in 1..T, index 0 unused) in `dtype` on the diffusion's device.

    `variance` None: the mean only (the bound's decoder with its own float64 standard deviation)."""
    def cast(table: Tensor) -> Tensor:
        return table.to(dtype)

    sigma, ends = None, None
    if variance is not None and variance.is_learned:
        ends = (cast(diffusion.log_betas), cast(diffusion.learned_log_beta_tildes))
    elif variance is not None:
        sigma = cast(diffusion.reverse_std(variance))
    clip = ClipTables(cast(diffusion.sqrt_recip_alpha_bars), cast(diffusion.sqrt_recipm1_alpha_bars),
                      cast(diffusion.posterior_mean_coef_x0),
                      cast(diffusion.posterior_mean_coef_xt)) if clip_x0 else None
    adds_noise = torch.arange(diffusion.T + 1, device=diffusion.device) > 1
    return StepTables(dtype, cast(diffusion.recip_sqrt_alphas), cast(diffusion.eps_coefs), adds_noise,
                      tuple(t > 1 for t in range(diffusion.T + 1)), sigma, ends, clip)


@dataclass(frozen=True)
class StrideCoefficients:
    """float64 [S] coefficients of the steps ts[i] -> ss[i] (derivation (i); DDIM's eq. 12 and 16 at eta)."""

    coef_x: np.ndarray  # sqrt(alpha_bar_s / alpha_bar_t): x_t's coefficient (DDIM eq. 12 and the strided mean)
    coef_eps: np.ndarray  # DDIM: sqrt(1 - a_s - sigma^2) - sqrt(a_s) sqrt(1 - a_t) / sqrt(a_t)
    sigma: np.ndarray  # DDIM sigma(eta), eq. 16
    sqrt_a_prev: np.ndarray  # sqrt(alpha_bar_s)
    direction: np.ndarray  # sqrt(1 - alpha_bar_s - sigma^2)
    stride_beta: np.ndarray  # 1 - alpha_bar_t / alpha_bar_s, the forward variance of the stride
    stride_beta_tilde: np.ndarray  # (1 - alpha_bar_s) / (1 - alpha_bar_t) (1 - alpha_bar_t / alpha_bar_s)
    strided_eps_coef: np.ndarray  # (1 - alpha_bar_t / alpha_bar_s) / sqrt(1 - alpha_bar_t)


def stride_coefficients(diffusion: GaussianDiffusion, ts: Sequence[int], ss: Sequence[int],
                        eta: float) -> StrideCoefficients:
    """Coefficients of the steps ts[i] -> ss[i] (paper timesteps, 0 <= s < t), from the float64 log tables."""
    L = diffusion.log_alpha_bars.cpu().numpy()
    one_minus = diffusion.one_minus_alpha_bars.cpu().numpy()
    t_idx, p_idx = np.asarray(ts, dtype=np.int64), np.asarray(ss, dtype=np.int64)
    L_t, L_p = L[t_idx], L[p_idx]
    stride_beta = -np.expm1(L_t - L_p)  # 1 - a / a', no cancellation
    stride_beta_tilde = one_minus[p_idx] / one_minus[t_idx] * stride_beta
    # 1 - a / a' = -expm1(L_t - L_prev); sigma^2 = eta^2 (1 - a') / (1 - a) (1 - a / a').
    sigma2 = eta**2 * one_minus[p_idx] / one_minus[t_idx] * stride_beta  # [S]
    direction = np.sqrt(np.clip(one_minus[p_idx] - sigma2, 0.0, None))  # sqrt(1 - a' - sigma^2)
    sqrt_a_prev = np.exp(0.5 * L_p)
    coef_x = np.exp(0.5 * (L_p - L_t))  # sqrt(a' / a)
    coef_eps = direction - sqrt_a_prev * np.sqrt(one_minus[t_idx]) * np.exp(-0.5 * L_t)
    return StrideCoefficients(coef_x, coef_eps, np.sqrt(sigma2), sqrt_a_prev, direction, stride_beta,
                              stride_beta_tilde, stride_beta / np.sqrt(one_minus[t_idx]))


def stride_tables(diffusion: GaussianDiffusion, ts: Sequence[int], ss: Sequence[int], variance: ReverseVariance,
                  dtype: torch.dtype, device: torch.device) -> StepTables:
    """The tables of the strides ts[i] -> ss[i] (k = i) in `dtype` on `device`: sigma_{t,s}^2 is the stride's
    forward variance ("beta"), its posterior variance beta_tilde_{t,s} ("beta_tilde"), or learned between the two
    (improved-diffusion's respacing interpolates the respaced schedule's two variances the same way)."""
    c = stride_coefficients(diffusion, ts, ss, 0.0)

    def cast(values: np.ndarray) -> Tensor:
        return torch.tensor(values, dtype=torch.float64, device=device).to(dtype)  # [S]

    sigma, ends = None, None
    if variance.is_learned:
        with np.errstate(divide="ignore"):  # beta_tilde_{t,0} = 0 on the last step, which adds no noise
            ends = (cast(np.log(c.stride_beta)), cast(np.log(c.stride_beta_tilde)))
    else:
        sigma = cast(np.sqrt(c.stride_beta if variance is ReverseVariance.BETA else c.stride_beta_tilde))
    adds = tuple(int(s) > 0 for s in ss)
    return StepTables(dtype, cast(c.coef_x), cast(c.strided_eps_coef), torch.tensor(adds, device=device), adds,
                      sigma, ends)


class ReverseStep:
    """mu_theta, Sigma_theta and x_next = mu_theta + sigma z on one `StepTables` (module docstring)."""

    def __init__(self, tables: StepTables) -> None:
        self.tables = tables
        self.dtype = tables.dtype

    @staticmethod
    def at(table: Tensor, k: StepKey, like: Tensor) -> Tensor:
        """table[k]: a 0-d tensor for an int key, [B, 1, ..., 1] for a key tensor [B] (broadcasts against like)."""
        if isinstance(k, int):
            return table[k]
        return table[k].reshape((k.shape[0],) + (1,) * (like.ndim - 1))

    def mean(self, eps: Tensor, xt: Tensor, k: StepKey) -> Tensor:
        """mu_theta(x_t) in the tables' dtype: a (x_t - b eps), or the clipped posterior mean."""
        dtype, clip = self.dtype, self.tables.clip
        if clip is not None:
            x0_hat = (self.at(clip.x0_from_xt, k, xt) * xt.to(dtype)
                      - self.at(clip.x0_from_eps, k, xt) * eps.to(dtype)).clamp(-1.0, 1.0)
            return self.at(clip.posterior_x0, k, xt) * x0_hat + self.at(clip.posterior_xt, k, xt) * xt.to(dtype)
        a = self.at(self.tables.mean_scale, k, xt)
        b = self.at(self.tables.eps_scale, k, xt)
        return a * (xt.to(dtype) - b * eps.to(dtype))  # [B, ...], Algorithm 2 line 4

    def log_variance(self, v: Tensor | None, k: StepKey) -> Tensor:
        """log Sigma_theta = frac log hi + (1 - frac) log lo per dimension [B, ...]; ValueError without v."""
        ends = self.tables.learned_log_ends
        if ends is None:
            raise ValueError("log_variance is the learned variance's; these tables hold a fixed one")
        frac = (learned_output(ReverseVariance.LEARNED, v, self.dtype) + 1.0) / 2.0
        return frac * self.at(ends[0], k, frac) + (1.0 - frac) * self.at(ends[1], k, frac)  # [B, ...]

    def std(self, v: Tensor | None, k: StepKey, like: Tensor) -> Tensor:
        """sigma: the fixed table's entry ([B, 1, ...] or 0-d) or the learned one per dimension [B, ...]."""
        if self.tables.learned_log_ends is not None:
            return torch.exp(0.5 * self.log_variance(v, k))
        if self.tables.sigma is None:
            raise ValueError("these tables hold no reverse variance (made with variance=None)")
        return self.at(self.tables.sigma, k, like)

    def __call__(self, eps: Tensor, xt: Tensor, k: StepKey, noise: Tensor, v: Tensor | None = None) -> Tensor:
        """x_next = mu_theta + sigma z in xt's dtype; z = `noise` where the step adds noise, 0 elsewhere (noise is not
        read there: an int key skips it, a key tensor selects the mean row by row)."""
        mean = self.mean(eps, xt, k)
        if isinstance(k, int):
            if not self.tables.adds_noise_at[k]:
                return mean.to(xt.dtype)
            return (mean + self.std(v, k, xt) * noise.to(self.dtype)).to(xt.dtype)
        quiet = ~self.at(self.tables.adds_noise, k, xt)  # [B, 1, ...]
        return torch.where(quiet, mean, mean + self.std(v, k, xt) * noise.to(self.dtype)).to(xt.dtype)


def reverse_mean(diffusion: GaussianDiffusion, eps: Tensor, xt: Tensor, t: Tensor, clip_x0: bool) -> Tensor:
    """mu_theta(x_t, t) per row in the compute dtype of xt (the bound's and the losses' entry to `ReverseStep`)."""
    return ReverseStep(single_step_tables(diffusion, None, clip_x0, compute_dtype(xt.dtype))).mean(eps, xt, t)


def learned_log_variance(diffusion: GaussianDiffusion, v: Tensor | None, t: Tensor, dtype: torch.dtype) -> Tensor:
    """log Sigma_theta(v) per row and dimension [B, ...] in `dtype` (`ReverseStep.log_variance` on single steps)."""
    return ReverseStep(single_step_tables(diffusion, ReverseVariance.LEARNED, False, dtype)).log_variance(v, t)


__all__ = [
    "ClipTables",
    "ReverseStep",
    "StepTables",
    "StrideCoefficients",
    "learned_log_variance",
    "reverse_mean",
    "single_step_tables",
    "stride_coefficients",
    "stride_tables",
]
