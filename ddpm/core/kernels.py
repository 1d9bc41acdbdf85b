"""The unchecked kernels of the bound: the network's output, the KL terms, the decoder and the prior, per row.

Public fast paths (CONTRIBUTING.md, "Checked fronts, unchecked kernels"): no validation and no host sync, so the
loops that call them stay on the device and `torch.compile` traces them without breaks; the public functions of
`ddpm.core.bound`, `ddpm.core.losses`, `ddpm.core.samplers` and `ddpm.evaluation.optimal_variance` check their
inputs first and then call these. Every input is a tensor on one device; `diffusion` is a
`ddpm.core.diffusion.GaussianDiffusion`; t is int64 [n] in {1..T}. The reverse process's mean and variance come
from `ddpm.core.reverse` (the one implementation), the forward process's from `ddpm.core.forward`.

- `model_output(eps_model, x_t, t)` -> (eps, v): the network's eps_theta [n, ...] and, for a model that learns its
  variance (2C output channels, `ModelConfig.learn_variance`), its variance output v [n, ...]; else v is None.
- `kl_terms` / `decoder_terms` / `prior_term`: the bound's L_{t-1} (t >= 2), L_0 and L_T per row, in nats summed over
  the data dimensions, under any reverse variance (`ddpm.core.variance.ReverseVariance`; "learned" takes v).
- `pixel_index`, `discretized_log_prob`, `kl_from_log_variances`, `per_image_sum`: their building blocks.

Precision conventions are those of `ddpm.core.bound` (its module docstring): the decoder runs in float64 with the
exact normal CDF; the other terms run in the dtype of their inputs.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import TYPE_CHECKING

import torch

from ddpm.core.forward import gather, x0_from_eps
from ddpm.core.reverse import learned_log_variance, reverse_mean
from ddpm.core.variance import ReverseVariance

if TYPE_CHECKING:
    from ddpm.core.diffusion import GaussianDiffusion

Tensor = torch.Tensor
# The network eps_theta(x_t, t) -> eps [n, C, ...] or, learning its variance, [eps, v] along dim 1 ([n, 2C, ...]).
EpsModel = Callable[[Tensor, Tensor], Tensor]

NUM_BINS = 256
LN2 = math.log(2.0)


def model_output(eps_model: EpsModel, xt: Tensor, t: Tensor) -> tuple[Tensor, Tensor | None]:
    """(eps_theta(x_t, t), v or None): a [n, C, ...] output is eps alone; [n, 2C, ...] is eps then v along dim 1.

    ValueError naming the shapes for anything else (the one check here: shapes are known without a host sync).
    """
    out = eps_model(xt, t)
    if isinstance(out, Tensor) and out.shape == xt.shape:
        return out, None
    if (isinstance(out, Tensor) and out.ndim == xt.ndim and out.ndim >= 2 and out.shape[0] == xt.shape[0]
            and out.shape[1] == 2 * xt.shape[1] and out.shape[2:] == xt.shape[2:]):
        eps, v = out.chunk(2, dim=1)
        return eps, v
    got = tuple(out.shape) if isinstance(out, Tensor) else type(out).__name__
    learned = (xt.shape[0], 2 * xt.shape[1], *xt.shape[2:]) if xt.ndim >= 2 else None
    raise ValueError(f"eps_model(x_t, t) must return a tensor of shape {tuple(xt.shape)} (eps) or {learned} "
                     f"(eps and the variance output v), got {got}")


def kl_from_log_variances(mean1: Tensor, logvar1: Tensor, mean2: Tensor, logvar2: Tensor, var2: Tensor) -> Tensor:
    """KL(N(mean1, e^logvar1) || N(mean2, var2)) elementwise, the variance part as 0.5 (expm1(d) - d)."""
    d = logvar1 - logvar2
    return 0.5 * (torch.expm1(d) - d + (mean1 - mean2) ** 2 / var2)


def log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and for very negative x."""
    return torch.where(x > -LN2, torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def pixel_index(x0: Tensor) -> Tensor:
    """k = round((x_0 + 1) * 127.5) clamped to 0..255, int64 (the bin of x_0; no checks)."""
    return torch.round((x0.to(torch.float64) + 1.0) * 127.5).clamp(0, NUM_BINS - 1).to(torch.int64)


def discretized_log_prob(k: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """log P(bin k | N(mean, std^2)) in float64, edge bins open (no checks). Shapes broadcast."""
    mean = mean.to(torch.float64)
    std = std.to(torch.float64)
    kf = k.to(torch.float64)
    lower = (2.0 * kf - 1.0) / 255.0 - 1.0  # centre - 1/255, exact grid arithmetic
    upper = (2.0 * kf + 1.0) / 255.0 - 1.0  # centre + 1/255
    a = (lower - mean) / std
    b = (upper - mean) / std
    # Interior bins: Phi(b) - Phi(a); mirrored to Phi(-a) - Phi(-b) when the bin lies right of the mean,
    # so both CDF values are <= 1/2 and their logs are accurate.
    right = a > 0
    lo = torch.where(right, -b, a)
    hi = torch.where(right, -a, b)
    log_hi = torch.special.log_ndtr(hi)
    interior = log_hi + log1mexp(torch.special.log_ndtr(lo) - log_hi)
    left_edge = torch.special.log_ndtr(b)  # P(x < upper), bin k = 0
    right_edge = torch.special.log_ndtr(-a)  # P(x > lower), bin k = 255
    return torch.where(k == 0, left_edge, torch.where(k == NUM_BINS - 1, right_edge, interior))


def per_image_sum(x: Tensor) -> Tensor:
    """Sum over every dimension but the first: [B, ...] -> [B]."""
    return x.reshape(x.shape[0], -1).sum(dim=1)


def prior_term(diffusion: GaussianDiffusion, x0: Tensor) -> Tensor:
    """L_T = KL(q(x_T | x_0) || N(0, I)) per image [B], float64, in closed form (no network call)."""
    dtype = torch.float64
    T = diffusion.T
    mean = diffusion.sqrt_alpha_bars[T].to(dtype) * x0.to(dtype)  # [B, ...]
    logvar = diffusion.log_one_minus_alpha_bars[T].to(dtype)
    zero = torch.zeros((), dtype=dtype, device=x0.device)
    one = torch.ones((), dtype=dtype, device=x0.device)
    return per_image_sum(kl_from_log_variances(mean, logvar.expand_as(mean), zero, zero, one))


@dataclass(frozen=True)
class BoundRows:
    """The rows a bound term is evaluated on, all [n, ...] in one floating dtype (the arithmetic dtype) but t int64 [n]:
    the data x_0, the x_t made from it with `noise`, and k, x_0's pixel bins (`pixel_index`; the decoder's rows)."""

    x0: Tensor
    xt: Tensor
    t: Tensor
    noise: Tensor
    k: Tensor | None = None


@dataclass(frozen=True)
class NetworkOutput:
    """What the network said on those rows: eps_theta, the variance output v (learned variance only), and the eps the
    reverse mean is made from, `eps_mean` (default eps; the hybrid objective passes eps.detach())."""

    eps: Tensor
    v: Tensor | None = None
    eps_mean: Tensor | None = None

    @property
    def mean_eps(self) -> Tensor:
        return self.eps if self.eps_mean is None else self.eps_mean


def kl_terms(
    diffusion: GaussianDiffusion, choice: ReverseVariance, rows: BoundRows, output: NetworkOutput, *, clip_x0: bool,
) -> Tensor:
    """L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) per row [n] (nats), t >= 2 rows meaningful.

    Fixed variances: lambda_t ||eps - eps_theta||^2 + D C_t (Ho et al. eq. 12). Learned: per dimension
    0.5 (expm1(d) - d + Delta^2 / Sigma_theta), d = log beta_tilde_t - log Sigma_theta, Delta = mu_tilde - mu_theta =
    mean_gap_coef_t (eps_theta - eps) (derivation (k)). The mean is made from `output.mean_eps`: the hybrid objective
    passes eps.detach() there so that this term trains the variance only. Rows with t = 1 get a finite placeholder
    (0) so that gradients through a `torch.where` stay finite.
    """
    x0, xt, t, noise = rows.x0, rows.xt, rows.t, rows.noise
    v, eps_mean, dtype = output.v, output.mean_eps, output.eps.dtype
    at = gather
    if choice.is_learned:
        log_sigma2 = learned_log_variance(diffusion, v, t, dtype)  # [n, ...]
        d = at(diffusion.learned_log_beta_tildes, t, x0, dtype) - log_sigma2  # finite at t = 1 (placeholder rows)
        if clip_x0:
            x0_hat = x0_from_eps(diffusion, xt, t, eps_mean).clamp(-1.0, 1.0)
            gap2 = at(diffusion.posterior_mean_coef_x0, t, x0, dtype) ** 2 * (x0 - x0_hat) ** 2
        else:
            gap2 = at(diffusion.mean_gap_coefs, t, x0, dtype) ** 2 * (noise - eps_mean) ** 2
        per_dim = 0.5 * (torch.expm1(d) - d + gap2 * torch.exp(-log_sigma2))
        return torch.where(t >= 2, per_image_sum(per_dim), torch.zeros((), dtype=dtype, device=x0.device))
    num_dims = x0[0].numel()
    const = at(diffusion.kl_variance_terms(choice), t, x0, dtype).reshape(-1)  # [n]
    const = torch.where(t >= 2, const, torch.zeros_like(const))
    if clip_x0:
        x0_hat = x0_from_eps(diffusion, xt, t, eps_mean).clamp(-1.0, 1.0)
        weight = at(diffusion.posterior_mean_coef_x0, t, x0, dtype) ** 2 / (
            2.0 * at(diffusion.reverse_variance(choice), t, x0, dtype)
        )  # [n, 1, ...]
        return per_image_sum(weight * (x0 - x0_hat) ** 2) + num_dims * const
    weight = at(diffusion.loss_weights(choice), t, x0, dtype)  # [n, 1, ...], lambda_t
    return per_image_sum(weight * (noise - eps_mean) ** 2) + num_dims * const


def decoder_terms(
    diffusion: GaussianDiffusion,
    choice: ReverseVariance,
    k: Tensor,
    xt: Tensor,
    t: Tensor,
    eps: Tensor,
    clip_x0: bool,
    v: Tensor | None = None,
) -> Tensor:
    """L_0 = -log p_theta(x_0 | x_1) per row [n] (nats), meaningful for t = 1 rows (finite for any t).

    The discretised Gaussian decoder (Ho et al. eq. 13) with mean mu_theta(x_1, 1) from `eps` and standard deviation
    sigma_1 (fixed choices: sqrt(beta_1)) or, learned, exp(log Sigma_theta(v) / 2) per dimension.
    """
    dtype = eps.dtype
    mean = reverse_mean(diffusion, eps, xt, t, clip_x0)  # [n, ...]
    if choice.is_learned:
        std = torch.exp(0.5 * learned_log_variance(diffusion, v, t, torch.float64))  # [n, ...]
    else:
        std = gather(diffusion.reverse_std(choice), t, xt, torch.float64)  # [n, 1, ...]
    return -per_image_sum(discretized_log_prob(k, mean, std)).to(dtype)


def bound_terms(
    diffusion: GaussianDiffusion, choice: ReverseVariance, rows: BoundRows, output: NetworkOutput, *, clip_x0: bool,
) -> Tensor:
    """L_{t-1} per row [n] (nats) for rows mixing t = 1 (the decoder, at bin rows.k) and t >= 2 (the KL); the means
    are made from `output.mean_eps` (see `kl_terms`)."""
    if rows.k is None:
        raise ValueError("bound_terms needs the rows' pixel bins k (the decoder's rows)")
    kl = kl_terms(diffusion, choice, rows, output, clip_x0=clip_x0)  # [n]
    decoder = decoder_terms(diffusion, choice, rows.k, rows.xt, rows.t, output.mean_eps, clip_x0, output.v)  # [n]
    return torch.where(rows.t == 1, decoder, kl)


__all__ = [
    "BoundRows",
    "EpsModel",
    "NetworkOutput",
    "bound_terms",
    "decoder_terms",
    "discretized_log_prob",
    "kl_from_log_variances",
    "kl_terms",
    "log1mexp",
    "model_output",
    "per_image_sum",
    "pixel_index",
    "prior_term",
]
