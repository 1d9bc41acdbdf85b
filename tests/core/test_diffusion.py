"""GaussianDiffusion and the bound's terms against the derivations' 50-digit oracles, over Hypothesis schedules.

Every coefficient, mean and variance of ddpm.core.diffusion, the loss weights lambda_t, the KL constants C_t and
the per-timestep bound terms are compared with the lambdified SymPy results of derivations/ (evaluated at
50 digits, alpha_bar_t passed at 50 digits) for schedules with T from 1 to 2000, betas from 1e-8 to 0.999
(monotone or not), at t = 1, t = T and drawn timesteps. float64 uses tolerances.FLOAT64; float32 and bfloat16
inputs are compared with the oracle evaluated at the rounded inputs, with the per-dtype tolerance.
Where a quantity overflows the working dtype (1/sqrt(alpha_bar_t) once alpha_bar_t underflows) the entry
is excluded, and the test requires such entries to be non-finite in the code as well.
"""

from __future__ import annotations

import mpmath
import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.forward import forward_sample
from ddpm.core.kernels import BoundRows, NetworkOutput, kl_terms, prior_term
from ddpm.core.variance import ReverseVariance
from testkit import strategies, tolerances
from testkit.diffusion_cases import (
    DTYPES,
    EPS_MEAN,
    LOSS_CONSTANT,
    LOSS_WEIGHT,
    NORMAL_KL,
    POSTERIOR_MEAN,
    POSTERIOR_VARIANCE,
    Q_MEAN_COEF,
    Q_VARIANCE,
    SIGMA2,
    X0_FROM_EPS,
    finite_mask,
    method_cases,
    setup,
)
from testkit.oracles import Schedule, assert_close_linear, evaluate, evaluate_mp, linear_coefficients, oracle, to_numpy

F64 = tolerances.FLOAT64

schedules = strategies.schedules()
examples_per_test = settings(max_examples=25, deadline=None)


def boundary_examples(**extra):
    """@example rows: the paper's schedule, T = 1 with tiny and large betas, T = 2000 extremes; t = 1 and t = T."""

    def decorate(test):
        for betas in (strategies.PAPER_T1000, strategies.SINGLE_STEP_TINY, strategies.SINGLE_STEP_LARGE,
                      strategies.build_schedule("extreme", 2000, 0)):
            test = example(betas=betas, us=[0.0, 1.0], **extra)(test)
        return test

    return decorate


def check_table(table, t, want, what):
    """table[t] (float64) equals the oracle where the oracle is representable, and overflows where it is not."""
    got = table[t].numpy()
    mask = finite_mask(want, "float64")
    assert_allclose(got[mask], want[mask], **F64.kwargs(), err_msg=what)
    assert np.all(~np.isfinite(got[~mask]) | (np.abs(got[~mask]) >= 1e299)), f"{what}: overflow expected"


# ------------------------------------------------------------------------------------------- tables, float64
@examples_per_test
@given(betas=schedules, us=strategies.fraction_lists)
@boundary_examples()
def test_schedule_tables_match_oracles(betas, us):
    d, t, values, _ = setup(betas, us)
    flat = {k: v[:, 0] for k, v in values.items()}
    sched = Schedule(betas)
    check_table(d.alpha_bars, t, sched.alpha_bar[t.numpy()].astype(np.float64), "alpha_bar_t")
    check_table(d.alpha_bars_prev, t, sched.alpha_bar[t.numpy() - 1].astype(np.float64), "alpha_bar_{t-1}")
    check_table(d.one_minus_alpha_bars, t, evaluate(oracle(*Q_VARIANCE), flat), "1 - alpha_bar_t")
    sqrt_ab = evaluate(oracle(*Q_MEAN_COEF), flat)
    check_table(d.sqrt_alpha_bars, t, sqrt_ab, "sqrt(alpha_bar_t)")
    c_x0, c_xt = linear_coefficients(oracle(*POSTERIOR_MEAN), flat, ("x_0", "x_t"))
    check_table(d.posterior_mean_coef_x0, t, c_x0, "posterior coefficient of x_0")
    check_table(d.posterior_mean_coef_xt, t, c_xt, "posterior coefficient of x_t")
    beta_tilde = evaluate(oracle(*POSTERIOR_VARIANCE), flat)
    check_table(d.posterior_variance, t, beta_tilde, "beta_tilde_t")
    assert d.posterior_variance[1] == 0.0, "beta_tilde_1 = 0 exactly (alpha_bar_0 = 1)"
    a_xt, a_eps = linear_coefficients(oracle(*EPS_MEAN), flat, ("x_t", "\\epsilon_\\theta"))
    check_table(d.recip_sqrt_alphas, t, a_xt, "1/sqrt(alpha_t)")
    check_table(d.recip_sqrt_alphas * d.eps_coefs, t, -a_eps, "beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t))")
    r_xt, r_eps = linear_coefficients(oracle(*X0_FROM_EPS), flat, ("x_t", "\\epsilon"))
    check_table(d.sqrt_recip_alpha_bars, t, r_xt, "1/sqrt(alpha_bar_t)")
    check_table(d.sqrt_recipm1_alpha_bars, t, -r_eps, "sqrt(1/alpha_bar_t - 1)")


