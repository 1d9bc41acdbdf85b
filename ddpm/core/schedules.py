"""Noise schedules beta_1..beta_T of the forward process q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t I).

Every schedule is a float64 NumPy array of shape [T] with `betas[t - 1] = beta_t` (the paper's t in {1, ..., T};
alpha_bar_0 = 1 is implied, not stored). Schedules are float64 and cast to the working dtype only where a
tensor uses them. A schedule's values, once published, never change: new behaviour gets a new name or option.

Schedules
---------
"linear" (Ho et al. 2020, section 4): beta_t evenly spaced from `beta_start = 1e-4` to `beta_end = 0.02`,
    `np.linspace(beta_start, beta_end, T)` (so beta_1 = beta_start and beta_T = beta_end exactly; for T = 1
    the single value is beta_start). Other T: with `rescale=True` (the default) both endpoints are multiplied
    by 1000 / T before spacing, as improved-diffusion and lucidrains do, so that the schedule keeps roughly the
    same alpha_bar_T (signal left at t = T) whatever T is; the TF original and diffusers do not rescale, which
    `rescale=False` reproduces. At T = 1000 both options give the paper's values. Rescaling pushes
    beta_end * 1000 / T to 1 or beyond for T <= 20, which raises ValueError (a beta must lie in (0, 1)); pass
    `rescale=False` or explicit endpoints for very short chains.
"cosine" (Nichol & Dhariwal 2021, eq. 17): alpha_bar(t) = f(t) / f(0), f(t) = cos^2(((t / T + s) / (1 + s)) pi / 2)
    with `s = 0.008`, beta_t = min(1 - alpha_bar(t) / alpha_bar(t - 1), max_beta) with `max_beta = 0.999`.
    The clip matters: without it beta_T = 1 (alpha_bar(T) = 0). With it, alpha_bar_T is tiny, so anything that
    divides by sqrt(alpha_bar_t) (predicting x_0 from eps, clipping x_0) blows up near t = T - the known NaN
    source of this schedule; the eps-parameterised mean of Algorithm 2 does not divide by alpha_bar_t and stays
    finite. The ratio is evaluated as (cos^2(a_{t-1}) - cos^2(a_t)) / cos^2(a_{t-1}) =
    sin(a_t + a_{t-1}) sin(a_t - a_{t-1}) / cos^2(a_{t-1}) (no cancellation for the tiny betas at small t);
    this agrees with the naive 1 - ratio to a few float64 ulps.

Invalid input raises ValueError naming the value: T not an integer >= 1, an unknown schedule name (the
message lists the options), an unknown or invalid option, or a resulting beta that is non-finite or outside
the open interval (0, 1).
"""

from __future__ import annotations

import math
import numbers
from collections.abc import Callable

import numpy as np
import numpy.typing as npt

from ddpm.core.choices import Choice


class Schedule(Choice):
    """The named beta schedules `make_betas` knows."""

    LINEAR = "linear"
    COSINE = "cosine"


def _check_T(T: object) -> int:
    """T as a Python int; ValueError unless it is an integer >= 1 (bools and floats are rejected)."""
    if isinstance(T, bool) or not isinstance(T, numbers.Integral):
        raise ValueError(f"T must be an integer >= 1, got {T!r} of type {type(T).__name__}")
    if T < 1:
        raise ValueError(f"T must be an integer >= 1, got {T}")
    return int(T)


