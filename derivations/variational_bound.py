"""(q) Gibbs' inequality, the VAE bound for any q, and the DDPM bound for every T and every reverse chain.

Derivation (c) proves KL >= 0 between Gaussians, (g) the VAE identity for a linear-Gaussian model and (f) the gap of
the DDPM bound for T = 2 with a linear-Gaussian reverse chain. A trained network is none of these; the inequality it
relies on is proved here in the generality it is used in:

1. Gibbs' inequality for any densities q > 0 and p > 0 on the line (undetermined positive functions): with
   r = p / q, KL(q || p) = E_q[-log r] = E_q[r - 1 - log r] because E_q[r] = int p = 1 = int q (normalisation,
   the definition of a density), and f(r) = r - 1 - log r >= 0 with equality only at r = 1 (as in (c)); so
   KL(q || p) >= 0, with equality iff p = q almost everywhere.
2. The VAE identity for any joint p(x, z) > 0 and any q(z | x) > 0: pointwise
   log p(x) = log p(x, z)/q(z|x) + log q(z|x)/p(z|x), p(z|x) = p(x, z)/p(x); integrated against the normalised q,
   log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) >= ELBO(q), with equality iff q = p(z|x).
3. DDPM for every T >= 1 and arbitrary reverse kernels p_theta(x_{t-1} | x_t) (undetermined, neither Gaussian nor
   linear): by induction on T, with log-densities undetermined functions of the step index,
   log p_theta(x_0) = log p_theta(x_{0:T})/q(x_{1:T}|x_0) + log q(x_{1:T}|x_0)/p_theta(x_{1:T}|x_0) pointwise, and the
   same with the ELBO's integrand in (f)'s decomposed form (L_T, L_{t-1}, L_0: the form the library evaluates);
   part 2 with z = x_{1:T} then gives log p_theta(x_0) - ELBO = KL(q(x_{1:T}|x_0) || p_theta(x_{1:T}|x_0)) >= 0,
   tight iff the model's posterior p_theta(x_{1:T}|x_0) = p_theta(x_{0:T}) / p_theta(x_0) equals q(x_{1:T}|x_0).

Exports (SymPy):
    RATIO r, GIBBS_GAP f(r) = r - 1 - log r
    Z, Q, P, KL_GENERAL      part 1: the densities q(z), p(z) and KL(q || p) = int q log(q/p) dz
    X, ENCODER, JOINT, MARGINAL, POSTERIOR, ELBO_GENERAL, POSTERIOR_KL_GENERAL   part 2
    LOG_P_STEP, LOG_Q_STEP, LOG_P_PRIOR, LOG_LIKELIHOOD   part 3's log-densities as functions of the step index
    chain_integrand(n), chain_gap_integrand(n)   the ELBO's integrand and the posterior KL's integrand, length n
Numeric (float64):
    gibbs_gap(r)   r - 1 - log r, evaluated at 50 digits
    discrete_chain_bound(x0, forward, prior, reverse) -> DiscreteChainBound
        a chain on K states: forward[t - 1][i, j] = q(x_t = j | x_{t-1} = i), prior[j] = p(x_T = j),
        reverse[t - 1][i, j] = p_theta(x_{t-1} = j | x_t = i) (row-stochastic, positive), x0 an index in 0..K-1;
        log p_theta(x_0), the ELBO and KL(q(x_{1:T}|x_0) || p_theta(x_{1:T}|x_0)), each computed from its own
        definition by enumerating the K^T paths at 50 digits, then rounded to float64.
"""

from __future__ import annotations

import functools
import itertools
from collections.abc import Sequence
from dataclasses import dataclass

import mpmath
import numpy as np
import sympy as sp

from derivations import elbo
from derivations.chain import Check, Derivation, Step
from derivations.numeric import DIGITS, float64_function

# --- part 1: Gibbs' inequality ---------------------------------------------------------------------
RATIO = sp.Symbol("r", positive=True)
GIBBS_GAP = RATIO - 1 - sp.log(RATIO)
_s = sp.Symbol("s", positive=True)

