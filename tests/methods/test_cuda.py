"""CUDA: the oracle checks on the GPU, CPU-vs-CUDA agreement, no host syncs in the hot loops, torch.compile.

Marked `gpu` (skipped without CUDA). Randomness comes from a CPU torch.Generator wherever CPU and CUDA runs
are compared: the library draws on the generator's device and moves the draws, so both runs see the same
numbers and may differ only by floating-point rounding.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.bound import elbo_terms
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.forward import forward_sample
from ddpm.core.losses import training_loss
from ddpm.core.reverse import ReverseStep, single_step_tables
from ddpm.core.samplers import ancestral_sample, ddim_sample
from ddpm.core.variance import ReverseVariance
from testkit import strategies, tolerances
from testkit.diffusion_cases import DTYPES, finite_mask, method_cases, setup
from testkit.doubles import ToyEps, grid_data
from testkit.optimal_denoisers import EpsStar, GaussianData
from testkit.oracles import assert_close_linear, to_numpy

pytestmark = pytest.mark.gpu
CUDA = torch.device("cuda")
F64 = tolerances.FLOAT64.kwargs()
SHAPE = (4, 1, 3, 3)


class SyncCheckingModel(ToyEps):
    """ToyEps with its slopes already on the GPU that turns on torch.cuda sync debugging ("error") at its first call:
    from then on (the loop after setup) any host sync raises. The slopes move at construction, because that copy from
    the CPU synchronises and would fail the check by itself."""

    def __init__(self, T: int) -> None:
        super().__init__(T)
        self.w = self.w.to(CUDA)

    def __call__(self, xt, t):
        torch.cuda.set_sync_debug_mode("error")
        return super().__call__(xt, t)


@pytest.mark.parametrize("dtype_name", ["float64", "float32", "bfloat16"])
@settings(max_examples=10, deadline=None)
@given(betas=strategies.schedules(), us=strategies.fraction_lists, seed=st.integers(0, 2**16))
def test_methods_match_oracles_on_cuda(dtype_name, betas, us, seed):
    d, t, values, x = setup(betas, us, seed=seed, dtype=DTYPES[dtype_name])
    cases = method_cases(d.to(CUDA), t.to(CUDA), values, {k: v.to(CUDA) for k, v in x.items()}, dtype_name)
    for what, got, want, scale in cases:
        assert got.device.type == "cuda" and got.dtype == DTYPES[dtype_name]
        got_np = to_numpy(got)
        want, scale = np.broadcast_arrays(want, scale)
        keep = finite_mask(scale, dtype_name)
        assert_close_linear(got_np[np.broadcast_to(keep, got_np.shape)], want[keep], scale[keep],
                            tolerances.BY_DTYPE_NAME[dtype_name], err_msg=f"{what} [{dtype_name}, cuda]")


def test_tables_move_unchanged():
    d = GaussianDiffusion(strategies.PAPER_T1000)
    c = d.to(CUDA)
    assert c.device.type == "cuda" and c.alpha_bars.dtype == torch.float64
    for name in ("alpha_bars", "posterior_variance", "sigma2_beta_tilde", "loss_weight_beta"):
        torch.testing.assert_close(getattr(c, name).cpu(), getattr(d, name), rtol=0, atol=0, equal_nan=True)
    assert d.device.type == "cpu", ".to returns a copy"


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_ancestral_cpu_vs_cuda(variance):
    T = 30
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    model = ToyEps(T)
    kwargs = dict(variance=variance, progress=False, trajectory_steps=[T, 0])
    # float32: the GPU rounds differently from the CPU. The ToyEps chain diverges (its samples reach ~18), so what
    # rounding leaves grows with the chain and no tolerance follows from float32 arithmetic alone; float32 runs the
    # contracting chain of a true eps* (Gaussian data N(0.1, 0.5^2)) at tolerances.float32_chain_atol instead.
    star = EpsStar(GaussianData(0.1, 0.5), np.linspace(1e-3, 0.3, T))
    for dtype, eps_model in ((torch.float64, model), (torch.float32, star)):
        cpu = ancestral_sample(eps_model, d, SHAPE, torch.Generator().manual_seed(0), dtype=dtype, **kwargs)
        gpu = ancestral_sample(eps_model, d, SHAPE, torch.Generator().manual_seed(0), dtype=dtype, device=CUDA,
                               **kwargs)
        assert gpu.x0.device.type == "cuda"
        assert torch.equal(gpu.trajectory[T].cpu(), cpu.trajectory[T]), "x_T must be the same draw"
        if dtype == torch.float64:
            assert_allclose(gpu.x0.cpu().numpy(), cpu.x0.numpy(), **F64)
        else:
            scale = float(torch.cat([cpu.trajectory[T].abs().flatten(), cpu.x0.abs().flatten()]).max())
            assert_allclose(gpu.x0.cpu().numpy(), cpu.x0.numpy(), rtol=0,
                            atol=tolerances.float32_chain_atol(T, scale), err_msg=f"float32, {variance}")


def test_ddim_cpu_vs_cuda():
    T = 30
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    model = ToyEps(T)
    for eta in (0.0, 1.0):
        cpu = ddim_sample(model, d, SHAPE, torch.Generator().manual_seed(1), num_steps=10, eta=eta,
                          progress=False, dtype=torch.float64)
        gpu = ddim_sample(model, d, SHAPE, torch.Generator().manual_seed(1), num_steps=10, eta=eta,
                          progress=False, dtype=torch.float64, device=CUDA)
        assert_allclose(gpu.x0.cpu().numpy(), cpu.x0.numpy(), **F64)


@pytest.mark.parametrize("clip_x0", [False, True])
def test_elbo_terms_cpu_vs_cuda(clip_x0):
    T = 20
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = grid_data(SHAPE, 0)
    model = ToyEps(T)
    cpu = elbo_terms(model, d, x0, torch.Generator().manual_seed(2), batch_size=16, clip_x0=clip_x0)
    gpu = elbo_terms(model, d.to(CUDA), x0.to(CUDA), torch.Generator().manual_seed(2), batch_size=16, clip_x0=clip_x0)
    for name in ("prior", "kl", "decoder"):
        assert_allclose(getattr(gpu, name).cpu().numpy(), getattr(cpu, name).numpy(), **F64, err_msg=name)


def test_training_loss_on_cuda():
    T = 20
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T)).to(CUDA)
    x0 = grid_data(SHAPE, 1).float().to(CUDA)
    w = torch.nn.Parameter(torch.ones((), device=CUDA))
    for objective in ("simple", "vlb", "hybrid"):
        loss = training_loss(lambda xt, t: torch.tanh(w * xt), d, x0, torch.Generator(CUDA).manual_seed(0), objective)
        (grad,) = torch.autograd.grad(loss, w)
        assert loss.device.type == "cuda" and torch.isfinite(loss) and torch.isfinite(grad)


def test_no_host_sync_in_sampler_and_elbo_loops():
    T = 12
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T)).to(CUDA)
    g = torch.Generator(CUDA).manual_seed(0)
    try:
        ancestral_sample(SyncCheckingModel(T), d, SHAPE, g, progress=False, variance="beta_tilde")
        torch.cuda.set_sync_debug_mode("default")
        ddim_sample(SyncCheckingModel(T), d, SHAPE, g, num_steps=5, eta=0.5, progress=False)
        torch.cuda.set_sync_debug_mode("default")
        elbo_terms(SyncCheckingModel(T), d, grid_data(SHAPE, 2).to(CUDA), g, batch_size=7)
    finally:
        torch.cuda.set_sync_debug_mode("default")


@pytest.mark.slow
def test_torch_compile_on_cuda():
    d = GaussianDiffusion(strategies.PAPER_T1000).to(CUDA)
    g = torch.Generator(CUDA).manual_seed(0)
    x0, xt, eps, noise = (torch.randn(SHAPE, generator=g, device=CUDA) for _ in range(4))
    t = torch.tensor([1, 2, 500, 1000], device=CUDA)

    def step(x0, xt, eps, noise, t):
        step = ReverseStep(single_step_tables(d, ReverseVariance.BETA, False, xt.dtype))
        return forward_sample(d, x0, t, noise), step(eps, xt, t, noise)

    compiled = torch.compile(step, fullgraph=True)
    for got, want in zip(compiled(x0, xt, eps, noise, t), step(x0, xt, eps, noise, t), strict=True):
        assert_allclose(got.cpu().numpy(), want.cpu().numpy(), **tolerances.FLOAT32.kwargs())


def test_unet_forward_has_no_host_sync():
    """The network reads nothing back from the GPU: its timestep range check runs on the CPU only."""
    from ddpm.training.config import get_preset
    from ddpm.training.model import build_unet

    preset = get_preset("tiny")
    model = build_unet(preset.model, 1, (8, 8), preset.training.T).to(CUDA).eval()
    x = torch.randn(4, 1, 8, 8, device=CUDA)
    t = torch.tensor([1, 2, 50, 100], device=CUDA)
    with torch.no_grad():
        model(x, t)  # first call: kernel selection and workspace allocation happen outside the check
        try:
            torch.cuda.set_sync_debug_mode("error")
            out = model(x, t)
        finally:
            torch.cuda.set_sync_debug_mode("default")
    assert out.shape == x.shape and out.device.type == "cuda"


def test_cuda_without_an_index_reuses_the_diffusion_and_the_noise_buffer(monkeypatch):
    """"cuda" and the tables' "cuda:0" are one device: the sampler neither copies the diffusion nor adds a buffer."""
    T = 8
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T)).to(CUDA)
    copies = []
    original = GaussianDiffusion.to
    monkeypatch.setattr(GaussianDiffusion, "to", lambda self, device: copies.append(device) or original(self, device))
    out = ancestral_sample(ToyEps(T), d, SHAPE, torch.Generator("cuda").manual_seed(0), progress=False, device="cuda")
    assert out.x0.device == d.device and copies == []


def test_evaluation_noise_is_drawn_on_the_gpu():
    from ddpm.evaluation.randomness import phase_generator

    generator = phase_generator(0, "sampling", CUDA)
    assert generator.device.type == "cuda"
    assert torch.equal(torch.randn(3, generator=generator, device=CUDA),
                       torch.randn(3, generator=phase_generator(0, "sampling", "cuda"), device=CUDA))
