"""(f) The DDPM bound log p(x_0) >= -L_T - sum_{t>=2} L_{t-1} - L_0, and its gap (seed eqs. 52-58).

Ho et al. (2020), eq. (5); the seed tutorial, eqs. (52)-(58). The integrand of the ELBO,
log p_theta(x_{0:T}) / q(x_{1:T} | x_0), is rewritten with Bayes' rule
q(x_t | x_{t-1}) = q(x_{t-1} | x_t, x_0) q(x_t | x_0) / q(x_{t-1} | x_0) for t >= 2 and the ratio of
marginals telescopes. Here that rewrite is verified pointwise, as an identity in all the x's, for T = 2 and
T = 3 with scalar Gaussians and an arbitrary Gaussian reverse chain. Taking expectations then gives the
three kinds of term; on a fully linear-Gaussian T = 2 model every term, log p_theta(x_0) and the KL from
q(x_{1:2} | x_0) to the model's posterior p_theta(x_{1:2} | x_0) have closed forms, and the bound's gap
is shown to equal that KL exactly.

Schedule parameterisation: step t has a free positive parameter u_t = beta_t / alpha_t, so that
alpha_t = 1 / (1 + u_t) and beta_t = u_t / (1 + u_t). Every variance (beta_t, 1 - alpha_bar_t,
beta_tilde_t) is then visibly a positive rational function, which lets SymPy combine the logarithms.

Reverse chain: p(x_T) = N(0, 1) and p_theta(x_{t-1} | x_t) = N(c_t x_t + d_t, sigma_t^2), linear in x_t
with free coefficients (an eps-model linear in x_t gives exactly such a mean).

Exports (SymPy, in symbols.alpha_bar, beta_t, alpha_bar_prev, x_0 and REVERSE_SCALE c_t,
REVERSE_SHIFT d_t, symbols.sigma2):
    PRIOR_TERM       L_T = KL(q(x_T | x_0) || N(0, 1)), in alpha_bar = alpha_bar_T and x_0
    TRANSITION_TERM  L_{t-1} = E_{q(x_t|x_0)} KL(q(x_{t-1} | x_t, x_0) || p_theta(x_{t-1} | x_t)), t >= 2
    DECODER_TERM     L_0 = -E_{q(x_1|x_0)} log N(x_0; c_1 x_1 + d_1, sigma_1^2), in beta_t = beta_1
    identity_lhs(T), identity_rhs(T)   the two sides of the pointwise rewrite for a given T

Numeric oracle (float64 results of a 50-digit evaluation):
    gaussian_chain_elbo_terms(betas, x0, reverse_scales, reverse_shifts, reverse_variances) -> ChainElboTerms
        betas              sequence of T floats, betas[t - 1] = beta_t, each in (0, 1)
        x0                 the scalar data point
        reverse_scales     c_t, reverse_shifts d_t, reverse_variances sigma_t^2 > 0: sequences of T floats,
                           index t - 1 holds step t; p_theta(x_{t-1} | x_t) = N(c_t x_t + d_t, sigma_t^2)
    ChainElboTerms(prior, transitions, decoder, elbo, log_likelihood, gap), frozen:
        prior = L_T; transitions = (L_1, ..., L_{T-1}) (transitions[t - 2] is the term of step t >= 2;
        empty for T = 1); decoder = L_0 (continuous Gaussian decoder); elbo = -(L_T + sum + L_0);
        log_likelihood = log p_theta(x_0); gap = log_likelihood - elbo = KL(q(x_{1:T}|x_0) || p_theta(x_{1:T}|x_0)).
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from derivations import forward_marginal, maximum_likelihood, posterior
from derivations.chain import Check, Derivation, Step
from derivations.domain import logs_split
from derivations.gaussian_kl import MEAN_1, MEAN_2, NORMAL_KL, VAR_1, VAR_2, normal_expectation
from derivations.numeric import DIGITS, alpha_bar_from_betas
from derivations.symbols import AT_T1, alpha_bar, alpha_bar_prev, beta_t, normal_log_density, sigma2, x_0, x_prev, x_t

REVERSE_SCALE = sp.Symbol("c_t", real=True)
REVERSE_SHIFT = sp.Symbol("d_t", real=True)

MAX_T = 3
u = sp.symbols(f"u_1:{MAX_T + 1}", positive=True)  # u_t = beta_t / alpha_t
ALPHAS = tuple(1 / (1 + ut) for ut in u)
xs = (x_0, *sp.symbols(f"x_1:{MAX_T + 1}", real=True))
cs = sp.symbols(f"c_1:{MAX_T + 1}", real=True)
ds = sp.symbols(f"d_1:{MAX_T + 1}", real=True)
sigma2s = sp.symbols(rf"\sigma_1:{MAX_T + 1}^2", positive=True)


def _kl(m1, v1, m2, v2) -> sp.Expr:
    return NORMAL_KL.subs({MEAN_1: m1, VAR_1: v1, MEAN_2: m2, VAR_2: v2}, simultaneous=True)


# --- the generic terms (step t), exported -------------------------------------------------------
_ALPHA_BAR_T = alpha_bar_prev * (1 - beta_t)
_MARGINAL_MEAN_COEF_T = forward_marginal.MEAN_COEF.subs(alpha_bar, _ALPHA_BAR_T)
_MARGINAL_VARIANCE_T = forward_marginal.VARIANCE.subs(alpha_bar, _ALPHA_BAR_T)

PRIOR_TERM = _kl(forward_marginal.MEAN_COEF * x_0, forward_marginal.VARIANCE, 0, 1)

# The mean difference of the two Gaussians in L_{t-1} is linear in x_t: delta = k_0 x_0 + k_1 x_t - d_t.
_k0 = posterior.MEAN_COEF_X0
_k1 = posterior.MEAN_COEF_XT - REVERSE_SCALE
_MEAN_DIFF_SQUARED = (
    (_k0 * x_0 + _k1 * _MARGINAL_MEAN_COEF_T * x_0 - REVERSE_SHIFT) ** 2 + _k1**2 * _MARGINAL_VARIANCE_T
)
# The paper's closed forms (typed in) that the derived exports below are compared with.
TRANSITION_TERM_PAPER = sp.Rational(1, 2) * (
    sp.log(sigma2 / posterior.VARIANCE) - 1 + posterior.VARIANCE / sigma2 + _MEAN_DIFF_SQUARED / sigma2
)
_ALPHA_1 = 1 - beta_t  # t = 1: alpha_bar_1 = alpha_1
DECODER_TERM_PAPER = sp.log(2 * sp.pi * sigma2) / 2 + (
    (x_0 - REVERSE_SCALE * sp.sqrt(_ALPHA_1) * x_0 - REVERSE_SHIFT) ** 2 + REVERSE_SCALE**2 * beta_t
) / (2 * sigma2)

# The exports, derived: L_{t-1} = E_{q(x_t | x_0)} of derivation (c)'s KL between the posterior of derivation (b)
# and the reverse step; L_0 = -E_{q(x_1 | x_0)} log N(x_0; c_1 x_1 + d_1, sigma_1^2).
TRANSITION_TERM = normal_expectation(
    _kl(posterior.POSTERIOR_MEAN, posterior.VARIANCE, REVERSE_SCALE * x_t + REVERSE_SHIFT, sigma2),
    x_t,
    _MARGINAL_MEAN_COEF_T * x_0,
    _MARGINAL_VARIANCE_T,
)
DECODER_TERM = -normal_expectation(
    normal_log_density(x_0, REVERSE_SCALE * sp.Symbol("x_1", real=True) + REVERSE_SHIFT, sigma2),
    sp.Symbol("x_1", real=True),
    forward_marginal.MEAN_COEF.subs(alpha_bar, _ALPHA_1) * x_0,
    forward_marginal.VARIANCE.subs(alpha_bar, _ALPHA_1),
)


# --- the chain with concrete T ------------------------------------------------------------------
def _alpha_bar(t: int) -> sp.Expr:
    return sp.Mul(*ALPHAS[:t])


def _step_schedule(t: int) -> dict:
    """beta_t and alpha_bar_{t-1} of step t in terms of the u's."""
    return {beta_t: 1 - ALPHAS[t - 1], alpha_bar_prev: _alpha_bar(t - 1)}


