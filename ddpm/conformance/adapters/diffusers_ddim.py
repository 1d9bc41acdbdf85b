"""Adapter for diffusers' `DDIMScheduler`: DDIM (Song et al. 2021, eq. 12) as diffusers implements it.

Tested with diffusers 0.42.1 (`diffusers/schedulers/scheduling_ddim.py`). Configuration: T = 1000,
`beta_schedule` "linear" or "squaredcos_cap_v2", `clip_sample=False` (the default `True` clamps x0_hat),
`set_alpha_to_one=True` (the last step goes to alpha_bar = 1, i.e. x_0) and the default
`timestep_spacing="leading"`. Timesteps are diffusers' (paper t - 1), tables float32.

How each operation reaches the library:
- `ddim_step(eps, xt, t, s, eta, z)`: `step(eps, t, xt, eta=eta, variance_noise=z)` (the public way to give the
  noise) on a scheduler after `set_timesteps(S)`, S chosen so that s is the step's previous timestep
  (`t - T // S`, or any negative value for s = -1, x_0); ValueError when no S makes that step.
- `reverse_step`: DDIM with eta = 1 over all T steps (`set_timesteps(T)`) has sigma_t^2 = beta_tilde_t and is
  Algorithm 2 (Song et al. 2021, sec. 4.1), so it is the one variance option, "eta=1, all T steps".
- `q_sample`: `add_noise`. `q_posterior`: not offered (DDIMScheduler has no posterior).
- `chains()`: the diffusers docs' loop `x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample`
  over `set_timesteps(50)`, eta = 0 and 1, from x = randn(shape, generator); resumed from a given x_t by entering
  the same loop at that visited timestep.

The class names the scheduler it drives in `scheduler_class` (module `scheduler_module`), so that a scheduler with
the same `step()` (diffusers' `DDIMParallelScheduler`, `diffusers_parallel`) reuses it.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Mapping
from functools import partial
from typing import Any

import numpy as np
import torch

from ddpm.conformance.adapters.diffusers_ddpm import (
    BETA_SCHEDULES,
    diffusers_version,
    import_diffusers,
    num_steps_for_stride,
    schedule_conventions,
    schedule_spec,
    visited_index,
)
from ddpm.conformance.adapters.snippets import snippet_tensors
from ddpm.conformance.protocol import Chain, ChainKind, Convention, NotOffered, VarianceKind

Tensor = torch.Tensor

TESTED_VERSION = "0.42.1"
ETA_ONE_ALL_STEPS = "eta=1, all T steps"
CHAIN_STEPS = 50  # S of the DDIM chains
CHAIN_ETAS = (0.0, 1.0)


class DiffusersDDIMAdapter:
    """diffusers DDIMScheduler(beta_schedule, T, clip_sample=False, set_alpha_to_one=True) (base 0, float32)."""

    timestep_base = 0
    dtype = torch.float32
    variances = {ETA_ONE_ALL_STEPS: VarianceKind.BETA_TILDE}
    scheduler_class = "DDIMScheduler"  # the diffusers class this adapter drives
    scheduler_module = "scheduling_ddim"  # its module in diffusers.schedulers

    def __init__(self, schedule: str = "linear", T: int = 1000) -> None:
        import_diffusers()
        self._module = importlib.import_module(f"diffusers.schedulers.{self.scheduler_module}")
        self.schedule = schedule_spec(schedule, T)
        self.beta_schedule = BETA_SCHEDULES[schedule]
        self.T = T
        self.name = (f"diffusers {self.scheduler_class}({self.beta_schedule}, T={T}, clip_sample=False, "
                     "set_alpha_to_one=True)")
        self.version = diffusers_version()
        ratio = T // CHAIN_STEPS
        self.conventions = {
            **schedule_conventions(schedule),
            Convention.TIMESTEPS: (
                "timestep_spacing='leading': set_timesteps(S) visits k * (T // S), k = S - 1, ..., 0 "
                f"(S = {CHAIN_STEPS}: {(CHAIN_STEPS - 1) * ratio}, {(CHAIN_STEPS - 2) * ratio}, ..., {ratio}, 0, "
                f"then x_0 with alpha_bar = 1); it never visits t = {T - 1} (paper t = T): the N(0, I) draw "
                f"stands at t = {(CHAIN_STEPS - 1) * ratio} (paper {(CHAIN_STEPS - 1) * ratio + 1})"),
        }
        self._schedulers: dict[int, Any] = {}

    def scheduler(self, num_steps: int) -> Any:
        """A cached scheduler after set_timesteps(num_steps)."""
        if num_steps not in self._schedulers:
            scheduler = getattr(self._module, self.scheduler_class)(
                num_train_timesteps=self.T, beta_schedule=self.beta_schedule, clip_sample=False,
                set_alpha_to_one=True)
            scheduler.set_timesteps(num_steps)
            self._schedulers[num_steps] = scheduler
        return self._schedulers[num_steps]

    def known_num_steps(self) -> list[int]:
        """The S of the schedulers already set up (set_timesteps(S)), to be tried first for a stride."""
        return sorted(self._schedulers)

    @staticmethod
    def _check_variance(variance: str) -> None:
        if variance != ETA_ONE_ALL_STEPS:
            raise ValueError(f"unknown variance option {variance!r}; options: [{ETA_ONE_ALL_STEPS!r}]")

    # -- required members -------------------------------------------------------------------------------------

    def betas(self) -> np.ndarray:
        return self.scheduler(self.T).betas.numpy().copy()  # float32 [T]

    def alpha_bars(self) -> np.ndarray:
        return self.scheduler(self.T).alphas_cumprod.numpy().copy()  # float32 [T]

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor:
        timesteps = torch.full((x0.shape[0],), int(t), dtype=torch.int64)  # [B]
        return self.scheduler(self.T).add_noise(x0, noise, timesteps)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        raise NotOffered("DDIMScheduler has no posterior q(x_{t-1} | x_t, x_0)")

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        self._check_variance(variance)
        return self._step(self.scheduler(self.T), eps, xt, t, 1.0, z)

    # -- DDIM -------------------------------------------------------------------------------------------------

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        return [int(u) for u in self.scheduler(num_steps).timesteps]

    def ddim_step(self, eps: Tensor, xt: Tensor, t: int, s: int, eta: float, z: Tensor) -> Tensor:
        num_steps = num_steps_for_stride(t, s, self.T, self.ddim_timesteps, self.known_num_steps())
        previous = int(t) - self.T // num_steps  # what step() computes as prev_timestep
        if not (previous == int(s) or (int(s) == -1 and previous < 0)):
            raise ValueError(f"after set_timesteps({num_steps}) the step from t = {t} goes to {previous}, not {s}")
        return self._step(self.scheduler(num_steps), eps, xt, t, eta, z)

    @staticmethod
    def _step(scheduler: Any, eps: Tensor, xt: Tensor, t: int, eta: float, z: Tensor | None) -> Tensor:
        if eta > 0 and z is None:
            raise ValueError("z (the standard normal draw) is required when eta > 0")
        return scheduler.step(eps, int(t), xt, eta=float(eta), variance_noise=z).prev_sample

    # -- chains -----------------------------------------------------------------------------------------------

    def chains(self) -> list[Chain]:
        timesteps = self.ddim_timesteps(CHAIN_STEPS)
        return [Chain(f"{self.scheduler_class}.step loop (num_inference_steps={CHAIN_STEPS}, eta={eta:g})",
                      ChainKind.DDIM, timesteps, partial(self._run_chain, eta), eta=eta,
                      resume=partial(self._resume_chain, eta))
                for eta in CHAIN_ETAS]

    def _run_chain(self, eta: float, eps_model: Callable[[Tensor, Tensor], Tensor], shape: tuple[int, ...],
                   generator: torch.Generator) -> Tensor:
        """The diffusers docs' DDIM loop, with the noise from `generator`."""
        x = torch.randn(tuple(shape), generator=generator, dtype=self.dtype)  # [B, C, H, W]: x at timesteps[0]
        return self._loop(eta, eps_model, x, 0, generator)

    def _resume_chain(self, eta: float, eps_model: Callable[[Tensor, Tensor], Tensor], x: Tensor, start: int,
                      generator: torch.Generator) -> Tensor:
        """The docs' DDIM loop entered at the visited timestep `start` with x there."""
        first = visited_index(self.scheduler(CHAIN_STEPS).timesteps, start)
        return self._loop(eta, eps_model, x.to(self.dtype), first, generator)

    def _loop(self, eta: float, eps_model: Callable[[Tensor, Tensor], Tensor], x: Tensor, first: int,
              generator: torch.Generator) -> Tensor:
        scheduler = self.scheduler(CHAIN_STEPS)
        for t in scheduler.timesteps[first:]:
            eps = eps_model(x, torch.full((x.shape[0],), int(t), dtype=torch.int64)).to(self.dtype)
            x = scheduler.step(eps, t, x, eta=eta, generator=generator).prev_sample
        return x

    # -- reproduction -----------------------------------------------------------------------------------------

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """A standalone snippet (torch + diffusers only) calling the scheduler at timestep t; None if not offered.

        Reads inputs "x0", "xt", "eps", "z" and, for q_sample, "noise" (else "eps"); absent ones get defaults.
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
        return head + snippet_tensors(inputs, ["eps", "xt", "z"]) + (
            f"\nprint(scheduler.step(eps, {int(t)}, xt, eta={eta!r}, variance_noise=z).prev_sample"
            ".flatten().tolist())\n")

    def snippet_head(self, num_steps: int) -> str:
        """The imports of a snippet, `scheduler = <class>(...)` with this configuration and set_timesteps(S)."""
        return (f"import torch\nfrom diffusers import {self.scheduler_class}\n\n"
                f"scheduler = {self.scheduler_class}(num_train_timesteps={self.T}, "
                f"beta_schedule={self.beta_schedule!r}, clip_sample=False, set_alpha_to_one=True)\n"
                f"scheduler.set_timesteps({num_steps})\n")


def factory(T: int = 1000) -> list[DiffusersDDIMAdapter]:
    """DDIMScheduler adapters for the linear and squaredcos_cap_v2 schedules at T (default 1000)."""
    import_diffusers()
    return [DiffusersDDIMAdapter("linear", T), DiffusersDDIMAdapter("cosine", T)]
