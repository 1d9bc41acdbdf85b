"""Deliberately broken adapters for the conformance tests: the reference with one plausible bug each.

Each factory returns one adapter (T = 50, paper timesteps); `EXPECTED_FAILURES` names the cases each must fail,
and no other. They are importable as `testkit.broken_adapters:<factory>` specs while pytest runs (tests/ is on
sys.path), so the CLI and the runner's generic reproductions can load them by name. `MissingPosterior` is not an
adapter at all: it lacks `q_posterior`, which `check_adapter` must name.
"""

from __future__ import annotations

import numpy as np
import torch

from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.protocol import Chain, Convention, NotOffered, RejectedConfiguration
from ddpm.core.samplers import ancestral_sample

T = 50


class _Broken(ReferenceAdapter):
    def __init__(self, label: str) -> None:
        super().__init__("linear", T)
        self.name = f"broken: {label}"

    def _table(self, name: str, t: int) -> float:
        return float(getattr(self.diffusion, name)[t])


class WrongSign(_Broken):
    """Algorithm 2's mean with + instead of - before the eps term."""

    def reverse_step(self, eps, xt, t, z, variance, v=None):
        return super().reverse_step(-eps, xt, t, z, variance, v)


class SlipInQSample(_Broken):
    """q_sample with alpha_bar_{t-1} instead of alpha_bar_t (a t vs t - 1 slip)."""

    def q_sample(self, x0, t, noise):
        ab = float(self.diffusion.alpha_bars[t - 1])
        return np.sqrt(ab) * x0 + np.sqrt(1.0 - ab) * noise


class MissingSqrtOnSigma(_Broken):
    """sigma_t z with sigma_t = beta_t instead of sqrt(beta_t) (the 'beta' option only)."""

    def reverse_step(self, eps, xt, t, z, variance, v=None):
        if t == 1 or variance != "beta":
            return super().reverse_step(eps, xt, t, z, variance)
        return super().reverse_step(eps, xt, t, torch.zeros_like(z), variance) + self._table("betas", t) * z


class WrongVariance(_Broken):
    """The 'beta_tilde' option adds beta_t noise (the two fixed variances swapped)."""

    def reverse_step(self, eps, xt, t, z, variance, v=None):
        return super().reverse_step(eps, xt, t, z, "beta")


class NoiseAtTOne(_Broken):
    """Algorithm 2 without z = 0 at t = 1: sigma_1 z is added at the last step too."""

    def reverse_step(self, eps, xt, t, z, variance, v=None):
        out = super().reverse_step(eps, xt, t, z, variance)
        return out + self._table("sigma_beta", 1) * z if t == 1 else out


class NaNAtOneT(_Broken):
    """The posterior variance is NaN at one timestep (a log of zero, say)."""

    def q_posterior(self, x0, xt, t):
        mean, var = super().q_posterior(x0, xt, t)
        return mean, (var * float("nan") if t == 17 else var)


class OneStepVarianceWhenStrided(_Broken):
    """Respaced sampling that keeps the one-step beta_t as the variance of a whole stride (diffusers' old bug)."""

    def strided_step(self, eps, xt, t, s, z, variance, v=None):
        mean = super().strided_step(eps, xt, t, s, torch.zeros_like(z), variance)
        return mean if s == 0 else mean + np.sqrt(self._table("betas", t)) * z


class DdimNoiseTermWrong(_Broken):
    """DDIM's direction term with sqrt(1 - alpha_bar_s), forgetting the - sigma^2 under the root."""

    def ddim_step(self, eps, xt, t, s, eta, z):
        out = super().ddim_step(eps, xt, t, s, eta, z)
        a_s = float(self.diffusion.alpha_bars[s])
        sigma2 = eta**2 * (1 - a_s) / (1 - float(self.diffusion.alpha_bars[t])) * (
            1 - float(self.diffusion.alpha_bars[t]) / a_s)
        return out + (np.sqrt(1 - a_s) - np.sqrt(max(1 - a_s - sigma2, 0.0))) * eps


