"""Deliberately broken adapters for the conformance tests: the reference with one plausible bug each.

Each factory returns one adapter (T = 50, paper timesteps); `EXPECTED_FAILURES` names the cases each must fail,
and no other. The reference has no DDIM inversion (ddpm.core steps only from t down to s < t), so `Inverting` adds
one written here in float64 from the reference's tables (eq. 12 at eta = 0 solved for x_t), correct in
`inversion_correct` and with one bug in `inversion_with_forward_s`. They are importable as
`testkit.broken_adapters:<factory>` specs while pytest runs (tests/ is on sys.path), so the CLI and the runner's
generic reproductions can load them by name. `MissingPosterior` is not an
adapter at all: it lacks `q_posterior`, which `check_adapter` must name.
"""

from __future__ import annotations

import numpy as np
import torch

from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.protocol import (
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
from ddpm.core.forward import eps_from_x0
from ddpm.core.samplers import ancestral_sample, ddim_timesteps

T = 50


class _Broken(ReferenceAdapter):
    variances = {"beta": VarianceKind.BETA, "beta_tilde": VarianceKind.BETA_TILDE}  # the bugs below touch fixed ones
    prediction_of_output = Prediction.EPS  # what the broken adapter's network output predicts

    def __init__(self, label: str) -> None:
        super().__init__("linear", T, prediction=self.prediction_of_output)
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


class CompensatedChainNoise(_Broken):
    """A full sampler whose noise is scaled by 1 + DELTA on the first half of its steps and by 1 - delta' on the second,
    delta' chosen from the chain law so that the final marginal is the claimed one (Gaussian data).

    The first half's noise reaches x_0 only through the small gain of E[x_0 | x_t] at large t (0.7% of the final
    variance at T = 50), so a large excess there makes up for a visible deficit later: chain[...] sees the claimed law,
    while the law of x_0 given x_t at T/4 or T/2 has 1 - (1 - delta')^2 = 1/3 too little variance.
    """

    DELTA = 6.0

    def noise_scales(self) -> dict[int, float]:
        """{paper t: factor of sigma_t z} for t = T..1: 1 + DELTA for the first half of the steps, 1 - delta' after."""
        from ddpm.conformance.cases import Context, SuiteConfig, chain_law
        from ddpm.conformance.cases.calibration import conditional_law

        claimed = super().chains()[1]  # ancestral_sample(variance='beta_tilde'), visiting T..1
        ctx = Context(self, SuiteConfig())
        half = len(claimed.timesteps) // 2
        total = conditional_law(ctx, claimed, ctx.config.data, 0)  # the final variance is A^2 * 1 + V
        late = conditional_law(ctx, claimed, ctx.config.data, half).V  # the second half's share of V
        assert np.isclose(total.A**2 + total.V, chain_law(ctx, claimed)[1], rtol=1e-12)
        late_factor = np.sqrt(1.0 - ((1.0 + self.DELTA) ** 2 - 1.0) * (total.V - late) / late)  # 1 - delta'
        return {t: (1.0 + self.DELTA if k < half else late_factor) for k, t in enumerate(claimed.timesteps)}

    def chains(self):
        scales = self.noise_scales()

        def loop(eps_model, x, start, generator):
            for t in range(int(start), 0, -1):
                tt = torch.full((x.shape[0],), t, dtype=torch.int64)
                z = torch.randn(x.shape, generator=generator, dtype=x.dtype) if t > 1 else torch.zeros_like(x)
                x = self.diffusion.p_sample(eps_model(x, tt), x, tt, scales[t] * z, "beta_tilde")
            return x

        def run(eps_model, shape, generator):
            return loop(eps_model, torch.randn(shape, generator=generator, dtype=self.dtype), T, generator)

        return [Chain("noise x (1 + delta) then x (1 - delta')", ChainKind.ANCESTRAL, list(range(T, 0, -1)), run,
                      variance="beta_tilde", resume=lambda eps_model, x, start, g: loop(eps_model, x, start, g))]


class LossWithSlip(_Broken):
    """The training loss evaluates eps_theta at t - 1 (a t vs t - 1 slip in the network's input)."""

    def training_loss(self, eps_model, x0, t, noise):
        return super().training_loss(lambda x, tt: eps_model(x, torch.clamp(tt - 1, min=1)), x0, t, noise)


class LossTargetsX0(_Broken):
    """The eps-prediction loss compares eps_theta with x_0 instead of the noise."""

    def training_loss(self, eps_model, x0, t, noise):
        return super().training_loss(eps_model, x0, t, x0.clone())


class X0ConversionSlip(_Broken):
    """An x_0-prediction converted to eps with alpha_bar_{t-1} instead of alpha_bar_t (a t vs t - 1 slip)."""

    prediction_of_output = Prediction.X0

    def eps_of_output(self, out, xt, t):
        return eps_from_x0(self.diffusion, xt, t - 1, out).to(xt.dtype)  # alpha_bar_0 = 1 at t = 1: 0 / 0


class VConversionSign(_Broken):
    """A v-prediction converted with eps = sqrt(a) v - sqrt(1 - a) x_t (the sign of the x_t term flipped)."""

    prediction_of_output = Prediction.V

    def eps_of_output(self, out, xt, t):
        a = self.diffusion.alpha_bars[t].to(xt.dtype).reshape(-1, *([1] * (xt.ndim - 1)))  # [B, 1, ...]
        return torch.sqrt(a) * out - torch.sqrt(1.0 - a) * xt


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

    def batched_mean(self, *args, **kwargs):
        raise NotOffered("no batched step")

    def batched_ddim(self, *args, **kwargs):
        raise NotOffered("no batched step")


class ClipsDeclared(ClipsUndeclared):
    """The same, declared: the suite checks it against the clipped oracle and shows the convention."""

    conventions = {Convention.CLIPS_X0: "sampling clips x0_hat to [-1, 1] (improved-diffusion's clip_denoised)"}


class BatchedWithRowZerosTimestep(_Broken):
    """Batched steps that read row 0's timesteps for every row (a broadcast of t[0] where t[b] belongs)."""

    def batched_mean(self, eps, xt, t, s, variance, v=None):
        return super().batched_mean(eps, xt, t[:1].expand_as(t), s[:1].expand_as(s), variance, v)

    def batched_ddim(self, eps, xt, t, s):
        return super().batched_ddim(eps, xt, t[:1].expand_as(t), s[:1].expand_as(s))


class Inverting(_Broken):
    """DDIM inversion from the reference's float64 tables: x_t = sqrt(a_t) x0_hat + sqrt(1 - a_t) eps,
    x0_hat = (x_s - sqrt(1 - a_s) eps) / sqrt(a_s), over the DDIM sampler's timesteps (ascending; s = 0 is x_0)."""

    def inversion_timesteps(self, num_steps):
        return ddim_timesteps(self.diffusion.T, num_steps)

    def _target(self, s, t):
        return self._table("alpha_bars", t)

    def inversion_step(self, out, xs, s, t):
        a_s, a_t = self._table("alpha_bars", s), self._target(s, t)
        x0_hat = (xs.double() - np.sqrt(1.0 - a_s) * out.double()) / np.sqrt(a_s)
        return (np.sqrt(a_t) * x0_hat + np.sqrt(1.0 - a_t) * out.double()).to(xs.dtype)


class InversionWithoutFirstStep(Inverting):
    """DDIM inversion that has no step from x_0 (the first step is not offered; the case notes it)."""

    def inversion_step(self, out, xs, s, t):
        if s == 0:
            raise NotOffered("this inversion starts at alpha_bar_1, not at x_0")
        return super().inversion_step(out, xs, s, t)


class InversionWithForwardS(Inverting):
    """DDIM inversion that keeps the forward step's alpha_bar_s where alpha_bar_t belongs (it returns x_s)."""

    def _target(self, s, t):
        return self._table("alpha_bars", s)


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


class NaNAtRangeEnd(_Broken):
    """A learned-range variance singular only at the ends v = +-1 of its range (a spurious (1 - v^2) / (1 - v^2)).

    It stands for any formula that is finite inside the range and not at its ends, e.g. un-squashing the output with
    atanh; the interior draws of the exact cases never reach the ends, the edge grid does.
    """

    variances = ReferenceAdapter.variances

    def reverse_step(self, eps, xt, t, z, variance, v=None):
        if v is not None:
            v = v * (1 - v**2) / (1 - v**2)
        return super().reverse_step(eps, xt, t, z, variance, v)


def zero_snr_alpha_bars(T: int) -> np.ndarray:
    """alpha_bar [T] of the linear schedule rescaled to zero terminal SNR (Lin et al. 2023): sqrt(alpha_bar) shifted
    and scaled so that its last value is exactly 0 and its first unchanged."""
    root = np.sqrt(np.cumprod(1.0 - np.linspace(1e-4 * 1000 / T, 0.02 * 1000 / T, T)))
    root = (root - root[-1]) * root[0] / (root[0] - root[-1])
    return root**2


class ZeroSnrTextbook:
    """A v-prediction DDPM at zero terminal SNR (alpha_bar_T = 0, beta_T = 1), written from the formulas: x0_hat =
    sqrt(a) x_t - sqrt(1 - a) v, and the step is the posterior mean at x0_hat (finite at t = T), plus sigma_t z."""

    timestep_base = 1
    dtype = torch.float64
    prediction = Prediction.V
    variances = {"beta": VarianceKind.BETA, "beta_tilde": VarianceKind.BETA_TILDE}
    conventions: dict = {}
    family = "zero_snr"

    def __init__(self, label: str = "v-prediction at zero terminal SNR") -> None:
        self.name = f"textbook: {label}"
        self.version = "test double"
        self.schedule = ScheduleSpec(ScheduleKind.CUSTOM, T)
        self._ab = zero_snr_alpha_bars(T)
        self._betas = 1.0 - self._ab / np.concatenate([[1.0], self._ab[:-1]])

    def betas(self):
        return self._betas.copy()

    def alpha_bars(self):
        return self._ab.copy()

    def _a(self, t: int) -> tuple[float, float, float]:
        """(alpha_bar_t, alpha_bar_{t-1}, beta_t) at paper t."""
        return float(self._ab[t - 1]), 1.0 if t == 1 else float(self._ab[t - 2]), float(self._betas[t - 1])

    def q_sample(self, x0, t, noise):
        a, _, _ = self._a(t)
        return np.sqrt(a) * x0 + np.sqrt(1 - a) * noise

    def q_posterior(self, x0, xt, t):
        a, a_prev, b = self._a(t)
        mean = np.sqrt(a_prev) * b / (1 - a) * x0 + np.sqrt(1 - b) * (1 - a_prev) / (1 - a) * xt
        return mean, torch.tensor((1 - a_prev) / (1 - a) * b, dtype=self.dtype)

    def _mean(self, out, xt, t):
        a, _, _ = self._a(t)
        x0_hat = np.sqrt(a) * xt - np.sqrt(1 - a) * out
        return self.q_posterior(x0_hat, xt, t)[0]

    def reverse_step(self, eps, xt, t, z, variance, v=None):
        a, a_prev, b = self._a(t)
        if t == 1:
            return self._mean(eps, xt, t)
        sigma2 = b if variance == "beta" else (1 - a_prev) / (1 - a) * b
        return self._mean(eps, xt, t) + np.sqrt(sigma2) * z


class EpsFormAtZeroSnr(ZeroSnrTextbook):
    """The same model stepping with Algorithm 2's eps form (eps from v, then / sqrt(alpha_t)): alpha_T = 0, so only its
    step at t = T is non-finite."""

    def _mean(self, out, xt, t):
        a, _, b = self._a(t)
        eps = np.sqrt(a) * out + np.sqrt(1 - a) * xt
        return (xt - b / np.sqrt(1 - a) * eps) / np.sqrt(1 - b)


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


def conformant():
    """The reference at T = 50 with no bug: a conformant row for tests that need one (a few seconds where the shipped
    `reference` spec, four rows at T = 1000, takes a minute)."""
    return [ReferenceAdapter("linear", T)]


def missing_posterior():
    return MissingPosterior()


def with_rejected_configuration():
    """A factory whose library refused one of its configurations (the runner lists it, with the error, unrun)."""
    return [RejectedConfiguration("refused: linear, T=50, option='nope'", "refused 1.0",
                                  "ValueError: option must be one of ['yes']", "option", {"option": "nope"}),
            _Broken("the reference, accepted")]


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
compensated_chain_noise = _steps(CompensatedChainNoise)
loss_with_slip = _steps(LossWithSlip)
loss_targets_x0 = _steps(LossTargetsX0)
x0_conversion_slip = _steps(X0ConversionSlip)
v_conversion_sign = _steps(VConversionSign)
clips_undeclared = _steps(ClipsUndeclared)
clips_declared = _steps(ClipsDeclared)
batched_with_row_zeros_timestep = _steps(BatchedWithRowZerosTimestep)
inversion_correct = _steps(Inverting)
inversion_with_forward_s = _steps(InversionWithForwardS)
inversion_without_first_step = _steps(InversionWithoutFirstStep)
wrong_previous_timestep_trailing = _wrong_previous_timestep("trailing")
wrong_previous_timestep_leading = _wrong_previous_timestep("leading")
crashes = _steps(Crashes)
no_posterior = _steps(NoPosterior)
nan_at_range_end = _steps(NaNAtRangeEnd)
eps_form_at_zero_snr = _steps(EpsFormAtZeroSnr)


def zero_snr_textbook():
    return [ZeroSnrTextbook()]

S = 10  # strided steps in the tests' SuiteConfig (an adapter's own num_inference_steps replaces it)
_DDIM = (f"ddim[eta=0, S={S}]", f"ddim[eta=0.5, S={S}]", f"ddim[eta=1, S={S}]")
_CHAINS = ("chain[ancestral_sample(variance='beta')]", "chain[ancestral_sample(variance='beta_tilde')]",
           f"chain[ddim_sample(num_steps={T // 10}, eta=0)]", f"chain[ddim_sample(num_steps={T // 10}, eta=1)]")
# Every case that passes a network output through the adapter (calibration: the stochastic chains; eta = 0 is n/a).
_THROUGH_OUTPUT = ({f"{case}[{o}]" for case in ("edges", "search") for o in ("beta", "beta_tilde", "ddim")}
                   | {f"batched_mean[{o}, {steps}]" for o in ("beta", "beta_tilde") for steps in ("s=t-1", f"S={S}")}
                   | {"batched_ddim[s=t-1]", f"batched_ddim[S={S}]"}
                   | {f"calibration[{c[len('chain['):]}" for c in _CHAINS if not c.endswith("eta=0)]")})
EXPECTED_FAILURES = {
    "wrong_sign": {"reverse_step[beta]", "reverse_step[beta_tilde]", "edges[beta]", "edges[beta_tilde]", "search[beta]",
                   "search[beta_tilde]"},
    "slip_in_q_sample": {"q_sample"},
    "missing_sqrt_on_sigma": {"reverse_step[beta]", "edges[beta]", "search[beta]"},
    "wrong_variance": {"reverse_step[beta_tilde]", "edges[beta_tilde]", "search[beta_tilde]"},
    "noise_at_t_one": {"reverse_step[beta]", "reverse_step[beta_tilde]", "edges[beta]", "edges[beta_tilde]",
                       "search[beta]", "search[beta_tilde]"},
    "nan_at_one_t": {"posterior", "finite"},
    "one_step_variance_when_strided": {f"strided[beta, S={S}]", f"strided[beta_tilde, S={S}]", "edges[beta]",
                                       "edges[beta_tilde]"},
    "ddim_noise_term_wrong": {f"ddim[eta=0.5, S={S}]", f"ddim[eta=1, S={S}]", "edges[ddim]", "search[ddim]"},
    "ddim_stops_at_t_one": {f"ddim[eta=0, S={S}]", f"ddim[eta=0.5, S={S}]", f"ddim[eta=1, S={S}]", "edges[ddim]",
                            "search[ddim]"},
    "chain_with_wrong_variance": {"chain[claims beta, runs beta_tilde]"},
    # Its marginal is the claimed one: only the law given x_t is wrong.
    "compensated_chain_noise": {"calibration[noise x (1 + delta) then x (1 - delta')]"},
    # A one-step slip moves E[loss] at eps* by less than the statistical case resolves: only the exact case sees it.
    "loss_with_slip": {"loss_given_draws"},
    "loss_targets_x0": {"loss_given_draws", "loss_at_eps_star"},
    # Every case that passes the network output through the conversion (the steps, the loss, the chains) and no
    # other: schedule, q_sample and posterior never see it. The x_0 slip reads alpha_bar_0 = 1 at t = 1 and divides
    # 0 by 0 there, so it is also not finite (and its loss at t = 1 is NaN); the v sign stays finite.
    "x0_conversion_slip": {"reverse_step[beta]", "reverse_step[beta_tilde]", "finite", f"strided[beta, S={S}]",
                           f"strided[beta_tilde, S={S}]", *_DDIM, "loss_given_draws", "loss_at_eps_star", *_CHAINS,
                           *_THROUGH_OUTPUT},
    "v_conversion_sign": {"reverse_step[beta]", "reverse_step[beta_tilde]", f"strided[beta, S={S}]",
                          f"strided[beta_tilde, S={S}]", *_DDIM, "loss_given_draws", "loss_at_eps_star", *_CHAINS,
                          *_THROUGH_OUTPUT},
    "clips_undeclared": {"reverse_step[beta]", "reverse_step[beta_tilde]", "edges[beta]", "edges[beta_tilde]",
                         "search[beta]", "search[beta_tilde]"},
    "clips_declared": set(),
    "batched_with_row_zeros_timestep": {f"batched_mean[{option}, {steps}]" for option in ("beta", "beta_tilde")
                                        for steps in ("s=t-1", f"S={S}")} | {"batched_ddim[s=t-1]",
                                                                             f"batched_ddim[S={S}]"},
    "inversion_correct": set(),
    "inversion_with_forward_s": {f"inversion[S={T}]", f"inversion[S={S}]"},
    "inversion_without_first_step": set(),
    # The same formula is right under "leading" spacing: only the trailing one fails, and only its strided cases.
    "wrong_previous_timestep_trailing": {"strided[beta, S=15]", "strided[beta_tilde, S=15]"},
    "wrong_previous_timestep_leading": set(),
    "crashes": {"posterior", "finite"},
    "no_posterior": set(),
    # Only the edge inputs reach v = +-1; the interior draws of reverse_step[learned] and finite never do.
    "nan_at_range_end": {"edges[learned]", "search[learned]"},
    # Non-finite only at t = T (alpha_bar_T = 0): every case that visits t = T with this step sees it.
    "eps_form_at_zero_snr": {"reverse_step[beta]", "reverse_step[beta_tilde]", "finite", "edges[beta]",
                             "edges[beta_tilde]", "search[beta]", "search[beta_tilde]"},
    "zero_snr_textbook": set(),
}
