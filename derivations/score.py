"""(s) The score view: grad log q_t(x_t) = -E[eps | x_t] / sqrt(1 - alpha_bar_t) (Tweedie), for any data.

For data with any density p(x_0) (an undetermined positive function) the marginal of x_t is

    q_t(x_t) = int N(x_t; sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t) p(x_0) dx_0.

Differentiating under the integral (the kernel's x_t-derivative is bounded by an integrable function, so this is
dominated convergence) and splitting the integrals by linearity (derivation (r)'s `split_integrals`):

    grad log q_t(x_t) = (sqrt(alpha_bar_t) E[x_0 | x_t] - x_t) / (1 - alpha_bar_t)
                      = -E[eps | x_t] / sqrt(1 - alpha_bar_t),

E[. | x_t] being the mean under Bayes' posterior N(x_t; sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t) p(x_0) / q_t(x_t) and
eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t) (eq. 4), so E[eps | x_t] is derivation (r)'s minimiser
eps*. With eps_theta = eps*, Algorithm 2's mean (line 4, derivation (d)) is (x_t + beta_t grad log q_t(x_t)) /
sqrt(alpha_t). The term of L_simple is denoising score matching: ||eps - eps_theta||^2 = (1 - alpha_bar_t)
||s_theta - grad_{x_t} log q(x_t | x_0)||^2 with s_theta = -eps_theta / sqrt(1 - alpha_bar_t), and the target's
conditional mean E[grad log q(x_t | x_0) | x_t] is the score, so (by (r)) the best s_theta is the score. All of this
is per coordinate: the kernel N(x_t; sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I) is a product over coordinates, so
d/dx_{t,i} touches one factor; checked on D = 2 with a joint density p(x_{0,1}, x_{0,2}), and by the same argument
for any D.

Exports (A = a_t = sqrt(alpha_bar_t), B = b_t = sqrt(1 - alpha_bar_t) as positive symbols; symbols.x_t, x_0, eps,
eps_theta; DATA_DENSITY p(x_0); SCORE s):
    MARGINAL_SCORE     d/dx_t log q_t(x_t), differentiated under the integral and split
    EPS_STAR           E[eps | x_t] as a ratio of integrals (split)
    SCORE_MEAN         Algorithm 2's mean with eps_theta = -sqrt(1 - alpha_bar_t) s (derivation (d)'s MU_THETA)
    DSM_TERM           (1 - abar) (s_theta - grad log q(x_t | x_0))^2 at x_t = sqrt(abar) x_0 + sqrt(1-abar) eps
    DSM_TARGET_MEAN    E[grad_{x_t} log q(x_t | x_0) | x_t] (split)
Numeric (float64, broadcasting, 50-digit evaluation):
    score_from_eps(eps, alpha_bar) = -eps / sqrt(1 - alpha_bar)
    mean_from_score(x_t, score, beta_t) = (x_t + beta_t score) / sqrt(1 - beta_t)
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation
from derivations.chain import Check, Derivation, Step
from derivations.denoising_minimiser import split_integrals
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import (
    alpha_bar,
    alpha_bar_prev,
    alpha_t,
    beta_t,
    eps,
    eps_theta,
    normal_density,
    normal_log_density,
    x_0,
    x_t,
)

# a_t = sqrt(alpha_bar_t) and b_t = sqrt(1 - alpha_bar_t) as positive symbols (a_t^2 + b_t^2 = 1 is never needed).
A = sp.Symbol("a_t", positive=True)
B = sp.Symbol("b_t", positive=True)
_a, _b2 = A, B**2
_LINE_X0 = (x_0, -sp.oo, sp.oo)
DATA_DENSITY = sp.Function("p", positive=True)(x_0)  # any data density
SCORE = sp.Symbol("s", real=True)  # a value of the score (or of s_theta) at x_t

KERNEL = normal_density(x_t, _a * x_0, _b2)  # q(x_t | x_0), derivation (a)
MARGINAL = sp.Integral(KERNEL * DATA_DENSITY, _LINE_X0)  # q_t(x_t)


def posterior_mean(h: sp.Expr) -> sp.Expr:
    """E[h | x_t] under Bayes' posterior q(x_t | x_0) p(x_0) / q_t(x_t), h a function of (x_t, x_0)."""
    return sp.Integral(h * KERNEL * DATA_DENSITY, _LINE_X0) / MARGINAL


X0_HAT = sp.expand(split_integrals(posterior_mean(x_0)))  # E[x_0 | x_t]
_EPS_OF_X0 = (x_t - _a * x_0) / sp.sqrt(_b2)  # eq. 4 solved for eps
EPS_STAR = sp.expand(split_integrals(posterior_mean(_EPS_OF_X0)))
MARGINAL_DERIVATIVE = sp.expand(split_integrals(sp.diff(MARGINAL, x_t)))  # SymPy differentiates under the integral
# The same from the kernel's derivative -(x_t - a_t x_0) / b_t^2 N(x_t; a_t x_0, b_t^2), written out by hand.
MARGINAL_DERIVATIVE_SPLIT = sp.expand(split_integrals(
    -x_t / _b2 * MARGINAL + _a / _b2 * sp.Integral(x_0 * KERNEL * DATA_DENSITY, _LINE_X0)))
