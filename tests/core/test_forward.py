"""The parameterisation conversions of ddpm.core.forward against their float64 formulas, over Hypothesis schedules.

eps_from_v(x_t, v) = sqrt(a) v + sqrt(1 - a) x_t (a = alpha_bar_t) is compared with that formula evaluated in NumPy
float64 from the diffusion's own alpha_bar and 1 - alpha_bar tables (1 - a itself loses its relative precision when a
is near 1: the table keeps it, from expm1 of the log), and checked to invert v = sqrt(a) eps - sqrt(1 - a) x_0 at
x_t = sqrt(a) x_0 + sqrt(1 - a) eps (eq. 4), for schedules with T from 1 to 2000 at t = 1, t = T and drawn t.
"""

from __future__ import annotations

import numpy as np
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.forward import eps_from_v, forward_sample
from testkit import strategies, tolerances

F64 = tolerances.FLOAT64
SHAPE = (3, 1, 2, 2)  # [B, C, H, W]


def _inputs(betas: np.ndarray, seed: int) -> tuple[GaussianDiffusion, torch.Tensor, tuple, list[torch.Tensor]]:
    """The diffusion, t = [1, T, drawn] (int64 [3]), (alpha_bar_t, 1 - alpha_bar_t) (float64 [3, 1, 1, 1] each) and
    three float64 draws."""
    diffusion = GaussianDiffusion(torch.as_tensor(betas, dtype=torch.float64))
    T = diffusion.T
    g = torch.Generator().manual_seed(seed)
    t = torch.tensor([1, T, int(torch.randint(1, T + 1, (1,), generator=g))], dtype=torch.int64)  # [3]
    a = diffusion.alpha_bars[t].numpy().reshape(-1, 1, 1, 1)  # [3, 1, 1, 1]
    b2 = diffusion.one_minus_alpha_bars[t].numpy().reshape(-1, 1, 1, 1)  # [3, 1, 1, 1]
    draws = [torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(3)]  # each [3, 1, 2, 2]
    return diffusion, t, (a, b2), draws


@settings(max_examples=25, deadline=None)
@given(betas=strategies.schedules(), seed=st.integers(0, 2**31 - 1))
def test_eps_from_v_is_the_float64_formula(betas, seed):
    diffusion, t, (a, b2), (xt, v, _) = _inputs(betas, seed)
    expected = np.sqrt(a) * v.numpy() + np.sqrt(b2) * xt.numpy()
    got = eps_from_v(diffusion, xt, t, v)
    assert got.dtype == torch.float64 and got.shape == SHAPE
    assert_allclose(got.numpy(), expected, **F64.kwargs())


@settings(max_examples=25, deadline=None)
@given(betas=strategies.schedules(), seed=st.integers(0, 2**31 - 1))
def test_eps_from_v_inverts_v_of_the_forward_sample(betas, seed):
    """v = sqrt(a) eps - sqrt(1 - a) x_0 at x_t of eq. 4 gives back eps."""
    diffusion, t, (a, b2), (x0, eps, _) = _inputs(betas, seed)
    xt = forward_sample(diffusion, x0, t, eps)
    v = torch.as_tensor(np.sqrt(a) * eps.numpy() - np.sqrt(b2) * x0.numpy())
    scale = 1.0 + np.abs(x0.numpy()) + np.abs(eps.numpy())  # the inputs' size: eq. 4 then back, a few roundings
    assert_allclose(eps_from_v(diffusion, xt, t, v).numpy() / scale, eps.numpy() / scale, rtol=0.0, atol=1e-13)


def test_eps_from_v_with_float32_inputs_computes_in_float32():
    diffusion = GaussianDiffusion(torch.linspace(1e-4, 0.02, 1000, dtype=torch.float64))
    t = torch.tensor([1, 500, 1000])
    xt, v = torch.randn(SHAPE, dtype=torch.float32), torch.randn(SHAPE, dtype=torch.float32)
    a = diffusion.alpha_bars[t].numpy().reshape(-1, 1, 1, 1)
    got = eps_from_v(diffusion, xt, t, v)
    assert got.dtype == torch.float32
    expected = np.sqrt(a) * v.double().numpy() + np.sqrt(1.0 - a) * xt.double().numpy()
    assert_allclose(got.double().numpy(), expected, **tolerances.FLOAT32.kwargs())