Z = sp.Symbol("z", real=True)
_LINE = (Z, -sp.oo, sp.oo)
Q = sp.Function("q", positive=True)(Z)
P = sp.Function("p", positive=True)(Z)
KL_GENERAL = sp.Integral(Q * sp.log(Q / P), _LINE)
_NORMALISED = {sp.Integral(Q, _LINE): 1, sp.Integral(P, _LINE): 1}


def _f(r: sp.Expr) -> sp.Expr:
    return GIBBS_GAP.subs(RATIO, r)


def merge(expr: sp.Expr) -> sp.Integral:
    """A linear combination of integrals over z as one integral of the expanded combined integrand (linearity)."""
    total = sp.Integer(0)
    for term in sp.Add.make_args(sp.expand(expr)):
        coefficient, integral = term.as_independent(sp.Integral)
        if not isinstance(integral, sp.Integral) or integral.limits != (_LINE,):
            raise ValueError(f"merge takes integrals over z, got {term}")
        total += coefficient * integral.function
    return sp.Integral(sp.expand(total), _LINE)


# --- part 2: the VAE identity for any q and any joint ---------------------------------------------
X = sp.Symbol("x", real=True)
ENCODER = sp.Function("q", positive=True)(Z, X)  # q(z | x)
JOINT = sp.Function("p", positive=True)(X, Z)  # p(x, z)
MARGINAL = sp.Function("p", positive=True)(X)  # p(x) = int p(x, z) dz
POSTERIOR = JOINT / MARGINAL  # p(z | x)
ELBO_GENERAL = sp.Integral(ENCODER * sp.log(JOINT / ENCODER), _LINE)
POSTERIOR_KL_GENERAL = sp.Integral(ENCODER * sp.log(ENCODER / POSTERIOR), _LINE)
_ENCODER_NORMALISED = {sp.Integral(ENCODER, _LINE): 1}
POINTWISE_SPLIT = sp.log(JOINT / ENCODER) + sp.log(ENCODER / POSTERIOR)

# --- part 3: DDPM, every T, any reverse kernels --------------------------------------------------
_t = sp.Symbol("t", integer=True, positive=True)
_T = sp.Symbol("T", integer=True, positive=True)
LOG_P_STEP = sp.Function(r"\ell_p", real=True)  # log p_theta(x_{t-1} | x_t), any kernel
LOG_Q_STEP = sp.Function(r"\ell_q", real=True)  # log q(x_t | x_{t-1})
LOG_P_PRIOR = sp.Function(r"\ell_\pi", real=True)  # log p(x_T) of a chain of length T
LOG_LIKELIHOOD = sp.Function(r"\Lambda", real=True)  # log p_theta(x_0) of a chain of length T


def chain_log_joint(n: sp.Expr) -> sp.Expr:
    """log p_theta(x_{0:n}) = log p(x_n) + sum_{t=1}^n log p_theta(x_{t-1} | x_t) (the reverse chain is Markov)."""
    return LOG_P_PRIOR(n) + sp.Sum(LOG_P_STEP(_t), (_t, 1, n))


def chain_log_forward(n: sp.Expr) -> sp.Expr:
    """log q(x_{1:n} | x_0) = sum_{t=1}^n log q(x_t | x_{t-1}) (the forward chain is Markov)."""
    return sp.Sum(LOG_Q_STEP(_t), (_t, 1, n))


def chain_integrand(n: sp.Expr) -> sp.Expr:
    """The ELBO's integrand log p_theta(x_{0:n}) / q(x_{1:n} | x_0), summed step by step (seed eq. 52)."""
    return LOG_P_PRIOR(n) + sp.Sum(LOG_P_STEP(_t) - LOG_Q_STEP(_t), (_t, 1, n))


def chain_gap_integrand(n: sp.Expr) -> sp.Expr:
    """log q(x_{1:n} | x_0) / p_theta(x_{1:n} | x_0), the model's posterior being p_theta(x_{0:n}) / p_theta(x_0)."""
    return chain_log_forward(n) - (chain_log_joint(n) - LOG_LIKELIHOOD(n))


