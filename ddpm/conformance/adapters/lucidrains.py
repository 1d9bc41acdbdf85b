"""Adapter for lucidrains' denoising-diffusion-pytorch `GaussianDiffusion` (objectives pred_noise, pred_x0, pred_v).

Tested with denoising-diffusion-pytorch 2.3.4 (`denoising_diffusion_pytorch/denoising_diffusion_pytorch.py`).
Configuration: T = 1000 (`timesteps`), `beta_schedule` "linear" (rescaled by 1000 / T, like ours) or "cosine",
`objective="pred_noise"` (the library default is pred_v with a sigmoid schedule), `auto_normalize=False`.
Timesteps are the library's (paper t - 1); its buffers are float32 (computed in float64, then cast).

Configurations (`factory()`): pred_noise with the linear and cosine schedules (family "default"); pred_x0 and pred_v
with the linear schedule (family "objective"); pred_noise, linear, with `min_snr_loss_weight=True` (gamma 5; family
"min_snr_loss_weight"), which changes only the loss and so offers no chains (they are the pred_noise row's).
How each objective becomes x_0 and eps (`model_predictions`): pred_noise: x0_hat = x_t / sqrt(a) - sqrt(1 / a - 1)
eps; pred_x0: the output is x0_hat and eps = (x_t / sqrt(a) - x0_hat) / sqrt(1 / a - 1); pred_v: x0_hat =
sqrt(a) x_t - sqrt(1 - a) v, eps re-derived from x0_hat the same way (a = alpha_bar_t). `p_sample` clips x0_hat to
[-1, 1] for every objective before the posterior mean; `ddim_sample` clips it and (for every objective) uses the eps
re-derived from the clipped x0_hat. The adapter declares `prediction` (X0, V) so the suite passes the network
output in that parameterisation. `p_losses` weights each image's mean squared error by the `loss_weight` buffer:
snr / snr = 1 (pred_noise), snr (pred_x0), snr / (snr + 1) = alpha_bar_t (pred_v), snr = a / (1 - a), with snr
clamped at gamma first under min_snr_loss_weight; `loss_weights()` returns that buffer (its values are checked
against those formulas in tests/conformance/test_adapters.py).

Why auto_normalize=False: with True, `forward()` maps data [0, 1] -> [-1, 1] and both samplers end with
`unnormalize` ([-1, 1] -> [0, 1]); with False both are the identity, so `p_sample_loop` and `ddim_sample` return
x_0 in [-1, 1] and `p_losses` sees x_0 as given (it never normalises: only `forward()` does).

The network is `EpsModel`, a stand-in with the attributes the constructor reads (`channels`, `out_dim`,
`self_condition`, `random_or_learned_sinusoidal_cond`) that returns a given output (eps, x_0 or v, per objective) or
calls a given model.
How each operation reaches the library:
- `reverse_step`: `p_sample(xt, t)`. It draws its noise as `torch.randn_like(x)` (only for t > 0); the adapter
  replaces `torch.randn_like` by a function returning z for the duration of the call. p_sample always clips
  x0_hat to [-1, 1] (declared: Convention.CLIPS_X0).
- `q_sample`, `q_posterior` (mean and variance of its (mean, variance, log_variance)), `training_loss` =
  `p_losses(x_start, t, noise)`, the batch mean of loss_weight_t ||target - output||^2 / (C H W).
- `chains()`: `p_sample_loop` (T ancestral steps) and `ddim_sample` with sampling_timesteps = 50 and
  ddim_sampling_eta 0 and 1, one GaussianDiffusion per configuration. They draw from the GLOBAL torch RNG
  (`torch.randn`, `torch.randn_like`): a run forks the CPU RNG (`torch.random.fork_rng`), seeds it from the
  caller's generator and restores it afterwards. Their tqdm progress bars are silenced (the module's `tqdm` name
  is replaced by the identity during a run). A chain resumed from x_t at timestep t runs the library's own loop
  with two replacements: `tqdm` keeps the loop's items from t on, and the initial `torch.randn(shape)` returns
  x_t (it still draws, so the later draws are those of a full run).
Not offered: a single DDIM step (DDIM is covered by the chains) and strided ancestral sampling.
Patching `torch.randn_like` and `torch.randn` is process-global while a step runs: do not call these adapters from
several threads.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
from collections.abc import Callable, Iterator, Mapping
from functools import partial
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import torch
from torch import nn

from ddpm.conformance.adapters.snippets import snippet_tensors
from ddpm.conformance.protocol import (
    AdapterError,
    Chain,
    ChainKind,
    Convention,
    Prediction,
    ScheduleKind,
    ScheduleSpec,
    VarianceKind,
)

Tensor = torch.Tensor
EpsFn = Callable[[Tensor, Tensor], Tensor]

TESTED_VERSION = "2.3.4"
DISTRIBUTION = "denoising-diffusion-pytorch"
INSTALL_HINT = "denoising-diffusion-pytorch is not installed: pip install 'ddpm-verified[conformance]'"
POSTERIOR_VARIANCE = "posterior variance (log clamped at 1e-20)"
SCHEDULES = ("linear", "cosine")
IMAGE_SIZE = 2  # the suite feeds [B, 1, 2, 2]; only sample()/forward() read image_size
CHANNELS = 1
DDIM_STEPS = 50
DDIM_ETAS = (0.0, 1.0)
OBJECTIVES = {"pred_noise": Prediction.EPS, "pred_x0": Prediction.X0, "pred_v": Prediction.V}
MIN_SNR_GAMMA = 5  # the library's default min_snr_gamma
OUTPUT_NAMES = {"pred_noise": "eps", "pred_x0": "x0_pred", "pred_v": "v_pred"}  # as the suite names a failure's input


def import_lucidrains() -> ModuleType:
    """The module `denoising_diffusion_pytorch.denoising_diffusion_pytorch`; AdapterError when not importable."""
    try:
        import denoising_diffusion_pytorch.denoising_diffusion_pytorch as module
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "denoising_diffusion_pytorch"
        # A dependency it imports (einops, ema-pytorch, accelerate, ...) is named; the package itself is not.
        detail = "" if missing.split(".")[0] == "denoising_diffusion_pytorch" else f" (missing {missing!r})"
        raise AdapterError(INSTALL_HINT + detail) from exc
    return module


class EpsModel(nn.Module):
    """A stand-in for lucidrains' Unet: eps_theta(x, t) = `eps_fn(x, t)` (set per call by the adapter)."""

    def __init__(self, channels: int = CHANNELS) -> None:
        super().__init__()
        self.channels = channels  # GaussianDiffusion asserts channels == out_dim
        self.out_dim = channels
        self.self_condition = False
        self.random_or_learned_sinusoidal_cond = False
        self.eps_fn: EpsFn | None = None

    def forward(self, x: Tensor, t: Tensor, x_self_cond: Tensor | None = None) -> Tensor:
        if self.eps_fn is None:
            raise RuntimeError("EpsModel called outside an adapter operation (no eps set)")
        return self.eps_fn(x, t)

    @contextlib.contextmanager
    def returning(self, eps_fn: EpsFn) -> Iterator[None]:
        """Within the block the model computes eps_fn(x, t)."""
        self.eps_fn = eps_fn
        try:
            yield
        finally:
            self.eps_fn = None


