"""(o) The three parameterisations of the reverse mean: eps, x_0 and v, and what each becomes at zero terminal SNR.

A network may predict the noise eps (Ho et al. 2020), the data x_0, or the velocity v of Salimans & Ho (2022,
"Progressive distillation", sec. 4 and app. D). All three are linear functions of each other given x_t, through
derivation (a)'s forward sample x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps and the definition
v = sqrt(abar) eps - sqrt(1 - abar) x_0 (abar = alpha_bar_t); (x_0, eps) -> (x_t, v) is a rotation, since
abar + (1 - abar) = 1. Each conversion is solved for, not assumed:

    x_0 = (x_t - sqrt(1 - abar) eps) / sqrt(abar)       eps = (x_t - sqrt(abar) x_0) / sqrt(1 - abar)
    x_0 = sqrt(abar) x_t - sqrt(1 - abar) v              eps = sqrt(abar) v + sqrt(1 - abar) x_t
    v   = (eps - sqrt(1 - abar) x_t) / sqrt(abar)        v   = (sqrt(abar) x_t - x_0) / sqrt(1 - abar)

The reverse mean of each is the strided posterior mean of derivation (i) at the x_0 it predicts; over a stride
t -> s (abar_t < abar_s; s = t - 1 gives Algorithm 2, line 4, and derivation (b)'s posterior mean) the v form is
sqrt(abar_t / abar_s) x_t - sqrt(abar_s) (1 - abar_t / abar_s) / sqrt(1 - abar_t) v. DDIM's eq. (12) is written in
the x_0 and v forms the same way. At abar_T = 0 (zero terminal SNR, Lin et al. 2023) the v and x_0 forms stay finite
(x0_hat = -v, mean -sqrt(abar_s) v), while the eps form has no x_0 estimate (sqrt(abar) x0_hat = x_T - eps = 0 for
every x0_hat) and Algorithm 2's eps-mean divides by sqrt(alpha_T) = 0. Given x_t, the errors of the x_0 and v
predictions are -sqrt((1 - abar) / abar) and 1 / sqrt(abar) times the eps error, so the x_0 loss weighted by
SNR = abar / (1 - abar) and the v loss weighted by SNR / (SNR + 1) = abar are the eps loss (the weights of lucidrains'
denoising-diffusion-pytorch without min-SNR clipping); their minima, the conditional variances, are for Gaussian data
x_0 ~ N(m, s^2): Var(eps | x_t) = abar s^2 / (abar s^2 + 1 - abar), Var(x_0 | x_t) = (1 - abar) s^2 / (abar s^2 +
1 - abar), Var(v | x_t) = s^2 / (abar s^2 + 1 - abar).

Exports (SymPy; the symbols x_t, eps, x_0, abar = symbols.alpha_bar of derivations/symbols.py, V the symbol v,
strided.ALPHA_BAR_S for abar_s; a network's prediction goes in place of eps, x_0 or v):
    X0_FROM_EPS(x_t, eps, abar), EPS_FROM_X0(x_t, x_0, abar), X0_FROM_V(x_t, v, abar), EPS_FROM_V(x_t, v, abar),
    V_FROM_EPS_X0(eps, x_0, abar) (the definition), V_FROM_EPS(x_t, eps, abar), V_FROM_X0(x_t, x_0, abar)
    MEAN_FROM_EPS(x_t, eps, abar_t, abar_s), MEAN_FROM_X0(x_t, x_0, abar_t, abar_s), MEAN_FROM_V(x_t, v, abar_t, abar_s)
        the reverse mean over a stride t -> s (strided posterior mean at the predicted x_0)
    ONE_STEP_MEAN_FROM_V(x_t, v, beta_t, alpha_bar_prev), the v-mean at s = t - 1 in symbols.beta_t, alpha_bar_prev
    DDIM_MEAN_FROM_X0, DDIM_MEAN_FROM_V (x_t, x_0 or v, abar_t, abar_s, strided.sigma2_ddim): eq. (12) without sigma z
    SNR(abar), LOSS_WEIGHT_X0 = SNR, LOSS_WEIGHT_V = SNR / (SNR + 1)
    VAR_EPS_GAUSSIAN, VAR_X0_GAUSSIAN, VAR_V_GAUSSIAN (abar, s^2 = reverse_variance.DATA_VARIANCE)
Numeric (float64, broadcasting, 50-digit evaluation):
    x0_from_eps(x_t, eps, abar), eps_from_x0(x_t, x_0, abar), x0_from_v(x_t, v, abar), eps_from_v(x_t, v, abar),
    v_from_eps_x0(eps, x_0, abar), v_from_eps(x_t, eps, abar), v_from_x0(x_t, x_0, abar),
    mean_from_eps / mean_from_x0 / mean_from_v(x_t, prediction, abar_t, abar_s),
    ddim_mean_from_x0 / ddim_mean_from_v(x_t, prediction, abar_t, abar_s, sigma2), snr(abar),
    loss_minimum(prediction, abar, s) with prediction "eps", "x0" or "v" and s the data's standard deviation.
    A division by zero raises ZeroDivisionError: abar = 0 in x0_from_eps, v_from_eps, mean_from_eps; abar = 1 in
    eps_from_x0, v_from_x0, snr.
"""

from __future__ import annotations

import functools

import numpy as np
import sympy as sp

from derivations import eps_parameterisation, forward_marginal, optimal_variance, reverse_variance, strided
from derivations.chain import Check, Derivation, Step
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import (
    alpha_bar,
    alpha_bar_prev,
    alpha_bar_t,
    alpha_t,
    beta_t,
    eps,
    linear_covariance,
    x_0,
    x_t,
)

