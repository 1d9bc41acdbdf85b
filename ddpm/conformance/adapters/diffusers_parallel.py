"""Adapters for diffusers' batched ("parallel") schedulers, `DDPMParallelScheduler` and `DDIMParallelScheduler`.

Tested with diffusers 0.42.1 (`diffusers/schedulers/scheduling_ddpm_parallel.py`, `scheduling_ddim_parallel.py`).
Configurations: linear schedule, T = 1000, `clip_sample=False` (the default `True` clamps x0_hat), the default
`timestep_spacing="leading"`; DDIM with `set_alpha_to_one=True` (and a third one below). Timesteps are diffusers'
(paper t - 1), tables float32. Family "parallel".

Each scheduler has two paths, both checked:
- its single-step `step()`, the same as `DDPMScheduler.step()` / `DDIMScheduler.step()`: reverse, strided and DDIM
  steps and the chains, exactly as `diffusers_ddpm` and `diffusers_ddim` drive those (these adapters are theirs with
  the scheduler class swapped, see `scheduler_class`), every `variance_type` in the single steps but DDPM chains for
  "fixed_small" and "fixed_large" only: "fixed_small_log" has fixed_small's sigma^2, "fixed_large_log" steps to NaN
  (its single-step cases show it), and `diffusers_ddpm` runs all four chains on `DDPMScheduler`, whose `step()` this
  one repeats line for line (a suite run stays near a minute);
- its batched `batch_step_no_noise(model_output, timesteps, sample)`, which steps row b from `timesteps[b]` to
  `timesteps[b] - T // num_inference_steps` (negative: x_0, alpha_bar = 1) without noise, as ParaDiGMS-style parallel
  sampling needs: `batched_mean` (DDPM: the posterior mean at x0_hat, for every `variance_type`, the learned ones with
  the variance channels appended as `step()` takes them) and `batched_ddim` (DDIM: eq. 12 at eta = 0, the only eta it
  accepts). Rows stepping t -> t - 1 use a scheduler without `set_timesteps` (DDPM: num_inference_steps None means T)
  or after `set_timesteps(T)` (DDIM requires it); other rows use the one S whose visited timesteps hold every row's
  step, and a batch whose rows need different S raises ValueError (one scheduler state per call). The adapter does
  not check where the library goes: a batched step that leaves the visited list fails the case by its deviation.

A third configuration, `DDPMParallelScheduler(timestep_spacing="linspace")`, checks the batched path where the
visited timesteps are not evenly T // S apart (`set_timesteps(100)`: 999, 989, ..., 949, 938, ...), with
`variance_type="fixed_small"` only (the noise-free mean does not depend on it; the first configuration checks all
six) and no chains (its reverse_step and strided cases check `step()` under this spacing).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any

import numpy as np
import torch

from ddpm.conformance.adapters.diffusers_ddim import CHAIN_ETAS, DiffusersDDIMAdapter
from ddpm.conformance.adapters.diffusers_ddim import CHAIN_STEPS as DDIM_CHAIN_STEPS
from ddpm.conformance.adapters.diffusers_ddpm import CHAIN_STEPS, VARIANCES, DiffusersDDPMAdapter, import_diffusers
from ddpm.conformance.protocol import Chain, Convention

Tensor = torch.Tensor

TESTED_VERSION = "0.42.1"
CHAIN_VARIANCES = ("fixed_small", "fixed_large")  # the DDPM parallel chains (module docstring)
BATCHED_NOTE = ("batch_step_no_noise steps row b from timesteps[b] to timesteps[b] - T // num_inference_steps, "
                "whatever set_timesteps visits: with the default 'leading' spacing that is the visited list's next "
                "timestep")


def common_num_steps(t: Sequence[int], s: Sequence[int], T: int, visited: Callable[[int], Sequence[int]],
                     tried_first: Iterable[int] = ()) -> int:
    """The first S (those in `tried_first`, then 1..T) whose visited timesteps (then -1 for x_0) hold every row's step
    t[b] -> s[b] as consecutive entries; ValueError when none does (the library cannot take that batch)."""
    for num_steps in (*tried_first, *range(1, T + 1)):
        steps = [int(u) for u in visited(num_steps)] + [-1]
        following = dict(zip(steps[:-1], steps[1:], strict=True))
        if all(following.get(int(a)) == int(b) for a, b in zip(t, s, strict=True)):
            return num_steps
    raise ValueError(f"no set_timesteps(S), S in 1..{T}, makes the scheduler step every row from t = {list(t)} to "
                     f"s = {list(s)} (timesteps in the library's convention, -1 for x_0)")


def _rows(t: Tensor, s: Tensor, batch: int) -> tuple[list[int], list[int]]:
    ts, ss = [int(u) for u in t.reshape(-1)], [int(u) for u in s.reshape(-1)]
    if len(ts) != batch or len(ss) != batch:
        raise ValueError(f"t and s need one timestep per row ({batch}), got {len(ts)} and {len(ss)}")
    return ts, ss


def _batch_snippet(head: str, inputs: Mapping[str, Any], names: Sequence[str], call: str, T: int,
                   single: str | None = None) -> str | None:
    """A snippet that rebuilds the failing batch (every row's inputs, t and s), prints `call`'s output, then where
    each row should go (s), where the batched step takes it and, given `single` (a timestep -> expression), where
    step() would."""
    if not all(name in inputs for name in (*names, "t", "s")):
        return None
    rows = len(inputs["t"])
    lines = [f"{name} = torch.tensor({[float(x) for x in np.ravel(inputs[name])]!r}).reshape({rows}, 1, 1, -1)"
             for name in names]
    lines.append(f"t = torch.tensor({[int(x) for x in inputs['t']]!r})  # each row's timestep")
    lines.append(f"print({call}.flatten().tolist())")
    lines.append(f"print('each row to s =', {[int(x) for x in inputs['s']]!r}, '(the visited list; -1: x_0)')")
    lines.append(f"print('batch_step_no_noise takes it to t - T // S =', "
                 f"(t - {T} // (scheduler.num_inference_steps or {T})).tolist())")
    if single is not None:
        lines.append(f"print('step() takes it to', [{single.format('int(u)')} for u in t])")
    return head + "\n".join(lines) + "\n"


class DiffusersDDPMParallelAdapter(DiffusersDDPMAdapter):
    """diffusers DDPMParallelScheduler(linear, T, clip_sample=False): step() and batch_step_no_noise."""

    scheduler_class = "DDPMParallelScheduler"
    scheduler_module = "scheduling_ddpm_parallel"
    family = "parallel"

    def __init__(self, T: int = 1000, options: Mapping[str, Any] | None = None) -> None:
        super().__init__("linear", T, "parallel", options)
        self.variances = VARIANCES  # every variance_type in the single steps, as the default DDPMScheduler rows
        self._chain_variances, self._chain_steps = CHAIN_VARIANCES, (T, CHAIN_STEPS)
        self.options = {"beta_schedule": "linear", "clip_sample": False, "timestep_spacing": "leading",
                        **(options or {})}
        self.conventions = {**self.conventions, Convention.OTHER: BATCHED_NOTE}

    def chains(self) -> list[Chain]:
        """The step() loops for variance_type "fixed_small" and "fixed_large" (module docstring), S = T and 100."""
        return [c for c in super().chains() if c.variance in CHAIN_VARIANCES]

    def batch_num_steps(self, t: Sequence[int], s: Sequence[int]) -> int | None:
        """The S to set up for a batch (None: no set_timesteps, every row stepping t -> t - 1)."""
        if all(b == a - 1 for a, b in zip(t, s, strict=True)):
            return None
        return common_num_steps(t, s, self.T, self.strided_timesteps, self.known_num_steps())

    def batched_mean(self, eps: Tensor, xt: Tensor, t: Tensor, s: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        ts, ss = _rows(t, s, xt.shape[0])
        scheduler = self.scheduler(variance, self.batch_num_steps(ts, ss))
        model_output = eps  # [B, C, H, W]
        if VARIANCES[variance].learned:
            if v is None:
                raise ValueError(f"variance option {variance!r} needs the model's variance output v")
            model_output = torch.cat([eps, v.expand_as(eps)], dim=1)  # [B, 2C, H, W], split as step() splits it
        return scheduler.batch_step_no_noise(model_output, torch.tensor(ts, dtype=torch.int64), xt)

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """The single-step snippets of `DiffusersDDPMAdapter`, and "batched_mean:<variance>" from the whole batch."""
        kind, _, variance = operation.partition(":")
        if kind != "batched_mean":
            return super().reproduction(operation, t, inputs)
        if variance not in VARIANCES or "s" not in inputs or "t" not in inputs:
            return None
        num_steps = self.batch_num_steps([int(u) for u in inputs["t"]], [int(u) for u in inputs["s"]])
        head = self.snippet_head(variance) + ("" if num_steps is None else f"scheduler.set_timesteps({num_steps})\n")
        learned = VARIANCES[variance].learned
        output = "torch.cat([eps, v], dim=1)" if learned else "eps"
        return _batch_snippet(head, inputs, ["eps", "xt"] + (["v"] if learned else []),
                              f"scheduler.batch_step_no_noise({output}, t, xt)", self.T,
                              "int(scheduler.previous_timestep({}))")


class DiffusersDDPMParallelLinspaceAdapter(DiffusersDDPMParallelAdapter):
    """DDPMParallelScheduler with timestep_spacing='linspace', variance_type='fixed_small' only, no chains."""

    def __init__(self, T: int = 1000) -> None:
        super().__init__(T, {"timestep_spacing": "linspace"})
        self.variances = {"fixed_small": VARIANCES["fixed_small"]}
        self.name = f"diffusers {self.scheduler_class}(linear, T={T}, clip_sample=False, timestep_spacing='linspace')"
        self.conventions[Convention.TIMESTEPS] = (
            "timestep_spacing='linspace': set_timesteps(S) visits round(linspace(0, T - 1, S)), descending (S = 100: "
            "999, 989, ..., 949, 938, ..., 10, 0), t = T - 1 (paper t = T) first; its gaps are not all T // S")

    def chains(self) -> list[Chain]:
        return []


class DiffusersDDIMParallelAdapter(DiffusersDDIMAdapter):
    """diffusers DDIMParallelScheduler(linear, T, clip_sample=False, set_alpha_to_one=True): step() and
    batch_step_no_noise (eta = 0)."""

    scheduler_class = "DDIMParallelScheduler"
    scheduler_module = "scheduling_ddim_parallel"
    family = "parallel"

    def __init__(self, T: int = 1000) -> None:
        super().__init__("linear", T, "parallel")
        self._chains = [(DDIM_CHAIN_STEPS, eta) for eta in CHAIN_ETAS]  # the default DDIMScheduler rows' chains
        self.options = {"beta_schedule": "linear", "clip_sample": False, "set_alpha_to_one": True,
                        "timestep_spacing": "leading"}
        self.conventions = {**self.conventions, Convention.OTHER: BATCHED_NOTE + "; it accepts eta = 0 only"}

    def batch_num_steps(self, t: Sequence[int], s: Sequence[int]) -> int:
        """The S to set up for a batch (T when every row steps t -> t - 1: the DDIM scheduler needs set_timesteps)."""
        if all(b == a - 1 for a, b in zip(t, s, strict=True)):
            return self.T
        return common_num_steps(t, s, self.T, self.ddim_timesteps, self.known_num_steps())

    def batched_ddim(self, eps: Tensor, xt: Tensor, t: Tensor, s: Tensor) -> Tensor:
        ts, ss = _rows(t, s, xt.shape[0])
        scheduler = self.scheduler(self.batch_num_steps(ts, ss))
        return scheduler.batch_step_no_noise(eps, torch.tensor(ts, dtype=torch.int64), xt, eta=0.0)

    def reproduction(self, operation: str, t: int, inputs: Mapping[str, Any]) -> str | None:
        """The single-step snippets of `DiffusersDDIMAdapter`, and "batched_ddim" from the whole batch."""
        if operation != "batched_ddim":
            return super().reproduction(operation, t, inputs)
        if "s" not in inputs or "t" not in inputs:
            return None
        num_steps = self.batch_num_steps([int(u) for u in inputs["t"]], [int(u) for u in inputs["s"]])
        return _batch_snippet(self.snippet_head(num_steps), inputs, ["eps", "xt"],
                              "scheduler.batch_step_no_noise(eps, t, xt, eta=0.0)", self.T)


def factory(T: int = 1000) -> list[DiffusersDDPMParallelAdapter | DiffusersDDIMParallelAdapter]:
    """The DDPM and DDIM parallel schedulers (linear schedule at T, default 1000; default spacing), and the DDPM one
    with timestep_spacing='linspace'."""
    import_diffusers()
    return [DiffusersDDPMParallelAdapter(T), DiffusersDDIMParallelAdapter(T), DiffusersDDPMParallelLinspaceAdapter(T)]
