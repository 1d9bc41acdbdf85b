"""What an implementation exposes to the conformance suite: the `Adapter` protocol and its vocabulary.

An adapter wraps one configuration of one DDPM implementation (one schedule, one set of options) and exposes
the few operations the suite checks, in the implementation's OWN timestep convention: `timestep_base` is the
index it gives the paper's t = 1 (0 for the TF original, improved-diffusion, diffusers and lucidrains; 1 for
Ho et al. and this project). The suite maps every t explicitly: paper t = adapter t - timestep_base + 1, and
the adapter's `timestep_base - 1` stands for the paper's t = 0 (x_0 itself, alpha_bar_0 = 1).

Required members (checked by `check_adapter`):

    name: str                     e.g. "diffusers DDPMScheduler(variance_type='fixed_small')"
    version: str                  the implementation's version, e.g. "diffusers 0.42.1"
    timestep_base: int            0 or 1
    dtype: torch.dtype            the dtype it computes in and the suite feeds it (its roundoff sets the tolerances)
    schedule: ScheduleSpec        the schedule it claims to implement
    variances: Mapping[str, VarianceKind]   its reverse-variance options and the formula each claims
    conventions: Mapping[Convention, str]   declared departures from the paper, each with a one-line note
    betas() -> array [T]          beta at adapter timesteps base .. base + T - 1
    alpha_bars() -> array [T]     alpha_bar at the same timesteps
    q_sample(x0, t, noise) -> Tensor                    x_t; t an int (adapter convention), tensors [B, C, H, W]
    q_posterior(x0, xt, t) -> (mean, variance)          q(x_{t-1} | x_t, x_0); variance broadcastable to x
    reverse_step(eps, xt, t, z, variance, v=None) -> Tensor
        x_{t-1} of Algorithm 2 line 4 given eps = eps_theta(x_t, t) and the standard normal draw z (the adapter
        injects z however its library draws noise); `variance` is a key of `variances`; `v` is the model's
        variance output for the learned kinds (None otherwise).

Optional attributes (defaults in brackets):

    prediction: Prediction        what the network output passed to the steps, chains and loss predicts [EPS]:
                                  the first argument of reverse_step, strided_step, ddim_step, inversion_step and
                                  the batched steps is that output (eps, x_0 or v), and the model callables the
                                  suite passes (chains, training_loss) return it; derivation (o) gives the
                                  conversions the oracle uses
    family: str                   the configuration family the adapter belongs to, one column group of the report's
                                  summary, e.g. "timestep_spacing" ["default"]
    options: Mapping[str, Any]    the library options of this configuration, e.g. {"timestep_spacing": "trailing"}
    num_inference_steps: int      S of this configuration's strided and DDIM cases (capped at T), for a configuration
                                  whose point is a number of inference steps (a timestep spacing); the suite's
                                  `SuiteConfig.strided_steps` and `ddim_steps` otherwise
    threshold: tuple[float, float]  (p, s_max) of the dynamic thresholding its sampling applies to x0_hat; required
                                  with Convention.THRESHOLDS_X0 (below), 0 < p <= 1 <= s_max

A factory may return a `RejectedConfiguration` in place of an adapter: a configuration the library refuses
(its constructor raised); the report shows it as not applicable with the library's error.

Optional members (a case whose member is missing, or raises `NotOffered`, is "not applicable"; a required
method may raise `NotOffered` too when the library has no such operation):

    strided_timesteps(num_steps) -> list[int]           visited timesteps, descending (adapter convention)
    strided_step(eps, xt, t, s, z, variance, v=None)    x_s from x_t, s the next visited timestep (or base - 1)
    ddim_timesteps(num_steps) -> list[int]
    ddim_step(eps, xt, t, s, eta, z)                    Song et al. eq. 12 from t to s
    training_loss(eps_model, x0, t, noise) -> Tensor    the implementation's eps-prediction loss at given draws;
                                                        t an int64 tensor [B] (adapter convention); returns the
                                                        per-image mean over dimensions [B] or its batch mean
    chains() -> Sequence[Chain]                         its full samplers, each run by the suite with eps*; a
                                                        chain with `resume` can also start from a given x_t
    inversion_timesteps(num_steps) -> list[int]         timesteps of DDIM inversion, ascending (adapter convention)
    inversion_step(out, xs, s, t) -> Tensor             x_t from x_s, s < t (s = base - 1 for x_0): eq. 12 with
                                                        eta = 0 solved for the later timestep (derivation (o))
    batched_mean(out, xt, t, s, variance, v=None)       the noise-free ancestral x_s of every row at once, row b
                                                        from t[b] to s[b] (t, s int64 [B], adapter convention)
    batched_ddim(out, xt, t, s) -> Tensor               eq. 12 with eta = 0, row b from t[b] to s[b]
    reproduction(operation, t, inputs) -> str | None    a standalone snippet calling the library directly

`eps_model` arguments are callables eps_model(x [B, C, H, W], t int64 [B] in the adapter's convention) -> eps.
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import torch

Tensor = torch.Tensor


class AdapterError(ValueError):
    """An object that does not satisfy the adapter protocol, or a factory that cannot be loaded."""


class NotOffered(Exception):
    """Raised by an adapter method whose operation the implementation does not have (the case is "not applicable").

    The message says what is missing, e.g. "DDIMScheduler has no posterior q(x_{t-1} | x_t, x_0)".
    """


class Prediction(enum.Enum):
    """What a network output predicts (derivation (o)): the noise, the clean image, or v = sqrt(a) eps - sqrt(1 - a) x_0
    (Salimans & Ho 2022), a = alpha_bar_t."""

    EPS = "eps"
    X0 = "x0"
    V = "v"


@dataclass(frozen=True)
class RejectedConfiguration:
    """A configuration the library refuses: shown in the report as not applicable, with the library's error."""

    name: str
    version: str
    error: str
    family: str = "default"
    options: Mapping[str, Any] = field(default_factory=dict)


