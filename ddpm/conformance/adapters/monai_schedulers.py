"""Adapter for MONAI's `DDPMScheduler` and `DDIMScheduler` (`monai.networks.schedulers`).

Tested with monai 1.6.1 (`monai/networks/schedulers/scheduler.py`, `ddpm.py`, `ddim.py`). MONAI indexes timesteps
from 0 (its t = paper t - 1) and keeps its tables in float32: `linear_beta` is `torch.linspace(1e-4, 0.02, T)`
(not rescaled by 1000 / T; the paper's at T = 1000), `cosine` is Nichol & Dhariwal's alpha_bar(t) computed in float32
with beta clipped to [0, 0.999], `scaled_linear_beta` (linspace of sqrt(beta), squared) and `sigmoid_beta` have no
formula in the suite (checked for consistency only). `prediction_type` "epsilon", "sample" (x_0) and "v_prediction"
map to the suite's EPS, X0 and V. `clip_sample=False` unless a configuration says otherwise (MONAI's default True
clamps x0_hat to [-1, 1] inside `step()`).

How each operation reaches the library (public methods only):
- `q_sample`: `add_noise(x0, noise, timesteps)`.
- `reverse_step`: `DDPMScheduler.step(model_output, t, x_t)[0]` on a scheduler with that `variance_type`; the learned
  kinds get `model_output = cat([output, v], dim=1)`, which `step()` splits. 'learned_range' claims eq. 15, the
  meaning of the name it took from improved-diffusion, but MONAI interpolates the variances, not their logs (declared
  as a note); the suite's reverse_step case does not resolve the difference in float32 at T = 1000 (it is largest at
  small t, where the bound of the mean is widest), so tests/conformance/test_adapters.py checks it directly.
  `step()` draws its noise with `torch.randn(model_output.size(), ..., generator=generator)`; the adapter replaces
  `torch.randn` by a function returning z (shape-checked) for the duration of the call. `DDIMScheduler`: eta = 1
  over all T steps (`set_timesteps(T)`) is Algorithm 2 with sigma_t^2 = beta_tilde_t (Song et al. 2021, sec. 4.1):
  the one variance option, "eta=1, all T steps".
- `q_posterior`: MONAI's posterior helpers are private (`_get_mean`, `_get_variance`). A DDPMScheduler with
  `prediction_type="sample"` (the output is x_0 itself) and `variance_type="fixed_small"` gives mu_tilde(x_0, x_t)
  as `step(x0, t, xt)` with z = 0 injected, and beta_tilde_t as `step(0, t, 0)[0] ** 2` with z = 1 (mean 0, so the
  output is sigma_t). DDIMScheduler: not offered.
- `strided_step` (DDPM) and `ddim_step`: `set_timesteps(S)` (cached per S), S chosen so that the suite's t and s are
  consecutive visited timesteps (or t the last one and s = -1, x_0), then `step()` from t, as the library's sampling
  loop takes it. What that step returns is what the loop uses as x_s: DDPMScheduler.step always goes to t - 1,
  DDIMScheduler.step to t - T // S, whatever the next visited timestep is.
- `chains()`: the loop `monai.inferers.DiffusionInferer.sample` runs (`for t in scheduler.timesteps: image, _ =
  scheduler.step(model_output, t, image)`), here passing the caller's generator to `step()` (which accepts one) and,
  for DDIM, eta (which `DiffusionInferer.sample` cannot pass: its DDIM chains have eta = 0), from x = randn(shape,
  generator).
Not offered: a training loss (MONAI has no loss function for these schedulers: `DiffusionInferer.__call__` returns the
network's prediction at `add_noise`'s x_t and the loss is the user's).

Configurations (`factory()`, one adapter each, family and options as the report groups them):
- default: DDPMScheduler with MONAI's defaults (linear_beta, epsilon, fixed_small) but clip_sample=False, its
  respaced steps and chains at S = T and S = 100; DDIMScheduler (linear_beta, epsilon), its DDIM steps and chains at
  S = 50 with eta 0 and 1;
- "variance_type": DDPM with fixed_large, learned and learned_range (a fixed_large chain at S = T); and, as
  `RejectedConfiguration`s, the variance types improved-diffusion and diffusers offer that DDPMScheduler's constructor
  refuses (fixed_small_log, fixed_large_log);
- "schedule": cosine (DDPM and DDIM) and scaled_linear_beta (DDPM); sigmoid_beta, CUSTOM like scaled_linear_beta, is
  left out to keep the run short;
- "prediction_type": sample and v_prediction (DDPM and DDIM);
- "clip_sample": DDPM with MONAI's default True (declared Convention.CLIPS_X0).
To keep the run short the non-default DDPM rows take fixed_small only (but "variance_type"), every non-default chain
runs over all T steps, and the non-default rows do not run the respaced or DDIM steps: their cases say why (the
stride does not depend on those options; the default rows show it).
DDIM with clip_sample=True is left out: MONAI clips x0_hat but keeps the unclipped eps in eq. 12, neither Algorithm 2
nor the clipping convention the suite models (eps re-derived from the clipped x0_hat).

Replacing `torch.randn` is process-global while a step runs: do not call these adapters from several threads.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from functools import partial
from types import ModuleType
from typing import Any

import numpy as np
import torch

from ddpm.conformance.adapters.diffusers_ddpm import num_steps_for_stride, visited_index
from ddpm.conformance.adapters.snippets import snippet_tensors
from ddpm.conformance.protocol import (
    AdapterError,
    Chain,
    ChainKind,
    Convention,
    NotOffered,
    Prediction,
    RejectedConfiguration,
    ScheduleKind,
    ScheduleSpec,
    VarianceKind,
)

Tensor = torch.Tensor
ModelFn = Callable[[Tensor, Tensor], Tensor]

TESTED_VERSION = "1.6.1"
DISTRIBUTION = "monai"
INSTALL_HINT = "monai is not installed: pip install 'ddpm-verified[conformance]'"

# MONAI's schedule names -> the ScheduleSpec kind they claim (linear_beta is never rescaled by 1000 / T).
SCHEDULES = {"linear_beta": ScheduleKind.LINEAR, "cosine": ScheduleKind.COSINE,
             "scaled_linear_beta": ScheduleKind.CUSTOM, "sigmoid_beta": ScheduleKind.CUSTOM}
PREDICTIONS = {"epsilon": Prediction.EPS, "sample": Prediction.X0, "v_prediction": Prediction.V}
OUTPUT_NAMES = {"epsilon": "eps", "sample": "x0_pred", "v_prediction": "v_pred"}  # as the suite names the output
# DDPMScheduler's variance types and the formula each claims (see _get_variance and step()).
VARIANCES = {
    "fixed_small": VarianceKind.BETA_TILDE,  # clamped at 1e-20
    "fixed_large": VarianceKind.BETA,
    "learned": VarianceKind.LEARNED_VARIANCE,  # v is sigma^2 itself
    "learned_range": VarianceKind.LEARNED_RANGE,  # claims eq. 15 (the name improved-diffusion gave it)
}
REFUSED_VARIANCES = ("fixed_small_log", "fixed_large_log")  # offered by improved-diffusion and diffusers
DDIM_VARIANCE = "eta=1, all T steps"
STRIDED_CHAIN_STEPS = 100  # S of the DDPM chain that respaces
DDIM_CHAIN_STEPS = 50


def import_monai() -> ModuleType:
    """The package `monai.networks.schedulers`; AdapterError with the install hint when monai is missing."""
    try:
        import monai.networks.schedulers as schedulers
    except ImportError as exc:
        missing = getattr(exc, "name", None) or "monai"
        detail = "" if missing.split(".")[0] == "monai" else f" (missing {missing!r})"
        raise AdapterError(INSTALL_HINT + detail) from exc
    return schedulers


def monai_version() -> str:
    """E.g. "monai 1.6.1" (the installed version, read from the package metadata)."""
    return f"{DISTRIBUTION} {importlib.metadata.version(DISTRIBUTION)}"


@contextlib.contextmanager
def injected_randn(z: Tensor | None) -> Iterator[None]:
    """Within the block `torch.randn(shape, ...)` returns z (shape-checked): the draw of MONAI's step()."""
    if z is None:
        raise ValueError("z (the standard normal draw of the step) is required")

    def draw(*size: Any, dtype: Any = None, device: Any = None, **kwargs: Any) -> Tensor:
        shape = tuple(size[0]) if len(size) == 1 and not isinstance(size[0], int) else tuple(size)
        if shape != tuple(z.shape):
            raise ValueError(f"the library asked for noise of shape {shape}, z has shape {tuple(z.shape)}")
        return z.to(device=device, dtype=dtype)

    original = torch.randn
    torch.randn = draw  # a plain swap: unittest.mock's patch costs a resolution per step, thousands per case
    try:
        yield
    finally:
        torch.randn = original