def _peel(expr: sp.Expr, n: sp.Expr) -> sp.Expr:
    """sum_{t=a}^{n} f(t) = sum_{t=a}^{n-1} f(t) + f(n) (the definition of a finite sum), for the sums ending at n."""
    return expr.replace(
        lambda e: isinstance(e, sp.Sum) and e.limits[0][2] == n,
        lambda e: sp.Sum(e.function, (e.limits[0][0], e.limits[0][1], n - 1)) + e.function.subs(e.limits[0][0], n),
    )


# D(T): log p_theta(x_0) minus the two log-ratios; shown to be 0 for every T >= 1.
SPLIT_DIFFERENCE = LOG_LIKELIHOOD(_T) - chain_integrand(_T) - chain_gap_integrand(_T)
SPLIT_BASE = SPLIT_DIFFERENCE.subs(_T, 1).doit()
SPLIT_INCREMENT = sp.expand(_peel(SPLIT_DIFFERENCE.subs(_T, _T + 1), _T + 1) - SPLIT_DIFFERENCE)

# E(T): the same with (f)'s decomposed integrand (prior term, posterior terms t >= 2, decoder) in (f)'s functions.
_F_FUNCTIONS = {elbo.LOG_P_STEP: LOG_P_STEP, elbo.LOG_Q_STEP: LOG_Q_STEP, elbo.LOG_P_PRIOR: LOG_P_PRIOR}


def decomposed_integrand(n: sp.Expr) -> sp.Expr:
    """(f)'s eq. 58 form: log p(x_n)/q(x_n|x_0) + sum_{t>=2} log p_theta(x_{t-1}|x_t)/q(x_{t-1}|x_t,x_0)
    + log p_theta(x_0|x_1), written with this module's step functions (q's marginal and posterior are (f)'s)."""
    return elbo.decomposed_every_T(n).replace(
        lambda e: isinstance(e, sp.core.function.AppliedUndef) and type(e) in _F_FUNCTIONS,
        lambda e: _F_FUNCTIONS[type(e)](*e.args),
    )


def _bayes(t: sp.Expr) -> dict:
    """Bayes' rule at step t >= 2 (derivation (f)): q(x_t|x_{t-1}) = q(x_{t-1}|x_t,x_0) q(x_t|x_0) / q(x_{t-1}|x_0)."""
    return {LOG_Q_STEP(t): elbo.LOG_Q_POSTERIOR(t) + elbo.LOG_Q_MARGINAL(t) - elbo.LOG_Q_MARGINAL(t - 1)}


DECOMPOSED_DIFFERENCE = LOG_LIKELIHOOD(_T) - decomposed_integrand(_T) - chain_gap_integrand(_T)
DECOMPOSED_BASE = DECOMPOSED_DIFFERENCE.subs(_T, 1).doit().subs({LOG_Q_STEP(1): elbo.LOG_Q_MARGINAL(1)})
DECOMPOSED_INCREMENT = sp.expand(_peel(DECOMPOSED_DIFFERENCE.subs(_T, _T + 1), _T + 1) - DECOMPOSED_DIFFERENCE)


def _kl_latex(a: str, b: str) -> str:
    return rf"D_{{\mathrm{{KL}}}}\left({a}\,\|\,{b}\right)"