class DdimStopsAtTOne(_Broken):
    """DDIM's last step returns x_1 instead of going to x_0 (alpha_bar_1 for the final alpha, not 1)."""

    def ddim_step(self, eps, xt, t, s, eta, z):
        return xt.clone() if t == 1 and s == 0 else super().ddim_step(eps, xt, t, s, eta, z)


class ChainWithWrongVariance(_Broken):
    """A full sampler that claims sigma_t^2 = beta_t but runs beta_tilde_t."""

    def chains(self):
        def run(eps_model, shape, generator):
            return ancestral_sample(eps_model, self.diffusion, shape, generator, variance="beta_tilde",
                                    progress=False, dtype=self.dtype).x0
        return [Chain("claims beta, runs beta_tilde", super().chains()[0].kind, list(range(T, 0, -1)), run,
                      variance="beta")]


class LossWithSlip(_Broken):
    """The training loss evaluates eps_theta at t - 1 (a t vs t - 1 slip in the network's input)."""

    def training_loss(self, eps_model, x0, t, noise):
        return super().training_loss(lambda x, tt: eps_model(x, torch.clamp(tt - 1, min=1)), x0, t, noise)


class LossTargetsX0(_Broken):
    """The eps-prediction loss compares eps_theta with x_0 instead of the noise."""

    def training_loss(self, eps_model, x0, t, noise):
        return super().training_loss(eps_model, x0, t, x0.clone())


class ClipsUndeclared(_Broken):
    """Sampling clips x0_hat to [-1, 1] without declaring it (not Algorithm 2 as written).

    Only its one-step sampler exists (no strided or DDIM step).
    """

    def reverse_step(self, eps, xt, t, z, variance, v=None):
        tt = torch.full((xt.shape[0],), int(t), dtype=torch.int64)
        return self.diffusion.p_sample(eps, xt, tt, z, variance, clip_x0=True)

    def strided_step(self, *args, **kwargs):
        raise NotOffered("no strided sampler")

    def ddim_step(self, *args, **kwargs):
        raise NotOffered("no DDIM sampler")


class ClipsDeclared(ClipsUndeclared):
    """The same, declared: the suite checks it against the clipped oracle and shows the convention."""

    conventions = {Convention.CLIPS_X0: "sampling clips x0_hat to [-1, 1] (improved-diffusion's clip_denoised)"}


