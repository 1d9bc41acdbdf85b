"""The reference adapter: this project's own `ddpm` library, which must pass every case of the suite.

It uses the paper's timesteps (timestep_base = 1), float64 tensors, sigma_1^2 = beta_1 for both fixed
variances (Algorithm 2 adds no noise at t = 1 anyway) and no clipping. Its strided and DDIM steps are
`ddpm.core.samplers.strided_ancestral_step` and `ddim_step`; its chains are `ancestral_sample` and `ddim_sample`,
resumed from a given x_t by their `start` argument.
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import torch

from ddpm.conformance.protocol import Chain, ChainKind, ScheduleKind, ScheduleSpec, VarianceKind
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.losses import training_loss_at
from ddpm.core.samplers import ancestral_sample, ddim_sample, ddim_step, ddim_timesteps, strided_ancestral_step
from ddpm.core.schedules import make_betas

Tensor = torch.Tensor


def _version() -> str:
    try:
        return f"ddpm-verified {importlib.metadata.version('ddpm-verified')}"
    except importlib.metadata.PackageNotFoundError:  # running from a checkout without installing
        return "ddpm-verified (checkout)"


class ReferenceAdapter:
    """This project's GaussianDiffusion and samplers behind the adapter protocol (paper timesteps, float64)."""

    timestep_base = 1
    variances = {"beta": VarianceKind.BETA, "beta_tilde": VarianceKind.BETA_TILDE}
    conventions: dict = {}

    def __init__(self, schedule: str = "linear", T: int = 1000, dtype: torch.dtype = torch.float64) -> None:
        self.schedule = ScheduleSpec(ScheduleKind(schedule), T, rescaled=True)
        self.dtype = dtype
        self.diffusion = GaussianDiffusion(make_betas(schedule, T))
        self.name = f"ddpm-verified GaussianDiffusion({schedule}, T={T})"
        self.version = _version()

    def _t(self, t: int, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), int(t), dtype=torch.int64)  # [B]

    def betas(self) -> np.ndarray:
        return self.diffusion.betas[1:].numpy()

    def alpha_bars(self) -> np.ndarray:
        return self.diffusion.alpha_bars[1:].numpy()

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor:
        return self.diffusion.q_sample(x0, self._t(t, x0), noise)

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]:
        return self.diffusion.q_posterior_mean_variance(x0, xt, self._t(t, x0))

    def reverse_step(
        self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str, v: Tensor | None = None
    ) -> Tensor:
        return self.diffusion.p_sample(eps, xt, self._t(t, xt), z, variance)

    def strided_timesteps(self, num_steps: int) -> list[int]:
        return ddim_timesteps(self.diffusion.T, num_steps)[::-1]

    def strided_step(self, eps: Tensor, xt: Tensor, t: int, s: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        return strided_ancestral_step(self.diffusion, eps, xt, t, s, z, variance)

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        return ddim_timesteps(self.diffusion.T, num_steps)[::-1]

    def ddim_step(self, eps: Tensor, xt: Tensor, t: int, s: int, eta: float, z: Tensor) -> Tensor:
        return ddim_step(self.diffusion, eps, xt, t, s, eta, z)

    def training_loss(self, eps_model, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return training_loss_at(eps_model, self.diffusion, x0, t, noise, "simple")

    def chains(self) -> list[Chain]:
        T = self.diffusion.T
        out = []
        for variance in self.variances:
            def run(eps_model, shape, generator, variance=variance, start=None):
                return ancestral_sample(eps_model, self.diffusion, shape, generator, variance=variance,
                                        progress=False, dtype=self.dtype, start=start).x0

            def resume(eps_model, x, t, generator, run=run):
                return run(eps_model, tuple(x.shape), generator, start=(int(t), x))
            out.append(Chain(f"ancestral_sample(variance={variance!r})", ChainKind.ANCESTRAL,
                             list(range(T, 0, -1)), run, variance=variance, resume=resume))
        steps = max(1, T // 10)
        for eta in (0.0, 1.0):
            def run(eps_model, shape, generator, eta=eta, start=None):
                return ddim_sample(eps_model, self.diffusion, shape, generator, num_steps=steps, eta=eta,
                                   progress=False, dtype=self.dtype, start=start).x0

            def resume(eps_model, x, t, generator, run=run):
                return run(eps_model, tuple(x.shape), generator, start=(int(t), x))
            out.append(Chain(f"ddim_sample(num_steps={steps}, eta={eta:g})", ChainKind.DDIM,
                             ddim_timesteps(T, steps)[::-1], run, eta=eta, resume=resume))
        return out


def factory(T: int = 1000) -> list[ReferenceAdapter]:
    """The reference adapters: the linear and cosine schedules at T (default 1000)."""
    return [ReferenceAdapter("linear", T), ReferenceAdapter("cosine", T)]
