"""(j) The KL-optimal reverse variance for any data (Bao et al. 2022, "Analytic-DPM", Theorem 1).

Derivation (h) found the best fixed reverse variance for Gaussian data. Here the data distribution is
arbitrary. Per dimension, the bound term E_q KL(q(x_{t-1} | x_t, x_0) || N(mu_theta(x_t), sigma^2)) is
smallest at sigma^2 = beta_tilde_t + M_t, M_t the mean squared difference of the two means; with the
eps-parameterised mean and eps_theta the optimal denoiser E[eps | x_t] this is

    sigma*_t^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t)) (1 - Gamma_t),
    Gamma_t    = E ||eps_theta(x_t, t)||^2 / d  in [0, 1],

so beta_tilde_t <= sigma*_t^2 <= beta_t / alpha_t for any data. For data whose per-coordinate variances
average at most s^2, the optimal denoiser is at least as good as the best linear one, so Gamma_t is at least
Gaussian data's (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t) and sigma*_t^2 at most derivation
(h)'s Gaussian optimum (beta_t at s^2 = 1). For data with every coordinate in [-1, 1], Popoviciu gives the
weaker Gamma_t >= 1 - alpha_bar_t / (1 - alpha_bar_t), i.e. sigma*_t^2 <= beta_tilde_t + c_0^2 (c_0 the x_0
coefficient of the posterior mean, derivation (b)), the clip the code uses. For x_0 ~ N(0, s^2) it is
derivation (h)'s optimum, and for a point mass (Gamma_t = 1) the posterior variance beta_tilde_t. The
eps_theta = E[eps | x_t] step needs the tower property, checked here on a finite support. At t = 1 the bound
term is undefined (beta_tilde_1 = 0); derivation (u) derives the same sigma*_1^2 from the decoder's cost.

Exports (in symbols.beta_t, symbols.alpha_bar_prev and GAMMA):
    GAMMA              the symbol Gamma_t = E ||eps_theta(x_t, t)||^2 / d (positive)
    SIGMA2_OPTIMAL     sigma*_t^2(beta_t, alpha_bar_{t-1}, Gamma_t)
    SIGMA2_UPPER       beta_t / alpha_t, sigma*_t^2 at Gamma_t = 0 (any data)
    GAMMA_LOWER        1 - alpha_bar_t / (1 - alpha_bar_t), the lower bound on Gamma_t for data with every
                       coordinate in [-1, 1] (negative while alpha_bar_t > 1/2: code clips Gamma_t to
                       [max(0, GAMMA_LOWER), 1])
    SIGMA2_UPPER_DATA  beta_tilde_t + c_0^2, sigma*_t^2 at Gamma_t = GAMMA_LOWER
    GAMMA_LOWER_VARIANCE   (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t) (s^2 = reverse_variance's
                       DATA_VARIANCE), the lower bound on Gamma_t for data of mean per-coordinate variance <= s^2
    SIGMA2_UPPER_VARIANCE  sigma*_t^2 there: derivation (h)'s Gaussian optimum
    TOWER_CROSS_MOMENT  E[eps E[eps | x_t]] on a 2 x 3 finite support (= TOWER_SQUARE_MOMENT, E[E[eps | x_t]^2])
    conditional_expectation(expr)   E[expr | x_t] for a quadratic in x_0 (moments x0_hat, V_COND)
Numeric (float64, broadcasting, 50-digit evaluation):
    sigma2_optimal(beta_t, alpha_bar_prev, Gamma), gamma_lower(beta_t, alpha_bar_prev),
    sigma2_upper(beta_t, alpha_bar_prev), sigma2_upper_data(beta_t, alpha_bar_prev),
    gamma_lower_variance(beta_t, alpha_bar_prev, s2)
"""

from __future__ import annotations

import functools

import sympy as sp

from derivations import eps_parameterisation, posterior, reverse_variance
from derivations.chain import Check, Derivation, Step
from derivations.gaussian_kl import MEAN_1, MEAN_2, NORMAL_KL, VAR_1, VAR_2
from derivations.labels import named_step
from derivations.numeric import float64_function
from derivations.symbols import AT_T1, alpha_bar_prev, alpha_bar_t, alpha_t, beta_t, eps, eps_theta, sigma2, x_0, x_t

# Gamma_t = E ||eps_theta(x_t, t)||^2 / d, the mean squared output of the noise predictor.
GAMMA = sp.Symbol(r"\Gamma_t", positive=True)
_AT_T1 = AT_T1 + ((GAMMA, sp.Symbol(r"\Gamma_1", positive=True)),)  # report names at t = 1
# M_t = E (mu_tilde_t - mu_theta)^2 per dimension, the mean squared difference of the two means.
M = sp.Symbol("M_t", nonnegative=True)
# beta_tilde_t as a symbol for the KL lemma; derivation (b)'s expression is substituted once the minimiser
# sigma*^2 = beta_tilde_t + M_t is found.
beta_tilde = sp.Symbol(r"\tilde{\beta}_t", positive=True)
mu_tilde = sp.Symbol(r"\tilde{\mu}_t", real=True)
mu_theta = sp.Symbol(r"\mu_\theta", real=True)
# E[x_0 | x_t] and V_t = E Var(x_0 | x_t) per dimension, for the bound for data in [a, b].
x0_hat = sp.Symbol(r"\hat{x}_0", real=True)
V = sp.Symbol("V_t", nonnegative=True)
a, b = sp.symbols("a b", real=True)  # the data interval [a, b]
x = sp.Symbol("x", real=True)  # a point of [a, b]
z_0 = sp.Symbol("z_0", real=True)  # x_0 = s z_0 for Gaussian data, z_0 ~ N(0, 1) independent of eps
k = sp.Symbol("k", real=True)  # regression coefficient of eps on x_t
S2 = reverse_variance.DATA_VARIANCE  # s^2 of derivation (h)

BETA_TILDE = posterior.VARIANCE  # derivation (b)'s beta_tilde_t in beta_t, alpha_bar_{t-1}
C0 = posterior.MEAN_COEF_X0  # derivation (b)'s x_0 coefficient of the posterior mean