a = alpha_bar  # abar_t, the schedule at the step the prediction is made
S = strided.ALPHA_BAR_S  # abar_s, the end of the stride t -> s
V = sp.Symbol("v", real=True)  # the velocity of Salimans & Ho (2022)
eps_hat = sp.Symbol(r"\hat{\epsilon}", real=True)  # a predicted eps, for the loss comparison
SIGMA2 = strided.sigma2_ddim  # DDIM's free variance sigma^2 in [0, 1 - abar_s]
# Conditional moments given x_t: the data mean m, variance s^2 (std s), and the generic decomposition of a loss.
m = sp.Symbol("m", real=True)
S2 = reverse_variance.DATA_VARIANCE
STD = sp.Symbol("s", positive=True)  # the data's standard deviation, for the numeric minima
z_0 = sp.Symbol("z_0", real=True)  # x_0 = m + s z_0, z_0 ~ N(0, 1) independent of eps
k = sp.Symbol("k", real=True)  # a regression coefficient on x_t
y_mean = sp.Symbol(r"\mathbb{E}[y \mid x_t]", real=True)
y_var = sp.Symbol(r"\operatorname{Var}(y \mid x_t)", positive=True)
r = sp.Symbol("r", real=True)  # y - E[y | x_t]: conditional mean 0, conditional variance Var(y | x_t)
f = sp.Symbol("f", real=True)  # a prediction, a function of x_t (a constant given x_t)
VAR_EPS = sp.Symbol(r"\operatorname{Var}(\epsilon \mid x_t)", positive=True)


def _collected(expr: sp.Expr, variables: tuple[sp.Symbol, ...]) -> sp.Expr:
    """`expr`, linear in `variables`, as the sum of each variable times its cancelled, factored coefficient."""
    expanded = sp.expand(expr)
    collected = sum(sp.factor(sp.cancel(expanded.coeff(var))) * var for var in variables)
    if sp.simplify(expanded - collected) != 0:
        raise ArithmeticError(f"not linear in {variables}: {expr}")
    return collected


# --- 1. Conversions ------------------------------------------------------------------------------
FORWARD = forward_marginal.X_T_REPARAMETERISED  # x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps, derivation (a)
V_FROM_EPS_X0 = sp.sqrt(a) * eps - sp.sqrt(1 - a) * x_0  # Salimans & Ho (2022): a definition
(X0_FROM_EPS,) = sp.solve(sp.Eq(x_t, FORWARD), x_0)
(EPS_FROM_X0,) = sp.solve(sp.Eq(x_t, FORWARD), eps)
_PAIR = sp.solve([sp.Eq(x_t, FORWARD), sp.Eq(V, V_FROM_EPS_X0)], [x_0, eps], dict=True)
X0_FROM_V, EPS_FROM_V = _PAIR[0][x_0], _PAIR[0][eps]
V_FROM_EPS = _collected(V_FROM_EPS_X0.subs(x_0, X0_FROM_EPS), (x_t, eps))
V_FROM_X0 = _collected(V_FROM_EPS_X0.subs(eps, EPS_FROM_X0), (x_t, x_0))
ROTATION_X0 = sp.sqrt(a) * FORWARD - sp.sqrt(1 - a) * V_FROM_EPS_X0  # sqrt(abar) x_t - sqrt(1 - abar) v
ROTATION_EPS = sp.sqrt(a) * V_FROM_EPS_X0 + sp.sqrt(1 - a) * FORWARD  # sqrt(abar) v + sqrt(1 - abar) x_t

PAPER_X0_FROM_EPS = (x_t - sp.sqrt(1 - a) * eps) / sp.sqrt(a)
PAPER_EPS_FROM_X0 = (x_t - sp.sqrt(a) * x_0) / sp.sqrt(1 - a)
PAPER_X0_FROM_V = sp.sqrt(a) * x_t - sp.sqrt(1 - a) * V
PAPER_EPS_FROM_V = sp.sqrt(a) * V + sp.sqrt(1 - a) * x_t
PAPER_V_FROM_EPS = (eps - sp.sqrt(1 - a) * x_t) / sp.sqrt(a)
PAPER_V_FROM_X0 = (sp.sqrt(a) * x_t - x_0) / sp.sqrt(1 - a)

# --- 2. The reverse means over a stride t -> s, and at s = t - 1 ---------------------------------
MEAN_FROM_X0 = strided.STRIDED_POSTERIOR_MEAN  # mu_tilde_{t,s}(x_t, x_0) of derivation (i), x0_hat for x_0
MEAN_FROM_EPS = _collected(MEAN_FROM_X0.subs(x_0, X0_FROM_EPS), (x_t, eps))
MEAN_FROM_V = _collected(MEAN_FROM_X0.subs(x_0, X0_FROM_V), (x_t, V))
PAPER_MEAN_FROM_X0 = (
    sp.sqrt(S) * (1 - a / S) / (1 - a) * x_0 + sp.sqrt(a / S) * (1 - S) / (1 - a) * x_t
)
PAPER_MEAN_FROM_V = sp.sqrt(a / S) * x_t - sp.sqrt(S) * (1 - a / S) / sp.sqrt(1 - a) * V

ONE_STEP = {S: alpha_bar_prev, a: alpha_bar_t}  # s = t - 1: abar_s = abar_{t-1}, abar_t = abar_{t-1} (1 - beta_t)
ONE_STEP_MEAN_FROM_V = _collected(MEAN_FROM_V.subs(ONE_STEP, simultaneous=True), (x_t, V))
ALGORITHM_2_MEAN = eps_parameterisation.PAPER_EPS_MEAN  # (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t)
PAPER_ONE_STEP_MEAN_FROM_X0 = (  # Ho et al. eq. (7)
    sp.sqrt(alpha_bar_prev) * beta_t / (1 - alpha_bar_t) * x_0
    + sp.sqrt(alpha_t) * (1 - alpha_bar_prev) / (1 - alpha_bar_t) * x_t
)
PAPER_ONE_STEP_MEAN_FROM_V = sp.sqrt(alpha_t) * x_t - sp.sqrt(alpha_bar_prev) * beta_t / sp.sqrt(1 - alpha_bar_t) * V


def _one_step(expr: sp.Expr) -> sp.Expr:
    """`expr` at s = t - 1 (simultaneous: abar_t's replacement contains abar_{t-1})."""
    return expr.subs(ONE_STEP, simultaneous=True)


