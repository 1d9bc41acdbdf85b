"""The configurations of diffusers' `DDPMScheduler` and `DDIMScheduler` that the shipped adapters enumerate.

Each configuration is one adapter (one row of the report) with a `family` and its `options`: the scheduler options
that change the mathematics, one family at a time, the others at the default row's values (T = 1000, linear betas,
`clip_sample=False`, epsilon prediction, `timestep_spacing="leading"`, `steps_offset=0`):

- "default": the linear and squaredcos_cap_v2 schedules with every variance option (each adapter module's own);
- "timestep_spacing": `timestep_spacing` in SPACINGS x `steps_offset` in OFFSETS x `num_inference_steps` in
  SPACING_STEPS (100 divides T = 1000, 300 does not: a previous timestep computed as t - T // S, which diffusers
  once had in `DDPMScheduler.previous_timestep`, is wrong under "trailing" at S = 300 and under "linspace");
- "prediction_type": epsilon, sample, v_prediction (the adapter declares `prediction`);
- "beta_schedule": linear, scaled_linear, squaredcos_cap_v2, sigmoid (scaled_linear and sigmoid have no formula in
  the suite's oracle: ScheduleKind.CUSTOM, checked for consistency only);
- "zero_snr": `rescale_betas_zero_snr=True` (alpha_bar_T = 0) with `timestep_spacing="trailing"` (which starts at
  t = T, where the SNR is zero) for each prediction type.

The adapter modules add their own families (DDIMScheduler's `set_alpha_to_one`, `clip_sample`, `thresholding`).
Nothing here imports diffusers: `rejection` calls the constructor the adapter module passes in.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from ddpm.conformance.protocol import Convention, Prediction, ScheduleKind, ScheduleSpec

SPACINGS = ("leading", "trailing", "linspace")
OFFSETS = (0, 1)
SPACING_STEPS = (100, 300)
PREDICTIONS = {"epsilon": Prediction.EPS, "sample": Prediction.X0, "v_prediction": Prediction.V}
ZERO_SNR_PREDICTIONS = ("v_prediction", "epsilon", "sample")
BETA_SCHEDULE_KINDS = {  # diffusers' beta_schedule -> the formula the suite checks it against
    "linear": ScheduleKind.LINEAR,
    "scaled_linear": ScheduleKind.CUSTOM,
    "squaredcos_cap_v2": ScheduleKind.COSINE,
    "sigmoid": ScheduleKind.CUSTOM,
}
SCHEDULE_NOTES = {
    "linear": "linear betas are torch.linspace(1e-4, 0.02, T) in float32 for every T (not rescaled by 1000 / T; "
              "identical at T = 1000)",
    "scaled_linear": "scaled_linear betas are torch.linspace(1e-4 ** 0.5, 0.02 ** 0.5, T) ** 2 (latent diffusion): "
                     "no formula in the suite, checked for consistency only",
    "sigmoid": "sigmoid betas are sigmoid(torch.linspace(-6, 6, T)) (0.02 - 1e-4) + 1e-4 (GeoDiff): no formula in the "
               "suite, checked for consistency only",
}
ZERO_SNR_NOTE = ("rescale_betas_zero_snr=True rescales sqrt(alpha_bar) so that alpha_bar_T = 0 (Lin et al. 2024, "
                 "Algorithm 1), hence beta_T = 1: no formula in the suite, checked for consistency only")


# Why a timestep spacing configuration does not offer the one-step operations (q_sample, q_posterior, reverse_step).
SPACING_ONE_STEP = ("timestep_spacing and steps_offset act only through set_timesteps(S): this one-step operation "
                    "is the same library call as in the default configuration, checked there")


@dataclass(frozen=True)
class Configuration:
    """One row: its family and the library options that define it (`num_inference_steps` included where it is one)."""

    family: str
    options: Mapping[str, Any] = field(default_factory=dict)


def shared_configurations() -> list[Configuration]:
    """The non-default configurations both schedulers take (module docstring), in report order."""
    out = [Configuration("timestep_spacing", {"timestep_spacing": spacing, "steps_offset": offset,
                                              "num_inference_steps": steps})
           for spacing in SPACINGS for offset in OFFSETS for steps in SPACING_STEPS]
    out += [Configuration("prediction_type", {"prediction_type": p}) for p in PREDICTIONS]
    out += [Configuration("beta_schedule", {"beta_schedule": b}) for b in BETA_SCHEDULE_KINDS]
    out += [Configuration("zero_snr", {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing",
                                       "prediction_type": p}) for p in ZERO_SNR_PREDICTIONS]
    return out


def schedule_spec(beta_schedule: str, T: int, zero_snr: bool = False) -> ScheduleSpec:
    """The ScheduleSpec a diffusers scheduler with that beta_schedule claims; ValueError for an unknown name."""
    if beta_schedule not in BETA_SCHEDULE_KINDS:
        raise ValueError(f"unknown beta_schedule {beta_schedule!r}; options: {list(BETA_SCHEDULE_KINDS)}")
    kind = ScheduleKind.CUSTOM if zero_snr else BETA_SCHEDULE_KINDS[beta_schedule]
    return ScheduleSpec(kind, T, rescaled=kind is not ScheduleKind.LINEAR)


def schedule_conventions(beta_schedule: str, zero_snr: bool = False) -> dict[Convention, str]:
    """The schedule note shared by both diffusers schedulers (none for squaredcos_cap_v2 as it is)."""
    notes = [SCHEDULE_NOTES[beta_schedule]] if beta_schedule in SCHEDULE_NOTES else []
    if zero_snr:
        notes.append(ZERO_SNR_NOTE)
    return {Convention.SCHEDULE: "; ".join(notes)} if notes else {}


def spacing_note(options: Mapping[str, Any], num_steps: int, T: int, visited: Sequence[int]) -> str:
    """What set_timesteps(num_steps) visits under the configuration's spacing (library convention, paper t - 1)."""
    spacing = options.get("timestep_spacing", "leading")
    offset = int(options.get("steps_offset", 0))
    steps = [int(u) for u in visited]
    shown = ", ".join(map(str, steps[:3])) + (", ..., " + ", ".join(map(str, steps[-2:])) if len(steps) > 5 else
                                               "".join(f", {u}" for u in steps[3:]))
    note = f"timestep_spacing={spacing!r}, steps_offset={offset}: set_timesteps({num_steps}) visits {shown}"
    if offset and spacing != "leading":
        note += " (steps_offset is ignored by this spacing)"
    if steps and steps[0] != T - 1:
        note += (f"; it never visits t = {T - 1} (paper t = T): a chain's N(0, I) draw stands at its first timestep "
                 f"t = {steps[0]}")
    return note


