"""The reference adapter: this project's own `ddpm` library, which must pass every case of the suite.

It uses the paper's timesteps (timestep_base = 1), float64 tensors, sigma_1^2 = beta_1 for both fixed
variances (Algorithm 2 adds no noise at t = 1 anyway) and no clipping. Its strided and DDIM steps are
`ddpm.core.samplers.strided_ancestral_step` and `ddim_step`; its chains are `ancestral_sample` and `ddim_sample`,
resumed from a given x_t by their `start` argument.

With `prediction` X0 or V the network output is an x_0- or v-prediction: every operation first converts it to the
eps it implies at x_t (`ddpm.core.forward.eps_from_x0`, `eps_from_v`) and then takes the same library steps. Its
training loss is Algorithm 1's eps loss applied to the converted output, which is the x_0 loss weighted by
SNR_t = alpha_bar_t / (1 - alpha_bar_t), or the v loss weighted by alpha_bar_t (derivation (o)):
noise - eps_hat = sqrt(SNR_t) (x_0 - x0_hat) = sqrt(alpha_bar_t) (v - v_hat). It declares those weights with
`loss_weights()`.

Batched steps (row b from t[b] to s[b]): `batched_mean` is `ReverseStep.mean` on `stride_tables` of the rows' steps
with one key per row (the core's per-row path, `ddpm.core.reverse`); `batched_ddim` calls the checked `ddim_step`
row by row (the core has no batched DDIM step). Not offered: DDIM inversion (`ddpm.core` steps only from t to
s < t; its `ddim_step` refuses s > t and `stride_coefficients` is defined for s < t only).
"""

from __future__ import annotations

import importlib.metadata

import numpy as np
import torch

from ddpm.conformance.protocol import Chain, ChainKind, Prediction, ScheduleKind, ScheduleSpec, VarianceKind
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.forward import compute_dtype, eps_from_v, eps_from_x0
from ddpm.core.losses import training_loss_at
from ddpm.core.reverse import ReverseStep, stride_tables
from ddpm.core.samplers import ancestral_sample, ddim_sample, ddim_step, ddim_timesteps, strided_ancestral_step
from ddpm.core.schedules import make_betas
from ddpm.core.variance import ReverseVariance

Tensor = torch.Tensor


def _version() -> str:
    try:
        return f"ddpm-verified {importlib.metadata.version('ddpm-verified')}"
    except importlib.metadata.PackageNotFoundError:  # running from a checkout without installing
        return "ddpm-verified (checkout)"