def _gibbs_steps() -> tuple[Step, ...]:
    r = P / Q
    kl_latex = _kl_latex("q", "p")
    return (
        Step(
            "Definition: the KL divergence of two densities q > 0 and p > 0 on the line (undetermined positive "
            "functions: no family is assumed).",
            sp.Symbol("KL"),
            KL_GENERAL,
            Check.DEFINITION,
            lhs_latex=kl_latex,
        ),
        Step(
            "Definition of a density: q and p are normalised.",
            sp.Tuple(*_NORMALISED),
            sp.Tuple(1, 1),
            Check.DEFINITION,
            lhs_latex=r"\left(\int q\,dz,\ \int p\,dz\right)",
        ),
        Step(
            "Pointwise, with r = p/q: q log(q/p) = q (-log r).",
            Q * sp.log(Q / P),
            -Q * sp.log(r),
            lhs_latex=r"q(z) \log\frac{q(z)}{p(z)}",
        ),
        Step(
            "Pointwise again: q (-log r) = q (r - 1 - log r) - p + q, since q r = p.",
            -Q * sp.log(r),
            Q * _f(r) - P + Q,
            lhs_latex=r"-q(z) \log r(z)",
        ),
        Step(
            "Integrating (linearity): KL(q || p) - int q f(r) dz + int p dz - int q dz is the integral of zero, so "
            "KL(q || p) = E_q[f(r)] - (int p - int q).",
            merge(KL_GENERAL - sp.Integral(Q * _f(r), _LINE) + sp.Integral(P, _LINE) - sp.Integral(Q, _LINE)),
            0,
            lhs_latex=kl_latex + r" - \int q\,f(r)\,dz + \int p\,dz - \int q\,dz",
        ),
        Step(
            "Normalisation (the definition above) makes the correction vanish: int p - int q = 1 - 1, so "
            "KL(q || p) = E_q[r - 1 - log r].",
            (sp.Integral(P, _LINE) - sp.Integral(Q, _LINE)).subs(_NORMALISED),
            0,
            lhs_latex=r"\int p\,dz - \int q\,dz",
        ),
        Step(
            "f(r) = r - 1 - log r is the integral of f'(s) = (s - 1)/s from 1 to r (SymPy's integrate) ...",
            sp.integrate((_s - 1) / _s, (_s, 1, RATIO)),
            GIBBS_GAP,
            lhs_latex=r"\int_1^r \frac{s - 1}{s}\,ds",
        ),
        Step(
            "... and f'(r) has the sign of r - 1: f'(r) (r - 1) = (r - 1)^2 / r >= 0, zero only at r = 1. So f "
            "decreases strictly on (0, 1), increases strictly on (1, oo), and f(r) >= f(1) = 0 with equality only "
            "at r = 1 (derivation (c) shows the same through f'' = 1/r^2 > 0).",
            sp.diff(GIBBS_GAP, RATIO) * (RATIO - 1),
            (RATIO - 1) ** 2 / RATIO,
            lhs_latex=r"f'(r)\,(r - 1)",
        ),
        Step(
            "f(1) = 0.",
            GIBBS_GAP.subs(RATIO, 1),
            0,
            lhs_latex=r"f(1)",
        ),
        Step(
            "So KL(q || p) = int q f(p/q) dz with q > 0 and f >= 0: KL >= 0, and KL = 0 forces f(p/q) = 0, i.e. "
            "p = q, almost everywhere. Conversely at p = q the integrand q log(q/p) is 0.",
            KL_GENERAL.function.subs(P, Q),
            0,
            lhs_latex=r"q \log\frac{q}{p}\Big|_{p = q}",
        ),
    )