# DDIM eq. (12) without its noise sigma z: sqrt(abar_s) x0_hat + sqrt(1 - abar_s - sigma^2) eps_hat.
DDIM_ROOT = strided.Q_SIGMA_ROOT  # sqrt(1 - abar_s - sigma^2)
DDIM_MEAN_FROM_EPS = sp.sqrt(S) * X0_FROM_EPS + DDIM_ROOT * eps  # eq. (12) as Song et al. write it
DDIM_MEAN_FROM_X0 = _collected(sp.sqrt(S) * x_0 + DDIM_ROOT * EPS_FROM_X0, (x_t, x_0))
DDIM_MEAN_FROM_V = _collected(sp.sqrt(S) * X0_FROM_V + DDIM_ROOT * EPS_FROM_V, (x_t, V))
PAPER_DDIM_MEAN_FROM_V = (sp.sqrt(S) * sp.sqrt(a) + DDIM_ROOT * sp.sqrt(1 - a)) * x_t + (
    DDIM_ROOT * sp.sqrt(a) - sp.sqrt(S) * sp.sqrt(1 - a)
) * V

# --- 4. Loss equivalences (section 3, zero terminal SNR, substitutes abar = 0 into the above) ----
SNR = a / (1 - a)  # Kingma et al. (2021): alpha^2 / sigma^2 = abar / (1 - abar), a definition
X0_ERROR = X0_FROM_EPS - X0_FROM_EPS.subs(eps, eps_hat)  # x_0 - x0_hat, both from the same x_t
V_ERROR = V_FROM_EPS - V_FROM_EPS.subs(eps, eps_hat)  # v - v_hat
EPS_ERROR = eps - eps_hat
LOSS_WEIGHT_X0 = SNR
LOSS_WEIGHT_V = SNR / (SNR + 1)
X0_EPS_COEF = sp.expand(X0_FROM_EPS).coeff(eps)  # x_0 = (x_t / sqrt(abar)) + X0_EPS_COEF eps, affine given x_t
V_EPS_COEF = sp.expand(V_FROM_EPS).coeff(eps)
VAR_X0 = X0_EPS_COEF**2 * VAR_EPS  # Var(c + k eps | x_t) = k^2 Var(eps | x_t) for c, k fixed by x_t
VAR_V = V_EPS_COEF**2 * VAR_EPS
# The squared loss given x_t, y = E[y | x_t] + r: its conditional mean with E[r | x_t] = 0, E[r^2 | x_t] = Var.
LOSS_GIVEN_XT = sp.expand((y_mean + r - f) ** 2)
EXPECTED_LOSS_GIVEN_XT = sp.Poly(LOSS_GIVEN_XT, r).as_expr().subs(r**2, y_var).subs(r, 0)

# Gaussian data x_0 = m + s z_0: (z_0, eps) independent standard normals, x_t linear in them.
_NOISES = (z_0, eps)
X0_GAUSSIAN = m + sp.sqrt(S2) * z_0
XT_GAUSSIAN = FORWARD.subs(x_0, X0_GAUSSIAN)


def _conditional_variance(y: sp.Expr) -> sp.Expr:
    """Var(y | x_t) for y jointly Gaussian with x_t: the variance of y - kappa x_t, kappa the regression coefficient
    solving Cov(y - kappa x_t, x_t) = 0 (the residual is then uncorrelated with x_t, hence independent of it)."""
    (kappa,) = sp.solve(sp.Eq(linear_covariance(y - k * XT_GAUSSIAN, XT_GAUSSIAN, _NOISES), 0), k)
    residual = y - kappa * XT_GAUSSIAN
    return sp.factor(linear_covariance(residual, residual, _NOISES))


VAR_XT_GAUSSIAN = linear_covariance(XT_GAUSSIAN, XT_GAUSSIAN, _NOISES)
VAR_EPS_GAUSSIAN = _conditional_variance(eps)
VAR_X0_GAUSSIAN = sp.factor(VAR_X0.subs(VAR_EPS, VAR_EPS_GAUSSIAN))
VAR_V_GAUSSIAN = sp.factor(VAR_V.subs(VAR_EPS, VAR_EPS_GAUSSIAN))
VAR_X0_GAUSSIAN_DIRECT = _conditional_variance(X0_GAUSSIAN)
VAR_V_GAUSSIAN_DIRECT = _conditional_variance(V_FROM_EPS_X0.subs(x_0, X0_GAUSSIAN))
_DENOMINATOR = a * S2 + 1 - a
PAPER_VAR_EPS_GAUSSIAN = a * S2 / _DENOMINATOR
PAPER_VAR_X0_GAUSSIAN = (1 - a) * S2 / _DENOMINATOR
PAPER_VAR_V_GAUSSIAN = S2 / _DENOMINATOR

# Report names for the left sides, and (report only) x_T, abar_{T-1} for the statements at abar_T = 0.
_HAT_X0 = r"\hat{x}_0"
_MU_TS = r"\mu_{t,s}"
_AT_T = ((x_t, sp.Symbol("x_T", real=True)), (alpha_bar_prev, sp.Symbol(r"\bar{\alpha}_{T-1}", positive=True)))