class ReferenceAdapter:
    """This project's GaussianDiffusion and samplers behind the adapter protocol (paper timesteps, float64)."""

    timestep_base = 1
    # "learned" is Nichol & Dhariwal's eq. 15 (ddpm.core.variance.ReverseVariance.LEARNED): v in [-1, 1].
    variances = {"beta": VarianceKind.BETA, "beta_tilde": VarianceKind.BETA_TILDE,
                 "learned": VarianceKind.LEARNED_RANGE}
    conventions: dict = {}

    def __init__(self, schedule: str = "linear", T: int = 1000, dtype: torch.dtype = torch.float64,
                 prediction: Prediction | str = Prediction.EPS) -> None:
        self.schedule = ScheduleSpec(ScheduleKind(schedule), T, rescaled=True)
        self.dtype = dtype
        self.diffusion = GaussianDiffusion(make_betas(schedule, T))
        self.prediction = Prediction(prediction)
        self.name = f"ddpm-verified GaussianDiffusion({schedule}, T={T})"
        if self.prediction is not Prediction.EPS:
            self.name = f"ddpm-verified GaussianDiffusion({schedule}, T={T}, prediction={self.prediction.value})"
            self.family = "prediction_type"
            self.options = {"prediction": self.prediction.value}
        self.version = _version()

    def _t(self, t: int, x: Tensor) -> Tensor:
        return torch.full((x.shape[0],), int(t), dtype=torch.int64)  # [B]

    def eps_of_output(self, out: Tensor, xt: Tensor, t: Tensor) -> Tensor:
        """The eps the network output `out` implies at x_t (t int64 [B]); `out` itself for an eps model."""
        if self.prediction is Prediction.X0:
            return eps_from_x0(self.diffusion, xt, t, out).to(xt.dtype)
        if self.prediction is Prediction.V:
            return eps_from_v(self.diffusion, xt, t, out).to(xt.dtype)
        return out

    def _eps_model(self, model):
        """The network `model` (output in this adapter's parameterisation) as an eps model."""
        if self.prediction is Prediction.EPS:
            return model
        return lambda x, t: self.eps_of_output(model(x, t), x, t)

    def loss_weights(self) -> np.ndarray:
        """The per-timestep weight [T] the eps loss puts on the output's own squared error: 1 (eps), SNR_t (x_0),
        alpha_bar_t (v)."""
        a = self.diffusion.alpha_bars[1:].numpy()
        return {Prediction.EPS: np.ones_like(a), Prediction.X0: a / (1.0 - a), Prediction.V: a}[self.prediction]

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
        tt = self._t(t, xt)
        return self.diffusion.p_sample(self.eps_of_output(eps, xt, tt), xt, tt, z, variance, v=v)

    def strided_timesteps(self, num_steps: int) -> list[int]:
        return ddim_timesteps(self.diffusion.T, num_steps)[::-1]

    def strided_step(self, eps: Tensor, xt: Tensor, t: int, s: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        eps = self.eps_of_output(eps, xt, self._t(t, xt))
        return strided_ancestral_step(self.diffusion, eps, xt, t, s, z, variance, v)

    def ddim_timesteps(self, num_steps: int) -> list[int]:
        return ddim_timesteps(self.diffusion.T, num_steps)[::-1]

    def ddim_step(self, eps: Tensor, xt: Tensor, t: int, s: int, eta: float, z: Tensor) -> Tensor:
        return ddim_step(self.diffusion, self.eps_of_output(eps, xt, self._t(t, xt)), xt, t, s, eta, z)

    def _rows(self, xt: Tensor, t: Tensor, s: Tensor) -> tuple[list[int], list[int]]:
        """t and s as lists of paper timesteps; ValueError unless one per row and 0 <= s < t <= T in every row."""
        ts, ss = [int(u) for u in t.reshape(-1)], [int(u) for u in s.reshape(-1)]
        if len(ts) != xt.shape[0] or len(ss) != xt.shape[0]:
            raise ValueError(f"t and s need one timestep per row ({xt.shape[0]}), got {len(ts)} and {len(ss)}")
        bad = [(a, b) for a, b in zip(ts, ss, strict=True) if not 0 <= b < a <= self.diffusion.T]
        if bad:
            raise ValueError(f"every row needs 0 <= s < t <= T = {self.diffusion.T}, got (t, s) = {bad[0]}")
        return ts, ss

    def batched_mean(self, eps: Tensor, xt: Tensor, t: Tensor, s: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor:
        ts, ss = self._rows(xt, t, s)
        eps = self.eps_of_output(eps, xt, t.to(torch.int64))
        tables = stride_tables(self.diffusion, ts, ss, ReverseVariance.from_value(variance),
                               compute_dtype(xt.dtype), xt.device)
        return ReverseStep(tables).mean(eps, xt, torch.arange(len(ts), device=xt.device)).to(xt.dtype)

    def batched_ddim(self, eps: Tensor, xt: Tensor, t: Tensor, s: Tensor) -> Tensor:
        ts, ss = self._rows(xt, t, s)
        eps = self.eps_of_output(eps, xt, t.to(torch.int64))
        rows = [ddim_step(self.diffusion, eps[b:b + 1], xt[b:b + 1], ts[b], ss[b], 0.0, None) for b in range(len(ts))]
        return torch.cat(rows)

    def training_loss(self, eps_model, x0: Tensor, t: Tensor, noise: Tensor) -> Tensor:
        return training_loss_at(self._eps_model(eps_model), self.diffusion, x0, t, noise, "simple")

    def chains(self) -> list[Chain]:
        T = self.diffusion.T
        out = []
        for variance in ("beta", "beta_tilde"):
            def run(eps_model, shape, generator, variance=variance, start=None):
                return ancestral_sample(self._eps_model(eps_model), self.diffusion, shape, generator,
                                        variance=variance, progress=False, dtype=self.dtype, start=start).x0

            def resume(eps_model, x, t, generator, run=run):
                return run(eps_model, tuple(x.shape), generator, start=(int(t), x))
            out.append(Chain(f"ancestral_sample(variance={variance!r})", ChainKind.ANCESTRAL,
                             list(range(T, 0, -1)), run, variance=variance, resume=resume))
        steps = max(1, T // 10)
        for eta in (0.0, 1.0):
            def run(eps_model, shape, generator, eta=eta, start=None):
                return ddim_sample(self._eps_model(eps_model), self.diffusion, shape, generator, num_steps=steps,
                                   eta=eta, progress=False, dtype=self.dtype, start=start).x0

            def resume(eps_model, x, t, generator, run=run):
                return run(eps_model, tuple(x.shape), generator, start=(int(t), x))
            out.append(Chain(f"ddim_sample(num_steps={steps}, eta={eta:g})", ChainKind.DDIM,
                             ddim_timesteps(T, steps)[::-1], run, eta=eta, resume=resume))
        return out


def factory(T: int = 1000) -> list[ReferenceAdapter]:
    """The reference adapters: eps models with the linear and cosine schedules at T (default 1000), and x_0- and
    v-prediction models with the linear schedule (family "prediction_type")."""
    return [ReferenceAdapter("linear", T), ReferenceAdapter("cosine", T),
            ReferenceAdapter("linear", T, prediction=Prediction.X0),
            ReferenceAdapter("linear", T, prediction=Prediction.V)]
