"""The speed-ups change no result: each fast path against the slow path it replaced.

- Algorithm 2's step as the sampler runs it (`ddpm.core.reverse.ReverseStep` with its constants cast once, one int key
  per step) is bitwise the literal per-step gather and cast of line 4, for float32, float64 and bfloat16 samples and
  both variances.
- `ancestral_sample(compile=True)` (torch.compile of the network) gives the eager samples up to float32 rounding.
- The trainer's multi-tensor Adam and EMA (`ddpm.training.trainer`) give bitwise the weights of the per-parameter loops.
"""

from __future__ import annotations

import copy
import dataclasses

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from ddpm.core.diffusion import GaussianDiffusion, standard_normal
from ddpm.core.forward import compute_dtype
from ddpm.core.samplers import ancestral_sample
from ddpm.core.schedules import make_betas
from ddpm.core.variance import ReverseVariance
from ddpm.training.config import get_preset
from ddpm.training.model import build_unet
from testkit import tolerances
from testkit.doubles import ToyEps


def per_step_gather_sample(model, diffusion, shape, seed, variance, dtype):
    """Algorithm 2 line 4 written out: each step gathers the constants of its t from the float64 tables and casts
    them."""
    choice = ReverseVariance.from_value(variance)
    generator = torch.Generator().manual_seed(seed)
    noise_dtype = compute_dtype(dtype)
    x = standard_normal(shape, generator, noise_dtype, torch.device("cpu")).to(dtype)  # x_T
    z = torch.empty(shape, dtype=noise_dtype)
    for t_value in range(diffusion.T, 0, -1):
        t = torch.full((shape[0],), t_value, dtype=torch.int64)
        eps = model(x, t)
        if t_value > 1:
            z.normal_(generator=generator)
        def at(table, t=t, x=x):
            return table[t].to(noise_dtype).reshape((-1,) + (1,) * (x.ndim - 1))  # [B, 1, ...]

        mean = at(diffusion.recip_sqrt_alphas) * (x.to(noise_dtype) - at(diffusion.eps_coefs) * eps.to(noise_dtype))
        x = (mean + at(diffusion.reverse_std(choice)) * z if t_value > 1 else mean).to(dtype)
    return x


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64, torch.bfloat16])
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_cast_once_step_is_bitwise_the_per_step_gather(dtype, variance):
    T = 30
    diffusion = GaussianDiffusion(np.linspace(1e-3, 0.2, T))
    shape = (3, 1, 4, 4)
    model = ToyEps(T)
    fast = ancestral_sample(model, diffusion, shape, torch.Generator().manual_seed(8), variance=variance,
                            progress=False, dtype=dtype).x0
    slow = per_step_gather_sample(model, diffusion, shape, 8, variance, dtype)
    assert fast.dtype == slow.dtype == dtype
    assert_array_equal(fast.float().numpy(), slow.float().numpy(),
                       err_msg="the cast-once Algorithm 2 step must equal the per-step gather bit for bit")


def test_cast_once_step_with_the_unet_on_the_linear_schedule():
    T = 250
    preset = get_preset("tiny")
    torch.manual_seed(0)
    model = build_unet(preset.model, 1, (8, 8), T).eval()
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)  # a non-zero eps_theta
    diffusion = GaussianDiffusion(make_betas("linear", T))
    shape = (2, 1, 8, 8)
    with torch.no_grad():
        slow = per_step_gather_sample(model, diffusion, shape, 3, "beta", torch.float32)
    fast = ancestral_sample(model, diffusion, shape, torch.Generator().manual_seed(3), progress=False).x0
    assert_array_equal(fast.numpy(), slow.numpy())


