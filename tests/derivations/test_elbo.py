"""(f) The ELBO decomposition: the symbolic rewrite, and the numeric oracle against NumPy/SciPy.

The oracle `gaussian_chain_elbo_terms` is checked against computations that share none of its code:
joint Gaussians of the whole chain built with matrices, conditioning by Schur complements, the
full-covariance KL formula, and quadrature. Each check is also run on mutants to show it can fail.
"""

from __future__ import annotations

import functools

import numpy as np
import pytest
import sympy as sp
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from scipy import integrate, stats

from derivations import elbo, gaussian_kl, posterior
from derivations.symbols import alpha_bar_prev, beta_t, normal_log_density, sigma2, x_0
from testkit import tolerances
from testkit.symbolic import is_zero

pytestmark = pytest.mark.symbolic


# --- symbolic ------------------------------------------------------------------------------------


@functools.cache
def _true_rewrite_accepted(T: int) -> bool:
    return is_zero(elbo.identity_lhs(T) - elbo.identity_rhs(T))


def test_transition_term_equals_paper_kl_with_eq7_posterior():
    """L_{t-1} written with the paper's eq. (7) coefficients and the textbook KL, averaged over x_t by hand."""
    p, q, x0, d = sp.symbols("p q x0 d", positive=True)
    c, s2 = sp.symbols("c s2", positive=True)
    # beta_t in (0, 1) and alpha_bar_{t-1} in (0, 1), written so that SymPy sees 1 - each is positive.
    b, ab_prev = q / (1 + q), 1 / (1 + p)
    ab_t = ab_prev * (1 - b)
    k0 = sp.sqrt(ab_prev) * b / (1 - ab_t)
    k1 = sp.sqrt(1 - b) * (1 - ab_prev) / (1 - ab_t) - c
    beta_tilde = (1 - ab_prev) / (1 - ab_t) * b
    # x_t ~ N(sqrt(ab_t) x0, 1 - ab_t): E[(k0 x0 + k1 x_t - d)^2] = (mean)^2 + k1^2 var.
    mean_sq = (k0 * x0 + k1 * sp.sqrt(ab_t) * x0 - d) ** 2 + k1**2 * (1 - ab_t)
    paper = sp.log(sp.sqrt(s2) / sp.sqrt(beta_tilde)) + (beta_tilde + mean_sq) / (2 * s2) - sp.Rational(1, 2)
    ours = elbo.TRANSITION_TERM.subs(
        {beta_t: b, alpha_bar_prev: ab_prev, x_0: x0, elbo.REVERSE_SCALE: c, elbo.REVERSE_SHIFT: d, sigma2: s2},
        simultaneous=True,
    )
    assert sp.simplify(ours - paper) == 0


@pytest.mark.parametrize(
    "mutant",
    [
        pytest.param("prior-index-shift", id="q(x_{T-1}|x_0)-for-q(x_T|x_0)"),
        pytest.param("transition-sign", id="log-ratio-inverted"),
        pytest.param("decoder-dropped", id="L0-dropped"),
    ],
)
def test_pointwise_identity_check_rejects_mutant(mutant):
    T = 2
    lhs = elbo.identity_lhs(T)
    assert _true_rewrite_accepted(T), "the check must accept the true rewrite"
    prior = elbo.log_p_prior(T) - elbo.log_q_marginal(T)
    transition = elbo.log_p_step(2) - elbo.log_q_posterior(2)
    decoder = elbo.log_p_step(1)
    if mutant == "prior-index-shift":
        prior = elbo.log_p_prior(T) - elbo.log_q_marginal(T - 1).subs(elbo.xs[T - 1], elbo.xs[T])
    elif mutant == "transition-sign":
        transition = -transition
    else:
        decoder = 0
    assert not is_zero(lhs - (prior + transition + decoder))


# --- numeric: independent constructions ----------------------------------------------------------


def _linear_gaussian(T, coef, shift, noise_var, first_mean, first_var):
    """Mean and covariance of (y_0, ..., y_T) for y_0 ~ N(first_mean, first_var), y_k = coef[k] y_{k-1}
    + shift[k] + N(0, noise_var[k]), written as y = M (offset + noise) with M = (I - A)^{-1}."""
    n = T + 1
    A = np.zeros((n, n))
    offset = np.zeros(n)
    variances = np.zeros(n)
    offset[0], variances[0] = first_mean, first_var
    for k in range(1, n):
        A[k, k - 1] = coef[k]
        offset[k] = shift[k]
        variances[k] = noise_var[k]
    M = np.linalg.inv(np.eye(n) - A)
    return M @ offset, M @ np.diag(variances) @ M.T