class VarianceKind(enum.Enum):
    """The formula a reverse-variance option claims for sigma_t^2 (over a stride t -> s: see derivation (i))."""

    BETA = "beta"  # sigma_t^2 = beta_t, the forward variance (`fixed_large`); over a stride 1 - abar_t / abar_s
    BETA_TILDE = "beta_tilde"  # sigma_t^2 = beta_tilde_t (the posterior variance, eq. 7; `fixed_small`)
    # Nichol & Dhariwal (2021) eq. 15: log sigma^2 = f log beta_t + (1 - f) log beta_tilde_t, f = (v + 1) / 2.
    LEARNED_RANGE = "learned_range"
    LEARNED_LOG_VARIANCE = "learned_log_variance"  # the network outputs v = log sigma_t^2 (improved-diffusion)
    LEARNED_VARIANCE = "learned_variance"  # the network outputs v = sigma_t^2 itself

    @property
    def learned(self) -> bool:
        """True when sigma_t^2 depends on a network output v."""
        return self in (VarianceKind.LEARNED_RANGE, VarianceKind.LEARNED_LOG_VARIANCE, VarianceKind.LEARNED_VARIANCE)


class Convention(enum.Enum):
    """A declared departure from the paper as written. Declared ones are shown in the report, never hidden.

    CLIPS_X0 changes what the suite checks: the oracle clips x0_hat to [-1, 1] and uses the posterior mean
    mu_tilde(x0_hat, x_t) in ancestral steps (improved-diffusion's clip_denoised), and in DDIM steps it re-derives
    eps from the clipped x0_hat before eq. 12 (improved-diffusion and lucidrains do). THRESHOLDS_X0 does the same
    with dynamic thresholding (Saharia et al. 2022) in place of clipping: per image, s = the p-quantile of |x0_hat|
    (linear interpolation) clamped to [1, s_max], and x0_hat becomes clamp(x0_hat, -s, s) / s, with (p, s_max) the
    adapter's `threshold`. The other members are notes on the cases they concern (the checks are unchanged).
    """

    CLIPS_X0 = "clips_x0"  # sampling clips the predicted x_0 to [-1, 1]: not Algorithm 2 as written
    THRESHOLDS_X0 = "thresholds_x0"  # sampling thresholds the predicted x_0 dynamically (`threshold` = (p, s_max))
    SCHEDULE = "schedule"  # e.g. a linear schedule not rescaled by 1000 / T
    LEARNED_VARIANCE = "learned_variance"  # the meaning of a learned-variance output
    TIMESTEPS = "timesteps"  # which timesteps a strided or DDIM sampler visits
    OTHER = "other"


