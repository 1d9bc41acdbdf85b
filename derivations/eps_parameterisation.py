"""(d) The eps-parameterised posterior mean: mu = (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t).

Ho et al. (2020), eq. (10) and Algorithm 2, line 4 (the seed writes 1 - alpha_t for beta_t). The
reparameterised forward sample x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps of derivation (a)
is inverted for x_0, and that x_0 is substituted into the posterior mean of derivation (b); the
x_0-dependence disappears and the mean becomes a function of x_t and the noise eps alone. Replacing eps
by the network's prediction eps_theta(x_t, t) gives the model mean mu_theta used for sampling.
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import forward_marginal, posterior
from derivations.chain import Check, Derivation, Step
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import alpha_bar, alpha_bar_prev, alpha_bar_t, alpha_t, beta_t, eps, eps_theta, x_0, x_t

# x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, from derivation (a), at step t.
FORWARD_SAMPLE = forward_marginal.X_T_REPARAMETERISED.subs(alpha_bar, alpha_bar_t)
# Invert it for x_0 (it is linear in x_0 with a nonzero coefficient: exactly one solution).
(X0_FROM_EPS,) = sp.solve(sp.Eq(x_t, FORWARD_SAMPLE), x_0)
_x0_expanded = sp.expand(X0_FROM_EPS)
X0_FROM_EPS_COEF_XT = sp.factor(_x0_expanded.coeff(x_t))
X0_FROM_EPS_COEF_EPS = sp.factor(_x0_expanded.coeff(eps))

# Substitute into the posterior mean of derivation (b) and collect in x_t and eps.
MEAN_SUBSTITUTED = posterior.POSTERIOR_MEAN.subs(x_0, X0_FROM_EPS)
_mean_expanded = sp.expand(MEAN_SUBSTITUTED)
_RAW_COEF_XT = _mean_expanded.coeff(x_t)  # c0 / sqrt(alpha_bar_t) + ct, before simplifying
_RAW_COEF_EPS = _mean_expanded.coeff(eps)  # -c0 sqrt(1 - alpha_bar_t) / sqrt(alpha_bar_t)
EPS_MEAN_COEF_XT = sp.factor(sp.cancel(_RAW_COEF_XT))
EPS_MEAN_COEF_EPS = sp.factor(sp.cancel(_RAW_COEF_EPS))
EPS_MEAN = EPS_MEAN_COEF_XT * x_t + EPS_MEAN_COEF_EPS * eps
MU_THETA = EPS_MEAN.subs(eps, eps_theta)

# The paper's forms (Algorithm 2, line 4; eq. 10).
PAPER_EPS_MEAN = (x_t - beta_t / sp.sqrt(1 - alpha_bar_t) * eps) / sp.sqrt(alpha_t)
PAPER_EPS_MEAN_COEF_XT = 1 / sp.sqrt(alpha_t)
PAPER_EPS_MEAN_COEF_EPS = -beta_t / (sp.sqrt(alpha_t) * sp.sqrt(1 - alpha_bar_t))
PAPER_X0_FROM_EPS_COEF_XT = 1 / sp.sqrt(alpha_bar_t)
PAPER_X0_FROM_EPS_COEF_EPS = -sp.sqrt(1 - alpha_bar_t) / sp.sqrt(alpha_bar_t)


@functools.cache
def derivation() -> Derivation:
    """The chain of steps from the posterior mean to Algorithm 2, line 4."""
    steps = (
        Step(
            "Theorem assumed (derivation (a), proved there): the reparameterised forward sample, x_t given x_0 and "
            "the noise eps ~ N(0, 1) "
            "that Algorithm 1 draws.",
            x_t,
            FORWARD_SAMPLE,
            Check.DEFINITION,
        ),
        named_step(
            "Solve it for x_0 (sympy.solve; linear in x_0 with coefficient sqrt(alpha_bar_t) > 0).",
            "x_0",
            X0_FROM_EPS,
            (x_t - sp.sqrt(1 - alpha_bar_t) * eps) / sp.sqrt(alpha_bar_t),
        ),
        named_step(
            "Substitute this x_0 into the posterior mean mu_tilde_t(x_t, x_0) of derivation (b) and expand: "
            "x_t collects c_0 / sqrt(alpha_bar_t) + c_t, eps collects -c_0 sqrt(1 - alpha_bar_t) / "
            "sqrt(alpha_bar_t).",
            r"\tilde{\mu}_t\left(x_t, x_0(x_t, \epsilon)\right)",
            MEAN_SUBSTITUTED,
            _RAW_COEF_XT * x_t + _RAW_COEF_EPS * eps,
        ),
        Step(
            "The x_t coefficient: over the common denominator sqrt(alpha_t) (1 - alpha_bar_t) the numerator is "
            "beta_t + alpha_t (1 - alpha_bar_{t-1}) = 1 - alpha_bar_t, which cancels.",
            _RAW_COEF_XT,
            (beta_t + alpha_t * (1 - alpha_bar_prev)) / (sp.sqrt(alpha_t) * (1 - alpha_bar_t)),
        ),
        Step(
            "So the x_t coefficient is 1 / sqrt(alpha_t).",
            (beta_t + alpha_t * (1 - alpha_bar_prev)) / (sp.sqrt(alpha_t) * (1 - alpha_bar_t)),
            PAPER_EPS_MEAN_COEF_XT,
        ),
        Step(
            "The eps coefficient: sqrt(alpha_bar_{t-1}) / sqrt(alpha_bar_t) = 1 / sqrt(alpha_t) and "
            "sqrt(1 - alpha_bar_t) / (1 - alpha_bar_t) = 1 / sqrt(1 - alpha_bar_t).",
            _RAW_COEF_EPS,
            PAPER_EPS_MEAN_COEF_EPS,
        ),
    )
    results = (
        named_step(
            "The eps-parameterised mean (eq. 10, Algorithm 2 line 4, where the seed writes 1 - alpha_t for "
            "beta_t).",
            r"\tilde{\mu}_t",
            EPS_MEAN,
            PAPER_EPS_MEAN,
        ),
        named_step(
            "Its x_t coefficient.",
            r"[x_t]\, \tilde{\mu}_t",
            EPS_MEAN_COEF_XT,
            PAPER_EPS_MEAN_COEF_XT,
        ),
        named_step(
            "Its eps coefficient.",
            r"[\epsilon]\, \tilde{\mu}_t",
            EPS_MEAN_COEF_EPS,
            PAPER_EPS_MEAN_COEF_EPS,
        ),
        named_step(
            "x_0 recovered from x_t and eps: coefficient of x_t (used to predict x_0 from eps_theta).",
            r"[x_t]\, x_0",
            X0_FROM_EPS_COEF_XT,
            PAPER_X0_FROM_EPS_COEF_XT,
        ),
        named_step(
            "x_0 recovered from x_t and eps: coefficient of eps.",
            r"[\epsilon]\, x_0",
            X0_FROM_EPS_COEF_EPS,
            PAPER_X0_FROM_EPS_COEF_EPS,
        ),
        named_step(
            "The model mean: the same expression with the network's prediction eps_theta(x_t, t) for eps.",
            r"\mu_\theta(x_t, t)",
            MU_THETA,
            PAPER_EPS_MEAN.subs(eps, eps_theta),
        ),
    )
    return Derivation(
        key="d",
        title="The eps-parameterised mean (Algorithm 2, line 4)",
        module=__name__,
        summary=(
            "The forward sample x_t = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps is solved for x_0, "
            "and the result substituted into the posterior mean mu_tilde_t(x_t, x_0). The x_t coefficient "
            "collapses to 1 / sqrt(alpha_t) because beta_t + alpha_t (1 - alpha_bar_{t-1}) = 1 - alpha_bar_t, "
            "and the eps coefficient to -beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)), so the posterior "
            "mean is (x_t - beta_t / sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_t). A network that predicts eps "
            "therefore determines the reverse mean mu_theta, which is line 4 of Algorithm 2."
        ),
        steps=steps,
        results=results,
    )


_ARGS = (beta_t, alpha_bar_prev)
eps_mean_coef_xt = float64_function(EPS_MEAN_COEF_XT, _ARGS, "eps_mean_coef_xt")
eps_mean_coef_eps = float64_function(EPS_MEAN_COEF_EPS, _ARGS, "eps_mean_coef_eps")
x0_from_eps_coef_xt = float64_function(X0_FROM_EPS_COEF_XT, _ARGS, "x0_from_eps_coef_xt")
x0_from_eps_coef_eps = float64_function(X0_FROM_EPS_COEF_EPS, _ARGS, "x0_from_eps_coef_eps")
# Whole linear maps, for tests that compare them (tests/core/test_diffusion.py): mu_theta(x_t, eps_theta)
# and x_0(x_t, eps).
eps_mean = float64_function(MU_THETA, (x_t, eps_theta, *_ARGS), "eps_mean")
x0_from_eps = float64_function(X0_FROM_EPS, (x_t, eps, *_ARGS), "x0_from_eps")

__all__ = [
    "EPS_MEAN",
    "EPS_MEAN_COEF_EPS",
    "EPS_MEAN_COEF_XT",
    "MU_THETA",
    "X0_FROM_EPS_COEF_EPS",
    "X0_FROM_EPS_COEF_XT",
    "derivation",
    "eps_mean",
    "eps_mean_coef_eps",
    "eps_mean_coef_xt",
    "x0_from_eps",
    "x0_from_eps_coef_eps",
    "x0_from_eps_coef_xt",
]
