"""Training objectives: L_simple of Algorithm 1, the true bound terms L_{t-1} (eq. 5), and their hybrid.

For a batch x_0 [B, ...], one t ~ Uniform{1, ..., T} and one eps ~ N(0, I) per image are drawn with the
injected generator (t first, one randint call; then eps, one randn call in x_0's compute dtype), and
x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps is passed to eps_model(x_t, t).

- "simple" (Algorithm 1): mean over the batch and over the C*H*W dimensions of (eps - eps_theta)^2, i.e.
  ||eps - eps_theta||^2 / (C*H*W) averaged over images (the per-dimension mean only rescales the paper's loss).
- "vlb": the bound term of the sampled t in nats per dimension, averaged over the batch:
  L_{t-1} = KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)) for t >= 2 and L_0 = -log p_theta(x_0 | x_1)
  (discretised decoder) for t = 1, with the reverse variance `variance` (tabled: sigma_1^2 = beta_1). Not
  multiplied by T: T * vlb + L_T / (C*H*W) is an unbiased estimate of the bound per dimension. Training does
  not clip x0_hat. The decoder snaps x_0 to the nearest of the 256 grid values (data must already be
  k / 127.5 - 1; this function does no host-syncing check).
- "hybrid" (Nichol & Dhariwal 2021, Section 3.1): L_simple + lambda L_vlb with lambda = 0.001 and L_vlb the whole
  bound per dimension, estimated at the sampled t by T * L_{t-1} / (C*H*W) (nats; improved-diffusion adds
  T / 1000 times the term in bits, the same up to the factor 1 / ln 2). For a model that learns its variance
  (`variance="learned"`), the mean inside L_vlb is made from eps_theta behind a stop-gradient, so L_simple alone
  trains the mean and lambda L_vlb the variance (derivation (k)). With a fixed variance nothing would be left for
  L_vlb to train behind that stop-gradient, so it keeps its gradient through the mean.
- "hybrid" with `decoder_trains_mean` (derivation (n)): at t = 1 the loss of a row is lambda T L_0 / (C*H*W) alone,
  with its gradient through the mean as well as the variance, and no L_simple. At t = 1 L_simple trains eps_theta
  towards E[eps | x_1], i.e. the decoder's mean towards E[x_0 | x_1]; for a pixel in an edge bin (k = 0 or 255, the
  open bins, most of MNIST) that mean sits at the bin's centre -1 or 1, where the bin holds only
  Phi(1 / (255 sigma_1)) of the decoder's mass (0.65 at sigma_1 = sqrt(beta_1) = 0.01: 0.62 bits per such pixel),
  while -log p_theta(x_0 | x_1) keeps falling as the mean moves out past the edge. Rows with t >= 2 are unchanged.

The learned variance needs a model with 2C output channels ([eps, v], `ModelConfig.learn_variance`); L_simple uses
the eps half. A learned model may also be trained with "simple" (its v then gets no gradient) or "vlb".
"""

from __future__ import annotations

import torch

from ddpm.core.choices import Choice
from ddpm.core.diffusion import GaussianDiffusion, check_generator, standard_normal, uniform_timesteps
from ddpm.core.forward import compute_dtype, forward_sample
from ddpm.core.kernels import BoundRows, EpsModel, NetworkOutput, bound_terms, model_output, pixel_index
from ddpm.core.variance import ReverseVariance, learned_output

Tensor = torch.Tensor

SMALL_T_MAX = 10  # K: the small-t draws of `training_timesteps` come from {1..K}
HYBRID_VLB_WEIGHT = 0.001  # lambda of Nichol & Dhariwal (2021), L_hybrid = L_simple + lambda L_vlb (L_vlb = T E_t L_t)


class Objective(Choice):
    """The training objective: Algorithm 1's L_simple, the variational bound, or simple + 0.001 vlb."""

    SIMPLE = "simple"
    VLB = "vlb"
    HYBRID = "hybrid"


def training_loss(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    generator: torch.Generator,
    objective: str | Objective = "simple",
    variance: str | ReverseVariance = "beta",
) -> Tensor:
    """Algorithm 1: E_{t,eps} ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2, or the bound.

    Returns a scalar tensor in x_0's compute dtype with gradients to eps_model's parameters. See the module
    docstring for the objectives; `variance` matters only for "vlb" and "hybrid". x_0 [B, ...] must be on the
    diffusion's device (no host sync: the only checks are on shapes, dtypes and devices).
    """
    Objective.from_value(objective)
    ReverseVariance.from_value(variance)
    check_generator(generator)
    diffusion.check_x("x0", x0)
    B = x0.shape[0]
    dtype = compute_dtype(x0.dtype)
    t = uniform_timesteps(B, diffusion.T, generator, x0.device)  # [B]
    noise = standard_normal(tuple(x0.shape), generator, dtype, x0.device)  # [B, ...]
    return training_loss_at(eps_model, diffusion, x0, t, noise, objective, variance)