def _reverse_joint(c, d, s):
    """(x_T, ..., x_0) under p: y_k = x_{T-k}; step y_k = c_t y_{k-1} + d_t + noise with t = T - k + 1."""
    T = len(c)
    coef = [0.0] + [c[T - k] for k in range(1, T + 1)]
    shift = [0.0] + [d[T - k] for k in range(1, T + 1)]
    noise = [0.0] + [s[T - k] for k in range(1, T + 1)]
    mean, cov = _linear_gaussian(T, coef, shift, noise, 0.0, 1.0)
    order = np.arange(T, -1, -1)  # back to (x_0, ..., x_T)
    return mean[order], cov[np.ix_(order, order)]


def numpy_log_likelihood(x0, c, d, s) -> float:
    mean, cov = _reverse_joint(c, d, s)
    return stats.norm.logpdf(x0, mean[0], np.sqrt(cov[0, 0]))


def numpy_posterior_kl(betas, x0, c, d, s) -> float:
    """KL(q(x_{1:T}|x_0) || p(x_{1:T}|x_0)) with full covariance matrices."""
    T = len(betas)
    alphas = 1.0 - np.asarray(betas)
    coef = [0.0, *np.sqrt(alphas)]
    q_mean, q_cov = _linear_gaussian(T, coef, [0.0] * (T + 1), [0.0, *betas], x0, 0.0)
    q_mean, q_cov = q_mean[1:], q_cov[1:, 1:]
    p_mean, p_cov = _reverse_joint(c, d, s)
    gain = p_cov[1:, 0] / p_cov[0, 0]
    post_mean = p_mean[1:] + gain * (x0 - p_mean[0])
    post_cov = p_cov[1:, 1:] - np.outer(gain, p_cov[0, 1:])
    diff = post_mean - q_mean
    _, logdet_q = np.linalg.slogdet(q_cov)
    _, logdet_p = np.linalg.slogdet(post_cov)
    return 0.5 * (
        logdet_p - logdet_q - T + np.trace(np.linalg.solve(post_cov, q_cov)) + diff @ np.linalg.solve(post_cov, diff)
    )


def quadrature_decoder(beta_1, x0, c1, d1, s1) -> float:
    mean, sd = np.sqrt(1 - beta_1) * x0, np.sqrt(beta_1)
    value, _ = integrate.quad(
        lambda x1: -stats.norm.pdf(x1, mean, sd) * stats.norm.logpdf(x0, c1 * x1 + d1, np.sqrt(s1)),
        mean - 40 * sd,
        mean + 40 * sd,
        points=[mean],
        epsabs=1e-14,
        epsrel=1e-13,
        limit=200,
    )
    return value


def quadrature_transition(beta, alpha_bar_prev, x0, c, d, s) -> float:
    """E_{x_t ~ q(x_t|x_0)} KL(q(x_{t-1}|x_t,x_0) || N(c x_t + d, s)) by quadrature over x_t."""
    k0 = posterior.posterior_mean_coef_x0(beta, alpha_bar_prev)
    kt = posterior.posterior_mean_coef_xt(beta, alpha_bar_prev)
    var = posterior.posterior_variance(beta, alpha_bar_prev)
    alpha_bar_t = alpha_bar_prev * (1 - beta)
    mean, sd = np.sqrt(alpha_bar_t) * x0, np.sqrt(1 - alpha_bar_t)

    def kl(xt):
        m1, m2 = k0 * x0 + kt * xt, c * xt + d
        return 0.5 * (np.log(s / var) - 1 + var / s + (m1 - m2) ** 2 / s)

    value, _ = integrate.quad(
        lambda xt: stats.norm.pdf(xt, mean, sd) * kl(xt), mean - 40 * sd, mean + 40 * sd, points=[mean],
        epsabs=1e-14, epsrel=1e-13, limit=200,
    )
    return value


@st.composite
def chains(draw, min_T=1, max_T=4):
    T = draw(st.integers(min_value=min_T, max_value=max_T))

    def floats(lo, hi):
        return st.lists(st.floats(min_value=lo, max_value=hi), min_size=T, max_size=T)

    return dict(
        betas=draw(floats(0.02, 0.6)),
        x0=draw(st.floats(min_value=-2.0, max_value=2.0)),
        reverse_scales=draw(floats(0.3, 1.5)),
        reverse_shifts=draw(floats(-1.0, 1.0)),
        reverse_variances=draw(floats(0.05, 1.0)),
    )