def _constant(eps: Tensor) -> EpsFn:
    def eps_fn(x: Tensor, t: Tensor) -> Tensor:
        if eps.shape != x.shape:
            raise ValueError(f"eps has shape {tuple(eps.shape)}, x has shape {tuple(x.shape)}")
        return eps

    return eps_fn


def _cast(eps_model: EpsFn, dtype: torch.dtype) -> EpsFn:
    return lambda x, t: eps_model(x, t).to(dtype)


@contextlib.contextmanager
def _randn_like_returning(z: Tensor) -> Iterator[None]:
    """Within the block torch.randn_like(x) returns z (shape-checked)."""

    def draw(x: Tensor, *args: Any, **kwargs: Any) -> Tensor:
        if x.shape != z.shape:
            raise ValueError(f"the library asked for noise like {tuple(x.shape)}, z has shape {tuple(z.shape)}")
        return z.to(device=x.device, dtype=x.dtype)

    with mock.patch("torch.randn_like", draw):
        yield


def _entered_at(start: int) -> Callable[..., list[Any]]:
    """A stand-in for the module's `tqdm` that keeps the loop's items from timestep `start` on: p_sample_loop iterates
    over timesteps t, ddim_sample over pairs (t, t_next)."""

    def steps(iterable: Any, **kwargs: Any) -> list[Any]:
        return [item for item in iterable if (item[0] if isinstance(item, tuple) else item) <= start]

    return steps