def log_q_step(t: int) -> sp.Expr:
    """log q(x_t | x_{t-1}) = log N(x_t; sqrt(alpha_t) x_{t-1}, beta_t)."""
    return normal_log_density(xs[t], sp.sqrt(ALPHAS[t - 1]) * xs[t - 1], 1 - ALPHAS[t - 1])


def marginal(t: int) -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance of q(x_t | x_0), from derivation (a)."""
    ab = _alpha_bar(t)
    return forward_marginal.MEAN_COEF.subs(alpha_bar, ab) * x_0, forward_marginal.VARIANCE.subs(alpha_bar, ab)


def log_q_marginal(t: int) -> sp.Expr:
    """log q(x_t | x_0) (derivation (a))."""
    return normal_log_density(xs[t], *marginal(t))


def _posterior(t: int) -> tuple[sp.Expr, sp.Expr]:
    """Mean and variance of q(x_{t-1} | x_t, x_0), t >= 2 (derivation (b))."""
    schedule = _step_schedule(t)
    mean = posterior.POSTERIOR_MEAN.subs(schedule).subs({x_0: xs[0], x_t: xs[t]}, simultaneous=True)
    return mean, posterior.VARIANCE.subs(schedule)


def log_q_posterior(t: int) -> sp.Expr:
    """log q(x_{t-1} | x_t, x_0), t >= 2 (derivation (b))."""
    return normal_log_density(xs[t - 1], *_posterior(t))


def log_p_prior(T: int) -> sp.Expr:
    """log p(x_T) = log N(x_T; 0, 1)."""
    return normal_log_density(xs[T], 0, 1)


def _reverse(t: int) -> tuple[sp.Expr, sp.Expr]:
    return cs[t - 1] * xs[t] + ds[t - 1], sigma2s[t - 1]


def log_p_step(t: int) -> sp.Expr:
    """log p_theta(x_{t-1} | x_t) = log N(x_{t-1}; c_t x_t + d_t, sigma_t^2)."""
    return normal_log_density(xs[t - 1], *_reverse(t))


def identity_lhs(T: int) -> sp.Expr:
    """log p(x_T) + sum_t log p(x_{t-1}|x_t) - sum_t log q(x_t|x_{t-1}): the ELBO integrand."""
    return log_p_prior(T) + sp.Add(*(log_p_step(t) - log_q_step(t) for t in range(1, T + 1)))


def identity_rhs(T: int) -> sp.Expr:
    """log p(x_T)/q(x_T|x_0) + sum_{t>=2} log p(x_{t-1}|x_t)/q(x_{t-1}|x_t,x_0) + log p(x_0|x_1)."""
    transitions = sp.Add(*(log_p_step(t) - log_q_posterior(t) for t in range(2, T + 1)))
    return (log_p_prior(T) - log_q_marginal(T)) + transitions + log_p_step(1)


def _reverse_marginals(T: int) -> list[tuple[sp.Expr, sp.Expr]]:
    """(mean, variance) of p(x_t) for t = T, ..., 0 under the reverse chain (index by t)."""
    out: dict[int, tuple[sp.Expr, sp.Expr]] = {T: (sp.Integer(0), sp.Integer(1))}
    for t in range(T, 0, -1):
        mean, var = out[t]
        out[t - 1] = (cs[t - 1] * mean + ds[t - 1], cs[t - 1] ** 2 * var + sigma2s[t - 1])
    return [out[t] for t in range(T + 1)]


# The marginalisation step of the reverse chain, from derivation (g): a Gaussian prior N(m, V) on z and
# x | z ~ N(c z + d, s) is derivation (g)'s model after z = m + sqrt(V) z' (w = c sqrt(V), b = c m + d).
_m, _V = sp.Symbol("m", real=True), sp.Symbol("V", positive=True)
_z, _c, _d, _s = sp.Symbol("z", real=True), REVERSE_SCALE, REVERSE_SHIFT, sigma2
_VAE_SUBS = {
    maximum_likelihood.W: _c * sp.sqrt(_V),
    maximum_likelihood.B: _c * _m + _d,
    maximum_likelihood.NOISE_VAR: _s,
}


def _reverse_posterior(x_obs, mean, var, c, d, s) -> tuple[sp.Expr, sp.Expr]:
    """p(z | x_obs) for z ~ N(mean, var), x_obs | z ~ N(c z + d, s): derivation (g)'s posterior, shifted."""
    subs = {
        maximum_likelihood.W: c * sp.sqrt(var),
        maximum_likelihood.B: c * mean + d,
        maximum_likelihood.NOISE_VAR: s,
        maximum_likelihood.X: x_obs,
    }
    standard_mean = maximum_likelihood.VAE_POSTERIOR_MEAN.subs(subs, simultaneous=True)
    standard_var = maximum_likelihood.VAE_POSTERIOR_VAR.subs(subs, simultaneous=True)
    return mean + sp.sqrt(var) * standard_mean, var * standard_var


