"""(i) The strided chain q(x_s | x_t, x_0) for s < t, its reverse step, and DDIM.

Song et al. (2021), "Denoising Diffusion Implicit Models", eqs. (7), (12), (16). A sampler that visits
only a subsequence of the timesteps jumps from t to some s < t in one step. Everything follows from the
forward process alone, with abar_t and abar_s (0 < abar_t < abar_s <= 1; s = 0 means abar_s = 1):

    q(x_t | x_s)      = N(sqrt(abar_t / abar_s) x_s, 1 - abar_t / abar_s)
    q(x_s | x_t, x_0) = N(c_0 x_0 + c_t x_t, beta_tilde_{t,s}),
        c_0 = sqrt(abar_s) (1 - abar_t / abar_s) / (1 - abar_t)
        c_t = sqrt(abar_t / abar_s) (1 - abar_s) / (1 - abar_t)
        beta_tilde_{t,s} = (1 - abar_s) / (1 - abar_t) (1 - abar_t / abar_s)

The composed forward steps s+1..t collapse into one Gaussian (the induction of derivation (a), started
at x_s instead of x_0); Bayes' rule and completing the square, as in derivation (b), give the strided
posterior, which reduces to (b) at s = t - 1 and, with x_0 predicted from eps, to (d). DDIM's family
q_sigma(x_s | x_t, x_0) (eq. 7) keeps every marginal q(x_s | x_0) for any sigma^2 in [0, 1 - abar_s];
eq. (16)'s sigma^2(eta) at eta = 1 is exactly the strided posterior, and eta = 0 is deterministic.
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation, forward_marginal, posterior
from derivations.chain import Check, Derivation, Step
from derivations.domain import log_of_positive, roots_factored
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import alpha_bar, alpha_bar_prev, alpha_bar_t, beta_t, eps, eps_theta, normal_density, x_0, x_t

# abar_s, the earlier end of the stride: 0 < abar_t < abar_s <= 1 (abar_s = 1 at s = 0, i.e. x_s = x_0).
ALPHA_BAR_S = sp.Symbol(r"\bar{\alpha}_s", positive=True)
x_s = sp.Symbol("x_s", real=True)
# DDIM: eta >= 0 scales the noise (eq. 16); sigma^2 in [0, 1 - abar_s] is eq. (7)'s free variance.
eta = sp.Symbol(r"\eta", nonnegative=True)
sigma2_ddim = sp.Symbol(r"\sigma_{t,s}^2", nonnegative=True)
z = sp.Symbol("z", real=True)  # the fresh standard normal noise of a DDIM step

# Induction over the steps k = s+1, ..., t of the stride: the schedule at step k, the latents, and the
# noise carried from earlier steps and the fresh noise of step k (independent standard normals).
alpha_bar_k_minus_1 = sp.Symbol(r"\bar{\alpha}_{k-1}", positive=True)
alpha_bar_k = sp.Symbol(r"\bar{\alpha}_k", positive=True)
beta_k = sp.Symbol(r"\beta_k", positive=True)
alpha_k = 1 - beta_k
x_k_minus_1 = sp.Symbol("x_{k-1}", real=True)
x_k = sp.Symbol("x_k", real=True)
eps_carried = sp.Symbol(r"\bar{\epsilon}_{k-1}", real=True)
eps_fresh = sp.Symbol(r"\epsilon_k", real=True)
# Composing q(x_s | x_0) with the stride: the noise of x_s given x_0 and the stride's own noise.
eps_s = sp.Symbol(r"\epsilon_s", real=True)
eps_stride = sp.Symbol(r"\epsilon'", real=True)
lam = sp.Symbol(r"\lambda", real=True)  # argument of a moment generating function


def _gaussian_mgf(variance: sp.Expr) -> sp.Expr:
    """E[exp(lambda Z)] for Z ~ N(0, variance)."""
    return sp.exp(variance * lam**2 / 2)


def _mean_and_variance(sample: sp.Expr, noises: tuple[sp.Symbol, ...]) -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance of `sample`, linear in independent standard normal `noises`, given the rest."""
    expanded = sp.expand(sample)
    mean = expanded.subs({n: 0 for n in noises})
    variance = sum(expanded.coeff(n) ** 2 for n in noises)
    return mean, variance


# --- The forward chain from s to t, by induction over k = s+1, ..., t ----------------------------
# Hypothesis at k - 1: x_{k-1} = sqrt(abar_{k-1} / abar_s) x_s + sqrt(1 - abar_{k-1} / abar_s) eps_carried.
X_K_MINUS_1_HYPOTHESIS = (
    sp.sqrt(alpha_bar_k_minus_1 / ALPHA_BAR_S) * x_s + sp.sqrt(1 - alpha_bar_k_minus_1 / ALPHA_BAR_S) * eps_carried
)
X_K_FROM_K_MINUS_1 = sp.sqrt(alpha_k) * x_k_minus_1 + sp.sqrt(beta_k) * eps_fresh  # q(x_k | x_{k-1})
X_K_COMPOSED = X_K_FROM_K_MINUS_1.subs(x_k_minus_1, X_K_MINUS_1_HYPOTHESIS)
X_K_EXPANDED = sp.expand(X_K_COMPOSED)
_MEAN_K, _VARIANCE_K_SUM = _mean_and_variance(X_K_EXPANDED, (eps_carried, eps_fresh))
STRIDE_MEAN_COEF_K = _MEAN_K.coeff(x_s)  # sqrt(alpha_k) sqrt(abar_{k-1} / abar_s)
STRIDE_VARIANCE_K = sp.expand(_VARIANCE_K_SUM)  # alpha_k (1 - abar_{k-1} / abar_s) + beta_k
X_K_NOISE_MGF = sp.Mul(
    *(_gaussian_mgf(X_K_EXPANDED.coeff(n) ** 2) for n in (eps_carried, eps_fresh)), evaluate=False
)

