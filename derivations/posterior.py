"""(b) q(x_{t-1} | x_t, x_0) = N(mu_tilde_t(x_t, x_0), beta_tilde_t I), by Bayes' rule.

Ho et al. (2020), eqs. (6)-(7):

    mu_tilde_t   = sqrt(alpha_bar_{t-1}) beta_t / (1 - alpha_bar_t) x_0
                   + sqrt(alpha_t) (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) x_t
    beta_tilde_t = (1 - alpha_bar_{t-1}) / (1 - alpha_bar_t) beta_t

The seed tutorial writes Bayes' rule with the three Gaussians, expands the exponent, collects it as a
quadratic in x_{t-1} and completes the square; this module does the same with SymPy (coefficients are
read off a polynomial in x_{t-1}, not typed in) and then proves the stronger statement the tutorial
leaves implicit: the Gaussian so found equals the Bayes ratio exactly, normalisation included. At
t = 1 (alpha_bar_0 = 1) the variance is 0 and the posterior is the point mass at x_0.
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import forward_marginal
from derivations.chain import Check, Derivation, Step
from derivations.domain import log_of_positive
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import (
    alpha_bar,
    alpha_bar_prev,
    alpha_bar_t,
    alpha_t,
    beta_t,
    normal_density,
    x_0,
    x_prev,
    x_t,
)

s = sp.Symbol("s", real=True)  # argument of a moment generating function


# The three Gaussians of Bayes' rule; the two marginals come from derivation (a).
_marginal_mean_coef = forward_marginal.MEAN_COEF
_marginal_variance = forward_marginal.VARIANCE
STEP_MEAN, STEP_VARIANCE = sp.sqrt(alpha_t) * x_prev, beta_t  # q(x_t | x_{t-1})
PREV_MEAN = _marginal_mean_coef.subs(alpha_bar, alpha_bar_prev) * x_0  # q(x_{t-1} | x_0)
PREV_VARIANCE = _marginal_variance.subs(alpha_bar, alpha_bar_prev)
MARGINAL_MEAN = _marginal_mean_coef.subs(alpha_bar, alpha_bar_t) * x_0  # q(x_t | x_0)
MARGINAL_VARIANCE = _marginal_variance.subs(alpha_bar, alpha_bar_t)

BAYES_RATIO = (
    normal_density(x_t, STEP_MEAN, STEP_VARIANCE)
    * normal_density(x_prev, PREV_MEAN, PREV_VARIANCE)
    / normal_density(x_t, MARGINAL_MEAN, MARGINAL_VARIANCE)
)
# The ratio is exp(EXPONENT) times a constant; the exponent, as the seed writes it inside exp{...}.
EXPONENT = (
    -((x_t - STEP_MEAN) ** 2) / (2 * STEP_VARIANCE)
    - (x_prev - PREV_MEAN) ** 2 / (2 * PREV_VARIANCE)
    + (x_t - MARGINAL_MEAN) ** 2 / (2 * MARGINAL_VARIANCE)
)
# Squared normaliser of the ratio: Z_marginal^2 / (Z_step^2 Z_prev^2) with Z^2 = 2 pi variance.
NORMALISER_SQUARED = (2 * sp.pi * MARGINAL_VARIANCE) / ((2 * sp.pi * STEP_VARIANCE) * (2 * sp.pi * PREV_VARIANCE))

# Collect the exponent as a quadratic in x_{t-1}: E = A2 x_{t-1}^2 + A1 x_{t-1} + A0.
_poly = sp.Poly(sp.expand(EXPONENT), x_prev)
A2 = _poly.coeff_monomial(x_prev**2)
A1 = _poly.coeff_monomial(x_prev)
A0 = _poly.coeff_monomial(1)

# Complete the square: E = -(x_{t-1} - mu)^2 / (2 beta_tilde) + R, so the precision is -2 A2 and the
# mean is A1 / precision.
PRECISION = sp.factor(sp.together(-2 * A2))
VARIANCE = sp.factor(1 / PRECISION)  # beta_tilde_t
_mean = sp.expand(A1 * VARIANCE)
MEAN_COEF_X0 = sp.factor(_mean.coeff(x_0))
MEAN_COEF_XT = sp.factor(_mean.coeff(x_t))
POSTERIOR_MEAN = MEAN_COEF_X0 * x_0 + MEAN_COEF_XT * x_t
REMAINDER = A0 + A1**2 * VARIANCE / 2  # what is left of E after completing the square

# The paper's (and REFERENCE.md's) forms, to compare the derived ones against.
PAPER_MEAN_COEF_X0 = sp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t)
PAPER_MEAN_COEF_XT = sp.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t)
PAPER_VARIANCE = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t

# The valid domain 0 < alpha_bar_{t-1} < 1, 0 < beta_t < 1, by positive parameters p, b.
_p, _b = sp.symbols("p b", positive=True)
_ON_DOMAIN = {alpha_bar_prev: 1 / (1 + _p), beta_t: _b / (1 + _b)}


def _gaussian_mgf(mean: sp.Expr, variance: sp.Expr) -> sp.Expr:
    """E[exp(s X)] for X ~ N(mean, variance)."""
    return sp.exp(s * mean + variance * s**2 / 2)


@functools.cache
def derivation() -> Derivation:
    """The chain of steps from Bayes' rule to q(x_{t-1} | x_t, x_0)."""
    steps = (
        Step(
            "Definition (Bayes' rule: a conditional density is the joint density over the marginal), with the "
            "model's Markov property q(x_t | x_{t-1}, x_0) = q(x_t | x_{t-1}): the forward step "
            "N(x_t; sqrt(alpha_t) x_{t-1}, beta_t) times the marginal q(x_{t-1} | x_0) over the marginal "
            "q(x_t | x_0), both marginals built from derivation (a)'s exported MEAN_COEF and VARIANCE.",
            sp.Symbol("q_posterior"),
            BAYES_RATIO,
            Check.DEFINITION,
            lhs_latex=r"q(x_{t-1} \mid x_t, x_0)",
        ),
        Step(
            "The ratio is a constant times exp(E), E the sum of the three Gaussians' exponents (as the seed "
            "writes inside exp{...}). Expand E and collect it as a quadratic in x_{t-1} (coefficients read off "
            "the polynomial in x_{t-1}).",
            EXPONENT,
            A2 * x_prev**2 + A1 * x_prev + A0,
        ),
        named_step(
            "The x_{t-1}^2 coefficient gives the precision, in the seed's form alpha_t / beta_t + "
            "1 / (1 - alpha_bar_{t-1}) (the seed writes 1 - alpha_t for beta_t).",
            r"\frac{1}{\tilde{\beta}_t} = -2 [x_{t-1}^2] E",
            -2 * A2,
            alpha_t / beta_t + 1 / (1 - alpha_bar_prev),
        ),
        Step(
            "Over a common denominator, using alpha_t + beta_t = 1: "
            "alpha_t (1 - alpha_bar_{t-1}) + beta_t = 1 - alpha_bar_t.",
            alpha_t / beta_t + 1 / (1 - alpha_bar_prev),
            (1 - alpha_bar_t) / (beta_t * (1 - alpha_bar_prev)),
        ),
        named_step(
            "The variance is the inverse precision.",
            r"\tilde{\beta}_t",
            VARIANCE,
            PAPER_VARIANCE,
        ),
        named_step(
            "The x_{t-1} coefficient is the linear term of the square, in the seed's form "
            "sqrt(alpha_t) x_t / beta_t + sqrt(alpha_bar_{t-1}) x_0 / (1 - alpha_bar_{t-1}).",
            r"[x_{t-1}] E",
            A1,
            sp.sqrt(alpha_t) * x_t / beta_t + sp.sqrt(alpha_bar_prev) * x_0 / (1 - alpha_bar_prev),
        ),
        named_step(
            "Complete the square: the mean is mu_tilde = [x_{t-1}] E times beta_tilde, expanded and collected "
            "in x_0 and x_t.",
            r"\tilde{\mu}_t",
            A1 * VARIANCE,
            PAPER_MEAN_COEF_X0 * x_0 + PAPER_MEAN_COEF_XT * x_t,
        ),
        named_step(
            "What the square leaves over, R = A_0 + ([x_{t-1}] E)^2 beta_tilde / 2 with A_0 the x_{t-1}-free part "
            "of E, vanishes identically: the x_{t-1}-free terms of the two numerator exponents cancel the "
            "exponent of q(x_t | x_0), so no constant C(x_t, x_0) is left over.",
            "R",
            REMAINDER,
            sp.Integer(0),
        ),
        Step(
            "Hence the exponent is exactly the completed square, -(x_{t-1} - mu_tilde)^2 / (2 beta_tilde).",
            EXPONENT,
            -((x_prev - POSTERIOR_MEAN) ** 2) / (2 * VARIANCE),
            lhs_latex="E",
        ),
        named_step(
            "The normalisers match too: Z_{q(x_t|x_0)}^2 / (Z_{q(x_t|x_{t-1})}^2 Z_{q(x_{t-1}|x_0)}^2) "
            "= 1 / (2 pi beta_tilde_t), the squared normaliser of N(mu_tilde, beta_tilde_t).",
            r"\frac{2\pi(1-\bar{\alpha}_t)}{2\pi\beta_t \cdot 2\pi(1-\bar{\alpha}_{t-1})}",
            NORMALISER_SQUARED,
            1 / (2 * sp.pi * PAPER_VARIANCE),
        ),
    )
    results = (
        Step(
            "The Bayes ratio is exactly the Gaussian density N(x_{t-1}; mu_tilde_t, beta_tilde_t), "
            "normalisation included (not only up to a constant): both are positive, so they are compared as logs, "
            "on the domain alpha_bar_{t-1} = 1 / (1 + p), beta_t = b / (1 + b) with p, b > 0, where every factor "
            "is positive and the logs split exactly.",
            log_of_positive(BAYES_RATIO.subs(_ON_DOMAIN)),
            log_of_positive(normal_density(x_prev, POSTERIOR_MEAN, VARIANCE).subs(_ON_DOMAIN)),
            lhs_latex=r"\log \frac{q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)}{q(x_t \mid x_0)}",
        ),
        named_step(
            "Posterior mean coefficient of x_0 (eq. 7).",
            r"[x_0]\, \tilde{\mu}_t",
            MEAN_COEF_X0,
            PAPER_MEAN_COEF_X0,
        ),
        named_step(
            "Posterior mean coefficient of x_t (eq. 7).",
            r"[x_t]\, \tilde{\mu}_t",
            MEAN_COEF_XT,
            PAPER_MEAN_COEF_XT,
        ),
        named_step(
            "Posterior variance beta_tilde_t (eq. 7).",
            r"\tilde{\beta}_t",
            VARIANCE,
            PAPER_VARIANCE,
        ),
        Step(
            "t = 1: substitute alpha_bar_0 = 1. The posterior variance is 0 (beta_tilde_1 = 0).",
            VARIANCE.subs(alpha_bar_prev, 1),
            sp.Integer(0),
            lhs_latex=r"\tilde{\beta}_1",
        ),
        Step(
            "t = 1: the posterior mean is x_0 itself (coefficients 1 and 0).",
            POSTERIOR_MEAN.subs(alpha_bar_prev, 1),
            x_0,
            lhs_latex=r"\tilde{\mu}_1(x_1, x_0)",
        ),
        Step(
            "t = 1: as alpha_bar_{t-1} -> 1 the moment generating function of N(mu_tilde_t, beta_tilde_t) "
            "tends to exp(s x_0), the MGF of the point mass at x_0. So q(x_0 | x_1, x_0) is the point mass "
            "delta(x_{t-1} - x_0), which has no density: code must not evaluate log beta_tilde_1.",
            sp.limit(_gaussian_mgf(POSTERIOR_MEAN, VARIANCE), alpha_bar_prev, 1),
            sp.exp(s * x_0),
            lhs_latex=(
                r"\lim_{\bar{\alpha}_{t-1} \to 1} \mathbb{E}_{q(x_{t-1} \mid x_t, x_0)}\left[e^{s x_{t-1}}\right]"
            ),
        ),
    )
    return Derivation(
        key="b",
        title="The forward posterior q(x_{t-1} | x_t, x_0)",
        module=__name__,
        summary=(
            "Bayes' rule writes the posterior as the forward step q(x_t | x_{t-1}) times the marginal "
            "q(x_{t-1} | x_0), divided by the marginal q(x_t | x_0), all three Gaussian. The exponent of "
            "this ratio is expanded and collected as a quadratic in x_{t-1}; its x_{t-1}^2 coefficient "
            "gives the precision 1 / beta_tilde_t and its x_{t-1} coefficient, times beta_tilde_t, the "
            "mean mu_tilde_t, which is linear in x_0 and x_t. Completing the square leaves no remainder, "
            "and the normalising constants of the three Gaussians combine into that of "
            "N(mu_tilde_t, beta_tilde_t), so the posterior is this Gaussian exactly. At t = 1, where "
            "alpha_bar_0 = 1, the variance vanishes and the mean is x_0: the posterior is the point mass "
            "at x_0."
        ),
        steps=steps,
        results=results,
    )


_ARGS = (beta_t, alpha_bar_prev)
posterior_mean_coef_x0 = float64_function(MEAN_COEF_X0, _ARGS, "posterior_mean_coef_x0")
posterior_mean_coef_xt = float64_function(MEAN_COEF_XT, _ARGS, "posterior_mean_coef_xt")
posterior_variance = float64_function(VARIANCE, _ARGS, "posterior_variance")
# The whole mean mu_tilde_t(x_0, x_t), for tests that compare a linear map (tests/core/test_diffusion.py).
posterior_mean = float64_function(POSTERIOR_MEAN, (x_0, x_t, *_ARGS), "posterior_mean")

__all__ = [
    "MEAN_COEF_X0",
    "MEAN_COEF_XT",
    "POSTERIOR_MEAN",
    "VARIANCE",
    "derivation",
    "posterior_mean",
    "posterior_mean_coef_x0",
    "posterior_mean_coef_xt",
    "posterior_variance",
]