# --- every T: the decomposition as a statement in T, by induction ----------------------------------
# Log-densities as functions of the step index t (x's implicit): the rewrite uses only how they relate.
_t, _T = sp.symbols("t T", integer=True, positive=True)
LOG_P_STEP = sp.Function(r"\ell_{p}")  # log p_theta(x_{t-1} | x_t)
LOG_Q_STEP = sp.Function(r"\ell_{q}")  # log q(x_t | x_{t-1})
LOG_Q_POSTERIOR = sp.Function(r"\ell_{\tilde q}")  # log q(x_{t-1} | x_t, x_0)
LOG_Q_MARGINAL = sp.Function(r"\ell_{m}")  # log q(x_t | x_0)
LOG_P_PRIOR = sp.Function(r"\ell_{\pi}")  # log p(x_T) of a chain of length T


def integrand_every_T(n: sp.Expr) -> sp.Expr:
    """Seed eq. 52 for a chain of length n: log p(x_n) + sum_{t=1}^n (log p_theta(x_{t-1}|x_t) - log q(x_t|x_{t-1}))."""
    return LOG_P_PRIOR(n) + sp.Sum(LOG_P_STEP(_t) - LOG_Q_STEP(_t), (_t, 1, n))


def decomposed_every_T(n: sp.Expr) -> sp.Expr:
    """Seed eq. 58's shape: -L_n's integrand + sum_{t=2}^n log p_theta/q(x_{t-1}|x_t,x_0) + log p_theta(x_0|x_1)."""
    return (LOG_P_PRIOR(n) - LOG_Q_MARGINAL(n)) + sp.Sum(LOG_P_STEP(_t) - LOG_Q_POSTERIOR(_t), (_t, 2, n)) \
        + LOG_P_STEP(1)


def _bayes(t: sp.Expr) -> dict:
    """Bayes' rule at step t >= 2 (proved pointwise above):
    q(x_t|x_{t-1}) = q(x_{t-1}|x_t,x_0) q(x_t|x_0) / q(x_{t-1}|x_0)."""
    return {LOG_Q_STEP(t): LOG_Q_POSTERIOR(t) + LOG_Q_MARGINAL(t) - LOG_Q_MARGINAL(t - 1)}


def _peel(expr: sp.Expr, n: sp.Expr) -> sp.Expr:
    """The definition of a finite sum: sum_{t=a}^{n} f(t) = sum_{t=a}^{n-1} f(t) + f(n), for the sums ending at n."""
    return expr.replace(
        lambda e: isinstance(e, sp.Sum) and e.limits[0][2] == n,
        lambda e: sp.Sum(e.function, (_t, e.limits[0][1], n - 1)) + e.function.subs(_t, n),
    )


EVERY_T_DIFFERENCE = integrand_every_T(_T) - decomposed_every_T(_T)  # D(T), to be shown 0 for every T >= 1
EVERY_T_BASE = EVERY_T_DIFFERENCE.subs(_T, 1).doit().subs({LOG_Q_STEP(1): LOG_Q_MARGINAL(1)})
EVERY_T_INCREMENT = sp.expand(
    _peel(integrand_every_T(_T + 1) - decomposed_every_T(_T + 1), _T + 1) - EVERY_T_DIFFERENCE
)  # D(T + 1) - D(T), the sums of D(T) cancelling
EVERY_T_INCREMENT_AFTER_BAYES = sp.expand(EVERY_T_INCREMENT.subs(_bayes(_T + 1)))


# --- the facts the induction uses, checked at a generic step t --------------------------------------
# The domain 0 < alpha_bar_{t-1} < 1, 0 < beta_t < 1 by positive parameters p, b (logs of positive factors split).
_p, _b = sp.symbols("p b", positive=True)
_ON_DOMAIN = {alpha_bar_prev: 1 / (1 + _p), beta_t: _b / (1 + _b)}
_ALPHA_T = 1 - beta_t


def _log_q_marginal_at(abar: sp.Expr, x: sp.Expr) -> sp.Expr:
    """log q(x | x_0) at alpha_bar = abar, from derivation (a)'s exported mean coefficient and variance."""
    return normal_log_density(x, forward_marginal.MEAN_COEF.subs(alpha_bar, abar) * x_0,
                              forward_marginal.VARIANCE.subs(alpha_bar, abar))