def _conversion_steps() -> tuple[Step, ...]:
    """Section 1: x_0, eps and v from one another given x_t, each solved for."""
    return (
        Step(
            "Theorem assumed (derivation (a), proved there): the forward sample, x_t given x_0 and the noise eps ~ "
            "N(0, 1) (abar = alpha_bar_t).",
            x_t,
            FORWARD,
            Check.DEFINITION,
        ),
        Step(
            "Definition: the velocity of Salimans & Ho (2022), v = sqrt(abar) eps - sqrt(1 - abar) x_0. With abar = "
            "cos^2 phi, "
            "(x_t, v) is (x_0, eps) rotated by phi.",
            V,
            V_FROM_EPS_X0,
            Check.DEFINITION,
        ),
        named_step(
            "Solve the forward sample for x_0 (sympy.solve; linear, coefficient sqrt(abar) > 0) ...",
            "x_0(x_t, \\epsilon)",
            X0_FROM_EPS,
            PAPER_X0_FROM_EPS,
        ),
        named_step(
            "... and for eps (coefficient sqrt(1 - abar) > 0 for abar < 1).",
            "\\epsilon(x_t, x_0)",
            EPS_FROM_X0,
            PAPER_EPS_FROM_X0,
        ),
        named_step(
            "The rotation back: sqrt(abar) x_t - sqrt(1 - abar) v, with the forward sample and the definition of v "
            "substituted, is (abar + (1 - abar)) x_0 + 0 eps = x_0 ...",
            r"\sqrt{\bar{\alpha}_t}\, x_t - \sqrt{1 - \bar{\alpha}_t}\, v",
            ROTATION_X0,
            x_0,
        ),
        named_step(
            "... and sqrt(abar) v + sqrt(1 - abar) x_t is (abar + (1 - abar)) eps + 0 x_0 = eps.",
            r"\sqrt{\bar{\alpha}_t}\, v + \sqrt{1 - \bar{\alpha}_t}\, x_t",
            ROTATION_EPS,
            eps,
        ),
        named_step(
            "So solving the pair (forward sample, definition of v) for x_0 (sympy.solve; the determinant is "
            "abar + (1 - abar) = 1) gives x_0 from v ...",
            "x_0(x_t, v)",
            X0_FROM_V,
            PAPER_X0_FROM_V,
        ),
        named_step(
            "... and eps from v.",
            "\\epsilon(x_t, v)",
            EPS_FROM_V,
            PAPER_EPS_FROM_V,
        ),
        named_step(
            "v from eps: substitute x_0(x_t, eps) into the definition and collect; the eps coefficient "
            "sqrt(abar) + (1 - abar) / sqrt(abar) is 1 / sqrt(abar).",
            "v(x_t, \\epsilon)",
            V_FROM_EPS,
            PAPER_V_FROM_EPS,
        ),
        named_step(
            "v from x_0: substitute eps(x_t, x_0) into the definition and collect; the x_0 coefficient "
            "-sqrt(1 - abar) - abar / sqrt(1 - abar) is -1 / sqrt(1 - abar).",
            "v(x_t, x_0)",
            V_FROM_X0,
            PAPER_V_FROM_X0,
        ),
        named_step(
            "Round trip: x_0 from v, with v from eps, is x_0 from eps.",
            "x_0(x_t, v(x_t, \\epsilon))",
            X0_FROM_V.subs(V, V_FROM_EPS),
            X0_FROM_EPS,
        ),
    )


def _mean_steps() -> tuple[Step, ...]:
    """Section 2: the reverse mean of each parameterisation, over a stride and at s = t - 1."""
    return (
        named_step(
            "The x_0-parameterised mean over a stride t -> s is derivation (i)'s strided posterior mean at the "
            "predicted x0_hat (written x_0 here): mu = c_0 x0_hat + c_t x_t.",
            rf"{_MU_TS}({_HAT_X0})",
            MEAN_FROM_X0,
            PAPER_MEAN_FROM_X0,
        ),
        named_step(
            "The eps-parameterised mean: x0_hat = x_0(x_t, eps_hat) in the strided posterior mean, collected; "
            "derivation (i)'s strided eps-mean.",
            rf"{_MU_TS}(\hat{{x}}_0(x_t, \hat{{\epsilon}}))",
            MEAN_FROM_EPS,
            strided.PAPER_STRIDED_EPS_MEAN,
        ),
        named_step(
            "The v-parameterised mean: x0_hat = x_0(x_t, v_hat) in the strided posterior mean, collected; the x_t "
            "coefficient c_0 sqrt(abar_t) + c_t is sqrt(abar_t / abar_s) (its numerator abar_s - abar_t + 1 - abar_s "
            "cancels 1 - abar_t).",
            rf"{_MU_TS}(\hat{{x}}_0(x_t, \hat{{v}}))",
            MEAN_FROM_V,
            PAPER_MEAN_FROM_V,
        ),
        named_step(
            "The three agree when the predictions do: the v-mean at v = v(x_t, eps) is the eps-mean.",
            rf"{_MU_TS}(\hat{{x}}_0(x_t, v(x_t, \epsilon)))",
            MEAN_FROM_V.subs(V, V_FROM_EPS),
            MEAN_FROM_EPS,
        ),
        named_step(
            "One step, s = t - 1 (abar_s = abar_{t-1}, abar_t = abar_{t-1} alpha_t): the x_0 form is Ho et al.'s "
            "posterior mean mu_tilde_t(x0_hat, x_t) (eq. 7, derivation (b)) ...",
            r"\mu_t(\hat{x}_0)",
            _one_step(MEAN_FROM_X0),
            PAPER_ONE_STEP_MEAN_FROM_X0,
        ),
        named_step(
            "... the eps form is Algorithm 2's mean (x_t - beta_t / sqrt(1 - abar_t) eps) / sqrt(alpha_t) "
            "(derivation (d)) ...",
            r"\mu_t(\hat{x}_0(x_t, \hat{\epsilon}))",
            _one_step(MEAN_FROM_EPS),
            ALGORITHM_2_MEAN,
        ),
        named_step(
            "... and the v form is sqrt(alpha_t) x_t - sqrt(abar_{t-1}) beta_t / sqrt(1 - abar_t) v.",
            r"\mu_t(\hat{x}_0(x_t, \hat{v}))",
            ONE_STEP_MEAN_FROM_V,
            PAPER_ONE_STEP_MEAN_FROM_V,
        ),
        named_step(
            "Algorithm 2's mean with eps_hat = eps(x_t, v_hat) is the one-step v form: each parameterisation's mean "
            "is Algorithm 2's.",
            r"\mu_t^{\mathrm{Alg. 2}}(x_t, \epsilon(x_t, \hat{v}))",
            ALGORITHM_2_MEAN.subs(eps, EPS_FROM_V.subs(a, alpha_bar_t)),
            ONE_STEP_MEAN_FROM_V,
        ),
        named_step(
            "... and Algorithm 2's mean with eps_hat = eps(x_t, x0_hat) is Ho et al.'s posterior mean at x0_hat.",
            r"\mu_t^{\mathrm{Alg. 2}}(x_t, \epsilon(x_t, \hat{x}_0))",
            ALGORITHM_2_MEAN.subs(eps, EPS_FROM_X0.subs(a, alpha_bar_t)),
            PAPER_ONE_STEP_MEAN_FROM_X0,
        ),
    )


