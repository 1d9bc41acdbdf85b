"""Turn SymPy results into float64 numeric oracles, evaluated at 50 significant digits.

The oracle must be more accurate than the code it judges: `1 - alpha_bar_t` with beta_t = 1e-9 loses
eight digits in float64, so every exported function evaluates its expression with mpmath at high
precision and rounds only the final value to float64. Functions broadcast over NumPy arrays
(float64 arrays, or object arrays of mpmath numbers passed through at full precision).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import mpmath
import numpy as np
import sympy as sp

DIGITS = 50


def _mpf(value) -> mpmath.mpf:
    """An mpmath number: mpf inputs pass through at full precision, anything else via float64."""
    return value if isinstance(value, mpmath.mpf) else mpmath.mpf(float(value))


def float64_function(expr: sp.Expr, args: Sequence[sp.Symbol], name: str) -> Callable[..., np.ndarray]:
    """A NumPy-broadcasting float64 function of `args` that evaluates `expr` with mpmath at 50 digits."""
    scalar = sp.lambdify(tuple(args), expr, modules="mpmath")

    def evaluate(*values: float) -> float:
        with mpmath.workdps(DIGITS):
            return float(scalar(*(_mpf(v) for v in values)))

    vectorised = np.vectorize(evaluate, otypes=[np.float64])

    def function(*values):
        if len(values) != len(args):
            raise TypeError(f"{name} takes {len(args)} arguments ({', '.join(map(str, args))}), got {len(values)}")
        out = vectorised(*values)
        return out[()] if out.ndim == 0 else out

    function.__name__ = name
    function.__doc__ = f"{name}({', '.join(a.name for a in args)}) = {sp.sstr(expr)}, evaluated at {DIGITS} digits."
    function.expr = expr  # type: ignore[attr-defined]  # an attribute added to the function object
    function.args = tuple(args)  # type: ignore[attr-defined]  # an attribute added to the function object
    return function


def alpha_bar_from_betas(betas: Sequence[float] | np.ndarray) -> np.ndarray:
    """alpha_bar_t = prod_{s<=t} (1 - beta_s) for t = 0..T (index t; alpha_bar_0 = 1).

    Returned as an object array of 50-digit mpmath numbers, so that oracle functions fed with it do
    not inherit the float64 rounding of alpha_bar (which would swamp 1 - alpha_bar_t for tiny betas);
    `.astype(np.float64)` gives the float64 values.
    """
    out = np.empty(len(betas) + 1, dtype=object)
    with mpmath.workdps(DIGITS):
        running = mpmath.mpf(1)
        out[0] = running
        for t, beta in enumerate(betas, start=1):
            running = running * (1 - mpmath.mpf(float(beta)))
            out[t] = running
    return out