@contextlib.contextmanager
def _randn_returning(x: Tensor) -> Iterator[None]:
    """Within the block torch.randn(shape) still draws (so later draws are a full run's) but returns x: the samplers'
    initial draw becomes the given x_t."""
    draw_from_rng = torch.randn

    def draw(*args: Any, **kwargs: Any) -> Tensor:
        drawn = draw_from_rng(*args, **kwargs)
        if drawn.shape != x.shape:
            raise ValueError(f"the library drew noise of shape {tuple(drawn.shape)}, x_t has shape {tuple(x.shape)}")
        return x.to(device=drawn.device, dtype=drawn.dtype).clone()

    with mock.patch("torch.randn", draw):
        yield


class LucidrainsAdapter:
    """lucidrains GaussianDiffusion(objective, beta_schedule, T) behind the adapter protocol (base 0, float32)."""

    timestep_base = 0
    dtype = torch.float32
    variances = {POSTERIOR_VARIANCE: VarianceKind.BETA_TILDE}

    def __init__(self, schedule: str = "linear", T: int = 1000, objective: str = "pred_noise",
                 min_snr_loss_weight: bool = False) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; options: {list(SCHEDULES)}")
        if objective not in OBJECTIVES:
            raise ValueError(f"unknown objective {objective!r}; options: {list(OBJECTIVES)}")
        self._module = import_lucidrains()
        self.schedule = ScheduleSpec(ScheduleKind(schedule), T, rescaled=True)
        self.beta_schedule = schedule
        self.T = T
        self.objective = objective
        self.prediction = OBJECTIVES[objective]
        self.min_snr_loss_weight = bool(min_snr_loss_weight)
        self.name = f"lucidrains GaussianDiffusion({objective}, {schedule}, T={T})"
        self.family, self.options = "default", {}
        if self.min_snr_loss_weight:
            self.name = (f"lucidrains GaussianDiffusion({objective}, {schedule}, T={T}, min_snr_loss_weight=True, "
                         f"min_snr_gamma={MIN_SNR_GAMMA})")
            self.family = "min_snr_loss_weight"
            self.options = {"objective": objective, "min_snr_loss_weight": True, "min_snr_gamma": MIN_SNR_GAMMA}
        elif objective != "pred_noise":
            self.family, self.options = "objective", {"objective": objective}
        self.version = f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}"
        self.model = EpsModel()
        self.diffusion = self._build(sampling_timesteps=None, eta=0.0)  # sample() would run p_sample_loop
        self._ddim = {eta: self._build(sampling_timesteps=DDIM_STEPS, eta=eta) for eta in DDIM_ETAS}
        self._ddim_visited: list[int] | None = None
        self.conventions = {
            Convention.CLIPS_X0: (
                "p_sample calls p_mean_variance(clip_denoised=True), which does x_start.clamp_(-1., 1.) before "
                "the posterior mean; ddim_sample calls model_predictions(clip_x_start=True, "
                "rederive_pred_noise=True): it clips x0_hat and re-derives eps from the clipped x0_hat"),
            Convention.TIMESTEPS: (
                "ddim_sample visits reversed(linspace(-1, T - 1, S + 1).int()) without the final -1 (x_0 = the "
                f"clipped x0_hat): S = {DDIM_STEPS}, T = {T}: {T - 1}, {T - 1 - T // DDIM_STEPS}, ..., "
                f"{T // DDIM_STEPS - 1} (paper t = T, ..., {T // DDIM_STEPS}); .int() truncates, so the grid is "
                "uneven when S does not divide T"),
        }

    def _build(self, sampling_timesteps: int | None, eta: float) -> Any:
        return self._module.GaussianDiffusion(
            self.model, image_size=IMAGE_SIZE, timesteps=self.T, sampling_timesteps=sampling_timesteps,
            objective=self.objective, beta_schedule=self.beta_schedule, ddim_sampling_eta=eta, auto_normalize=False,
            min_snr_loss_weight=self.min_snr_loss_weight, min_snr_gamma=MIN_SNR_GAMMA)

    def _t(self, t: int, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), int(t), dtype=torch.int64)  # [B]

    # -- required members -------------------------------------------------------------------------------------

    def betas(self) -> np.ndarray:
        return self.diffusion.betas.numpy().copy()  # float32 [T]

    def alpha_bars(self) -> np.ndarray:
        return self.diffusion.alphas_cumprod.numpy().copy()  # float32 [T]

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor:
        return self.diffusion.q_sample(x0, self._t(t, x0), noise)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        mean, variance, _log_variance = self.diffusion.q_posterior(x0, xt, self._t(t, x0))
        return mean, variance

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        if variance != POSTERIOR_VARIANCE:
            raise ValueError(f"unknown variance option {variance!r}; options: [{POSTERIOR_VARIANCE!r}]")
        with self.model.returning(_constant(eps)), _randn_like_returning(z):
            x_prev, _x0_hat = self.diffusion.p_sample(xt, int(t))
        return x_prev.clone()  # p_sample runs under inference_mode: return an ordinary tensor

    def training_loss(self, eps_model: EpsFn, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        with self.model.returning(eps_model):
            return self.diffusion.p_losses(x0, t, noise)

    def loss_weights(self) -> np.ndarray:
        """The per-timestep weights [T] p_losses applies: the model's own `loss_weight` buffer (float32)."""
        return self.diffusion.loss_weight.numpy().copy()

    # -- chains -----------------------------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        if self.min_snr_loss_weight:  # sampling does not read the loss weights: the same chains as without them
            return []
        visited = list(range(self.T - 1, -1, -1))
        out = [Chain("p_sample_loop", ChainKind.ANCESTRAL, visited, partial(self._run, self.diffusion.p_sample_loop),
                     variance=POSTERIOR_VARIANCE,
                     resume=partial(self._resume, self.diffusion.p_sample_loop, visited))]
        visited = self._visited_ddim_timesteps()
        for eta, diffusion in self._ddim.items():
            out.append(Chain(f"ddim_sample(sampling_timesteps={DDIM_STEPS}, ddim_sampling_eta={eta:g})",
                             ChainKind.DDIM, visited, partial(self._run, diffusion.ddim_sample), eta=eta,
                             resume=partial(self._resume, diffusion.ddim_sample, visited)))
        return out

    def _run(self, sampler: Callable[[tuple[int, ...]], Tensor], eps_model: EpsFn, shape: tuple[int, ...],
             generator: torch.Generator, start: tuple[int, Tensor] | None = None) -> Tensor:
        """sampler(shape) with the global CPU RNG seeded from `generator` (and restored afterwards); with
        `start` = (t, x_t), entered at t from x_t (`_entered_at`)."""
        seed = int(torch.randint(2**62, (1,), generator=generator))
        steps = (lambda iterable, **kwargs: iterable) if start is None else _entered_at(start[0])
        with torch.random.fork_rng(devices=[]), self.model.returning(_cast(eps_model, self.dtype)), \
                mock.patch.object(self._module, "tqdm", steps), \
                (contextlib.nullcontext() if start is None else _randn_returning(start[1].to(self.dtype))):
            torch.manual_seed(seed)
            x0 = sampler(tuple(shape))  # [B, C, H, W] in [-1, 1] scale (auto_normalize=False)
        return x0.clone()

    def _resume(self, sampler: Callable[[tuple[int, ...]], Tensor], visited: list[int], eps_model: EpsFn, x: Tensor,
                start: int, generator: torch.Generator) -> Tensor:
        """The sampler's own loop entered at the visited timestep `start` with x there."""
        if int(start) not in visited:
            raise ValueError(f"start = {start} is not a visited timestep; visited: {visited[:3]} ... {visited[-3:]}")
        return self._run(sampler, eps_model, tuple(x.shape), generator, (int(start), x))

    def _visited_ddim_timesteps(self) -> list[int]:
        """The timesteps ddim_sample passes to the model, recorded from one run (descending, library convention)."""
        if self._ddim_visited is None:
            seen: list[int] = []

            def record(x: Tensor, t: Tensor) -> Tensor:
                seen.append(int(t[0]))
                return torch.zeros_like(x)

            self._run(self._ddim[0.0].ddim_sample, record, (1, CHANNELS, IMAGE_SIZE, IMAGE_SIZE),
                      torch.Generator().manual_seed(0))
            self._ddim_visited = seen
        return list(self._ddim_visited)

    # -- reproduction -----------------------------------------------------------------------------------------

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """A standalone snippet (torch + denoising_diffusion_pytorch) at timestep t; None if not offered.

        Reads inputs "x0", "xt", the network output ("eps", "x0_pred" or "v_pred" per objective), "z", "noise"
        (absent ones get defaults); training_loss needs the network's output at the noised x_0 (a constant stand-in
        network), and is None without it.
        """
        kind, _, rest = operation.partition(":")
        output = OUTPUT_NAMES[self.objective]
        if kind not in ("q_sample", "q_posterior", "reverse_step", "training_loss", "schedule"):
            return None
        if kind == "training_loss" and output not in inputs:
            return None  # the loss depends on the caller's model: reproducible only with its output
        if kind == "reverse_step" and rest != POSTERIOR_VARIANCE:
            raise ValueError(f"unknown variance option {rest!r}; options: [{POSTERIOR_VARIANCE!r}]")
        given = dict(inputs)
        if kind == "q_sample" and "noise" not in given and "eps" in given:
            given["noise"] = given["eps"]
        names = {"q_sample": ["x0", "noise"], "q_posterior": ["x0", "xt"], "reverse_step": [output, "xt", "z"],
                 "training_loss": ["x0", "noise", output], "schedule": []}[kind]
        min_snr = (f", min_snr_loss_weight=True, min_snr_gamma={MIN_SNR_GAMMA}" if self.min_snr_loss_weight else "")
        lines = [
            "import torch",
            "from torch import nn",
            "from denoising_diffusion_pytorch import GaussianDiffusion",
            "",
            "",
            f"class Net(nn.Module):  # stands in for the Unet: returns the given output ({output})",
            "    channels = out_dim = 1",
            "    self_condition = False",
            "",
            "    def forward(self, x, t, x_self_cond=None):",
            "        return self.out",
            "",
            "",
            "model = Net()",
            f"diffusion = GaussianDiffusion(model, image_size={IMAGE_SIZE}, timesteps={self.T}, "
            f"objective={self.objective!r}, beta_schedule={self.beta_schedule!r}, auto_normalize=False{min_snr})",
        ]
        if names:
            lines.append(snippet_tensors(given, names))
        t_batch = f"torch.tensor([{int(t)}])"
        lines += {
            "schedule": [f"print('beta', diffusion.betas[{int(t)}].item(), "
                         f"'alpha_bar', diffusion.alphas_cumprod[{int(t)}].item())"],
            "q_sample": [f"print(diffusion.q_sample(x0, {t_batch}, noise).flatten().tolist())"],
            "q_posterior": [f"mean, variance, log_variance = diffusion.q_posterior(x0, xt, {t_batch})",
                            "print('mean', mean.flatten().tolist())",
                            "print('variance', variance.flatten().tolist())"],
            "reverse_step": [f"model.out = {output}",
                             "torch.randn_like = lambda x: z  # p_sample draws its noise with torch.randn_like",
                             f"print(diffusion.p_sample(xt, {int(t)})[0].flatten().tolist())"],
            "training_loss": [f"model.out = {output}",
                              f"print(diffusion.p_losses(x0, {t_batch}, noise).item())"],
        }[kind]
        return "\n".join(lines) + "\n"


def factory(T: int = 1000) -> list[LucidrainsAdapter]:
    """GaussianDiffusion adapters at T (default 1000): pred_noise with the linear and cosine schedules, pred_x0 and
    pred_v with the linear one, and pred_noise (linear) with min_snr_loss_weight (module docstring)."""
    import_lucidrains()
    return [*(LucidrainsAdapter(schedule, T) for schedule in SCHEDULES),
            LucidrainsAdapter("linear", T, "pred_x0"), LucidrainsAdapter("linear", T, "pred_v"),
            LucidrainsAdapter("linear", T, "pred_noise", min_snr_loss_weight=True)]
