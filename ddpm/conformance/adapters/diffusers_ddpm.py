"""Adapter for diffusers' `DDPMScheduler`: Algorithm 2 of Ho et al. (2020) as diffusers implements it.

Tested with diffusers 0.42.1 (`diffusers/schedulers/scheduling_ddpm.py`). Default configurations: T = 1000
(`num_train_timesteps`), `clip_sample=False` (the library default `True` clamps x0_hat to [-1, 1] inside `step()`;
with `False` the step is Algorithm 2 as written), `beta_schedule` "linear" or "squaredcos_cap_v2", default
`timestep_spacing="leading"`. diffusers indexes timesteps from 0 (its t = paper t - 1), keeps its tables in float32
and its linear schedule is `torch.linspace(beta_start, beta_end, T)`, not rescaled by 1000 / T. `factory()` adds
one adapter per configuration of `diffusers_configurations` (timestep spacing, prediction type, beta schedule,
zero terminal SNR), each with its `family` and `options`.

How each operation reaches the library (all through public methods; `step()` is the one the diffusers docs loop):
- `reverse_step` / `strided_step`: `DDPMScheduler.step()` on a scheduler built with that `variance_type`; the draw
  z is injected by replacing, for the duration of the call, the name `randn_tensor` that `step()` looks up in
  `diffusers.schedulers.scheduling_ddpm` (`variance_noise = randn_tensor(model_output.shape, generator=...)`).
  The learned kinds get `model_output = cat([eps, v], dim=1)`, which `step()` splits. The network output is in
  the configuration's `prediction_type` (the adapter's `prediction`).
- `q_posterior`: diffusers has no public posterior. A scheduler with `prediction_type="sample"` (model output =
  x_0) and `variance_type="fixed_small"` gives mu_tilde(x_0, x_t) as `step(x0, t, xt)` with z = 0 injected, and
  beta_tilde_t as `step(0, t, 0)**2` with z = 1 injected (mean 0, so the output is exactly sigma_t).
- `q_sample`: `add_noise`. Strided steps: `set_timesteps(S)` (cached per S; the configuration's own S first) then
  `step()`, which goes wherever the library's `previous_timestep()` says: the suite compares the result with the
  posterior at the next visited timestep, so a wrong previous timestep shows as a deviation.
- `chains()`: the loop of the diffusers docs, `for t in scheduler.timesteps: x = scheduler.step(eps, t, x,
  generator=generator).prev_sample`, from x = randn(shape, generator); the default configurations run the four
  fixed variance types at S = T and S = 100.
Not offered: DDIM (see `diffusers_ddim`) and a training loss (diffusers has no loss function).

To keep a run of every configuration affordable, a non-default configuration checks one variance option,
"fixed_small" (sigma^2 = beta_tilde, the library default), and runs one chain, "fixed_small" at its S (its
`num_inference_steps` for a timestep spacing configuration, else 100); its strided case runs at that S too. The
other variance options are the same code under each configuration and are checked by the default ones. A timestep
spacing configuration offers only its strided step and its chain: `timestep_spacing` and `steps_offset` act only
through `set_timesteps(S)`, so its q_sample, q_posterior and one-step reverse_step are the default configuration's
library calls (they raise NotOffered saying so).

Patching `randn_tensor` is process-global while a step runs: do not call these adapters from several threads.
The helpers `import_diffusers`, `num_steps_for_stride` and `injected_randn` are shared with `diffusers_ddim`.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.metadata
import re
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from functools import partial
from types import ModuleType
from typing import Any
from unittest import mock

import numpy as np
import torch

from ddpm.conformance.adapters.diffusers_configurations import (
    PREDICTIONS,
    SPACING_ONE_STEP,
    Configuration,
    call_text,
    exact_model_source,
    rejection,
    row_name,
    schedule_conventions,
    schedule_spec,
    shared_configurations,
    spacing_note,
)
from ddpm.conformance.adapters.snippets import snippet_tensors
from ddpm.conformance.protocol import (
    AdapterError,
    Chain,
    ChainKind,
    Convention,
    NotOffered,
    RejectedConfiguration,
    VarianceKind,
)

Tensor = torch.Tensor

TESTED_VERSION = "0.42.1"
INSTALL_HINT = "diffusers is not installed: pip install 'ddpm-verified[conformance]'"

# Our schedule names -> diffusers' beta_schedule (the default configurations).
BETA_SCHEDULES = {"linear": "linear", "cosine": "squaredcos_cap_v2"}
# Constructor options a configuration may set (beyond num_train_timesteps, beta_schedule and variance_type).
LIBRARY_OPTIONS = ("prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr")

# Every variance_type DDPMScheduler accepts and the formula it claims (see _get_variance and step()).
VARIANCES = {
    "fixed_small": VarianceKind.BETA_TILDE,
    "fixed_small_log": VarianceKind.BETA_TILDE,  # std = exp(0.5 log beta_tilde): the same sigma^2
    "fixed_large": VarianceKind.BETA,
    "fixed_large_log": VarianceKind.BETA,  # claims beta_t; 0.42.1 computes (log beta_t) ** 0.5 = NaN
    "learned": VarianceKind.LEARNED_VARIANCE,
    "learned_range": VarianceKind.LEARNED_RANGE,
}
FIXED_VARIANCES = tuple(option for option, kind in VARIANCES.items() if not kind.learned)
CHAIN_STEPS = 100  # the respaced chains' S


def import_diffusers() -> ModuleType:
    """The `diffusers` package; AdapterError with the install hint when it is missing."""
    try:
        import diffusers
        import diffusers.schedulers.scheduling_ddim  # noqa: F401  (the modules whose names the adapters patch)
        import diffusers.schedulers.scheduling_ddpm  # noqa: F401  (likewise)
    except ImportError as exc:
        raise AdapterError(INSTALL_HINT) from exc
    return diffusers


def diffusers_version() -> str:
    """E.g. "diffusers 0.42.1" (the installed version, read from the package metadata)."""
    return f"diffusers {importlib.metadata.version('diffusers')}"


def num_steps_for_stride(t: int, s: int, T: int, visited: Callable[[int], Sequence[int]],
                         tried_first: Iterable[int] = ()) -> int:
    """A number of inference steps S whose visited timesteps (then -1 for x_0) contain t directly followed by s.

    `visited(S)` returns the scheduler's timesteps after set_timesteps(S); the S in `tried_first` (those already
    set up) are tried before 1..T. ValueError when no S has that step: the library cannot take it.
    """
    t, s = int(t), int(s)
    for num_steps in (*tried_first, *range(1, T + 1)):
        steps = [int(u) for u in visited(num_steps)] + [-1]
        if t in steps[:-1] and steps[steps.index(t) + 1] == s:
            return num_steps
    raise ValueError(f"no set_timesteps(S), S in 1..{T}, makes the scheduler step from t = {t} to s = {s} "
                     "(timesteps in the library's convention, -1 for x_0)")


def visited_index(timesteps: Sequence[Any], start: int) -> int:
    """The position of `start` in a scheduler's visited timesteps; ValueError naming them when it is not visited."""
    visited = [int(u) for u in timesteps]
    if int(start) not in visited:
        raise ValueError(f"start = {start} is not a visited timestep; visited: {visited[:3]} ... {visited[-3:]}")
    return visited.index(int(start))


