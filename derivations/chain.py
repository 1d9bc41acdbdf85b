"""The shape every derivation shares: a chain of equations, each checked, ending in exported results.

A `Derivation` is what `reports/derivations.md` renders and what the symbolic tests walk through.
Each `Step` states `lhs = rhs` together with *how* that equality is known:

- `Check.DEFINITION`: the step introduces a definition or a model assumption; nothing to prove.
- `Check.SIMPLIFY`: `sympy.simplify(lhs - rhs) == 0` must hold (CONTRIBUTING.md, "Adding things": every step of
  a derivation is checked).
- `Check.RATIONAL`: SymPy cannot close the identity symbolically; random rationals are substituted
  exactly into every free symbol and the residual, an exact constant expression, is evaluated to
  `RATIONAL_DIGITS` significant digits; it must vanish below 10^-`RATIONAL_ZERO_EXPONENT` times the size
  of the terms. A false identity is rejected at once (no slow simplify of a non-zero leftover). Such a step
  says why in its `reason` (what SymPy fails to do); the report prints it beside the check.

No torch here: `derivations/` is the oracle the PyTorch code is tested against.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass, field

import sympy as sp


class Check(enum.Enum):
    """How a step's equality is established."""

    DEFINITION = "definition"
    SIMPLIFY = "simplify"
    RATIONAL = "random rational points, 100 digits"


RATIONAL_DIGITS = 100
RATIONAL_ZERO_EXPONENT = 80


@dataclass(frozen=True)
class Step:
    """One link of a derivation: `lhs = rhs`, what was done to get it, and how it is checked."""

    description: str
    lhs: sp.Basic
    rhs: sp.Basic
    check: Check = Check.SIMPLIFY
    # Symbols a RATIONAL check draws, each mapped to the (low, high) interval it is drawn from; symbols
    # not listed are drawn from (1/100, 99/100), which suits probabilities and schedule values.
    domains: tuple[tuple[sp.Symbol, tuple[sp.Rational, sp.Rational]], ...] = field(default=())
    # Optional hand-written LaTeX for the left side where SymPy's rendering would hide the meaning
    # (e.g. "q(x_t \mid x_0)"); the right side is always SymPy's own rendering.
    lhs_latex: str | None = None
    # Symbols renamed in the report only (the check uses the expressions as they are): a t = 1 statement written
    # in the generic step's symbols shows beta_1, sigma_1^2, ... instead of beta_t, sigma_t^2.
    display: tuple[tuple[sp.Symbol, sp.Symbol], ...] = field(default=())
    # For a RATIONAL check: why the identity is not closed symbolically (what SymPy fails to do with it).
    reason: str = ""

    def check_label(self) -> str:
        """How the step is known, as the report prints it: the check, and for a RATIONAL one its reason."""
        return f"{self.check.value}: {self.reason}" if self.reason else self.check.value

    def _shown(self, expr: sp.Basic) -> sp.Basic:
        return expr.subs(dict(self.display), simultaneous=True) if self.display else expr

    def latex(self) -> str:
        """The equation as LaTeX."""
        left = self.lhs_latex if self.lhs_latex is not None else sp.latex(self._shown(self.lhs))
        return f"{left} = {sp.latex(self._shown(self.rhs))}"

    def folded_lhs_latex(self) -> str | None:
        """The derived left side a short name stands for in the report, when the name alone is shown.

        `named_step` drops a derived expression longer than `_labels.MAX_DERIVED_LATEX` characters from the
        equation line; the report then shows it folded under the step, so nothing the check used is hidden.
        """
        if self.lhs_latex is None or isinstance(self.lhs, sp.Symbol):
            return None
        derived = sp.latex(self._shown(self.lhs))
        if derived in self.lhs_latex or derived == sp.latex(self._shown(self.rhs)):
            return None
        return derived

    def residual(self) -> sp.Basic:
        """`lhs - rhs`, the expression that must vanish."""
        return self.lhs - self.rhs

    def holds_symbolically(self) -> bool:
        """True when SymPy simplifies `lhs - rhs` to exactly zero."""
        return sp.simplify(self.residual()) == 0

    def holds_at_random_rationals(self, trials: int = 12, seed: int = 0) -> bool:
        """True when `lhs - rhs` vanishes at `trials` random rational points (see `Check.RATIONAL`)."""
        rng = random.Random(seed)
        domains = dict(self.domains)
        symbols = sorted(self.lhs.free_symbols | self.rhs.free_symbols, key=lambda s: s.name)
        for _ in range(trials):
            point = {}
            for symbol in symbols:
                low, high = domains.get(symbol, (sp.Rational(1, 100), sp.Rational(99, 100)))
                u = sp.Rational(rng.randint(1, 9999), 10000)
                point[symbol] = low + (high - low) * u
            left = sp.N(self.lhs.subs(point), RATIONAL_DIGITS)
            right = sp.N(self.rhs.subs(point), RATIONAL_DIGITS)
            scale = max(abs(left), abs(right), sp.Integer(1))
            if not abs(left - right) <= scale * sp.Rational(1, 10**RATIONAL_ZERO_EXPONENT):
                return False
        return True


@dataclass(frozen=True)
class Derivation:
    """A named result of the seed tutorial, derived step by step from its definitions."""

    key: str  # "a" .. "h", the order of the seed tutorial (issue #2); "i" and on, results beyond it
    title: str
    module: str  # the module that proves it, e.g. "derivations.posterior"
    summary: str  # one paragraph of prose: what is derived from what
    steps: tuple[Step, ...]
    results: tuple[Step, ...]  # the boxed results the implementation is tested against

    def all_steps(self) -> tuple[Step, ...]:
        """Steps then results, in the order the report shows them."""
        return self.steps + self.results
