"""Adapter for diffusers' `DDIMScheduler`: DDIM (Song et al. 2021, eq. 12) as diffusers implements it.

Tested with diffusers 0.42.1 (`diffusers/schedulers/scheduling_ddim.py`). Default configurations: T = 1000,
`beta_schedule` "linear" or "squaredcos_cap_v2", `clip_sample=False` (the default `True` clamps x0_hat),
`set_alpha_to_one=True` (the last step goes to alpha_bar = 1, i.e. x_0) and the default
`timestep_spacing="leading"`. Timesteps are diffusers' (paper t - 1), tables float32. `factory()` adds one adapter
per configuration of `diffusers_configurations` and of this scheduler's own families (FAMILIES): the final alpha
(`set_alpha_to_one`), clipping (`clip_sample=True`, with and without `use_clipped_model_output`) and dynamic
thresholding (`thresholding=True`, declared as Convention.THRESHOLDS_X0 with its `threshold` = (p, s_max)).

How each operation reaches the library:
- `ddim_step(out, xt, t, s, eta, z)`: `step(out, t, xt, eta=eta, variance_noise=z)` (the public way to give the
  noise; `use_clipped_model_output` where the configuration sets it) on a scheduler after `set_timesteps(S)`, S
  chosen so that s follows t among the visited timesteps (the configuration's own S first); ValueError when no S
  makes that step. `step()` computes its previous timestep itself (t - T // S in 0.42.1); the suite compares the
  result with eq. 12 at the next visited timestep, so a previous timestep that is not the next visited one shows
  as a deviation.
- `reverse_step`: DDIM with eta = 1 over all T steps (`set_timesteps(T)`) has sigma_t^2 = beta_tilde_t and is
  Algorithm 2 (Song et al. 2021, sec. 4.1), so it is the one variance option, "eta=1, all T steps".
- `q_sample`: `add_noise`. `q_posterior`: not offered (DDIMScheduler has no posterior).
- `chains()`: the diffusers docs' loop `x = scheduler.step(out, t, x, eta=eta, generator=generator).prev_sample`
  from x = randn(shape, generator): the default configurations over `set_timesteps(50)` at eta = 0 and 1.

To keep a run of every configuration affordable, a non-default configuration runs one chain, eta = 0 at its S
(its `num_inference_steps` for a timestep spacing configuration, else 50); its DDIM cases run at that S too. A
timestep spacing configuration offers only its DDIM step and its chain: `timestep_spacing` and `steps_offset` act
only through `set_timesteps(S)` (reverse_step's `step()` over all T steps goes from t to t - 1 whatever the
spacing), so its q_sample and reverse_step are the default configuration's library calls (they raise NotOffered
saying so).
"""

from __future__ import annotations

import importlib
import re
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

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
from ddpm.conformance.adapters.diffusers_ddpm import (
    BETA_SCHEDULES,
    diffusers_version,
    import_diffusers,
    num_steps_for_stride,
    output_as_eps,
    visited_index,
)
from ddpm.conformance.adapters.snippets import snippet_tensors
from ddpm.conformance.protocol import (
    Chain,
    ChainKind,
    Convention,
    NotOffered,
    RejectedConfiguration,
    VarianceKind,
)

Tensor = torch.Tensor

TESTED_VERSION = "0.42.1"
ETA_ONE_ALL_STEPS = "eta=1, all T steps"
CHAIN_STEPS = 50  # S of the DDIM chains
CHAIN_ETAS = (0.0, 1.0)
FIXED = {"clip_sample": False, "set_alpha_to_one": True}  # the default configurations' values, shown in every name
# Constructor options a configuration may set (beyond num_train_timesteps and beta_schedule), and step()'s option.
LIBRARY_OPTIONS = ("prediction_type", "timestep_spacing", "steps_offset", "rescale_betas_zero_snr", "clip_sample",
                   "set_alpha_to_one", "thresholding", "dynamic_thresholding_ratio", "sample_max_value")
