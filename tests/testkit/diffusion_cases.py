"""GaussianDiffusion's public methods against the derivations' oracles: the cases the CPU and the CUDA tests share.

`setup` builds a diffusion, the timesteps t = 1, t = T and the drawn ones, the oracle's schedule values at 50 digits
and random inputs; `method_cases` returns, for every public method, what the code gives next to the oracle evaluated
at the inputs as the code sees them (after rounding to the working dtype) and the scale of its terms (see
`oracles.assert_close_linear`). tests/core/test_diffusion.py runs them on the CPU, tests/methods/test_cuda.py on CUDA.
"""

from __future__ import annotations

import numpy as np
import torch

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.variance import ReverseVariance
from testkit import strategies
from testkit.oracles import Schedule, evaluate, linear_coefficients, oracle, to_numpy

# The derivations' exports the cases use: (module, name).
Q_MEAN_COEF = ("forward_marginal", "q_xt_mean_coef")  # sqrt(alpha_bar_t)
Q_VARIANCE = ("forward_marginal", "q_xt_variance")  # 1 - alpha_bar_t
POSTERIOR_MEAN = ("posterior", "posterior_mean")  # mu_tilde_t(x_t, x_0)
POSTERIOR_VARIANCE = ("posterior", "posterior_variance")  # beta_tilde_t
EPS_MEAN = ("eps_parameterisation", "eps_mean")  # 1/sqrt(alpha_t) (x_t - beta_t/sqrt(1-alpha_bar_t) eps_theta)
X0_FROM_EPS = ("eps_parameterisation", "x0_from_eps")  # (x_t - sqrt(1 - alpha_bar_t) eps) / sqrt(alpha_bar_t)
SIGMA2 = {
    ReverseVariance.BETA: ("reverse_variance", "sigma2_beta"),
    ReverseVariance.BETA_TILDE: ("reverse_variance", "sigma2_beta_tilde"),
}
LOSS_WEIGHT = ("loss_weights", "loss_weight")  # lambda_t(beta_t, alpha_bar_{t-1}, sigma_t^2)
LOSS_CONSTANT = ("loss_weights", "loss_constant")  # C_t, the theta-free part of L_{t-1} per dimension
NORMAL_KL = ("gaussian_kl", "normal_kl")

DTYPES = {"float64": torch.float64, "float32": torch.float32, "bfloat16": torch.bfloat16}
MAX_FINITE = {"float64": 1e300, "float32": 1e30, "bfloat16": 1e30}


def setup(betas, us, seed=0, width=3, dtype=torch.float64):
    """The diffusion, t [n] (1, T and the drawn ones), oracle schedule values, and random inputs [n, width]."""
    d = GaussianDiffusion(betas)
    t = strategies.with_boundaries(us, d.T)
    rng = np.random.default_rng(seed)
    inputs = {name: torch.tensor(rng.uniform(-3, 3, (len(t), width))).to(dtype) for name in ("a", "b", "c")}
    sched = Schedule(betas)
    values = {k: v[:, None] for k, v in sched.at(t).items()}  # broadcast against [n, width]
    return d, torch.from_numpy(t), values, inputs


def finite_mask(want, dtype_name):
    """Where `want` is finite and representable in the working dtype (larger values overflow it)."""
    return np.isfinite(want) & (np.abs(want) < MAX_FINITE[dtype_name])


def method_cases(d, t, values, x, dtype_name):
    """(name, got, want, scale) for every public method, the oracle at the inputs as the code sees them."""
    a, b, c = x["a"], x["b"], x["c"]
    na, nb, nc = to_numpy(a), to_numpy(b), to_numpy(c)
    post_mean, eps_mean, x0_eps = (oracle(*n) for n in (POSTERIOR_MEAN, EPS_MEAN, X0_FROM_EPS))
    q_var, post_var = oracle(*Q_VARIANCE), oracle(*POSTERIOR_VARIANCE)
    cq = evaluate(oracle(*Q_MEAN_COEF), values)
    sq = np.sqrt(evaluate(q_var, values))
    cases = []
    # q_sample: sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise
    cases.append(("q_sample", d.q_sample(a, t, c), cq * na + sq * nc, np.abs(cq * na) + np.abs(sq * nc)))
    mean, var = d.q_mean_variance(a, t)
    cases.append(("q mean", mean, cq * na, np.abs(cq * na)))
    cases.append(("q variance", var, evaluate(q_var, values), evaluate(q_var, values)))
    c0, ct = linear_coefficients(post_mean, values, ("x_0", "x_t"))
    mean, var = d.q_posterior_mean_variance(a, b, t)
    cases.append(("posterior mean", mean, evaluate(post_mean, {**values, "x_0": na, "x_t": nb}),
                  np.abs(c0 * na) + np.abs(ct * nb)))
    cases.append(("posterior variance", var, evaluate(post_var, values), evaluate(post_var, values)))
    r_xt, r_eps = linear_coefficients(x0_eps, values, ("x_t", "\\epsilon"))
    cases.append(("x0 from eps", d.predict_x0_from_eps(b, t, c),
                  evaluate(x0_eps, {**values, "x_t": nb, "\\epsilon": nc}), np.abs(r_xt * nb) + np.abs(r_eps * nc)))
    e_xt, e_eps = linear_coefficients(eps_mean, values, ("x_t", "\\epsilon_\\theta"))
    mu = evaluate(eps_mean, {**values, "x_t": nb, "\\epsilon_\\theta": nc})
    mu_scale = np.abs(e_xt * nb) + np.abs(e_eps * nc)
    tn = t.cpu().numpy()[:, None]
    for choice, name in SIGMA2.items():
        sigma2 = np.where(tn == 1, values["\\beta_t"], evaluate(oracle(*name), values))
        mean, var = d.p_mean_variance(c, b, t, choice.value)
        cases.append((f"p mean ({choice.value})", mean, mu, mu_scale))
        cases.append((f"p variance ({choice.value})", var, sigma2, sigma2))
        sigma = np.sqrt(sigma2)
        z = np.where(tn == 1, 0.0, na)  # z = 0 at t = 1
        cases.append((f"p_sample ({choice.value})", d.p_sample(c, b, t, a, choice.value), mu + sigma * z,
                      mu_scale + np.abs(sigma * z)))
    return cases