def _vae_steps() -> tuple[Step, ...]:
    return (
        Step(
            "Definition (any latent-variable model): a joint p(x, z) > 0 (an undetermined positive function), its "
            "marginal "
            "p(x) = int p(x, z) dz and posterior p(z|x) = p(x, z)/p(x); any q(z|x) > 0, normalised in z.",
            sp.Tuple(sp.Symbol("p(z|x)"), *_ENCODER_NORMALISED),
            sp.Tuple(POSTERIOR, 1),
            Check.DEFINITION,
            lhs_latex=r"\left(p(z \mid x),\ \int q(z \mid x)\,dz\right)",
        ),
        Step(
            "Pointwise in z (multiply and divide by q): log p(x) = log p(x, z)/q(z|x) + log q(z|x)/p(z|x).",
            sp.log(MARGINAL),
            POINTWISE_SPLIT,
            lhs_latex=r"\log p(x)",
        ),
        Step(
            "Integrating against q (linearity): ELBO(q) + KL(q(z|x) || p(z|x)) - log p(x) int q dz is the integral "
            "of zero.",
            merge(ELBO_GENERAL + POSTERIOR_KL_GENERAL - sp.log(MARGINAL) * sp.Integral(ENCODER, _LINE)),
            0,
            lhs_latex=r"\mathrm{ELBO}(q) + " + _kl_latex(r"q(z|x)", r"p(z|x)") + r" - \log p(x)\int q\,dz",
        ),
        Step(
            "With q normalised: log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)); the KL is >= 0 by Gibbs' inequality "
            "(part 1 with p(z|x) for p), so log p(x) >= ELBO(q) for every q.",
            (sp.log(MARGINAL) * sp.Integral(ENCODER, _LINE)).subs(_ENCODER_NORMALISED),
            sp.log(MARGINAL),
            lhs_latex=r"\log p(x) \int q(z|x)\,dz",
        ),
        Step(
            "Equality: the bound is tight iff the KL is 0, i.e. (part 1) iff q(z|x) = p(z|x) almost everywhere; "
            "there the ELBO's integrand is log p(x) at every z.",
            sp.log(JOINT / ENCODER).subs(ENCODER, POSTERIOR),
            sp.log(MARGINAL),
            lhs_latex=r"\log\frac{p(x, z)}{q(z|x)}\Big|_{q = p(z|x)}",
        ),
    )