T1_CHAIN = dict(betas=[0.3], x0=0.7, reverse_scales=[0.9], reverse_shifts=[0.1], reverse_variances=[0.4])
FIXED_CHAINS = [
    T1_CHAIN,
    dict(
        betas=[0.1, 0.4], x0=-1.2, reverse_scales=[1.1, 0.8], reverse_shifts=[0.2, -0.3], reverse_variances=[0.2, 0.6]
    ),
    dict(
        betas=[0.05, 0.2, 0.5],
        x0=1.5,
        reverse_scales=[1.2, 0.9, 0.5],
        reverse_shifts=[0.0, 0.4, -0.1],
        reverse_variances=[0.1, 0.3, 0.9],
    ),
]


def _independent(chain):
    args = (chain["x0"], chain["reverse_scales"], chain["reverse_shifts"], chain["reverse_variances"])
    return numpy_log_likelihood(*args), numpy_posterior_kl(chain["betas"], *args)


def matches_independent(oracle) -> bool:
    for chain in FIXED_CHAINS:
        try:
            terms = oracle(**chain)
        except ArithmeticError:  # a mutant that divides by zero fails the check too
            return False
        log_likelihood, gap = _independent(chain)
        if not (
            np.allclose(terms.log_likelihood, log_likelihood, **tolerances.FLOAT64.kwargs())
            and np.allclose(terms.gap, gap, **tolerances.FLOAT64.kwargs())
            and np.allclose(terms.log_likelihood - terms.elbo, gap, **tolerances.FLOAT64.kwargs())
        ):
            return False
    return True


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(chain=chains())
@example(chain=T1_CHAIN)
def test_oracle_matches_numpy_joint_gaussians(chain):
    terms = elbo.gaussian_chain_elbo_terms(**chain)
    log_likelihood, gap = _independent(chain)
    assert_allclose(terms.log_likelihood, log_likelihood, **tolerances.FLOAT64.kwargs(), err_msg="log p(x_0)")
    assert_allclose(
        terms.gap, gap, **tolerances.FLOAT64.kwargs(), err_msg="gap != KL(q(x_1:T|x_0) || p(x_1:T|x_0))"
    )


@settings(deadline=None, max_examples=10)  # each example runs T adaptive quadratures
@given(chain=chains(max_T=3))
@example(chain=T1_CHAIN)
def test_oracle_terms_match_quadrature_and_normal_kl(chain):
    terms = elbo.gaussian_chain_elbo_terms(**chain)
    betas, x0 = chain["betas"], chain["x0"]
    c, d, s = chain["reverse_scales"], chain["reverse_shifts"], chain["reverse_variances"]
    alpha_bars = np.cumprod(1 - np.asarray(betas))
    T = len(betas)
    assert_allclose(
        terms.prior,
        gaussian_kl.normal_kl(np.sqrt(alpha_bars[-1]) * x0, 1 - alpha_bars[-1], 0.0, 1.0),
        **tolerances.FLOAT64.kwargs(),
        err_msg="L_T != KL(q(x_T|x_0) || N(0, 1))",
    )
    assert_allclose(terms.decoder, quadrature_decoder(betas[0], x0, c[0], d[0], s[0]), **tolerances.FLOAT64.kwargs())
    assert len(terms.transitions) == T - 1
    for t in range(2, T + 1):
        assert_allclose(
            terms.transitions[t - 2],
            quadrature_transition(betas[t - 1], alpha_bars[t - 2], x0, c[t - 1], d[t - 1], s[t - 1]),
            **tolerances.FLOAT64.kwargs(),
            err_msg=f"L_{t - 1} (step t = {t})",
        )


@settings(deadline=None)  # SymPy/mpmath oracles: time varies on a shared machine
@given(chain=chains())
def test_bound_properties(chain):
    terms = elbo.gaussian_chain_elbo_terms(**chain)
    slack = tolerances.FLOAT64.atol + tolerances.FLOAT64.rtol * abs(terms.log_likelihood)
    assert terms.elbo <= terms.log_likelihood + slack, "ELBO > log p(x_0)"
    assert terms.gap >= -slack
    assert terms.prior >= 0 and all(v >= 0 for v in terms.transitions)
    assert_allclose(
        terms.elbo, -(terms.prior + sum(terms.transitions) + terms.decoder), **tolerances.FLOAT64.kwargs()
    )