def _ddim_steps() -> tuple[Step, ...]:
    """Section 2, DDIM: eq. (12) in the x_0 and v forms."""
    return (
        Step(
            "Definition: DDIM's update (Song et al. 2021, eq. 12), x_s = sqrt(abar_s) x0_hat + sqrt(1 - abar_s - "
            "sigma^2) eps_hat "
            "+ sigma z, with x0_hat and eps_hat from one prediction; its deterministic part in the eps form.",
            sp.Symbol(r"\mu_{\mathrm{DDIM}}"),
            DDIM_MEAN_FROM_EPS,
            Check.DEFINITION,
            lhs_latex=r"\mu_{\mathrm{DDIM}}(x_t, \hat{\epsilon})",
        ),
        named_step(
            "The x_0 form: eps_hat = eps(x_t, x0_hat); it is eq. (7)'s q_sigma mean at x_0 = x0_hat "
            "(derivation (i)).",
            r"\mu_{\mathrm{DDIM}}(x_t, \hat{x}_0)",
            DDIM_MEAN_FROM_X0,
            strided.Q_SIGMA_MEAN,
        ),
        named_step(
            "The v form: x0_hat = x_0(x_t, v_hat), eps_hat = eps(x_t, v_hat), collected in x_t and v.",
            r"\mu_{\mathrm{DDIM}}(x_t, \hat{v})",
            DDIM_MEAN_FROM_V,
            PAPER_DDIM_MEAN_FROM_V,
        ),
        named_step(
            "The v form at v = v(x_t, eps) is the eps form ...",
            r"\mu_{\mathrm{DDIM}}(x_t, v(x_t, \epsilon))",
            DDIM_MEAN_FROM_V.subs(V, V_FROM_EPS),
            DDIM_MEAN_FROM_EPS,
        ),
        named_step(
            "... and so is the x_0 form at x_0 = x_0(x_t, eps).",
            r"\mu_{\mathrm{DDIM}}(x_t, x_0(x_t, \epsilon))",
            DDIM_MEAN_FROM_X0.subs(x_0, X0_FROM_EPS),
            DDIM_MEAN_FROM_EPS,
        ),
    )


def _terminal_steps() -> tuple[Step, ...]:
    """Section 3: abar_T = 0 (zero terminal SNR)."""
    at_0 = {a: 0}
    return (
        Step(
            "Definition: the signal-to-noise ratio of x_t (Kingma et al. 2021): SNR = abar / (1 - abar).",
            sp.Symbol("SNR"),
            SNR,
            Check.DEFINITION,
            lhs_latex=r"\mathrm{SNR}_t",
        ),
        named_step(
            "Zero terminal SNR (Lin et al. 2023) is abar_T = 0: SNR_T = 0 ...",
            r"\mathrm{SNR}_T",
            SNR.subs(at_0),
            sp.Integer(0),
        ),
        named_step(
            "... and x_T is the noise itself, independent of x_0.",
            r"x_T\big|_{\bar{\alpha}_T = 0}",
            FORWARD.subs(at_0),
            eps,
            display=_AT_T,
        ),
        named_step(
            "In one-step symbols abar_T = abar_{T-1} alpha_T vanishes (abar_{T-1} > 0) exactly when beta_T = 1, "
            "alpha_T = 0.",
            r"\bar{\alpha}_T\big|_{\beta_T = 1}",
            alpha_bar_t.subs(beta_t, 1),
            sp.Integer(0),
        ),
        named_step(
            "The v target at abar_T = 0 is -x_0 ...",
            r"v\big|_{\bar{\alpha}_T = 0}",
            V_FROM_EPS_X0.subs(at_0),
            -x_0,
        ),
        named_step(
            "... so x0_hat = -v_hat there, finite ...",
            r"x_0(x_T, v)\big|_{\bar{\alpha}_T = 0}",
            X0_FROM_V.subs(at_0),
            -V,
            display=_AT_T,
        ),
        named_step(
            "... (the limit abar -> 0 agrees) ...",
            r"\lim_{\bar{\alpha}_t \to 0} x_0(x_t, v)",
            sp.limit(X0_FROM_V, a, 0, "+"),
            -V,
        ),
        named_step(
            "... and eps_hat = x_T.",
            r"\epsilon(x_T, v)\big|_{\bar{\alpha}_T = 0}",
            EPS_FROM_V.subs(at_0),
            x_t,
            display=_AT_T,
        ),
        named_step(
            "The eps form fixes x0_hat only through sqrt(abar) x0_hat = x_t - sqrt(1 - abar) eps_hat; at abar_T = 0 "
            "this reads 0 = x_T - eps_hat, which the true eps (= x_T) satisfies for every x0_hat: eps carries no "
            "information about x_0 there ...",
            r"\sqrt{\bar{\alpha}_T}\, x_0(x_T, \hat{\epsilon})\big|_{\bar{\alpha}_T = 0}",
            (sp.sqrt(a) * X0_FROM_EPS).subs(at_0),
            x_t - eps,
            display=_AT_T,
        ),
        named_step(
            "... and a prediction eps_hat != x_t sends x0_hat to infinity as abar -> 0 (its reciprocal tends to 0).",
            r"\lim_{\bar{\alpha}_t \to 0} 1 / x_0(x_t, \epsilon)",
            sp.limit(1 / X0_FROM_EPS, a, 0, "+"),
            sp.Integer(0),
        ),
    )