@examples_per_test
@given(betas=schedules, us=strategies.fraction_lists)
@boundary_examples()
def test_reverse_variances_loss_weights_and_kl_constants_match_oracles(betas, us):
    d, t, values, _ = setup(betas, us)
    flat = {k: v[:, 0] for k, v in values.items()}
    tn = t.numpy()
    beta_tilde = evaluate(oracle(*POSTERIOR_VARIANCE), flat)
    for choice, name in SIGMA2.items():
        sigma2 = evaluate(oracle(*name), flat)
        # Our convention: sigma_1^2 = beta_1 for both choices (beta_tilde_1 = 0 is a point mass).
        sigma2 = np.where(tn == 1, flat["\\beta_t"], sigma2)
        check_table(d.reverse_variance(choice), t, sigma2, f"sigma_t^2 ({choice.value})")
        weight = evaluate(oracle(*LOSS_WEIGHT), {**flat, "\\sigma_t^2": sigma2})
        check_table(d.loss_weights(choice), t, weight, f"lambda_t ({choice.value})")
        # C_t = KL(N(0, beta_tilde_t) || N(0, sigma_t^2)) per dimension, t >= 2.
        kl = oracle(*NORMAL_KL)
        want = np.array([kl(0.0, bt, 0.0, s2) if ti >= 2 else np.nan
                         for ti, bt, s2 in zip(tn, beta_tilde, sigma2, strict=True)])
        got = d.kl_variance_terms(choice)[t].numpy()
        assert np.isnan(got[tn == 1]).all(), "C_1 is undefined (t = 1 is the decoder's term)"
        keep = tn >= 2
        assert_allclose(got[keep], want[keep], **F64.kwargs(), err_msg=f"C_t ({choice.value}) vs normal_kl")
        if keep.any():
            at_keep = {k: v[keep] for k, v in {**flat, "\\sigma_t^2": sigma2}.items()}
            constant = evaluate(oracle(*LOSS_CONSTANT), at_keep)
            assert_allclose(got[keep], constant, **F64.kwargs(), err_msg=f"C_t ({choice.value}) vs loss_constant")


# ------------------------------------------------------------------------------------ methods, every dtype
@pytest.mark.parametrize("dtype_name", ["float64", "float32", "bfloat16"])
@examples_per_test
@given(betas=schedules, us=strategies.fraction_lists, seed=st.integers(0, 2**16))
@boundary_examples(seed=0)
def test_methods_match_oracles(dtype_name, betas, us, seed):
    dtype = DTYPES[dtype_name]
    tolerance = tolerances.BY_DTYPE_NAME[dtype_name]
    d, t, values, x = setup(betas, us, seed=seed, dtype=dtype)
    for what, got, want, scale in method_cases(d, t, values, x, dtype_name):
        assert got.dtype == dtype, f"{what}: dtype {got.dtype}, expected {dtype}"
        got_np = to_numpy(got)
        want, scale = np.broadcast_arrays(want, scale)
        keep = finite_mask(scale, dtype_name)
        assert_close_linear(got_np[np.broadcast_to(keep, got_np.shape)], want[keep], scale[keep], tolerance,
                            err_msg=f"{what} [{dtype_name}]")


