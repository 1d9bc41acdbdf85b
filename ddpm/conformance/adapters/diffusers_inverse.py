"""Adapter for diffusers' `DDIMInverseScheduler`: DDIM inversion, eq. 12 at eta = 0 run from s up to t > s.

Tested with diffusers 0.42.1 (`diffusers/schedulers/scheduling_ddim_inverse.py`). Configurations: linear schedule,
T = 1000, `clip_sample=False` (the default `True` clamps x0_hat), the default `timestep_spacing="leading"`, with
`set_alpha_to_one` True and False (eps prediction), and True with `prediction_type` "v_prediction" and "sample".
Family "inversion".

Timestep convention. Timesteps are diffusers' (paper t - 1), tables float32. `set_timesteps(S)` lists k * (T // S) for
k = 0, ..., S - 1, ascending (S = 50: 0, 20, ..., 980: it never reaches t = T - 1, paper t = T). `step(model_output,
timestep, sample)` takes the step's TARGET: it moves `sample` from s = timestep - T // S to t = timestep, with
alpha_bar_s = `alphas_cumprod[s]`, or `initial_alpha_cumprod` where s < 0: 1 (x_0 itself) with
`set_alpha_to_one=True`, `alphas_cumprod[0]` (paper t = 1) with False. It reads the output at s (x0_hat and eps_hat
from `sample` and alpha_bar_s); the pipelines that use it (DiffEdit, Pix2Pix-Zero) evaluate the network on that
sample with the label of the target t.

`inversion_step(out, xs, s, t)` calls `step(out, t, xs)` after `set_timesteps(S)`, S chosen so that t is listed and
s is the entry before it (s = -1 for the first, from x_0); ValueError when no S makes that step. With
`set_alpha_to_one=False` the first step starts at alpha_bar_1, not at x_0 (it is the identity: its start and its
target are both alpha_bar_1), so the step from x_0 is not offered there and the case says so.

Not offered (the scheduler has none of them): q_sample, the posterior, any reverse step; the one variance option
"none" exists because the protocol needs one.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import numpy as np
import torch

from ddpm.conformance.adapters.diffusers_ddpm import (
    diffusers_version,
    import_diffusers,
    schedule_conventions,
    schedule_spec,
)
from ddpm.conformance.adapters.snippets import snippet_tensors
from ddpm.conformance.protocol import Convention, NotOffered, Prediction, VarianceKind

Tensor = torch.Tensor

TESTED_VERSION = "0.42.1"
PREDICTION_TYPES = {Prediction.EPS: "epsilon", Prediction.V: "v_prediction", Prediction.X0: "sample"}
OUTPUT_NAMES = {Prediction.EPS: "eps", Prediction.V: "v_pred", Prediction.X0: "x0_pred"}  # as the suite records them


class DiffusersDDIMInverseAdapter:
    """diffusers DDIMInverseScheduler(linear, T, clip_sample=False, set_alpha_to_one, prediction_type) (base 0)."""

    timestep_base = 0
    dtype = torch.float32
    variances = {"none": VarianceKind.BETA_TILDE}  # no reverse step: every case that uses it is not applicable
    family = "inversion"

    def __init__(self, T: int = 1000, set_alpha_to_one: bool = True, prediction: Prediction = Prediction.EPS) -> None:
        import_diffusers()
        from diffusers.schedulers import scheduling_ddim_inverse

        self._module = scheduling_ddim_inverse
        self.schedule = schedule_spec("linear", T)
        self.T = T
        self.set_alpha_to_one = bool(set_alpha_to_one)
        self.prediction = prediction
        self.prediction_type = PREDICTION_TYPES[prediction]
        extra = "" if prediction is Prediction.EPS else f", prediction_type={self.prediction_type!r}"
        self.name = (f"diffusers DDIMInverseScheduler(linear, T={T}, clip_sample=False, "
                     f"set_alpha_to_one={self.set_alpha_to_one}{extra})")
        self.version = diffusers_version()
        self.options = {"beta_schedule": "linear", "clip_sample": False, "set_alpha_to_one": self.set_alpha_to_one,
                        "prediction_type": self.prediction_type, "timestep_spacing": "leading"}
        first = ("the first step (target t = 0) starts at x_0 (initial_alpha_cumprod = 1)" if self.set_alpha_to_one
                 else "the first step (target t = 0) starts at alphas_cumprod[0] (paper t = 1), not at x_0: it is "
                      "the identity, the input taken as x_1")
        self.conventions = {
            **schedule_conventions("linear"),
            Convention.TIMESTEPS: (
                "step(output, t, x_s) names the step's target t and starts from s = t - T // S; "
                f"timestep_spacing='leading': set_timesteps(S) lists k * (T // S), k = 0, ..., S - 1 (S = 50: 0, 20, "
                f"..., 980), so it never reaches t = {T - 1} (paper t = T); {first}"),
        }
        self._schedulers: dict[int, Any] = {}
        self._lists: dict[int, list[int]] = {}  # inversion_timesteps(S), read once per S

    def scheduler(self, num_steps: int) -> Any:
        """A cached DDIMInverseScheduler after set_timesteps(num_steps)."""
        if num_steps not in self._schedulers:
            scheduler = self._module.DDIMInverseScheduler(
                num_train_timesteps=self.T, beta_schedule="linear", clip_sample=False,
                set_alpha_to_one=self.set_alpha_to_one, prediction_type=self.prediction_type)
            scheduler.set_timesteps(num_steps)
            self._schedulers[num_steps] = scheduler
        return self._schedulers[num_steps]

    # -- required members -------------------------------------------------------------------------------------

    def betas(self) -> np.ndarray:
        return self.scheduler(self.T).betas.numpy().copy()  # float32 [T]

    def alpha_bars(self) -> np.ndarray:
        return self.scheduler(self.T).alphas_cumprod.numpy().copy()  # float32 [T]

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor:
        raise NotOffered("DDIMInverseScheduler has no add_noise (q(x_t | x_0))")

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        raise NotOffered("DDIMInverseScheduler has no posterior q(x_{t-1} | x_t, x_0)")

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        raise NotOffered("DDIMInverseScheduler only steps forward in t (inversion); see the diffusers-ddim adapter")

    # -- inversion --------------------------------------------------------------------------------------------

    def inversion_timesteps(self, num_steps: int) -> list[int]:
        if num_steps not in self._lists:
            self._lists[num_steps] = [int(u) for u in self.scheduler(num_steps).timesteps]
        return list(self._lists[num_steps])

    def inversion_num_steps(self, s: int, t: int) -> int:
        """An S whose ascending list holds t with s just before it (s = -1: t first); ValueError when none does."""
        s, t = int(s), int(t)
        for num_steps in (*sorted(self._lists), *range(1, self.T + 1)):
            start = t - self.T // num_steps  # where step() starts (negative: initial_alpha_cumprod)
            if not (start == s or (s == -1 and start < 0)):
                continue
            steps = [-1] + self.inversion_timesteps(num_steps)
            if t in steps[1:] and steps[steps.index(t) - 1] == s:
                return num_steps
        raise ValueError(f"no set_timesteps(S), S in 1..{self.T}, makes DDIMInverseScheduler step from s = {s} to "
                         f"t = {t} (timesteps in the library's convention, -1 for x_0)")

    def inversion_step(self, out: Tensor, xs: Tensor, s: int, t: int) -> Tensor:
        num_steps = self.inversion_num_steps(s, t)
        if int(s) == -1 and not self.set_alpha_to_one:
            raise NotOffered("with set_alpha_to_one=False the first step starts at alphas_cumprod[0] (paper t = 1) "
                             "and ends there: it is the identity, not a step from x_0")
        return self.scheduler(num_steps).step(out, int(t), xs).prev_sample

    # -- reproduction -----------------------------------------------------------------------------------------

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """A standalone snippet (torch + diffusers only): "inversion_step:<S>" at target t, or "schedule"."""
        kind, _, steps = operation.partition(":")
        if kind not in ("inversion_step", "schedule"):
            return None
        num_steps = int(steps) if steps else self.T
        output = OUTPUT_NAMES[self.prediction]
        head = ("import torch\nfrom diffusers import DDIMInverseScheduler\n\n"
                f"scheduler = DDIMInverseScheduler(num_train_timesteps={self.T}, beta_schedule='linear', "
                f"clip_sample=False, set_alpha_to_one={self.set_alpha_to_one}, "
                f"prediction_type={self.prediction_type!r})\n"
                f"scheduler.set_timesteps({num_steps})\n")
        if kind == "schedule":
            return head + (f"print('beta', scheduler.betas[{int(t)}].item(), "
                           f"'alpha_bar', scheduler.alphas_cumprod[{int(t)}].item())\n")
        given = {"eps": inputs.get(output, [0.3, -0.7, 1.1, -0.2]), "xt": inputs.get("xs", [0.8, -1.2, 0.1, 0.4])}
        return (head + snippet_tensors(given, ["eps", "xt"]) + "\n"
                f"# the network output ({output}) at the step's start s = {int(t)} - {self.T // num_steps}, and x_s\n"
                f"print(scheduler.step(eps, {int(t)}, xt).prev_sample.flatten().tolist())\n")


def factory(T: int = 1000) -> list[DiffusersDDIMInverseAdapter]:
    """DDIMInverseScheduler adapters: set_alpha_to_one True and False (eps), and True with v and x_0 outputs."""
    import_diffusers()
    return [DiffusersDDIMInverseAdapter(T, True), DiffusersDDIMInverseAdapter(T, False),
            DiffusersDDIMInverseAdapter(T, True, Prediction.V), DiffusersDDIMInverseAdapter(T, True, Prediction.X0)]