STEP_OPTIONS = ("use_clipped_model_output",)
FAMILIES = [
    Configuration("set_alpha_to_one", {"set_alpha_to_one": True}),
    Configuration("set_alpha_to_one", {"set_alpha_to_one": False}),
    Configuration("clip_sample", {"clip_sample": True, "use_clipped_model_output": False}),
    Configuration("clip_sample", {"clip_sample": True, "use_clipped_model_output": True}),
    # sample_max_value = 3 so that s = clamp(quantile, 1, s_max) lies strictly inside its bounds for about a fifth of
    # the suite's images (with the library default 1, s = 1 always: thresholding would be clipping to [-1, 1]).
    Configuration("thresholding", {"thresholding": True, "dynamic_thresholding_ratio": 0.95, "sample_max_value": 3.0,
                                   "use_clipped_model_output": True}),
]


class DiffusersDDIMAdapter:
    """diffusers DDIMScheduler(beta_schedule, T, clip_sample=False, set_alpha_to_one=True, **options) (base 0,
    float32); `options` are the configuration's (module docstring), `num_inference_steps` among them."""

    timestep_base = 0
    dtype = torch.float32
    variances = {ETA_ONE_ALL_STEPS: VarianceKind.BETA_TILDE}
    scheduler_class = "DDIMScheduler"  # a scheduler with the same step() reuses the adapter (diffusers_parallel)
    scheduler_module = "scheduling_ddim"

    def __init__(self, schedule: str = "linear", T: int = 1000, family: str = "default",
                 options: Mapping[str, Any] | None = None) -> None:
        import_diffusers()
        self._module = importlib.import_module(f"diffusers.schedulers.{self.scheduler_module}")
        self.family = family
        self.options = dict(options or {})
        unknown = set(self.options) - {"beta_schedule", "num_inference_steps", *LIBRARY_OPTIONS, *STEP_OPTIONS}
        if unknown:
            raise ValueError(f"unknown DDIMScheduler options {sorted(unknown)}; options: "
                             f"{list(LIBRARY_OPTIONS + STEP_OPTIONS)}")
        self.beta_schedule = str(self.options.get("beta_schedule", BETA_SCHEDULES.get(schedule, schedule)))
        self.T = T
        zero_snr = bool(self.options.get("rescale_betas_zero_snr", False))
        self.schedule = schedule_spec(self.beta_schedule, T, zero_snr)
        self.prediction_type = str(self.options.get("prediction_type", "epsilon"))
        self.prediction = PREDICTIONS[self.prediction_type]
        self._library_options = {**FIXED, **{k: self.options[k] for k in LIBRARY_OPTIONS if k in self.options}}
        self._step_options = {k: self.options[k] for k in STEP_OPTIONS if k in self.options}
        if self._library_options.get("thresholding", False):
            self.threshold = (float(self._library_options.get("dynamic_thresholding_ratio", 0.995)),
                              float(self._library_options.get("sample_max_value", 1.0)))
        if "num_inference_steps" in self.options:
            self.num_inference_steps = int(self.options["num_inference_steps"])
        default = family == "default"
        own_steps = getattr(self, "num_inference_steps", CHAIN_STEPS)
        self._chains = [(CHAIN_STEPS, eta) for eta in CHAIN_ETAS] if default else [(own_steps, 0.0)]
        self.name = row_name(self.scheduler_class, self.beta_schedule, T, FIXED, self.options, family)
        self.version = diffusers_version()
        self._schedulers: dict[int, Any] = {}
        self.conventions = {**schedule_conventions(self.beta_schedule, zero_snr), **self._clip_conventions()}
        timesteps = spacing_note(self.options, own_steps, T, self.ddim_timesteps(own_steps))
        if not self._library_options["set_alpha_to_one"]:
            timesteps += ("; set_alpha_to_one=False: the final step goes to alphas_cumprod[0] (paper t = 1), not "
                          "to x_0 (alpha_bar = 1)")
        self.conventions[Convention.TIMESTEPS] = timesteps

    def _clip_conventions(self) -> dict[Convention, str]:
        rederives = self._step_options.get("use_clipped_model_output", False)
        if hasattr(self, "threshold"):
            return {Convention.THRESHOLDS_X0: (
                f"thresholding=True: per image s = clamp(quantile_{self.threshold[0]:g}(|x0_hat|), 1, "
                f"{self.threshold[1]:g}) and x0_hat becomes clamp(x0_hat, -s, s) / s (_threshold_sample); "
                + ("use_clipped_model_output=True re-derives eps from it before eq. 12" if rederives else
                   "eq. 12's direction term keeps the network's eps (use_clipped_model_output=False), which the "
                   "suite's oracle does not model"))}
        if not self._library_options["clip_sample"]:
            return {}
        if rederives:
            return {Convention.CLIPS_X0: "clip_sample=True clamps x0_hat to [-1, 1]; use_clipped_model_output=True "
                                         "re-derives eps from the clipped x0_hat before eq. 12"}
        return {Convention.CLIPS_X0: (
            "clip_sample=True clamps x0_hat to [-1, 1]; with use_clipped_model_output=False (the default of step() "
            "and of DDIMPipeline) eq. 12's direction term keeps the network's eps, whereas the suite's clipped "
            "oracle re-derives eps from the clipped x0_hat (use_clipped_model_output=True): clipped steps differ")}

    # -- schedulers -------------------------------------------------------------------------------------------

    def library_kwargs(self) -> dict[str, Any]:
        """The DDIMScheduler constructor arguments of this configuration."""
        return {"num_train_timesteps": self.T, "beta_schedule": self.beta_schedule, **self._library_options}

    def library_config(self) -> dict[str, Any]:
        """The configuration the library itself records (`DDIMScheduler.config`) for this adapter's schedulers."""
        return dict(self.scheduler(self.T).config)

    def scheduler(self, num_steps: int) -> Any:
        """A cached DDIMScheduler after set_timesteps(num_steps)."""
        if num_steps not in self._schedulers:
            scheduler = getattr(self._module, self.scheduler_class)(**self.library_kwargs())
            scheduler.set_timesteps(num_steps)
            self._schedulers[num_steps] = scheduler
        return self._schedulers[num_steps]

    def known_num_steps(self) -> list[int]:
        """The S of the schedulers already set up (set_timesteps(S)), to be tried first for a stride."""
        own = [self.num_inference_steps] if hasattr(self, "num_inference_steps") else []
        return own + sorted(self._schedulers)

    @staticmethod
    def _check_variance(variance: str) -> None:
        if variance != ETA_ONE_ALL_STEPS:
            raise ValueError(f"unknown variance option {variance!r}; options: [{ETA_ONE_ALL_STEPS!r}]")

    # -- required members -------------------------------------------------------------------------------------

    def betas(self) -> np.ndarray:
        return self.scheduler(self.T).betas.numpy().copy()  # float32 [T]

    def alpha_bars(self) -> np.ndarray:
        return self.scheduler(self.T).alphas_cumprod.numpy().copy()  # float32 [T]

    def _one_step_offered(self) -> None:
        if self.family == "timestep_spacing":
            raise NotOffered(SPACING_ONE_STEP)

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor:
        self._one_step_offered()
        timesteps = torch.full((x0.shape[0],), int(t), dtype=torch.int64)  # [B]
        return self.scheduler(self.T).add_noise(x0, noise, timesteps)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        raise NotOffered("DDIMScheduler has no posterior q(x_{t-1} | x_t, x_0)")

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        self._check_variance(variance)
        self._one_step_offered()
        return self._step(self.scheduler(self.T), eps, xt, t, 1.0, z)

    # -- DDIM -------------------------------------------------------------------------------------------------

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        return [int(u) for u in self.scheduler(num_steps).timesteps]

    def ddim_step(self, eps: Tensor, xt: Tensor, t: int, s: int, eta: float, z: Tensor) -> Tensor:
        num_steps = num_steps_for_stride(t, s, self.T, self.ddim_timesteps, self.known_num_steps())
        # No check of where step() goes (t - T // S): the suite compares its result with eq. 12 from t to s.
        return self._step(self.scheduler(num_steps), eps, xt, t, eta, z)

    def _step(self, scheduler: Any, out: Tensor, xt: Tensor, t: int, eta: float, z: Tensor | None) -> Tensor:
        if eta > 0 and z is None:
            raise ValueError("z (the standard normal draw) is required when eta > 0")
        return scheduler.step(out, int(t), xt, eta=float(eta), variance_noise=z, **self._step_options).prev_sample

    # -- chains -----------------------------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        return [Chain(f"{self.scheduler_class}.step loop (num_inference_steps={num_steps}, eta={eta:g})",
                      ChainKind.DDIM, self.ddim_timesteps(num_steps), partial(self._run_chain, num_steps, eta),
                      eta=eta, resume=partial(self._resume_chain, num_steps, eta))
                for num_steps, eta in self._chains]

    def _run_chain(self, num_steps: int, eta: float, model: Callable[[Tensor, Tensor], Tensor],
                   shape: tuple[int, ...], generator: torch.Generator) -> Tensor:
        """The diffusers docs' DDIM loop, with the noise from `generator`."""
        x = torch.randn(tuple(shape), generator=generator, dtype=self.dtype)  # [B, C, H, W]: x at timesteps[0]
        return self._loop(num_steps, eta, model, x, 0, generator)

    def _resume_chain(self, num_steps: int, eta: float, model: Callable[[Tensor, Tensor], Tensor], x: Tensor,
                      start: int, generator: torch.Generator) -> Tensor:
        """The docs' DDIM loop entered at the visited timestep `start` with x there."""
        first = visited_index(self.scheduler(num_steps).timesteps, start)
        return self._loop(num_steps, eta, model, x.to(self.dtype), first, generator)

    def _loop(self, num_steps: int, eta: float, model: Callable[[Tensor, Tensor], Tensor], x: Tensor, first: int,
              generator: torch.Generator) -> Tensor:
        scheduler = self.scheduler(num_steps)
        for t in scheduler.timesteps[first:]:
            out = model(x, torch.full((x.shape[0],), int(t), dtype=torch.int64)).to(self.dtype)
            x = scheduler.step(out, t, x, eta=eta, generator=generator, **self._step_options).prev_sample
        return x

    # -- reproduction -----------------------------------------------------------------------------------------

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """A standalone snippet (torch + diffusers only) calling DDIMScheduler at timestep t; None if not offered.

        Reads inputs "x0", the network output ("eps", "x0_pred" or "v_pred" by the configuration's prediction type),
        "xt", "z" and, for q_sample, "noise" (else "eps"); absent ones get defaults.
        """
        kind, _, rest = operation.partition(":")
        if kind == "reverse_step":
            self._check_variance(rest)
            eta, num_steps = 1.0, self.T
        elif kind == "ddim_step":
            eta_text, _, steps = rest.partition(":")
            eta, num_steps = float(eta_text), int(steps)
        elif kind in ("q_sample", "schedule"):
            eta, num_steps = 0.0, self.T
        elif kind == "chain":
            return self._chain_snippet(rest)
        else:
            return None
        head = self.snippet_head(num_steps)
        if kind == "schedule":
            return head + (f"print('beta', scheduler.betas[{int(t)}].item(), "
                           f"'alpha_bar', scheduler.alphas_cumprod[{int(t)}].item())\n")
        if kind == "q_sample":
            given = dict(inputs)
            if "noise" not in given and "eps" in given:
                given["noise"] = given["eps"]
            return head + snippet_tensors(given, ["x0", "noise"]) + (
                f"\nprint(scheduler.add_noise(x0, noise, torch.tensor([{int(t)}])).flatten().tolist())\n")
        body = snippet_tensors(output_as_eps(inputs, self.prediction_type), ["eps", "xt", "z"])
        if self.prediction_type != "epsilon":
            body += f"\n# eps holds the network output: prediction_type={self.prediction_type!r}"
        extra = "".join(f", {k}={v!r}" for k, v in self._step_options.items())
        return head + body + (f"\nprint(scheduler.step(eps, {int(t)}, xt, eta={eta!r}, variance_noise=z{extra})"
                              ".prev_sample.flatten().tolist())\n")

    def snippet_head(self, num_steps: int) -> str:
        """The imports of a snippet, `scheduler = <class>(...)` with this configuration and set_timesteps(S)."""
        return (f"import torch\nfrom diffusers import {self.scheduler_class}\n\n"
                f"scheduler = {call_text(self.scheduler_class, self.library_kwargs())}\n"
                f"scheduler.set_timesteps({num_steps})\n")

    def _chain_snippet(self, label: str) -> str | None:
        """The docs' DDIM loop driven by the exact output of N(0.1, 0.25^2) data (the suite's default data)."""
        match = re.fullmatch(re.escape(self.scheduler_class)
                             + r"\.step loop \(num_inference_steps=(\d+), eta=([0-9.]+)\)", label)
        if match is None:
            return None
        num_steps, eta = int(match.group(1)), float(match.group(2))
        extra = "".join(f", {k}={v!r}" for k, v in self._step_options.items())
        return (self.snippet_head(num_steps)
                + "alpha_bar = scheduler.alphas_cumprod.double()\n\n\n"
                + exact_model_source(self.prediction_type) + "\n\n"
                "generator = torch.Generator().manual_seed(0)\n"
                "x = torch.randn(1000, 1, 2, 2, generator=generator)\n"
                "for t in scheduler.timesteps:\n"
                f"    x = scheduler.step(model(x, t), t, x, eta={eta!r}, generator=generator{extra}).prev_sample\n"
                "print('finite:', bool(torch.isfinite(x).all()), 'mean', x.mean().item(), 'sd', x.std().item(),\n"
                "      '(x_0 should follow about N(0.1, 0.25^2))')\n")