def _loss_steps() -> tuple[Step, ...]:
    """Section 4: the x_0 and v errors in terms of the eps error; weights; the minima."""
    return (
        named_step(
            "Given x_t, the x_0 error of a prediction made through eps_hat: x_0 - x0_hat = -sqrt((1 - abar) / abar) "
            "(eps - eps_hat) ...",
            r"x_0 - \hat{x}_0",
            X0_ERROR,
            -sp.sqrt((1 - a) / a) * EPS_ERROR,
        ),
        named_step(
            "... and the v error: v - v_hat = (eps - eps_hat) / sqrt(abar).",
            r"v - \hat{v}",
            V_ERROR,
            EPS_ERROR / sp.sqrt(a),
        ),
        named_step(
            "So the x_0 loss weighted by SNR is the eps loss ...",
            r"\mathrm{SNR}_t (x_0 - \hat{x}_0)^2",
            LOSS_WEIGHT_X0 * X0_ERROR**2,
            EPS_ERROR**2,
        ),
        named_step(
            "... the weight SNR / (SNR + 1) is abar ...",
            r"\frac{\mathrm{SNR}_t}{\mathrm{SNR}_t + 1}",
            LOSS_WEIGHT_V,
            a,
        ),
        named_step(
            "... and the v loss weighted by SNR / (SNR + 1) is the eps loss.",
            r"\frac{\mathrm{SNR}_t}{\mathrm{SNR}_t + 1} (v - \hat{v})^2",
            LOSS_WEIGHT_V * V_ERROR**2,
            EPS_ERROR**2,
        ),
        named_step(
            "A squared loss given x_t, y = E[y | x_t] + r with E[r | x_t] = 0: E[(y - f)^2 | x_t] = Var(y | x_t) + "
            "(E[y | x_t] - f)^2, smallest at f = E[y | x_t], where it is Var(y | x_t).",
            r"\mathbb{E}[(y - f)^2 \mid x_t]",
            EXPECTED_LOSS_GIVEN_XT,
            y_var + (y_mean - f) ** 2,
        ),
        named_step(
            "Given x_t, x_0 = x_t / sqrt(abar) - sqrt((1 - abar) / abar) eps is affine in eps, so "
            "Var(x_0 | x_t) = (1 - abar) / abar Var(eps | x_t) ...",
            r"\operatorname{Var}(x_0 \mid x_t)",
            VAR_X0,
            (1 - a) / a * VAR_EPS,
        ),
        named_step(
            "... and Var(v | x_t) = Var(eps | x_t) / abar.",
            r"\operatorname{Var}(v \mid x_t)",
            VAR_V,
            VAR_EPS / a,
        ),
        named_step(
            "The weighted minima are the same: SNR Var(x_0 | x_t) = Var(eps | x_t) ...",
            r"\mathrm{SNR}_t \operatorname{Var}(x_0 \mid x_t)",
            LOSS_WEIGHT_X0 * VAR_X0,
            VAR_EPS,
        ),
        named_step(
            "... and abar Var(v | x_t) = Var(eps | x_t).",
            r"\bar{\alpha}_t \operatorname{Var}(v \mid x_t)",
            LOSS_WEIGHT_V * VAR_V,
            VAR_EPS,
        ),
    )


def _gaussian_steps() -> tuple[Step, ...]:
    """Section 4 for Gaussian data x_0 ~ N(m, s^2): the three minima in closed form."""
    return (
        Step(
            "Model: Gaussian data x_0 = m + s z_0 ~ N(m, s^2); x_t is linear in the independent standard normals "
            "z_0, eps.",
            x_t,
            XT_GAUSSIAN,
            Check.DEFINITION,
        ),
        named_step(
            "Var(x_t) = abar s^2 + 1 - abar (the sum of the squared noise coefficients).",
            r"\operatorname{Var}(x_t)",
            VAR_XT_GAUSSIAN,
            _DENOMINATOR,
        ),
        named_step(
            "(eps, x_t) is jointly Gaussian: eps - kappa x_t with Cov(eps - kappa x_t, x_t) = 0 is independent of "
            "x_t, and Var(eps | x_t) is its variance, abar s^2 / (abar s^2 + 1 - abar), whatever m ...",
            r"\operatorname{Var}(\epsilon \mid x_t)",
            VAR_EPS_GAUSSIAN,
            PAPER_VAR_EPS_GAUSSIAN,
        ),
        named_step(
            "... which is 1 - Gamma_t(s^2) of derivation (j) (there for m = 0, in one-step symbols).",
            r"\operatorname{Var}(\epsilon \mid x_t) + \Gamma_t(s^2)",
            VAR_EPS_GAUSSIAN.subs(a, alpha_bar_t) + optimal_variance.GAMMA_GAUSSIAN,
            sp.Integer(1),
        ),
        named_step(
            "The x_0 minimum through the conversion: (1 - abar) / abar Var(eps | x_t) ...",
            r"\operatorname{Var}(x_0 \mid x_t)",
            VAR_X0_GAUSSIAN,
            PAPER_VAR_X0_GAUSSIAN,
        ),
        named_step(
            "... equals Var(x_0 | x_t) by Gaussian conditioning on x_t directly ...",
            r"\operatorname{Var}(x_0 - \kappa_{x_0} x_t)",
            VAR_X0_GAUSSIAN_DIRECT,
            VAR_X0_GAUSSIAN,
        ),
        named_step(
            "The v minimum through the conversion: Var(eps | x_t) / abar ...",
            r"\operatorname{Var}(v \mid x_t)",
            VAR_V_GAUSSIAN,
            PAPER_VAR_V_GAUSSIAN,
        ),
        named_step(
            "... equals Var(v | x_t) by Gaussian conditioning on x_t directly.",
            r"\operatorname{Var}(v - \kappa_v x_t)",
            VAR_V_GAUSSIAN_DIRECT,
            VAR_V_GAUSSIAN,
        ),
    )


def _conversion_results() -> tuple[Step, ...]:
    """Results: the conversions through v and the three means over a stride."""
    return (
        named_step("x_0 from v (X0_FROM_V).", "x_0(x_t, v)", X0_FROM_V, PAPER_X0_FROM_V),
        named_step("eps from v (EPS_FROM_V).", r"\epsilon(x_t, v)", EPS_FROM_V, PAPER_EPS_FROM_V),
        named_step("v from eps (V_FROM_EPS).", r"v(x_t, \epsilon)", V_FROM_EPS, PAPER_V_FROM_EPS),
        named_step(
            "The x_0-parameterised mean over a stride t -> s (MEAN_FROM_X0).",
            rf"{_MU_TS}({_HAT_X0})",
            MEAN_FROM_X0,
            PAPER_MEAN_FROM_X0,
        ),
        named_step(
            "The v-parameterised mean over a stride t -> s (MEAN_FROM_V).",
            rf"{_MU_TS}(\hat{{v}})",
            MEAN_FROM_V,
            PAPER_MEAN_FROM_V,
        ),
    )