class ScheduleKind(enum.Enum):
    """Schedules the suite knows the formula of; CUSTOM is checked for consistency only."""

    LINEAR = "linear"  # beta_t = b_1 + (b_T - b_1) (t - 1) / (T - 1), b_1 = 1e-4 k, b_T = 0.02 k
    COSINE = "cosine"  # Nichol & Dhariwal: alpha_bar(t) = f(t) / f(0), f(t) = cos^2((t / T + s) / (1 + s) pi / 2)
    CUSTOM = "custom"


@dataclass(frozen=True)
class ScheduleSpec:
    """The schedule an adapter claims: kind, T and (linear) whether the ends are rescaled by k = 1000 / T."""

    kind: ScheduleKind
    T: int
    rescaled: bool = True


class ChainKind(enum.Enum):
    """What a full sampler claims to be: Algorithm 2 (ancestral, possibly strided) or DDIM (eq. 12)."""

    ANCESTRAL = "ancestral"
    DDIM = "ddim"


@dataclass(frozen=True)
class Chain:
    """One full sampler of an implementation, run by the suite with the exact eps* of Gaussian data.

    `timesteps` are the visited timesteps, descending, in the adapter's convention (x_{timesteps[0]} is the
    initial N(0, I) draw); `variance` names a key of the adapter's `variances` (ancestral chains), `eta` the
    DDIM noise (ddim chains). `run(eps_model, shape, generator)` returns x_0 [shape]; randomness comes from
    the torch.Generator (an adapter whose library draws from the global RNG forks and seeds it from there).

    `resume(eps_model, x, start, generator)` (optional) returns x_0 from the given x = x_start [B, C, H, W] at the
    visited timestep `start` (adapter convention): the chain's steps from `start` to the end, with no initial draw,
    so its output given x is a draw of the chain's law of x_0 given x_start. Chains without it are not applicable
    to the posterior-calibration case.
    """

    label: str
    kind: ChainKind
    timesteps: Sequence[int]
    run: Callable[[Callable[[Tensor, Tensor], Tensor], tuple[int, ...], torch.Generator], Tensor]
    variance: str | None = None
    eta: float | None = None
    resume: Callable[[Callable[[Tensor, Tensor], Tensor], Tensor, int, torch.Generator], Tensor] | None = None