def _ddpm_steps() -> tuple[Step, ...]:
    return (
        Step(
            "Definition (every T, any reverse kernels): the log-densities as undetermined real functions of the step "
            "index (the "
            "x's implicit): log p_theta(x_{0:T}) = l_pi(T) + sum_t l_p(t), log q(x_{1:T}|x_0) = sum_t l_q(t) (both "
            "chains Markov), Lambda(T) = log p_theta(x_0), and the model's posterior "
            "log p_theta(x_{1:T}|x_0) = log p_theta(x_{0:T}) - Lambda(T).",
            sp.Tuple(sp.Symbol("log_p"), sp.Symbol("log_q"), sp.Symbol("log_post")),
            sp.Tuple(chain_log_joint(_T), chain_log_forward(_T), chain_log_joint(_T) - LOG_LIKELIHOOD(_T)),
            Check.DEFINITION,
            lhs_latex=r"\left(\log p_\theta(x_{0:T}),\ \log q(x_{1:T} \mid x_0),\ \log p_\theta(x_{1:T} \mid x_0)"
                      r"\right)",
        ),
        Step(
            "Definition: write D(T) = log p_theta(x_0) - log p_theta(x_{0:T})/q(x_{1:T}|x_0) - log q(x_{1:T}|x_0)/"
            "p_theta(x_{1:T}|x_0).",
            sp.Symbol("D_T"),
            SPLIT_DIFFERENCE,
            Check.DEFINITION,
            lhs_latex=r"D(T)",
        ),
        Step("Base case T = 1: D(1) = 0.", SPLIT_BASE, 0, lhs_latex=r"D(1)"),
        Step(
            "Induction: peeling the term t = T + 1 off each sum (the definition of a finite sum), D(T + 1) - D(T) "
            "= 0, whatever the prior, the kernels and log p_theta(x_0) of the longer chain: D(T) = 0 for every T.",
            SPLIT_INCREMENT,
            0,
            lhs_latex=r"D(T + 1) - D(T)",
        ),
        Step(
            "Definition: the same for the ELBO's integrand in (f)'s decomposed form, the form the bound is evaluated "
            "in "
            "(L_T, L_{t-1} for t >= 2, L_0; q's marginals l_m and posteriors l_q~ of (f)): write E(T) = "
            "log p_theta(x_0) - (decomposed integrand) - log q(x_{1:T}|x_0)/p_theta(x_{1:T}|x_0).",
            sp.Symbol("E_T"),
            DECOMPOSED_DIFFERENCE,
            Check.DEFINITION,
            lhs_latex=r"E(T)",
        ),
        Step(
            "Base case T = 1, with q(x_1|x_0) both the first forward step and the marginal at t = 1: E(1) = 0.",
            DECOMPOSED_BASE,
            0,
            lhs_latex=r"E(1)",
        ),
        Step(
            "Induction: peeling t = T + 1, E(T + 1) - E(T) leaves step T + 1's forward step against its Bayes "
            "factors ...",
            DECOMPOSED_INCREMENT,
            -LOG_Q_STEP(_T + 1) + elbo.LOG_Q_POSTERIOR(_T + 1) + elbo.LOG_Q_MARGINAL(_T + 1)
            - elbo.LOG_Q_MARGINAL(_T),
            lhs_latex=r"E(T + 1) - E(T)",
        ),
        Step(
            "... which Bayes' rule at T + 1 >= 2 (derivation (f)) makes 0: E(T) = 0 for every T.",
            sp.expand(DECOMPOSED_INCREMENT.subs(_bayes(_T + 1))),
            0,
            lhs_latex=r"E(T + 1) - E(T)\big|_{\text{Bayes at } T + 1}",
        ),
        Step(
            "Part 2 with x = x_0 and z = x_{1:T}: its pointwise split, written in the chain's log-densities "
            "(log p(x, z) = log p_theta(x_{0:T}), log q(z|x) = log q(x_{1:T}|x_0), log p(x) = Lambda(T)), is the "
            "ELBO's integrand plus the posterior KL's integrand of D(T).",
            sp.expand_log(
                POINTWISE_SPLIT.subs(
                    {
                        JOINT: sp.exp(chain_log_joint(_T)),
                        ENCODER: sp.exp(chain_log_forward(_T)),
                        MARGINAL: sp.exp(LOG_LIKELIHOOD(_T)),
                    },
                    simultaneous=True,
                ),
                force=True,
            ),
            chain_integrand(_T) + chain_gap_integrand(_T),
            lhs_latex=r"\log\frac{p(x, z)}{q(z|x)} + \log\frac{q(z|x)}{p(z|x)}\Big|_{x = x_0,\ z = x_{1:T}}",
        ),
        Step(
            "Tight iff the model's posterior is q: where log p_theta(x_{1:T}|x_0) = log q(x_{1:T}|x_0) (the prior "
            "term solved for), the posterior KL's integrand is 0 and, integrated, log p_theta(x_0) = ELBO; "
            "otherwise the KL is > 0 (part 1).",
            chain_gap_integrand(_T).xreplace(
                {LOG_P_PRIOR(_T): chain_log_forward(_T) - sp.Sum(LOG_P_STEP(_t), (_t, 1, _T)) + LOG_LIKELIHOOD(_T)}
            ),
            0,
            lhs_latex=r"\log\frac{q(x_{1:T} \mid x_0)}{p_\theta(x_{1:T} \mid x_0)}\Big|_{p_\theta(x_{1:T}|x_0) = "
                      r"q(x_{1:T}|x_0)}",
        ),
    )


