"""(p) q(x_0 | x_t) for the conformance suite's data: a Gaussian, and a mixture of two Gaussians, by Bayes' rule.

With a = alpha_bar_t, q(x_t | x_0) = N(sqrt(a) x_0, 1 - a) (derivation (a)), and data

    (i)  x_0 ~ N(m, s^2):  q(x_0 | x_t) = N(m + g (x_t - sqrt(a) m), (1 - a) s^2 / r),
                           g = sqrt(a) s^2 / r,  r = a s^2 + 1 - a  (the evidence q(x_t) = N(sqrt(a) m, r));
    (ii) x_0 ~ w N(mu_1, s^2) + (1 - w) N(mu_2, s^2):  q(x_0 | x_t) = pi_1 N(m_1, v) + (1 - pi_1) N(m_2, v),
                           m_k = mu_k + g (x_t - sqrt(a) mu_k), v = (1 - a) s^2 / r, and the posterior weight
                           pi_1 = 1 / (1 + exp(-l)), l = log(w / (1 - w)) + sqrt(a) (mu_1 - mu_2)
                           (x_t - sqrt(a) (mu_1 + mu_2) / 2) / r.

The optimal denoiser follows from x_t = sqrt(a) x_0 + sqrt(1 - a) eps (eq. 4): E[eps | x_t] = (x_t - sqrt(a)
E[x_0 | x_t]) / sqrt(1 - a). For the symmetric mixture (w = 1/2, mu = +-c) the posterior mean takes the tanh form
g x_t + (1 - sqrt(a) g) c tanh(sqrt(a) c x_t / r), and as s -> 0 (the two-point law x_0 = +-c)
c tanh(sqrt(a) c x_t / (1 - a)). The conformance suite's calibration case draws x_0 from these laws and x_t from
q(x_t | x_0); `ddpm.conformance.oracle` computes the same quantities in float64 and is tested against the functions
exported here.
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations.chain import Check, Derivation, Step
from derivations.domain import log_of_positive
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import alpha_bar, eps, linear_covariance, normal_density, x_0, x_t

a = alpha_bar
m = sp.Symbol("m", real=True)
s = sp.Symbol("s", positive=True)
n = sp.Symbol("n", real=True)  # x_0 = m + s n, n ~ N(0, 1) independent of eps
w = sp.Symbol("w", positive=True)  # weight of the first component, 0 < w < 1
mu_1 = sp.Symbol(r"\mu_1", real=True)
mu_2 = sp.Symbol(r"\mu_2", real=True)
c = sp.Symbol("c", positive=True)

# --- (i) Gaussian data ------------------------------------------------------------------------------------
EVIDENCE_VARIANCE_DERIVED = linear_covariance(sp.sqrt(a) * (m + s * n) + sp.sqrt(1 - a) * eps,
                                              sp.sqrt(a) * (m + s * n) + sp.sqrt(1 - a) * eps, (n, eps))
R = a * s**2 + 1 - a  # the evidence's variance, as stated
PRIOR = normal_density(x_0, m, s**2)
LIKELIHOOD = normal_density(x_t, sp.sqrt(a) * x_0, 1 - a)
EVIDENCE = normal_density(x_t, sp.sqrt(a) * m, R)
BAYES_RATIO = PRIOR * LIKELIHOOD / EVIDENCE
EXPONENT = -((x_0 - m) ** 2) / (2 * s**2) - (x_t - sp.sqrt(a) * x_0) ** 2 / (2 * (1 - a)) + (
    x_t - sp.sqrt(a) * m) ** 2 / (2 * R)
NORMALISER_SQUARED = (2 * sp.pi * R) / ((2 * sp.pi * s**2) * (2 * sp.pi * (1 - a)))

# Collect the exponent as a quadratic in x_0 and complete the square (coefficients read off the polynomial).
_poly = sp.Poly(sp.expand(EXPONENT), x_0)
A2 = _poly.coeff_monomial(x_0**2)
A1 = _poly.coeff_monomial(x_0)
A0 = _poly.coeff_monomial(1)
PRECISION = sp.together(-2 * A2)
POSTERIOR_VARIANCE = sp.factor(1 / PRECISION)
POSTERIOR_MEAN = sp.simplify(A1 * POSTERIOR_VARIANCE)
GAIN = sp.factor(sp.expand(POSTERIOR_MEAN).coeff(x_t))
REMAINDER = A0 + A1**2 * POSTERIOR_VARIANCE / 2

STATED_VARIANCE = (1 - a) * s**2 / R
STATED_GAIN = sp.sqrt(a) * s**2 / R
STATED_MEAN = m + STATED_GAIN * (x_t - sp.sqrt(a) * m)


def _eps_from(posterior_mean: sp.Expr) -> sp.Expr:
    """E[eps | x_t] from E[x_0 | x_t]: eq. 4, x_t = sqrt(a) x_0 + sqrt(1 - a) eps, taken in expectation given x_t."""
    return (x_t - sp.sqrt(a) * posterior_mean) / sp.sqrt(1 - a)


EPS_STAR = _eps_from(STATED_MEAN)
KAPPA = sp.sqrt(1 - a) / R
STATED_EPS_STAR = KAPPA * (x_t - sp.sqrt(a) * m)

# --- (ii) a mixture of two Gaussians with a common sd ------------------------------------------------------
def _component_mean(mu: sp.Expr) -> sp.Expr:
    return STATED_MEAN.subs(m, mu)


MIXTURE_PRIOR = w * normal_density(x_0, mu_1, s**2) + (1 - w) * normal_density(x_0, mu_2, s**2)
_EVIDENCE_1 = normal_density(x_t, sp.sqrt(a) * mu_1, R)
_EVIDENCE_2 = normal_density(x_t, sp.sqrt(a) * mu_2, R)
MIXTURE_EVIDENCE = w * _EVIDENCE_1 + (1 - w) * _EVIDENCE_2
MIXTURE_BAYES_RATIO = MIXTURE_PRIOR * LIKELIHOOD / MIXTURE_EVIDENCE
BAYES_WEIGHT = w * _EVIDENCE_1 / MIXTURE_EVIDENCE
LOGIT = sp.log(w / (1 - w)) + sp.sqrt(a) * (mu_1 - mu_2) * (x_t - sp.sqrt(a) * (mu_1 + mu_2) / 2) / R
MIXTURE_WEIGHT = 1 / (1 + sp.exp(-LOGIT))
MIXTURE_POSTERIOR_DENSITY = (MIXTURE_WEIGHT * normal_density(x_0, _component_mean(mu_1), STATED_VARIANCE)
                             + (1 - MIXTURE_WEIGHT) * normal_density(x_0, _component_mean(mu_2), STATED_VARIANCE))
MIXTURE_POSTERIOR_MEAN = MIXTURE_WEIGHT * _component_mean(mu_1) + (1 - MIXTURE_WEIGHT) * _component_mean(mu_2)
MIXTURE_EPS_STAR = _eps_from(MIXTURE_POSTERIOR_MEAN)
MIXTURE_EPS_BY_COMPONENT = (MIXTURE_WEIGHT * STATED_EPS_STAR.subs(m, mu_1)
                            + (1 - MIXTURE_WEIGHT) * STATED_EPS_STAR.subs(m, mu_2))


def _normal_cdf(x: sp.Expr, mean: sp.Expr, variance: sp.Expr) -> sp.Expr:
    return (1 + sp.erf((x - mean) / sp.sqrt(2 * variance))) / 2


MIXTURE_POSTERIOR_CDF = (MIXTURE_WEIGHT * _normal_cdf(x_0, _component_mean(mu_1), STATED_VARIANCE)
                         + (1 - MIXTURE_WEIGHT) * _normal_cdf(x_0, _component_mean(mu_2), STATED_VARIANCE))
_SYMMETRIC = {w: sp.Rational(1, 2), mu_1: c, mu_2: -c}
SYMMETRIC_POSTERIOR_MEAN = MIXTURE_POSTERIOR_MEAN.subs(_SYMMETRIC)
TANH_FORM = STATED_GAIN * x_t + (1 - sp.sqrt(a) * STATED_GAIN) * c * sp.tanh(sp.sqrt(a) * c * x_t / R)
TWO_POINT_POSTERIOR_MEAN = TANH_FORM.subs(s, 0)
TWO_POINT_TANH_FORM = c * sp.tanh(sp.sqrt(a) * c * x_t / (1 - a))

_y = sp.Symbol("y", real=True)  # integration variable
_v = sp.Symbol("v", positive=True)
COMPONENT_MEAN_INTEGRAL = sp.integrate(_y * normal_density(_y, m, _v), (_y, -sp.oo, sp.oo))

_DOMAIN = ((x_t, (sp.Integer(-3), sp.Integer(3))), (x_0, (sp.Integer(-3), sp.Integer(3))),
           (m, (sp.Integer(-1), sp.Integer(1))), (mu_1, (sp.Integer(-1), sp.Integer(1))),
           (mu_2, (sp.Integer(-1), sp.Integer(1))), (s, (sp.Rational(1, 10), sp.Integer(2))),
           (c, (sp.Rational(1, 10), sp.Integer(2))))
# The valid domain 0 < a < 1 by a positive parameter p, for the steps that compare positive densities as logs.
_p = sp.Symbol("p", positive=True)
_ON_DOMAIN = {a: 1 / (1 + _p)}


@functools.cache
def derivation() -> Derivation:
    """From Bayes' rule to q(x_0 | x_t) and E[eps | x_t] for Gaussian and two-Gaussian-mixture data."""
    steps = (
        Step(
            "Gaussian data: x_0 = m + s n and x_t = sqrt(a) x_0 + sqrt(1 - a) eps (eq. 4) with independent standard "
            "normals n, eps; by bilinearity Var[x_t] = a s^2 + 1 - a = r, so the evidence is "
            "q(x_t) = N(sqrt(a) m, r).",
            EVIDENCE_VARIANCE_DERIVED,
            R,
            lhs_latex=r"\mathrm{Var}[x_t]",
        ),
        Step(
            "Definition (Bayes' rule: a conditional density is the joint density over the marginal): the prior "
            "N(x_0; m, s^2) times the likelihood N(x_t; sqrt(a) x_0, 1 - a) over the "
            "evidence N(x_t; sqrt(a) m, r).",
            sp.Symbol("q_data_posterior"),
            BAYES_RATIO,
            Check.DEFINITION,
            lhs_latex=r"q(x_0 \mid x_t)",
        ),
        Step(
            "The ratio is a constant times exp(E), E the sum of the three exponents; collected as a quadratic in x_0 "
            "(coefficients read off the polynomial in x_0).",
            EXPONENT,
            A2 * x_0**2 + A1 * x_0 + A0,
            lhs_latex="E",
        ),
        named_step(
            "The x_0^2 coefficient gives the precision: the prior's 1 / s^2 plus the likelihood's a / (1 - a).",
            r"-2 [x_0^2] E",
            PRECISION,
            1 / s**2 + a / (1 - a),
        ),
        named_step(
            "The posterior variance is the inverse precision.",
            r"\mathrm{Var}[x_0 \mid x_t]",
            POSTERIOR_VARIANCE,
            STATED_VARIANCE,
        ),
        named_step(
            "Complete the square: the mean is [x_0] E times the variance, m + g (x_t - sqrt(a) m).",
            r"\mathbb{E}[x_0 \mid x_t]",
            POSTERIOR_MEAN,
            STATED_MEAN,
        ),
        named_step(
            "Its gain on x_t is g = sqrt(a) s^2 / r (finite at a = 0, where the posterior is the prior).",
            "g",
            GAIN,
            STATED_GAIN,
        ),
        named_step(
            "Nothing is left over after completing the square: the x_0-free terms cancel the evidence's exponent.",
            "R",
            REMAINDER,
            sp.Integer(0),
        ),
        named_step(
            "The normalisers match: Z_evidence^2 / (Z_prior^2 Z_likelihood^2) = 1 / (2 pi Var[x_0 | x_t]).",
            r"\frac{2\pi r}{2\pi s^2 \cdot 2\pi (1 - \bar{\alpha}_t)}",
            NORMALISER_SQUARED,
            1 / (2 * sp.pi * STATED_VARIANCE),
        ),
        Step(
            "Theorem assumed (linearity of conditional expectation): E[eps | x_t]: eq. 4 solved for eps, "
            "eps = (x_t - sqrt(a) x_0) / sqrt(1 - a), is linear in x_0, so its expectation given x_t is the same map "
            "of E[x_0 | x_t] (for any data law).",
            sp.Symbol("eps_star"),
            _eps_from(sp.Symbol(r"\mathbb{E}[x_0 \mid x_t]")),
            Check.DEFINITION,
            lhs_latex=r"\mathbb{E}[\epsilon \mid x_t]",
        ),
        Step(
            "Model and definition: mixture data x_0 ~ w N(mu_1, s^2) + (1 - w) N(mu_2, s^2); each component's "
            "evidence is that of (i), "
            "so q(x_t) = w N(x_t; sqrt(a) mu_1, r) + (1 - w) N(x_t; sqrt(a) mu_2, r), and Bayes' rule divides "
            "the mixture prior times the likelihood by it.",
            sp.Symbol("q_mixture_posterior"),
            MIXTURE_BAYES_RATIO,
            Check.DEFINITION,
            lhs_latex=r"q(x_0 \mid x_t)",
        ),
        Step(
            "The first component's posterior weight w N_1 / (w N_1 + (1 - w) N_2) in logistic form "
            "1 / (1 + exp(-l)): the quadratic terms of the two evidences' exponents cancel, leaving l linear in x_t.",
            MIXTURE_WEIGHT,
            BAYES_WEIGHT,
            Check.SIMPLIFY,
            domains=_DOMAIN,
            lhs_latex=r"\pi_1(x_t)",
        ),
        Step(
            "The mean of a Gaussian, from its integral (the mean of a mixture is the weighted sum of its components' "
            "means).",
            COMPONENT_MEAN_INTEGRAL,
            m,
            lhs_latex=r"\int y\, \mathcal{N}(y; m, v)\, dy",
        ),
    )
    results = (
        Step(
            "Gaussian data: the Bayes ratio is exactly N(x_0; m + g (x_t - sqrt(a) m), (1 - a) s^2 / r), "
            "normalisation included: both are positive, so they are compared as logs, on the domain a = 1 / (1 + p), "
            "p > 0, where every factor is positive and the logs split exactly.",
            log_of_positive(BAYES_RATIO.subs(_ON_DOMAIN)),
            log_of_positive(normal_density(x_0, STATED_MEAN, STATED_VARIANCE).subs(_ON_DOMAIN)),
            lhs_latex=r"\log \frac{q(x_0)\, q(x_t \mid x_0)}{q(x_t)}",
        ),
        named_step(
            "Gaussian data: E[eps | x_t] = kappa (x_t - sqrt(a) m), kappa = sqrt(1 - a) / r.",
            r"\epsilon^*(x_t)",
            EPS_STAR,
            STATED_EPS_STAR,
        ),
        Step(
            "Mixture data: the Bayes ratio is exactly the mixture of the components' Gaussian posteriors (i) with "
            "weights pi_1 and 1 - pi_1.",
            MIXTURE_BAYES_RATIO,
            MIXTURE_POSTERIOR_DENSITY,
            Check.RATIONAL,
            domains=_DOMAIN,
            reason="a sum of exponentials divided by a sum of exponentials: the ratio is not a single positive "
            "product, so the logs do not split, and simplify (also with a = 1 / (1 + p) and powsimp) does not "
            "bring the two sides to a common form within 60 s",
            lhs_latex=r"\frac{q(x_0)\, q(x_t \mid x_0)}{q(x_t)}",
        ),
        named_step(
            "Mixture data: its CDF, pi_1 Phi((x_0 - m_1) / sqrt(v)) + (1 - pi_1) Phi((x_0 - m_2) / sqrt(v)), has the "
            "posterior density as its derivative.",
            r"\frac{d}{dx_0} F(x_0 \mid x_t)",
            sp.diff(MIXTURE_POSTERIOR_CDF, x_0),
            MIXTURE_POSTERIOR_DENSITY,
        ),
        named_step(
            "Mixture data: the posterior mean pi_1 m_1 + (1 - pi_1) m_2 is the second component's posterior mean "
            "moved by pi_1 (1 - sqrt(a) g) (mu_1 - mu_2) towards the first.",
            r"\mathbb{E}[x_0 \mid x_t]",
            MIXTURE_POSTERIOR_MEAN,
            _component_mean(mu_2) + MIXTURE_WEIGHT * (1 - sp.sqrt(a) * STATED_GAIN) * (mu_1 - mu_2),
        ),
        named_step(
            "Mixture data: E[eps | x_t] from the posterior mean is the posterior-weighted eps* of the components.",
            r"\epsilon^*(x_t)",
            MIXTURE_EPS_STAR,
            MIXTURE_EPS_BY_COMPONENT,
        ),
        Step(
            "Symmetric mixture (w = 1/2, mu_1 = c = -mu_2): pi_1 - pi_2 = tanh(sqrt(a) c x_t / r), so "
            "E[x_0 | x_t] = g x_t + (1 - sqrt(a) g) c tanh(sqrt(a) c x_t / r) (tanh written through exp).",
            SYMMETRIC_POSTERIOR_MEAN,
            TANH_FORM.rewrite(sp.exp),
            Check.SIMPLIFY,
            domains=_DOMAIN,
            lhs_latex=r"\mathbb{E}[x_0 \mid x_t]",
        ),
        named_step(
            "The two-point law x_0 = +-c (s -> 0): E[x_0 | x_t] = c tanh(sqrt(a) c x_t / (1 - a)).",
            r"\lim_{s \to 0} \mathbb{E}[x_0 \mid x_t]",
            TWO_POINT_POSTERIOR_MEAN,
            TWO_POINT_TANH_FORM,
        ),
    )
    return Derivation(
        key="p",
        title="The data posterior q(x_0 | x_t) of Gaussian and two-Gaussian-mixture data",
        module=__name__,
        summary=(
            "For x_0 ~ N(m, s^2), the evidence q(x_t) = N(sqrt(a) m, a s^2 + 1 - a) follows from eq. 4 by "
            "bilinearity; Bayes' rule divides the prior times the likelihood N(x_t; sqrt(a) x_0, 1 - a) by it. The "
            "exponent, collected as a quadratic in x_0, gives the precision 1 / s^2 + a / (1 - a) and, completing "
            "the square, the mean m + g (x_t - sqrt(a) m); no remainder is left and the normalisers agree, so the "
            "posterior is that Gaussian exactly. E[eps | x_t] is eq. 4 solved for eps at E[x_0 | x_t]. For a mixture "
            "of two Gaussians with a common sd, each component contributes its Gaussian posterior, weighted by "
            "its posterior probability, which is logistic in x_t; the posterior mean of the symmetric mixture "
            "takes the tanh form, and the two-point law is its s -> 0 limit. These are the laws the conformance "
            "suite's calibration case draws x_0 from, and the denoisers it drives the chains with."
        ),
        steps=steps,
        results=results,
    )