@pytest.mark.slow
def test_compiled_sampler_equals_eager():
    preset = get_preset("tiny")
    torch.manual_seed(1)
    model = build_unet(preset.model, 1, (8, 8), 20).eval()
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)
    diffusion = GaussianDiffusion(np.linspace(1e-3, 0.2, 20))
    shape = (2, 1, 8, 8)
    # Both sides in float64: compiled kernels sum in another order, and a float32 U-Net's rounding
    # through 20 steps depends on the weights; in float64 that reordering stays ~1e-13, far below FLOAT64's rtol.
    model = model.double()
    eager = ancestral_sample(model, diffusion, shape, torch.Generator().manual_seed(4), progress=False,
                             dtype=torch.float64).x0
    compiled = ancestral_sample(model, diffusion, shape, torch.Generator().manual_seed(4), progress=False,
                                compile=True, dtype=torch.float64).x0
    assert compiled.dtype == torch.float64
    assert_allclose(compiled.numpy(), eager.numpy(), **tolerances.FLOAT64.kwargs(),
                    err_msg="torch.compile of eps_theta must not change Algorithm 2's samples beyond rounding")


def test_compile_flag_must_be_a_bool():
    with pytest.raises(ValueError, match="compile must be a bool"):
        ancestral_sample(ToyEps(3), GaussianDiffusion(np.linspace(1e-3, 0.2, 3)), (1, 1, 2, 2),
                         torch.Generator(), progress=False, compile="yes")


def test_multi_tensor_adam_and_ema_are_bitwise_the_loops():
    from ddpm.training.update_rules import ema_update

    preset = get_preset("tiny")
    torch.manual_seed(2)
    base = build_unet(preset.model, 1, (8, 8), 100)
    grads = [torch.randn_like(p) for p in base.parameters()]
    runs = {}
    for foreach in (False, True):
        model = copy.deepcopy(base)
        ema = copy.deepcopy(base).requires_grad_(False)
        optimizer = torch.optim.Adam(model.parameters(), lr=1e-2, foreach=foreach)
        for step in range(5):
            for p, g in zip(model.parameters(), grads, strict=True):
                p.grad = g * (step + 1)
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            if foreach:
                ema_update(ema, model, 0.9)
            else:
                with torch.no_grad():
                    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
                        e.lerp_(p, 1.0 - 0.9)
        runs[foreach] = (model, ema)
    for (loop, fast) in zip(runs[False], runs[True], strict=True):
        for a, b in zip(loop.parameters(), fast.parameters(), strict=True):
            assert_array_equal(b.detach().numpy(), a.detach().numpy())
    moved = max(float((a - b).detach().abs().max())
                for a, b in zip(runs[True][1].parameters(), base.parameters(), strict=True))
    assert moved > 1e-4, "the EMA must have moved"


def test_ema_update_rejects_mismatched_models():
    from ddpm.training.update_rules import ema_update

    preset = get_preset("tiny")
    with pytest.raises(ValueError, match="the EMA model has"):
        ema_update(build_unet(preset.model, 1, (8, 8), 10), torch.nn.Linear(2, 2), 0.9)


@pytest.mark.slow
def test_draw_samples_compiled_once_equals_eager():
    """evaluate's compile_sampler path: one torch.compile for every batch, samples as eager up to float32 rounding."""
    from ddpm.evaluation.sampling import SampleRequest, draw_samples

    preset = get_preset("tiny")
    torch.manual_seed(2)
    model = build_unet(preset.model, 1, (8, 8), 20).eval()
    torch.nn.init.normal_(model.output_conv.weight, std=0.05)
    diffusion = GaussianDiffusion(np.linspace(1e-3, 0.2, 20))
    request = SampleRequest(num=6, image_shape=(1, 8, 8), batch_size=3, variance="beta")
    eager = draw_samples(model, diffusion, request, torch.Generator().manual_seed(5), progress=False)
    compiled = draw_samples(model, diffusion, dataclasses.replace(request, compile=True),
                            torch.Generator().manual_seed(5), progress=False)
    # uint8 images: float32 rounding may move a value across a quantisation boundary, by one level at most.
    difference = (compiled.images.int() - eager.images.int()).abs()
    assert int(difference.max()) <= 1, "compiled and eager samples must agree to one 8-bit level"
    assert float((difference > 0).float().mean()) < 0.05, "only values at a rounding boundary may differ"