GENERIC_LOG_Q_STEP = normal_log_density(x_t, sp.sqrt(_ALPHA_T) * x_prev, beta_t)
GENERIC_BAYES_RHS = (
    normal_log_density(x_prev, posterior.POSTERIOR_MEAN, posterior.VARIANCE)
    + _log_q_marginal_at(alpha_bar_prev * _ALPHA_T, x_t)
    - _log_q_marginal_at(alpha_bar_prev, x_prev)
)

# --- expectations: a Markov chain on a finite state space with undetermined kernels and terms ---------------
_STATES = (0, 1, 2)  # x_0 is the state 0
_T_CHAIN = 3
_KERNEL = sp.Function("K")  # K(t, a, b) = q(x_t = b | x_{t-1} = a); the last state's column fixed by normalisation
_TERM = sp.Function("g")  # g(t, a, b): the integrand's term of step t, a function of (x_{t-1}, x_t) = (a, b) only
_PRIOR = sp.Function("h")  # h(b): the prior term, a function of x_T = b only


def _kernel(t: int, a: int, b: int) -> sp.Expr:
    if b == _STATES[-1]:
        return 1 - sum(_KERNEL(t, a, c) for c in _STATES[:-1])
    return _KERNEL(t, a, b)


@functools.cache
def _chain_marginal(t: int) -> tuple[sp.Expr, ...]:
    """q(x_t = b | x_0) for each state b: the chain's definition, x_1, ..., x_{t-1} summed out step by step."""
    if t == 0:
        return tuple(sp.Integer(1 if b == 0 else 0) for b in _STATES)
    previous = _chain_marginal(t - 1)
    return tuple(sp.expand(sum(previous[a] * _kernel(t, a, b) for a in _STATES)) for b in _STATES)


def _expectation_over_paths() -> sp.Expr:
    """E over q(x_{1:T} | x_0) = prod_t K(t, x_{t-1}, x_t) of h(x_T) + sum_t g(t, x_{t-1}, x_t): every path."""
    total = sp.Integer(0)
    for path in itertools.product(_STATES, repeat=_T_CHAIN):
        states = (0, *path)
        weight = sp.Mul(*(_kernel(t, states[t - 1], states[t]) for t in range(1, _T_CHAIN + 1)))
        total += weight * (_PRIOR(states[-1]) + sum(_TERM(t, states[t - 1], states[t])
                                                     for t in range(1, _T_CHAIN + 1)))
    return sp.expand(total)


def _expectation_by_pairs() -> sp.Expr:
    """E_{q(x_T|x_0)} h + sum_t E_{q(x_{t-1}, x_t | x_0)} g(t, .), with q(x_{t-1}, x_t | x_0) = q(x_{t-1}|x_0) K_t."""
    prior = sum(_chain_marginal(_T_CHAIN)[b] * _PRIOR(b) for b in _STATES)
    return sp.expand(prior + sum(_chain_marginal(t - 1)[a] * _kernel(t, a, b) * _TERM(t, a, b)
                                 for t in range(1, _T_CHAIN + 1) for a in _STATES for b in _STATES))


def _expectation_by_tower() -> sp.Expr:
    """The same with each pair law written as q(x_t | x_0) q(x_{t-1} | x_t, x_0), the posterior by Bayes' rule:
    E_{q(x_t|x_0)} E_{q(x_{t-1}|x_t,x_0)} g(t, .)."""
    prior = sum(_chain_marginal(_T_CHAIN)[b] * _PRIOR(b) for b in _STATES)
    inner = 0
    for t in range(1, _T_CHAIN + 1):
        for b in _STATES:
            marginal_b = _chain_marginal(t)[b]
            inner += marginal_b * sum(_chain_marginal(t - 1)[a] * _kernel(t, a, b) / marginal_b * _TERM(t, a, b)
                                      for a in _STATES)
    return prior + inner


