"""(a) q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, (1 - alpha_bar_t) I), by composing Gaussian steps.

Ho et al. (2020), eq. (4). The forward process adds noise one step at a time,
q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t I); this module shows that any number of steps
collapses into one Gaussian step from x_0, which is what lets Algorithm 1 (line 5) sample x_t directly
as sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps. The seed tutorial walks the two-step case and
says "and so on"; here the two-step case is composed explicitly, then general t follows by induction,
and the same statement is proved at the level of densities (the convolution integral).
"""

from __future__ import annotations

import functools

import sympy as sp

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
    eps,
    normal_density,
    x_0,
    x_prev,
    x_t,
)

# Two-step case: alpha_1, alpha_2 in (0, 1), independent standard normal noises eps_1, eps_2.
alpha_1 = sp.Symbol(r"\alpha_1", positive=True)
alpha_2 = sp.Symbol(r"\alpha_2", positive=True)
eps_1 = sp.Symbol(r"\epsilon_1", real=True)
eps_2 = sp.Symbol(r"\epsilon_2", real=True)
x_1 = sp.Symbol("x_1", real=True)
x_2 = sp.Symbol("x_2", real=True)
# Induction: the noise carried by x_{t-1} and the fresh noise of step t.
eps_carried = sp.Symbol(r"\bar{\epsilon}_{t-1}", real=True)
eps_fresh = sp.Symbol(r"\epsilon_t", real=True)
# Argument of moment generating functions; A, B: the Gaussian-integral lemma's coefficients.
s = sp.Symbol("s", real=True)
A = sp.Symbol("A", positive=True)
B = sp.Symbol("B", real=True)
u = sp.Symbol("u", real=True)


def _gaussian_mgf(variance: sp.Expr) -> sp.Expr:
    """E[exp(s Z)] for Z ~ N(0, variance)."""
    return sp.exp(variance * s**2 / 2)


