"""The symbols every derivation shares, named as the paper writes them (with assumptions).

One timestep convention (CONTRIBUTING.md, "Timesteps, dtypes and tolerances"): t in {1, ..., T},
alpha_bar_0 = 1. Schedule quantities at step t are written in terms of two independent symbols, beta_t and
alpha_bar_{t-1}; everything else at step t follows from them:

    alpha_t      = 1 - beta_t
    alpha_bar_t  = alpha_bar_{t-1} * alpha_t
"""

from __future__ import annotations

import sympy as sp

# Schedule at step t. 0 < beta_t < 1 and 0 < alpha_bar_{t-1} <= 1 (alpha_bar_0 = 1 at t = 1).
beta_t = sp.Symbol(r"\beta_t", positive=True)
alpha_bar_prev = sp.Symbol(r"\bar{\alpha}_{t-1}", positive=True)
alpha_t = 1 - beta_t
alpha_bar_t = alpha_bar_prev * alpha_t

# A standalone symbol for alpha_bar_t, for results stated in it alone (e.g. q(x_t | x_0)).
alpha_bar = sp.Symbol(r"\bar{\alpha}_t", positive=True)

# Scalar (one coordinate of) data, latents and noise; the models are isotropic, so one coordinate
# carries the whole derivation and the multivariate statement is a sum over coordinates.
x_0 = sp.Symbol("x_0", real=True)
x_t = sp.Symbol("x_t", real=True)
x_prev = sp.Symbol("x_{t-1}", real=True)
eps = sp.Symbol(r"\epsilon", real=True)
eps_theta = sp.Symbol(r"\epsilon_\theta", real=True)

# Reverse-process variance sigma_t^2 (a free positive symbol; section 3.2 fixes it).
sigma2 = sp.Symbol(r"\sigma_t^2", positive=True)

# Names for the report only (`Step.display`): a statement at t = 1 made with the generic symbols above shows these.
beta_1 = sp.Symbol(r"\beta_1", positive=True)
sigma2_1 = sp.Symbol(r"\sigma_1^2", positive=True)
AT_T1 = ((beta_t, beta_1), (sigma2, sigma2_1))


def linear_covariance(a: sp.Expr, b: sp.Expr, noises) -> sp.Expr:
    """Cov(a, b) for a, b linear in the independent standard normals `noises`: the sum of products of their
    coefficients (bilinearity, with Cov(n_i, n_j) = 1 if i = j else 0)."""
    a, b = sp.expand(a), sp.expand(b)
    return sp.expand(sum(a.coeff(n) * b.coeff(n) for n in noises))


def normal_density(x: sp.Expr, mean: sp.Expr, variance: sp.Expr) -> sp.Expr:
    """N(x; mean, variance), the scalar Gaussian density."""
    return sp.exp(-((x - mean) ** 2) / (2 * variance)) / sp.sqrt(2 * sp.pi * variance)


def normal_log_density(x: sp.Expr, mean: sp.Expr, variance: sp.Expr) -> sp.Expr:
    """log N(x; mean, variance), expanded (no exp/log round trip for SymPy to undo)."""
    return -sp.log(2 * sp.pi * variance) / 2 - (x - mean) ** 2 / (2 * variance)
