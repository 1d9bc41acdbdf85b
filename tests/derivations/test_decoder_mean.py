"""(n) The decoder's mean at an edge bin: ddpm's decoder against the derivation, the summary's numbers, mutations.

ddpm's discretised decoder (`ddpm.core.kernels.discretized_log_prob`, `decoder_terms`) must give the derived edge-bin
cost -log Phi((-1 + h - mu) / sigma_1) at any mean, and at t = 1 with eps_theta = eps (L_simple's target for a pixel
certain to be 0) its autograd gradient in eps_theta must be the derived negative value. The summary's figures
(0.616 bits at sigma_1 = 0.01, 0.510 at sqrt(beta_tilde_2), MNIST's share of zero pixels) are recomputed. Each
result fails when its formula is mutated.
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import sympy as sp
import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.forward import forward_sample
from ddpm.core.kernels import decoder_terms, discretized_log_prob
from ddpm.core.schedules import make_betas
from ddpm.core.variance import ReverseVariance
from derivations import decoder_mean as dm
from derivations.chain import Step
from derivations.symbols import beta_t, eps, eps_theta, x_0, x_t
from testkit import tolerances

pytestmark = pytest.mark.symbolic

F64 = tolerances.FLOAT64.kwargs()
H = 1.0 / 255.0


@settings(max_examples=60, deadline=None)
@given(mean=st.floats(-1.2, -0.8), std=st.floats(1e-3, 0.1))
def test_edge_bin_of_the_code_is_the_derived_cost(mean, std):
    assume((-1.0 + H - mean) / std > -8.0)  # the oracle's 1 + erf(z) is evaluated at 15 digits: beyond, it is 0
    code = -discretized_log_prob(torch.tensor([0]), torch.tensor([mean], dtype=torch.float64),
                                 torch.tensor([std], dtype=torch.float64))
    assert_allclose(code.item(), dm.edge_cost(mean, H, std), **F64)
    mirrored = -discretized_log_prob(torch.tensor([255]), torch.tensor([-mean], dtype=torch.float64),
                                     torch.tensor([std], dtype=torch.float64))
    assert_allclose(mirrored.item(), dm.edge_cost(mean, H, std), **F64, err_msg="k = 255 is the mirror image")


def test_code_gradient_at_the_simple_target_is_the_derived_one():
    """ddpm's decoder at t = 1, fixed sigma_1^2 = beta_1, x_0 = -1, eps_theta = eps: autograd d L_0 / d eps_theta per
    pixel equals derivation (n)'s negative value."""
    betas = make_betas("linear", 1000)
    d = GaussianDiffusion(betas)
    beta_1 = float(betas[0])
    x0 = torch.full((3, 1, 2, 2), -1.0, dtype=torch.float64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    t = torch.ones(3, dtype=torch.int64)
    x1 = forward_sample(d, x0, t, noise)
    eps_hat = noise.clone().requires_grad_(True)
    loss = decoder_terms(d, ReverseVariance.BETA, torch.zeros_like(x0, dtype=torch.int64), x1, t, eps_hat,
                         False).sum()
    loss.backward()
    expected = dm.edge_eps_gradient(H, math.sqrt(beta_1), beta_1)
    assert expected < 0
    assert_allclose(eps_hat.grad.numpy(), np.full(x0.shape, expected), rtol=1e-9, atol=0)


def test_summary_figures():
    assert round(dm.edge_cost_at_centre(H, 0.01) / math.log(2), 3) == 0.616
    betas = make_betas("linear", 1000)
    alpha_bar = np.cumprod(1.0 - betas)
    beta_tilde_2 = (1.0 - alpha_bar[0]) / (1.0 - alpha_bar[1]) * betas[1]
    assert round(dm.edge_cost_at_centre(H, math.sqrt(beta_tilde_2)) / math.log(2), 3) == 0.510
    assert round(float(dm.edge_cost_at_centre(H, 0.01)), 3) == 0.427


def test_mnist_share_of_saturated_pixels():
    # private: the raw MNIST split, without load_images' checks, is the derivation's input
    from ddpm.images.data import Split, _load_mnist

    for split in ("train", "test"):
        pixels = _load_mnist(Split(split)).numpy()
        assert round(float((pixels == 0).mean()), 2) == 0.81, split
        assert round(float((pixels == 255).mean()), 3) == 0.007, split


def _fails(step: Step) -> bool:
    return not step.holds_symbolically()


def test_mutations_are_caught():
    results = {step.lhs_latex: step for step in dm.derivation().results}
    centre = next(s for s in dm.derivation().results if s.lhs is dm.EDGE_COST_AT_CENTRE)
    # bin k = 0 ending at -1 - h (a closed-side slip): the cost at the centre is no longer -log Phi(h / sigma_1)
    slipped = -sp.log(dm.normal_cdf((-1 - dm.h - dm.mu) / dm.sigma_1)).subs(dm.mu, -1)
    assert _fails(Step("mutant", slipped, centre.rhs))
    # a closed edge bin [-1 - h, -1 + h]: its derivative is not phi / (sigma Phi) (and it is stationary at -1)
    closed = -sp.log(dm.normal_cdf((-1 + dm.h - dm.mu) / dm.sigma_1) - dm.normal_cdf((-1 - dm.h - dm.mu) / dm.sigma_1))
    assert _fails(Step("mutant", sp.diff(closed, dm.mu), dm.EDGE_COST_DERIVATIVE_FORM))
    assert sp.simplify(sp.diff(closed, dm.mu).subs(dm.mu, -1)) == 0
    # the t = 1 mean without the 1 / sqrt(alpha_1): not the predicted x_0, and not x_0 at eps_theta = eps
    wrong_mean = x_t - sp.sqrt(beta_t) * eps_theta
    assert _fails(Step("mutant", wrong_mean, dm.X0_PREDICTED_AT_1))
    x1 = sp.sqrt(1 - beta_t) * x_0 + sp.sqrt(beta_t) * eps
    assert _fails(Step("mutant", wrong_mean.subs(x_t, x1).subs(eps_theta, eps), x_0))
    # the gradient with the wrong sign of d mu / d eps_theta
    gradient = next(s for s in dm.derivation().results if s.lhs is dm.EDGE_EPS_GRADIENT)
    assert _fails(Step("mutant", -dm.EDGE_EPS_GRADIENT, gradient.rhs))
    assert len(results) == 3