def configurations(T: int) -> list[tuple[str, Configuration]]:
    """(schedule, configuration) of every DDIMScheduler row, in report order: the default ones first."""
    rows = [(schedule, Configuration("default", {"beta_schedule": BETA_SCHEDULES[schedule]}))
            for schedule in ("linear", "cosine")]
    return rows + [("linear", c) for c in shared_configurations() + FAMILIES]


def factory(T: int = 1000) -> list[DiffusersDDIMAdapter | RejectedConfiguration]:
    """One DDIMScheduler adapter per configuration (`configurations`): the linear and squaredcos_cap_v2 defaults
    first; a configuration the library refuses comes back as RejectedConfiguration with its error."""
    diffusers = import_diffusers()
    out: list[DiffusersDDIMAdapter | RejectedConfiguration] = []
    for schedule, config in configurations(T):
        options = dict(config.options)
        steps = [options["num_inference_steps"]] if "num_inference_steps" in options else []
        kwargs = {**FIXED, **{k: v for k, v in options.items() if k in LIBRARY_OPTIONS},
                  "beta_schedule": options.get("beta_schedule", BETA_SCHEDULES[schedule])}
        error = rejection(partial(diffusers.DDIMScheduler, num_train_timesteps=T, **kwargs), steps)
        if error is not None:
            name = row_name("DDIMScheduler", kwargs["beta_schedule"], T, FIXED, options, config.family)
            out.append(RejectedConfiguration(name, diffusers_version(), error, config.family, options))
            continue
        out.append(DiffusersDDIMAdapter(schedule, T, config.family, options))
    return out