# --- 1. The expected bound term ------------------------------------------------------------------
KL_TERM = NORMAL_KL.subs({MEAN_1: mu_tilde, VAR_1: beta_tilde, MEAN_2: mu_theta, VAR_2: sigma2}, simultaneous=True)
SQUARE_TERM = (mu_tilde - mu_theta) ** 2 / (2 * sigma2)
KL_REST = KL_TERM - SQUARE_TERM  # free of the means (checked below)
# Averaging over q(x_0, x_t) the means enter only through the square, whose mean is M_t (linearity).
EXPECTED_KL = KL_REST.subs(mu_tilde, mu_theta) + M / (2 * sigma2)

# --- 2. Minimising over sigma^2 ------------------------------------------------------------------
D_EXPECTED_KL = sp.diff(EXPECTED_KL, sigma2)
(SIGMA2_STAR,) = sp.solve(sp.Eq(D_EXPECTED_KL, 0), sigma2)
D2_AT_STAR = sp.diff(EXPECTED_KL, sigma2, 2).subs(sigma2, SIGMA2_STAR)
MIN_EXPECTED_KL = EXPECTED_KL.subs(sigma2, SIGMA2_STAR)

# --- 3. The mean difference with x_0 written through eps -----------------------------------------
MEAN_GAP = posterior.POSTERIOR_MEAN.subs(x_0, eps_parameterisation.X0_FROM_EPS) - eps_parameterisation.MU_THETA
MEAN_GAP_COEF = sp.factor(sp.cancel(sp.expand(MEAN_GAP).coeff(eps_theta)))

# --- 4. Its mean square for the optimal denoiser -------------------------------------------------
# Second moments per dimension: E eps^2 = 1 (eps ~ N(0, I)); E eps_theta^2 = Gamma_t (definition);
# E[eps eps_theta] = E[E[eps | x_t] eps_theta(x_t)] = E eps_theta^2 = Gamma_t when eps_theta = E[eps | x_t].
_MOMENTS = {(2, 0): sp.Integer(1), (1, 1): GAMMA, (0, 2): GAMMA, (0, 0): sp.Integer(1)}


def expectation(expr: sp.Expr) -> sp.Expr:
    """E[expr] for expr a polynomial in eps, eps_theta of degree 0 or 2 in each term (moments above)."""
    poly = sp.Poly(sp.expand(expr), eps, eps_theta)
    total = sp.Integer(0)
    for monomial, coefficient in poly.terms():
        if monomial not in _MOMENTS:
            raise ValueError(f"no moment for eps^{monomial[0]} eps_theta^{monomial[1]} in {expr}")
        total += coefficient * _MOMENTS[monomial]
    return total


# The tower property on a finite support: eps takes values e_1, e_2 and x_t values y_1, y_2, y_3 with joint
# probabilities p_ij; E[eps | x_t = y_j] = sum_i p_ij e_i / sum_i p_ij.
_E_VALUES = sp.symbols("e_1:3", real=True)
_P = [[sp.Symbol(f"p_{{{i}{j}}}", positive=True) for j in range(1, 4)] for i in range(1, 3)]
_P_Y = [sum(_P[i][j] for i in range(2)) for j in range(3)]
_COND_MEAN = [sum(_P[i][j] * _E_VALUES[i] for i in range(2)) / _P_Y[j] for j in range(3)]
TOWER_CROSS_MOMENT = sum(_P[i][j] * _E_VALUES[i] * _COND_MEAN[j] for i in range(2) for j in range(3))
TOWER_SQUARE_MOMENT = sum(_P_Y[j] * _COND_MEAN[j] ** 2 for j in range(3))

SQUARED_ERROR = expectation((eps_theta - eps) ** 2)  # E (eps_theta - eps)^2 per dimension
M_OPTIMAL = expectation((MEAN_GAP_COEF * (eps_theta - eps)) ** 2)
SIGMA2_OPTIMAL = sp.factor(SIGMA2_STAR.subs({beta_tilde: BETA_TILDE, M: M_OPTIMAL}, simultaneous=True))

# --- 5. Bounds -----------------------------------------------------------------------------------
D_SIGMA2_D_GAMMA = sp.diff(SIGMA2_OPTIMAL, GAMMA)
SIGMA2_AT_GAMMA_1 = sp.factor(SIGMA2_OPTIMAL.subs(GAMMA, 1))
SIGMA2_UPPER = sp.factor(SIGMA2_OPTIMAL.subs(GAMMA, 0))

# E[x_0^k | x_t] for k = 0, 1, 2: the definitions of the conditional mean x0_hat and variance Var(x_0 | x_t).
V_COND = sp.Symbol(r"\operatorname{Var}(x_0 \mid x_t)", nonnegative=True)
_COND_MOMENTS = {0: sp.Integer(1), 1: x0_hat, 2: V_COND + x0_hat**2}


def conditional_expectation(expr: sp.Expr) -> sp.Expr:
    """E[expr | x_t] for expr a polynomial of degree <= 2 in x_0 whose coefficients are functions of x_t
    (linearity of the conditional expectation, with the conditional moments above)."""
    poly = sp.Poly(sp.expand(expr), x_0)
    return sp.expand(sum(c * _COND_MOMENTS[m[0]] for m, c in poly.terms()))


# eps from the forward sample of derivation (d), and its conditional mean given x_t.
(EPS_FROM_X0,) = sp.solve(sp.Eq(x_t, eps_parameterisation.FORWARD_SAMPLE), eps)
EPS_STAR = EPS_FROM_X0.subs(x_0, x0_hat)  # E[eps | x_t]: linear in x_0, and x_t is known given x_t
RESIDUAL = EPS_FROM_X0 - EPS_STAR  # eps - E[eps | x_t]
RESIDUAL_COEF = sp.expand(RESIDUAL).coeff(x_0)  # residual = RESIDUAL_COEF (x_0 - x0_hat)
ONE_MINUS_GAMMA_FROM_V = RESIDUAL_COEF**2 * V  # E (eps - E[eps | x_t])^2 = 1 - Gamma_t
GAMMA_FROM_V = 1 - ONE_MINUS_GAMMA_FROM_V
SIGMA2_FROM_V = SIGMA2_OPTIMAL.subs(GAMMA, GAMMA_FROM_V)