def _check_real(name: str, value: object) -> float:
    """A finite real option as float; ValueError otherwise."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise ValueError(f"option {name} must be a real number, got {value!r}")
    value = float(value)
    if not math.isfinite(value):
        raise ValueError(f"option {name} must be finite, got {value!r}")
    return value


def validate_betas(betas: npt.ArrayLike) -> np.ndarray:
    """A float64 copy of `betas` (1-D, length T >= 1, every beta_t finite and in the open interval (0, 1)).

    Accepts anything NumPy can convert (lists, arrays) and torch tensors (moved to the CPU). ValueError, naming
    the first offending index t (1-based) and value, for a wrong shape, a non-finite beta or one outside (0, 1).
    """
    if hasattr(betas, "detach") and hasattr(betas, "cpu"):  # a torch.Tensor, without importing torch here
        betas = betas.detach().cpu().double().numpy()
    try:
        array = np.array(betas, dtype=np.float64, copy=True)  # [T]
    except (TypeError, ValueError) as error:
        raise ValueError(f"betas must be a 1-D array of real numbers, got {betas!r}") from error
    if array.ndim != 1:
        raise ValueError(f"betas must be 1-D of shape [T], got shape {array.shape}")
    if array.shape[0] < 1:
        raise ValueError("betas must have at least one entry (T >= 1), got an empty array")
    finite = np.isfinite(array)
    if not finite.all():
        t = int(np.argmin(finite)) + 1
        raise ValueError(f"beta_t must be finite, got beta_{t} = {float(array[t - 1])!r}")
    inside = (array > 0.0) & (array < 1.0)
    if not inside.all():
        t = int(np.argmin(inside)) + 1
        raise ValueError(f"beta_t must lie in the open interval (0, 1), got beta_{t} = {float(array[t - 1])!r}")
    return array


def linear_betas(T: int, beta_start: float = 1e-4, beta_end: float = 0.02, rescale: bool = True) -> np.ndarray:
    """beta_t evenly spaced from beta_start to beta_end (Ho et al. 2020, section 4), rescaled by 1000/T if asked."""
    T = _check_T(T)
    beta_start = _check_real("beta_start", beta_start)
    beta_end = _check_real("beta_end", beta_end)
    if not isinstance(rescale, bool):
        raise ValueError(f"option rescale must be True or False, got {rescale!r}")
    if rescale:
        scale = 1000.0 / T
        beta_start, beta_end = beta_start * scale, beta_end * scale
    betas = np.linspace(beta_start, beta_end, T, dtype=np.float64)  # [T]
    return validate_betas(betas)


def cosine_betas(T: int, s: float = 0.008, max_beta: float = 0.999) -> np.ndarray:
    """beta_t = min(1 - alpha_bar(t)/alpha_bar(t-1), max_beta), alpha_bar from cos^2 (Nichol & Dhariwal eq. 17)."""
    T = _check_T(T)
    s = _check_real("s", s)
    max_beta = _check_real("max_beta", max_beta)
    if s < 0:
        raise ValueError(f"option s must be >= 0, got {s!r}")
    if not 0.0 < max_beta < 1.0:
        raise ValueError(f"option max_beta must lie in (0, 1), got {max_beta!r}")
    steps = np.arange(T + 1, dtype=np.float64)  # [T + 1], t = 0..T
    angle = (steps / T + s) / (1.0 + s) * (math.pi / 2.0)  # [T + 1]
    a_prev, a_t = angle[:-1], angle[1:]  # [T] each
    # 1 - cos^2(a_t) / cos^2(a_{t-1}) = sin(a_t + a_{t-1}) sin(a_t - a_{t-1}) / cos^2(a_{t-1})
    betas = np.sin(a_t + a_prev) * np.sin(a_t - a_prev) / np.cos(a_prev) ** 2  # [T]
    betas = np.minimum(betas, max_beta)
    return validate_betas(betas)


_BUILDERS: dict[Schedule, Callable[..., np.ndarray]] = {
    Schedule.LINEAR: linear_betas,
    Schedule.COSINE: cosine_betas,
}
_OPTIONS: dict[Schedule, tuple[str, ...]] = {
    Schedule.LINEAR: ("beta_start", "beta_end", "rescale"),
    Schedule.COSINE: ("s", "max_beta"),
}


def make_betas(name: str | Schedule, T: int, **options: object) -> np.ndarray:
    """beta_1..beta_T of a named schedule as float64 [T], `betas[t - 1] = beta_t` (see the module docstring).

    ValueError for an unknown name, T not an integer >= 1, an unknown option (the message lists the valid
    ones), or a resulting beta outside (0, 1).
    """
    schedule = Schedule.from_value(name)
    unknown = sorted(set(options) - set(_OPTIONS[schedule]))
    if unknown:
        valid = ", ".join(_OPTIONS[schedule])
        raise ValueError(f"unknown option(s) {', '.join(unknown)} for schedule {schedule.value!r}; valid: {valid}")
    return _BUILDERS[schedule](T, **options)


__all__ = ["Schedule", "make_betas", "validate_betas", "linear_betas", "cosine_betas"]
