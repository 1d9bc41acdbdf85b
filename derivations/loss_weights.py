"""(e) L_{t-1} = lambda_t (eps - eps_theta)^2 + C_t, and what L_simple drops.

Ho et al. (2020), eq. (12) and the text after it; the seed tutorial's last part. The KL of derivation (c)
between q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t) (derivation (b)) and the fixed-variance model
p_theta(x_{t-1} | x_t) = N(mu_theta(x_t, t), sigma_t^2) is rewritten with the posterior mean in its eps
form (derivation (d): substitute x_0 from the reparameterised x_t of derivation (a)). The means differ
only through eps - eps_theta, so

    L_{t-1} = lambda_t (eps - eps_theta)^2 + C_t,
    lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)),
    C_t      = 1/2 (log(sigma_t^2 / beta_tilde_t) - 1 + beta_tilde_t / sigma_t^2),

with C_t free of eps_theta, x_t, x_0 and eps. L_simple = (eps - eps_theta)^2 keeps the square and drops
both the weight lambda_t (replaced by 1) and the constant C_t. For the two fixed variances:
sigma_t^2 = beta_t gives lambda_t = beta_t / (2 alpha_t (1 - alpha_bar_t)); sigma_t^2 = beta_tilde_t
gives lambda_t = beta_t / (2 alpha_t (1 - alpha_bar_{t-1})) and C_t = 0.

At t = 1 (alpha_bar_0 = 1) beta_tilde_1 = 0: q(x_0 | x_1, x_0) is a point mass, the KL is undefined and
lambda_1 for sigma_1^2 = beta_tilde_1 is infinite. The paper does not use a KL there: the t = 1 term is
the decoder L_0 = -log p_theta(x_0 | x_1) (a discretised Gaussian, eq. 13); with its continuous Gaussian
stand-in -log N(x_0; mu_theta(x_1, 1), sigma_1^2) it is again lambda_1 (eps - eps_theta)^2 plus a
constant, the same lambda formula at alpha_bar_0 = 1 (derived below), which is why L_simple's t = 1 term
is "L_0 with the Gaussian density times the bin width, ignoring sigma_1^2 and edge effects".

Exports (in symbols.beta_t, alpha_bar_prev, sigma2):
    LOSS_WEIGHT, LOSS_CONSTANT, LOSS_WEIGHT_LARGE (sigma^2 = beta_t), LOSS_WEIGHT_SMALL (sigma^2 = beta_tilde_t),
    LOSS_CONSTANT_LARGE (C_t at sigma^2 = beta_t; C_t = 0 at beta_tilde_t)
Numeric (float64, broadcasting, 50-digit evaluation):
    loss_weight(beta_t, alpha_bar_prev, sigma2), loss_constant(beta_t, alpha_bar_prev, sigma2),
    loss_weight_large(beta_t, alpha_bar_prev), loss_weight_small(beta_t, alpha_bar_prev)
    (loss_weight_small raises ZeroDivisionError at alpha_bar_prev = 1, i.e. t = 1, where it is infinite),
    loss_constant_large(beta_t, alpha_bar_prev)
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation, posterior
from derivations.chain import Check, Derivation, Step
from derivations.gaussian_kl import MEAN_1, MEAN_2, NORMAL_KL, VAR_1, VAR_2
from derivations.numeric import float64_function
from derivations.symbols import (
    AT_T1,
    alpha_bar_prev,
    alpha_bar_t,
    alpha_t,
    beta_t,
    eps,
    eps_theta,
    normal_log_density,
    sigma2,
    x_0,
    x_t,
)


def _kl(m1, v1, m2, v2) -> sp.Expr:
    return NORMAL_KL.subs({MEAN_1: m1, VAR_1: v1, MEAN_2: m2, VAR_2: v2}, simultaneous=True)


BETA_TILDE = posterior.VARIANCE
X0_FROM_EPS = eps_parameterisation.X0_FROM_EPS_COEF_XT * x_t + eps_parameterisation.X0_FROM_EPS_COEF_EPS * eps
MU_THETA = eps_parameterisation.MU_THETA
EPS_FROM_X0 = (x_t - sp.sqrt(alpha_bar_t) * x_0) / sp.sqrt(1 - alpha_bar_t)  # the reparameterisation, inverted

# L_{t-1} with q's mean as derivation (b) gives it (in x_0, x_t), and in its eps form (derivation (d)).
KL_IN_X0 = _kl(posterior.POSTERIOR_MEAN, BETA_TILDE, MU_THETA, sigma2)
KL_IN_EPS = _kl(eps_parameterisation.EPS_MEAN, BETA_TILDE, MU_THETA, sigma2)

# The means differ by EPS_MEAN_COEF_EPS (eps - eps_theta): the weight is that coefficient squared over 2 sigma^2.
LOSS_WEIGHT = sp.factor(eps_parameterisation.EPS_MEAN_COEF_EPS**2 / (2 * sigma2))
# What is left when the means agree: the KL between N(0, beta_tilde) and N(0, sigma^2).
LOSS_CONSTANT = _kl(0, BETA_TILDE, 0, sigma2)

LOSS_WEIGHT_LARGE = sp.factor(LOSS_WEIGHT.subs(sigma2, beta_t))
LOSS_WEIGHT_SMALL = sp.factor(LOSS_WEIGHT.subs(sigma2, BETA_TILDE))
LOSS_CONSTANT_LARGE = LOSS_CONSTANT.subs(sigma2, beta_t)

PAPER_LOSS_WEIGHT = beta_t**2 / (2 * sigma2 * alpha_t * (1 - alpha_bar_t))

_ARGS = (beta_t, alpha_bar_prev)
loss_weight = float64_function(LOSS_WEIGHT, (*_ARGS, sigma2), "loss_weight")
loss_constant = float64_function(LOSS_CONSTANT, (*_ARGS, sigma2), "loss_constant")
loss_weight_large = float64_function(LOSS_WEIGHT_LARGE, _ARGS, "loss_weight_large")
loss_weight_small = float64_function(LOSS_WEIGHT_SMALL, _ARGS, "loss_weight_small")
loss_constant_large = float64_function(LOSS_CONSTANT_LARGE, _ARGS, "loss_constant_large")

_L = r"L_{t-1}"


def _d_remainder(variable: str) -> str:
    """LaTeX for the derivative of L_{t-1} - lambda_t (eps - eps_theta)^2 in `variable`."""
    return rf"\frac{{\partial}}{{\partial {variable}}}\left({_L} - \lambda_t (\epsilon - \epsilon_\theta)^2\right)"
_SQUARE = (eps - eps_theta) ** 2


@functools.cache
def derivation() -> Derivation:
    """From the KL of derivation (c) to lambda_t (eps - eps_theta)^2 + C_t; the two fixed variances; t = 1."""
    remainder = KL_IN_EPS - LOSS_WEIGHT * _SQUARE
    # t = 1: x_1 = sqrt(alpha_1) x_0 + sqrt(beta_1) eps, and the continuous Gaussian decoder.
    t1 = {alpha_bar_prev: 1}
    x_1 = (sp.sqrt(alpha_t) * x_0 + sp.sqrt(beta_t) * eps)
    decoder = -normal_log_density(x_0, MU_THETA.subs(t1).subs(x_t, x_1), sigma2)
    steps = (
        Step(
            "Definition: the loss term, the KL from the posterior q(x_{t-1}|x_t,x_0) = N(mu_tilde_t, beta_tilde_t) "
            "to the "
            "model p_theta(x_{t-1}|x_t) = N(mu_theta, sigma_t^2) with fixed variance, by derivation (c).",
            sp.Symbol("L"),
            KL_IN_X0,
            Check.DEFINITION,
            lhs_latex=_L,
        ),
        Step(
            "Write x_0 through the reparameterised x_t (derivation (a)): x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) "
            "/ sqrt(alpha_bar_t). The posterior mean becomes derivation (d)'s eps form.",
            posterior.POSTERIOR_MEAN.subs(x_0, X0_FROM_EPS),
            eps_parameterisation.EPS_MEAN,
            lhs_latex=r"\tilde{\mu}_t\left(x_t, x_0(x_t, \epsilon)\right)",
        ),
        Step(
            "The two means share the x_t term and differ only through eps - eps_theta.",
            eps_parameterisation.EPS_MEAN - MU_THETA,
            eps_parameterisation.EPS_MEAN_COEF_EPS * (eps - eps_theta),
            lhs_latex=r"\tilde{\mu}_t - \mu_\theta",
        ),
        Step(
            "So the KL's square term is lambda_t (eps - eps_theta)^2, lambda_t = (eps coefficient)^2 / (2 sigma_t^2), "
            "which is the paper's beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)).",
            (eps_parameterisation.EPS_MEAN - MU_THETA) ** 2 / (2 * sigma2),
            PAPER_LOSS_WEIGHT * _SQUARE,
            lhs_latex=r"\frac{(\tilde{\mu}_t - \mu_\theta)^2}{2\sigma_t^2}",
        ),
        Step(
            "The rest of the KL is C_t: it depends on the schedule and sigma_t^2 only. Its derivative in "
            "eps_theta vanishes ...",
            sp.diff(remainder, eps_theta),
            sp.Integer(0),
            lhs_latex=_d_remainder(r"\epsilon_\theta"),
        ),
        Step(
            "... and so do its derivatives in x_t ...",
            sp.diff(remainder, x_t),
            sp.Integer(0),
            lhs_latex=_d_remainder(r"x_t"),
        ),
        Step(
            "... and in eps ...",
            sp.diff(remainder, eps),
            sp.Integer(0),
            lhs_latex=_d_remainder(r"\epsilon"),
        ),
        Step(
            "... and, in the x_0 form with eps = (x_t - sqrt(alpha_bar_t) x_0) / sqrt(1 - alpha_bar_t), in x_0.",
            sp.diff(KL_IN_X0 - LOSS_WEIGHT * (EPS_FROM_X0 - eps_theta) ** 2, x_0),
            sp.Integer(0),
            lhs_latex=_d_remainder(r"x_0"),
        ),
        Step(
            "What L_simple keeps: (L_{t-1} - C_t) / lambda_t is exactly the squared error (eps - eps_theta)^2; "
            "L_simple drops the weight lambda_t (uses 1) and the constant C_t.",
            (KL_IN_EPS - LOSS_CONSTANT) / LOSS_WEIGHT,
            _SQUARE,
            lhs_latex=r"\frac{L_{t-1} - C_t}{\lambda_t}",
        ),
        Step(
            "With sigma_t^2 = beta_tilde_t the constant vanishes (the two Gaussians then have the same variance).",
            LOSS_CONSTANT.subs(sigma2, BETA_TILDE),
            sp.Integer(0),
            lhs_latex=r"C_t\big|_{\sigma_t^2 = \tilde{\beta}_t}",
        ),
        Step(
            "t = 1 (alpha_bar_0 = 1): beta_tilde_1 = 0, the posterior is a point mass and the KL is undefined.",
            BETA_TILDE.subs(t1),
            sp.Integer(0),
            lhs_latex=r"\tilde{\beta}_1",
        ),
        Step(
            "... so with sigma_1^2 = beta_tilde_1 the weight is infinite (its reciprocal is 0 at alpha_bar_0 = 1).",
            sp.cancel(1 / LOSS_WEIGHT_SMALL).subs(t1),
            sp.Integer(0),
            lhs_latex=r"1/\lambda_1\big|_{\sigma_1^2 = \tilde{\beta}_1}",
        ),
        Step(
            "The paper's t = 1 term is the decoder L_0 = -log p_theta(x_0|x_1) instead. Its continuous Gaussian "
            "stand-in at x_1 = sqrt(alpha_1) x_0 + sqrt(beta_1) eps is lambda_1 (eps - eps_theta)^2 plus "
            "log(2 pi sigma_1^2)/2: the same lambda formula at alpha_bar_0 = 1.",
            decoder,
            LOSS_WEIGHT.subs(t1) * _SQUARE + sp.log(2 * sp.pi * sigma2) / 2,
            lhs_latex=r"-\log \mathcal{N}\left(x_0; \mu_\theta(x_1, 1), \sigma_1^2\right)",
            display=AT_T1,
        ),
    )
    results = (
        Step(
            "L_{t-1} = lambda_t (eps - eps_theta)^2 + C_t (Ho et al. eq. 12 up to its constant).",
            KL_IN_EPS,
            LOSS_WEIGHT * _SQUARE + LOSS_CONSTANT,
            lhs_latex=_L,
        ),
        Step(
            "The weight lambda_t, as the paper writes it.",
            LOSS_WEIGHT,
            PAPER_LOSS_WEIGHT,
            lhs_latex=r"\lambda_t",
        ),
        Step(
            "The weight for sigma_t^2 = beta_t (the forward variance).",
            LOSS_WEIGHT_LARGE,
            beta_t / (2 * alpha_t * (1 - alpha_bar_t)),
            lhs_latex=r"\lambda_t\big|_{\sigma_t^2 = \beta_t}",
        ),
        Step(
            "The weight for sigma_t^2 = beta_tilde_t (the posterior variance); infinite at t = 1.",
            LOSS_WEIGHT_SMALL,
            beta_t / (2 * alpha_t * (1 - alpha_bar_prev)),
            lhs_latex=r"\lambda_t\big|_{\sigma_t^2 = \tilde{\beta}_t}",
        ),
        Step(
            "The constant for sigma_t^2 = beta_t, in the schedule alone.",
            LOSS_CONSTANT_LARGE,
            (sp.log((1 - alpha_bar_t) / (1 - alpha_bar_prev)) - 1 + (1 - alpha_bar_prev) / (1 - alpha_bar_t)) / 2,
            lhs_latex=r"C_t\big|_{\sigma_t^2 = \beta_t}",
        ),
    )
    return Derivation(
        key="e",
        title="The loss weights: L_{t-1} = lambda_t ||eps - eps_theta||^2 + C, and L_simple",
        module="derivations.loss_weights",
        summary=(
            "The KL of derivation (c) between the posterior q(x_{t-1}|x_t,x_0) of derivation (b) and a reverse "
            "step with the eps-parameterised mean mu_theta and a fixed variance sigma_t^2 is rewritten with x_0 "
            "expressed through the reparameterised x_t, which turns the posterior mean into derivation (d)'s eps "
            "form. The two means then differ only by a multiple of eps - eps_theta, so the KL is "
            "lambda_t (eps - eps_theta)^2 with lambda_t = beta_t^2 / (2 sigma_t^2 alpha_t (1 - alpha_bar_t)), "
            "plus a constant C_t = KL(N(0, beta_tilde_t) || N(0, sigma_t^2)) whose derivatives in eps_theta, "
            "x_t and eps vanish. L_simple keeps only the squared error: it replaces lambda_t by 1 and drops C_t. "
            "For sigma_t^2 = beta_t the weight is beta_t / (2 alpha_t (1 - alpha_bar_t)); for sigma_t^2 = "
            "beta_tilde_t it is beta_t / (2 alpha_t (1 - alpha_bar_{t-1})) and C_t = 0. At t = 1, where "
            "alpha_bar_0 = 1, beta_tilde_1 = 0 makes the KL undefined and the beta_tilde-variance weight infinite; the "
            "paper uses the decoder L_0 there, whose continuous Gaussian version is again the squared error with "
            "the same weight formula evaluated at alpha_bar_0 = 1, plus log(2 pi sigma_1^2)/2."
        ),
        steps=steps,
        results=results,
    )


__all__ = [
    "BETA_TILDE",
    "KL_IN_X0",
    "KL_IN_EPS",
    "LOSS_WEIGHT",
    "LOSS_CONSTANT",
    "LOSS_WEIGHT_LARGE",
    "LOSS_WEIGHT_SMALL",
    "LOSS_CONSTANT_LARGE",
    "PAPER_LOSS_WEIGHT",
    "loss_weight",
    "loss_constant",
    "loss_weight_large",
    "loss_weight_small",
    "loss_constant_large",
    "derivation",
]
