"""Rewritings that are exact on a step's valid domain, so that `simplify` can close the step symbolically.

SymPy does not split sqrt(a b) into sqrt(a) sqrt(b), or log(a b) into log a + log b, unless it knows a and b are
positive; with alpha_bar_t in (0, 1) written as a symbol it cannot know that 1 - alpha_bar_t > 0. A step is moved
onto its domain by a substitution with positive parameters (e.g. alpha_bar_t = 1 / (1 + u), u > 0, so that
1 - alpha_bar_t = u / (1 + u)); there the bases of fractional powers and the arguments of logarithms factor into
positive terms, and these helpers make the splitting explicit:

- `roots_factored(expr)`: every fractional power's base factored (sqrt((1 + u)^2 / u^2) becomes (1 + u) / u when
  u > 0);
- `log_of_positive(expr)`: log(expr) with products, quotients and powers split (expand_log(force=True), exact
  because every factor is positive on the domain the caller has substituted) - two positive quantities are equal
  exactly when their logs are;
- `logs_split(expr)`: the same splitting applied to the logarithms inside expr.

A step that uses them says so in its description; it states both sides as computed (no side is replaced by a known
form), only rewritten where the rewriting is an identity on the domain.
"""

from __future__ import annotations

import sympy as sp


def roots_factored(expr: sp.Expr) -> sp.Expr:
    """`expr` with the base of every non-integer power factored (exact where the factors are positive)."""
    return sp.sympify(expr).replace(
        lambda e: e.is_Pow and not e.exp.is_Integer, lambda e: sp.factor(sp.together(e.base)) ** e.exp
    )


def logs_split(expr: sp.Expr) -> sp.Expr:
    """`expr` with every logarithm's argument factored and split into a sum of logs (expand_log(force=True)):
    exact when each factor is positive, which the caller guarantees by its substitution onto the domain."""
    factored = sp.sympify(expr).replace(
        lambda e: isinstance(e, sp.log), lambda e: sp.log(sp.factor(sp.together(e.args[0])))
    )
    return sp.expand_log(factored, force=True)


def log_of_positive(expr: sp.Expr) -> sp.Expr:
    """log(expr) for a positive `expr` (a density, a normaliser), split into a sum (see `logs_split`)."""
    return logs_split(sp.expand_log(sp.log(roots_factored(expr)), force=True))


__all__ = ["log_of_positive", "logs_split", "roots_factored"]