# Rename abar_{k-1} alpha_k as abar_k (alpha_k written as a positive symbol so that the square roots
# cancel), then take k = t: the stride's conditional q(x_t | x_s) in abar_t and abar_s alone.
_alpha_k_positive = sp.Symbol(r"\alpha_k", positive=True)


def _rename(expr: sp.Expr) -> sp.Expr:
    with_alpha = expr.subs(beta_k, 1 - _alpha_k_positive)
    renamed = sp.expand(with_alpha.subs(alpha_bar_k_minus_1, alpha_bar_k / _alpha_k_positive))
    return renamed.subs(alpha_bar_k, alpha_bar)


STRIDE_MEAN_COEF = _rename(STRIDE_MEAN_COEF_K)  # sqrt(abar_t / abar_s)
STRIDED_BETA = _rename(STRIDE_VARIANCE_K)  # 1 - abar_t / abar_s, the forward variance of the stride
if not STRIDE_MEAN_COEF.free_symbols | STRIDED_BETA.free_symbols <= {alpha_bar, ALPHA_BAR_S}:
    raise ArithmeticError(f"q(x_t | x_s) is not a function of abar_t, abar_s: {STRIDE_MEAN_COEF}, {STRIDED_BETA}")
X_T_FROM_X_S = STRIDE_MEAN_COEF * x_s + sp.sqrt(STRIDED_BETA) * eps_stride

# q(x_s | x_0) of derivation (a), composed with the stride, must give (a)'s q(x_t | x_0).
_marginal_mean_coef = forward_marginal.MEAN_COEF  # sqrt(abar_t), derived in (a)
_marginal_variance = forward_marginal.VARIANCE  # 1 - abar_t
X_S_FROM_X_0 = forward_marginal.X_T_REPARAMETERISED.subs({alpha_bar: ALPHA_BAR_S, eps: eps_s})
X_T_VIA_X_S = sp.expand(X_T_FROM_X_S.subs(x_s, X_S_FROM_X_0))
_MEAN_VIA_S, VARIANCE_VIA_S = _mean_and_variance(X_T_VIA_X_S, (eps_s, eps_stride))
MEAN_COEF_VIA_S = _MEAN_VIA_S.coeff(x_0)

# --- Bayes' rule and completing the square in x_s ------------------------------------------------
STEP_MEAN, STEP_VARIANCE = STRIDE_MEAN_COEF * x_s, STRIDED_BETA  # q(x_t | x_s)
S_MEAN = _marginal_mean_coef.subs(alpha_bar, ALPHA_BAR_S) * x_0  # q(x_s | x_0)
S_VARIANCE = _marginal_variance.subs(alpha_bar, ALPHA_BAR_S)
T_MEAN, T_VARIANCE = _marginal_mean_coef * x_0, _marginal_variance  # q(x_t | x_0)

BAYES_RATIO = (
    normal_density(x_t, STEP_MEAN, STEP_VARIANCE)
    * normal_density(x_s, S_MEAN, S_VARIANCE)
    / normal_density(x_t, T_MEAN, T_VARIANCE)
)
EXPONENT = (
    -((x_t - STEP_MEAN) ** 2) / (2 * STEP_VARIANCE)
    - (x_s - S_MEAN) ** 2 / (2 * S_VARIANCE)
    + (x_t - T_MEAN) ** 2 / (2 * T_VARIANCE)
)
NORMALISER_SQUARED = (2 * sp.pi * T_VARIANCE) / ((2 * sp.pi * STEP_VARIANCE) * (2 * sp.pi * S_VARIANCE))

_poly = sp.Poly(sp.expand(EXPONENT), x_s)
A2 = _poly.coeff_monomial(x_s**2)
A1 = _poly.coeff_monomial(x_s)
A0 = _poly.coeff_monomial(1)

PRECISION = sp.factor(sp.together(-2 * A2))
STRIDED_BETA_TILDE = sp.factor(1 / PRECISION)
_mean = sp.expand(A1 * STRIDED_BETA_TILDE)
STRIDED_MEAN_COEF_X0 = sp.factor(_mean.coeff(x_0))
STRIDED_MEAN_COEF_XT = sp.factor(_mean.coeff(x_t))
STRIDED_POSTERIOR_MEAN = STRIDED_MEAN_COEF_X0 * x_0 + STRIDED_MEAN_COEF_XT * x_t
REMAINDER = A0 + A1**2 * STRIDED_BETA_TILDE / 2

# --- The eps-parameterised strided mean ----------------------------------------------------------
# Invert (a)'s reparameterised sample x_t = sqrt(abar_t) x_0 + sqrt(1 - abar_t) eps for x_0.
(X0_FROM_EPS,) = sp.solve(sp.Eq(x_t, forward_marginal.X_T_REPARAMETERISED), x_0)
MEAN_SUBSTITUTED = STRIDED_POSTERIOR_MEAN.subs(x_0, X0_FROM_EPS)
_eps_mean_expanded = sp.expand(MEAN_SUBSTITUTED)
_RAW_EPS_COEF_XT = _eps_mean_expanded.coeff(x_t)  # c_0 / sqrt(abar_t) + c_t
_RAW_EPS_COEF_EPS = _eps_mean_expanded.coeff(eps)  # -c_0 sqrt(1 - abar_t) / sqrt(abar_t)
STRIDED_EPS_MEAN_COEF_XT = sp.factor(sp.cancel(_RAW_EPS_COEF_XT))
STRIDED_EPS_MEAN_COEF_EPS = sp.factor(sp.cancel(_RAW_EPS_COEF_EPS))
STRIDED_EPS_MEAN = STRIDED_EPS_MEAN_COEF_XT * x_t + STRIDED_EPS_MEAN_COEF_EPS * eps