def _every_T_steps() -> tuple[Step, ...]:
    D = r"D(T)"
    return (
        Step(
            "Definition: for every T, write D(T) = (the integrand of eq. 52 for a chain of length T) - (its decomposed "
            "form, eq. 58: prior term + sum_{t>=2} of the posterior terms + the decoder term), with log-densities as "
            "functions of the step index.",
            sp.Symbol("D_T"),
            EVERY_T_DIFFERENCE,
            Check.DEFINITION,
            lhs_latex=D,
        ),
        Step(
            "Bayes' rule at a generic step t >= 2, with derivation (b)'s exported posterior and derivation (a)'s "
            "marginals: log q(x_t | x_{t-1}) = log q(x_{t-1} | x_t, x_0) + log q(x_t | x_0) - log q(x_{t-1} | x_0), "
            "an identity in x_0, x_{t-1}, x_t (on the domain alpha_bar_{t-1} = 1 / (1 + p), beta_t = b / (1 + b), "
            "p, b > 0, where the logs of the positive variances split).",
            logs_split(GENERIC_LOG_Q_STEP.subs(_ON_DOMAIN)),
            logs_split(GENERIC_BAYES_RHS.subs(_ON_DOMAIN)),
            lhs_latex=r"\log q(x_t \mid x_{t-1})",
        ),
        Step(
            "At t = 1 (x_{t-1} = x_0, alpha_bar_1 = alpha_1 = 1 - beta_1): the first forward step is derivation (a)'s "
            "marginal q(x_1 | x_0).",
            GENERIC_LOG_Q_STEP.subs(x_prev, x_0),
            _log_q_marginal_at(_ALPHA_T, x_t),
            lhs_latex=r"\log q(x_1 \mid x_0)",
            display=AT_T1,
        ),
        Step(
            "Assumption (the two facts just checked, imposed on the induction's undetermined functions of t): "
            "Bayes' rule for t >= 2, and q(x_1 | x_0) is both the first forward step and the marginal at t = 1.",
            LOG_Q_STEP(_t),
            LOG_Q_POSTERIOR(_t) + LOG_Q_MARGINAL(_t) - LOG_Q_MARGINAL(_t - 1),
            Check.DEFINITION,
            lhs_latex=r"\ell_q(t)\ (t \geq 2);\quad \ell_q(1) = \ell_m(1)",
        ),
        Step(
            "Base case T = 1 (the sum from t = 2 is empty): D(1) = 0.",
            EVERY_T_BASE,
            0,
            lhs_latex=r"D(1)",
        ),
        Step(
            "Induction: by the definition of a finite sum (peel the term t = T + 1), D(T + 1) - D(T) leaves only "
            "step T + 1's terms ...",
            EVERY_T_INCREMENT,
            -LOG_Q_STEP(_T + 1) + LOG_Q_POSTERIOR(_T + 1) + LOG_Q_MARGINAL(_T + 1) - LOG_Q_MARGINAL(_T),
            lhs_latex=r"D(T + 1) - D(T)",
        ),
        Step(
            "... which Bayes' rule at t = T + 1 >= 2 makes 0: D(T + 1) = D(T) = ... = D(1) = 0, so the "
            "decomposition holds for every T >= 1.",
            EVERY_T_INCREMENT_AFTER_BAYES,
            0,
            lhs_latex=r"D(T + 1) - D(T)\big|_{\text{Bayes at } T + 1}",
        ),
        Step(
            f"Expectations: each term of the decomposed integrand depends on at most (x_{{t-1}}, x_t). For a Markov "
            f"chain q(x_{{1:T}} | x_0) with undetermined kernels K(t, a, b) on {len(_STATES)} states and T = "
            f"{_T_CHAIN}, the expectation over all paths of h(x_T) + sum_t g(t, x_{{t-1}}, x_t) (undetermined h, g) "
            "is, by linearity, E_{q(x_T|x_0)} h + sum_t E_{q(x_{t-1}, x_t | x_0)} g(t, .): summing out the later "
            "steps gives 1 (each kernel is normalised), the earlier ones give the marginal q(x_{t-1} | x_0). "
            "Checked for this T and state space, not for every T.",
            _expectation_over_paths(),
            _expectation_by_pairs(),
            lhs_latex=r"\mathbb{E}_{q(x_{1:T} \mid x_0)}\left[h(x_T) + \sum_t g_t(x_{t-1}, x_t)\right]",
        ),
        Step(
            "The tower rule: q(x_{t-1}, x_t | x_0) = q(x_t | x_0) q(x_{t-1} | x_t, x_0) (the posterior by Bayes' "
            "rule), so each pair expectation is E_{q(x_t|x_0)} E_{q(x_{t-1}|x_t,x_0)}: for t >= 2 the inner one "
            "of log p_theta / q(x_{t-1}|x_t,x_0) is minus the KL, which gives L_{t-1}.",
            _expectation_by_pairs(),
            _expectation_by_tower(),
            lhs_latex=r"\sum_t \mathbb{E}_{q(x_{t-1}, x_t \mid x_0)}\, g_t",
        ),
    )


@functools.cache
def t2_model() -> dict:
    """The linear-Gaussian T = 2 model: every expectation of the bound from its definition, the closed forms,
    log p_theta(x_0), the model's posterior p_theta(x_1 | x_0) ("post_x1") and p_theta(x_2 | x_1) ("post_x2"),
    and the gap's KL ("gap_kl"); "gap" is log p_theta(x_0) - ELBO. Used by `derivation` and derivation (m)."""
    # --- expectations, T = 2 -------------------------------------------------------------------
    T2 = 2
    x1, x2 = xs[1], xs[2]
    q1_mean, q1_var = marginal(1)
    q2_mean, q2_var = marginal(2)
    step2_mean, step2_var = sp.sqrt(ALPHAS[1]) * x1, 1 - ALPHAS[1]
    post2_mean, post2_var = _posterior(2)
    log_p_joint = log_p_prior(T2) + log_p_step(2) + log_p_step(1)
    log_q_joint = log_q_step(1) + log_q_step(2)

    def expect_forward(expr: sp.Expr) -> sp.Expr:
        """E over q(x_1, x_2 | x_0) = q(x_1 | x_0) q(x_2 | x_1), innermost x_2 first."""
        return normal_expectation(normal_expectation(expr, x2, step2_mean, step2_var), x1, q1_mean, q1_var)

    elbo_definition = expect_forward(log_p_joint - log_q_joint)
    prior_from_definition = -normal_expectation(log_p_prior(T2) - log_q_marginal(T2), x2, q2_mean, q2_var)
    transition_from_definition = normal_expectation(
        normal_expectation(log_q_posterior(2) - log_p_step(2), x1, post2_mean, post2_var), x2, q2_mean, q2_var
    )
    decoder_from_definition = -normal_expectation(log_p_step(1), x1, q1_mean, q1_var)
    prior_closed = PRIOR_TERM.subs(alpha_bar, _alpha_bar(2))
    reverse_subs = {REVERSE_SCALE: cs[1], REVERSE_SHIFT: ds[1], sigma2: sigma2s[1]}
    transition_closed = TRANSITION_TERM.subs(_step_schedule(2)).subs(reverse_subs, simultaneous=True)
    decoder_closed = DECODER_TERM.subs(beta_t, 1 - ALPHAS[0]).subs(
        {REVERSE_SCALE: cs[0], REVERSE_SHIFT: ds[0], sigma2: sigma2s[0]}, simultaneous=True
    )

    marginals = _reverse_marginals(T2)
    m1, v1 = marginals[1]
    log_p_x0_composed = maximum_likelihood.VAE_LOG_MARGINAL.subs(
        {
            maximum_likelihood.W: cs[0] * sp.sqrt(v1),
            maximum_likelihood.B: cs[0] * m1 + ds[0],
            maximum_likelihood.NOISE_VAR: sigma2s[0],
            maximum_likelihood.X: x_0,
        },
        simultaneous=True,
    )
    log_p_x0 = normal_log_density(x_0, *marginals[0])
    post_x1_mean, post_x1_var = _reverse_posterior(x_0, *marginals[1], cs[0], ds[0], sigma2s[0])
    post_x2_mean, post_x2_var = _reverse_posterior(x1, *marginals[2], cs[1], ds[1], sigma2s[1])
    log_p_posterior = normal_log_density(x1, post_x1_mean, post_x1_var) + normal_log_density(
        x2, post_x2_mean, post_x2_var
    )
    gap_kl = expect_forward(log_q_joint - log_p_posterior)

    return {
        "elbo_definition": elbo_definition, "prior_from_definition": prior_from_definition,
        "transition_from_definition": transition_from_definition, "decoder_from_definition": decoder_from_definition,
        "prior_closed": prior_closed, "transition_closed": transition_closed, "decoder_closed": decoder_closed,
        "log_p_x0_composed": log_p_x0_composed, "log_p_x0": log_p_x0, "log_p_joint": log_p_joint,
        "log_p_posterior": log_p_posterior, "gap_kl": gap_kl, "gap": log_p_x0 - elbo_definition,
        "post_x1": (post_x1_mean, post_x1_var), "post_x2": (post_x2_mean, post_x2_var),
    }


