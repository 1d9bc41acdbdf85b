"""Identity checks shared by the symbolic tests: simplify(a - b) == 0, also on a domain SymPy must be told about.

`is_zero(expr)` is the plain check: an identity a == b counts as proved when SymPy simplifies a - b to exactly 0
(agreement at a few numbers would not prove it).

`is_zero_on_domain(expr, domain)` decides expr == 0 where the symbols range over a domain such as
0 < beta_t < 1 or 0 < alpha_bar_t < alpha_bar_s < 1, given as a substitution by positive parameters
(e.g. beta_t = 1 / (1 + r), r > 0): the bases of fractional powers and the arguments of logarithms then
factor into positive terms, which SymPy can split (sqrt(a b) = sqrt(a) sqrt(b), log(a b) = log a + log b).
"""

from __future__ import annotations

import functools

import pytest
import sympy as sp

from derivations import Check, all_derivations


def is_zero(expr: sp.Expr) -> bool:
    """simplify(expr) == 0."""
    return sp.simplify(expr) == 0


def is_zero_on_domain(expr: sp.Expr, domain: dict) -> bool:
    """expr == 0 after the substitution `domain` by positive parameters (module docstring)."""
    on_domain = expr.subs(domain, simultaneous=True)
    factored = on_domain.replace(
        lambda e: e.is_Pow and not e.exp.is_Integer, lambda e: sp.factor(sp.together(e.base)) ** e.exp
    ).replace(lambda e: isinstance(e, sp.log), lambda e: sp.log(sp.factor(sp.together(e.args[0]))))
    return sp.simplify(sp.expand_power_base(sp.expand_power_exp(sp.expand_log(factored)))) == 0


def textbook_kl(m1, v1, m2, v2):
    """KL(N(m1, v1) || N(m2, v2)) in the standard-deviation form found in textbooks, typed independently of the
    derivations: log(s2/s1) + (s1^2 + (m1-m2)^2)/(2 s2^2) - 1/2 with s = sqrt(v)."""
    s1, s2 = sp.sqrt(v1), sp.sqrt(v2)
    return sp.log(s2 / s1) + (s1**2 + (m1 - m2) ** 2) / (2 * s2**2) - sp.Rational(1, 2)


@functools.cache
def step_cases() -> list:
    """A pytest.param per checked step of every derivation (definitions are not checked), with the id
    `<key>-<module>-<n>` (the step's 1-based number in its derivation): the cases of the generic step test, which
    the derivations' own tests use to see that their steps are among them."""
    return [
        pytest.param(step, id=f"{d.key}-{d.module.split('.')[-1]}-{i}")
        for d in all_derivations()
        for i, step in enumerate(d.all_steps(), start=1)
        if step.check is not Check.DEFINITION
    ]