def _terminal_results() -> tuple[Step, ...]:
    """Results: what each parameterisation becomes at abar_T = 0."""
    at_0 = {a: 0}
    return (
        named_step(
            "At abar_T = 0 the v form gives x0_hat = -v_hat ...",
            r"x_0(x_T, \hat{v})\big|_{\bar{\alpha}_T = 0}",
            X0_FROM_V.subs(at_0),
            -V,
            display=_AT_T,
        ),
        named_step(
            "... and a finite mean over any stride T -> s: sqrt(abar_s) x0_hat with x0_hat = -v_hat ...",
            rf"{_MU_TS}(\hat{{v}})\big|_{{\bar{{\alpha}}_t = 0}}",
            MEAN_FROM_V.subs(at_0),
            sp.sqrt(S) * (-V),
        ),
        named_step(
            "... the limit abar_t -> 0 of the v-mean agrees ...",
            rf"\lim_{{\bar{{\alpha}}_t \to 0}} {_MU_TS}(\hat{{v}})",
            sp.limit(MEAN_FROM_V, a, 0, "+"),
            -sp.sqrt(S) * V,
        ),
        named_step(
            "... and in one step, beta_T = 1 (alpha_T = 0), it is -sqrt(abar_{T-1}) v_hat.",
            r"\mu_T(\hat{v})\big|_{\beta_T = 1}",
            ONE_STEP_MEAN_FROM_V.subs(beta_t, 1),
            -sp.sqrt(alpha_bar_prev) * V,
            display=_AT_T,
        ),
        named_step(
            "The x_0-mean is finite there too: sqrt(abar_s) x0_hat.",
            rf"{_MU_TS}({_HAT_X0})\big|_{{\bar{{\alpha}}_t = 0}}",
            MEAN_FROM_X0.subs(at_0),
            sp.sqrt(S) * x_0,
        ),
        named_step(
            "The eps form has no x_0 estimate at abar_T = 0: sqrt(abar_T) x0_hat = x_T - eps_hat, 0 = 0 at the true "
            "eps = x_T for every x0_hat ...",
            r"\sqrt{\bar{\alpha}_T}\, x_0(x_T, \hat{\epsilon})\big|_{\bar{\alpha}_T = 0}",
            (sp.sqrt(a) * X0_FROM_EPS).subs(at_0),
            x_t - eps,
            display=_AT_T,
        ),
        named_step(
            "... its mean's x_t coefficient sqrt(abar_s / abar_t) grows without bound (the reciprocal tends to 0) ...",
            rf"\lim_{{\bar{{\alpha}}_t \to 0}} 1 / [x_t]\, {_MU_TS}(\hat{{\epsilon}})",
            sp.limit(1 / MEAN_FROM_EPS.coeff(x_t), a, 0, "+"),
            sp.Integer(0),
        ),
        named_step(
            "... and Algorithm 2's x_t coefficient 1 / sqrt(alpha_t) divides by sqrt(alpha_T) = 0 at beta_T = 1.",
            r"1 / [x_t]\, \mu_T^{\mathrm{Alg. 2}}\big|_{\beta_T = 1}",
            (1 / eps_parameterisation.EPS_MEAN_COEF_XT).subs(beta_t, 1),
            sp.Integer(0),
        ),
        named_step(
            "DDIM at abar_T = 0 in the v form: x_s = -sqrt(abar_s) v_hat + sqrt(1 - abar_s - sigma^2) x_T + sigma z.",
            r"\mu_{\mathrm{DDIM}}(x_T, \hat{v})\big|_{\bar{\alpha}_T = 0}",
            DDIM_MEAN_FROM_V.subs(at_0),
            -sp.sqrt(S) * V + DDIM_ROOT * x_t,
            display=_AT_T,
        ),
    )


def _loss_results() -> tuple[Step, ...]:
    """Results: the weighted losses equal the eps loss; the minima for Gaussian data."""
    return (
        named_step(
            "The x_0 loss weighted by SNR is the eps loss ...",
            r"\mathrm{SNR}_t (x_0 - \hat{x}_0)^2",
            LOSS_WEIGHT_X0 * X0_ERROR**2,
            EPS_ERROR**2,
        ),
        named_step(
            "... and so is the v loss weighted by SNR / (SNR + 1) = abar (LOSS_WEIGHT_V).",
            r"\frac{\mathrm{SNR}_t}{\mathrm{SNR}_t + 1} (v - \hat{v})^2",
            LOSS_WEIGHT_V * V_ERROR**2,
            EPS_ERROR**2,
        ),
        named_step(
            "The minimum of the eps loss for Gaussian data N(m, s^2) (VAR_EPS_GAUSSIAN) ...",
            r"\min \mathbb{E}[(\epsilon - \hat{\epsilon})^2 \mid x_t]",
            VAR_EPS_GAUSSIAN,
            PAPER_VAR_EPS_GAUSSIAN,
        ),
        named_step(
            "... of the x_0 loss (VAR_X0_GAUSSIAN) ...",
            r"\min \mathbb{E}[(x_0 - \hat{x}_0)^2 \mid x_t]",
            VAR_X0_GAUSSIAN,
            PAPER_VAR_X0_GAUSSIAN,
        ),
        named_step(
            "... and of the v loss (VAR_V_GAUSSIAN).",
            r"\min \mathbb{E}[(v - \hat{v})^2 \mid x_t]",
            VAR_V_GAUSSIAN,
            PAPER_VAR_V_GAUSSIAN,
        ),
    )