@functools.cache
def derivation() -> Derivation:
    """Gibbs' inequality, the VAE identity for any q and joint, the DDPM bound for every T, each step checked."""
    steps = _gibbs_steps() + _vae_steps() + _ddpm_steps()
    results = (
        Step(
            "Gibbs' inequality for any densities: KL(q || p) - E_q[f(p/q)] = int q dz - int p dz, which is 1 - 1 = 0 "
            "by normalisation; with f(r) = r - 1 - log r >= 0, KL(q || p) >= 0, and = 0 iff p = q a.e.",
            merge(KL_GENERAL - sp.Integral(Q * _f(P / Q), _LINE)),
            merge(sp.Integral(Q, _LINE) - sp.Integral(P, _LINE)),
            lhs_latex=_kl_latex("q", "p") + r" - \int q\,f\!\left(\frac{p}{q}\right)dz",
        ),
        Step(
            "The VAE identity for any joint and any q: log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) >= ELBO(q) (log p(x) "
            "written as log p(x) int q dz, q being normalised).",
            merge(ELBO_GENERAL + POSTERIOR_KL_GENERAL - sp.log(MARGINAL) * sp.Integral(ENCODER, _LINE)),
            0,
            lhs_latex=r"\mathrm{ELBO}(q) + " + _kl_latex(r"q(z|x)", r"p(z|x)") + r" - \log p(x)",
        ),
        Step(
            "DDPM, every T, any reverse chain: pointwise log p_theta(x_0) = log p_theta(x_{0:T})/q(x_{1:T}|x_0) + "
            "log q(x_{1:T}|x_0)/p_theta(x_{1:T}|x_0) (D(T) = 0); under q(x_{1:T}|x_0), log p_theta(x_0) - ELBO = "
            "KL(q(x_{1:T}|x_0) || p_theta(x_{1:T}|x_0)) >= 0, tight iff p_theta(x_{1:T}|x_0) = q(x_{1:T}|x_0).",
            LOG_LIKELIHOOD(_T) - chain_integrand(_T),
            chain_gap_integrand(_T),
            lhs_latex=r"\log p_\theta(x_0) - \log\frac{p_\theta(x_{0:T})}{q(x_{1:T} \mid x_0)}",
        ),
    )
    return Derivation(
        key="q",
        title="Gibbs' inequality, the VAE bound for any q, and the DDPM bound for every T and every reverse chain",
        module="derivations.variational_bound",
        summary=(
            "For any two densities q > 0 and p > 0 on the line, with no family assumed, KL(q || p) = E_q[-log r] "
            "with r = p/q, and adding E_q[r] - E_q[1] = int p - int q = 0 (normalisation) gives "
            "KL(q || p) = E_q[r - 1 - log r]; f(r) = r - 1 - log r is the integral of (s - 1)/s from 1 to r, so it "
            "is >= 0 with equality only at r = 1, and KL >= 0 with equality iff p = q almost everywhere (Gibbs' "
            "inequality, in the generality derivation (c) proves only for Gaussians). For any joint p(x, z) > 0 and "
            "any q(z|x), log p(x) splits pointwise into log p(x, z)/q(z|x) + log q(z|x)/p(z|x); integrating against "
            "the normalised q gives log p(x) = ELBO(q) + KL(q(z|x) || p(z|x)) >= ELBO(q), tight iff q is the "
            "posterior (derivation (g) shows this for a linear-Gaussian model only). For DDPM the split holds for "
            "every number of steps T >= 1 and arbitrary reverse kernels p_theta(x_{t-1} | x_t), neither Gaussian "
            "nor linear: with log-densities as undetermined functions of the step index it is proved by induction "
            "on T (base T = 1, increment T -> T + 1 by peeling the last term of each sum), both with the ELBO's "
            "integrand summed step by step and in derivation (f)'s decomposed form (L_T, L_{t-1}, L_0, where the "
            "increment needs Bayes' rule). Part 2 with z = x_{1:T} then gives, for any data point x_0, "
            "log p_theta(x_0) - ELBO = KL(q(x_{1:T}|x_0) || p_theta(x_{1:T}|x_0)) >= 0, the bound a trained, "
            "non-linear model relies on, tight exactly when the model's posterior p_theta(x_{0:T})/p_theta(x_0) "
            "equals q(x_{1:T}|x_0)."
        ),
        steps=steps,
        results=results,
    )


# --- numeric ----------------------------------------------------------------------------------------
gibbs_gap = float64_function(GIBBS_GAP, (RATIO,), "gibbs_gap")


@dataclass(frozen=True)
class DiscreteChainBound:
    """log p_theta(x_0), the ELBO and the posterior KL of a discrete chain (float64 of 50-digit values)."""

    log_likelihood: float  # log p_theta(x_0) = log sum over x_{1:T} of p_theta(x_{0:T})
    elbo: float  # E_{q(x_{1:T}|x_0)}[log p_theta(x_{0:T}) / q(x_{1:T}|x_0)]
    kl: float  # KL(q(x_{1:T}|x_0) || p_theta(x_{1:T}|x_0)), p_theta(x_{1:T}|x_0) = p_theta(x_{0:T}) / p_theta(x_0)