# Popoviciu: for x in [a, b], (x - (a + b)/2)^2 <= ((b - a)/2)^2, so Var <= ((b - a)/2)^2.
POPOVICIU_GAP = ((b - a) / 2) ** 2 - (x - (a + b) / 2) ** 2
POPOVICIU_BOUND = (((b - a) / 2) ** 2).subs({a: -1, b: 1})
GAMMA_LOWER = sp.factor(GAMMA_FROM_V.subs(V, POPOVICIU_BOUND))
SIGMA2_UPPER_DATA = sp.factor(SIGMA2_OPTIMAL.subs(GAMMA, GAMMA_LOWER))

# --- 6. Gaussian data and the point mass ---------------------------------------------------------
_NOISES = (z_0, eps)


def _covariance(u: sp.Expr, w: sp.Expr) -> sp.Expr:
    """Cov(u, w) for u, w linear in the independent standard normals z_0, eps."""
    u, w = sp.expand(u), sp.expand(w)
    return sp.expand(sum(u.coeff(n) * w.coeff(n) for n in _NOISES))


X_T_GAUSSIAN = eps_parameterisation.FORWARD_SAMPLE.subs(x_0, sp.sqrt(S2) * z_0)
VAR_T_GAUSSIAN = _covariance(X_T_GAUSSIAN, X_T_GAUSSIAN)
(KAPPA,) = sp.solve(sp.Eq(_covariance(eps - k * X_T_GAUSSIAN, X_T_GAUSSIAN), 0), k)
GAMMA_GAUSSIAN = sp.factor(KAPPA**2 * VAR_T_GAUSSIAN)  # E (kappa x_t)^2
CROSS_MOMENT_GAUSSIAN = KAPPA * _covariance(eps, X_T_GAUSSIAN)  # E[eps eps*] = kappa E[eps x_t]
SIGMA2_GAUSSIAN = SIGMA2_OPTIMAL.subs(GAMMA, GAMMA_GAUSSIAN)

# --- 7. Any data of variance s^2: the optimal denoiser is at least as good as the best linear one ----------
m_data = sp.Symbol("m", real=True)  # the data mean of one coordinate
f_est = sp.Symbol("f", real=True)  # any estimate f(x_t) of that coordinate of x_0
COND_SQUARED_ERROR = conditional_expectation((x_0 - f_est) ** 2)  # E[(x_0 - f)^2 | x_t]
# A linear estimate m + k (x_t - sqrt(alpha_bar_t) m) of x_0 = m + s z_0, z_0 of mean 0 and variance 1, uncorrelated
# with eps: its error is linear in (z_0, eps), so its mean square is the sum of squared coefficients.
_X0_AFFINE = m_data + sp.sqrt(S2) * z_0
_LINEAR_ERROR_RV = _X0_AFFINE - (m_data + k * (eps_parameterisation.FORWARD_SAMPLE.subs(x_0, _X0_AFFINE)
                                              - sp.sqrt(alpha_bar_t) * m_data))
LINEAR_ERROR = _covariance(_LINEAR_ERROR_RV, _LINEAR_ERROR_RV)
(K_LINEAR,) = sp.solve(sp.diff(LINEAR_ERROR, k), k)
LINEAR_MMSE = sp.factor(LINEAR_ERROR.subs(k, K_LINEAR))
GAMMA_LOWER_VARIANCE = sp.factor(1 - alpha_bar_t / (1 - alpha_bar_t) * LINEAR_MMSE)
SIGMA2_UPPER_VARIANCE = sp.factor(SIGMA2_OPTIMAL.subs(GAMMA, GAMMA_LOWER_VARIANCE))

# The paper's and REFERENCE forms, to compare the derived ones against.
PAPER_BETA_TILDE = (1 - alpha_bar_prev) / (1 - alpha_bar_t) * beta_t
PAPER_MEAN_GAP_COEF = beta_t / (sp.sqrt(alpha_t) * sp.sqrt(1 - alpha_bar_t))
PAPER_SIGMA2_OPTIMAL = PAPER_BETA_TILDE + beta_t**2 / (alpha_t * (1 - alpha_bar_t)) * (1 - GAMMA)
# Bao et al. (2022), Theorem 1, with lambda_t^2 = beta_tilde_t (DDPM), beta_bar = 1 - alpha_bar, and
# beta_bar_t E ||s_t||^2 / d = Gamma_t for the score s_t = -eps_theta / sqrt(1 - alpha_bar_t).
BAO_SIGMA2_OPTIMAL = PAPER_BETA_TILDE + (
    sp.sqrt((1 - alpha_bar_t) / alpha_t) - sp.sqrt(1 - alpha_bar_prev - PAPER_BETA_TILDE)
) ** 2 * (1 - GAMMA)
PAPER_GAMMA_LOWER = 1 - alpha_bar_t / (1 - alpha_bar_t)
# The schedule's domain 0 < beta_t < 1, 0 < alpha_bar_{t-1} < 1 through positive parameters r, u.
_r, _u = sp.symbols("r u", positive=True)
_DOMAIN = {beta_t: 1 / (1 + _r), alpha_bar_prev: 1 / (1 + _u)}


def _step(description: str, lhs: sp.Expr, rhs: sp.Expr, latex: str, **kwargs) -> Step:
    return Step(description, lhs, rhs, lhs_latex=latex, **kwargs)