# --------------------------------------------------------------------------------- bound terms, float64
@settings(max_examples=15, deadline=None)
@given(betas=strategies.schedules(), us=st.lists(strategies.fractions, min_size=1, max_size=3),
       seed=st.integers(0, 2**16))
@example(betas=strategies.PAPER_T1000, us=[0.5], seed=0)
@example(betas=strategies.build_schedule("extreme", 2000, 0), us=[0.0, 1.0], seed=1)
def test_kl_terms_and_prior_match_oracles(betas, us, seed):
    # L_{t-1} (t >= 2) = sum_d KL(q(x_{t-1}|x_t,x_0) || p_theta(x_{t-1}|x_t)) with x_t = q_sample(x_0, t, eps),
    # the oracle chained at 50 digits (x_t, both means, then the KL); L_T = sum_d KL(q(x_T|x_0) || N(0, 1)).
    d = GaussianDiffusion(betas)
    T = d.T
    rng = np.random.default_rng(seed)
    shape = (3, 1, 2, 2)
    x0 = torch.tensor(rng.integers(0, 256, shape) / 127.5 - 1.0)
    sched = Schedule(betas)
    nx0 = x0.numpy().reshape(3, 4)
    kl = oracle(*NORMAL_KL)
    ab_T = sched.alpha_bar[T]
    prior_want = [
        float(sum(evaluate_mp(kl, {"\\mu_1": mpmath.sqrt(ab_T) * v, "\\sigma_1^2": 1 - ab_T, "\\mu_2": 0.0,
                                   "\\sigma_2^2": 1.0}) for v in row))
        for row in nx0
    ]
    assert_allclose(prior_term(d, x0).numpy(), prior_want, **F64.kwargs(), err_msg="L_T")
    if T < 2:
        return
    t = np.array([2, T] + [max(2, strategies.timestep_from_fraction(u, T)) for u in us])[:3]
    t = np.resize(t, 3)
    noise = torch.tensor(rng.standard_normal(shape))
    eps_theta = torch.tensor(rng.standard_normal(shape))
    values = {k: v[:, None] for k, v in sched.at(t).items()}
    q_mean_coef, q_var = oracle(*Q_MEAN_COEF), oracle(*Q_VARIANCE)
    post_mean, post_var, eps_mean = oracle(*POSTERIOR_MEAN), oracle(*POSTERIOR_VARIANCE), oracle(*EPS_MEAN)
    nn, ne = noise.numpy().reshape(3, 4), eps_theta.numpy().reshape(3, 4)
    sqrt_var = np.vectorize(mpmath.sqrt, otypes=[object])(evaluate_mp(q_var, values))
    xt = evaluate_mp(q_mean_coef, values) * nx0.astype(object) + sqrt_var * nn.astype(object)
    mu_tilde = evaluate_mp(post_mean, {**values, "x_0": nx0, "x_t": xt})
    mu_theta = evaluate_mp(eps_mean, {**values, "x_t": xt, "\\epsilon_\\theta": ne})
    beta_tilde = evaluate_mp(post_var, values)
    tt = torch.from_numpy(t)
    xt_code = forward_sample(d, x0, tt, noise)
    for choice, name in SIGMA2.items():
        sigma2 = evaluate_mp(oracle(*name), values)
        terms = evaluate_mp(kl, {"\\mu_1": mu_tilde, "\\sigma_1^2": beta_tilde, "\\mu_2": mu_theta,
                                 "\\sigma_2^2": sigma2})
        want = np.array([float(sum(row)) for row in terms])  # [3], summed over dims at 50 digits
        rows = BoundRows(x0, xt_code, tt, noise)
        got = kl_terms(d, choice, rows, NetworkOutput(eps_theta), clip_x0=False).numpy()
        assert_allclose(got, want, **F64.kwargs(), err_msg=f"L_(t-1) ({choice.value})")