# --- DDIM ----------------------------------------------------------------------------------------
# eq. (7): the family q_sigma(x_s | x_t, x_0) = N(Q_SIGMA_MEAN, sigma^2), a definition of the paper.
Q_SIGMA_ROOT = sp.sqrt(1 - ALPHA_BAR_S - sigma2_ddim)
Q_SIGMA_MEAN = sp.sqrt(ALPHA_BAR_S) * x_0 + Q_SIGMA_ROOT * (x_t - sp.sqrt(alpha_bar) * x_0) / sp.sqrt(1 - alpha_bar)
Q_SIGMA_MEAN_COEF_XT = sp.expand(Q_SIGMA_MEAN).coeff(x_t)
Q_SIGMA_MEAN_COEF_X0 = sp.expand(Q_SIGMA_MEAN).coeff(x_0)
# x_t from q(x_t | x_0) of derivation (a) with its noise eps, then one DDIM step with fresh noise z.
X_S_DDIM = Q_SIGMA_MEAN.subs(x_t, forward_marginal.X_T_REPARAMETERISED) + sp.sqrt(sigma2_ddim) * z
X_S_DDIM_EXPANDED = sp.expand(X_S_DDIM)
DDIM_MARGINAL_MEAN, DDIM_MARGINAL_VARIANCE_SUM = _mean_and_variance(X_S_DDIM_EXPANDED, (eps, z))
DDIM_MARGINAL_VARIANCE = sp.expand(DDIM_MARGINAL_VARIANCE_SUM)
DDIM_NOISE_MGF = sp.Mul(*(_gaussian_mgf(X_S_DDIM_EXPANDED.coeff(n) ** 2) for n in (eps, z)), evaluate=False)

# eq. (12): x_0 predicted from the network's eps_theta.
X0_HAT = X0_FROM_EPS.subs(eps, eps_theta)
DIRECTION = (x_t - sp.sqrt(alpha_bar) * X0_HAT) / sp.sqrt(1 - alpha_bar)  # "direction pointing to x_t"
Q_SIGMA_MEAN_AT_X0_HAT = Q_SIGMA_MEAN.subs(x_0, X0_HAT)

# eq. (16): sigma^2(eta) = eta^2 beta_tilde_{t,s}, with the derived beta_tilde_{t,s}.
DDIM_SIGMA2 = eta**2 * STRIDED_BETA_TILDE
DDIM_SIGMA2_AT_1 = DDIM_SIGMA2.subs(eta, 1)
SQRT_ARGUMENT_AT_1 = sp.factor(1 - ALPHA_BAR_S - DDIM_SIGMA2_AT_1)  # 1 - abar_s - sigma^2(1)
SQRT_ARGUMENT = sp.factor(1 - ALPHA_BAR_S - DDIM_SIGMA2)  # 1 - abar_s - sigma^2(eta)
# The DDIM update's deterministic part, in x_t, eps and eta: eq. (12) with eps for eps_theta, collected
# in x_t and eps while sigma^2 is still a symbol (so that the square root is not expanded), then eq. (16).
_ddim_mean_expanded = sp.expand(Q_SIGMA_MEAN.subs(x_0, X0_FROM_EPS))
DDIM_MEAN_COEF_XT = _ddim_mean_expanded.coeff(x_t)  # sqrt(abar_s / abar_t), whatever sigma^2
DDIM_MEAN_COEF_EPS = _ddim_mean_expanded.coeff(eps)
if sp.expand(DDIM_MEAN_COEF_XT * x_t + DDIM_MEAN_COEF_EPS * eps - _ddim_mean_expanded) != 0:
    raise ArithmeticError(f"the DDIM mean is not linear in x_t and eps: {_ddim_mean_expanded}")
DDIM_MEAN = (DDIM_MEAN_COEF_XT * x_t + DDIM_MEAN_COEF_EPS * eps).subs(sigma2_ddim, DDIM_SIGMA2)

# The forms of Song et al. (2021) (abar written alpha there), compared with the derived ones.
PAPER_STRIDE_MEAN_COEF = sp.sqrt(alpha_bar / ALPHA_BAR_S)
PAPER_STRIDED_BETA = 1 - alpha_bar / ALPHA_BAR_S
PAPER_STRIDED_BETA_TILDE = (1 - ALPHA_BAR_S) / (1 - alpha_bar) * (1 - alpha_bar / ALPHA_BAR_S)
PAPER_STRIDED_MEAN_COEF_X0 = sp.sqrt(ALPHA_BAR_S) * (1 - alpha_bar / ALPHA_BAR_S) / (1 - alpha_bar)
PAPER_STRIDED_MEAN_COEF_XT = sp.sqrt(alpha_bar / ALPHA_BAR_S) * (1 - ALPHA_BAR_S) / (1 - alpha_bar)
PAPER_STRIDED_EPS_MEAN = sp.sqrt(ALPHA_BAR_S / alpha_bar) * (
    x_t - (1 - alpha_bar / ALPHA_BAR_S) / sp.sqrt(1 - alpha_bar) * eps
)
PAPER_DDIM_SIGMA2 = eta**2 * (1 - ALPHA_BAR_S) / (1 - alpha_bar) * (1 - alpha_bar / ALPHA_BAR_S)
PAPER_X0_HAT = (x_t - sp.sqrt(1 - alpha_bar) * eps_theta) / sp.sqrt(alpha_bar)
PAPER_DDIM_MEAN = sp.sqrt(ALPHA_BAR_S) * (x_t - sp.sqrt(1 - alpha_bar) * eps) / sp.sqrt(alpha_bar) + sp.sqrt(
    1 - ALPHA_BAR_S - PAPER_DDIM_SIGMA2
) * eps

# s = t - 1 in the symbols of derivations/symbols.py: abar_s = abar_{t-1}, abar_t = abar_{t-1} (1 - beta_t).
ONE_STEP = {ALPHA_BAR_S: alpha_bar_prev, alpha_bar: alpha_bar_t}

# The stride's domain 0 < abar_t < abar_s < 1, for the steps that need it, by positive parameters p, q.
_p, _q = sp.symbols("p q", positive=True)
ON_DOMAIN = {ALPHA_BAR_S: 1 / (1 + _p), alpha_bar: 1 / ((1 + _p) * (1 + _q))}