def _bound_term_steps() -> tuple[Step, ...]:
    """Steps 1-2: the expected bound term and its minimiser in sigma^2."""
    kl_latex = (
        r"\mathrm{KL}\left(\mathcal{N}(\tilde{\mu}_t, \tilde{\beta}_t) \,\|\, "
        r"\mathcal{N}(\mu_\theta, \sigma_t^2)\right)"
    )
    rest = r"\left(\mathrm{KL} - \frac{(\tilde{\mu}_t - \mu_\theta)^2}{2\sigma_t^2}\right)"
    return (
        named_step(
            "The bound term per dimension: derivation (c)'s Gaussian KL from q(x_{t-1} | x_t, x_0) = "
            "N(mu_tilde_t, beta_tilde_t) to the model N(mu_theta(x_t), sigma_t^2), by substitution.",
            kl_latex,
            KL_TERM,
            (sp.log(sigma2 / beta_tilde) + (beta_tilde + (mu_tilde - mu_theta) ** 2) / sigma2 - 1) / 2,
        ),
        _step(
            "The means enter only through the square (mu_tilde - mu_theta)^2 / (2 sigma^2): the rest has zero "
            "derivative in mu_tilde ...",
            sp.diff(KL_REST, mu_tilde),
            sp.Integer(0),
            r"\frac{\partial}{\partial \tilde{\mu}_t}" + rest,
        ),
        _step(
            "... and in mu_theta. The KL is affine in the square, so its mean over q(x_0, x_t) replaces the square "
            "by its mean M_t = E(mu_tilde - mu_theta)^2 (linearity of expectation).",
            sp.diff(KL_REST, mu_theta),
            sp.Integer(0),
            r"\frac{\partial}{\partial \mu_\theta}" + rest,
        ),
        _step(
            "The expected bound term is derivation (c)'s KL at a mean difference of sqrt(M_t).",
            KL_TERM.subs(mu_tilde, mu_theta + sp.sqrt(M)),
            EXPECTED_KL,
            r"\mathrm{KL}\big|_{\tilde{\mu}_t - \mu_\theta = \sqrt{M_t}}",
        ),
        named_step(
            "Setting the derivative in sigma^2 to zero (sympy.solve) gives one stationary point, "
            "sigma^2 = beta_tilde_t + M_t ...",
            r"\arg\min_{\sigma_t^2} \mathbb{E}_q \mathrm{KL}",
            SIGMA2_STAR,
            beta_tilde + M,
        ),
        named_step(
            "... a minimum (second derivative 1 / (2 (beta_tilde_t + M_t)^2) > 0; the bound term tends to +oo as "
            "sigma^2 -> 0 or oo) ...",
            r"\partial^2_{\sigma_t^2} \mathbb{E}_q \mathrm{KL}\big|_{\sigma_t^{*2}}",
            D2_AT_STAR,
            1 / (2 * (beta_tilde + M) ** 2),
        ),
        named_step(
            "... where the expected bound term is log(1 + M_t / beta_tilde_t) / 2: zero only for a perfect mean.",
            r"\min_{\sigma_t^2} \mathbb{E}_q \mathrm{KL}",
            MIN_EXPECTED_KL,
            sp.log(1 + M / beta_tilde) / 2,
        ),
    )


def _mean_gap_steps() -> tuple[Step, ...]:
    """Steps 3-4: the mean difference through eps, and its mean square for the optimal denoiser."""
    return (
        named_step(
            "Substitute x_0 = (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t) (derivation (d)) into the "
            "posterior mean of derivation (b) and subtract the model mean mu_theta of derivation (d): the x_t "
            "terms cancel, leaving a multiple of eps_theta - eps ...",
            r"\tilde{\mu}_t\left(x_t, x_0(x_t, \epsilon)\right) - \mu_\theta(x_t, t)",
            MEAN_GAP,
            MEAN_GAP_COEF * (eps_theta - eps),
        ),
        named_step(
            "... with coefficient beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)).",
            r"[\epsilon_\theta - \epsilon]\left(\tilde{\mu}_t - \mu_\theta\right)",
            MEAN_GAP_COEF,
            PAPER_MEAN_GAP_COEF,
        ),
        Step(
            "Definition (Bao et al. 2022): Gamma_t, the mean squared output of the noise predictor per dimension.",
            GAMMA,
            sp.Symbol(r"\frac{1}{d} \mathbb{E}_{q(x_t)}\,\|\epsilon_\theta(x_t, t)\|^2"),
            Check.DEFINITION,
        ),
        Step(
            "Assumption: eps_theta is the optimal denoiser, eps_theta(x_t) = E[eps | x_t]; and E eps^2 = 1 "
            "(eps ~ N(0, I)).",
            sp.Tuple(eps_theta, sp.Symbol(r"\mathbb{E}[\epsilon^2]")),
            sp.Tuple(sp.Symbol(r"\mathbb{E}[\epsilon \mid x_t]"), sp.Integer(1)),
            Check.DEFINITION,
        ),
        named_step(
            "The tower property E[eps E[eps | x_t]] = E[E[eps | x_t]^2], so E[eps eps_theta] = E eps_theta^2 = "
            "Gamma_t: computed exactly for (eps, x_t) on a finite support, 2 values e_i of eps times 3 values y_j of "
            "x_t with symbolic joint probabilities p_ij (E[eps | x_t = y_j] = sum_i p_ij e_i / sum_i p_ij); the "
            "same algebra holds on any finite support, and for densities it is the tower property, a theorem "
            "assumed here.",
            r"\mathbb{E}\left[\epsilon\, \mathbb{E}[\epsilon \mid x_t]\right]",
            TOWER_CROSS_MOMENT,
            TOWER_SQUARE_MOMENT,
        ),
        named_step(
            "Expand the square and take these moments: E(eps_theta - eps)^2 = 1 - Gamma_t per dimension. As a "
            "mean square it is >= 0, so Gamma_t <= 1 (Jensen: E[E[eps | x_t]^2] <= E eps^2 = 1); Gamma_t >= 0 as a "
            "mean square itself.",
            r"\mathbb{E}(\epsilon_\theta - \epsilon)^2",
            SQUARED_ERROR,
            1 - GAMMA,
        ),
        named_step(
            "So the mean squared mean difference is M_t = beta_t^2 / (alpha_t (1 - alpha_bar_t)) (1 - Gamma_t).",
            "M_t",
            M_OPTIMAL,
            beta_t**2 / (alpha_t * (1 - alpha_bar_t)) * (1 - GAMMA),
        ),
        named_step(
            "Substitute M_t and derivation (b)'s beta_tilde_t into sigma*^2 = beta_tilde_t + M_t.",
            r"\sigma_t^{*2}",
            SIGMA2_OPTIMAL,
            PAPER_SIGMA2_OPTIMAL,
        ),
    )