@contextlib.contextmanager
def injected_randn(module: ModuleType, z: Tensor | None) -> Iterator[None]:
    """Within the block, `module.randn_tensor(shape, ...)` returns z (shape-checked) instead of a fresh draw."""
    if z is None:
        raise ValueError("z (the standard normal draw of the step) is required")

    def draw(shape: Sequence[int], generator: Any = None, device: Any = None, dtype: Any = None,
             layout: Any = None) -> Tensor:
        if tuple(shape) != tuple(z.shape):
            raise ValueError(f"the library asked for noise of shape {tuple(shape)}, z has shape {tuple(z.shape)}")
        return z.to(device=device, dtype=dtype)

    with mock.patch.object(module, "randn_tensor", draw):
        yield


class DiffusersDDPMAdapter:
    """diffusers DDPMScheduler(beta_schedule, T, clip_sample=False, **options) behind the adapter protocol (base 0,
    float32); `options` are the configuration's (module docstring), `num_inference_steps` among them."""

    timestep_base = 0
    dtype = torch.float32
    scheduler_class = "DDPMScheduler"  # a scheduler with the same step() reuses the adapter (diffusers_parallel)
    scheduler_module = "scheduling_ddpm"

    def __init__(self, schedule: str = "linear", T: int = 1000, family: str = "default",
                 options: Mapping[str, Any] | None = None) -> None:
        import_diffusers()
        self._module = importlib.import_module(f"diffusers.schedulers.{self.scheduler_module}")
        self.family = family
        self.options = dict(options or {})
        unknown = set(self.options) - {"beta_schedule", "num_inference_steps", *LIBRARY_OPTIONS}
        if unknown:
            raise ValueError(f"unknown DDPMScheduler options {sorted(unknown)}; options: {list(LIBRARY_OPTIONS)}")
        self.beta_schedule = str(self.options.get("beta_schedule", BETA_SCHEDULES.get(schedule, schedule)))
        self.T = T
        zero_snr = bool(self.options.get("rescale_betas_zero_snr", False))
        self.schedule = schedule_spec(self.beta_schedule, T, zero_snr)
        self.prediction_type = str(self.options.get("prediction_type", "epsilon"))
        self.prediction = PREDICTIONS[self.prediction_type]
        self._library_options = {k: self.options[k] for k in LIBRARY_OPTIONS if k in self.options}
        if "num_inference_steps" in self.options:
            self.num_inference_steps = int(self.options["num_inference_steps"])
        default = family == "default"
        self.variances = VARIANCES if default else {"fixed_small": VARIANCES["fixed_small"]}
        self._chain_variances = FIXED_VARIANCES if default else ("fixed_small",)
        self._chain_steps = (T, CHAIN_STEPS) if default else (getattr(self, "num_inference_steps", CHAIN_STEPS),)
        self.name = row_name(self.scheduler_class, self.beta_schedule, T, {"clip_sample": False}, self.options, family)
        self.version = diffusers_version()
        self._schedulers: dict[tuple[str, str, int | None], Any] = {}
        self.conventions = {**schedule_conventions(self.beta_schedule, zero_snr)}
        if default:
            self.conventions[Convention.LEARNED_VARIANCE] = (
                "variance_type='learned' takes the variance channels v as sigma^2 itself (_get_variance returns "
                "predicted_variance; step() adds predicted_variance ** 0.5 * noise), whereas improved-diffusion's "
                "'learned' is log sigma^2 (model_log_variance = model_var_values); 'learned_range' is eq. 15 with "
                "frac = (v + 1) / 2 and log beta_tilde clamped at 1e-20")
        shown = getattr(self, "num_inference_steps", CHAIN_STEPS)  # the S of its strided case
        self.conventions[Convention.TIMESTEPS] = spacing_note(self.options, shown, T, self._timesteps(shown))

    # -- schedulers -------------------------------------------------------------------------------------------

    def library_kwargs(self, variance: str = "fixed_small", prediction_type: str | None = None) -> dict[str, Any]:
        """The DDPMScheduler constructor arguments of this configuration with that variance_type."""
        return {"num_train_timesteps": self.T, "beta_schedule": self.beta_schedule, "variance_type": variance,
                "clip_sample": False, **self._library_options,
                "prediction_type": prediction_type or self.prediction_type}

    def library_config(self) -> dict[str, Any]:
        """The configuration the library itself records (`DDPMScheduler.config`) for this adapter's schedulers."""
        return dict(self.scheduler("fixed_small").config)

    def scheduler(self, variance: str, num_steps: int | None = None, prediction_type: str | None = None) -> Any:
        """A cached DDPMScheduler with that variance_type (set_timesteps(num_steps) unless None)."""
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance option {variance!r}; options: {list(VARIANCES)}")
        prediction_type = prediction_type or self.prediction_type
        key = (variance, prediction_type, num_steps)
        if key not in self._schedulers:
            scheduler = getattr(self._module, self.scheduler_class)(**self.library_kwargs(variance, prediction_type))
            if num_steps is not None:
                scheduler.set_timesteps(num_steps)
            self._schedulers[key] = scheduler
        return self._schedulers[key]

    def _step(self, scheduler: Any, out: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
              v: Tensor | None) -> Tensor:
        """scheduler.step(model_output, t, xt).prev_sample with z injected as the step's noise."""
        model_output = out  # [B, C, H, W]
        if VARIANCES[variance].learned:
            if v is None:
                raise ValueError(f"variance option {variance!r} needs the model's variance output v")
            model_output = torch.cat([out, v.expand_as(out)], dim=1)  # [B, 2C, H, W]: step() splits it
        with injected_randn(self._module, z):
            return scheduler.step(model_output, int(t), xt).prev_sample

    def known_num_steps(self) -> list[int]:
        """The S of the schedulers already set up (set_timesteps(S)), to be tried first for a stride."""
        own = [self.num_inference_steps] if hasattr(self, "num_inference_steps") else []
        return own + sorted({n for (_, _, n) in self._schedulers if n is not None})

    def _timesteps(self, num_steps: int) -> list[int]:
        return [int(u) for u in self.scheduler("fixed_small", num_steps).timesteps]

    # -- required members -------------------------------------------------------------------------------------

    def betas(self) -> np.ndarray:
        return self.scheduler("fixed_small").betas.numpy().copy()  # float32 [T]

    def alpha_bars(self) -> np.ndarray:
        return self.scheduler("fixed_small").alphas_cumprod.numpy().copy()  # float32 [T]

    def _one_step_offered(self) -> None:
        if self.family == "timestep_spacing":
            raise NotOffered(SPACING_ONE_STEP)

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor:
        self._one_step_offered()
        timesteps = torch.full((x0.shape[0],), int(t), dtype=torch.int64)  # [B]
        return self.scheduler("fixed_small").add_noise(x0, noise, timesteps)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        self._one_step_offered()
        scheduler = self.scheduler("fixed_small", prediction_type="sample")
        mean = self._step(scheduler, x0, xt, t, torch.zeros_like(xt), "fixed_small", None)
        zeros = torch.zeros_like(xt[:1])  # [1, C, H, W]
        sigma = self._step(scheduler, zeros, zeros, t, torch.ones_like(zeros), "fixed_small", None)
        return mean, sigma**2

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        self._one_step_offered()
        return self._step(self.scheduler(variance), eps, xt, t, z, variance, v)

    # -- respaced (strided) sampling --------------------------------------------------------------------------

    def strided_timesteps(self, num_steps: int) -> list[int]:
        return self._timesteps(num_steps)

    def strided_step(self, eps: Tensor, xt: Tensor, t: int, s: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        num_steps = num_steps_for_stride(t, s, self.T, self._timesteps, self.known_num_steps())
        # No check that previous_timestep(t) == s: step() goes where the library says and the suite judges it.
        return self._step(self.scheduler(variance, num_steps), eps, xt, t, z, variance, v)

    # -- chains -----------------------------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        out = []
        for variance in self._chain_variances:
            for num_steps in self._chain_steps:
                label = (f"{self.scheduler_class}.step loop (variance_type={variance!r}, "
                         f"num_inference_steps={num_steps})")
                out.append(Chain(label, ChainKind.ANCESTRAL, self._timesteps(num_steps),
                                 partial(self._run_chain, variance, num_steps), variance=variance,
                                 resume=partial(self._resume_chain, variance, num_steps)))
        return out

    def _run_chain(self, variance: str, num_steps: int, model: Callable[[Tensor, Tensor], Tensor],
                   shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """The diffusers docs' sampling loop, with the noise from `generator`."""
        x = torch.randn(tuple(shape), generator=generator, dtype=self.dtype)  # [B, C, H, W]: x at timesteps[0]
        return self._loop(self.scheduler(variance, num_steps), model, x, 0, generator)

    def _resume_chain(self, variance: str, num_steps: int, model: Callable[[Tensor, Tensor], Tensor],
                      x: Tensor, start: int, generator: torch.Generator) -> Tensor:
        """The docs' loop entered at the visited timestep `start` with x there."""
        scheduler = self.scheduler(variance, num_steps)
        return self._loop(scheduler, model, x.to(self.dtype), visited_index(scheduler.timesteps, start), generator)

    def _loop(self, scheduler: Any, model: Callable[[Tensor, Tensor], Tensor], x: Tensor, first: int,
              generator: torch.Generator) -> Tensor:
        """`for t in scheduler.timesteps[first:]: x = scheduler.step(model(x, t), t, x, generator).prev_sample`."""
        for t in scheduler.timesteps[first:]:
            out = model(x, torch.full((x.shape[0],), int(t), dtype=torch.int64)).to(self.dtype)
            x = scheduler.step(out, t, x, generator=generator).prev_sample
        return x

    # -- reproduction -----------------------------------------------------------------------------------------

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """A standalone snippet (torch + diffusers only) calling DDPMScheduler at timestep t; None if not offered.

        Reads inputs "x0", "xt", the network output ("eps", "x0_pred" or "v_pred" by the configuration's
        prediction type), "z", "v" and, for q_sample, "noise" (else "eps"); absent ones get defaults.
        """
        kind, _, rest = operation.partition(":")
        num_steps = None
        if kind == "strided_step":
            variance, _, steps = rest.rpartition(":")
            num_steps = int(steps)
        elif kind == "reverse_step":
            variance = rest
        elif kind in ("q_sample", "schedule"):
            variance = "fixed_small"
        elif kind == "q_posterior":
            return self._posterior_snippet(t, inputs)
        elif kind == "chain":
            return self._chain_snippet(rest)
        else:
            return None
        if variance not in VARIANCES:
            raise ValueError(f"unknown variance option {variance!r}; options: {list(VARIANCES)}")
        head = self.snippet_head(variance)
        if kind == "schedule":
            return head + (f"print('beta', scheduler.betas[{int(t)}].item(), "
                           f"'alpha_bar', scheduler.alphas_cumprod[{int(t)}].item())\n")
        if kind == "q_sample":
            given = dict(inputs)
            if "noise" not in given and "eps" in given:
                given["noise"] = given["eps"]
            return head + snippet_tensors(given, ["x0", "noise"]) + (
                f"\nprint(scheduler.add_noise(x0, noise, torch.tensor([{int(t)}])).flatten().tolist())\n")
        learned = VARIANCES[variance].learned
        given = output_as_eps(inputs, self.prediction_type)
        body = snippet_tensors(given, ["eps", "xt", "z"] + (["v"] if learned else []))
        if self.prediction_type != "epsilon":
            body += f"\n# eps holds the network output: prediction_type={self.prediction_type!r}"
        body += (f"\n{self.scheduler_module}.randn_tensor = lambda shape, **kwargs: z  # step() draws its noise by "
                 "this name\n")
        if num_steps is not None:
            body += f"scheduler.set_timesteps({num_steps})\n"
        output = "torch.cat([eps, v], dim=1)" if learned else "eps"
        return head + body + f"print(scheduler.step({output}, {int(t)}, xt).prev_sample.flatten().tolist())\n"

    def snippet_head(self, variance: str, prediction_type: str | None = None) -> str:
        """The imports of a snippet and `scheduler = <class>(...)` with this configuration and that variance_type."""
        return (f"import torch\nimport diffusers.schedulers.{self.scheduler_module} as {self.scheduler_module}\n"
                f"from diffusers import {self.scheduler_class}\n\n"
                f"scheduler = {call_text(self.scheduler_class, self.library_kwargs(variance, prediction_type))}\n")

    def _chain_snippet(self, label: str) -> str | None:
        """The docs' sampling loop driven by the exact output of N(0.1, 0.25^2) data (the suite's default data)."""
        match = re.fullmatch(re.escape(self.scheduler_class)
                             + r"\.step loop \(variance_type='(\w+)', num_inference_steps=(\d+)\)", label)
        if match is None:
            return None
        variance, num_steps = match.group(1), int(match.group(2))
        return (self.snippet_head(variance) + f"scheduler.set_timesteps({num_steps})\n"
                "alpha_bar = scheduler.alphas_cumprod.double()\n\n\n"
                + exact_model_source(self.prediction_type) + "\n\n"
                "generator = torch.Generator().manual_seed(0)\n"
                "x = torch.randn(1000, 1, 2, 2, generator=generator)\n"
                "for t in scheduler.timesteps:\n"
                "    x = scheduler.step(model(x, t), t, x, generator=generator).prev_sample\n"
                "print('finite:', bool(torch.isfinite(x).all()), 'mean', x.mean().item(), 'sd', x.std().item(),\n"
                "      '(x_0 should follow about N(0.1, 0.25^2))')\n")

    def _posterior_snippet(self, t: int, inputs: Mapping[str, Any]) -> str:
        module = self.scheduler_module
        return ("# prediction_type='sample': the model output is x_0, so step() returns mu_tilde(x_0, x_t) + sigma z\n"
                + self.snippet_head("fixed_small", "sample")
                + snippet_tensors(inputs, ["x0", "xt"]) + "\n"
                f"{module}.randn_tensor = lambda shape, **kwargs: torch.zeros(shape)\n"
                f"print('mean', scheduler.step(x0, {int(t)}, xt).prev_sample.flatten().tolist())\n"
                f"{module}.randn_tensor = lambda shape, **kwargs: torch.ones(shape)\n"
                f"sigma = scheduler.step(torch.zeros(1, 1, 1, 1), {int(t)}, torch.zeros(1, 1, 1, 1)).prev_sample\n"
                "print('variance', (sigma**2).item())\n")


OUTPUT_INPUTS = {"epsilon": "eps", "sample": "x0_pred", "v_prediction": "v_pred"}  # the suite's name of the output


def output_as_eps(inputs: Mapping[str, Any], prediction_type: str) -> dict[str, Any]:
    """`inputs` with the recorded network output under the snippet's name "eps" (whatever it predicts)."""
    given = dict(inputs)
    name = OUTPUT_INPUTS[prediction_type]
    if name in given:
        given["eps"] = given.pop(name)
    return given


def configurations(T: int) -> list[tuple[str, Configuration]]:
    """(schedule, configuration) of every DDPMScheduler row, in report order: the default ones first."""
    rows = [(schedule, Configuration("default", {"beta_schedule": BETA_SCHEDULES[schedule]}))
            for schedule in ("linear", "cosine")]
    return rows + [("linear", c) for c in shared_configurations()]


def factory(T: int = 1000) -> list[DiffusersDDPMAdapter | RejectedConfiguration]:
    """One DDPMScheduler adapter per configuration (`configurations`): the linear and squaredcos_cap_v2 defaults
    first, then every non-default family; a configuration the library refuses comes back as RejectedConfiguration."""
    diffusers = import_diffusers()
    out: list[DiffusersDDPMAdapter | RejectedConfiguration] = []
    for schedule, config in configurations(T):
        options = dict(config.options)
        steps = [options["num_inference_steps"]] if "num_inference_steps" in options else []
        kwargs = {k: v for k, v in options.items() if k != "num_inference_steps"}
        kwargs.setdefault("beta_schedule", BETA_SCHEDULES[schedule])
        error = rejection(partial(diffusers.DDPMScheduler, num_train_timesteps=T, clip_sample=False, **kwargs),
                          steps)
        if error is not None:
            name = row_name("DDPMScheduler", kwargs["beta_schedule"], T, {"clip_sample": False}, options,
                            config.family)
            out.append(RejectedConfiguration(name, diffusers_version(), error, config.family, options))
            continue
        out.append(DiffusersDDPMAdapter(schedule, T, config.family, options))
    return out