def _stochastic(name: str, matrix, K: int) -> list[list[mpmath.mpf]]:
    m = np.asarray(matrix, dtype=np.float64)
    if m.shape != (K, K) or not np.all(m > 0) or not np.allclose(m.sum(axis=1), 1.0, rtol=0, atol=1e-12):
        raise ValueError(f"{name} must be a positive row-stochastic {K}x{K} matrix, got {m!r}")
    return [[mpmath.mpf(float(v)) for v in row] for row in m]


def discrete_chain_bound(
    x0: int, forward: Sequence[np.ndarray], prior: np.ndarray, reverse: Sequence[np.ndarray]
) -> DiscreteChainBound:
    """The three quantities of the bound for a chain on K states (module docstring for the arguments).

    Each is computed from its definition by enumerating the K^T paths x_{1:T}: log p_theta(x_0) from the marginal
    sum of the joint, the ELBO and the KL as expectations under q(x_{1:T} | x_0). No identity between them is used.
    """
    prior_arr = np.asarray(prior, dtype=np.float64)
    K, T = prior_arr.shape[0] if prior_arr.ndim == 1 else 0, len(forward)
    if K < 1 or T < 1 or len(reverse) != T:
        raise ValueError(f"need a 1-D prior and T >= 1 forward and reverse matrices, got prior {prior_arr.shape}, "
                         f"{len(forward)} forward, {len(reverse)} reverse")
    if not np.all(prior_arr > 0) or abs(prior_arr.sum() - 1.0) > 1e-12:
        raise ValueError(f"prior must be a positive probability vector, got {prior_arr!r}")
    if isinstance(x0, bool) or not isinstance(x0, int | np.integer) or not 0 <= x0 < K:
        raise ValueError(f"x0 must be a state index in 0..{K - 1}, got {x0!r}")
    with mpmath.workdps(DIGITS):
        qs = [_stochastic(f"forward[{t}]", m, K) for t, m in enumerate(forward)]
        ps = [_stochastic(f"reverse[{t}]", m, K) for t, m in enumerate(reverse)]
        pi = [mpmath.mpf(float(v)) for v in prior_arr]
        paths = []  # (q(x_{1:T} | x_0), p_theta(x_{0:T})) per path
        for path in itertools.product(range(K), repeat=T):
            states = (int(x0), *path)  # states[t] = x_t
            q_path = mpmath.fprod(qs[t - 1][states[t - 1]][states[t]] for t in range(1, T + 1))
            p_path = pi[states[T]] * mpmath.fprod(ps[t - 1][states[t]][states[t - 1]] for t in range(1, T + 1))
            paths.append((q_path, p_path))
        likelihood = mpmath.fsum(p for _, p in paths)
        elbo_value = mpmath.fsum(q * mpmath.log(p / q) for q, p in paths)
        kl = mpmath.fsum(q * mpmath.log(q / (p / likelihood)) for q, p in paths)
        return DiscreteChainBound(log_likelihood=float(mpmath.log(likelihood)), elbo=float(elbo_value), kl=float(kl))


__all__ = [
    "RATIO",
    "GIBBS_GAP",
    "Z",
    "Q",
    "P",
    "KL_GENERAL",
    "merge",
    "X",
    "ENCODER",
    "JOINT",
    "MARGINAL",
    "POSTERIOR",
    "ELBO_GENERAL",
    "POSTERIOR_KL_GENERAL",
    "POINTWISE_SPLIT",
    "LOG_P_STEP",
    "LOG_Q_STEP",
    "LOG_P_PRIOR",
    "LOG_LIKELIHOOD",
    "chain_log_joint",
    "chain_log_forward",
    "chain_integrand",
    "chain_gap_integrand",
    "decomposed_integrand",
    "gibbs_gap",
    "DiscreteChainBound",
    "discrete_chain_bound",
    "derivation",
]