@functools.cache
def derivation() -> Derivation:
    """From the forward sample and the definition of v to the three means, zero terminal SNR and the loss weights."""
    steps = _conversion_steps() + _mean_steps() + _ddim_steps() + _terminal_steps() + _loss_steps() + _gaussian_steps()
    return Derivation(
        key="o",
        title="The three parameterisations of the reverse mean: eps, x_0 and v (Salimans & Ho 2022), and zero "
        "terminal SNR",
        module=__name__,
        summary=(
            "With derivation (a)'s forward sample x_t = sqrt(abar) x_0 + sqrt(1 - abar) eps and Salimans & Ho's "
            "velocity v = sqrt(abar) eps - sqrt(1 - abar) x_0, the pair (x_0, eps) -> (x_t, v) is a rotation "
            "(abar + (1 - abar) = 1), so given x_t each of eps, x_0, v is solved for from any other. A network "
            "predicting any of them determines x0_hat, and the reverse mean is derivation (i)'s strided posterior "
            "mean at x0_hat: c_0 x0_hat + c_t x_t, in the eps form derivation (i)'s eps-mean, in the v form "
            "sqrt(abar_t / abar_s) x_t - sqrt(abar_s)(1 - abar_t / abar_s) / sqrt(1 - abar_t) v; at s = t - 1 "
            "all three are Algorithm 2's mean. DDIM's eq. (12) in the x_0 form is eq. (7)'s q_sigma mean at "
            "x0_hat and in the v form a combination of x_t and v. At zero terminal SNR (abar_T = 0, beta_T = 1; "
            "Lin et al. 2023) x_T is pure noise: the v target is -x_0, x0_hat = -v_hat and the v-mean is "
            "-sqrt(abar_s) v_hat, finite, as is the x_0-mean; the eps form gives no x_0 (sqrt(abar) x0_hat = "
            "x_T - eps = 0 for every x0_hat) and Algorithm 2 divides by sqrt(alpha_T) = 0. Given x_t the x_0 and v "
            "errors are -sqrt((1 - abar) / abar) and 1 / sqrt(abar) times the eps error, so the x_0 loss weighted "
            "by SNR = abar / (1 - abar) and the v loss weighted by SNR / (SNR + 1) = abar are the eps loss; the "
            "minima are the conditional variances, which for Gaussian data N(m, s^2) are abar s^2, (1 - abar) s^2 "
            "and s^2 over abar s^2 + 1 - abar for eps, x_0 and v."
        ),
        steps=steps,
        results=_conversion_results() + _terminal_results() + _loss_results(),
    )


x0_from_eps = float64_function(X0_FROM_EPS, (x_t, eps, a), "x0_from_eps")
eps_from_x0 = float64_function(EPS_FROM_X0, (x_t, x_0, a), "eps_from_x0")
x0_from_v = float64_function(X0_FROM_V, (x_t, V, a), "x0_from_v")
eps_from_v = float64_function(EPS_FROM_V, (x_t, V, a), "eps_from_v")
v_from_eps_x0 = float64_function(V_FROM_EPS_X0, (eps, x_0, a), "v_from_eps_x0")
v_from_eps = float64_function(V_FROM_EPS, (x_t, eps, a), "v_from_eps")
v_from_x0 = float64_function(V_FROM_X0, (x_t, x_0, a), "v_from_x0")
mean_from_eps = float64_function(MEAN_FROM_EPS, (x_t, eps, a, S), "mean_from_eps")
mean_from_x0 = float64_function(MEAN_FROM_X0, (x_t, x_0, a, S), "mean_from_x0")
mean_from_v = float64_function(MEAN_FROM_V, (x_t, V, a, S), "mean_from_v")
ddim_mean_from_x0 = float64_function(DDIM_MEAN_FROM_X0, (x_t, x_0, a, S, SIGMA2), "ddim_mean_from_x0")
ddim_mean_from_v = float64_function(DDIM_MEAN_FROM_V, (x_t, V, a, S, SIGMA2), "ddim_mean_from_v")
snr = float64_function(SNR, (a,), "snr")

_MINIMA = {
    "eps": float64_function(VAR_EPS_GAUSSIAN.subs(S2, STD**2), (a, STD), "loss_minimum_eps"),
    "x0": float64_function(VAR_X0_GAUSSIAN.subs(S2, STD**2), (a, STD), "loss_minimum_x0"),
    "v": float64_function(VAR_V_GAUSSIAN.subs(S2, STD**2), (a, STD), "loss_minimum_v"),
}
PREDICTIONS = tuple(_MINIMA)


def loss_minimum(prediction: str, abar, s) -> np.ndarray:
    """min E[(y - y_hat)^2 | x_t] per dimension, y the `prediction` target ("eps", "x0" or "v"), for data
    x_0 ~ N(m, s^2) at alpha_bar = abar: Var(y | x_t), unweighted (any m; broadcasts over abar and s)."""
    function = _MINIMA.get(prediction)
    if function is None:
        raise ValueError(f"prediction must be one of {PREDICTIONS}, got {prediction!r}")
    return function(abar, s)


__all__ = [
    "DDIM_MEAN_FROM_V",
    "DDIM_MEAN_FROM_X0",
    "EPS_FROM_V",
    "EPS_FROM_X0",
    "LOSS_WEIGHT_V",
    "LOSS_WEIGHT_X0",
    "MEAN_FROM_EPS",
    "MEAN_FROM_V",
    "MEAN_FROM_X0",
    "ONE_STEP_MEAN_FROM_V",
    "PREDICTIONS",
    "SNR",
    "V",
    "VAR_EPS_GAUSSIAN",
    "VAR_V_GAUSSIAN",
    "VAR_X0_GAUSSIAN",
    "V_FROM_EPS",
    "V_FROM_EPS_X0",
    "V_FROM_X0",
    "X0_FROM_EPS",
    "X0_FROM_V",
    "derivation",
    "ddim_mean_from_v",
    "ddim_mean_from_x0",
    "eps_from_v",
    "eps_from_x0",
    "loss_minimum",
    "mean_from_eps",
    "mean_from_v",
    "mean_from_x0",
    "snr",
    "v_from_eps",
    "v_from_eps_x0",
    "v_from_x0",
    "x0_from_eps",
    "x0_from_v",
]