def _on_domain(expr: sp.Expr) -> sp.Expr:
    """`expr` on 0 < abar_t < abar_s < 1 (see ON_DOMAIN), with the bases of its roots factored."""
    return roots_factored(sp.sympify(expr).subs(ON_DOMAIN, simultaneous=True))


def _one_step(expr: sp.Expr) -> sp.Expr:
    """`expr` at s = t - 1 (simultaneous substitution: abar_t's replacement contains abar_{t-1})."""
    return expr.subs(ONE_STEP, simultaneous=True)


def _forward_chain_steps() -> tuple[Step, ...]:
    """The forward chain: q(x_t | x_s) by induction over the stride, composed with q(x_s | x_0)."""
    return (
        Step(
            "Assumption (the induction hypothesis), over the steps k = s+1, ..., t of the stride; at k - 1: x_{k-1} = "
            "sqrt(abar_{k-1} / abar_s) x_s + sqrt(1 - abar_{k-1} / abar_s) times a standard normal noise "
            "carried from the steps s+1, ..., k-1 (derivation (a)'s induction, started at x_s).",
            x_k_minus_1,
            X_K_MINUS_1_HYPOTHESIS,
            Check.DEFINITION,
        ),
        Step(
            "Base case k - 1 = s: with abar_{k-1} = abar_s the hypothesis reads x_s = x_s.",
            X_K_MINUS_1_HYPOTHESIS.subs(alpha_bar_k_minus_1, ALPHA_BAR_S),
            x_s,
        ),
        Step(
            "Model: step k of the forward process, q(x_k | x_{k-1}) = N(sqrt(alpha_k) x_{k-1}, beta_k), with fresh "
            "noise independent of the carried one (alpha_k = 1 - beta_k).",
            x_k,
            X_K_FROM_K_MINUS_1,
            Check.DEFINITION,
        ),
        Step(
            "Compose: substitute the hypothesis for x_{k-1} and expand.",
            X_K_COMPOSED,
            X_K_EXPANDED,
        ),
        named_step(
            "Mean coefficient of x_s: sqrt(alpha_k) sqrt(abar_{k-1} / abar_s) = sqrt(abar_k / abar_s), "
            "since abar_k = abar_{k-1} alpha_k.",
            r"\frac{\mathbb{E}[x_k \mid x_s]}{x_s}",
            STRIDE_MEAN_COEF_K,
            sp.sqrt(alpha_bar_k_minus_1 * alpha_k / ALPHA_BAR_S),
        ),
        named_step(
            "Independent noise variances add: alpha_k (1 - abar_{k-1} / abar_s) + beta_k = 1 - abar_k / abar_s.",
            r"\operatorname{Var}[x_k \mid x_s]",
            STRIDE_VARIANCE_K,
            1 - alpha_bar_k_minus_1 * alpha_k / ALPHA_BAR_S,
        ),
        named_step(
            "The merged noise is Gaussian (its MGF is the product of the two factors' MGFs), so the "
            "hypothesis holds at k; at k = t this is the stride's conditional q(x_t | x_s).",
            r"\mathbb{E}\left[e^{\lambda \cdot \mathrm{noise}_k}\right]",
            X_K_NOISE_MGF,
            _gaussian_mgf(1 - alpha_bar_k_minus_1 * alpha_k / ALPHA_BAR_S),
        ),
        named_step(
            "Writing abar_{k-1} alpha_k as abar_k and taking k = t: the stride's mean coefficient.",
            r"\frac{\mathbb{E}[x_t \mid x_s]}{x_s}",
            STRIDE_MEAN_COEF,
            PAPER_STRIDE_MEAN_COEF,
        ),
        named_step(
            "... and its variance, the strided 'beta' 1 - abar_t / abar_s: x_t = sqrt(abar_t / abar_s) x_s "
            "+ sqrt(1 - abar_t / abar_s) eps' with eps' ~ N(0, 1).",
            r"\operatorname{Var}[x_t \mid x_s]",
            STRIDED_BETA,
            PAPER_STRIDED_BETA,
        ),
        Step(
            "Definition (the composed sample, for the consistency check with derivation (a)): draw x_s from "
            "q(x_s | x_0) = N(sqrt(abar_s) x_0, 1 - abar_s) (derivation (a) at s) and take the stride, with "
            "independent noises eps_s, eps'.",
            x_t,
            X_T_FROM_X_S.subs(x_s, X_S_FROM_X_0),
            Check.DEFINITION,
        ),
        named_step(
            "The mean coefficient of x_0: sqrt(abar_t / abar_s) sqrt(abar_s) is derivation (a)'s sqrt(abar_t).",
            r"\frac{\mathbb{E}[x_t \mid x_0]}{x_0}",
            MEAN_COEF_VIA_S,
            _marginal_mean_coef,
        ),
        named_step(
            "The variances add: (abar_t / abar_s)(1 - abar_s) + 1 - abar_t / abar_s is derivation (a)'s "
            "1 - abar_t, so the stride is consistent with q(x_t | x_0).",
            r"\operatorname{Var}[x_t \mid x_0]",
            VARIANCE_VIA_S,
            _marginal_variance,
        ),
    )


