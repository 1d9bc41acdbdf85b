"""(u) The KL-optimal Gaussian reverse kernel: mean and variance jointly (Bao et al. 2022, Theorem 1), and t = 1.

Derivation (j) assumed the optimal mean and minimised over the variance alone. Here both are optimised. For any
q(x_{t-1} | x_t) the KL to an isotropic Gaussian N(mu, sigma^2 I) is its cross-entropy minus the entropy of q,
and per coordinate the cross-entropy depends on q only through its conditional mean m and variance v:

    E_q[-log N(y; mu, sigma^2)] = log(2 pi sigma^2) / 2 + (v + (m - mu)^2) / (2 sigma^2).

Minimising E_{q(x_t)} KL over mu(.) and sigma^2 (gradient equations, second-order conditions) gives
mu*(x_t) = E[x_{t-1} | x_t] and sigma*^2 = E Var(x_{t-1} | x_t) per coordinate. The posterior q(x_{t-1} | x_t, x_0)
of derivation (b) is Gaussian with mean linear in x_0, so by the tower property mu* = mu_tilde(E[x_0 | x_t], x_t),
the eps-form mean of derivation (d) at eps* = E[eps | x_t], and sigma*^2 = beta_tilde_t + c_0^2 E Var(x_0 | x_t),
which is derivation (j)'s sigma*^2(Gamma_t). At t = 1 the bound term is undefined (beta_tilde_1 = 0); the decoder's
cost L_0 = E[-log N(x_0; mu_theta(x_1, 1), sigma_1^2)] is minimised at sigma_1^2 = E(x_0 - mu_theta)^2 per
coordinate = beta_1 / (1 - beta_1) (1 - Gamma_1) at the optimal denoiser, (j)'s formula at alpha_bar_0 = 1. The code
uses sigma_1^2 = beta_1, the optimum only where Gamma_1 = beta_1 (data x_0 ~ N(0, I)). A discretised decoder (bins
of width delta) has, for sigma_1 >> delta, the optimum E(x_0 - mu_theta)^2 - delta^2 / 12 + O(delta^4) (Sheppard).

Exports (symbols: MU mu, SIGMA2 sigma^2, COND_MEAN m, COND_VAR v, V the mean conditional variance, E1 the
decoder's mean square error, DELTA the bin width):
    CROSS_ENTROPY          E_q[-log N(y; mu, sigma^2)] per coordinate in (m, v, mu, sigma^2)
    MU_STAR                the minimising mean, m
    SIGMA2_STAR            the minimising variance, V
    MU_STAR_POSTERIOR      E[x_{t-1} | x_t] = mu_tilde(x0_hat, x_t)
    SIGMA2_STAR_POSTERIOR  beta_tilde_t + c_0^2 V_t (V_t = E Var(x_0 | x_t) per coordinate)
    SIGMA2_DECODER         beta_1 (1 - Gamma_1) / (1 - beta_1), the decoder's optimum at the optimal denoiser
    SIGMA2_DECODER_DISCRETE  E1 - delta^2 / 12, the discretised decoder's optimum to O(delta^4)
Numeric (float64, broadcasting, 50-digit evaluation):
    sigma2_decoder(beta_1, Gamma_1)
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation, posterior
from derivations import optimal_variance as ov
from derivations.chain import Check, Derivation, Step
from derivations.gaussian_kl import normal_expectation
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import (
    AT_T1,
    alpha_bar_prev,
    alpha_bar_t,
    beta_t,
    eps,
    eps_theta,
    normal_density,
    normal_log_density,
    x_0,
    x_prev,
    x_t,
)

y = sp.Symbol("y", real=True)  # one coordinate of x_{t-1}, the integration variable
MU = sp.Symbol(r"\mu", real=True)
SIGMA2 = sp.Symbol(r"\sigma^2", positive=True)
COND_MEAN = sp.Symbol("m", real=True)  # E[y | x_t]
COND_VAR = sp.Symbol("v", positive=True)  # Var(y | x_t)
W = sp.Symbol("w", positive=True)  # the probability (or density) of one value of x_t
D = sp.Symbol("d", positive=True, integer=True)  # the dimension
V = sp.Symbol("V", positive=True)  # (1/d) sum_i E Var(x_{t-1, i} | x_t), the mean conditional variance
ENTROPY = sp.Symbol(r"\bar{H}", real=True)  # E_{x_t} H(q(x_{t-1} | x_t)): free of mu and sigma^2
Q = sp.Function("q", positive=True)(y)  # the density of q(x_{t-1} | x_t), one coordinate
_LINE = (y, -sp.oo, sp.oo)
V_T = sp.Symbol("V_t", positive=True)  # E Var(x_0 | x_t) per coordinate
E1 = sp.Symbol("E_1", positive=True)  # E(x_0 - mu_theta(x_1, 1))^2 per coordinate
DELTA = sp.Symbol(r"\delta", positive=True)  # the bin width of a discretised decoder
_z = sp.Symbol("z", real=True)  # x_0 - mu_theta
_u = sp.Symbol("u", real=True)  # position inside a bin
_eta = sp.Symbol(r"\eta", real=True)
GAMMA = ov.GAMMA


def _merge(expr: sp.Expr) -> sp.Integral:
    """A linear combination of integrals over the line in y as one integral (linearity of the integral)."""
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):
        coefficient, integral = term.as_independent(sp.Integral)
        if not isinstance(integral, sp.Integral) or integral.limits != (_LINE,):
            raise ValueError(f"_merge takes integrals over the line in y, got {term}")
        total += coefficient * integral.function
    return sp.Integral(total, _LINE)


# --- 1. The cross-entropy of any q to a Gaussian ---------------------------------------------------
NEG_LOG_NORMAL = -normal_log_density(y, MU, SIGMA2)
_NEG_LOG_POLY = sp.log(2 * sp.pi * SIGMA2) / 2 + y**2 / (2 * SIGMA2) - MU * y / SIGMA2 + MU**2 / (2 * SIGMA2)
_MOMENT_INTEGRALS = tuple(sp.Integral(y**k * Q, _LINE) for k in range(3))
_CE_IN_MOMENTS = (
    (sp.log(2 * sp.pi * SIGMA2) / 2 + MU**2 / (2 * SIGMA2)) * _MOMENT_INTEGRALS[0]
    - MU / SIGMA2 * _MOMENT_INTEGRALS[1]
    + _MOMENT_INTEGRALS[2] / (2 * SIGMA2)
)
_MOMENTS = dict(zip(_MOMENT_INTEGRALS, (sp.Integer(1), COND_MEAN, COND_VAR + COND_MEAN**2), strict=True))
CROSS_ENTROPY = _CE_IN_MOMENTS.subs(_MOMENTS)

# --- 2. Joint minimisation over mu(.) and sigma^2 --------------------------------------------------
_TERM = W * CROSS_ENTROPY  # the one term of the objective in which mu(x_t)_i enters
(MU_STAR,) = sp.solve(sp.diff(_TERM, MU), MU)
# With mu = m everywhere: d coordinates, weights summing to 1, conditional variances averaging V.
OBJECTIVE_PROFILE = D * sp.log(2 * sp.pi * SIGMA2) / 2 + D * V / (2 * SIGMA2) - ENTROPY
(SIGMA2_STAR,) = sp.solve(sp.diff(OBJECTIVE_PROFILE, SIGMA2), SIGMA2)

# --- 3. Through the data posterior ---------------------------------------------------------------
_INNER_MEAN = normal_expectation(x_prev, x_prev, posterior.POSTERIOR_MEAN, posterior.VARIANCE)
_INNER_SECOND = normal_expectation(x_prev**2, x_prev, posterior.POSTERIOR_MEAN, posterior.VARIANCE)
MU_STAR_POSTERIOR = ov.conditional_expectation(_INNER_MEAN)
_VAR_PREV = sp.expand(ov.conditional_expectation(_INNER_SECOND) - MU_STAR_POSTERIOR**2)
SIGMA2_STAR_POSTERIOR = ov.BETA_TILDE + ov.C0**2 * V_T
_V_FROM_GAMMA = (1 - GAMMA) * (1 - alpha_bar_t) / alpha_bar_t  # 1 - Gamma_t = alpha_bar_t / (1 - alpha_bar_t) V_t

# --- 4. t = 1: the decoder's cost ----------------------------------------------------------------
_T1 = {alpha_bar_prev: sp.Integer(1)}
# E[-log N(x_0; mu_theta, sigma_1^2)]: q is the data posterior q(x_0 | x_1), and the mean over x_1 of the cross-entropy
# (affine in v + (m - mu)^2) replaces v + (m - mu)^2 by its mean E_1.
DECODER_COST = CROSS_ENTROPY.subs(COND_VAR, E1 - (COND_MEAN - MU) ** 2)
_DECODER_COST = sp.log(2 * sp.pi * SIGMA2) / 2 + E1 / (2 * SIGMA2)
(SIGMA2_DECODER_STAR,) = sp.solve(sp.diff(_DECODER_COST, SIGMA2), SIGMA2)
DECODER_GAP = (eps_parameterisation.X0_FROM_EPS - eps_parameterisation.MU_THETA).subs(_T1)
_GAP_COEF = sp.sqrt(beta_t) / sp.sqrt(1 - beta_t)
SIGMA2_DECODER = sp.factor(ov.expectation(sp.expand(DECODER_GAP**2)))
(GAMMA_CODE_T1,) = sp.solve(sp.Eq(SIGMA2_DECODER, beta_t), GAMMA)  # where the code's beta_1 is the optimum

# A discretised decoder: the probability of the bin [x_0 - delta/2, x_0 + delta/2], Taylor in the offset u.
_TAYLOR = sp.series(normal_density(_z + _u, 0, SIGMA2), _u, 0, 4).removeO()
_BIN_RATIO = sp.integrate(_TAYLOR, (_u, -DELTA / 2, DELTA / 2)) / (DELTA * normal_density(_z, 0, SIGMA2))
_LOG_RATIO = sp.expand(sp.series(sp.log(sp.expand(sp.simplify(_BIN_RATIO))), DELTA, 0, 4).removeO())
_EXPECTED_LOG_RATIO = _LOG_RATIO.subs(_z**2, E1)  # linear in z^2: its mean replaces z^2 by E1
_DISCRETE_COST = _DECODER_COST - _EXPECTED_LOG_RATIO  # + log(1/delta), free of sigma^2
_SLOPE = sp.series(sp.diff(_DISCRETE_COST, SIGMA2).subs(SIGMA2, E1 + _eta * DELTA**2), DELTA, 0, 3).removeO()
(ETA_STAR,) = sp.solve(sp.expand(_SLOPE / DELTA**2), _eta)
SIGMA2_DECODER_DISCRETE = E1 + ETA_STAR * DELTA**2

_AT_T1 = AT_T1 + ((GAMMA, sp.Symbol(r"\Gamma_1", positive=True)),)


def _cross_entropy_steps() -> tuple[Step, ...]:
    integral_ce = sp.Integral(Q * NEG_LOG_NORMAL, _LINE)
    return (
        Step(
            "Any q(x_{t-1} | x_t), one coordinate y of x_{t-1}: an isotropic Gaussian's -log density is a sum over "
            "coordinates, each log(2 pi sigma^2) / 2 + (y - mu)^2 / (2 sigma^2), a quadratic in y.",
            NEG_LOG_NORMAL,
            _NEG_LOG_POLY,
            lhs_latex=r"-\log \mathcal{N}(y; \mu, \sigma^2)",
        ),
        Step(
            "Integrated against q (linearity of the integral): the cross-entropy is a combination of q's first "
            "three moment integrals.",
            _merge(integral_ce - _CE_IN_MOMENTS),
            sp.Integer(0),
            lhs_latex=r"\int q\,(-\log \mathcal{N}) - \left(\ldots \int q + \ldots \int y q + \ldots \int y^2 q\right)",
        ),
        Step(
            "Definitions: q is a density with conditional mean m and variance v.",
            sp.Tuple(*_MOMENT_INTEGRALS),
            sp.Tuple(*_MOMENTS.values()),
            Check.DEFINITION,
        ),
        named_step(
            "So the cross-entropy depends on q only through m and v. KL(q || N) = cross-entropy - H(q), and H(q) "
            "does not depend on (mu, sigma^2): minimising the KL is minimising the cross-entropy.",
            r"\mathbb{E}_q[-\log \mathcal{N}(y; \mu, \sigma^2)]",
            CROSS_ENTROPY,
            sp.log(2 * sp.pi * SIGMA2) / 2 + (COND_VAR + (COND_MEAN - MU) ** 2) / (2 * SIGMA2),
        ),
    )


def _joint_steps() -> tuple[Step, ...]:
    term = r"w\, \mathbb{E}_q[-\log \mathcal{N}]"
    return (
        named_step(
            "The objective E_{q(x_t)} KL is a sum (or integral) over values of x_t of weight w and coordinates i; "
            "mu(x_t)_i enters only its own term w (v + (m - mu)^2) / (2 sigma^2), so mu(.) is optimised pointwise. "
            "Its derivative ...",
            r"\partial_\mu " + term,
            sp.diff(_TERM, MU),
            W * (MU - COND_MEAN) / SIGMA2,
        ),
        named_step(
            "... vanishes only at mu = m = E[x_{t-1} | x_t] (sympy.solve), for every sigma^2 ...",
            r"\mu^*",
            MU_STAR,
            COND_MEAN,
        ),
        named_step(
            "... a minimum: second derivative w / sigma^2 > 0 ...",
            r"\partial^2_\mu " + term,
            sp.diff(_TERM, MU, 2),
            W / SIGMA2,
        ),
        named_step(
            "... and the mixed derivative vanishes there, so the Hessian in (mu, sigma^2) is block diagonal at the "
            "stationary point.",
            r"\partial_\mu \partial_{\sigma^2} " + term + r"\big|_{\mu = m}",
            sp.diff(_TERM, MU, SIGMA2).subs(MU, MU_STAR),
            sp.Integer(0),
        ),
        named_step(
            "At mu = m the objective is d log(2 pi sigma^2) / 2 + d V / (2 sigma^2) - E H(q), V the conditional "
            "variance averaged over x_t and the d coordinates (weights summing to 1). Its derivative in sigma^2 "
            "vanishes only at sigma^2 = V = (1/d) E tr Cov(x_{t-1} | x_t) ...",
            r"\sigma^{*2}",
            SIGMA2_STAR,
            V,
        ),
        named_step(
            "... a minimum (second derivative d / (2 V^2) > 0; the objective tends to +oo as sigma^2 -> 0 or oo, "
            "so the one stationary point is the global minimum, for any d and any q).",
            r"\partial^2_{\sigma^2} J\big|_{\sigma^{*2}}",
            sp.diff(OBJECTIVE_PROFILE, SIGMA2, 2).subs(SIGMA2, SIGMA2_STAR),
            D / (2 * V**2),
        ),
    )


def _posterior_steps() -> tuple[Step, ...]:
    return (
        Step(
            "Theorem assumed (the sum rule; derivation (b) proves the Gaussian posterior): q(x_{t-1} | x_t) = "
            "integral of q(x_{t-1} | x_t, x_0) q(x_0 | x_t) dx_0, with derivation (b)'s "
            "Gaussian q(x_{t-1} | x_t, x_0) = N(c_0 x_0 + c_t x_t, beta_tilde_t) and any data posterior q(x_0 | x_t), "
            "of mean x0_hat and variance Var(x_0 | x_t).",
            sp.Symbol(r"q(x_{t-1} \mid x_t)"),
            sp.Symbol(r"\int q(x_{t-1} \mid x_t, x_0)\, q(x_0 \mid x_t)\, dx_0"),
            Check.DEFINITION,
        ),
        named_step(
            "The inner mean (derivation (c)'s Gaussian moments) is linear in x_0, so by the tower property and "
            "linearity E[x_{t-1} | x_t] = c_0 x0_hat + c_t x_t = mu_tilde(E[x_0 | x_t], x_t) ...",
            r"\mu^*(x_t) = \mathbb{E}[x_{t-1} \mid x_t]",
            MU_STAR_POSTERIOR,
            posterior.POSTERIOR_MEAN.subs(x_0, ov.x0_hat),
        ),
        named_step(
            "... which is derivation (d)'s eps-form mean at eps* = E[eps | x_t] (derivation (j)): the optimal mean is "
            "the eps-parameterised mean of the optimal denoiser.",
            r"\mu_\theta(x_t)\big|_{\epsilon_\theta = \mathbb{E}[\epsilon \mid x_t]}",
            eps_parameterisation.MU_THETA.subs(eps_theta, ov.EPS_STAR),
            MU_STAR_POSTERIOR,
        ),
        named_step(
            "The conditional variance, from the inner second moment beta_tilde_t + (c_0 x_0 + c_t x_t)^2: "
            "Var(x_{t-1} | x_t) = beta_tilde_t + c_0^2 Var(x_0 | x_t) (law of total variance) ...",
            r"\operatorname{Var}(x_{t-1} \mid x_t)",
            _VAR_PREV,
            ov.BETA_TILDE + ov.C0**2 * ov.V_COND,
        ),
        named_step(
            "... so sigma*^2 = V = beta_tilde_t + c_0^2 V_t, V_t = E Var(x_0 | x_t) per coordinate; through "
            "1 - Gamma_t = alpha_bar_t / (1 - alpha_bar_t) V_t (derivation (j)) it is (j)'s sigma*^2(Gamma_t).",
            r"\sigma^{*2}\big|_{V_t = \frac{1 - \bar{\alpha}_t}{\bar{\alpha}_t}(1 - \Gamma_t)}",
            SIGMA2_STAR_POSTERIOR.subs(V_T, _V_FROM_GAMMA),
            ov.SIGMA2_OPTIMAL,
        ),
    )


def _decoder_steps() -> tuple[Step, ...]:
    return (
        named_step(
            "t = 1: the bound term is undefined (beta_tilde_1 = 0), and L_0 = E[-log N(x_0; mu_theta(x_1, 1), "
            "sigma_1^2)] per coordinate is the cross-entropy above with v + (m - mu)^2 averaged to "
            "E_1 = E(x_0 - mu_theta)^2 (the continuous Gaussian decoder) ...",
            r"L_0",
            DECODER_COST,
            _DECODER_COST,
        ),
        named_step(
            "... smallest at sigma_1^2 = E_1 (sympy.solve; second derivative 1 / (2 E_1^2) > 0, as above with d = 1).",
            r"\sigma_1^{*2}",
            SIGMA2_DECODER_STAR,
            E1,
        ),
        named_step(
            "At t = 1 (alpha_bar_1 = alpha_1 = 1 - beta_1) x_0 - mu_theta(x_1, 1) = sqrt(beta_1 / (1 - beta_1)) "
            "(eps_theta - eps), from derivation (d)'s x_0(x_t, eps) and eps-form mean ...",
            r"x_0 - \mu_\theta(x_1, 1)",
            DECODER_GAP,
            _GAP_COEF * (eps_theta - eps),
            display=_AT_T1,
        ),
        named_step(
            "... so at the optimal denoiser (derivation (j)'s moments) E_1 = beta_1 (1 - Gamma_1) / (1 - beta_1), "
            "derivation (j)'s formula at alpha_bar_0 = 1: the decoder's own cost gives the value the formula "
            "extends to.",
            r"\sigma_1^{*2} = \mathbb{E}_1",
            SIGMA2_DECODER,
            ov.SIGMA2_OPTIMAL.subs(_T1),
            display=_AT_T1,
        ),
        named_step(
            "The code uses sigma_1^2 = beta_1 for every choice of variance: the optimum only where Gamma_1 = beta_1 "
            "(sympy.solve) ...",
            r"\Gamma_1\big|_{\sigma_1^{*2} = \beta_1}",
            GAMMA_CODE_T1,
            beta_t,
            display=_AT_T1,
        ),
        named_step(
            "... which is Gamma_1 of data x_0 ~ N(0, I) (derivation (j)); for other data the code's beta_1 is not "
            "the decoder's optimum.",
            r"\Gamma_1(s^2 = 1)",
            ov.GAMMA_GAUSSIAN.subs(ov.S2, 1).subs(_T1),
            beta_t,
            display=_AT_T1,
        ),
        named_step(
            "The discretised decoder assigns x_0 the probability of its bin [x_0 - delta/2, x_0 + delta/2] (interior "
            "bins; edge bins ignored). Taylor-expanding the density in the offset and integrating: P / (delta "
            "N(x_0)) = 1 + delta^2 (z^2 - sigma^2) / (24 sigma^4) + O(delta^4), z = x_0 - mu_theta ...",
            r"\frac{P(\mathrm{bin})}{\delta\, \mathcal{N}(x_0; \mu_\theta, \sigma^2)}",
            sp.expand(sp.simplify(_BIN_RATIO)),
            1 + DELTA**2 * (_z**2 - SIGMA2) / (24 * SIGMA2**2),
        ),
        named_step(
            "... so its expected cost is L_0 - log delta - delta^2 (E_1 - sigma^2) / (24 sigma^4) + O(delta^4) "
            "(the log expanded to order delta^2, linear in z^2) ...",
            r"\mathbb{E} \log \frac{P(\mathrm{bin})}{\delta\, \mathcal{N}}",
            _EXPECTED_LOG_RATIO,
            DELTA**2 * (E1 - SIGMA2) / (24 * SIGMA2**2),
        ),
        named_step(
            "... and its minimiser is E_1 + eta delta^2 + O(delta^4) with the slope's delta^2 coefficient "
            "(eta / 2 + 1/24) / E_1^2 = 0: eta = -1/12, Sheppard's correction. So for sigma_1 >> delta the "
            "discretised decoder's optimum is the continuous one less delta^2 / 12.",
            r"\eta^*",
            ETA_STAR,
            sp.Rational(-1, 12),
        ),
    )


@functools.cache
def derivation() -> Derivation:
    """The joint optimum of the Gaussian reverse kernel, its posterior form, and the decoder's optimum at t = 1."""
    steps = _cross_entropy_steps() + _joint_steps() + _posterior_steps() + _decoder_steps()
    results = (
        named_step(
            "The cross-entropy of any q to N(mu, sigma^2), per coordinate, through q's mean and variance.",
            r"\mathbb{E}_q[-\log \mathcal{N}(y; \mu, \sigma^2)]",
            CROSS_ENTROPY,
            sp.log(2 * sp.pi * SIGMA2) / 2 + (COND_VAR + (COND_MEAN - MU) ** 2) / (2 * SIGMA2),
        ),
        named_step(
            "The KL-optimal mean: E[x_{t-1} | x_t] = mu_tilde(E[x_0 | x_t], x_t), the eps-form mean at "
            "eps* = E[eps | x_t].",
            r"\mu^*(x_t)",
            eps_parameterisation.MU_THETA.subs(eps_theta, ov.EPS_STAR),
            posterior.PAPER_MEAN_COEF_X0 * ov.x0_hat + posterior.PAPER_MEAN_COEF_XT * x_t,
        ),
        named_step(
            "The KL-optimal variance, jointly with the mean: derivation (j)'s sigma*^2(Gamma_t).",
            r"\sigma_t^{*2}",
            SIGMA2_STAR_POSTERIOR.subs(V_T, _V_FROM_GAMMA),
            ov.PAPER_SIGMA2_OPTIMAL,
        ),
        named_step(
            "t = 1, from the decoder's cost: sigma*_1^2 = beta_1 (1 - Gamma_1) / (1 - beta_1).",
            r"\sigma_1^{*2}",
            SIGMA2_DECODER,
            beta_t * (1 - GAMMA) / (1 - beta_t),
            display=_AT_T1,
        ),
        named_step(
            "The discretised decoder's optimum, to O(delta^4) for sigma_1 >> delta.",
            r"\sigma_1^{*2}(\delta)",
            SIGMA2_DECODER_DISCRETE,
            E1 - DELTA**2 / 12,
        ),
    )
    return Derivation(
        key="u",
        title="The KL-optimal Gaussian reverse kernel: mean and variance jointly, and t = 1",
        module=__name__,
        summary=(
            "For any q(x_{t-1} | x_t) the KL to N(mu, sigma^2 I) is its cross-entropy minus the entropy of q, and "
            "integrating the quadratic -log N against q (linearity) writes the cross-entropy per coordinate "
            "through q's conditional mean m and variance v alone: log(2 pi sigma^2) / 2 + (v + (m - mu)^2) / "
            "(2 sigma^2). Minimising its mean over x_t, mu(x_t) enters one term only: the gradient equation gives "
            "mu* = m = E[x_{t-1} | x_t] for every sigma^2 (second derivative w / sigma^2 > 0, mixed derivative 0), "
            "and then sigma*^2 = (1/d) E tr Cov(x_{t-1} | x_t) (second derivative d / (2 V^2) > 0). Since "
            "derivation (b)'s q(x_{t-1} | x_t, x_0) is Gaussian with mean linear in x_0, the tower property gives "
            "mu* = mu_tilde(E[x_0 | x_t], x_t), the eps-form mean at eps* = E[eps | x_t], and the law of total "
            "variance sigma*^2 = beta_tilde_t + c_0^2 E Var(x_0 | x_t), derivation (j)'s sigma*^2(Gamma_t). At "
            "t = 1 the bound term is undefined (beta_tilde_1 = 0); the decoder's cost L_0 = E[-log N(x_0; "
            "mu_theta(x_1, 1), sigma_1^2)] is smallest at sigma_1^2 = E(x_0 - mu_theta)^2 = beta_1 (1 - Gamma_1) / "
            "(1 - beta_1) at the optimal denoiser, (j)'s formula at alpha_bar_0 = 1. The code's sigma_1^2 = beta_1 "
            "is that optimum only where Gamma_1 = beta_1 (x_0 ~ N(0, I)). A decoder discretised into bins of width "
            "delta has, for sigma_1 >> delta, the optimum E(x_0 - mu_theta)^2 - delta^2 / 12 + O(delta^4) "
            "(Sheppard's correction). Derived for any data distribution, any dimension and every t (t = 1 through "
            "the decoder), the optimisation over mu(.) pointwise in x_t."
        ),
        steps=steps,
        results=results,
    )


sigma2_decoder = float64_function(SIGMA2_DECODER, (beta_t, GAMMA), "sigma2_decoder")

__all__ = [
    "COND_MEAN",
    "COND_VAR",
    "CROSS_ENTROPY",
    "D",
    "DELTA",
    "E1",
    "MU",
    "MU_STAR",
    "MU_STAR_POSTERIOR",
    "SIGMA2",
    "SIGMA2_DECODER",
    "SIGMA2_DECODER_DISCRETE",
    "SIGMA2_STAR",
    "SIGMA2_STAR_POSTERIOR",
    "V",
    "V_T",
    "derivation",
    "sigma2_decoder",
]