@functools.cache
def derivation() -> Derivation:
    """The pointwise rewrite (T = 3, then T = 2), then expectations on the linear-Gaussian T = 2 model."""
    T = MAX_T
    q_chain = sp.Add(*(log_q_step(t) for t in range(1, T + 1)))
    p_chain = log_p_prior(T) + sp.Add(*(log_p_step(t) for t in range(1, T + 1)))
    bayes_steps = tuple(
        Step(
            f"Bayes' rule for t = {t} (with the Markov property q(x_t | x_{{t-1}}, x_0) = q(x_t | x_{{t-1}})): "
            "the forward step equals posterior times marginal ratio, as an identity in x_0, x_{t-1}, x_t.",
            log_q_step(t),
            log_q_posterior(t) + log_q_marginal(t) - log_q_marginal(t - 1),
            lhs_latex=rf"\log q(x_{t} \mid x_{t - 1})",
        )
        for t in range(2, T + 1)
    )
    telescoped = sp.Add(*(log_q_marginal(t) - log_q_marginal(t - 1) for t in range(2, T + 1)), evaluate=False)

    t2 = t2_model()
    (elbo_definition, prior_from_definition, transition_from_definition, decoder_from_definition, prior_closed,
     transition_closed, decoder_closed, log_p_x0_composed, log_p_x0, log_p_joint, log_p_posterior, gap_kl) = (
        t2[name] for name in ("elbo_definition", "prior_from_definition", "transition_from_definition",
                              "decoder_from_definition", "prior_closed", "transition_closed", "decoder_closed",
                              "log_p_x0_composed", "log_p_x0", "log_p_joint", "log_p_posterior", "gap_kl"))

    # Generic step t: the exported L_{t-1} and L_0 are the derived expectations (module level).
    transition_generic, decoder_generic = TRANSITION_TERM, DECODER_TERM

    steps = (
        Step(
            "Definition (the schedule's parameters): each step has a free parameter u_t = beta_t/alpha_t > 0, so "
            "alpha_t = 1/(1 + u_t) and every "
            "variance is visibly positive.",
            sp.Symbol("alphas"),
            sp.Tuple(*ALPHAS),
            Check.DEFINITION,
            lhs_latex=r"\left(\alpha_1, \alpha_2, \alpha_3\right)",
        ),
        Step(
            "Model: the forward chain q(x_{1:3} | x_0) = prod_t N(x_t; sqrt(alpha_t) x_{t-1}, beta_t), in logs.",
            sp.Symbol("log_q"),
            q_chain,
            Check.DEFINITION,
            lhs_latex=r"\log q(x_{1:3} \mid x_0)",
        ),
        Step(
            "Model: a Gaussian reverse chain, linear in x_t with free coefficients: p(x_3) = N(0, 1), "
            "p(x_{t-1} | x_t) = N(c_t x_t + d_t, sigma_t^2).",
            sp.Symbol("log_p"),
            p_chain,
            Check.DEFINITION,
            lhs_latex=r"\log p_\theta(x_{0:3})",
        ),
        Step(
            "Definition: the integrand of the ELBO (seed eq. 52), log p(x_3) + sum_t log p(x_{t-1}|x_t) "
            "- sum_t log q(x_t|x_{t-1}).",
            sp.Symbol("integrand"),
            identity_lhs(T),
            Check.DEFINITION,
            lhs_latex=r"\log \frac{p_\theta(x_{0:3})}{q(x_{1:3} \mid x_0)}",
        ),
        *bayes_steps,
        Step(
            "The ratios of marginals telescope: sum_{t=2}^{3} [log q(x_t|x_0) - log q(x_{t-1}|x_0)] = "
            "log q(x_3|x_0) - log q(x_1|x_0).",
            telescoped,
            log_q_marginal(T) - log_q_marginal(1),
            lhs_latex=r"\sum_{t=2}^{3} \log \frac{q(x_t \mid x_0)}{q(x_{t-1} \mid x_0)}",
        ),
        Step(
            "Expectations, on the T = 2 linear-Gaussian model. Marginalising a step of the reverse chain is "
            "derivation (g)'s marginal with w = c sqrt(V), b = c m + d: N(m, V) becomes N(c m + d, c^2 V + sigma^2).",
            maximum_likelihood.VAE_LOG_MARGINAL.subs(_VAE_SUBS, simultaneous=True).subs(maximum_likelihood.X, _z),
            normal_log_density(_z, _c * _m + _d, _c**2 * _V + _s),
            lhs_latex=r"\log \int \mathcal{N}(z; c_t x + d_t, \sigma_t^2)\, \mathcal{N}(x; m, V)\, dx",
        ),
        Step(
            "Applied twice (x_2 ~ N(0, 1) to x_1, then x_1 to x_0), derivation (g)'s marginal gives log p_theta(x_0) "
            "for T = 2.",
            log_p_x0_composed,
            log_p_x0,
            lhs_latex=r"\log p_\theta(x_0)",
        ),
        Step(
            "The ELBO by its definition, E over q(x_1|x_0) q(x_2|x_1) (innermost x_2), equals "
            "-(L_T + L_1 + L_0) with the closed forms below (seed eqs. 56-58).",
            elbo_definition,
            -(prior_closed + transition_closed + decoder_closed),
            lhs_latex=(
                r"\mathbb{E}_{q(x_{1:2} \mid x_0)}"
                r"\left[\log \frac{p_\theta(x_{0:2})}{q(x_{1:2} \mid x_0)}\right]"
            ),
        ),
        Step(
            "L_T: minus the expectation of log p(x_T)/q(x_T|x_0) under q(x_T|x_0) is the KL of derivation (c).",
            prior_from_definition,
            prior_closed,
            lhs_latex=r"L_T = \mathbb{E}_{q(x_2 \mid x_0)}\left[\log \frac{q(x_2 \mid x_0)}{p(x_2)}\right]",
        ),
        Step(
            "L_1: the expectation of log q(x_1|x_2,x_0)/p(x_1|x_2), first over q(x_1|x_2,x_0), then over q(x_2|x_0).",
            transition_from_definition,
            transition_closed,
            lhs_latex=(
                r"L_1 = \mathbb{E}_{q(x_2 \mid x_0)} \mathbb{E}_{q(x_1 \mid x_2, x_0)}"
                r"\left[\log \frac{q(x_1 \mid x_2, x_0)}{p_\theta(x_1 \mid x_2)}\right]"
            ),
        ),
        Step(
            "L_0: minus the expected log-likelihood of the Gaussian decoder p(x_0|x_1) under q(x_1|x_0).",
            decoder_from_definition,
            decoder_closed,
            lhs_latex=r"L_0 = -\mathbb{E}_{q(x_1 \mid x_0)}\left[\log p_\theta(x_0 \mid x_1)\right]",
        ),
        Step(
            "The model's posterior factorises along the chain: p(x_{1:2}|x_0) = p(x_1|x_0) p(x_2|x_1), each factor "
            "derivation (g)'s posterior (shifted to the prior N(m, V)).",
            log_p_joint - log_p_x0,
            log_p_posterior,
            lhs_latex=r"\log p_\theta(x_{0:2}) - \log p_\theta(x_0)",
        ),
    )
    steps = steps + _every_T_steps() + (
        Step(
            "Definition (the names of seed eq. 58's terms): with the decomposition (every T) and the two expectation "
            "steps above, L_T = E_{q(x_T|x_0)} log q(x_T|x_0) / p(x_T), L_{t-1} = E_{q(x_t|x_0)} KL(q(x_{t-1}|x_t,x_0) "
            "|| p_theta(x_{t-1}|x_t)), L_0 = -E_{q(x_1|x_0)} log p_theta(x_0|x_1), and E[integrand] = -L_T - "
            "sum_{t=2}^T L_{t-1} - L_0; their closed forms are the generic-step results below.",
            sp.Symbol("ELBO_T"),
            -sp.Symbol("L_T") - sp.Sum(sp.Function("L")(_t - 1), (_t, 2, _T)) - sp.Symbol("L_0"),
            Check.DEFINITION,
            lhs_latex=(
                r"\mathbb{E}_{q(x_{1:T} \mid x_0)}"
                r"\left[\log \frac{p_\theta(x_{0:T})}{q(x_{1:T} \mid x_0)}\right]"
            ),
        ),
    )
    results = (
        Step(
            "The pointwise rewrite for T = 2.",
            identity_lhs(2),
            identity_rhs(2),
            lhs_latex=r"\log \frac{p_\theta(x_{0:2})}{q(x_{1:2} \mid x_0)}",
        ),
        Step(
            "The pointwise rewrite for T = 3: substituting the Bayes steps and the telescoped sum, the log q(x_1|x_0) "
            "left over cancels the t = 1 forward step (seed eq. 55).",
            identity_lhs(3),
            identity_rhs(3),
            lhs_latex=r"\log \frac{p_\theta(x_{0:3})}{q(x_{1:3} \mid x_0)}",
        ),
        Step(
            "L_{t-1} for any step t >= 2: the expectation over q(x_t|x_0) of the KL of derivation (c) between "
            "q(x_{t-1}|x_t,x_0) and p_theta(x_{t-1}|x_t) = N(c_t x_t + d_t, sigma_t^2).",
            transition_generic,
            TRANSITION_TERM_PAPER,
            lhs_latex=r"L_{t-1}",
        ),
        Step(
            "L_0 for the continuous Gaussian decoder (t = 1, alpha_bar_1 = alpha_1 = 1 - beta_1).",
            decoder_generic,
            DECODER_TERM_PAPER,
            lhs_latex=r"L_0",
            display=AT_T1
            + ((REVERSE_SCALE, sp.Symbol("c_1", real=True)), (REVERSE_SHIFT, sp.Symbol("d_1", real=True))),
        ),
        Step(
            "The gap of the bound is the KL from q(x_{1:2}|x_0) to the model's posterior: log p_theta(x_0) - ELBO "
            "= E_q[log q(x_{1:2}|x_0)/p_theta(x_{1:2}|x_0)] >= 0.",
            log_p_x0 - elbo_definition,
            gap_kl,
            lhs_latex=r"\log p_\theta(x_0) - \mathrm{ELBO}",
        ),
    )
    return Derivation(
        key="f",
        title="The variational bound on log p(x_0) and its gap",
        module="derivations.elbo",
        summary=(
            "The ELBO's integrand log p_theta(x_{0:T})/q(x_{1:T}|x_0) is rewritten as the seed does in eqs. 52-55: "
            "for t >= 2 each forward step q(x_t|x_{t-1}) is replaced by Bayes' rule with the posterior "
            "q(x_{t-1}|x_t,x_0) of derivation (b) and the marginals of derivation (a), the ratios of marginals "
            "telescope to q(x_T|x_0)/q(x_1|x_0), and the leftover q(x_1|x_0) cancels the first forward step. "
            "With scalar Gaussians and a reverse chain linear in x_t with free coefficients this is checked as an "
            "identity in all the x's for T = 3 and T = 2, the schedule written through u_t = beta_t/alpha_t so "
            "that every variance is visibly positive. Taking expectations on the T = 2 model, the ELBO computed "
            "from its definition equals -(L_T + L_1 + L_0), each term an expectation computed from its own "
            "definition and matched to a closed form (L_T and L_{t-1} through the KL of derivation (c), L_0 a "
            "Gaussian decoder's expected log-likelihood). The model's marginal log p_theta(x_0) and its posterior "
            "over x_{1:2} follow from derivation (g), and the bound's gap log p_theta(x_0) - ELBO equals the KL "
            "from q(x_{1:2}|x_0) to that posterior, so the bound is tight exactly when the reverse chain's "
            "posterior matches the forward process."
        ),
        steps=steps,
        results=results,
    )


