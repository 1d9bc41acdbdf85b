"""(h) The two fixed reverse variances of Ho et al. (2020), section 3.2: sigma_t^2 = beta_t or beta_tilde_t.

The reverse step p(x_{t-1} | x_t) = N(mu, sigma_t^2) with the best mean is closest to the true reverse
conditional q(x_{t-1} | x_t) (in expected KL) when sigma_t^2 is the variance of that conditional. For
data x_0 ~ N(0, s^2) the pair (x_{t-1}, x_t) is jointly Gaussian, and the conditional variance is

    sigma*_t^2(s^2) = beta_t v / (alpha_t v + beta_t),   v = alpha_bar_{t-1} s^2 + 1 - alpha_bar_{t-1},

which is beta_t at s^2 = 1 (x_0 ~ N(0, I): the forward variance) and beta_tilde_t as s^2 -> 0
(a single deterministic x_0: the posterior variance of derivation (b)).
It increases with s^2, so for data of variance at most 1 the optimum lies between the two.
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import forward_marginal, gaussian_kl, posterior
from derivations.chain import Check, Derivation, Step
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import (
    alpha_bar,
    alpha_bar_prev,
    alpha_bar_t,
    alpha_t,
    beta_t,
    linear_covariance,
    sigma2,
    x_prev,
    x_t,
)

# Variance s^2 of the data distribution x_0 ~ N(0, s^2).
DATA_VARIANCE = sp.Symbol("s^2", positive=True)
# Independent standard normals: the data's z_0, the carried forward noise, the fresh noise of step t.
z_0 = sp.Symbol("z_0", real=True)
eps_carried = sp.Symbol(r"\bar{\epsilon}_{t-1}", real=True)
eps_fresh = sp.Symbol(r"\epsilon_t", real=True)
_NOISES = (z_0, eps_carried, eps_fresh)
k = sp.Symbol("k", real=True)  # regression coefficient of x_{t-1} on x_t
v = sp.Symbol("v", positive=True)  # a Gaussian's variance in the KL lemma


def _covariance(a: sp.Expr, b: sp.Expr) -> sp.Expr:
    """Cov(a, b) for a, b linear in the independent standard normals `_NOISES`."""
    return linear_covariance(a, b, _NOISES)


# x_0 = s z_0; x_{t-1} from derivation (a); one forward step to x_t.
X_0 = sp.sqrt(DATA_VARIANCE) * z_0
X_PREV = (
    forward_marginal.MEAN_COEF.subs(alpha_bar, alpha_bar_prev) * X_0
    + sp.sqrt(forward_marginal.VARIANCE.subs(alpha_bar, alpha_bar_prev)) * eps_carried
)
X_T = sp.sqrt(alpha_t) * X_PREV + sp.sqrt(beta_t) * eps_fresh

VAR_PREV = _covariance(X_PREV, X_PREV)
COV_PREV_T = _covariance(X_PREV, X_T)
VAR_T = _covariance(X_T, X_T)

# Gaussian conditioning by regression: x_{t-1} - k x_t is uncorrelated with x_t for the k solving
# Cov(x_{t-1} - k x_t, x_t) = 0; jointly Gaussian and uncorrelated means independent, so
# Var(x_{t-1} | x_t) = Var(x_{t-1} - k x_t) whatever the value of x_t.
RESIDUAL_COV = _covariance(X_PREV - k * X_T, X_T)
(K_STAR,) = sp.solve(sp.Eq(RESIDUAL_COV, 0), k)
K_STAR = sp.factor(K_STAR)
RESIDUAL_VARIANCE = _covariance(X_PREV - k * X_T, X_PREV - k * X_T)  # quadratic in k
CONDITIONAL_VARIANCE = RESIDUAL_VARIANCE.subs(k, K_STAR)
SIGMA2_OPTIMAL_GAUSSIAN = sp.factor(sp.cancel(CONDITIONAL_VARIANCE))

# The paper's two choices, as the two ends.
SIGMA2_LARGE = sp.factor(SIGMA2_OPTIMAL_GAUSSIAN.subs(DATA_VARIANCE, 1))
SIGMA2_SMALL = sp.factor(sp.limit(SIGMA2_OPTIMAL_GAUSSIAN, DATA_VARIANCE, 0))
D_SIGMA2_D_DATA_VARIANCE = sp.factor(sp.diff(SIGMA2_OPTIMAL_GAUSSIAN, DATA_VARIANCE))

# KL lemma: the reverse-step variance minimising KL(N(m, v) || N(m, sigma^2)), from derivation (c)'s Gaussian KL at
# equal means (not typed in: KL_SAME_MEAN_PAPER is the form it is checked against).
_m = sp.Symbol("m", real=True)
KL_SAME_MEAN = gaussian_kl.NORMAL_KL.subs(
    {gaussian_kl.MEAN_1: _m, gaussian_kl.MEAN_2: _m, gaussian_kl.VAR_1: v, gaussian_kl.VAR_2: sigma2}
)
KL_SAME_MEAN_PAPER = (sp.log(sigma2 / v) + v / sigma2 - 1) / 2
(KL_MINIMISER,) = sp.solve(sp.Eq(sp.diff(KL_SAME_MEAN, sigma2), 0), sigma2)
KL_SECOND_DERIVATIVE_AT_MINIMISER = sp.diff(KL_SAME_MEAN, sigma2, 2).subs(sigma2, KL_MINIMISER)


@functools.cache
def derivation() -> Derivation:
    """The chain of steps from the joint Gaussian of (x_{t-1}, x_t) to the two fixed variances."""
    vp = alpha_bar_prev * DATA_VARIANCE + 1 - alpha_bar_prev  # Var(x_{t-1}) as the paper would write it
    steps = (
        Step(
            "Which sigma_t^2 is best: for a fixed mean m, KL(N(m, v) || N(m, sigma^2)) as a function of "
            "sigma^2: the Gaussian KL of derivation (c) at equal means (derived there from its integral).",
            KL_SAME_MEAN,
            KL_SAME_MEAN_PAPER,
            lhs_latex=r"\mathrm{KL}\left(\mathcal{N}(m, v) \,\|\, \mathcal{N}(m, \sigma_t^2)\right)",
        ),
        named_step(
            "Setting the derivative in sigma^2 to zero (sympy.solve) gives sigma^2 = v: the best reverse "
            "variance is the variance of the true reverse conditional q(x_{t-1} | x_t) ...",
            r"\arg\min_{\sigma_t^2} \mathrm{KL}",
            KL_MINIMISER,
            v,
        ),
        named_step(
            "... and it is a minimum: the second derivative there is 1 / (2 v^2) > 0.",
            r"\partial^2_{\sigma_t^2} \mathrm{KL}\big|_{\sigma_t^2 = v}",
            KL_SECOND_DERIVATIVE_AT_MINIMISER,
            1 / (2 * v**2),
        ),
        Step(
            "Model: the data x_0 = s z_0 ~ N(0, s^2); x_{t-1} written with q(x_{t-1} | x_0) of derivation (a) "
            "and x_t with one forward step: both are linear in independent standard normals.",
            x_prev,
            X_PREV,
            Check.DEFINITION,
        ),
        Step(
            "Model: one forward step from x_{t-1}.",
            x_t,
            X_T,
            Check.DEFINITION,
        ),
        named_step(
            "Var(x_{t-1}): the sum of squared noise coefficients.",
            r"\operatorname{Var}(x_{t-1})",
            VAR_PREV,
            vp,
        ),
        named_step(
            "Cov(x_{t-1}, x_t) = sqrt(alpha_t) Var(x_{t-1}): the sum of products of noise coefficients.",
            r"\operatorname{Cov}(x_{t-1}, x_t)",
            COV_PREV_T,
            sp.sqrt(alpha_t) * vp,
        ),
        named_step(
            "Var(x_t) = alpha_t Var(x_{t-1}) + beta_t, which is alpha_bar_t s^2 + 1 - alpha_bar_t "
            "(at s^2 = 0 the forward marginal's variance 1 - alpha_bar_t).",
            r"\operatorname{Var}(x_t)",
            VAR_T,
            alpha_bar_t * DATA_VARIANCE + 1 - alpha_bar_t,
        ),
        named_step(
            "Gaussian conditioning by regression: Cov(x_{t-1} - k x_t, x_t) = 0 is solved by "
            "k = Cov(x_{t-1}, x_t) / Var(x_t); the residual is then independent of x_t (jointly Gaussian and "
            "uncorrelated).",
            "k",
            K_STAR,
            COV_PREV_T / VAR_T,
        ),
        named_step(
            "The residual's variance, by bilinearity of the covariance: a quadratic in k.",
            r"\operatorname{Var}(x_{t-1} - k x_t)",
            RESIDUAL_VARIANCE,
            VAR_PREV - 2 * k * COV_PREV_T + k**2 * VAR_T,
        ),
        named_step(
            "At k = Cov(x_{t-1}, x_t) / Var(x_t): Var(x_{t-1} | x_t) = Var(x_{t-1}) - Cov(x_{t-1}, x_t)^2 / Var(x_t), "
            "the same for every x_t.",
            r"\operatorname{Var}(x_{t-1} \mid x_t)",
            CONDITIONAL_VARIANCE,
            VAR_PREV - COV_PREV_T**2 / VAR_T,
        ),
        Step(
            "With Var(x_t) = alpha_t Var(x_{t-1}) + beta_t this is beta_t Var(x_{t-1}) / Var(x_t).",
            VAR_PREV - COV_PREV_T**2 / VAR_T,
            beta_t * vp / (alpha_t * vp + beta_t),
        ),
        named_step(
            "The optimal variance increases with the data variance s^2 (its derivative is a square over a "
            "square, times alpha_bar_{t-1} > 0), so for s^2 in [0, 1] it lies between the two ends below.",
            r"\frac{\partial \sigma^{*2}_t}{\partial s^2}",
            D_SIGMA2_D_DATA_VARIANCE,
            alpha_bar_prev * beta_t**2 / (alpha_t * vp + beta_t) ** 2,
        ),
    )
    results = (
        named_step(
            "The optimal reverse variance for x_0 ~ N(0, s^2).",
            r"\sigma^{*2}_t(s^2)",
            SIGMA2_OPTIMAL_GAUSSIAN,
            beta_t * vp / (alpha_t * vp + beta_t),
        ),
        named_step(
            "s^2 = 1 (x_0 ~ N(0, I)): sigma_t^2 = beta_t, the forward variance.",
            r"\sigma^{*2}_t(1)",
            SIGMA2_LARGE,
            beta_t,
        ),
        named_step(
            "s^2 -> 0 (a single deterministic x_0): sigma_t^2 = beta_tilde_t.",
            r"\lim_{s^2 \to 0} \sigma^{*2}_t(s^2)",
            SIGMA2_SMALL,
            (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t,
        ),
        named_step(
            "beta_tilde_t is the variance of the posterior q(x_{t-1} | x_t, x_0) of derivation (b): "
            "conditioning on a known x_0 is the same as data with no spread.",
            r"\lim_{s^2 \to 0} \sigma^{*2}_t(s^2)",
            SIGMA2_SMALL,
            posterior.VARIANCE,
        ),
    )
    return Derivation(
        key="h",
        title="The two fixed reverse variances sigma_t^2 = beta_t and beta_tilde_t",
        module=__name__,
        summary=(
            "For a fixed mean, the KL from a Gaussian of variance v to one of variance sigma_t^2 is smallest "
            "at sigma_t^2 = v, so the best fixed reverse variance is the variance of the true reverse "
            "conditional q(x_{t-1} | x_t). For data x_0 ~ N(0, s^2) the pair (x_{t-1}, x_t) is jointly "
            "Gaussian; its variances and covariance are read off the noise coefficients, and regressing "
            "x_{t-1} on x_t gives the conditional variance beta_t v / (alpha_t v + beta_t) with "
            "v = Var(x_{t-1}). At s^2 = 1 this is beta_t, the forward variance; as s^2 -> 0 (a "
            "deterministic x_0) it is beta_tilde_t, the posterior variance of derivation (b). The optimum grows "
            "with s^2, so beta_tilde_t and beta_t bracket it for data of variance at most 1."
        ),
        steps=steps,
        results=results,
    )


_ARGS = (beta_t, alpha_bar_prev)
sigma2_large = float64_function(SIGMA2_LARGE, _ARGS, "sigma2_large")
sigma2_small = float64_function(SIGMA2_SMALL, _ARGS, "sigma2_small")
# The names tests/core/test_diffusion.py uses for the two choices (ddpm.core.diffusion.ReverseVariance).
sigma2_beta = sigma2_large
sigma2_beta_tilde = sigma2_small
sigma2_optimal_gaussian = float64_function(
    SIGMA2_OPTIMAL_GAUSSIAN, (beta_t, alpha_bar_prev, DATA_VARIANCE), "sigma2_optimal_gaussian"
)

__all__ = [
    "DATA_VARIANCE",
    "SIGMA2_LARGE",
    "SIGMA2_OPTIMAL_GAUSSIAN",
    "SIGMA2_SMALL",
    "derivation",
    "sigma2_beta",
    "sigma2_beta_tilde",
    "sigma2_large",
    "sigma2_optimal_gaussian",
    "sigma2_small",
]