def _bayes_steps() -> tuple[Step, ...]:
    """The strided posterior: q(x_s | x_t, x_0) by Bayes' rule and completing the square in x_s."""
    ratio = 1 - alpha_bar / ALPHA_BAR_S
    return (
        Step(
            "Definition (Bayes' rule: a conditional density is the joint density over the marginal), with the "
            "model's Markov property q(x_t | x_s, x_0) = q(x_t | x_s): the stride "
            "q(x_t | x_s) found above times q(x_s | x_0) over q(x_t | x_0), both marginals from derivation (a).",
            sp.Symbol("q_strided_posterior"),
            BAYES_RATIO,
            Check.DEFINITION,
            lhs_latex=r"q(x_s \mid x_t, x_0)",
        ),
        Step(
            "The ratio is a constant times exp(E), E the sum of the three Gaussians' exponents. Expand E and "
            "collect it as a quadratic in x_s (coefficients read off the polynomial in x_s).",
            EXPONENT,
            A2 * x_s**2 + A1 * x_s + A0,
        ),
        named_step(
            "The x_s^2 coefficient gives the precision (abar_t / abar_s) / (1 - abar_t / abar_s) + "
            "1 / (1 - abar_s).",
            r"\frac{1}{\tilde{\beta}_{t,s}} = -2 [x_s^2] E",
            -2 * A2,
            (alpha_bar / ALPHA_BAR_S) / ratio + 1 / (1 - ALPHA_BAR_S),
        ),
        Step(
            "Over a common denominator: (abar_t / abar_s)(1 - abar_s) + 1 - abar_t / abar_s = 1 - abar_t.",
            (alpha_bar / ALPHA_BAR_S) / ratio + 1 / (1 - ALPHA_BAR_S),
            (1 - alpha_bar) / (ratio * (1 - ALPHA_BAR_S)),
        ),
        named_step(
            "The variance is the inverse precision.",
            r"\tilde{\beta}_{t,s}",
            STRIDED_BETA_TILDE,
            PAPER_STRIDED_BETA_TILDE,
        ),
        named_step(
            "The x_s coefficient is the linear term of the square: sqrt(abar_t / abar_s) x_t / (1 - abar_t / abar_s) "
            "+ sqrt(abar_s) x_0 / (1 - abar_s).",
            r"[x_s] E",
            A1,
            sp.sqrt(alpha_bar / ALPHA_BAR_S) * x_t / ratio + sp.sqrt(ALPHA_BAR_S) * x_0 / (1 - ALPHA_BAR_S),
        ),
        named_step(
            "Complete the square: the mean is [x_s] E times beta_tilde_{t,s}, expanded and collected in x_0 and x_t.",
            r"\tilde{\mu}_{t,s}",
            A1 * STRIDED_BETA_TILDE,
            PAPER_STRIDED_MEAN_COEF_X0 * x_0 + PAPER_STRIDED_MEAN_COEF_XT * x_t,
        ),
        named_step(
            "What the square leaves over, R = A_0 + ([x_s] E)^2 beta_tilde_{t,s} / 2, vanishes identically: "
            "no constant C(x_t, x_0) is left over.",
            "R",
            REMAINDER,
            sp.Integer(0),
        ),
        Step(
            "Hence the exponent is exactly the completed square, -(x_s - mu_tilde_{t,s})^2 / (2 beta_tilde_{t,s}).",
            EXPONENT,
            -((x_s - STRIDED_POSTERIOR_MEAN) ** 2) / (2 * STRIDED_BETA_TILDE),
            lhs_latex="E",
        ),
        named_step(
            "The normalisers match too: Z_{q(x_t|x_0)}^2 / (Z_{q(x_t|x_s)}^2 Z_{q(x_s|x_0)}^2) = "
            "1 / (2 pi beta_tilde_{t,s}).",
            r"\frac{2\pi(1-\bar{\alpha}_t)}{2\pi(1-\bar{\alpha}_t/\bar{\alpha}_s) \cdot 2\pi(1-\bar{\alpha}_s)}",
            NORMALISER_SQUARED,
            1 / (2 * sp.pi * PAPER_STRIDED_BETA_TILDE),
        ),
    )