# --- numeric oracle -------------------------------------------------------------------------------


@dataclass(frozen=True)
class ChainElboTerms:
    """The terms of the bound for a scalar x_0 and a linear-Gaussian reverse chain (float64 of 50-digit values)."""

    prior: float  # L_T = KL(q(x_T | x_0) || N(0, 1))
    transitions: tuple[float, ...]  # L_{t-1} for t = 2..T: transitions[t - 2]
    decoder: float  # L_0 = -E_{q(x_1|x_0)} log N(x_0; c_1 x_1 + d_1, sigma_1^2)
    elbo: float  # -(L_T + sum_t L_{t-1} + L_0)
    log_likelihood: float  # log p_theta(x_0)
    gap: float  # log p_theta(x_0) - elbo = KL(q(x_{1:T} | x_0) || p_theta(x_{1:T} | x_0))


_REVERSE = (REVERSE_SCALE, REVERSE_SHIFT, sigma2)
_prior_mp = sp.lambdify((alpha_bar, x_0), PRIOR_TERM, modules="mpmath")
_transition_mp = sp.lambdify((beta_t, alpha_bar_prev, x_0, *_REVERSE), TRANSITION_TERM, modules="mpmath")
_decoder_mp = sp.lambdify((beta_t, x_0, *_REVERSE), DECODER_TERM, modules="mpmath")
_mean_s, _var_s = sp.Symbol("mean", real=True), sp.Symbol("var", positive=True)
_log_density_mp = sp.lambdify((x_0, _mean_s, _var_s), normal_log_density(x_0, _mean_s, _var_s), modules="mpmath")