MARGINAL_SCORE = sp.expand(split_integrals(sp.diff(sp.log(MARGINAL), x_t)))

# Algorithm 2's mean, eps_theta = eps* = -sqrt(1 - alpha_bar_t) s.
_alpha_bar_t = alpha_bar_prev * alpha_t
SCORE_MEAN = eps_parameterisation.MU_THETA.subs(eps_theta, -sp.sqrt(1 - _alpha_bar_t) * SCORE)
SCORE_MEAN_PAPER = (x_t + beta_t * SCORE) / sp.sqrt(alpha_t)

# Denoising score matching.
CONDITIONAL_SCORE = sp.diff(normal_log_density(x_t, _a * x_0, _b2), x_t)  # grad_{x_t} log q(x_t | x_0)
CONDITIONAL_SCORE_AT_SAMPLE = sp.simplify(CONDITIONAL_SCORE.subs(x_t, _a * x_0 + sp.sqrt(_b2) * eps))
_S_THETA = -eps_theta / sp.sqrt(_b2)
DSM_TERM = _b2 * (_S_THETA - CONDITIONAL_SCORE_AT_SAMPLE) ** 2
DSM_TARGET_MEAN = sp.expand(split_integrals(posterior_mean(CONDITIONAL_SCORE)))

# D = 2: a joint data density, the isotropic kernel a product over coordinates.
_y1, _y2 = sp.symbols("x_{0\\,1} x_{0\\,2}", real=True)
_x1, _x2 = sp.symbols("x_{t\\,1} x_{t\\,2}", real=True)
_P2 = sp.Function("p", positive=True)(_y1, _y2)
_K2 = normal_density(_x1, _a * _y1, _b2) * normal_density(_x2, _a * _y2, _b2)
_LIMITS2 = ((_y1, -sp.oo, sp.oo), (_y2, -sp.oo, sp.oo))
_Q2 = sp.Integral(_K2 * _P2, *_LIMITS2)
MARGINAL_SCORE_D2 = sp.expand(split_integrals(sp.diff(sp.log(_Q2), _x1)))
_X0_HAT_D2 = sp.expand(split_integrals(sp.Integral(_y1 * _K2 * _P2, *_LIMITS2) / _Q2))

score_from_eps = float64_function((-eps / B).subs(B, sp.sqrt(1 - alpha_bar)), (eps, alpha_bar), "score_from_eps")
mean_from_score = float64_function(SCORE_MEAN_PAPER, (x_t, SCORE, beta_t), "mean_from_score")

_E = r"\mathbb{E}"


