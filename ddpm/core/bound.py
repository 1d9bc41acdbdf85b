"""The variational bound -log p_theta(x_0) <= L_T + sum_{t>=2} L_{t-1} + L_0 of Ho et al. (2020), eq. 5, in bits/dim.

Terms (per image, in nats, summed over the C*H*W dimensions):

- L_T = KL(q(x_T | x_0) || N(0, I)), the prior term, in closed form (no network call).
- L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t = 2..T, at one x_t ~ q(x_t | x_0) per
  (image, t). With fixed sigma_t^2 this is lambda_t ||eps - eps_theta||^2 + D C_t (eq. 12), where
  lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)) and C_t = KL(N(0, beta_tilde_t) || N(0, sigma_t^2))
  per dimension; we evaluate it in that form, which is the Gaussian KL of the two means with the difference
  mu_tilde - mu_theta = beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)) (eps_theta - eps) written without
  cancellation. With `clip_x0=True` the difference is sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t)
  (x_0 - clamp(x0_hat, -1, 1)) instead.
- L_0 = -log p_theta(x_0 | x_1), the discretised Gaussian decoder (eq. 13) with mean mu_theta(x_1, 1) and
  variance sigma_1^2 = beta_1 (for every tabled reverse-variance choice; see `ddpm.core.diffusion`).
- Learned variance (a model with 2C output channels, `ModelConfig.learn_variance`): every term takes the model's
  per-dimension Sigma_theta(v) (derivation (k)); L_{t-1} is then the general Gaussian KL per dimension and L_0 the
  discretised decoder with standard deviation sqrt(Sigma_theta) per pixel. The shared kernels are in
  `ddpm.core.kernels`.

Conventions (part of the README; each is tested):

- Decoder: 256 bins of width 2/255 centred on x = k / 127.5 - 1, k = 0..255. The bin of x_0 is chosen by its
  integer index k = round((x_0 + 1) * 127.5), never by a 0.999 threshold; the edge bins k = 0 and k = 255
  extend to -inf and +inf, so the 256 probabilities sum to 1 for any mean and variance. Probabilities use
  the exact normal CDF (torch.special.log_ndtr, not the tanh approximation) in float64, as
  log(Phi(b) - Phi(a)) = log Phi(b) + log(1 - exp(log Phi(a) - log Phi(b))) on whichever side of the mean the
  bin lies (mirrored to the left tail), so tiny bins far in a tail keep their relative precision and no
  log is clamped at 1e-12. Precision: P has a relative error (log P an absolute one) of about
  1e-16 (1 + |c|) / w for a bin of standardised width w = (2/255) / sigma centred c standard deviations from
  the mean; for the decoder (sigma_1 = sqrt(beta_1) ~ 1e-2, w ~ 1) that is float64 rounding, and even
  sigma = 1e5 keeps ~1e-9; only absurdly wide Gaussians (sigma >> 1e5) lose digits in the tiny interior
  bins (the sum over the bins stays 1).
  x_0 must lie on the grid (public functions check, to 0.3 of a bin so that bfloat16 data passes;
  training snaps to the nearest grid value).
- Clipping: the bound is evaluated without clipping by default (`clip_x0=False`): it bounds the likelihood of
  the model Algorithm 2 samples from. improved-diffusion clips x0_hat during likelihood evaluation by default;
  `clip_x0=True` reproduces that, and gives the bound of the clipped sampler.
- Bits/dim: (L_T + sum_{t>=2} L_{t-1} + L_0) / (C*H*W ln 2) per image. No dequantisation offset: the decoder
  is already a distribution over the 256 discrete values.
- Randomness and precision: every x_t is drawn with the injected generator; the bound arithmetic runs in float64
  at x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps (float64), and the network sees x_t rounded to
  x_0's dtype. The exact sum packs (image, t) pairs t-major (p = (t - 1) B + b) into chunks of `batch_size`
  network inputs and draws eps as one torch.randn([B, ...]) per t in the order t = 1..T (in x_0's compute
  dtype), so the result does not depend on `batch_size`.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from ddpm.core.diffusion import GaussianDiffusion, check_generator, standard_normal, uniform_timesteps
from ddpm.core.forward import compute_dtype, forward_sample
from ddpm.core.kernels import (
    NUM_BINS,
    BoundRows,
    EpsModel,
    NetworkOutput,
    bound_terms,
    decoder_terms,
    discretized_log_prob,
    kl_from_log_variances,
    kl_terms,
    model_output,
    pixel_index,
    prior_term,
)
from ddpm.core.variance import ReverseVariance, learned_output

Tensor = torch.Tensor

BIN_HALF_WIDTH = 1.0 / 255.0  # bins of width 2/255 centred on k / 127.5 - 1
LN2 = math.log(2.0)
GRID_TOLERANCE = 0.3  # in bins: |(x_0 + 1) * 127.5 - k| allowed by the public on-grid check


# ------------------------------------------------------------------------------------------------ Gaussian KL
def normal_kl(mean1: Tensor | float, var1: Tensor | float, mean2: Tensor | float, var2: Tensor | float) -> Tensor:
    """KL(N(mean1, var1) || N(mean2, var2)) elementwise in nats (the seed tutorial's Gaussian KL).

    KL = 1/2 (log(var2/var1) + (var1 + (mean1 - mean2)^2)/var2 - 1).

    The Gaussian KL of the seed tutorial / Ho et al. eq. 5 terms. Arguments broadcast (tensors or Python
    floats); the result has their promoted floating dtype (at least float32). The variance part is computed as
    (expm1(d) - d) / 2 with d = log var1 - log var2, which keeps its precision when var1 ~ var2. var1 = 0 gives
    +inf (a point mass against a Gaussian). ValueError for var1 < 0, var2 <= 0 or non-finite variances.
    """
    tensors = [v for v in (mean1, var1, mean2, var2) if isinstance(v, Tensor)]
    dtype = torch.float32
    device = tensors[0].device if tensors else torch.device("cpu")
    for v in tensors:
        dtype = torch.promote_types(dtype, v.dtype if v.is_floating_point() else torch.float32)
    dtype = compute_dtype(dtype)
    mean1, var1, mean2, var2 = (torch.as_tensor(v, dtype=dtype, device=device) for v in (mean1, var1, mean2, var2))
    if not bool(torch.isfinite(var1).all() & torch.isfinite(var2).all()):
        raise ValueError("normal_kl: variances must be finite")
    if bool((var1 < 0).any()):
        raise ValueError(f"normal_kl: var1 must be >= 0, got min {float(var1.min())}")
    if bool((var2 <= 0).any()):
        raise ValueError(f"normal_kl: var2 must be > 0, got min {float(var2.min())}")
    return kl_from_log_variances(mean1, torch.log(var1), mean2, torch.log(var2), var2)


# -------------------------------------------------------------------------------------- discretised decoder
def _check_on_grid(x0: Tensor, name: str = "x0") -> None:
    """ValueError unless every value of x_0 is within GRID_TOLERANCE bins of some k / 127.5 - 1, k in 0..255.

    One host sync. The tolerance admits bfloat16 data (its rounding moves a grid value by up to 0.249 bins)
    and rejects dequantised or differently scaled data.
    """
    if not isinstance(x0, Tensor) or not x0.is_floating_point():
        raise ValueError(f"{name} must be a floating torch.Tensor of data scaled to [-1, 1]")
    scaled = (x0.to(torch.float64) + 1.0) * 127.5
    k = torch.round(scaled)
    ok = torch.isfinite(scaled) & (k >= 0) & (k <= NUM_BINS - 1) & ((scaled - k).abs() <= GRID_TOLERANCE)
    if not bool(ok.all()):
        value = float(x0.reshape(-1)[~ok.reshape(-1)][0])
        raise ValueError(
            f"{name} must lie on the 8-bit grid k / 127.5 - 1 (k = 0..255) in [-1, 1]; got value {value!r}"
        )


def discretized_gaussian_log_likelihood(x0: Tensor, mean: Tensor, variance: Tensor | float) -> Tensor:
    """log P(x_0) under the discretised N(mean, variance): log of the integral over x_0's bin (Ho et al. eq. 13), nats.

    Elementwise over x_0 [B, ...] (mean and variance broadcast against it). 256 bins of width 2/255 centred
    on k / 127.5 - 1; the bin is chosen by its index k and the edge bins extend to -inf / +inf (module
    docstring). Computed in float64 with the exact normal CDF; returned in the inputs' promoted dtype (at
    least float32). ValueError if x_0 is off the grid or a variance is not positive and finite.
    """
    _check_on_grid(x0)
    if not isinstance(mean, Tensor) or not mean.is_floating_point():
        raise ValueError("mean must be a floating torch.Tensor broadcastable to x0")
    variance = torch.as_tensor(variance, dtype=torch.float64, device=x0.device)
    if not bool((torch.isfinite(variance) & (variance > 0)).all()):
        raise ValueError("variance must be positive and finite")
    try:
        torch.broadcast_shapes(x0.shape, mean.shape, variance.shape)  # type: ignore[no-untyped-call]  # torch: no hints
    except RuntimeError as error:
        raise ValueError(
            f"mean {tuple(mean.shape)} and variance {tuple(variance.shape)} must broadcast to x0 {tuple(x0.shape)}"
        ) from error
    out_dtype = compute_dtype(torch.promote_types(x0.dtype, mean.dtype))
    return discretized_log_prob(pixel_index(x0), mean, variance.sqrt()).to(out_dtype)


# ------------------------------------------------------------------------------------------ bound terms
@dataclass(frozen=True)
class ElboTerms:
    """The terms of -log p(x_0) <= L_T + sum_{t=2}^T L_{t-1} + L_0 (eq. 5) per image, in nats summed over dims.

    prior [B] is L_T, kl [B, T - 1] holds L_{t-1} for t = 2..T (column t - 2), decoder [B] is
    L_0 = -log p_theta(x_0 | x_1); num_dims = C*H*W.
    """

    prior: Tensor
    kl: Tensor
    decoder: Tensor
    num_dims: int

    def __post_init__(self) -> None:
        B = self.prior.shape[0] if self.prior.ndim == 1 else -1
        if self.prior.ndim != 1 or self.decoder.shape != (B,) or self.kl.ndim != 2 or self.kl.shape[0] != B:
            raise ValueError(
                f"ElboTerms needs prior [B], kl [B, T-1], decoder [B]; got {tuple(self.prior.shape)}, "
                f"{tuple(self.kl.shape)}, {tuple(self.decoder.shape)}"
            )
        if self.num_dims < 1:
            raise ValueError(f"num_dims must be >= 1, got {self.num_dims}")

    @property
    def T(self) -> int:
        """The number of diffusion steps the terms cover."""
        return self.kl.shape[1] + 1

    def total(self) -> Tensor:
        """L_T + sum_t L_{t-1} + L_0 per image [B], nats (an upper bound on -log p_theta(x_0))."""
        return self.prior + self.kl.sum(dim=1) + self.decoder

    def bits_per_dim(self) -> Tensor:
        """total() / (num_dims ln 2) per image [B]."""
        return self.total() / (self.num_dims * LN2)

    def per_timestep_bits_per_dim(self) -> Tensor:
        """Batch-mean bits/dim of each term, [T + 1]: L_0, L_1, ..., L_{T-1}, then L_T.

        The entries sum to bits_per_dim().mean().
        """
        terms = torch.cat([self.decoder[:, None], self.kl, self.prior[:, None]], dim=1)  # [B, T + 1]
        return terms.mean(dim=0) / (self.num_dims * LN2)


def _check_batch_size(batch_size: object) -> int:
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be an integer >= 1, got {batch_size!r}")
    return batch_size


def _check_data(diffusion: GaussianDiffusion, x0: object) -> Tensor:
    diffusion.check_x("x0", x0)
    assert isinstance(x0, Tensor)
    if x0.ndim < 2:
        raise ValueError(f"x0 must have shape [B, ...] with at least one data dimension, got {tuple(x0.shape)}")
    _check_on_grid(x0)
    return x0


class _PerTimestepNoise:
    """eps for t-major (image, t) pairs: one torch.randn([B, ...]) per t, drawn in order t = 1..T on demand."""

    def __init__(self, generator: torch.Generator, x0: Tensor, dtype: torch.dtype) -> None:
        self.generator, self.x0, self.dtype = generator, x0, dtype
        self.t = 0
        self.block: Tensor | None = None

    def rows(self, start: int, end: int) -> Tensor:
        B = self.x0.shape[0]
        pieces = []
        p = start
        while p < end:
            t = p // B + 1
            if t != self.t:
                assert t == self.t + 1, "chunks must be visited in order"
                self.block = standard_normal(tuple(self.x0.shape), self.generator, self.dtype, self.x0.device)
                self.t = t
            lo, hi = p - (t - 1) * B, min(end - (t - 1) * B, B)
            pieces.append(self.block[lo:hi])  # type: ignore[index]  # set above on the first visit (t = 1)
            p = (t - 1) * B + hi
        return pieces[0] if len(pieces) == 1 else torch.cat(pieces)  # [end - start, ...]


def elbo_terms(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    generator: torch.Generator,
    variance: str | ReverseVariance = "beta",
    batch_size: int = 256,
    clip_x0: bool = False,
) -> ElboTerms:
    """Every term of the bound -log p_theta(x_0) <= L_T + sum_{t>=2} L_{t-1} + L_0 (eq. 5), one x_t per (image, t).

    Exact in t (all T terms), Monte Carlo only in x_t ~ q(x_t | x_0). Vectorised: the B*T (image, t) pairs
    are evaluated t-major in chunks of `batch_size` network inputs (module docstring for the noise order).
    `eps_model(x_t, t)` is called under torch.no_grad(); x_0 [B, ...] must lie on the 8-bit grid and on the
    diffusion's device. Terms are float64, on x_0's device.
    """
    choice = ReverseVariance.from_value(variance)
    return elbo_terms_by_variance(eps_model, diffusion, x0, generator, (choice,), batch_size, clip_x0)[choice.value]


def elbo_terms_by_variance(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    generator: torch.Generator,
    variances: Sequence[str | ReverseVariance],
    batch_size: int = 256,
    clip_x0: bool = False,
) -> dict[str, ElboTerms]:
    """`elbo_terms` under each of `variances` {value: ElboTerms}, from one pass of the network: the same x_t and the
    same eps_theta(x_t, t) (and v) serve every variance, so each result equals its own `elbo_terms` call bitwise."""
    choices = tuple(dict.fromkeys(ReverseVariance.from_value(variance) for variance in variances))
    if not choices:
        raise ValueError("variances must name at least one reverse variance")
    check_generator(generator)
    batch_size = _check_batch_size(batch_size)
    x0 = _check_data(diffusion, x0)
    B, T = x0.shape[0], diffusion.T
    f64 = torch.float64
    noise_dtype = compute_dtype(x0.dtype)
    x0_64 = x0.to(f64)
    k = pixel_index(x0)  # [B, ...]
    per_pair = {choice: torch.empty(T * B, dtype=f64, device=x0.device) for choice in choices}  # [T * B] each
    noise_source = _PerTimestepNoise(generator, x0, noise_dtype)
    pairs = torch.arange(T * B, device=x0.device)  # [T * B], pair p = (t - 1) * B + b
    with torch.no_grad():
        for start in range(0, T * B, batch_size):
            end = min(start + batch_size, T * B)
            p = pairs[start:end]
            t = torch.div(p, B, rounding_mode="floor") + 1  # [n]
            b = p - (t - 1) * B  # [n]
            noise = noise_source.rows(start, end).to(f64)  # [n, ...]
            x0_c = x0_64[b]
            xt = forward_sample(diffusion, x0_c, t, noise)  # [n, ...] float64
            eps, v_raw = model_output(eps_model, xt.to(x0.dtype), t)
            eps = eps.to(f64)
            n_decoder = max(0, min(end, B) - start)  # rows with t = 1 come first (t-major)
            for choice in choices:
                v = learned_output(choice, v_raw, f64)
                if n_decoder:
                    s = slice(0, n_decoder)
                    per_pair[choice][start : start + n_decoder] = decoder_terms(
                        diffusion, choice, k[b[s]], xt[s], t[s], eps[s], clip_x0, None if v is None else v[s]
                    )
                if n_decoder < end - start:
                    s = slice(n_decoder, None)
                    kl_rows = BoundRows(x0_c[s], xt[s], t[s], noise[s])
                    output = NetworkOutput(eps[s], None if v is None else v[s])
                    per_pair[choice][start + n_decoder : end] = kl_terms(diffusion, choice, kl_rows, output,
                                                                         clip_x0=clip_x0)
    prior = prior_term(diffusion, x0)
    out = {}
    for choice in choices:
        rows = per_pair[choice].reshape(T, B)  # [T, B], row t - 1
        out[choice.value] = ElboTerms(
            prior=prior.clone(),
            kl=rows[1:].T.contiguous(),  # [B, T - 1]
            decoder=rows[0].clone(),
            num_dims=x0[0].numel(),
        )
    return out


# ----------------------------------------------------------------------------------------- Monte Carlo
@dataclass(frozen=True)
class MonteCarloElbo:
    """An unbiased Monte Carlo estimate of the bound in bits/dim, averaged over images, with its standard error.

    num_images is B; num_draws is the total number of (image, t) draws, B * draws_per_image.
    """

    bits_per_dim: float
    stderr: float
    num_images: int
    num_draws: int


def _check_proposal(proposal: Tensor | npt.ArrayLike, T: int, device: torch.device) -> Tensor:
    """The proposal as a float64 probability vector [T] (renormalised); ValueError if invalid."""
    values = proposal.detach().cpu() if isinstance(proposal, Tensor) else proposal
    p = torch.as_tensor(np.asarray(values, dtype=np.float64))
    if p.shape != (T,):
        raise ValueError(f"proposal must be a probability vector of shape [T] = [{T}], got shape {tuple(p.shape)}")
    if not bool(torch.isfinite(p).all()) or not bool((p > 0).all()):
        raise ValueError("proposal probabilities must be finite and > 0 for every t (else the estimate is biased)")
    total = float(p.sum())
    if abs(total - 1.0) > 1e-6:
        raise ValueError(f"proposal must sum to 1, got {total!r}")
    return (p / total).to(device)


def _inverse_probabilities(proposal: Tensor | None, T: int, device: torch.device) -> Tensor:
    """1 / p(t) as float64 [T + 1] indexed by t (index 0 unused): T everywhere for the uniform proposal."""
    inv = torch.full((T + 1,), float(T), dtype=torch.float64, device=device)
    if proposal is not None:
        inv[1:] = 1.0 / proposal
    return inv


def _weighted_terms(
    eps_model: EpsModel, diffusion: GaussianDiffusion, choice: ReverseVariance, x0: Tensor, k: Tensor, t: Tensor,
    noise: Tensor, inv_p: Tensor, clip_x0: bool,
) -> Tensor:
    """L_T + L_{t-1} / p(t) per row [n] (nats, float64); rows may mix t = 1 and t >= 2 (no host sync)."""
    f64 = torch.float64
    x0_64, noise = x0.to(f64), noise.to(f64)
    xt = forward_sample(diffusion, x0_64, t, noise)  # [n, ...]
    eps, v = model_output(eps_model, xt.to(x0.dtype), t)
    eps, v = eps.to(f64), learned_output(choice, v, f64)
    term = bound_terms(diffusion, choice, BoundRows(x0_64, xt, t, noise, k), NetworkOutput(eps, v),
                       clip_x0=clip_x0)  # [n], L_{t-1}
    return prior_term(diffusion, x0) + term * inv_p[t]


def bound_estimate(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    proposal: Tensor | npt.ArrayLike | None = None,
    variance: str | ReverseVariance = "beta",
    clip_x0: bool = False,
) -> Tensor:
    """L_T + L_{t-1}(x_0, x_t) / p(t) per image [B] in nats, x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise.

    For t ~ p (uniform: p(t) = 1/T) and noise ~ N(0, I) this is an unbiased estimate of the bound of eq. 5;
    `elbo_monte_carlo` averages it. Exposed so that unbiasedness can be checked exactly by enumerating t:
    sum_t p(t) bound_estimate(..., t, noise) = L_T + sum_t L_{t-1}(noise).
    """
    choice = ReverseVariance.from_value(variance)
    x0 = _check_data(diffusion, x0)
    diffusion.check_like("noise", noise, x0, "x0")
    diffusion.check_t(t, x0)
    p = None if proposal is None else _check_proposal(proposal, diffusion.T, x0.device)
    inv_p = _inverse_probabilities(p, diffusion.T, x0.device)
    with torch.no_grad():
        return _weighted_terms(eps_model, diffusion, choice, x0, pixel_index(x0), t, noise, inv_p, bool(clip_x0))


def elbo_monte_carlo(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    generator: torch.Generator,
    draws_per_image: int = 1,
    proposal: Tensor | npt.ArrayLike | None = None,
    variance: str | ReverseVariance = "beta",
    batch_size: int = 256,
    clip_x0: bool = False,
) -> MonteCarloElbo:
    """Unbiased estimate of E[L_T + sum_t L_{t-1}] in bits/dim: t ~ Uniform{1..T} or t ~ proposal, weight 1/(T p(t)).

    Each of the B * draws_per_image draws is L_T (exact) + L_{t-1} / p(t) for one t and one x_t
    (`bound_estimate`). Draw order: all t first (draw-major, p = m B + b; one randint or multinomial call),
    then eps per chunk of `batch_size` rows (one randn each). The estimate is the mean over images of each
    image's mean over draws. Its standard error is the sample standard deviation of the per-image means over
    sqrt(B) (B >= 2; correct for images drawn i.i.d. from the data, conservative for a fixed set), or for a
    single image that of its draws over sqrt(draws_per_image); NaN when neither has two values.
    """
    choice = ReverseVariance.from_value(variance)
    check_generator(generator)
    batch_size = _check_batch_size(batch_size)
    if isinstance(draws_per_image, bool) or not isinstance(draws_per_image, int) or draws_per_image < 1:
        raise ValueError(f"draws_per_image must be an integer >= 1, got {draws_per_image!r}")
    x0 = _check_data(diffusion, x0)
    B, T, M = x0.shape[0], diffusion.T, draws_per_image
    device = x0.device
    p = None if proposal is None else _check_proposal(proposal, T, device)
    inv_p = _inverse_probabilities(p, T, device)
    if p is None:
        t_all = uniform_timesteps(M * B, T, generator, device)  # [M * B]
    else:
        t_all = torch.multinomial(p.to(generator.device), M * B, replacement=True, generator=generator).to(device) + 1
    k = pixel_index(x0)
    rows = torch.arange(M * B, device=device) % B  # [M * B], image of each draw
    estimates = torch.empty(M * B, dtype=torch.float64, device=device)
    with torch.no_grad():
        for start in range(0, M * B, batch_size):
            end = min(start + batch_size, M * B)
            b = rows[start:end]
            noise = standard_normal((end - start, *x0.shape[1:]), generator, compute_dtype(x0.dtype), device)
            estimates[start:end] = _weighted_terms(
                eps_model, diffusion, choice, x0[b], k[b], t_all[start:end], noise, inv_p, bool(clip_x0)
            )
    per_draw = estimates.reshape(M, B) / (x0[0].numel() * LN2)  # [M, B] bits/dim
    per_image = per_draw.mean(dim=0)  # [B]
    if B >= 2:
        stderr = float(per_image.std(unbiased=True)) / math.sqrt(B)
    elif M >= 2:
        stderr = float(per_draw[:, 0].std(unbiased=True)) / math.sqrt(M)
    else:
        stderr = float("nan")
    return MonteCarloElbo(
        bits_per_dim=float(per_image.mean()), stderr=stderr, num_images=B, num_draws=M * B
    )


__all__ = [
    "ElboTerms",
    "MonteCarloElbo",
    "bound_estimate",
    "discretized_gaussian_log_likelihood",
    "elbo_monte_carlo",
    "elbo_terms",
    "elbo_terms_by_variance",
    "normal_kl",
]