def gaussian_chain_elbo_terms(
    betas: Sequence[float],
    x0: float,
    reverse_scales: Sequence[float],
    reverse_shifts: Sequence[float],
    reverse_variances: Sequence[float],
) -> ChainElboTerms:
    """The bound's terms for q(x_t | x_{t-1}) = N(sqrt(1 - beta_t) x_{t-1}, beta_t), p(x_T) = N(0, 1) and
    p_theta(x_{t-1} | x_t) = N(c_t x_t + d_t, sigma_t^2); index t - 1 of each sequence holds step t."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (betas, reverse_scales, reverse_shifts, reverse_variances)]
    T = len(arrays[0])
    if T < 1 or any(a.shape != (T,) for a in arrays):
        shapes = ", ".join(str(a.shape) for a in arrays)
        raise ValueError(f"betas and the reverse coefficients must be 1-D of one length T >= 1, got shapes {shapes}")
    if not np.all((arrays[0] > 0) & (arrays[0] < 1)):
        raise ValueError(f"every beta_t must lie in (0, 1), got {arrays[0]}")
    if not np.all(arrays[3] > 0):
        raise ValueError(f"every reverse variance sigma_t^2 must be positive, got {arrays[3]}")
    alpha_bars = alpha_bar_from_betas(arrays[0])  # 50-digit mpf, index t
    with mpmath.workdps(DIGITS):
        mp = [[mpmath.mpf(float(v)) for v in a] for a in arrays]
        mbetas, mc, md, ms = mp
        x = mpmath.mpf(float(x0))
        prior = _prior_mp(alpha_bars[T], x)
        transitions = [
            _transition_mp(mbetas[t - 1], alpha_bars[t - 1], x, mc[t - 1], md[t - 1], ms[t - 1])
            for t in range(2, T + 1)
        ]
        decoder = _decoder_mp(mbetas[0], x, mc[0], md[0], ms[0])
        elbo = -(prior + mpmath.fsum(transitions) + decoder)
        mean, var = mpmath.mpf(0), mpmath.mpf(1)  # p(x_T)
        for t in range(T, 0, -1):
            mean, var = mc[t - 1] * mean + md[t - 1], mc[t - 1] ** 2 * var + ms[t - 1]
        log_likelihood = _log_density_mp(x, mean, var)
        return ChainElboTerms(
            prior=float(prior),
            transitions=tuple(float(v) for v in transitions),
            decoder=float(decoder),
            elbo=float(elbo),
            log_likelihood=float(log_likelihood),
            gap=float(log_likelihood - elbo),
        )


__all__ = [
    "REVERSE_SCALE",
    "REVERSE_SHIFT",
    "PRIOR_TERM",
    "TRANSITION_TERM",
    "TRANSITION_TERM_PAPER",
    "DECODER_TERM",
    "DECODER_TERM_PAPER",
    "identity_lhs",
    "identity_rhs",
    "ChainElboTerms",
    "gaussian_chain_elbo_terms",
    "derivation",
]