def _reduction_steps() -> tuple[Step, ...]:
    """Reductions: s = t - 1 gives derivations (b) and (d); the eps-mean; the two variances; s = 0."""
    return (
        named_step(
            "Reduction to derivation (b): at s = t - 1 (abar_s = abar_{t-1}, abar_t = abar_{t-1}(1 - beta_t)) "
            "the x_0 coefficient is (b)'s.",
            r"[x_0]\, \tilde{\mu}_{t,t-1}",
            _one_step(STRIDED_MEAN_COEF_X0),
            posterior.MEAN_COEF_X0,
        ),
        named_step(
            "... the x_t coefficient is (b)'s.",
            r"[x_t]\, \tilde{\mu}_{t,t-1}",
            _one_step(STRIDED_MEAN_COEF_XT),
            posterior.MEAN_COEF_XT,
        ),
        named_step(
            "... and the variance is (b)'s beta_tilde_t.",
            r"\tilde{\beta}_{t,t-1}",
            _one_step(STRIDED_BETA_TILDE),
            posterior.VARIANCE,
        ),
        Step(
            "The eps-parameterised mean: x_0 solved from derivation (a)'s x_t = sqrt(abar_t) x_0 + "
            "sqrt(1 - abar_t) eps (sympy.solve); substituted back into derivation (a)'s sample it gives x_t.",
            forward_marginal.X_T_REPARAMETERISED.subs(x_0, X0_FROM_EPS),
            x_t,
            lhs_latex=r"\sqrt{\bar{\alpha}_t}\, x_0(x_t, \epsilon) + \sqrt{1 - \bar{\alpha}_t}\, \epsilon",
        ),
        named_step(
            "Substitute it into mu_tilde_{t,s} and expand: x_t collects c_0 / sqrt(abar_t) + c_t, eps collects "
            "-c_0 sqrt(1 - abar_t) / sqrt(abar_t).",
            r"\tilde{\mu}_{t,s}\left(x_t, x_0(x_t, \epsilon)\right)",
            MEAN_SUBSTITUTED,
            _RAW_EPS_COEF_XT * x_t + _RAW_EPS_COEF_EPS * eps,
        ),
        Step(
            "The x_t coefficient: over the denominator sqrt(abar_t / abar_s)(1 - abar_t) the numerator is "
            "(1 - abar_t / abar_s) + (abar_t / abar_s)(1 - abar_s) = 1 - abar_t, which cancels.",
            _RAW_EPS_COEF_XT,
            ((1 - alpha_bar / ALPHA_BAR_S) + (alpha_bar / ALPHA_BAR_S) * (1 - ALPHA_BAR_S))
            / (sp.sqrt(alpha_bar / ALPHA_BAR_S) * (1 - alpha_bar)),
        ),
        named_step(
            "So the strided eps-mean is sqrt(abar_s / abar_t)(x_t - (1 - abar_t / abar_s) / sqrt(1 - abar_t) eps).",
            r"\tilde{\mu}_{t,s}",
            STRIDED_EPS_MEAN,
            PAPER_STRIDED_EPS_MEAN,
        ),
        named_step(
            "Reduction to derivation (d): at s = t - 1 it is Algorithm 2, line 4.",
            r"\tilde{\mu}_{t,t-1}",
            _one_step(STRIDED_EPS_MEAN),
            eps_parameterisation.EPS_MEAN,
        ),
        named_step(
            "The two reverse variances over a stride: the first is the stride's forward variance "
            "1 - abar_t / abar_s, which at s = t - 1 is beta_t ...",
            r"1 - \bar{\alpha}_t / \bar{\alpha}_{t-1}",
            _one_step(STRIDED_BETA),
            beta_t,
        ),
        named_step(
            "... the second is beta_tilde_{t,s} = (1 - abar_s) / (1 - abar_t) times the first ...",
            r"\tilde{\beta}_{t,s}",
            STRIDED_BETA_TILDE,
            (1 - ALPHA_BAR_S) / (1 - alpha_bar) * STRIDED_BETA,
        ),
        named_step(
            "... and is the smaller: their gap is abar_s (1 - abar_t / abar_s)^2 / (1 - abar_t) >= 0.",
            r"\left(1 - \frac{\bar{\alpha}_t}{\bar{\alpha}_s}\right) - \tilde{\beta}_{t,s}",
            STRIDED_BETA - STRIDED_BETA_TILDE,
            ALPHA_BAR_S * STRIDED_BETA**2 / (1 - alpha_bar),
        ),
        Step(
            "s = 0 (abar_s = 1): the last step adds no noise, beta_tilde_{t,0} = 0 ...",
            STRIDED_BETA_TILDE.subs(ALPHA_BAR_S, 1),
            sp.Integer(0),
            lhs_latex=r"\tilde{\beta}_{t,0}",
        ),
        Step(
            "... its mean is x_0 itself ...",
            STRIDED_POSTERIOR_MEAN.subs(ALPHA_BAR_S, 1),
            x_0,
            lhs_latex=r"\tilde{\mu}_{t,0}(x_t, x_0)",
        ),
        Step(
            "... so with eps it is the x_0 predicted from eps, (x_t - sqrt(1 - abar_t) eps) / sqrt(abar_t) ...",
            STRIDED_EPS_MEAN.subs(ALPHA_BAR_S, 1),
            X0_FROM_EPS,
            lhs_latex=r"\tilde{\mu}_{t,0}(x_t, \epsilon)",
        ),
        Step(
            "... and the forward variance 1 - abar_t / abar_0 is q(x_t | x_0)'s 1 - abar_t.",
            STRIDED_BETA.subs(ALPHA_BAR_S, 1),
            _marginal_variance,
            lhs_latex=r"1 - \bar{\alpha}_t / \bar{\alpha}_0",
        ),
    )


