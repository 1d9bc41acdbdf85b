"""Readable left-hand sides for the report: `name = derived expression`, or just `name`.

A step whose left side is a derived expression reads best as "Var[x_t | x_0] = <what was computed>
= <the known form>". The middle part is dropped when SymPy prints it exactly like the right side (the
derivation produced the known form verbatim) or when it is too long to read; the check itself always
uses the derived expression.
"""

from __future__ import annotations

import sympy as sp

from derivations.chain import Check, Step

MAX_DERIVED_LATEX = 600  # characters of LaTeX beyond which the derived form is named, not printed


def label(name: str, lhs: sp.Expr, rhs: sp.Expr) -> str:
    """LaTeX for the left side: `name = latex(lhs)`, or `name` alone (see the module docstring)."""
    derived = sp.latex(lhs)
    if derived == sp.latex(rhs) or len(derived) > MAX_DERIVED_LATEX:
        return name
    return f"{name} = {derived}"


def named_step(
    description: str,
    name: str,
    lhs: sp.Expr,
    rhs: sp.Expr,
    check: Check = Check.SIMPLIFY,
    domains: tuple = (),
    display: tuple = (),
    reason: str = "",
) -> Step:
    """A Step whose left side is the derived expression `lhs`, shown in the report under `name` (with the symbols
    renamed by `display`, e.g. beta_t -> beta_1 for a statement at t = 1; the check uses them as they are); `reason`
    is a RATIONAL check's reason (see `derivations.chain.Step`)."""
    shown = dict(display)
    return Step(description, lhs, rhs, check, domains=domains, display=display, reason=reason,
                lhs_latex=label(name, sp.sympify(lhs).subs(shown, simultaneous=True),
                                    sp.sympify(rhs).subs(shown, simultaneous=True)))