def call_text(function: str, kwargs: Mapping[str, Any]) -> str:
    """`function(k=v, ...)` with each value's repr: the constructor call a reproduction snippet prints."""
    return f"{function}(" + ", ".join(f"{k}={v!r}" for k, v in kwargs.items()) + ")"


def exact_model_source(prediction_type: str) -> str:
    """Source of a snippet's `model(x, t)`: the exact network output in that prediction type (eps*, x_0* or v*) for
    x_0 ~ N(0.1, 0.25^2) data (the suite's default data), reading the snippet's float64 `alpha_bar` table."""
    output = {"epsilon": "eps", "sample": "x0", "v_prediction": "a.sqrt() * eps - (1 - a).sqrt() * x0"}[prediction_type]
    return ("def model(x, t):  # E[output | x_t] for x_0 ~ N(0.1, 0.25^2), output = eps, x_0 or v\n"
            "    a = alpha_bar[t]\n"
            "    r = a * 0.25**2 + 1 - a\n"
            "    centred = x.double() - a.sqrt() * 0.1\n"
            "    eps = (1 - a).sqrt() * centred / r\n"
            "    x0 = 0.1 + a.sqrt() * 0.25**2 * centred / r\n"
            f"    return ({output}).float()\n")


def rejection(build: Callable[[], Any], num_steps: Sequence[int]) -> str | None:
    """The library's error when `build()` (a scheduler constructor call) or its set_timesteps(S) for S in
    `num_steps` raises; None when the library accepts the configuration."""
    try:
        scheduler = build()
        for steps in num_steps:
            scheduler.set_timesteps(steps)
    except (ValueError, NotImplementedError) as error:  # what diffusers raises for an option it refuses
        return f"{type(error).__name__}: {error}"
    return None


def row_name(scheduler: str, beta_schedule: str, T: int, fixed: Mapping[str, Any], options: Mapping[str, Any],
             family: str = "default") -> str:
    """E.g. "diffusers DDIMScheduler(linear, T=1000, clip_sample=False, timestep_spacing='trailing') [family]": the
    non-default options after the fixed ones, the family in brackets unless "default" (rows of two families
    may share their options, e.g. the default linear row and the beta_schedule family's linear row)."""
    shown = {**fixed, **{k: v for k, v in options.items() if k != "beta_schedule"}}
    name = f"diffusers {scheduler}({beta_schedule}, T={T}" + "".join(f", {k}={v!r}" for k, v in shown.items()) + ")"
    return name if family == "default" else f"{name} [{family}]"


__all__ = ["BETA_SCHEDULE_KINDS", "OFFSETS", "PREDICTIONS", "SPACINGS", "SPACING_ONE_STEP", "SPACING_STEPS",
           "ZERO_SNR_PREDICTIONS", "Configuration", "call_text", "exact_model_source", "rejection", "row_name",
           "schedule_conventions", "schedule_spec", "shared_configurations", "spacing_note"]
