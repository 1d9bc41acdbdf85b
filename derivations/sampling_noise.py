"""(l) Why Algorithm 2 adds sigma_t z, and why z = 0 at t = 1 (the seed's "second question").

The seed asks (取样这个算法 ... 加这个 z 干什么): line 4 already gives the most probable x_{t-1}, the mean; why
perturb it? Answered for data whose reverse process is known exactly, x_0 ~ N(0, s^2) with the exact eps*:

- eps*(x_t) = E[eps | x_t] = sqrt(1 - alpha_bar_t) x_t / v_t, v_t = Var(x_t) = alpha_bar_t s^2 + 1 - alpha_bar_t,
  and line 4's mean with eps* is c_t x_t, c_t = (1 - beta_t / v_t) / sqrt(alpha_t): exactly E[x_{t-1} | x_t] (the
  regression coefficient of derivation (h)).
- If the chain's x_t has variance V, line 4 gives x_{t-1} the variance c_t^2 V + sigma_t^2: sigma_t^2 enters here.
- With sigma_t^2 = Var(x_{t-1} | x_t) (derivation (h)), V = v_t gives v_{t-1}: the chain reproduces every forward
  marginal, down to x_0 ~ N(0, s^2), the data (law of total variance).
- With sigma_t = 0 each step keeps only the fraction 1 - beta_t / v_t of the variance it should produce, and from
  V_T = v_T the chain ends at Var(x_0) = s^2 alpha_bar_T s^2 / (alpha_bar_T s^2 + 1 - alpha_bar_T) (by induction over
  t): for the linear schedule at T = 1000 (alpha_bar_T = 4.0e-5) and s near 1, a standard deviation of ~0.006 s. A
  deterministic map of x_T can only reproduce the data if it is built for that (DDIM, derivation (i)); line 4's mean
  is not.
- z = 0 at t = 1: the posterior q(x_0 | x_1, x_0) has variance beta_tilde_1 = 0 (alpha_bar_0 = 1): given the x_0
  the bound conditions on nothing is left to draw. The last step returns mu_theta(x_1, 1), the mean of the decoder
  p_theta(x_0 | x_1) = N(mu_theta(x_1, 1), sigma_1^2) discretised (Ho et al. eq. 13), whose sigma_1^2 the bound
  scores in L_0. For the Gaussian data, leaving out the last noise loses the fraction beta_1 / (alpha_1 s^2 + beta_1)
  of the data variance (about 1e-4 / s^2 at beta_1 = 1e-4).
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation, posterior, reverse_variance
from derivations.chain import Check, Derivation, Step
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import (
    AT_T1,
    alpha_bar_prev,
    alpha_bar_t,
    alpha_t,
    beta_t,
    eps,
    eps_theta,
    linear_covariance,
    sigma2,
    x_t,
)

S2 = reverse_variance.DATA_VARIANCE  # s^2
z_0 = sp.Symbol("z_0", real=True)  # x_0 = s z_0
z = sp.Symbol("z", real=True)  # Algorithm 2's fresh noise, independent of x_t
u = sp.Symbol("u", real=True)  # x_t of the chain = sqrt(V) u, u standard normal
V = sp.Symbol("V", positive=True)  # the variance of the chain's x_t
alpha_bar_T = sp.Symbol(r"\bar{\alpha}_T", positive=True)
v_T = sp.Symbol("v_T", positive=True)  # Var(x_T) of the forward process
W = sp.Symbol("W_t", positive=True)  # Var(x_t of the noiseless chain) / v_t


# The forward process for N(0, s^2) data: x_t = sqrt(alpha_bar_t) s z_0 + sqrt(1 - alpha_bar_t) eps.
X_T = sp.sqrt(alpha_bar_t) * sp.sqrt(S2) * z_0 + sp.sqrt(1 - alpha_bar_t) * eps
VAR_T = linear_covariance(X_T, X_T, (z_0, eps))
VAR_PREV = alpha_bar_prev * S2 + 1 - alpha_bar_prev  # v_{t-1}: the same at t - 1 (derivation (a))
COV_EPS_T = linear_covariance(eps, X_T, (z_0, eps))
EPS_STAR_COEF = sp.factor(COV_EPS_T / VAR_T)  # eps*(x_t) = EPS_STAR_COEF x_t (Gaussian conditioning)

# Algorithm 2 line 4 with eps_theta = eps*: the eps-parameterised mean of derivation (d).
MEAN_WITH_EPS_STAR = eps_parameterisation.MU_THETA.subs(eps_theta, EPS_STAR_COEF * x_t)
MEAN_COEF = sp.factor(sp.cancel(sp.expand(MEAN_WITH_EPS_STAR).coeff(x_t)))  # c_t
REGRESSION_COEF = reverse_variance.K_STAR.subs(reverse_variance.DATA_VARIANCE, S2)  # Cov(x_{t-1}, x_t) / Var(x_t)

# One step of the chain from x_t = sqrt(V) u: x_{t-1} = c_t x_t + sigma_t z.
STEP = MEAN_COEF * sp.sqrt(V) * u + sp.sqrt(sigma2) * z
VAR_AFTER_STEP = sp.factor(linear_covariance(STEP, STEP, (u, z)))
SIGMA2_STAR = reverse_variance.SIGMA2_OPTIMAL_GAUSSIAN.subs(reverse_variance.DATA_VARIANCE, S2)
VAR_AFTER_EXACT_STEP = sp.factor(sp.cancel(VAR_AFTER_STEP.subs({V: VAR_T, sigma2: SIGMA2_STAR})))
# sigma_t = 0: the fraction of v_{t-1} one noiseless step keeps from V = v_t.
NOISELESS_KEPT = sp.factor(sp.cancel(VAR_AFTER_STEP.subs({V: VAR_T, sigma2: 0}) / VAR_PREV))

# Induction over t for the noiseless chain started at V_T = v_T: W_t = V_t / v_t obeys W_{t-1} = kept_t W_t with
# W_T = 1; the claim W_t = (alpha_bar_T / alpha_bar_t) (v_t / v_T) holds at t = T and is carried from t to t - 1.
def _claim(alpha_bar: sp.Expr, v: sp.Expr) -> sp.Expr:
    return alpha_bar_T / alpha_bar * v / v_T


CLAIM_NOW = _claim(alpha_bar_t, VAR_T)
CLAIM_CARRIED = sp.factor(sp.cancel(NOISELESS_KEPT * CLAIM_NOW))
CLAIM_AT_PREV = _claim(alpha_bar_prev, VAR_PREV)
# At t = 0 (alpha_bar_0 = 1, v_0 = s^2) with v_T = alpha_bar_T s^2 + 1 - alpha_bar_T: Var(x_0) / s^2.
NOISELESS_FINAL_FRACTION = sp.factor(_claim(1, S2).subs(v_T, alpha_bar_T * S2 + 1 - alpha_bar_T))

# t = 1: alpha_bar_0 = 1. The posterior variance, and the variance lost by z = 0 in the last step.
POSTERIOR_VARIANCE_AT_1 = sp.simplify(posterior.VARIANCE.subs(alpha_bar_prev, 1))
LAST_STEP_KEPT = sp.factor(NOISELESS_KEPT.subs(alpha_bar_prev, 1))
LAST_STEP_LOST = sp.factor(1 - LAST_STEP_KEPT)


@functools.cache
def derivation() -> Derivation:
    """From the exact eps* of Gaussian data to the variance recursion with and without sigma_t z."""
    v_prev = VAR_PREV
    v_now = alpha_bar_t * S2 + 1 - alpha_bar_t
    steps = (
        Step(
            "Model: data x_0 = s z_0 ~ N(0, s^2), and the forward marginal of derivation (a) (proved there): x_t is "
            "linear in the "
            "independent standard normals z_0 and eps.",
            x_t,
            X_T,
            Check.DEFINITION,
        ),
        named_step(
            "Var(x_t) = v_t, the sum of squared noise coefficients.",
            "v_t",
            VAR_T,
            v_now,
        ),
        named_step(
            "eps* = E[eps | x_t] = Cov(eps, x_t) / Var(x_t) x_t (Gaussian conditioning, as in (h)): the network "
            "that minimises L_simple (its minimiser is the conditional mean).",
            r"\epsilon^*(x_t) / x_t",
            EPS_STAR_COEF,
            sp.sqrt(1 - alpha_bar_t) / v_now,
        ),
        named_step(
            "Algorithm 2, line 4 with eps_theta = eps* (the eps-parameterised mean of derivation (d)): a multiple "
            "c_t of x_t ...",
            "c_t",
            MEAN_COEF,
            (1 - beta_t / v_now) / sp.sqrt(alpha_t),
        ),
        named_step(
            "... which is the regression coefficient Cov(x_{t-1}, x_t) / Var(x_t) of derivation (h): line 4's "
            "mean is E[x_{t-1} | x_t], the most probable x_{t-1}, as the seed says.",
            "c_t",
            MEAN_COEF,
            REGRESSION_COEF,
        ),
        Step(
            "Model: one step of the chain from an x_t of variance V (x_t = sqrt(V) u), with fresh z independent of it.",
            sp.Symbol("x_{t-1}"),
            STEP,
            Check.DEFINITION,
        ),
        named_step(
            "Its variance: the recursion in which sigma_t^2 enters.",
            r"\operatorname{Var}(x_{t-1})",
            VAR_AFTER_STEP,
            MEAN_COEF**2 * V + sigma2,
        ),
        named_step(
            "Without noise (sigma_t = 0), from V = v_t one step keeps only this fraction of v_{t-1} ...",
            r"\operatorname{Var}(x_{t-1}) / v_{t-1} \big|_{\sigma_t = 0}",
            NOISELESS_KEPT,
            1 - beta_t / v_now,
        ),
        named_step(
            "... and the shortfall is exactly the conditional variance of (h) over v_{t-1}: the noise supplies "
            "E[Var(x_{t-1} | x_t)], the mean Var(E[x_{t-1} | x_t]) (law of total variance).",
            r"1 - \operatorname{Var}(x_{t-1}) / v_{t-1} \big|_{\sigma_t = 0}",
            1 - NOISELESS_KEPT,
            SIGMA2_STAR / v_prev,
        ),
        named_step(
            "Noiseless chain from V_T = v_T: the claim W_t = Var(x_t) / v_t = (alpha_bar_T / alpha_bar_t) "
            "(v_t / v_T) holds at t = T ...",
            r"W_T",
            _claim(alpha_bar_T, v_T),
            1,
        ),
        named_step(
            "... and one step carries it from t to t - 1 (W_{t-1} = kept_t W_t), so it holds for every t.",
            r"W_{t-1}",
            CLAIM_CARRIED,
            CLAIM_AT_PREV,
        ),
    )
    results = (
        named_step(
            "With sigma_t^2 = Var(x_{t-1} | x_t) (derivation (h)) a step from V = v_t produces v_{t-1}: by "
            "induction from x_T ~ N(0, v_T) Algorithm 2 reproduces every marginal and ends at N(0, s^2), the data.",
            r"\operatorname{Var}(x_{t-1}) \big|_{V = v_t,\ \sigma_t^2 = \sigma^{*2}_t}",
            VAR_AFTER_EXACT_STEP,
            v_prev,
        ),
        named_step(
            "Without sigma_t z (every step noiseless) the samples' variance is this fraction of the data's: "
            "alpha_bar_T s^2 / v_T, ~4e-5 s^2 for the linear schedule at T = 1000: the chain collapses onto the "
            "mean (the seed's 'every result the same').",
            r"\operatorname{Var}(x_0) / s^2 \big|_{\sigma = 0}",
            NOISELESS_FINAL_FRACTION,
            alpha_bar_T * S2 / (alpha_bar_T * S2 + 1 - alpha_bar_T),
        ),
        named_step(
            "z = 0 at t = 1: the posterior q(x_0 | x_1, x_0) has variance beta_tilde_1 = 0 (alpha_bar_0 = 1), so "
            "the last step returns mu_theta(x_1, 1), the decoder's mean; the decoder's sigma_1^2 is scored in L_0.",
            r"\tilde\beta_1",
            POSTERIOR_VARIANCE_AT_1,
            0,
        ),
        named_step(
            "For the Gaussian data, z = 0 at t = 1 loses this fraction of the data variance (beta_1 / s^2 to "
            "first order).",
            r"1 - \operatorname{Var}(x_0) / s^2 \big|_{z = 0 \text{ at } t = 1}",
            LAST_STEP_LOST,
            beta_t / ((1 - beta_t) * S2 + beta_t),
            display=AT_T1,
        ),
    )
    return Derivation(
        key="l",
        title="Why Algorithm 2 adds sigma_t z, and why z = 0 at t = 1",
        module=__name__,
        summary=(
            "The seed's question: line 4 of Algorithm 2 already gives the most probable x_{t-1}, so why add sigma_t "
            "z? For data x_0 ~ N(0, s^2) the optimal eps* is linear in x_t, and line 4's mean with it is exactly "
            "E[x_{t-1} | x_t]. A step from an x_t of variance V gives x_{t-1} the variance c_t^2 V + sigma_t^2. "
            "The mean alone carries Var(E[x_{t-1} | x_t]); the noise must supply E[Var(x_{t-1} | x_t)], the "
            "conditional variance of derivation (h). With it the chain reproduces every forward marginal and ends "
            "at the data law; without it each step keeps the fraction 1 - beta_t / v_t, and by induction the "
            "samples end with the fraction alpha_bar_T s^2 / v_T of the data variance (~4e-5 s^2 at T = 1000): "
            "they collapse onto the mean. At t = 1 the posterior variance beta_tilde_1 is 0, so the last step "
            "returns the decoder's mean mu_theta(x_1, 1), whose variance sigma_1^2 the bound scores in L_0."
        ),
        steps=steps,
        results=results,
    )


noiseless_final_fraction = float64_function(NOISELESS_FINAL_FRACTION, (alpha_bar_T, S2), "noiseless_final_fraction")
noiseless_step_kept = float64_function(NOISELESS_KEPT, (beta_t, alpha_bar_prev, S2), "noiseless_step_kept")
last_step_lost = float64_function(LAST_STEP_LOST, (beta_t, S2), "last_step_lost")

__all__ = [
    "LAST_STEP_LOST",
    "NOISELESS_FINAL_FRACTION",
    "NOISELESS_KEPT",
    "VAR_AFTER_EXACT_STEP",
    "VAR_AFTER_STEP",
    "derivation",
    "last_step_lost",
    "noiseless_final_fraction",
    "noiseless_step_kept",
]