def _mean_and_variance(sample: sp.Expr, noises: tuple[sp.Symbol, ...]) -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance given x_0 of `sample`, linear in independent standard normal `noises`."""
    mean = sample.subs({n: 0 for n in noises})
    variance = sum(sample.coeff(n) ** 2 for n in noises)
    return mean, variance


# --- Two steps, composed explicitly --------------------------------------------------------------
X1 = sp.sqrt(alpha_1) * x_0 + sp.sqrt(1 - alpha_1) * eps_1
X2_FROM_X1 = sp.sqrt(alpha_2) * x_1 + sp.sqrt(1 - alpha_2) * eps_2
X2_COMPOSED = X2_FROM_X1.subs(x_1, X1)
X2_EXPANDED = sp.expand(X2_COMPOSED)
X2_MEAN, X2_VARIANCE_SUM = _mean_and_variance(X2_EXPANDED, (eps_1, eps_2))
X2_VARIANCE = sp.expand(X2_VARIANCE_SUM)  # a2 (1 - a1) + (1 - a2) = 1 - a1 a2
X2_NOISE_MGF = sp.Mul(*(_gaussian_mgf(X2_EXPANDED.coeff(n) ** 2) for n in (eps_1, eps_2)), evaluate=False)

# --- General t, by induction ---------------------------------------------------------------------
# Hypothesis at t-1: x_{t-1} = sqrt(alpha_bar_{t-1}) x_0 + sqrt(1 - alpha_bar_{t-1}) eps_carried.
X_PREV_HYPOTHESIS = sp.sqrt(alpha_bar_prev) * x_0 + sp.sqrt(1 - alpha_bar_prev) * eps_carried
X_T_FROM_PREV = sp.sqrt(alpha_t) * x_prev + sp.sqrt(beta_t) * eps_fresh
X_T_COMPOSED = X_T_FROM_PREV.subs(x_prev, X_PREV_HYPOTHESIS)
X_T_EXPANDED = sp.expand(X_T_COMPOSED)
_MEAN_T, _VARIANCE_T_SUM = _mean_and_variance(X_T_EXPANDED, (eps_carried, eps_fresh))
MEAN_COEF_T = _MEAN_T.coeff(x_0)  # sqrt(alpha_t) sqrt(alpha_bar_{t-1})
VARIANCE_T = sp.expand(_VARIANCE_T_SUM)  # alpha_t (1 - alpha_bar_{t-1}) + beta_t
X_T_NOISE_MGF = sp.Mul(*(_gaussian_mgf(X_T_EXPANDED.coeff(n) ** 2) for n in (eps_carried, eps_fresh)), evaluate=False)

# Rename alpha_bar_{t-1} alpha_t as alpha_bar_t: the results stated in alpha_bar_t alone. alpha_t is
# written as a positive symbol first (0 < alpha_t < 1), so that sqrt(alpha_bar_t / alpha_t) sqrt(alpha_t)
# may cancel.
_alpha_t_positive = sp.Symbol(r"\alpha_t", positive=True)


def _rename(expr: sp.Expr) -> sp.Expr:
    with_alpha = expr.subs(beta_t, 1 - _alpha_t_positive)
    return sp.expand(with_alpha.subs(alpha_bar_prev, alpha_bar / _alpha_t_positive))


MEAN_COEF = _rename(MEAN_COEF_T)
VARIANCE = _rename(VARIANCE_T)
if not MEAN_COEF.free_symbols | VARIANCE.free_symbols <= {alpha_bar}:
    raise ArithmeticError(f"q(x_t | x_0) is not a function of alpha_bar_t alone: mean {MEAN_COEF}, variance {VARIANCE}")
X_T_REPARAMETERISED = MEAN_COEF * x_0 + sp.sqrt(VARIANCE) * eps

# --- The same at the level of densities: the convolution integral --------------------------------
# q(x_t | x_0) = int q(x_t | x_{t-1}) q(x_{t-1} | x_0) dx_{t-1}; the integrand is
# exp(E(x_{t-1})) / (Z_step Z_prev) with E quadratic in x_{t-1}.
_STEP_VARIANCE = beta_t
_PREV_VARIANCE = 1 - alpha_bar_prev
CONVOLUTION_EXPONENT = -((x_t - sp.sqrt(alpha_t) * x_prev) ** 2) / (2 * _STEP_VARIANCE) - (
    (x_prev - sp.sqrt(alpha_bar_prev) * x_0) ** 2
) / (2 * _PREV_VARIANCE)
_poly = sp.Poly(sp.expand(CONVOLUTION_EXPONENT), x_prev)
CONV_A = -_poly.coeff_monomial(x_prev**2)  # E = -A u^2 + B u + C
CONV_B = _poly.coeff_monomial(x_prev)
CONV_C = _poly.coeff_monomial(1)
# Lemma: int exp(-A u^2 + B u) du = sqrt(pi / A) exp(B^2 / (4 A)) for A > 0.
GAUSSIAN_INTEGRAL = sp.sqrt(sp.pi / A) * sp.exp(B**2 / (4 * A))
GAUSSIAN_INTEGRAL_DERIVED = sp.integrate(sp.exp(-A * u**2 + B * u), (u, -sp.oo, sp.oo))
CONVOLUTION_EXPONENT_AFTER = CONV_C + CONV_B**2 / (4 * CONV_A)
# Squared normaliser: (pi / A) / (Z_step^2 Z_prev^2), with Z^2 = 2 pi variance.
CONVOLUTION_NORMALISER_SQUARED = (sp.pi / CONV_A) / ((2 * sp.pi * _STEP_VARIANCE) * (2 * sp.pi * _PREV_VARIANCE))
# The valid domain 0 < alpha_bar_{t-1} < 1, 0 < beta_t < 1, by positive parameters p, b.
_p, _b = sp.symbols("p b", positive=True)
_ON_DOMAIN = {alpha_bar_prev: 1 / (1 + _p), beta_t: _b / (1 + _b)}
CONVOLUTION = (
    GAUSSIAN_INTEGRAL.subs({A: CONV_A, B: CONV_B})
    * sp.exp(CONV_C)
    / (sp.sqrt(2 * sp.pi * _STEP_VARIANCE) * sp.sqrt(2 * sp.pi * _PREV_VARIANCE))
)


def _paper_mean_coef(ab: sp.Expr) -> sp.Expr:
    return sp.sqrt(ab)


def _paper_variance(ab: sp.Expr) -> sp.Expr:
    return 1 - ab


@functools.cache
def derivation() -> Derivation:
    """The chain of steps from q(x_t | x_{t-1}) to q(x_t | x_0)."""
    marginal_t = normal_density(x_t, _paper_mean_coef(alpha_bar_t) * x_0, _paper_variance(alpha_bar_t))
    steps = (
        Step(
            "Model: one forward step from x_0, reparameterised: q(x_1 | x_0) = N(sqrt(alpha_1) x_0, 1 - alpha_1) "
            "with beta_1 = 1 - alpha_1 and eps_1 ~ N(0, 1).",
            x_1,
            X1,
            Check.DEFINITION,
        ),
        Step(
            "Model: the second step, with fresh noise eps_2 ~ N(0, 1) independent of eps_1.",
            x_2,
            X2_FROM_X1,
            Check.DEFINITION,
        ),
        Step(
            "Compose the two steps: substitute x_1 into x_2 and expand.",
            X2_COMPOSED,
            X2_EXPANDED,
        ),
        named_step(
            "The noises have mean zero, so the mean of x_2 given x_0 is the x_0 term: "
            "sqrt(alpha_2) sqrt(alpha_1) = sqrt(alpha_1 alpha_2).",
            r"\mathbb{E}[x_2 \mid x_0]",
            X2_MEAN,
            sp.sqrt(alpha_1 * alpha_2) * x_0,
        ),
        named_step(
            "The noises are independent, so their variances add: the merged noise variance "
            "alpha_2 (1 - alpha_1) + (1 - alpha_2) collapses to 1 - alpha_1 alpha_2.",
            r"\operatorname{Var}[x_2 \mid x_0]",
            X2_VARIANCE_SUM,
            1 - alpha_1 * alpha_2,
        ),
        named_step(
            "A sum of independent Gaussians is Gaussian: the moment generating function of the merged "
            "noise is the product of the two factors' MGFs, which is the MGF of N(0, 1 - alpha_1 alpha_2). "
            "So x_2 = sqrt(alpha_1 alpha_2) x_0 + sqrt(1 - alpha_1 alpha_2) eps with one eps ~ N(0, 1).",
            r"\mathbb{E}\left[e^{s(\sqrt{\alpha_2 (1-\alpha_1)}\epsilon_1 + \sqrt{1-\alpha_2}\epsilon_2)}\right]",
            X2_NOISE_MGF,
            _gaussian_mgf(1 - alpha_1 * alpha_2),
        ),
        Step(
            "Assumption (the induction hypothesis) at t - 1: x_{t-1} = sqrt(alpha_bar_{t-1}) x_0 "
            "+ sqrt(1 - alpha_bar_{t-1}) times a standard normal noise carried from the earlier steps.",
            x_prev,
            X_PREV_HYPOTHESIS,
            Check.DEFINITION,
        ),
        Step(
            "Base case t = 1: with alpha_bar_0 = 1 the hypothesis reads x_0 = x_0.",
            X_PREV_HYPOTHESIS.subs(alpha_bar_prev, 1),
            x_0,
        ),
        Step(
            "Model: step t of the forward process, q(x_t | x_{t-1}) = N(sqrt(alpha_t) x_{t-1}, beta_t), with fresh "
            "noise independent of the carried one (alpha_t = 1 - beta_t).",
            x_t,
            X_T_FROM_PREV,
            Check.DEFINITION,
        ),
        Step(
            "Compose: substitute the hypothesis for x_{t-1} and expand.",
            X_T_COMPOSED,
            X_T_EXPANDED,
        ),
        named_step(
            "Mean coefficient of x_0: sqrt(alpha_t) sqrt(alpha_bar_{t-1}) = sqrt(alpha_bar_t), "
            "since alpha_bar_t = alpha_bar_{t-1} alpha_t.",
            r"\frac{\mathbb{E}[x_t \mid x_0]}{x_0}",
            MEAN_COEF_T,
            _paper_mean_coef(alpha_bar_t),
        ),
        named_step(
            "Independent noise variances add: alpha_t (1 - alpha_bar_{t-1}) + beta_t = 1 - alpha_bar_t.",
            r"\operatorname{Var}[x_t \mid x_0]",
            VARIANCE_T,
            _paper_variance(alpha_bar_t),
        ),
        named_step(
            "The merged noise is Gaussian (product of MGFs), so the hypothesis holds at t: "
            "q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t), which completes the induction.",
            r"\mathbb{E}\left[e^{s \cdot \mathrm{noise}_t}\right]",
            X_T_NOISE_MGF,
            _gaussian_mgf(_paper_variance(alpha_bar_t)),
        ),
        Step(
            "The same at the level of densities. Lemma (the Gaussian integral, by sympy.integrate): for A > 0, "
            "int exp(-A u^2 + B u) du over the real line.",
            GAUSSIAN_INTEGRAL_DERIVED,
            GAUSSIAN_INTEGRAL,
            lhs_latex=r"\int_{-\infty}^{\infty} e^{-A u^2 + B u}\, du",
        ),
        Step(
            "q(x_t | x_0) = int q(x_t | x_{t-1}) q(x_{t-1} | x_0) dx_{t-1}. The integrand's exponent E is "
            "quadratic in x_{t-1}: expand and read off E = -A x_{t-1}^2 + B x_{t-1} + C.",
            CONVOLUTION_EXPONENT,
            -CONV_A * x_prev**2 + CONV_B * x_prev + CONV_C,
        ),
        named_step(
            "Integrate with the lemma: the exponent left after integrating out x_{t-1} is C + B^2 / (4 A), "
            "the exponent of N(x_t; sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t).",
            "C + \\frac{B^2}{4A}",
            CONVOLUTION_EXPONENT_AFTER,
            -((x_t - _paper_mean_coef(alpha_bar_t) * x_0) ** 2) / (2 * _paper_variance(alpha_bar_t)),
        ),
        named_step(
            "And the normalisers: the lemma's sqrt(pi / A) over the two densities' normalisers "
            "sqrt(2 pi beta_t) sqrt(2 pi (1 - alpha_bar_{t-1})) is 1 / sqrt(2 pi (1 - alpha_bar_t)) "
            "(compared squared: all factors are positive).",
            r"\frac{\pi / A}{2\pi\beta_t \cdot 2\pi(1-\bar{\alpha}_{t-1})}",
            CONVOLUTION_NORMALISER_SQUARED,
            1 / (2 * sp.pi * _paper_variance(alpha_bar_t)),
        ),
    )
    results = (
        Step(
            "The convolution integral is exactly the marginal density q(x_t | x_0), normalisation included: "
            "both are positive, so they are compared as logs, on the domain alpha_bar_{t-1} = 1 / (1 + p), "
            "beta_t = b / (1 + b) with p, b > 0, where every factor is positive and the logs split exactly.",
            log_of_positive(CONVOLUTION.subs(_ON_DOMAIN)),
            log_of_positive(marginal_t.subs(_ON_DOMAIN)),
            lhs_latex=r"\log \int q(x_t \mid x_{t-1})\, q(x_{t-1} \mid x_0)\, dx_{t-1}",
        ),
        named_step(
            "Mean coefficient of q(x_t | x_0), in alpha_bar_t alone (eq. 4).",
            r"\frac{\mathbb{E}[x_t \mid x_0]}{x_0}",
            MEAN_COEF,
            _paper_mean_coef(alpha_bar),
        ),
        named_step(
            "Variance of q(x_t | x_0) (eq. 4).",
            r"\operatorname{Var}[x_t \mid x_0]",
            VARIANCE,
            _paper_variance(alpha_bar),
        ),
        named_step(
            "Reparameterised sample used by Algorithm 1, line 5, with eps ~ N(0, 1).",
            "x_t",
            X_T_REPARAMETERISED,
            _paper_mean_coef(alpha_bar) * x_0 + sp.sqrt(_paper_variance(alpha_bar)) * eps,
        ),
    )
    return Derivation(
        key="a",
        title="The forward marginal q(x_t | x_0)",
        module=__name__,
        summary=(
            "Each forward step scales the previous latent by sqrt(alpha_t) and adds independent Gaussian noise "
            "of variance beta_t = 1 - alpha_t. Composing two steps by substitution gives a latent that is "
            "linear in x_0 and in two independent noises; their variances add to 1 - alpha_1 alpha_2 and the "
            "sum of independent Gaussians is again Gaussian, so two steps are one step with the product "
            "alpha_1 alpha_2. The same computation is the inductive step from t - 1 to t, which proves "
            "q(x_t | x_0) = N(sqrt(alpha_bar_t) x_0, 1 - alpha_bar_t) for every t >= 1 (base case "
            "alpha_bar_0 = 1). Finally the statement is proved for densities: completing the square in the "
            "convolution integral over x_{t-1} gives the marginal density exactly, normalisation included."
        ),
        steps=steps,
        results=results,
    )


q_xt_mean_coef = float64_function(MEAN_COEF, (alpha_bar,), "q_xt_mean_coef")
q_xt_variance = float64_function(VARIANCE, (alpha_bar,), "q_xt_variance")

__all__ = [
    "MEAN_COEF",
    "VARIANCE",
    "X_T_REPARAMETERISED",
    "derivation",
    "q_xt_mean_coef",
    "q_xt_variance",
]
