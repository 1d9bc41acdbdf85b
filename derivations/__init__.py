"""Symbolic derivations of the DDPM mathematics (SymPy only; never imports torch).

Each module derives one result of the seed tutorial from its definitions, keeps the steps, and exports
the SymPy expressions and float64 numeric functions that `ddpm/` is tested against:

    a  forward_marginal       q(x_t | x_0) by composing Gaussians
    b  posterior              q(x_{t-1} | x_t, x_0) by Bayes' rule and completing the square
    c  gaussian_kl            KL between Gaussians from its integral definition
    d  eps_parameterisation   the eps-parameterised mean of Algorithm 2, line 4
    e  loss_weights           L_{t-1} = lambda_t ||eps - eps_theta||^2 + C, and what L_simple drops
    f  elbo                   log p(x_0) >= -L_T - sum L_{t-1} - L_0 and its gap
    g  maximum_likelihood     max likelihood = min KL(P_data || P_theta); the VAE bound
    h  reverse_variance       the two fixed reverse variances sigma_t^2 = beta_t, beta_tilde_t
    i  strided                the strided chain q(x_s | x_t, x_0), s < t, its reverse step, and DDIM
    j  optimal_variance       the KL-optimal reverse variance for any data (Analytic-DPM) and its bounds
    k  learned_variance       the learned-range variance, its bound term, and the hybrid objective's stop-gradient
    l  sampling_noise         why Algorithm 2 adds sigma_t z (the variance recursion), and why z = 0 at t = 1
    m  gaussian_kl_full       the full-covariance Gaussian KL from its integral, its sign, and the bound's gap
    n  decoder_mean           the decoder's mean at an open edge bin: L_simple's t = 1 target is not the bound's
    o  parameterisations      the eps, x_0 and v parameterisations: conversions, means, zero terminal SNR, loss weights
    p  data_posterior         q(x_0 | x_t) and E[eps | x_t] of Gaussian and two-Gaussian-mixture data (the calibration
                              case's data)
    q  variational_bound      Gibbs' inequality for any densities; the VAE bound for any q; log p(x_0) >= ELBO for
                              every T and any reverse kernels, the gap the KL of the two posteriors over x_{1:T}
    r  denoising_minimiser    L_simple is minimised by E[eps | x_t], for any data; its minimum and E[eps . eps*]
    s  score                  Tweedie's formula, Algorithm 2's mean in score form, L_simple as denoising score
                              matching
    t  interior_bin           the decoder's interior bin: -log P(bin) = density x width + an error, its expansion
    u  optimal_reverse        the KL-optimal Gaussian reverse kernel, mean and variance jointly (Bao et al. Thm 1),
                              and sigma_1^2 from the decoder's own cost
"""

from __future__ import annotations

import importlib

from derivations.chain import Check, Derivation, Step

MODULES = (
    "forward_marginal",
    "posterior",
    "gaussian_kl",
    "eps_parameterisation",
    "loss_weights",
    "elbo",
    "maximum_likelihood",
    "reverse_variance",
    "strided",
    "optimal_variance",
    "learned_variance",
    "sampling_noise",
    "gaussian_kl_full",
    "decoder_mean",
    "parameterisations",
    "data_posterior",
    "variational_bound",
    "denoising_minimiser",
    "score",
    "interior_bin",
    "optimal_reverse",
)


def all_derivations() -> tuple[Derivation, ...]:
    """Every derivation, in key order (a .. h follow the seed tutorial; i and on go beyond it)."""
    return tuple(importlib.import_module(f"derivations.{name}").derivation() for name in MODULES)


__all__ = ["Check", "Derivation", "Step", "MODULES", "all_derivations"]