def _bound_steps() -> tuple[Step, ...]:
    """Step 5: Gamma_t in [0, 1] for any data; Gamma_t >= GAMMA_LOWER for data in [-1, 1]."""
    bt_plus = BETA_TILDE + beta_t**2 / (alpha_t * (1 - alpha_bar_t))
    return (
        named_step(
            "sigma*^2 is affine and decreasing in Gamma_t (slope -beta_t^2 / (alpha_t (1 - alpha_bar_t))), so "
            "Gamma_t in [0, 1] brackets it between its values at Gamma_t = 1 and 0.",
            r"\frac{\partial \sigma_t^{*2}}{\partial \Gamma_t}",
            D_SIGMA2_D_GAMMA,
            -(beta_t**2) / (alpha_t * (1 - alpha_bar_t)),
        ),
        named_step(
            "Gamma_t = 1: the lower end is beta_tilde_t, derivation (b)'s posterior variance.",
            r"\sigma_t^{*2}\big|_{\Gamma_t = 1}",
            SIGMA2_AT_GAMMA_1,
            BETA_TILDE,
        ),
        named_step(
            "Gamma_t = 0: the upper end beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t)) ...",
            r"\sigma_t^{*2}\big|_{\Gamma_t = 0}",
            SIGMA2_UPPER,
            bt_plus,
        ),
        _step(
            "... simplifies to beta_t / alpha_t (beta_t (1 - alpha_bar_{t-1}) alpha_t + beta_t^2 = "
            "beta_t (1 - alpha_bar_t)), the bound for any data; it is larger than beta_t. That "
            "beta_t bounds sigma*^2 for any data whose variance per coordinate averages at most 1 is proved in the "
            "last steps (the optimal denoiser's error is at most the best linear estimator's).",
            bt_plus,
            beta_t / alpha_t,
            r"\tilde{\beta}_t + \frac{\beta_t^2}{\alpha_t (1 - \bar{\alpha}_t)}",
        ),
        named_step(
            "Tighter for data in a bounded interval. Solve derivation (d)'s forward sample x_t = "
            "sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps for eps (sympy.solve) ...",
            r"\epsilon",
            EPS_FROM_X0,
            (x_t - sp.sqrt(alpha_bar_t) * x_0) / sp.sqrt(1 - alpha_bar_t),
        ),
        named_step(
            "... and take E[. | x_t]: eps is linear in x_0 with coefficients in x_t, so by linearity E[eps | x_t] is "
            "the same expression with x0_hat = E[x_0 | x_t] for x_0.",
            r"\mathbb{E}[\epsilon \mid x_t]",
            conditional_expectation(EPS_FROM_X0),
            EPS_STAR,
        ),
        named_step(
            "The optimal denoiser's error is a multiple of x_0's: eps - E[eps | x_t] = "
            "-sqrt(alpha_bar_t / (1 - alpha_bar_t)) (x_0 - E[x_0 | x_t]).",
            r"\epsilon - \mathbb{E}[\epsilon \mid x_t]",
            RESIDUAL,
            -sp.sqrt(alpha_bar_t) / sp.sqrt(1 - alpha_bar_t) * (x_0 - x0_hat),
        ),
        named_step(
            "Square and take expectations: 1 - Gamma_t = E(eps - E[eps | x_t])^2 (the mean square above) = "
            "alpha_bar_t / (1 - alpha_bar_t) V_t, with V_t = E Var(x_0 | x_t) per dimension.",
            r"1 - \Gamma_t",
            ONE_MINUS_GAMMA_FROM_V,
            alpha_bar_t / (1 - alpha_bar_t) * V,
        ),
        named_step(
            "In V_t the optimum is beta_tilde_t + c_0^2 V_t (c_0 = derivation (b)'s x_0 coefficient): the law of "
            "total variance Var(x_{t-1} | x_t) = E[Var(x_{t-1} | x_t, x_0) | x_t] + Var(c_0 x_0 + c_t x_t | x_t), "
            "an independent check of the optimum.",
            r"\sigma_t^{*2}\big|_{1 - \Gamma_t = \frac{\bar{\alpha}_t}{1 - \bar{\alpha}_t} V_t}",
            SIGMA2_FROM_V,
            BETA_TILDE + C0**2 * V,
        ),
        _step(
            "Assume every coordinate of x_0 lies in [a, b]. Popoviciu's inequality: for x in [a, b], ((b - a)/2)^2 "
            "- (x - (a + b)/2)^2 = (x - a)(b - x) >= 0, so Var(x_0 | x_t) <= E[(x_0 - (a + b)/2)^2 | x_t] <= "
            "((b - a)/2)^2 per coordinate, which is 1 for [-1, 1].",
            POPOVICIU_GAP,
            (x - a) * (b - x),
            r"\left(\frac{b - a}{2}\right)^2 - \left(x - \frac{a + b}{2}\right)^2",
        ),
        named_step(
            "Hence, for data with every coordinate in [-1, 1], Gamma_t >= 1 - alpha_bar_t / (1 - alpha_bar_t) "
            "(V_t <= 1). The bound is "
            "(1 - 2 alpha_bar_t) / (1 - alpha_bar_t), positive only where alpha_bar_t < 1/2; elsewhere Gamma_t >= 0 "
            "is the binding one.",
            r"\Gamma_t^{\mathrm{lower}}",
            GAMMA_LOWER,
            PAPER_GAMMA_LOWER,
        ),
        named_step(
            "At Gamma_t = GAMMA_LOWER the optimum is beta_tilde_t + c_0^2, the upper bound for data with every "
            "coordinate in [-1, 1].",
            r"\sigma_t^{*2}\big|_{\Gamma_t = \Gamma_t^{\mathrm{lower}}}",
            SIGMA2_UPPER_DATA,
            BETA_TILDE + C0**2,
        ),
        _step(
            "The two upper bounds differ by beta_t^2 / (alpha_t (1 - alpha_bar_t)) GAMMA_LOWER: the data bound is the "
            "tighter exactly where GAMMA_LOWER > 0 (alpha_bar_t < 1/2).",
            SIGMA2_UPPER - SIGMA2_UPPER_DATA,
            beta_t**2 / (alpha_t * (1 - alpha_bar_t)) * PAPER_GAMMA_LOWER,
            r"\frac{\beta_t}{\alpha_t} - \left(\tilde{\beta}_t + c_0^2\right)",
        ),
    )


