"""The decoder's interior bins: how far "density times bin width" is from the exact L_0, measured on the exact subset.

For a pixel x in an interior bin (k = 1..254, half-width h = 1/255) the discretised decoder's cost splits exactly as
-log P(bin) = -log N(x; mu, sigma^2) - log 2h + E(delta, eta), delta = (x - mu)/sigma, eta = h/sigma, with
E = -log[(Phi(delta + eta) - Phi(delta - eta)) / (2 eta phi(delta))] (derivation (t), `derivations.interior_bin`:
E ~ -eta^2 (delta^2 - 1)/6 for small eta, E > 0 for |delta| <= 1). The edge bins k = 0 and 255 are open and have no
density-times-width form; they keep their exact cost.

`decoder_bins` evaluates the decoder as the model has it (mu_theta(x_1, 1) and sigma_1 per pixel, the learned
Sigma_theta included) on the exact bound's subset and x_1: the subset from phase_generator(seed, "subset_exact"), x_1
from the first draw of phase_generator(seed, "elbo_exact") (the exact bound draws t = 1 first;
`ddpm.core.bound.elbo_terms_by_variance`), so its L_0 is the exact bound's L_0 (up to the network's batching). It
costs one network pass over the subset at t = 1. `checkpoint_decoder_bins(path)` does the same for a checkpoint file
with its preset's settings, without the rest of an evaluation.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass

import torch

from ddpm.core.bound import BIN_HALF_WIDTH
from ddpm.core.diffusion import GaussianDiffusion, standard_normal
from ddpm.core.forward import compute_dtype, forward_sample, gather
from ddpm.core.kernels import NUM_BINS, discretized_log_prob, model_output, pixel_index
from ddpm.core.reverse import learned_log_variance, reverse_mean
from ddpm.core.variance import ReverseVariance, learned_output
from ddpm.evaluation.bounds import BoundSettings
from ddpm.evaluation.errors import EvaluationError
from ddpm.evaluation.randomness import phase_generator, random_subset
from ddpm.images import data
from ddpm.runtime.devices import resolve_device
from ddpm.training.checkpoint import build_eps_model, diffusion_from, load_checkpoint

Tensor = torch.Tensor
LN2 = math.log(2.0)
METRICS_KEY = "decoder_interior_bins"


def density_width_cost(k: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """-log N(x_k; mean, std^2) - log 2h in float64, x_k = k / 127.5 - 1 the centre of bin k (shapes broadcast)."""
    x = k.to(torch.float64) / 127.5 - 1.0
    mean, std = mean.to(torch.float64), std.to(torch.float64)
    return 0.5 * math.log(2 * math.pi) + torch.log(std) + 0.5 * ((x - mean) / std) ** 2 - math.log(2 * BIN_HALF_WIDTH)


def is_interior(k: Tensor) -> Tensor:
    """True for the interior bins k = 1..254 (the edge bins 0 and 255 extend to -inf and +inf)."""
    return (k > 0) & (k < NUM_BINS - 1)


def interior_bin_error(k: Tensor, mean: Tensor, std: Tensor) -> Tensor:
    """E = -log P(bin k) - (-log N(x_k; mean, std^2) - log 2h) in float64 for interior bins; 0 for the edge bins.

    -log P is the library's own decoder (`ddpm.core.kernels.discretized_log_prob`, exact normal CDF), so E is what it
    loses to density times width: derivation (t)'s E(delta, eta).
    """
    error = -discretized_log_prob(k, mean, std) - density_width_cost(k, mean, std)
    return torch.where(is_interior(k), error, torch.zeros_like(error))


def decoder_parameters(eps_model, diffusion: GaussianDiffusion, x0: Tensor, generator: torch.Generator,
                       variance: str | ReverseVariance, *, clip_x0: bool = False,
                       batch_size: int = 256) -> tuple[Tensor, Tensor]:
    """(mu_theta(x_1, 1), sigma_1) per pixel, float64 [B, ...] each, with x_1 = sqrt(alpha_bar_1) x_0 +
    sqrt(1 - alpha_bar_1) eps and eps the first torch.randn([B, ...]) of `generator` (the exact bound's t = 1 draw).

    x_0 [B, ...] in [-1, 1] on the diffusion's device; sigma_1 is the fixed sqrt of the chosen variance's sigma_1^2
    or, for "learned", exp(log Sigma_theta(v) / 2) per pixel (`ddpm.core.kernels.decoder_terms`' decoder).
    """
    choice = ReverseVariance.from_value(variance)
    f64 = torch.float64
    noise = standard_normal(tuple(x0.shape), generator, compute_dtype(x0.dtype), x0.device).to(f64)
    t = torch.ones(x0.shape[0], dtype=torch.int64, device=x0.device)
    xt = forward_sample(diffusion, x0.to(f64), t, noise)  # [B, ...] float64
    eps_parts, v_parts = [], []
    with torch.no_grad():
        for start in range(0, x0.shape[0], batch_size):
            rows = slice(start, start + batch_size)
            eps, v_raw = model_output(eps_model, xt[rows].to(x0.dtype), t[rows])
            eps_parts.append(eps.to(f64))
            v_parts.append(learned_output(choice, v_raw, f64))
    mean = reverse_mean(diffusion, torch.cat(eps_parts), xt, t, clip_x0)
    if choice.is_learned:
        std = torch.exp(0.5 * learned_log_variance(diffusion, torch.cat(v_parts), t, f64))  # type: ignore[arg-type]
    else:
        std = gather(diffusion.reverse_std(choice), t, xt, f64).expand_as(xt)
    return mean, std


@dataclass(frozen=True)
class DecoderBins:
    """The decoder's cost on the exact subset, exact and by density times width, in bits/dim (mean over images).

    decoder_bits_per_dim: L_0 (every bin exact); density_width_bits_per_dim: L_0 with each interior bin's cost
    replaced by -log N(x; mu, sigma^2) - log 2h; error_bits_per_dim: their difference, the mean over images of the
    sum of E over interior pixels / (C H W ln 2), and its standard error (NaN below 2 images); interior_fraction:
    pixels in interior bins; sigma_over_h_*: sigma_1 / h over the interior pixels.
    """

    variance: str
    num_images: int
    decoder_bits_per_dim: float
    density_width_bits_per_dim: float
    error_bits_per_dim: float
    error_bits_per_dim_stderr: float
    interior_fraction: float
    sigma_over_h_mean: float
    sigma_over_h_min: float
    sigma_over_h_max: float
    seconds: float

    def metrics(self) -> dict:
        """The metrics.json entry (`METRICS_KEY`)."""
        return {"variance": self.variance, "images": self.num_images,
                "decoder_bits_per_dim": self.decoder_bits_per_dim,
                "density_width_bits_per_dim": self.density_width_bits_per_dim,
                "error_bits_per_dim": self.error_bits_per_dim,
                "error_bits_per_dim_stderr": self.error_bits_per_dim_stderr,
                "interior_fraction": self.interior_fraction, "sigma_over_h_mean": self.sigma_over_h_mean,
                "sigma_over_h_min": self.sigma_over_h_min, "sigma_over_h_max": self.sigma_over_h_max,
                "seconds": self.seconds}


def summarise_decoder_bins(x0: Tensor, mean: Tensor, std: Tensor, variance: str, seconds: float = 0.0) -> DecoderBins:
    """DecoderBins of data x_0 [B, ...] under the decoder N(mean, std^2) per pixel (float64 [B, ...] each)."""
    k = pixel_index(x0)
    per_dim = x0[0].numel() * LN2
    cost = -discretized_log_prob(k, mean, std).reshape(x0.shape[0], -1).sum(1) / per_dim  # [B]
    error = interior_bin_error(k, mean, std).reshape(x0.shape[0], -1).sum(1) / per_dim  # [B]
    inside = is_interior(k)
    ratio = (std / BIN_HALF_WIDTH)[inside]
    n = x0.shape[0]
    stderr = float(error.std(unbiased=True)) / math.sqrt(n) if n >= 2 else math.nan
    any_inside = bool(inside.any())
    return DecoderBins(
        variance=variance, num_images=n, decoder_bits_per_dim=float(cost.mean()),
        density_width_bits_per_dim=float((cost - error).mean()), error_bits_per_dim=float(error.mean()),
        error_bits_per_dim_stderr=stderr, interior_fraction=float(inside.to(torch.float64).mean()),
        sigma_over_h_mean=float(ratio.mean()) if any_inside else math.nan,
        sigma_over_h_min=float(ratio.min()) if any_inside else math.nan,
        sigma_over_h_max=float(ratio.max()) if any_inside else math.nan, seconds=seconds,
    )


def decoder_bins(eps_model, diffusion: GaussianDiffusion, test_images: Tensor, settings: BoundSettings, *,
                 device: torch.device | str = "cpu") -> DecoderBins | None:
    """DecoderBins on the exact bound's subset and x_1 (module docstring) under `settings.variance`; None when the
    exact subset is empty. Reads exact_images, seed, variance, clip_x0 and batch_size of `settings`."""
    if settings.exact_images == 0:
        return None
    start = time.perf_counter()
    device = torch.device(device)
    diffusion = diffusion.to(device)
    index = random_subset(test_images.shape[0], settings.exact_images, phase_generator(settings.seed, "subset_exact"))
    x0 = data.to_model_range(test_images[index]).to(device)  # [n, C, H, W]
    mean, std = decoder_parameters(eps_model, diffusion, x0, phase_generator(settings.seed, "elbo_exact", device),
                                   settings.variance, clip_x0=settings.clip_x0, batch_size=settings.batch_size)
    choice = ReverseVariance.from_value(settings.variance).value
    return summarise_decoder_bins(x0, mean, std, choice, time.perf_counter() - start)


def checkpoint_decoder_bins(checkpoint_path: str | os.PathLike, *, variance: str | None = None,
                            device: str | torch.device | None = "cpu") -> DecoderBins | None:
    """`decoder_bins` of a checkpoint file with its preset's EvaluationConfig and its seed (what `evaluate` measures
    without overrides), the EMA model; `variance` replaces the preset's ("optimal" needs Gamma_t: refused)."""
    checkpoint = load_checkpoint(checkpoint_path)
    config = checkpoint.preset.evaluation
    chosen = ReverseVariance.from_value(variance or config.variance)
    if chosen is ReverseVariance.OPTIMAL:
        raise EvaluationError("checkpoint_decoder_bins: the 'optimal' variance needs Gamma_t; run evaluate instead")
    torch_device = resolve_device(device)
    settings = BoundSettings.from_config(config, int(checkpoint.seed))
    settings = BoundSettings(exact_images=settings.exact_images, seed=settings.seed, variance=chosen.value,
                             clip_x0=settings.clip_x0, batch_size=settings.batch_size)
    return decoder_bins(build_eps_model(checkpoint, use_ema=True, device=torch_device),
                        diffusion_from(checkpoint).to(torch_device), data.load_images(checkpoint.dataset, "test"),
                        settings, device=torch_device)


__all__ = [
    "METRICS_KEY",
    "DecoderBins",
    "checkpoint_decoder_bins",
    "decoder_bins",
    "decoder_parameters",
    "density_width_cost",
    "interior_bin_error",
    "is_interior",
    "summarise_decoder_bins",
]