def training_timesteps(n: int, T: int, generator: torch.Generator, device: torch.device,
                       small_t_fraction: float = 0.0) -> tuple[Tensor, Tensor | None]:
    """(t int64 [n], L_simple weights float32 [n] or None): Algorithm 1's t ~ Uniform{1..T}, or the small-t mixture.

    small_t_fraction m = 0: `uniform_timesteps` (one randint), weights None. m > 0: p(t) = (1 - m) / T + m [t <= K] / K
    with K = min(SMALL_T_MAX, T), drawn as t_u ~ U{1..T} (randint [n]), a coin c ~ U(0, 1) (rand [n]), t_s ~ U{1..K}
    (randint [n]), t = t_s where c < m else t_u; weight (1 / T) / p(t), so that E_p[weight f(t)] = mean_t f(t).
    """
    t = uniform_timesteps(n, T, generator, device)  # [n]
    if small_t_fraction == 0.0:
        return t, None
    K = min(SMALL_T_MAX, T)
    coin = torch.rand(n, generator=generator, device=generator.device).to(device)  # [n]
    small = torch.randint(1, K + 1, (n,), generator=generator, device=generator.device).to(device)  # [n]
    t = torch.where(coin < small_t_fraction, small, t)
    p = (1.0 - small_t_fraction) / T + small_t_fraction * (t <= K).to(torch.float64) / K  # [n]
    return t, (1.0 / (T * p)).to(torch.float32)


def training_loss_at(
    eps_model: EpsModel,
    diffusion: GaussianDiffusion,
    x0: Tensor,
    t: Tensor,
    noise: Tensor,
    objective: str | Objective = "simple",
    variance: str | ReverseVariance = "beta",
    simple_weights: Tensor | None = None,
    decoder_trains_mean: bool = False,
) -> Tensor:
    """`training_loss` at given draws: t int64 [B] in {1..T} and eps = `noise` [B, ...] in x_0's compute dtype.

    `simple_weights` [B] (from `training_timesteps`) reweight each image's L_simple term (not the L_vlb term).
    `decoder_trains_mean` ("hybrid" only): rows with t = 1 train mean and variance on L_0 alone (module docstring).

    `training_loss(..., generator)` is exactly this function at the t and eps it draws. Callers that draw
    the randomness of a larger batch and keep a slice of it (the data-parallel trainer) use it directly.
    Only shapes, dtypes and devices are checked (no host sync): t must already lie in {1..T}.
    """
    choice_objective = Objective.from_value(objective)
    choice_variance = ReverseVariance.from_value(variance)
    if not isinstance(decoder_trains_mean, bool):
        raise ValueError(f"decoder_trains_mean must be a bool, got {decoder_trains_mean!r}")
    if decoder_trains_mean and choice_objective is not Objective.HYBRID:
        raise ValueError(f"decoder_trains_mean needs the 'hybrid' objective, got {choice_objective.value!r}")
    diffusion.check_x("x0", x0)
    dtype = compute_dtype(x0.dtype)
    if not isinstance(t, Tensor) or t.dtype != torch.int64 or t.shape != x0.shape[:1] or t.device != x0.device:
        got = (t.dtype, tuple(t.shape), str(t.device)) if isinstance(t, Tensor) else type(t).__name__
        raise ValueError(f"t must be an int64 tensor of shape [{x0.shape[0]}] on {x0.device}, got {got}")
    if (not isinstance(noise, Tensor) or noise.shape != x0.shape or noise.dtype != dtype
            or noise.device != x0.device):
        got = ((noise.dtype, tuple(noise.shape), str(noise.device)) if isinstance(noise, Tensor)
               else type(noise).__name__)
        raise ValueError(f"noise must be a {dtype} tensor of shape {tuple(x0.shape)} on {x0.device}, got {got}")
    xt = forward_sample(diffusion, x0, t, noise)  # [B, ...] in x0.dtype
    eps, v = model_output(eps_model, xt, t)
    eps, v = eps.to(dtype), learned_output(choice_variance, v, dtype)
    if simple_weights is None and not decoder_trains_mean:
        simple = ((noise - eps) ** 2).mean()
    else:
        per_image = ((noise - eps) ** 2).reshape(x0.shape[0], -1).mean(dim=1)  # [B]
        if simple_weights is not None:
            per_image = simple_weights.to(dtype) * per_image
        if decoder_trains_mean:  # no L_simple at t = 1: L_0 trains the decoder's mean there
            per_image = torch.where(t == 1, torch.zeros((), dtype=dtype, device=x0.device), per_image)
        simple = per_image.mean()
    if choice_objective is Objective.SIMPLE:
        return simple
    # Hybrid with a learned variance: the stop-gradient of derivation (k) on the mean inside L_vlb (not at t = 1
    # with decoder_trains_mean).
    eps_mean = eps.detach() if choice_objective is Objective.HYBRID and choice_variance.is_learned else eps
    if decoder_trains_mean and choice_variance.is_learned:
        eps_mean = torch.where((t == 1).reshape(-1, *([1] * (eps.ndim - 1))), eps, eps_mean)
    x0c = x0.to(dtype)
    # L_{t-1} / (C*H*W) per image in nats (KL for t >= 2, decoder for t = 1), the means made from eps_mean.
    rows = BoundRows(x0c, xt.to(dtype), t, noise, pixel_index(x0c))
    vlb = (bound_terms(diffusion, choice_variance, rows, NetworkOutput(eps, v, eps_mean), clip_x0=False)
           / x0[0].numel()).mean()
    if choice_objective is Objective.VLB:
        return vlb
    return simple + HYBRID_VLB_WEIGHT * diffusion.T * vlb


__all__ = ["HYBRID_VLB_WEIGHT", "Objective", "SMALL_T_MAX", "training_loss", "training_loss_at", "training_timesteps"]