@runtime_checkable
class Adapter(Protocol):
    """The operations every adapter exposes (module docstring); optional ones are found with hasattr."""

    name: str
    version: str
    timestep_base: int
    dtype: torch.dtype
    schedule: ScheduleSpec
    variances: Mapping[str, VarianceKind]
    conventions: Mapping[Convention, str]

    def betas(self) -> Any: ...

    def alpha_bars(self) -> Any: ...

    def q_sample(self, x0: Tensor, t: int, noise: Tensor) -> Tensor: ...

    def q_posterior(self, x0: Tensor, xt: Tensor, t: int) -> tuple[Tensor, Tensor]: ...

    def reverse_step(self, eps: Tensor, xt: Tensor, t: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor: ...


class StridedSteps(Protocol):
    """The optional strided (respaced) ancestral step (module docstring); cases that need it run only when present."""

    def strided_timesteps(self, num_steps: int) -> Sequence[int]: ...

    def strided_step(self, eps: Tensor, xt: Tensor, t: int, s: int, z: Tensor, variance: str,
                     v: Tensor | None = None) -> Tensor: ...


class DdimSteps(Protocol):
    """The optional DDIM step, Song et al. eq. 12 (module docstring)."""

    def ddim_timesteps(self, num_steps: int) -> Sequence[int]: ...

    def ddim_step(self, eps: Tensor, xt: Tensor, t: int, s: int, eta: float, z: Tensor) -> Tensor: ...


class TrainingLoss(Protocol):
    """The optional eps-prediction training loss at given draws (module docstring)."""

    def training_loss(self, eps_model: Callable[[Tensor, Tensor], Tensor], x0: Tensor, t: Tensor,
                      noise: Tensor) -> Tensor: ...


OPTIONAL = ("strided_timesteps", "strided_step", "ddim_timesteps", "ddim_step", "training_loss", "chains",
            "reproduction", "inversion_timesteps", "inversion_step", "batched_mean", "batched_ddim")
_ATTRIBUTES = ("name", "version", "timestep_base", "dtype", "schedule", "variances", "conventions")
_METHODS = ("betas", "alpha_bars", "q_sample", "q_posterior", "reverse_step")


def check_adapter(adapter: object) -> Adapter:
    """`adapter` itself when it satisfies the protocol; AdapterError naming the first problem otherwise."""
    label = getattr(adapter, "name", type(adapter).__name__)
    for attribute in _ATTRIBUTES:
        if not hasattr(adapter, attribute):
            raise AdapterError(f"adapter {label!r} has no attribute {attribute!r} (see ddpm.conformance.protocol)")
    for method in _METHODS:
        if not callable(getattr(adapter, method, None)):
            raise AdapterError(f"adapter {label!r} has no method {method}() (see ddpm.conformance.protocol)")
    a: Any = adapter
    if not isinstance(a.name, str) or not a.name:
        raise AdapterError(f"adapter name must be a non-empty string, got {a.name!r}")
    if a.timestep_base not in (0, 1):
        raise AdapterError(f"adapter {label!r}: timestep_base must be 0 or 1, got {a.timestep_base!r}")
    if not isinstance(a.dtype, torch.dtype) or not a.dtype.is_floating_point:
        raise AdapterError(f"adapter {label!r}: dtype must be a floating torch.dtype, got {a.dtype!r}")
    if not isinstance(a.schedule, ScheduleSpec):
        raise AdapterError(f"adapter {label!r}: schedule must be a ScheduleSpec, got {type(a.schedule).__name__}")
    if not isinstance(a.variances, Mapping) or not a.variances:
        raise AdapterError(f"adapter {label!r}: variances must map option names to VarianceKind")
    for option, kind in a.variances.items():
        if not isinstance(kind, VarianceKind):
            raise AdapterError(f"adapter {label!r}: variance option {option!r} maps to {kind!r}, not a VarianceKind")
    if not isinstance(a.conventions, Mapping) or not all(isinstance(c, Convention) for c in a.conventions):
        raise AdapterError(f"adapter {label!r}: conventions must map Convention members to notes")
    if not isinstance(prediction_of(a), Prediction):
        raise AdapterError(f"adapter {label!r}: prediction must be a Prediction, got {a.prediction!r}")
    if Convention.THRESHOLDS_X0 in a.conventions and not _valid_threshold(getattr(a, "threshold", None)):
        raise AdapterError(f"adapter {label!r} declares thresholds_x0: threshold must be (p, s_max) with "
                           f"0 < p <= 1 <= s_max, got {getattr(a, 'threshold', None)!r}")
    if not isinstance(getattr(a, "family", ""), str) or not isinstance(getattr(a, "options", {}), Mapping):
        raise AdapterError(f"adapter {label!r}: family must be a string and options a mapping")
    return a


def _valid_threshold(threshold: object) -> bool:
    if not isinstance(threshold, tuple) or len(threshold) != 2:
        return False
    p, s_max = threshold
    return all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in threshold) and 0 < p <= 1 <= s_max


def prediction_of(adapter: object) -> Prediction:
    """What the adapter's network output predicts (EPS unless it declares `prediction`)."""
    return getattr(adapter, "prediction", Prediction.EPS)


def family_of(adapter: object) -> str:
    """The adapter's configuration family ("default" unless it declares `family`)."""
    return str(getattr(adapter, "family", "default"))


def options_of(adapter: object) -> dict[str, Any]:
    """The library options of the adapter's configuration ({} unless it declares `options`)."""
    return dict(getattr(adapter, "options", {}))


__all__ = [
    "OPTIONAL",
    "Adapter",
    "Prediction",
    "RejectedConfiguration",
    "family_of",
    "options_of",
    "prediction_of",
    "AdapterError",
    "NotOffered",
    "Chain",
    "ChainKind",
    "Convention",
    "DdimSteps",
    "ScheduleKind",
    "ScheduleSpec",
    "StridedSteps",
    "TrainingLoss",
    "VarianceKind",
    "check_adapter",
]