class WrongPreviousTimestep(_Broken):
    """Strided steps go to t - T // S instead of the next visited timestep.

    A timestep spacing configuration with `num_inference_steps` = 15, which does not divide T = 50. Under "leading"
    spacing (k (T // S) + 1, k = S - 1, ..., 0) t - T // S is the next visited timestep; under "trailing" spacing
    (round(T - k T / S)) the stride is sometimes 4, not 3, and the step lands on the wrong timestep. Only the
    strided cases see it.
    """

    family = "timestep_spacing"
    num_inference_steps = 15

    def __init__(self, label: str, spacing: str) -> None:
        super().__init__(f"{label} ({spacing} spacing)")
        self.spacing = spacing
        self.options = {"timestep_spacing": spacing, "num_inference_steps": self.num_inference_steps}

    def strided_timesteps(self, num_steps):
        if self.spacing == "leading":
            return [k * (T // num_steps) + 1 for k in range(num_steps - 1, -1, -1)]
        return [int(u) for u in np.round(np.arange(T, 0, -T / num_steps))]

    def strided_step(self, eps, xt, t, s, z, variance, v=None):
        return super().strided_step(eps, xt, t, max(t - T // self.num_inference_steps, 0), z, variance, v)


def _wrong_previous_timestep(spacing: str):
    return lambda: [WrongPreviousTimestep(WrongPreviousTimestep.__doc__.splitlines()[0], spacing)]


class Crashes(_Broken):
    """An implementation whose posterior raises."""

    def q_posterior(self, x0, xt, t):
        raise RuntimeError("shape mismatch in posterior")


class NoPosterior(_Broken):
    """An implementation without a posterior function (the case is not applicable)."""

    def q_posterior(self, x0, xt, t):
        raise NotOffered("this implementation has no q(x_{t-1} | x_t, x_0)")


class MissingPosterior:
    """An object that offers everything an adapter does but q_posterior (check_adapter must refuse it)."""

    name, version, timestep_base, dtype = "x", "1", 0, torch.float32
    schedule = ReferenceAdapter().schedule
    variances = ReferenceAdapter.variances
    conventions: dict = {}

    def betas(self): ...
    def alpha_bars(self): ...
    def q_sample(self, x0, t, noise): ...
    def reverse_step(self, eps, xt, t, z, variance, v=None): ...


def missing_posterior():
    return MissingPosterior()


def rejected_only():
    """A factory whose one configuration its library refused (the runner lists it, with the error, as skipped)."""
    return [RejectedConfiguration("refused: T = 0", "1", "ValueError: T must be positive, got 0", "default",
                                  {"T": 0})]


def _steps(cls):
    return lambda: [cls(cls.__doc__.splitlines()[0])]


wrong_sign = _steps(WrongSign)
slip_in_q_sample = _steps(SlipInQSample)
missing_sqrt_on_sigma = _steps(MissingSqrtOnSigma)
wrong_variance = _steps(WrongVariance)
noise_at_t_one = _steps(NoiseAtTOne)
nan_at_one_t = _steps(NaNAtOneT)
one_step_variance_when_strided = _steps(OneStepVarianceWhenStrided)
ddim_noise_term_wrong = _steps(DdimNoiseTermWrong)
ddim_stops_at_t_one = _steps(DdimStopsAtTOne)
chain_with_wrong_variance = _steps(ChainWithWrongVariance)
loss_with_slip = _steps(LossWithSlip)
loss_targets_x0 = _steps(LossTargetsX0)
clips_undeclared = _steps(ClipsUndeclared)
clips_declared = _steps(ClipsDeclared)
wrong_previous_timestep_trailing = _wrong_previous_timestep("trailing")
wrong_previous_timestep_leading = _wrong_previous_timestep("leading")
crashes = _steps(Crashes)
no_posterior = _steps(NoPosterior)

S = 10  # strided steps in the tests' SuiteConfig (an adapter's own num_inference_steps replaces it)
EXPECTED_FAILURES = {
    "wrong_sign": {"reverse_step[beta]", "reverse_step[beta_tilde]"},
    "slip_in_q_sample": {"q_sample"},
    "missing_sqrt_on_sigma": {"reverse_step[beta]"},
    "wrong_variance": {"reverse_step[beta_tilde]"},
    "noise_at_t_one": {"reverse_step[beta]", "reverse_step[beta_tilde]"},
    "nan_at_one_t": {"posterior", "finite"},
    "one_step_variance_when_strided": {f"strided[beta, S={S}]", f"strided[beta_tilde, S={S}]"},
    "ddim_noise_term_wrong": {f"ddim[eta=0.5, S={S}]", f"ddim[eta=1, S={S}]"},
    "ddim_stops_at_t_one": {f"ddim[eta=0, S={S}]", f"ddim[eta=0.5, S={S}]", f"ddim[eta=1, S={S}]"},
    "chain_with_wrong_variance": {"chain[claims beta, runs beta_tilde]"},
    # A one-step slip moves E[loss] at eps* by less than the statistical case resolves: only the exact case sees it.
    "loss_with_slip": {"loss_given_draws"},
    "loss_targets_x0": {"loss_given_draws", "loss_at_eps_star"},
    "clips_undeclared": {"reverse_step[beta]", "reverse_step[beta_tilde]"},
    "clips_declared": set(),
    # The same formula is right under "leading" spacing: only the trailing one fails, and only its strided cases.
    "wrong_previous_timestep_trailing": {"strided[beta, S=15]", "strided[beta_tilde, S=15]"},
    "wrong_previous_timestep_leading": set(),
    "crashes": {"posterior", "finite"},
    "no_posterior": set(),
}