def _ddim_steps() -> tuple[Step, ...]:
    """DDIM: eq. (7) preserves the marginals; eq. (12); eq. (16) at eta = 1 and eta = 0."""
    return (
        Step(
            "Definition: DDIM's family (eq. 7), q_sigma(x_s | x_t, x_0) = N(mean, sigma^2), for any sigma^2 in "
            "[0, 1 - abar_s] (so that the square root is real).",
            sp.Symbol(r"\mu_\sigma"),
            Q_SIGMA_MEAN,
            Check.DEFINITION,
            lhs_latex=r"\mathbb{E}_{q_\sigma}[x_s \mid x_t, x_0]",
        ),
        Step(
            "Draw x_t from q(x_t | x_0) of derivation (a) (noise eps) and then x_s from q_sigma (fresh noise z), "
            "and expand.",
            X_S_DDIM,
            X_S_DDIM_EXPANDED,
            lhs_latex="x_s",
        ),
        named_step(
            "The noises have mean zero: the mean of x_s given x_0 is sqrt(abar_s) x_0, whatever sigma^2 ...",
            r"\mathbb{E}_{q_\sigma}[x_s \mid x_0]",
            DDIM_MARGINAL_MEAN,
            _marginal_mean_coef.subs(alpha_bar, ALPHA_BAR_S) * x_0,
        ),
        named_step(
            "... and the independent variances add to (1 - abar_s - sigma^2) + sigma^2 = 1 - abar_s.",
            r"\operatorname{Var}_{q_\sigma}[x_s \mid x_0]",
            DDIM_MARGINAL_VARIANCE_SUM,
            _marginal_variance.subs(alpha_bar, ALPHA_BAR_S),
        ),
        named_step(
            "The sum is Gaussian (product of MGFs): q_sigma keeps the marginal q(x_s | x_0) of derivation (a) "
            "for every sigma^2 in [0, 1 - abar_s].",
            r"\mathbb{E}\left[e^{\lambda \cdot \mathrm{noise}_s}\right]",
            DDIM_NOISE_MGF,
            _gaussian_mgf(_marginal_variance.subs(alpha_bar, ALPHA_BAR_S)),
        ),
        named_step(
            "eq. (12): predict x_0 from the network's eps_theta with the inverted forward sample (as for the "
            "eps-mean) ...",
            r"\hat{x}_0",
            X0_HAT,
            PAPER_X0_HAT,
        ),
        named_step(
            "... then the 'direction pointing to x_t', (x_t - sqrt(abar_t) x0_hat) / sqrt(1 - abar_t), is "
            "eps_theta itself ...",
            r"\frac{x_t - \sqrt{\bar{\alpha}_t}\, \hat{x}_0}{\sqrt{1 - \bar{\alpha}_t}}",
            DIRECTION,
            eps_theta,
        ),
        named_step(
            "... so the q_sigma mean at x_0 = x0_hat is eq. (12)'s sqrt(abar_s) x0_hat + "
            "sqrt(1 - abar_s - sigma^2) eps_theta, and x_s adds sigma z.",
            r"\mathbb{E}_{q_\sigma}[x_s \mid x_t, \hat{x}_0]",
            Q_SIGMA_MEAN_AT_X0_HAT,
            sp.sqrt(ALPHA_BAR_S) * X0_HAT + sp.sqrt(1 - ALPHA_BAR_S - sigma2_ddim) * eps_theta,
        ),
        named_step(
            "With eps for eps_theta and collected in x_t and eps: the x_t coefficient is sqrt(abar_s / abar_t) "
            "for every sigma^2; only the eps coefficient depends on it.",
            r"\mathbb{E}_{q_\sigma}[x_s \mid x_t, \hat{x}_0(x_t, \epsilon)]",
            Q_SIGMA_MEAN.subs(x_0, X0_FROM_EPS),
            sp.sqrt(ALPHA_BAR_S / alpha_bar) * x_t
            + (Q_SIGMA_ROOT - sp.sqrt(ALPHA_BAR_S) * sp.sqrt(1 - alpha_bar) / sp.sqrt(alpha_bar)) * eps,
        ),
        named_step(
            "eq. (16): sigma^2(eta) = eta^2 beta_tilde_{t,s}, with the strided posterior variance beta_tilde_{t,s} "
            "derived above.",
            r"\sigma_{t,s}^2(\eta)",
            DDIM_SIGMA2,
            PAPER_DDIM_SIGMA2,
        ),
        Step(
            "eta = 0: no noise, the DDIM step is deterministic.",
            DDIM_SIGMA2.subs(eta, 0),
            sp.Integer(0),
            lhs_latex=r"\sigma_{t,s}^2(0)",
        ),
        named_step(
            "The square root's argument 1 - abar_s - sigma^2(eta) factors as (1 - abar_s)(1 - abar_t - "
            "eta^2 (1 - abar_t / abar_s)) / (1 - abar_t), nonnegative for eta in [0, 1] since "
            "1 - abar_t / abar_s <= 1 - abar_t.",
            r"1 - \bar{\alpha}_s - \sigma_{t,s}^2(\eta)",
            SQRT_ARGUMENT,
            (1 - ALPHA_BAR_S) * (1 - alpha_bar - eta**2 * (1 - alpha_bar / ALPHA_BAR_S)) / (1 - alpha_bar),
        ),
        named_step(
            "At eta = 1 it is (abar_t / abar_s)(1 - abar_s)^2 / (1 - abar_t) >= 0: sigma^2(1) <= 1 - abar_s, "
            "the square root is real.",
            r"1 - \bar{\alpha}_s - \sigma_{t,s}^2(1)",
            SQRT_ARGUMENT_AT_1,
            (alpha_bar / ALPHA_BAR_S) * (1 - ALPHA_BAR_S) ** 2 / (1 - alpha_bar),
        ),
        named_step(
            "eta = 1: the squared x_t coefficient of the q_sigma mean, (1 - abar_s - sigma^2(1)) / (1 - abar_t), "
            "is c_t^2; both are nonnegative, so the x_t coefficient is c_t ...",
            r"\left([x_t]\, \mathbb{E}_{q_\sigma}\right)^2",
            (Q_SIGMA_MEAN_COEF_XT**2).subs(sigma2_ddim, DDIM_SIGMA2_AT_1),
            STRIDED_MEAN_COEF_XT**2,
        ),
        named_step(
            "... and the x_0 coefficient sqrt(abar_s) - sqrt(abar_t) [x_t] is then sqrt(abar_s) - sqrt(abar_t) c_t "
            "= c_0.",
            r"[x_0]\, \mathbb{E}_{q_\sigma}",
            Q_SIGMA_MEAN_COEF_X0.subs(Q_SIGMA_ROOT, STRIDED_MEAN_COEF_XT * sp.sqrt(1 - alpha_bar)),
            STRIDED_MEAN_COEF_X0,
        ),
    )