def _reduction_steps() -> tuple[Step, ...]:
    """Step 6: Gaussian data gives derivation (h); a point mass gives beta_tilde_t; t = 1."""
    abt = alpha_bar_t
    return (
        Step(
            "Model: Gaussian data x_0 = s z_0 ~ N(0, s^2): x_t is linear in the independent standard normals z_0, eps.",
            x_t,
            X_T_GAUSSIAN,
            Check.DEFINITION,
        ),
        named_step(
            "Var(x_t) = alpha_bar_t s^2 + 1 - alpha_bar_t (sum of squared noise coefficients).",
            r"\operatorname{Var}(x_t)",
            VAR_T_GAUSSIAN,
            abt * S2 + 1 - abt,
        ),
        named_step(
            "(eps, x_t) is jointly Gaussian, so E[eps | x_t] = kappa x_t with kappa solving "
            "Cov(eps - kappa x_t, x_t) = 0: kappa = sqrt(1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t).",
            r"\kappa",
            KAPPA,
            sp.sqrt(1 - abt) / (abt * S2 + 1 - abt),
        ),
        named_step(
            "Gamma_t = E(kappa x_t)^2 = kappa^2 Var(x_t) = (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t).",
            r"\Gamma_t(s^2)",
            GAMMA_GAUSSIAN,
            (1 - abt) / (abt * S2 + 1 - abt),
        ),
        named_step(
            "The tower-property moment assumed above holds here by computation: E[eps eps*] = kappa Cov(eps, x_t) = "
            "Gamma_t.",
            r"\mathbb{E}[\epsilon\, \epsilon^*]",
            CROSS_MOMENT_GAUSSIAN,
            GAMMA_GAUSSIAN,
        ),
        named_step(
            "s^2 = 1 (x_0 ~ N(0, I)): Gamma_t = 1 - alpha_bar_t, and sigma*^2 is beta_t ...",
            r"\sigma_t^{*2}\big|_{\Gamma_t(1)}",
            SIGMA2_GAUSSIAN.subs(S2, 1),
            beta_t,
        ),
        named_step(
            "... and s^2 -> 0 (a point mass at 0) gives Gamma_t = 1.",
            r"\lim_{s^2 \to 0} \Gamma_t(s^2)",
            sp.limit(GAMMA_GAUSSIAN, S2, 0),
            sp.Integer(1),
        ),
        named_step(
            "The formula at t = 1 (alpha_bar_0 = 1) reads sigma*_1^2 = beta_1 (1 - Gamma_1) / (1 - beta_1). The bound "
            "term it minimises is undefined there (beta_tilde_1 = 0: q(x_0 | x_1, x_0) is a point mass); derivation "
            "(u) derives the same value from the decoder's own cost L_0 ...",
            r"\sigma_1^{*2}",
            SIGMA2_OPTIMAL.subs(alpha_bar_prev, 1),
            beta_t * (1 - GAMMA) / (1 - beta_t),
            display=_AT_T1,
        ),
        named_step(
            "... which is V_1 = E Var(x_0 | x_1): the step to x_0 needs exactly the data's posterior spread.",
            r"\sigma_1^{*2}\big|_{1 - \Gamma_1 = \frac{\bar{\alpha}_1}{1 - \bar{\alpha}_1} V_1}",
            SIGMA2_FROM_V.subs(alpha_bar_prev, 1),
            V,
        ),
        named_step(
            "At t = 1 the data bound on Gamma_1 is (2 beta_1 - 1) / beta_1 < 0 for beta_1 < 1/2: only Gamma_1 >= 0 "
            "binds, and sigma*_1^2 <= beta_1 / (1 - beta_1) (SIGMA2_UPPER_DATA is Popoviciu's 1 there: c_0 = 1).",
            r"\Gamma_1^{\mathrm{lower}}",
            GAMMA_LOWER.subs(alpha_bar_prev, 1),
            (2 * beta_t - 1) / beta_t,
            display=_AT_T1,
        ),
    )


