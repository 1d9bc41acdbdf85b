"""Shared Hypothesis strategies: valid beta schedules and the paper's timesteps t in {1, ..., T}.

Schedules are float64 NumPy arrays [T] with every beta_t in the open interval (0, 1), built from a handful of
drawn parameters (T, a kind, endpoints, a seed) rather than T drawn floats, so that T = 2000 stays cheap.
Kinds cover monotone and non-monotone schedules and the extremes beta = 1e-8 and beta = 0.999:

    "linear"      evenly spaced between two log-uniform endpoints (increasing or decreasing)
    "paper"       Ho et al.'s 1e-4 .. 0.02 rescaled by 1000 / T and capped below 1
    "constant"    one log-uniform value repeated
    "loguniform"  i.i.d. log-uniform on [1e-8, 0.999] (non-monotone)
    "extreme"     i.i.d. from {1e-8, 1e-4, 0.5, 0.999} (non-monotone, the edges of the valid range)

Timesteps are drawn as fractions u in [0, 1] mapped to t = 1 + round(u (T - 1)), so that `@example`s can name
the boundaries independently of T: u = 0.0 is t = 1 and u = 1.0 is t = T. `with_boundaries` adds both.
"""

from __future__ import annotations

import numpy as np
from hypothesis import strategies as st

BETA_MIN = 1e-8
BETA_MAX = 0.999
SCHEDULE_KINDS = ("linear", "paper", "constant", "loguniform", "extreme")


def _log_uniform(rng: np.random.Generator, size=None) -> np.ndarray:
    return np.exp(rng.uniform(np.log(BETA_MIN), np.log(BETA_MAX), size=size))


def build_schedule(kind: str, T: int, seed: int) -> np.ndarray:
    """A valid float64 schedule [T] of the given kind (see the module docstring), deterministic in `seed`."""
    rng = np.random.default_rng(seed)
    if kind == "linear":
        lo, hi = _log_uniform(rng, 2)
        betas = np.linspace(lo, hi, T)
    elif kind == "paper":
        scale = 1000.0 / T
        betas = np.minimum(np.linspace(1e-4 * scale, 0.02 * scale, T), BETA_MAX)
    elif kind == "constant":
        betas = np.full(T, _log_uniform(rng))
    elif kind == "loguniform":
        betas = _log_uniform(rng, T)
    elif kind == "extreme":
        betas = rng.choice(np.array([BETA_MIN, 1e-4, 0.5, BETA_MAX]), size=T)
    else:
        raise ValueError(f"unknown schedule kind {kind!r}; options are {SCHEDULE_KINDS}")
    betas = np.clip(np.asarray(betas, dtype=np.float64), BETA_MIN, BETA_MAX)
    assert betas.shape == (T,) and np.all((betas > 0) & (betas < 1))
    return betas


@st.composite
def schedules(draw, min_T: int = 1, max_T: int = 2000, kinds: tuple[str, ...] = SCHEDULE_KINDS) -> np.ndarray:
    """A valid schedule: float64 [T], T in [min_T, max_T] (the ends drawn explicitly), every beta_t in (0, 1)."""
    T = draw(st.one_of(st.sampled_from(sorted({min_T, max_T})), st.integers(min_T, max_T)))
    kind = draw(st.sampled_from(kinds))
    seed = draw(st.integers(0, 2**32 - 1))
    return build_schedule(kind, T, seed)


# A timestep as a fraction of the chain: 0.0 is t = 1 and 1.0 is t = T for every T.
fractions = st.floats(min_value=0.0, max_value=1.0, allow_nan=False)
fraction_lists = st.lists(fractions, min_size=1, max_size=6)


def timestep_from_fraction(u: float, T: int) -> int:
    """t = 1 + round(u (T - 1)) in {1, ..., T}."""
    return 1 + int(round(u * (T - 1)))


def with_boundaries(fractions_: list[float], T: int) -> np.ndarray:
    """int64 [n + 2]: t = 1, t = T, then the drawn timesteps."""
    return np.array([1, T] + [timestep_from_fraction(u, T) for u in fractions_], dtype=np.int64)


def finite_floats(bound: float = 10.0) -> st.SearchStrategy[float]:
    """Bounded finite floats (no NaN, no infinities) in [-bound, bound]."""
    return st.floats(min_value=-bound, max_value=bound, allow_nan=False, allow_infinity=False)


def log_uniform_floats(low: float, high: float) -> st.SearchStrategy[float]:
    """Positive floats spread over decades: exp(u), u uniform in [log low, log high]."""
    return st.floats(min_value=float(np.log(low)), max_value=float(np.log(high))).map(lambda u: float(np.exp(u)))


# Paper-like schedules with boundaries as @example values.
PAPER_T1000 = build_schedule("paper", 1000, 0)
SINGLE_STEP_TINY = np.array([BETA_MIN])
SINGLE_STEP_LARGE = np.array([BETA_MAX])