@functools.cache
def derivation() -> Derivation:
    """The chain of steps from the forward process over a stride to the strided posterior and DDIM."""
    steps = _forward_chain_steps() + _bayes_steps() + _reduction_steps() + _ddim_steps()
    results = (
        Step(
            "The Bayes ratio is exactly the Gaussian density N(x_s; mu_tilde_{t,s}, beta_tilde_{t,s}), "
            "normalisation included: both are positive, so they are compared as logs, on the domain "
            "abar_s = 1 / (1 + p), abar_t = abar_s / (1 + q) with p, q > 0 (0 < abar_t < abar_s < 1), where "
            "every factor is positive and the logs split exactly.",
            log_of_positive(BAYES_RATIO.subs(ON_DOMAIN, simultaneous=True)),
            log_of_positive(normal_density(x_s, STRIDED_POSTERIOR_MEAN, STRIDED_BETA_TILDE).subs(
                ON_DOMAIN, simultaneous=True)),
            lhs_latex=r"\log \frac{q(x_t \mid x_s)\, q(x_s \mid x_0)}{q(x_t \mid x_0)}",
        ),
        named_step(
            "Strided posterior mean coefficient of x_0.",
            r"[x_0]\, \tilde{\mu}_{t,s}",
            STRIDED_MEAN_COEF_X0,
            PAPER_STRIDED_MEAN_COEF_X0,
        ),
        named_step(
            "Strided posterior mean coefficient of x_t.",
            r"[x_t]\, \tilde{\mu}_{t,s}",
            STRIDED_MEAN_COEF_XT,
            PAPER_STRIDED_MEAN_COEF_XT,
        ),
        named_step(
            "Strided posterior variance beta_tilde_{t,s}.",
            r"\tilde{\beta}_{t,s}",
            STRIDED_BETA_TILDE,
            PAPER_STRIDED_BETA_TILDE,
        ),
        named_step(
            "The stride's forward variance, the first reverse variance (beta_t at s = t - 1).",
            r"\operatorname{Var}[x_t \mid x_s]",
            STRIDED_BETA,
            PAPER_STRIDED_BETA,
        ),
        named_step(
            "The eps-parameterised strided mean (the reverse step's mean with eps_theta for eps).",
            r"\tilde{\mu}_{t,s}(x_t, \epsilon)",
            STRIDED_EPS_MEAN,
            PAPER_STRIDED_EPS_MEAN,
        ),
        named_step(
            "DDIM's sigma^2(eta) (eq. 16).",
            r"\sigma_{t,s}^2(\eta)",
            DDIM_SIGMA2,
            PAPER_DDIM_SIGMA2,
        ),
        named_step(
            "DDIM's deterministic part (eq. 12) in x_t and eps.",
            r"\mu_{\mathrm{DDIM}}(x_t, \epsilon, \eta)",
            DDIM_MEAN,
            PAPER_DDIM_MEAN,
        ),
        named_step(
            "eta = 1: the q_sigma variance is the strided posterior variance beta_tilde_{t,s} ...",
            r"\sigma_{t,s}^2(1)",
            DDIM_SIGMA2_AT_1,
            STRIDED_BETA_TILDE,
        ),
        Step(
            "... and the q_sigma mean is the strided posterior mean: the DDIM step with eta = 1 is the strided "
            "ancestral step with beta_tilde_{t,s} (on the domain abar_s = 1 / (1 + p), abar_t = abar_s / (1 + q), "
            "p, q > 0, where the square root of (1 - abar_s)^2 abar_t / abar_s / (1 - abar_t) splits into positive "
            "factors).",
            _on_domain(Q_SIGMA_MEAN.subs(sigma2_ddim, DDIM_SIGMA2_AT_1)),
            _on_domain(STRIDED_POSTERIOR_MEAN),
            lhs_latex=r"\mathbb{E}_{q_\sigma}[x_s \mid x_t, x_0]\big|_{\eta = 1}",
        ),
        Step(
            "eta = 1 with x_0 predicted from eps: the DDIM mean is the strided eps-mean (on the same domain).",
            _on_domain(DDIM_MEAN.subs(eta, 1)),
            _on_domain(STRIDED_EPS_MEAN),
            lhs_latex=r"\mu_{\mathrm{DDIM}}(x_t, \epsilon, 1)",
        ),
        named_step(
            "eta = 0: the deterministic DDIM update sqrt(abar_s) x0_hat + sqrt(1 - abar_s) eps.",
            r"\mu_{\mathrm{DDIM}}(x_t, \epsilon, 0)",
            DDIM_MEAN.subs(eta, 0),
            sp.sqrt(ALPHA_BAR_S) * X0_FROM_EPS + sp.sqrt(1 - ALPHA_BAR_S) * eps,
        ),
    )
    return Derivation(
        key="i",
        title=(
            "The strided chain q(x_s | x_t, x_0) for s < t, its reverse step, and DDIM "
            "(Song et al. 2021, eqs. 7, 12, 16)"
        ),
        module=__name__,
        summary=(
            "A sampler that skips timesteps jumps from t to an earlier s in one step. The forward steps s+1, ..., t "
            "compose, by derivation (a)'s induction started at x_s, into one Gaussian step "
            "q(x_t | x_s) = N(sqrt(abar_t / abar_s) x_s, 1 - abar_t / abar_s), which composed with q(x_s | x_0) "
            "gives back q(x_t | x_0). Bayes' rule with this step and the two marginals, expanded and collected "
            "as a quadratic in x_s, completes to the strided posterior N(c_0 x_0 + c_t x_t, beta_tilde_{t,s}) "
            "with no remainder and matching normalisers; at s = t - 1 its coefficients and variance are those of "
            "derivation (b), and with x_0 predicted from eps its mean is sqrt(abar_s / abar_t)(x_t - "
            "(1 - abar_t / abar_s) / sqrt(1 - abar_t) eps), Algorithm 2's line 4 at s = t - 1. The reverse "
            "step over a stride may use the stride's forward variance 1 - abar_t / abar_s or the smaller "
            "beta_tilde_{t,s}, which vanishes at s = 0, where the mean is x_0. DDIM's family q_sigma "
            "(Song et al. eq. 7) keeps every marginal q(x_s | x_0) for any sigma^2 in [0, 1 - abar_s]; with x_0 "
            "predicted from eps_theta its mean is eq. (12)'s update, and with eq. (16)'s sigma^2(eta) = "
            "eta^2 beta_tilde_{t,s} the step at eta = 1 is exactly the strided posterior step, while eta = 0 "
            "is deterministic."
        ),
        steps=steps,
        results=results,
    )


_ARGS = (alpha_bar, ALPHA_BAR_S)
strided_posterior_mean_coef_x0 = float64_function(STRIDED_MEAN_COEF_X0, _ARGS, "strided_posterior_mean_coef_x0")
strided_posterior_mean_coef_xt = float64_function(STRIDED_MEAN_COEF_XT, _ARGS, "strided_posterior_mean_coef_xt")
strided_beta_tilde = float64_function(STRIDED_BETA_TILDE, _ARGS, "strided_beta_tilde")
strided_beta = float64_function(STRIDED_BETA, _ARGS, "strided_beta")
ddim_sigma2 = float64_function(DDIM_SIGMA2, (*_ARGS, eta), "ddim_sigma2")

__all__ = [
    "ALPHA_BAR_S",
    "DDIM_MEAN",
    "DDIM_SIGMA2",
    "STRIDED_BETA",
    "STRIDED_BETA_TILDE",
    "STRIDED_EPS_MEAN",
    "STRIDED_MEAN_COEF_X0",
    "STRIDED_MEAN_COEF_XT",
    "STRIDED_POSTERIOR_MEAN",
    "ddim_sigma2",
    "derivation",
    "strided_beta",
    "strided_beta_tilde",
    "strided_posterior_mean_coef_x0",
    "strided_posterior_mean_coef_xt",
]