def test_oracle_validates_its_inputs():
    good = dict(T1_CHAIN)
    with pytest.raises(ValueError, match="one length"):
        elbo.gaussian_chain_elbo_terms(**{**good, "betas": [0.1, 0.2]})
    with pytest.raises(ValueError, match=r"\(0, 1\)"):
        elbo.gaussian_chain_elbo_terms(**{**good, "betas": [1.0]})
    with pytest.raises(ValueError, match="positive"):
        elbo.gaussian_chain_elbo_terms(**{**good, "reverse_variances": [0.0]})


_TRUE_ALPHA_BARS = elbo.alpha_bar_from_betas


def _index_shifted_alpha_bars(betas):
    """alpha_bar_{t-1} where alpha_bar_t belongs (the t vs t-1 slip)."""
    true = _TRUE_ALPHA_BARS(betas)
    shifted = true.copy()
    shifted[1:] = true[:-1]
    return shifted


@pytest.mark.parametrize(
    "patch",
    [
        pytest.param(("alpha_bar_from_betas", _index_shifted_alpha_bars), id="alpha-bar-index-t-minus-1"),
        pytest.param(
            (
                "_decoder_mp",
                sp.lambdify(
                    (elbo.beta_t, elbo.x_0, elbo.REVERSE_SCALE, elbo.REVERSE_SHIFT, elbo.sigma2),
                    elbo.DECODER_TERM.subs(sp.sqrt(1 - elbo.beta_t), 1 - elbo.beta_t),
                    modules="mpmath",
                ),
            ),
            id="decoder-sqrt-dropped",
        ),
        pytest.param(
            (  # private (the next two lines): the derivation's intermediate symbols are what is checked
                "_log_density_mp",
                sp.lambdify(
                    (elbo.x_0, elbo._mean_s, elbo._var_s),
                    normal_log_density(elbo.x_0, elbo._mean_s, sp.sqrt(elbo._var_s)),
                    modules="mpmath",
                ),
            ),
            id="marginal-variance-as-std",
        ),
    ],
)
def test_independent_check_rejects_mutated_oracle(patch, monkeypatch):
    assert matches_independent(elbo.gaussian_chain_elbo_terms), "the check must accept the true oracle"
    name, replacement = patch
    monkeypatch.setattr(elbo, name, replacement)
    assert not matches_independent(elbo.gaussian_chain_elbo_terms)


def test_symbolic_gap_matches_oracle_at_a_point():
    """The derivation's T = 2 gap expression, evaluated, agrees with the oracle (same model, two routes)."""
    chain = FIXED_CHAINS[1]
    (gap_step,) = [s for s in elbo.derivation().results if s.description.startswith("The gap")]

    def exact(value: float) -> sp.Rational:
        return sp.Rational(value).limit_denominator(10**6)  # the decimals of FIXED_CHAINS, exactly

    # u_t = beta_t/alpha_t
    point = {u_t: exact(b) / (1 - exact(b)) for u_t, b in zip(elbo.u, chain["betas"], strict=False)}
    point[elbo.x_0] = exact(chain["x0"])
    for symbols, key in ((elbo.cs, "reverse_scales"), (elbo.ds, "reverse_shifts"), (elbo.sigma2s, "reverse_variances")):
        point.update({symbol: exact(v) for symbol, v in zip(symbols, chain[key], strict=False)})
    value = float(gap_step.rhs.subs(point).evalf(30))
    assert_allclose(elbo.gaussian_chain_elbo_terms(**chain).gap, value, **tolerances.FLOAT64.kwargs())


def test_every_T_induction_and_its_mutations():
    """The decomposition for every T: base case and induction step close; a wrong Bayes rule or a decomposed form
    without its decoder term does not."""
    from derivations import elbo as e

    T = e._T  # private: the derivation's own T, the size its symbols were built for
    assert sp.simplify(e.EVERY_T_BASE) == 0 and sp.simplify(e.EVERY_T_INCREMENT_AFTER_BAYES) == 0
    wrong_bayes = {e.LOG_Q_STEP(T + 1): e.LOG_Q_POSTERIOR(T + 1) - e.LOG_Q_MARGINAL(T + 1) + e.LOG_Q_MARGINAL(T)}
    assert sp.simplify(e.EVERY_T_INCREMENT.subs(wrong_bayes)) != 0, "marginal ratio inverted"
    no_decoder = e.integrand_every_T(T) - (e.decomposed_every_T(T) - e.LOG_P_STEP(1))
    base = no_decoder.subs(T, 1).doit().subs({e.LOG_Q_STEP(1): e.LOG_Q_MARGINAL(1)})
    assert sp.simplify(base) != 0, "decoder term dropped"