# ------------------------------------------------------------------- expected bound terms vs the elbo derivation
@settings(max_examples=10, deadline=None)
@given(betas=strategies.schedules(max_T=200), x0=st.integers(0, 255), seed=st.integers(0, 2**16))
@example(betas=strategies.build_schedule("paper", 50, 0), x0=0, seed=0)
@example(betas=strategies.SINGLE_STEP_LARGE, x0=255, seed=1)
def test_expected_kl_terms_match_elbo_derivation(betas, x0, seed):
    # For a linear eps_theta(x_t, t) = a_t x_t + b_t, mu_theta = c_t x_t + d_t is linear and each L_{t-1} is a
    # quadratic in eps; a 2-point Gauss-Hermite rule (eps = -1, +1, weights 1/2) gives its expectation over
    # q(x_t | x_0) exactly, which the derivation states in closed form (TRANSITION_TERM, PRIOR_TERM).
    chain_terms = oracle("elbo", "gaussian_chain_elbo_terms")
    d = GaussianDiffusion(betas)
    T = d.T
    rng = np.random.default_rng(seed)
    a, b = rng.uniform(-1, 1, T + 1), rng.uniform(-1, 1, T + 1)  # index t
    value = x0 / 127.5 - 1.0
    one_minus_ab = -np.expm1(np.cumsum(np.log1p(-betas)))  # 1 - alpha_bar_t, t = 1..T, without cancellation
    alphas = 1.0 - betas
    eps_coef = betas / (np.sqrt(alphas) * np.sqrt(one_minus_ab))  # beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t))
    c = (1.0 - eps_coef * np.sqrt(alphas) * a[1:]) / np.sqrt(alphas)  # mu_theta = c_t x_t + d_t
    shift = -eps_coef * b[1:]
    a_t, b_t = torch.tensor(a), torch.tensor(b)

    def linear_model(xt, t):
        return a_t[t].reshape(-1, 1, 1, 1) * xt + b_t[t].reshape(-1, 1, 1, 1)

    x0_t = torch.full((2, 1, 1, 1), value, dtype=torch.float64)
    noise = torch.tensor([-1.0, 1.0], dtype=torch.float64).reshape(2, 1, 1, 1)
    # The optimal variance's tables too, for a Gamma_t anywhere in [0, 1] (clipped to its bounds by the code).
    d = d.with_optimal_variance(rng.uniform(0.0, 1.0, T))
    for choice in ReverseVariance.tabled():
        sigma2 = d.reverse_variance(choice).numpy()[1:]
        want = chain_terms(betas, value, c, shift, sigma2)
        assert_allclose(prior_term(d, x0_t[:1]).numpy(), [want.prior], **F64.kwargs(), err_msg="L_T")
        got = []
        for t in range(2, T + 1):
            tt = torch.full((2,), t)
            xt = forward_sample(d, x0_t, tt, noise)
            terms = kl_terms(d, choice, BoundRows(x0_t, xt, tt, noise), NetworkOutput(linear_model(xt, tt)),
                             clip_x0=False)
            got.append(float(terms.mean()))
        assert_allclose(got, want.transitions, **F64.kwargs(), err_msg=f"E[L_(t-1)] ({choice.value})")


def test_compensated_cumsum_is_exact_where_naive_summation_is_not():
    """Neumaier summation keeps every prefix sum to the correctly rounded value (math.fsum) even where a naive
    running sum loses everything ([1, 1e100, 1, -1e100] sums to 2; naively to 0), and on a schedule's logs."""
    import math

    # private: the tables' summation helper is itself under test (its error bound)
    from ddpm.core.diffusion import _compensated_cumsum

    hard = np.array([1.0, 1e100, 1.0, -1e100, 3.0, -2.0])
    got = _compensated_cumsum(hard)
    assert got[0] == 0.0
    for i in range(1, hard.shape[0] + 1):
        assert got[i] == math.fsum(hard[:i]), f"prefix {i}: {got[i]} vs {math.fsum(hard[:i])}"
    logs = np.log1p(-np.linspace(1e-4, 0.02, 1000))
    prefix = _compensated_cumsum(logs)
    exact = np.array([math.fsum(logs[:i]) for i in range(1001)])
    assert np.max(np.abs(prefix - exact) / np.maximum(np.abs(exact), 1e-300)) <= 2.0**-52, "1 ulp"
