"""ddpm.core.losses: Algorithm 1's L_simple and the bound objectives, reproduced from the same generator draws."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.core.bound import bound_estimate
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.kernels import prior_term
from ddpm.core.losses import HYBRID_VLB_WEIGHT, Objective, training_loss
from testkit import tolerances
from testkit.doubles import TrainableToyEps, grid_data

T = 12
BETAS = np.linspace(1e-3, 0.3, T)


def draws(seed, B, shape, dtype):
    """The documented draw order of training_loss: t ~ U{1..T} (one randint), then eps (one randn)."""
    g = torch.Generator().manual_seed(seed)
    t = torch.randint(1, T + 1, (B,), generator=g)
    noise = torch.randn(shape, generator=g, dtype=dtype)
    return t, noise


@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_simple_is_algorithm1(dtype):
    x0 = grid_data((5, 1, 3, 3), 0, dtype)
    model = TrainableToyEps(T)
    loss = training_loss(model, GaussianDiffusion(BETAS), x0, torch.Generator().manual_seed(3), "simple")
    t, noise = draws(3, 5, x0.shape, dtype)
    ab = torch.tensor(np.cumprod(1 - BETAS))[t - 1].reshape(-1, 1, 1, 1)
    xt = (ab.sqrt() * x0.double() + (1 - ab).sqrt() * noise.double()).to(dtype)
    expected = ((noise - model(xt, t)) ** 2).mean()  # ||eps - eps_theta||^2 / (C H W), batch mean
    assert loss.dtype == dtype and loss.ndim == 0
    assert_allclose(loss.item(), expected.item(), **tolerances.BY_DTYPE_NAME[str(dtype).split(".")[1]].kwargs())


def test_vlb_is_the_sampled_bound_term_per_dim():
    x0 = grid_data((6, 1, 2, 2), 1)
    d = GaussianDiffusion(BETAS)
    model = TrainableToyEps(T)
    for variance in ("beta", "beta_tilde"):
        vlb = training_loss(model, d, x0, torch.Generator().manual_seed(1), "vlb", variance=variance)
        t, noise = draws(1, 6, x0.shape, torch.float64)
        assert (t == 1).any() and (t > 1).any(), "the seed must draw decoder (t = 1) and KL (t >= 2) rows"
        with torch.no_grad():
            # bound_estimate = L_T + T L_{t-1} under the uniform proposal.
            per_image = (bound_estimate(model, d, x0, t, noise, variance=variance) - prior_term(d, x0)) / T
        expected = (per_image / x0[0].numel()).mean()
        assert_allclose(vlb.item(), expected.item(), **tolerances.FLOAT64.kwargs(), err_msg=f"vlb ({variance})")


def test_hybrid_is_simple_plus_weighted_vlb_and_gradients_flow():
    x0 = grid_data((6, 1, 2, 2), 2)
    d = GaussianDiffusion(BETAS)
    model = TrainableToyEps(T)
    losses = {o: training_loss(model, d, x0, torch.Generator().manual_seed(15), o) for o in Objective}
    assert HYBRID_VLB_WEIGHT == 0.001
    assert_allclose(
        losses[Objective.HYBRID].item(),
        losses[Objective.SIMPLE].item() + 0.001 * d.T * losses[Objective.VLB].item(),  # lambda L_vlb, L_vlb = T E_t L_t
        **tolerances.FLOAT64.kwargs(),
    )
    for objective, loss in losses.items():
        model.zero_grad()
        loss.backward()
        grads = torch.cat([p.grad.reshape(-1) for p in model.parameters()])
        assert bool(torch.isfinite(grads).all()) and float(grads.abs().sum()) > 0, f"no gradient for {objective}"


def test_vlb_gradients_finite_with_decoder_rows_and_far_means():
    # Every t = 1 row uses the decoder; a model far off the data must still give finite gradients.
    x0 = torch.tensor([-1.0, 1.0, 1 / 127.5 - 1, 1 - 1 / 127.5], dtype=torch.float64).reshape(4, 1, 1, 1)
    d = GaussianDiffusion(BETAS)
    model = TrainableToyEps(T)
    with torch.no_grad():
        model.b.fill_(30.0)
    for seed in range(5):
        model.zero_grad()
        loss = training_loss(model, d, x0, torch.Generator().manual_seed(seed), "vlb")
        loss.backward()
        assert torch.isfinite(loss)
        assert all(bool(torch.isfinite(p.grad).all()) for p in model.parameters())