def _t_batch(t: int, x: Tensor) -> Tensor:
    return torch.full((x.shape[0],), int(t), dtype=torch.int64)  # [B]


class _MonaiScheduler:
    """What DDPMScheduler and DDIMScheduler share: the tables, add_noise, naming, conventions (base 0, float32)."""

    timestep_base = 0
    dtype = torch.float32
    scheduler_class = ""

    def __init__(self, schedule: str, T: int, prediction_type: str, clip_sample: bool, family: str,
                 options: Mapping[str, Any]) -> None:
        if schedule not in SCHEDULES:
            raise ValueError(f"unknown schedule {schedule!r}; options: {list(SCHEDULES)}")
        if prediction_type not in PREDICTIONS:
            raise ValueError(f"unknown prediction_type {prediction_type!r}; options: {list(PREDICTIONS)}")
        self._module = import_monai()
        self.schedule_name, self.T = schedule, T
        self.prediction_type, self.clip_sample = prediction_type, bool(clip_sample)
        self.prediction = PREDICTIONS[prediction_type]
        self.output_name = OUTPUT_NAMES[prediction_type]
        self.schedule = ScheduleSpec(SCHEDULES[schedule], T, rescaled=schedule != "linear_beta")
        self.family, self.options = family, dict(options)
        self.name = (f"MONAI {self.scheduler_class}({schedule}, T={T}, prediction_type={prediction_type!r}, "
                     f"clip_sample={self.clip_sample})")
        self.version = monai_version()
        self.conventions: dict[Convention, str] = {}
        if schedule == "linear_beta":
            self.conventions[Convention.SCHEDULE] = (
                "linear_beta is torch.linspace(1e-4, 0.02, T) in float32 for every T (not rescaled by 1000 / T; "
                "identical at T = 1000)")
        if self.clip_sample:
            self.conventions[Convention.CLIPS_X0] = (
                "clip_sample=True: step() clamps pred_original_sample to [-1, 1] before the posterior mean")
        self._schedulers: dict[tuple, Any] = {}

    def _new(self, num_steps: int | None, **options: Any) -> Any:
        """A new scheduler of this configuration (with `options` overriding), set_timesteps(num_steps) unless None."""
        kwargs = {"num_train_timesteps": self.T, "schedule": self.schedule_name,
                  "prediction_type": self.prediction_type, "clip_sample": self.clip_sample, **options}
        scheduler = getattr(self._module, self.scheduler_class)(**kwargs)
        if num_steps is not None:
            scheduler.set_timesteps(num_steps)
        return scheduler

    def _cached(self, num_steps: int | None, **options: Any) -> Any:
        key = (num_steps, tuple(sorted(options.items())))
        if key not in self._schedulers:
            self._schedulers[key] = self._new(num_steps, **options)
        return self._schedulers[key]

    def _visited(self, num_steps: int) -> list[int]:
        return [int(u) for u in self._cached(num_steps).timesteps]

    def _num_steps_for(self, t: int, s: int) -> int:
        """An S after whose set_timesteps(S) the library's loop visits t and then s (s = -1: t is the last)."""
        known = sorted({key[0] for key in self._schedulers if key[0] is not None})
        return num_steps_for_stride(t, s, self.T, self._visited, known)

    # -- required members -------------------------------------------------------------------------------------

    def betas(self) -> np.ndarray:
        return self._cached(None).betas.numpy().copy()  # float32 [T]

    def alpha_bars(self) -> np.ndarray:
        return self._cached(None).alphas_cumprod.numpy().copy()  # float32 [T]

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor:
        return self._cached(None).add_noise(x0, noise, _t_batch(t, x0))

    # -- reproduction helpers ---------------------------------------------------------------------------------

    def _constructor(self, **options: Any) -> str:
        kwargs = {"num_train_timesteps": self.T, "schedule": self.schedule_name,
                  "prediction_type": self.prediction_type, "clip_sample": self.clip_sample, **options}
        return f"{self.scheduler_class}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"

    def _head(self, **options: Any) -> str:
        return (f"import torch\nfrom monai.networks.schedulers import {self.scheduler_class}\n\n"
                f"scheduler = {self._constructor(**options)}\n")

    def _common_snippet(self, kind: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        if kind == "schedule":
            return self._head() + (f"print('beta', scheduler.betas[{int(t)}].item(), "
                                   f"'alpha_bar', scheduler.alphas_cumprod[{int(t)}].item())\n")
        if kind == "q_sample":
            given = dict(inputs)
            if "noise" not in given and "eps" in given:
                given["noise"] = given["eps"]
            return self._head() + snippet_tensors(given, ["x0", "noise"]) + (
                f"\nprint(scheduler.add_noise(x0, noise, torch.tensor([{int(t)}])).flatten().tolist())\n")
        return None

    def _chain_snippet(self, head: str, step_call: str) -> str:
        """A sampling loop driven by the exact output of N(0.1, 0.25^2) data (the suite's default data)."""
        exact = {"epsilon": "eps", "sample": "x0", "v_prediction": "a.sqrt() * eps - (1 - a).sqrt() * x0"}
        return (head + "alpha_bar = scheduler.alphas_cumprod.double()\n\n\n"
                "def exact_output(x, t):  # E[eps | x_t], E[x_0 | x_t] (or v) for x_0 ~ N(0.1, 0.25^2)\n"
                "    a = alpha_bar[t]\n"
                "    r = a * 0.25**2 + 1 - a\n"
                "    eps = (1 - a).sqrt() * (x - a.sqrt() * 0.1) / r\n"
                "    x0 = 0.1 + a.sqrt() * 0.25**2 / r * (x - a.sqrt() * 0.1)\n"
                f"    return ({exact[self.prediction_type]}).float()\n\n\n"
                "generator = torch.Generator().manual_seed(0)\n"
                "x = torch.randn(1000, 1, 2, 2, generator=generator)\n"
                "for t in scheduler.timesteps:\n"
                f"    x, _ = {step_call}\n"
                "print('finite:', bool(torch.isfinite(x).all()), 'mean', x.mean().item(), 'sd', x.std().item(),\n"
                "      '(x_0 should follow about N(0.1, 0.25^2))')\n")


class MonaiDDPMAdapter(_MonaiScheduler):
    """MONAI DDPMScheduler (schedule, T, prediction_type, clip_sample) behind the adapter protocol."""

    scheduler_class = "DDPMScheduler"

    def __init__(self, schedule: str = "linear_beta", T: int = 1000, prediction_type: str = "epsilon",
                 clip_sample: bool = False, variances: Sequence[str] = tuple(VARIANCES),
                 chains: Sequence[tuple[str, int | None]] = (), respaced: bool = True, family: str = "default",
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(schedule, T, prediction_type, clip_sample, family, options or {})
        self.respaced = bool(respaced)
        unknown = [v for v in variances if v not in VARIANCES]
        if unknown or not variances:
            raise ValueError(f"variance types must be some of {list(VARIANCES)}, got {list(variances)}")
        self.variances = {v: VARIANCES[v] for v in variances}
        self.name = f"{self.name[:-1]}, variance_type in {list(variances)})"
        self._chain_specs = tuple((variance, num_steps or T) for variance, num_steps in chains)
        learned = [v for v in variances if VARIANCES[v].learned]
        if learned:
            self.conventions[Convention.LEARNED_VARIANCE] = (
                "variance_type='learned' takes the variance channels v as sigma^2 itself (_get_variance returns "
                "predicted_variance; step() adds its ** 0.5 times the noise); 'learned_range' interpolates the "
                "variances themselves, frac beta_t + (1 - frac) beta_tilde_t with frac = (v + 1) / 2 (its min_log and "
                "max_log hold beta_tilde_t and beta_t, not their logarithms), where eq. 15 interpolates the logs")
        if any(num_steps < T for _, num_steps in self._chain_specs):
            S = STRIDED_CHAIN_STEPS
            self.conventions[Convention.TIMESTEPS] = (
                f"set_timesteps(S) visits linspace(T - 1, 0, S).round() (S = {S}, T = {T}: "
                f"{', '.join(str(u) for u in self._visited(S)[:3])}, ..., 0); the N(0, I) draw stands at t = T - 1")

    def _scheduler(self, variance: str, num_steps: int | None = None) -> Any:
        if variance not in self.variances:
            raise ValueError(f"unknown variance option {variance!r}; options: {list(self.variances)}")
        return self._cached(num_steps, variance_type=variance)

    def _step(self, scheduler: Any, output: Tensor, xt: Tensor, t: int, z: Tensor, v: Tensor | None) -> Tensor:
        """scheduler.step(model_output, t, xt)[0] with z injected as the step's noise."""
        model_output = output  # [B, C, H, W]
        if scheduler.variance_type in ("learned", "learned_range"):
            if v is None:
                raise ValueError(f"variance option {scheduler.variance_type!r} needs the model's variance output v")
            model_output = torch.cat([output, v.expand_as(output)], dim=1)  # [B, 2C, H, W]: step() splits it
        with injected_randn(z):
            return scheduler.step(model_output, int(t), xt)[0]

    # -- required members -------------------------------------------------------------------------------------

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        scheduler = self._cached(None, variance_type="fixed_small", prediction_type="sample", clip_sample=False)
        mean = self._step(scheduler, x0, xt, t, torch.zeros_like(xt), None)
        zeros = torch.zeros_like(xt[:1])  # [1, C, H, W]
        sigma = self._step(scheduler, zeros, zeros, t, torch.ones_like(zeros), None)
        return mean, sigma**2

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        return self._step(self._scheduler(variance), eps, xt, t, z, v)

    # -- respaced (strided) sampling --------------------------------------------------------------------------

    def _check_respaced(self) -> None:
        if not self.respaced:
            raise NotOffered(
                "not run for this configuration, to keep the suite short: DDPMScheduler.step() goes from t to t - 1 "
                "whatever set_timesteps(S) chose, for every schedule, prediction and variance type (the default "
                "configuration's strided cases show it)")

    def strided_timesteps(self, num_steps: int) -> list[int]:
        self._check_respaced()
        return self._visited(num_steps)

    def strided_step(self, eps: Tensor, xt: Tensor, t: int, s: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        self._check_respaced()
        num_steps = self._num_steps_for(t, s)
        return self._step(self._scheduler(variance, num_steps), eps, xt, t, z, v)

    # -- chains -----------------------------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        out = []
        for variance, num_steps in self._chain_specs:
            label = f"DDPMScheduler.step loop (variance_type={variance!r}, num_inference_steps={num_steps})"
            out.append(Chain(label, ChainKind.ANCESTRAL, self._visited(num_steps),
                             partial(self._run_chain, variance, num_steps), variance=variance,
                             resume=partial(self._resume_chain, variance, num_steps)))
        return out

    def _run_chain(self, variance: str, num_steps: int, model: ModelFn, shape: tuple[int, ...],
                   generator: torch.Generator) -> Tensor:
        x = torch.randn(tuple(shape), generator=generator, dtype=self.dtype)  # [B, C, H, W]: x at timesteps[0]
        return self._loop(variance, num_steps, model, x, 0, generator)

    def _resume_chain(self, variance: str, num_steps: int, model: ModelFn, x: Tensor, start: int,
                      generator: torch.Generator) -> Tensor:
        """The loop entered at the visited timestep `start` with x there."""
        first = visited_index(self._scheduler(variance, num_steps).timesteps, start)
        return self._loop(variance, num_steps, model, x.to(self.dtype), first, generator)

    def _loop(self, variance: str, num_steps: int, model: ModelFn, x: Tensor, first: int,
              generator: torch.Generator) -> Tensor:
        scheduler = self._scheduler(variance, num_steps)
        for t in scheduler.timesteps[first:]:
            output = model(x, torch.full((x.shape[0],), int(t), dtype=torch.int64)).to(self.dtype)
            x, _ = scheduler.step(output, t, x, generator=generator)
        return x

    # -- reproduction -----------------------------------------------------------------------------------------

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """A standalone snippet (torch + monai only) calling DDPMScheduler at timestep t; None if not offered.

        Reads inputs "x0", "xt", the output ("eps", "x0_pred" or "v_pred"), "z", "v" and, for q_sample, "noise"
        (else "eps"); absent ones get defaults.
        """
        kind, _, rest = operation.partition(":")
        common = self._common_snippet(kind, t, inputs)
        if common is not None:
            return common
        if kind == "q_posterior":
            return self._posterior_snippet(t, inputs)
        if kind == "chain":
            match = re.fullmatch(r"DDPMScheduler\.step loop \(variance_type='(\w+)', num_inference_steps=(\d+)\)",
                                 rest)
            if match is None:
                return None
            head = self._head(variance_type=match.group(1)) + f"scheduler.set_timesteps({match.group(2)})\n"
            return self._chain_snippet(head, "scheduler.step(exact_output(x, t), t, x, generator=generator)")
        if kind not in ("reverse_step", "strided_step"):
            return None
        variance, _, steps = rest.partition(":")
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance option {variance!r}; options: {list(VARIANCES)}")
        learned = VARIANCES[variance].learned
        body = snippet_tensors(inputs, [self.output_name, "xt", "z"] + (["v"] if learned else []))
        body += "\ntorch.randn = lambda *size, **kwargs: z  # step() draws its noise with torch.randn\n"
        if steps:
            body += (f"scheduler.set_timesteps({int(steps)})\n"
                     "visited = scheduler.timesteps.tolist()\n"
                     f"print('the loop visits', visited[:3], '...; after t = {int(t)} it visits', "
                     f"visited[visited.index({int(t)}) + 1] if {int(t)} in visited[:-1] else 'x_0', "
                     f"'; step() goes to t - 1 = {int(t) - 1}')\n")
        output = f"torch.cat([{self.output_name}, v], dim=1)" if learned else self.output_name
        return (self._head(variance_type=variance) + body
                + f"print(scheduler.step({output}, {int(t)}, xt)[0].flatten().tolist())\n")

    def _posterior_snippet(self, t: int, inputs: Mapping[str, Any]) -> str:
        return (self._head(variance_type="fixed_small", prediction_type="sample", clip_sample=False)
                + "# prediction_type='sample': the output is x_0, so step() returns mu_tilde(x_0, x_t) + sigma z\n"
                + snippet_tensors(inputs, ["x0", "xt"]) + "\n"
                "torch.randn = lambda *size, **kwargs: torch.zeros(*size)\n"
                f"print('mean', scheduler.step(x0, {int(t)}, xt)[0].flatten().tolist())\n"
                "torch.randn = lambda *size, **kwargs: torch.ones(*size)\n"
                f"sigma = scheduler.step(torch.zeros(1, 1, 1, 1), {int(t)}, torch.zeros(1, 1, 1, 1))[0]\n"
                "print('variance', (sigma**2).item())\n")


class MonaiDDIMAdapter(_MonaiScheduler):
    """MONAI DDIMScheduler (schedule, T, prediction_type, clip_sample=False, set_alpha_to_one=True, steps_offset=0)."""

    scheduler_class = "DDIMScheduler"
    variances = {DDIM_VARIANCE: VarianceKind.BETA_TILDE}

    def __init__(self, schedule: str = "linear_beta", T: int = 1000, prediction_type: str = "epsilon",
                 chains: Sequence[tuple[float, int | None]] = (), respaced: bool = True, family: str = "default",
                 options: Mapping[str, Any] | None = None) -> None:
        super().__init__(schedule, T, prediction_type, False, family, options or {})
        self._chain_specs = tuple((float(eta), num_steps or T) for eta, num_steps in chains)
        self.respaced = bool(respaced)
        S = DDIM_CHAIN_STEPS
        visited = self._visited(S)
        if self.respaced or any(num_steps < T for _, num_steps in self._chain_specs):
            self.conventions[Convention.TIMESTEPS] = (
                f"set_timesteps(S) visits linspace(T - 1, 0, S).round() (S = {S}, T = {T}: "
                f"{', '.join(str(u) for u in visited[:4])}, ..., {visited[-2]}, {visited[-1]}, then x_0 with "
                "alpha_bar = 1)")

    @staticmethod
    def _check_variance(variance: str) -> None:
        if variance != DDIM_VARIANCE:
            raise ValueError(f"unknown variance option {variance!r}; options: [{DDIM_VARIANCE!r}]")

    @staticmethod
    def _step(scheduler: Any, output: Tensor, xt: Tensor, t: int, eta: float, z: Tensor | None) -> Tensor:
        if eta > 0 and z is None:
            raise ValueError("z (the standard normal draw) is required when eta > 0")
        with injected_randn(z if z is not None else torch.zeros_like(xt)):
            return scheduler.step(output, int(t), xt, eta=float(eta))[0]

    # -- required members -------------------------------------------------------------------------------------

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        raise NotOffered("DDIMScheduler has no posterior q(x_{t-1} | x_t, x_0) (its eta = 1 step over all T steps "
                         "equals the posterior's sampler only through Song et al.'s identity, which "
                         f"reverse_step[{DDIM_VARIANCE}] checks)")

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        self._check_variance(variance)
        return self._step(self._cached(self.T), eps, xt, t, 1.0, z)

    # -- DDIM -------------------------------------------------------------------------------------------------

    def _check_respaced(self) -> None:
        if not self.respaced:
            raise NotOffered(
                "not run for this configuration, to keep the suite short: DDIMScheduler.step() goes to t - T // S "
                "while set_timesteps(S) visits a rounded linspace, for every schedule and prediction type (the "
                f"default configuration's ddim cases show it); reverse_step[{DDIM_VARIANCE}] and the chain over all T "
                "steps check eq. 12 with this configuration where the two agree")

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        self._check_respaced()
        return self._visited(num_steps)

    def ddim_step(self, eps: Tensor, xt: Tensor, t: int, s: int, eta: float, z: Tensor) -> Tensor:
        self._check_respaced()
        return self._step(self._cached(self._num_steps_for(t, s)), eps, xt, t, eta, z)

    # -- chains -----------------------------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        return [Chain(f"DDIMScheduler.step loop (num_inference_steps={num_steps}, eta={eta:g})", ChainKind.DDIM,
                      self._visited(num_steps), partial(self._run_chain, eta, num_steps), eta=eta,
                      resume=partial(self._resume_chain, eta, num_steps))
                for eta, num_steps in self._chain_specs]

    def _run_chain(self, eta: float, num_steps: int, model: ModelFn, shape: tuple[int, ...],
                   generator: torch.Generator) -> Tensor:
        x = torch.randn(tuple(shape), generator=generator, dtype=self.dtype)  # [B, C, H, W]: x at timesteps[0]
        return self._loop(eta, num_steps, model, x, 0, generator)

    def _resume_chain(self, eta: float, num_steps: int, model: ModelFn, x: Tensor, start: int,
                      generator: torch.Generator) -> Tensor:
        """The loop entered at the visited timestep `start` with x there."""
        first = visited_index(self._cached(num_steps).timesteps, start)
        return self._loop(eta, num_steps, model, x.to(self.dtype), first, generator)

    def _loop(self, eta: float, num_steps: int, model: ModelFn, x: Tensor, first: int,
              generator: torch.Generator) -> Tensor:
        scheduler = self._cached(num_steps)
        for t in scheduler.timesteps[first:]:
            output = model(x, torch.full((x.shape[0],), int(t), dtype=torch.int64)).to(self.dtype)
            x, _ = scheduler.step(output, t, x, eta=eta, generator=generator)
        return x

    # -- reproduction -----------------------------------------------------------------------------------------

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """A standalone snippet (torch + monai only) calling DDIMScheduler at timestep t; None if not offered.

        Reads inputs "x0", "xt", the output ("eps", "x0_pred" or "v_pred"), "z" and, for q_sample, "noise" (else
        "eps"); absent ones get defaults.
        """
        kind, _, rest = operation.partition(":")
        common = self._common_snippet(kind, t, inputs)
        if common is not None:
            return common
        if kind == "chain":
            match = re.fullmatch(r"DDIMScheduler\.step loop \(num_inference_steps=(\d+), eta=([\d.]+)\)", rest)
            if match is None:
                return None
            return self._chain_snippet(self._head() + f"scheduler.set_timesteps({match.group(1)})\n",
                                       f"scheduler.step(exact_output(x, t), t, x, eta={float(match.group(2))!r}, "
                                       "generator=generator)")
        if kind == "reverse_step":
            self._check_variance(rest)
            eta, num_steps = 1.0, self.T
        elif kind == "ddim_step":
            eta_text, _, steps = rest.partition(":")
            eta, num_steps = float(eta_text), int(steps)
        else:
            return None
        stride = ("" if kind == "reverse_step" else
                  "visited = scheduler.timesteps.tolist()\n"
                  f"print('the loop visits', visited[:4], '...; after t = {int(t)} it visits', "
                  f"visited[visited.index({int(t)}) + 1] if {int(t)} in visited[:-1] else 'x_0', "
                  "'; step() goes to t - T // S =', "
                  f"{int(t)} - scheduler.num_train_timesteps // scheduler.num_inference_steps)\n")
        return (self._head() + f"scheduler.set_timesteps({num_steps})\n" + stride
                + snippet_tensors(inputs, [self.output_name, "xt", "z"])
                + "\ntorch.randn = lambda *size, **kwargs: z  # step() draws its noise with torch.randn\n"
                + f"print(scheduler.step({self.output_name}, {int(t)}, xt, eta={eta!r})[0].flatten().tolist())\n")


def _refused(variance: str, T: int) -> RejectedConfiguration | None:
    """DDPMScheduler(variance_type=variance) as a RejectedConfiguration when its constructor refuses it."""
    schedulers = import_monai()
    try:
        schedulers.DDPMScheduler(num_train_timesteps=T, variance_type=variance, clip_sample=False)
    except (ValueError, TypeError) as error:
        return RejectedConfiguration(
            f"MONAI DDPMScheduler(linear_beta, T={T}, variance_type={variance!r})", monai_version(),
            f"{type(error).__name__}: {error}", "variance_type", {"variance_type": variance})
    return None


def factory(T: int = 1000) -> list[MonaiDDPMAdapter | MonaiDDIMAdapter | RejectedConfiguration]:
    """The MONAI configurations at T (default 1000); module docstring."""
    import_monai()
    small, full = ("fixed_small",), (("fixed_small", None),)  # a non-default DDPM row: one variance, S = T
    ddpm = partial(MonaiDDPMAdapter, T=T)
    ddim = partial(MonaiDDIMAdapter, T=T)
    others = ("fixed_large", "learned", "learned_range")  # the variance types besides MONAI's default
    out: list[MonaiDDPMAdapter | MonaiDDIMAdapter | RejectedConfiguration] = [
        ddpm(variances=small, chains=(*full, ("fixed_small", STRIDED_CHAIN_STEPS))),
        ddim(chains=((0.0, DDIM_CHAIN_STEPS), (1.0, DDIM_CHAIN_STEPS))),
        ddpm(variances=others, chains=(("fixed_large", None),), respaced=False, family="variance_type",
             options={"variance_type": list(others)}),
    ]
    for schedule in ("cosine", "scaled_linear_beta"):
        out.append(ddpm(schedule, variances=small, chains=full if schedule == "cosine" else (), respaced=False,
                        family="schedule", options={"schedule": schedule}))
    out.append(ddim("cosine", chains=((0.0, None),), respaced=False, family="schedule", options={"schedule": "cosine"}))
    for prediction_type in ("sample", "v_prediction"):
        options = {"prediction_type": prediction_type}
        out.append(ddpm(prediction_type=prediction_type, variances=small, chains=full, respaced=False,
                        family="prediction_type", options=options))
        out.append(ddim(prediction_type=prediction_type, chains=((0.0, None),), respaced=False,
                        family="prediction_type", options=options))
    out.append(ddpm(clip_sample=True, variances=small, chains=full, respaced=False, family="clip_sample",
                    options={"clip_sample": True}))
    out += [r for r in (_refused(v, T) for v in REFUSED_VARIANCES) if r is not None]
    return out