_GAUSSIAN_ARGS = (x_t, a, m, s)
_MIXTURE_ARGS = (x_t, a, w, mu_1, mu_2, s)
gaussian_posterior_mean = float64_function(STATED_MEAN, _GAUSSIAN_ARGS, "gaussian_posterior_mean")
gaussian_posterior_variance = float64_function(STATED_VARIANCE, (a, s), "gaussian_posterior_variance")
gaussian_eps_star = float64_function(STATED_EPS_STAR, _GAUSSIAN_ARGS, "gaussian_eps_star")
mixture_weight = float64_function(MIXTURE_WEIGHT, _MIXTURE_ARGS, "mixture_weight")
mixture_posterior_mean = float64_function(MIXTURE_POSTERIOR_MEAN, _MIXTURE_ARGS, "mixture_posterior_mean")
mixture_eps_star = float64_function(MIXTURE_EPS_STAR, _MIXTURE_ARGS, "mixture_eps_star")
mixture_posterior_cdf = float64_function(MIXTURE_POSTERIOR_CDF, (x_0, *_MIXTURE_ARGS), "mixture_posterior_cdf")
mixture_posterior_density = float64_function(MIXTURE_POSTERIOR_DENSITY, (x_0, *_MIXTURE_ARGS),
                                             "mixture_posterior_density")
two_point_posterior_mean = float64_function(TWO_POINT_TANH_FORM, (x_t, a, c), "two_point_posterior_mean")

__all__ = [
    "EPS_STAR",
    "GAIN",
    "MIXTURE_EPS_STAR",
    "MIXTURE_POSTERIOR_CDF",
    "MIXTURE_POSTERIOR_MEAN",
    "MIXTURE_WEIGHT",
    "POSTERIOR_MEAN",
    "POSTERIOR_VARIANCE",
    "SYMMETRIC_POSTERIOR_MEAN",
    "TWO_POINT_POSTERIOR_MEAN",
    "derivation",
    "gaussian_eps_star",
    "gaussian_posterior_mean",
    "gaussian_posterior_variance",
    "mixture_eps_star",
    "mixture_posterior_cdf",
    "mixture_posterior_density",
    "mixture_posterior_mean",
    "mixture_weight",
    "two_point_posterior_mean",
]
