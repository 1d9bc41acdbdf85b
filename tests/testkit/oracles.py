"""Adapters from the derivations' float64 oracles to the quantities ddpm/ computes (tests only).

Each oracle is a `derivations.numeric.float64_function`: it carries `.args`, the SymPy symbols it takes.
`evaluate` calls one with values keyed by symbol, so the tests do not depend on argument order. Schedule
values are passed at 50 digits (`alpha_bar_from_betas`), never rounded to float64 first.

`oracle(module, name)` imports `derivations.<module>` and returns its export `name`; while a derivation
module has not landed, the test that needs it is skipped with a message naming it.

Linear maps (means) are compared relative to the size of their terms: for y = sum_i c_i x_i the rounding
error of any floating-point evaluation is proportional to sum_i |c_i x_i|, not to |y| (the condition number
of a sum), so `assert_close_linear` bounds |got - want| by atol + rtol * sum_i |c_i x_i|.
"""

from __future__ import annotations

import importlib

import mpmath
import numpy as np
import pytest
import sympy as sp
import torch

from derivations import symbols as S
from derivations.numeric import DIGITS, alpha_bar_from_betas
from testkit import tolerances


def oracle(module: str, name: str):
    """derivations.<module>.<name>, or skip the test while that derivation has not landed."""
    try:
        mod = importlib.import_module(f"derivations.{module}")
    except ModuleNotFoundError:
        pytest.skip(f"derivations.{module} has not landed yet")
    if not hasattr(mod, name):
        pytest.skip(f"derivations.{module} does not export {name!r} (yet)")
    return getattr(mod, name)


def evaluate(function, values: dict) -> np.ndarray:
    """Call a float64 oracle with `values` keyed by SymPy symbol (or symbol name), broadcasting NumPy arrays."""
    by_name = {(k.name if hasattr(k, "name") else k): v for k, v in values.items()}
    args = []
    for symbol in function.args:
        if symbol.name not in by_name:
            raise KeyError(f"oracle {function.__name__} takes {symbol.name!r}; have {sorted(by_name)}")
        args.append(by_name[symbol.name])
    with np.errstate(over="ignore"):  # values beyond float64 become inf, as in the code
        return np.asarray(function(*args), dtype=np.float64)


class Schedule:
    """Oracle-side view of a schedule: beta_t (float64) and alpha_bar_t (50-digit mpmath), indexed by t."""

    def __init__(self, betas: np.ndarray) -> None:
        self.betas = np.asarray(betas, dtype=np.float64)
        self.T = len(betas)
        self.alpha_bar = alpha_bar_from_betas(self.betas)  # object [T + 1], index t

    def at(self, t: np.ndarray) -> dict:
        """Symbol values at timesteps t (int array): beta_t, alpha_bar_{t-1}, alpha_bar_t."""
        t = np.asarray(t)
        return {
            S.beta_t.name: self.betas[t - 1],
            S.alpha_bar_prev.name: self.alpha_bar[t - 1],
            S.alpha_bar.name: self.alpha_bar[t],
        }


def evaluate_mp(function, values: dict) -> np.ndarray:
    """Like `evaluate`, but returns an object array of 50-digit mpmath numbers, for chaining oracles.

    Rounding an intermediate (x_t, a mean) to float64 before the next oracle would lose the digits a
    difference of nearly equal means needs; chained oracles therefore stay at 50 digits until the end.
    """
    by_name = {(k.name if hasattr(k, "name") else k): v for k, v in values.items()}
    scalar = sp.lambdify(function.args, function.expr, modules="mpmath")

    def one(*xs):
        with mpmath.workdps(DIGITS):
            return scalar(*(x if isinstance(x, mpmath.mpf) else mpmath.mpf(float(x)) for x in xs))

    args = [by_name[symbol.name] for symbol in function.args]
    return np.vectorize(one, otypes=[object])(*args)


def linear_coefficients(function, base: dict, inputs: tuple[str, ...]) -> list[np.ndarray]:
    """c_i = f(e_i) for a function linear in `inputs` (the others fixed by `base`)."""
    out = []
    for name in inputs:
        values = dict(base)
        for other in inputs:
            values[other] = 1.0 if other == name else 0.0
        out.append(evaluate(function, values))
    return out


def assert_close_linear(got, want, scale, tolerance: tolerances.Tolerance, err_msg: str = "") -> None:
    """|got - want| <= atol + rtol * scale elementwise, where scale = sum_i |c_i x_i| (module docstring)."""
    got = np.asarray(got, dtype=np.float64)
    want, scale = np.broadcast_arrays(np.asarray(want, dtype=np.float64), np.asarray(scale, dtype=np.float64))
    bound = tolerance.atol + tolerance.rtol * scale
    bad = ~(np.abs(got - want) <= bound)
    if bad.any():
        i = np.flatnonzero(bad.reshape(-1))[0]
        raise AssertionError(
            f"{err_msg}: {int(bad.sum())} of {bad.size} differ beyond atol + rtol * sum|c_i x_i|; first: got "
            f"{got.reshape(-1)[i]!r}, want {want.reshape(-1)[i]!r}, allowed {bound.reshape(-1)[i]!r}"
        )


def to_numpy(x: torch.Tensor) -> np.ndarray:
    """float64 NumPy copy of a tensor of any floating dtype (bfloat16 included)."""
    return x.detach().to(torch.float64).cpu().numpy()