def _variance_bound_steps() -> tuple[Step, ...]:
    """Step 7: for any data of variance s^2 per coordinate, Gamma_t >= its Gaussian value and sigma*^2 <= (h)'s."""
    abt = alpha_bar_t
    lin = S2 * (1 - abt) / (abt * S2 + 1 - abt)
    return (
        named_step(
            "Any data, any estimate f(x_t) of a coordinate of x_0: from E[x_0 | x_t] = x0_hat and E[x_0^2 | x_t] = "
            "Var(x_0 | x_t) + x0_hat^2, E[(x_0 - f)^2 | x_t] = Var(x_0 | x_t) + (x0_hat - f)^2 >= Var(x_0 | x_t). "
            "Averaged over x_t: V_t <= E(x_0 - f(x_t))^2 for every estimate f, the optimal denoiser is the best.",
            r"\mathbb{E}[(x_0 - f)^2 \mid x_t]",
            COND_SQUARED_ERROR,
            V_COND + (x0_hat - f_est) ** 2,
        ),
        named_step(
            "A linear estimate m + k (x_t - sqrt(alpha_bar_t) m) of a coordinate x_0 = m + s z_0 of mean m and "
            "variance s^2 (any distribution: z_0 has mean 0 and variance 1 and is independent of eps): its error is "
            "linear in (z_0, eps), so its mean square needs only these second moments ...",
            r"\mathbb{E}\left(x_0 - m - k (x_t - \sqrt{\bar{\alpha}_t} m)\right)^2",
            LINEAR_ERROR,
            (1 - k * sp.sqrt(abt)) ** 2 * S2 + k**2 * (1 - abt),
        ),
        named_step(
            "... is smallest (sympy.solve of the derivative in k) at k* = sqrt(alpha_bar_t) s^2 / (alpha_bar_t s^2 + "
            "1 - alpha_bar_t) ...",
            "k^*",
            K_LINEAR,
            sp.sqrt(abt) * S2 / (abt * S2 + 1 - abt),
        ),
        named_step(
            "... a minimum (second derivative 2 (alpha_bar_t s^2 + 1 - alpha_bar_t) > 0) ...",
            r"\partial_k^2\, \mathbb{E}(\ldots)^2",
            sp.diff(LINEAR_ERROR, k, 2),
            2 * (abt * S2 + 1 - abt),
        ),
        named_step(
            "... of value s^2 (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t), the linear MMSE. So V_t <= "
            "this for data of variance s^2 per coordinate; with unequal variances s_i^2 the bound at the mean of the "
            "s_i^2 still holds, the linear MMSE being concave in s^2 (next step; Jensen).",
            r"\min_k \mathbb{E}(\ldots)^2",
            LINEAR_MMSE,
            lin,
        ),
        named_step(
            "Concavity: the second derivative of the linear MMSE in s^2 is negative.",
            r"\partial_{s^2}^2 \min_k \mathbb{E}(\ldots)^2",
            sp.diff(LINEAR_MMSE, S2, 2),
            -2 * abt * (1 - abt) ** 2 / (abt * S2 + 1 - abt) ** 3,
        ),
        named_step(
            "Through 1 - Gamma_t = alpha_bar_t / (1 - alpha_bar_t) V_t: Gamma_t >= (1 - alpha_bar_t) / "
            "(alpha_bar_t s^2 + 1 - alpha_bar_t), Gaussian data's Gamma_t(s^2) (derived above): Gaussian data is the "
            "worst case of its variance.",
            r"\Gamma_t^{\mathrm{lower}}(s^2)",
            GAMMA_LOWER_VARIANCE,
            (1 - abt) / (abt * S2 + 1 - abt),
        ),
        named_step(
            "sigma*^2 decreases in Gamma_t, so sigma*^2 <= its value there, derivation (h)'s Gaussian optimum "
            "(results), which increases with s^2 ...",
            r"\partial_{s^2}\, \sigma_t^{*2}\big|_{\Gamma_t^{\mathrm{lower}}(s^2)}",
            sp.diff(SIGMA2_UPPER_VARIANCE, S2),
            alpha_bar_prev * beta_t**2 / (abt * S2 + 1 - abt) ** 2,
        ),
        named_step(
            "... and is beta_t, the forward variance, at s^2 = 1: sigma*^2 <= beta_t for any data whose per-coordinate "
            "variances average at most 1.",
            r"\sigma_t^{*2}\big|_{\Gamma_t^{\mathrm{lower}}(1)}",
            SIGMA2_UPPER_VARIANCE.subs(S2, 1),
            beta_t,
        ),
        named_step(
            "Data with every coordinate in [-1, 1] has variance at most 1 (Popoviciu, above, on the marginal), so "
            "Gamma_t >= 1 - alpha_bar_t, above GAMMA_LOWER by alpha_bar_t^2 / (1 - alpha_bar_t) at every t: the "
            "linear bound is the tighter one.",
            r"\Gamma_t^{\mathrm{lower}}(1) - \Gamma_t^{\mathrm{lower}}",
            GAMMA_LOWER_VARIANCE.subs(S2, 1) - GAMMA_LOWER,
            abt**2 / (1 - abt),
        ),
    )