@functools.cache
def derivation() -> Derivation:
    """Tweedie's formula by differentiating under the integral, Algorithm 2's mean in score form, and denoising
    score matching."""
    steps = (
        Step(
            "Model: any data density p(x_0) > 0; the marginal of x_t integrates the forward kernel q(x_t | x_0) = "
            "N(sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t) (derivation (a)) against it.",
            sp.Symbol("q_t(x_t)"),
            MARGINAL,
            Check.DEFINITION,
            lhs_latex=r"q_t(x_t)",
        ),
        Step(
            "Definition (Bayes' rule): the posterior of x_0 is q(x_t | x_0) p(x_0) / q_t(x_t); E[. | x_t] is the mean "
            "under it.",
            sp.Symbol("E[h | x_t]"),
            posterior_mean(sp.Function("h")(x_t, x_0)),
            Check.DEFINITION,
            lhs_latex=rf"{_E}[h \mid x_t]",
        ),
        Step(
            "Differentiating under the integral sign (dominated convergence: |d/dx_t N(x_t; a x_0, b^2)| <= "
            "1/(b^2 sqrt(2 pi e)) for every x_0, and p is integrable): the derivative of q_t is the integral of the "
            "kernel's derivative -(x_t - a_t x_0)/b_t^2 N(x_t; a_t x_0, b_t^2) against p, split by linearity.",
            MARGINAL_DERIVATIVE,
            MARGINAL_DERIVATIVE_SPLIT,
            lhs_latex=r"\frac{d}{dx_t} q_t(x_t)",
        ),
        named_step(
            "Tweedie: d/dx_t log q_t = q_t'/q_t, the kernel's derivative -(x_t - sqrt(alpha_bar_t) x_0) / "
            "(1 - alpha_bar_t) times the kernel, split by linearity: the posterior mean of x_0 appears.",
            r"\nabla_{x_t} \log q_t(x_t)",
            MARGINAL_SCORE,
            (_a * X0_HAT - x_t) / _b2,
        ),
        named_step(
            "E[eps | x_t] with eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t) (eq. 4): linear in x_0, "
            "so the posterior mean of x_0 enters linearly (this is derivation (r)'s eps*).",
            rf"{_E}[\epsilon \mid x_t]",
            EPS_STAR,
            (x_t - _a * X0_HAT) / sp.sqrt(_b2),
        ),
        named_step(
            "D = 2, joint data density p(x_{0,1}, x_{0,2}), isotropic kernel (a product over coordinates): d/dx_{t,1} "
            "touches only the first factor, so the first coordinate of the score is the one-dimensional form with "
            "E[x_{0,1} | x_t]; the same argument holds for every coordinate of any D.",
            r"\partial_{x_{t,1}} \log q_t(x_t)",
            MARGINAL_SCORE_D2,
            _a * _X0_HAT_D2 / _b2 - _x1 / _b2,
        ),
        Step(
            "The conditional score of the forward kernel, at x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) "
            "eps: -eps / sqrt(1 - alpha_bar_t).",
            CONDITIONAL_SCORE_AT_SAMPLE,
            -eps / sp.sqrt(_b2),
            lhs_latex=r"\nabla_{x_t} \log q(x_t \mid x_0)",
        ),
    )
    results = (
        named_step(
            "Tweedie's formula in eps: grad log q_t(x_t) = -E[eps | x_t] / sqrt(1 - alpha_bar_t), for any data "
            "density, per coordinate in any dimension.",
            r"\nabla_{x_t} \log q_t(x_t)",
            MARGINAL_SCORE,
            -EPS_STAR / sp.sqrt(_b2),
        ),
        named_step(
            "Algorithm 2's mean (line 4, derivation (d)) with eps_theta = eps* = -sqrt(1 - alpha_bar_t) s, s the "
            "score: (x_t + beta_t s) / sqrt(alpha_t).",
            r"\mu_\theta(x_t)\big|_{\epsilon_\theta = -\sqrt{1 - \bar\alpha_t}\, s}",
            SCORE_MEAN,
            SCORE_MEAN_PAPER,
        ),
        named_step(
            "Denoising score matching: with s_theta = -eps_theta / sqrt(1 - alpha_bar_t), L_simple's term is "
            "(1 - alpha_bar_t) ||s_theta - grad log q(x_t | x_0)||^2 (per coordinate, summed): L_simple is DSM "
            "weighted by 1 - alpha_bar_t.",
            r"(1 - \bar\alpha_t)\,(s_\theta - \nabla_{x_t} \log q(x_t \mid x_0))^2",
            DSM_TERM,
            (eps - eps_theta) ** 2,
        ),
        named_step(
            "The DSM target's conditional mean is the score, so (derivation (r), with the target in place of eps) "
            "the best s_theta is grad log q_t.",
            rf"{_E}[\nabla_{{x_t}} \log q(x_t \mid x_0) \mid x_t]",
            DSM_TARGET_MEAN,
            MARGINAL_SCORE,
        ),
    )
    return Derivation(
        key="s",
        title="The score view: Tweedie's formula, Algorithm 2 in score form, denoising score matching",
        module="derivations.score",
        summary=(
            "For any data density p(x_0), an undetermined positive function, the marginal q_t(x_t) integrates the "
            "forward kernel N(x_t; sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t) against p. Differentiating under the "
            "integral and splitting by linearity gives Tweedie's formula grad log q_t(x_t) = (sqrt(alpha_bar_t) "
            "E[x_0 | x_t] - x_t) / (1 - alpha_bar_t) = -E[eps | x_t] / sqrt(1 - alpha_bar_t), with E[eps | x_t] the "
            "minimiser eps* of derivation (r). With eps_theta = eps*, Algorithm 2's mean becomes (x_t + beta_t "
            "grad log q_t(x_t)) / sqrt(alpha_t). L_simple's term equals (1 - alpha_bar_t) ||s_theta - grad_{x_t} "
            "log q(x_t | x_0)||^2 for s_theta = -eps_theta / sqrt(1 - alpha_bar_t): L_simple is denoising score "
            "matching weighted by 1 - alpha_bar_t, whose target has the score as its conditional mean. Derived in "
            "one dimension for any data density; the kernel is a product over coordinates, so every statement holds "
            "per coordinate in any dimension (checked on D = 2 with a joint data density)."
        ),
        steps=steps,
        results=results,
    )


__all__ = [
    "A",
    "B",
    "SCORE",
    "MARGINAL_SCORE",
    "EPS_STAR",
    "SCORE_MEAN",
    "DSM_TERM",
    "DSM_TARGET_MEAN",
    "posterior_mean",
    "score_from_eps",
    "mean_from_score",
    "derivation",
]