@functools.cache
def derivation() -> Derivation:
    """The chain from the expected bound term to Analytic-DPM's optimal variance, its bounds and reductions."""
    steps = _bound_term_steps() + _mean_gap_steps() + _bound_steps() + _reduction_steps() + _variance_bound_steps()
    results = (
        named_step(
            "The expected bound term per dimension, for any data.",
            r"\mathbb{E}_q \mathrm{KL}",
            EXPECTED_KL,
            (sp.log(sigma2 / beta_tilde) + (beta_tilde + M) / sigma2 - 1) / 2,
        ),
        named_step(
            "The KL-optimal reverse variance (Analytic-DPM, Theorem 1, for the DDPM reverse process).",
            r"\sigma_t^{*2}",
            SIGMA2_OPTIMAL,
            PAPER_SIGMA2_OPTIMAL,
        ),
        Step(
            "... in Bao et al.'s own form lambda_t^2 + (sqrt(beta_bar_t / alpha_t) - sqrt(beta_bar_{t-1} - "
            "lambda_t^2))^2 (1 - Gamma_t), lambda_t^2 = beta_tilde_t, beta_bar = 1 - alpha_bar, on the schedule's "
            "domain written as beta_t = 1 / (1 + r), alpha_bar_{t-1} = 1 / (1 + u) with r, u > 0 (the square root "
            "of (1 - alpha_bar_{t-1})^2 is 1 - alpha_bar_{t-1} only where alpha_bar_{t-1} <= 1, which SymPy is "
            "told this way; t = 1 is u -> 0).",
            SIGMA2_OPTIMAL.subs(_DOMAIN, simultaneous=True),
            BAO_SIGMA2_OPTIMAL.subs(_DOMAIN, simultaneous=True),
            lhs_latex=r"\sigma_t^{*2}\big|_{\beta_t = \frac{1}{1 + r},\ \bar{\alpha}_{t-1} = \frac{1}{1 + u}}",
        ),
        named_step(
            "Upper end for any data (Gamma_t = 0).",
            r"\sigma_t^{*2}\big|_{\Gamma_t = 0}",
            SIGMA2_UPPER,
            beta_t / alpha_t,
        ),
        named_step(
            "Lower bound on Gamma_t for data with every coordinate in [-1, 1] (the code clips Gamma_t to "
            "[max(0, this), 1]).",
            r"\Gamma_t^{\mathrm{lower}}",
            GAMMA_LOWER,
            PAPER_GAMMA_LOWER,
        ),
        named_step(
            "Upper bound for data with every coordinate in [-1, 1]: beta_tilde_t + c_0^2.",
            r"\sigma_t^{*2}\big|_{\Gamma_t = \Gamma_t^{\mathrm{lower}}}",
            SIGMA2_UPPER_DATA,
            PAPER_BETA_TILDE + alpha_bar_prev * beta_t**2 / (1 - alpha_bar_t) ** 2,
        ),
        named_step(
            "Lower bound on Gamma_t for any data whose per-coordinate variances average at most s^2 (the optimal "
            "denoiser beats the best linear one): Gaussian data's Gamma_t(s^2).",
            r"\Gamma_t^{\mathrm{lower}}(s^2)",
            GAMMA_LOWER_VARIANCE,
            (1 - alpha_bar_t) / (alpha_bar_t * S2 + 1 - alpha_bar_t),
        ),
        named_step(
            "Upper bound for such data: derivation (h)'s Gaussian optimum at s^2; beta_t at s^2 = 1.",
            r"\sigma_t^{*2}\big|_{\Gamma_t^{\mathrm{lower}}(s^2)}",
            SIGMA2_UPPER_VARIANCE,
            reverse_variance.SIGMA2_OPTIMAL_GAUSSIAN,
        ),
        named_step(
            "Gaussian data x_0 ~ N(0, s^2): derivation (h)'s optimum exactly.",
            r"\sigma_t^{*2}\big|_{\Gamma_t(s^2)}",
            SIGMA2_GAUSSIAN,
            reverse_variance.SIGMA2_OPTIMAL_GAUSSIAN,
        ),
        named_step(
            "A point mass (Gamma_t = 1): derivation (b)'s posterior variance beta_tilde_t.",
            r"\sigma_t^{*2}\big|_{\Gamma_t = 1}",
            SIGMA2_AT_GAMMA_1,
            posterior.VARIANCE,
        ),
    )
    return Derivation(
        key="j",
        title="The KL-optimal reverse variance for any data (Bao et al. 2022, Analytic-DPM)",
        module=__name__,
        summary=(
            "Derivation (c)'s Gaussian KL from q(x_{t-1} | x_t, x_0) = N(mu_tilde_t, beta_tilde_t) to the model "
            "N(mu_theta, sigma^2) depends on the two means only through (mu_tilde_t - mu_theta)^2 / (2 sigma^2), so "
            "its mean over q is the same expression with that square replaced by its mean M_t; setting the "
            "derivative in sigma^2 to zero gives the minimiser sigma*^2 = beta_tilde_t + M_t. Writing x_0 through "
            "eps (derivation (d)) turns the mean difference into beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t)) "
            "(eps_theta - eps); for the optimal denoiser eps_theta = E[eps | x_t] the tower property gives "
            "E(eps_theta - eps)^2 = 1 - Gamma_t with Gamma_t = E ||eps_theta||^2 / d, hence Analytic-DPM's "
            "sigma*^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t)) (1 - Gamma_t), which also equals Bao "
            "et al.'s Theorem 1 form and, through 1 - Gamma_t = alpha_bar_t / (1 - alpha_bar_t) E Var(x_0 | x_t), "
            "the law-of-total-variance form beta_tilde_t + c_0^2 E Var(x_0 | x_t). The tower-property moment "
            "E[eps eps_theta] = Gamma_t is computed on a finite support with symbolic probabilities (for densities "
            "it is the theorem assumed). As Gamma_t ranges over [0, 1] "
            "the optimum ranges from beta_tilde_t up to beta_t / alpha_t, for any data. For any data whose "
            "per-coordinate variances average at most s^2 the optimal denoiser's error is at most the best linear "
            "estimator's, so Gamma_t >= (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t) and sigma*^2 is at "
            "most derivation (h)'s Gaussian optimum, beta_t at s^2 = 1. For data with every coordinate in [-1, 1] "
            "Popoviciu's inequality Var(x_0 | x_t) <= 1 gives the weaker Gamma_t >= 1 - alpha_bar_t / "
            "(1 - alpha_bar_t), informative where alpha_bar_t < 1/2, and sigma*^2 <= beta_tilde_t + c_0^2; the code "
            "clips a Monte Carlo estimate of Gamma_t to [max(0, that bound), 1]. For Gaussian data the optimal "
            "denoiser is linear and "
            "Gamma_t = (1 - alpha_bar_t) / (alpha_bar_t s^2 + 1 - alpha_bar_t), which reproduces derivation (h)'s "
            "optimum; a point mass has Gamma_t = 1 and gives beta_tilde_t. At t = 1 (alpha_bar_0 = 1) the formula "
            "reads sigma*_1^2 = beta_1 (1 - Gamma_1) / (1 - beta_1) = E Var(x_0 | x_1), but the bound term is "
            "undefined there (beta_tilde_1 = 0); derivation (u) derives that value from the decoder's cost L_0. "
            "Derived per coordinate for every t >= 2, any dimension and any data distribution."
        ),
        steps=steps,
        results=results,
    )


_ARGS = (beta_t, alpha_bar_prev)
sigma2_optimal = float64_function(SIGMA2_OPTIMAL, (*_ARGS, GAMMA), "sigma2_optimal")
gamma_lower = float64_function(GAMMA_LOWER, _ARGS, "gamma_lower")
sigma2_upper = float64_function(SIGMA2_UPPER, _ARGS, "sigma2_upper")
sigma2_upper_data = float64_function(SIGMA2_UPPER_DATA, _ARGS, "sigma2_upper_data")
gamma_lower_variance = float64_function(GAMMA_LOWER_VARIANCE, (*_ARGS, S2), "gamma_lower_variance")

__all__ = [
    "EXPECTED_KL",
    "GAMMA",
    "GAMMA_LOWER",
    "GAMMA_LOWER_VARIANCE",
    "LINEAR_MMSE",
    "M",
    "SIGMA2_OPTIMAL",
    "SIGMA2_UPPER",
    "SIGMA2_UPPER_DATA",
    "SIGMA2_UPPER_VARIANCE",
    "TOWER_CROSS_MOMENT",
    "V_COND",
    "conditional_expectation",
    "derivation",
    "expectation",
    "gamma_lower",
    "gamma_lower_variance",
    "sigma2_optimal",
    "sigma2_upper",
    "sigma2_upper_data",
]
