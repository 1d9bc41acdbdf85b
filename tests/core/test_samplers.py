"""Samplers: Algorithm 2 equals the paper's loop written out by hand; DDIM; draws, reproducibility, errors, compile."""

from __future__ import annotations

import time

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.forward import forward_sample
from ddpm.core.reverse import ReverseStep, single_step_tables
from ddpm.core.samplers import (
    SampleResult,
    ancestral_sample,
    check_sampler_options,
    ddim_sample,
    ddim_step,
    ddim_timesteps,
    network_evaluations,
    strided_ancestral_step,
    strided_sample,
)
from ddpm.core.schedules import make_betas
from ddpm.core.variance import ReverseVariance
from testkit import strategies, tolerances
from testkit.doubles import ToyEps

F64 = tolerances.FLOAT64.kwargs()
SHAPE = (3, 1, 2, 2)


def paper_schedule(betas: np.ndarray) -> dict[str, np.ndarray]:
    """alpha_t, alpha_bar_t, beta_tilde_t written out independently of ddpm (index t - 1)."""
    alphas = 1.0 - betas
    alpha_bar = np.cumprod(alphas)
    alpha_bar_prev = np.concatenate([[1.0], alpha_bar[:-1]])
    return {
        "alphas": alphas,
        "alpha_bar": alpha_bar,
        "alpha_bar_prev": alpha_bar_prev,
        "beta": betas,
        "beta_tilde": (1.0 - alpha_bar_prev) / (1.0 - alpha_bar) * betas,
    }


def paper_algorithm2(model, betas, shape, seed, sigma2_name, draw_dtype=torch.float64):
    """Algorithm 2 of Ho et al., line by line, in float64 (draws in `draw_dtype`); returns {t: x_t} for t = T..0."""
    s = paper_schedule(betas)
    T = len(betas)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=draw_dtype).double()  # line 1
    xs = {T: x}
    for t in range(T, 0, -1):  # line 2
        z = (torch.randn(shape, generator=g, dtype=draw_dtype).double() if t > 1
             else torch.zeros(shape, dtype=torch.float64))
        eps = model(x, torch.full((shape[0],), t, dtype=torch.int64))
        a, ab = s["alphas"][t - 1], s["alpha_bar"][t - 1]
        sigma = np.sqrt(s[sigma2_name][t - 1])
        x = 1.0 / np.sqrt(a) * (x - (1.0 - a) / np.sqrt(1.0 - ab) * eps) + sigma * z  # line 4
        xs[t - 1] = x
    return xs


def paper_ddim(model, betas, shape, seed, taus, eta=0.0):
    """DDIM, Song et al. eq. 12, written out in float64 over tau_S > ... > tau_1 > 0."""
    s = paper_schedule(betas)
    ab = np.concatenate([[1.0], s["alpha_bar"]])  # index t
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    desc = list(taus)[::-1]
    for t, prev in zip(desc, desc[1:] + [0], strict=True):
        eps = model(x, torch.full((shape[0],), t, dtype=torch.int64))
        a, a_prev = ab[t], ab[prev]
        x0_hat = (x - np.sqrt(1 - a) * eps) / np.sqrt(a)
        sigma = eta * np.sqrt((1 - a_prev) / (1 - a)) * np.sqrt(1 - a / a_prev)
        x = np.sqrt(a_prev) * x0_hat + np.sqrt(1 - a_prev - sigma**2) * eps
        if prev > 0 and eta > 0:
            x = x + sigma * torch.randn(shape, generator=g, dtype=torch.float64)
    return x


def moderate_betas(T: int) -> np.ndarray:
    return np.linspace(1e-3, 0.3, T)


# ---------------------------------------------------------------------------------- Algorithm 2 as written
@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("T", [1, 2, 25])
def test_ancestral_equals_handwritten_algorithm2(variance, T):
    betas = moderate_betas(T)
    model = ToyEps(T)
    steps = sorted({T, T // 2, 1, 0})
    result = ancestral_sample(
        model, GaussianDiffusion(betas), SHAPE, torch.Generator().manual_seed(7), variance=variance,
        progress=False, trajectory_steps=steps, dtype=torch.float64,
    )
    expected = paper_algorithm2(model, betas, SHAPE, 7, variance)
    assert isinstance(result, SampleResult) and result.x0.dtype == torch.float64
    assert_allclose(result.x0.numpy(), expected[0].numpy(), **F64, err_msg="x_0 != Algorithm 2 line 4 iterated")
    assert list(result.trajectory) == sorted(steps, reverse=True)
    for t in steps:
        assert_allclose(result.trajectory[t].numpy(), expected[t].numpy(), **F64, err_msg=f"snapshot x_{t}")


@settings(max_examples=12, deadline=None)
@given(betas=strategies.schedules(max_T=30), variance=st.sampled_from(["beta", "beta_tilde"]))
def test_ancestral_equals_handwritten_algorithm2_any_schedule(betas, variance):
    T = len(betas)
    model = ToyEps(T)
    result = ancestral_sample(model, GaussianDiffusion(betas), SHAPE, torch.Generator().manual_seed(3),
                              variance=variance, progress=False, dtype=torch.float64)
    expected = paper_algorithm2(model, betas, SHAPE, 3, variance)[0].numpy()
    # Chains through beta = 0.999 amplify rounding by 1/sqrt(alpha_t) ~ 32 per step: compare relative to the scale.
    scale = max(1.0, float(np.abs(expected).max()))
    assert_allclose(result.x0.numpy() / scale, expected / scale, **F64)


def test_z_is_zero_at_t1():
    T = 5
    d = GaussianDiffusion(moderate_betas(T))
    xt = torch.randn(SHAPE, generator=torch.Generator().manual_seed(0))
    eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(1))
    for variance in ("beta", "beta_tilde"):
        t = torch.ones(SHAPE[0], dtype=torch.int64)
        mean, _ = d.p_mean_variance(eps, xt, t, variance)
        for noise in (torch.full(SHAPE, 1e30), torch.full(SHAPE, float("nan")), -xt):
            assert torch.equal(d.p_sample(eps, xt, t, noise, variance), mean), "x_0 = mu_theta(x_1, 1) exactly"
        # Mixed batch: rows with t = 1 ignore the noise, the row with t = 2 uses it.
        t = torch.tensor([1, 2, 1])
        noise = torch.full(SHAPE, 3.0)
        mean, var = d.p_mean_variance(eps, xt, t, variance)
        out = d.p_sample(eps, xt, t, noise, variance)
        assert torch.equal(out[[0, 2]], mean[[0, 2]])
        assert torch.allclose(out[1], mean[1] + var[1].sqrt() * 3.0)


def test_last_step_does_not_draw_noise():
    # Algorithm 2 consumes x_T and z_T..z_2: exactly T normal draws of `shape`.
    T = 6
    g = torch.Generator().manual_seed(11)
    ancestral_sample(ToyEps(T), GaussianDiffusion(moderate_betas(T)), SHAPE, g, progress=False)
    g_ref = torch.Generator().manual_seed(11)
    for _ in range(T):
        torch.randn(SHAPE, generator=g_ref)
    assert torch.equal(torch.randn(8, generator=g), torch.randn(8, generator=g_ref)), "draw count != T"


def test_generator_reproducibility():
    T = 10
    d = GaussianDiffusion(moderate_betas(T))
    model = ToyEps(T)
    a = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(5), progress=False).x0
    b = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(5), progress=False).x0
    c = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(6), progress=False).x0
    assert torch.equal(a, b), "same seed, different samples"
    assert not torch.equal(a, c), "different seeds, same samples"
    # No global RNG use: reseeding the global generator changes nothing.
    torch.manual_seed(123)
    e = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(5), progress=False).x0
    assert torch.equal(a, e)


@pytest.mark.parametrize(
    ("dtype", "tolerance", "T"), [(torch.float32, tolerances.FLOAT32, 20), (torch.bfloat16, tolerances.BFLOAT16, 4)]
)
def test_low_precision_sampling_tracks_float64(dtype, tolerance, T):
    # Same draws (float32, the compute dtype of both) fed to the float64 hand-written loop.
    betas = moderate_betas(T)
    model = ToyEps(T)
    low = ancestral_sample(model, GaussianDiffusion(betas), SHAPE, torch.Generator().manual_seed(2),
                           progress=False, dtype=dtype).x0
    ref = paper_algorithm2(model, betas, SHAPE, 2, "beta", draw_dtype=torch.float32)[0]
    assert low.dtype == dtype
    assert_allclose(low.double().numpy(), ref.numpy(), **tolerance.kwargs())


def _advanced(seed: int, draws: int, dtype: torch.dtype = torch.float64) -> torch.Generator:
    """A generator seeded with `seed` after `draws` normal draws of SHAPE (where a run stands after them)."""
    g = torch.Generator().manual_seed(seed)
    for _ in range(draws):
        torch.randn(SHAPE, generator=g, dtype=dtype)
    return g


@pytest.mark.parametrize("t", [10, 4, 1])
def test_ancestral_resumed_at_t_continues_the_full_run_draw_for_draw(t):
    """start = (t, x_t): the steps t..1 with the draws a full run takes there (x_T and z_T..z_{t+1} come before)."""
    T = 10
    d = GaussianDiffusion(moderate_betas(T))
    model = ToyEps(T)
    full = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(8), variance="beta_tilde", progress=False,
                            dtype=torch.float64, trajectory_steps=[t, 0])
    resumed = ancestral_sample(model, d, SHAPE, _advanced(8, 1 + T - t), variance="beta_tilde", progress=False,
                               dtype=torch.float64, start=(t, full.trajectory[t]), trajectory_steps=[t, 0])
    assert torch.equal(resumed.x0, full.x0)
    assert torch.equal(resumed.trajectory[t], full.trajectory[t]) and list(resumed.trajectory) == [t, 0]
    other = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(9), progress=False, dtype=torch.float64,
                             start=(t, full.trajectory[t]))
    assert t == 1 or not torch.equal(other.x0, full.x0), "other draws, other x_0 (except the noise-free t = 1)"


@pytest.mark.parametrize("eta", [0.0, 0.5])
def test_ddim_resumed_at_a_visited_tau_continues_the_full_run_draw_for_draw(eta):
    T, S = 25, 6
    d = GaussianDiffusion(moderate_betas(T))
    model = ToyEps(T)
    desc = ddim_timesteps(T, S)[::-1]
    full = ddim_sample(model, d, SHAPE, torch.Generator().manual_seed(3), num_steps=S, eta=eta, progress=False,
                       dtype=torch.float64, trajectory_steps=desc)
    for k, tau in enumerate(desc):
        draws = 1 + (k if eta > 0 else 0)  # x_T, then one z per earlier step (all of them go to some s > 0)
        resumed = ddim_sample(model, d, SHAPE, _advanced(3, draws), num_steps=S, eta=eta, progress=False,
                              dtype=torch.float64, start=(tau, full.trajectory[tau]))
        assert torch.equal(resumed.x0, full.x0), f"resumed at tau = {tau}"


@pytest.mark.parametrize(
    ("start", "message"),
    [
        ((0, torch.zeros(SHAPE)), r"start t = 0 is not a timestep this sampler visits"),
        ((3.0, torch.zeros(SHAPE)), r"start t = 3\.0 is not a timestep"),
        ((3, torch.zeros(1, 1, 2, 2)),
         r"start x_t must be a floating tensor of shape \(3, 1, 2, 2\), got \(1, 1, 2, 2\)"),
        ((3, torch.zeros(SHAPE, dtype=torch.int64)), r"start x_t must be a floating tensor"),
        ((3,), r"start must be a tuple \(t, x_t\)"),
    ],
)
def test_bad_start(start, message):
    T = 5
    d = GaussianDiffusion(moderate_betas(T))
    with pytest.raises(ValueError, match=message):
        ancestral_sample(ToyEps(T), d, SHAPE, torch.Generator(), progress=False, start=start)
    with pytest.raises(ValueError, match=message):
        ddim_sample(ToyEps(T), d, SHAPE, torch.Generator(), num_steps=3, progress=False, start=start)


def test_start_must_be_visited():
    T = 5
    d = GaussianDiffusion(moderate_betas(T))
    with pytest.raises(ValueError, match=r"start t = 6 is not a timestep this sampler visits; visited t: \[5, 4"):
        ancestral_sample(ToyEps(T), d, SHAPE, torch.Generator(), progress=False, start=(6, torch.zeros(SHAPE)))
    with pytest.raises(ValueError, match=r"start t = 2 is not a timestep this sampler visits; visited t: \[5, 3, 1\]"):
        ddim_sample(ToyEps(T), d, SHAPE, torch.Generator(), num_steps=3, progress=False, start=(2, torch.zeros(SHAPE)))


# ------------------------------------------------------------------------------------------------- DDIM
@given(T=st.integers(1, 2000), data=st.data())
def test_ddim_timesteps(T, data):
    S = data.draw(st.integers(1, T))
    taus = ddim_timesteps(T, S)
    assert len(taus) == S and taus[-1] == T and taus[0] >= 1
    assert all(a < b for a, b in zip(taus, taus[1:], strict=False)), "taus must be strictly increasing"
    if S == T:
        assert taus == list(range(1, T + 1))
    if S >= 2:
        assert taus[0] == 1


@pytest.mark.parametrize("num_steps", [1, 3, 25])
def test_ddim_eta0_equals_handwritten_and_is_deterministic(num_steps):
    T = 25
    betas = moderate_betas(T)
    d = GaussianDiffusion(betas)
    model = ToyEps(T)
    g = torch.Generator().manual_seed(9)
    out = ddim_sample(model, d, SHAPE, g, num_steps=num_steps, eta=0.0, progress=False, dtype=torch.float64)
    expected = paper_ddim(model, betas, SHAPE, 9, ddim_timesteps(T, num_steps))
    assert_allclose(out.x0.numpy(), expected.numpy(), **F64, err_msg="DDIM eta=0 != Song et al. eq. 12")
    # Deterministic given x_T: only x_T was drawn.
    g_ref = torch.Generator().manual_seed(9)
    torch.randn(SHAPE, generator=g_ref, dtype=torch.float64)
    assert torch.equal(torch.randn(4, generator=g), torch.randn(4, generator=g_ref))


def test_ddim_with_eta_equals_handwritten():
    T = 25
    betas = moderate_betas(T)
    model = ToyEps(T)
    out = ddim_sample(model, GaussianDiffusion(betas), SHAPE, torch.Generator().manual_seed(4), num_steps=7,
                      eta=0.5, progress=False, dtype=torch.float64)
    expected = paper_ddim(model, betas, SHAPE, 4, ddim_timesteps(T, 7), eta=0.5)
    assert_allclose(out.x0.numpy(), expected.numpy(), **F64)


@pytest.mark.parametrize("clip_x0", [False, True])
@pytest.mark.parametrize("T", [1, 2, 30])
def test_ddim_full_steps_eta1_equals_ancestral_beta_tilde(T, clip_x0):
    d = GaussianDiffusion(moderate_betas(T))
    model = ToyEps(T)
    a = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(1), variance="beta_tilde",
                         clip_x0=clip_x0, progress=False, dtype=torch.float64, trajectory_steps=range(T + 1))
    b = ddim_sample(model, d, SHAPE, torch.Generator().manual_seed(1), num_steps=T, eta=1.0, clip_x0=clip_x0,
                    progress=False, dtype=torch.float64, trajectory_steps=range(T + 1))
    for t in range(T + 1):
        assert_allclose(b.trajectory[t].numpy(), a.trajectory[t].numpy(), **F64,
                        err_msg=f"DDIM(S=T, eta=1) != Algorithm 2 with beta_tilde at x_{t}")


@pytest.mark.parametrize("clip_x0", [False, True])
@pytest.mark.parametrize("eta", [0.0, 0.5, 1.0])
def test_ddim_step_repeated_is_ddim_sample(eta, clip_x0):
    """ddim_step over the visited taus reproduces ddim_sample bitwise (same coefficients, same draws)."""
    T, S = 25, 6
    d = GaussianDiffusion(moderate_betas(T))
    model = ToyEps(T)
    shape = SHAPE
    out = ddim_sample(model, d, shape, torch.Generator().manual_seed(5), num_steps=S, eta=eta, clip_x0=clip_x0,
                      progress=False, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    x = torch.randn(shape, generator=g, dtype=torch.float64)
    taus = ddim_timesteps(T, S)[::-1]
    for t, s in zip(taus, taus[1:] + [0], strict=True):
        z = torch.randn(shape, generator=g, dtype=torch.float64) if eta > 0 and s > 0 else None
        x = ddim_step(d, model(x, torch.full((shape[0],), t)), x, t, s, eta, z, clip_x0=clip_x0)
    assert torch.equal(x, out.x0), "ddim_step chain != ddim_sample"


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
def test_strided_step_over_one_step_is_p_sample(variance):
    """With s = t - 1 the strided step is Algorithm 2's p_sample (no noise at t = 1)."""
    T = 30
    d = GaussianDiffusion(moderate_betas(T))
    g = torch.Generator().manual_seed(2)
    for t in (1, 2, 17, T):
        eps, xt, z = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(3))
        got = strided_ancestral_step(d, eps, xt, t, t - 1, z, variance)
        expected = d.p_sample(eps, xt, torch.full((SHAPE[0],), t), z, variance)
        assert_allclose(got.numpy(), expected.numpy(), **F64, err_msg=f"strided step t -> t - 1 != p_sample, t = {t}")


def test_strided_step_eta1_ddim_is_the_beta_tilde_strided_step():
    """Derivation (i): DDIM with eta = 1 over a stride is the strided ancestral step with beta_tilde_{t,s}."""
    T = 40
    d = GaussianDiffusion(moderate_betas(T))
    g = torch.Generator().manual_seed(3)
    for t, s in ((40, 30), (12, 3), (5, 0)):
        eps, xt, z = (torch.randn(SHAPE, generator=g, dtype=torch.float64) for _ in range(3))
        assert_allclose(strided_ancestral_step(d, eps, xt, t, s, z, "beta_tilde").numpy(),
                        ddim_step(d, eps, xt, t, s, 1.0, z).numpy(), **F64, err_msg=f"t = {t}, s = {s}")


@pytest.mark.parametrize("variance", ["beta", "beta_tilde"])
@pytest.mark.parametrize("T", [1, 2, 30])
def test_strided_sample_with_all_steps_is_algorithm2(T, variance):
    """S = T: the strided sampler visits every t and draws the same z as ancestral_sample (the same samples)."""
    d = GaussianDiffusion(moderate_betas(T))
    model = ToyEps(T)
    a = ancestral_sample(model, d, SHAPE, torch.Generator().manual_seed(6), variance=variance, progress=False,
                         dtype=torch.float64, trajectory_steps=range(T + 1))
    b = strided_sample(model, d, SHAPE, torch.Generator().manual_seed(6), num_steps=T, variance=variance,
                       progress=False, dtype=torch.float64, trajectory_steps=range(T + 1))
    for t in range(T + 1):
        assert_allclose(b.trajectory[t].numpy(), a.trajectory[t].numpy(), **F64,
                        err_msg=f"strided_sample(S=T) != Algorithm 2 at x_{t}")


def test_strided_sample_is_its_steps():
    """strided_sample over S < T steps = strided_ancestral_step chained with the same draws."""
    T, S = 40, 7
    d = GaussianDiffusion(moderate_betas(T))
    model = ToyEps(T)
    out = strided_sample(model, d, SHAPE, torch.Generator().manual_seed(8), num_steps=S, variance="beta",
                         progress=False, dtype=torch.float64)
    g = torch.Generator().manual_seed(8)
    x = torch.randn(SHAPE, generator=g, dtype=torch.float64)
    taus = ddim_timesteps(T, S)[::-1]
    for t, s in zip(taus, taus[1:] + [0], strict=True):
        z = torch.randn(SHAPE, generator=g, dtype=torch.float64) if s > 0 else torch.zeros(SHAPE, dtype=torch.float64)
        x = strided_ancestral_step(d, model(x, torch.full((SHAPE[0],), t)), x, t, s, z, "beta")
    assert_allclose(out.x0.numpy(), x.numpy(), **F64)


@pytest.mark.parametrize("sampler, steps, eta, variance_given, message", [
    ("ancestral", 5, None, False, "ancestral takes all T"),
    ("ancestral", None, 0.5, False, "eta applies to the ddim sampler only"),
    ("ddim", None, None, False, "needs a number of steps"),
    ("ddim", 0, None, False, "1..T"),
    ("ddim", 2.5, None, False, "must be an integer"),
    ("strided", 4.0, None, False, "must be an integer"),
    ("ddim", True, None, False, "must be an integer"),
    ("strided", 11, None, False, "1..T"),
    ("strided", 5, 1.0, False, "eta applies to the ddim sampler only"),
    ("ddim", 5, None, True, "DDIM's noise is set by eta"),
    ("ddim", 5, float("nan"), False, "finite number"),
    ("fast", 5, None, False, "unknown sampler 'fast'"),
])
def test_sampler_option_errors(sampler, steps, eta, variance_given, message):
    with pytest.raises(ValueError, match=message):
        check_sampler_options(sampler, 10, steps, eta, variance_given)


def test_sampler_options_and_network_evaluations():
    assert check_sampler_options("ancestral", 10, None, None)[1:] == (None, None)
    assert check_sampler_options("ancestral", 10, 10, None)[1:] == (None, None)
    assert check_sampler_options("ddim", 10, 4, None)[1:] == (4, 0.0)
    assert check_sampler_options("strided", 10, 4, None)[1:] == (4, None)
    assert [network_evaluations(s, 1000, 50) for s in ("ancestral", "ddim", "strided")] == [1000, 50, 50]
    for sampler in ("ddim", "strided"):
        with pytest.raises(ValueError, match=f"the {sampler} sampler needs a number of steps in 1..T = 1000"):
            network_evaluations(sampler, 1000, None)


@pytest.mark.parametrize("t, s", [(5, 5), (3, 4), (0, 0), (41, 3), (2.0, 1), (3, -1)])
def test_stride_bad_arguments(t, s):
    d = GaussianDiffusion(moderate_betas(40))
    x = torch.zeros(SHAPE, dtype=torch.float64)
    with pytest.raises(ValueError, match="stride needs|must be an int"):
        strided_ancestral_step(d, x, x, t, s, x)
    with pytest.raises(ValueError, match="stride needs|must be an int"):
        ddim_step(d, x, x, t, s, 0.0, None)


def test_clipping_keeps_x0_hat_in_range():
    T = 10
    d = GaussianDiffusion(moderate_betas(T))

    def wild(xt, t):
        return 50.0 * torch.ones_like(xt)

    out = ancestral_sample(wild, d, SHAPE, torch.Generator().manual_seed(0), clip_x0=True, progress=False)
    # At t = 1 the step returns mu_tilde(clamp(x0_hat), x_1) = clamp(x0_hat) (coef_xt = 0, coef_x0 = 1).
    assert float(out.x0.abs().max()) <= 1.0 + 1e-6
    unclipped = ancestral_sample(wild, d, SHAPE, torch.Generator().manual_seed(0), progress=False)
    assert float(unclipped.x0.abs().max()) > 1.0, "without clipping Algorithm 2 returns the raw mean"


def test_progress_bar(capsys):
    T = 5
    d = GaussianDiffusion(moderate_betas(T))
    ancestral_sample(ToyEps(T), d, SHAPE, torch.Generator(), progress=False)
    ddim_sample(ToyEps(T), d, SHAPE, torch.Generator(), num_steps=3, progress=False)
    assert capsys.readouterr().err == ""
    ancestral_sample(ToyEps(T), d, SHAPE, torch.Generator(), progress=True)
    ddim_sample(ToyEps(T), d, SHAPE, torch.Generator(), num_steps=3, progress=True)
    err = capsys.readouterr().err
    assert "Algorithm 2" in err and "DDIM" in err


def test_device_argument_and_snapshot_copies():
    T = 4
    d = GaussianDiffusion(moderate_betas(T))
    out = ancestral_sample(ToyEps(T), d, SHAPE, torch.Generator(), progress=False, device="cpu",
                           trajectory_steps=[T, 0])
    assert out.x0.device.type == "cpu"
    assert torch.equal(out.trajectory[0], out.x0) and out.trajectory[0] is not out.x0
    assert not torch.equal(out.trajectory[T], out.x0)


# -------------------------------------------------------------------------------------------- ValueErrors
@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"shape": ()}, r"shape must be a non-empty tuple of positive ints"),
        ({"shape": (0, 1)}, r"shape must be a non-empty tuple"),
        ({"shape": (2, 1.5)}, r"shape must be a non-empty tuple"),
        ({"shape": 4}, r"shape must be a non-empty tuple"),
        ({"dtype": torch.int64}, r"dtype must be a floating torch\.dtype"),
        ({"generator": 0}, r"generator must be a torch\.Generator"),
        ({"variance": "large"}, r"unknown reverse variance 'large'"),
        ({"trajectory_steps": [6]}, r"trajectory step t = 6 is not visited"),
        ({"trajectory_steps": [-1]}, r"trajectory step t = -1 is not visited"),
        ({"trajectory_steps": [2.0]}, r"trajectory_steps must be integers"),
    ],
)
def test_ancestral_bad_arguments(kwargs, message):
    T = 5
    args = {"shape": SHAPE, "generator": torch.Generator(), "progress": False, **kwargs}
    with pytest.raises(ValueError, match=message):
        ancestral_sample(ToyEps(T), GaussianDiffusion(moderate_betas(T)), **args)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"num_steps": 0}, r"num_steps must be an integer in 1\.\.T = 5, got 0"),
        ({"num_steps": 6}, r"num_steps must be an integer in 1\.\.T = 5, got 6"),
        ({"num_steps": 2.0}, r"num_steps must be an integer"),
        ({"num_steps": 3, "eta": -0.1}, r"eta must be a finite number >= 0"),
        ({"num_steps": 3, "eta": float("nan")}, r"eta must be a finite number >= 0"),
        ({"num_steps": 3, "trajectory_steps": [2]},
         r"trajectory step t = 2 is not visited by this sampler; visited t: \[5, 3, 1, 0\]"),
    ],
)
def test_ddim_bad_arguments(kwargs, message):
    T = 5
    with pytest.raises(ValueError, match=message):
        ddim_sample(ToyEps(T), GaussianDiffusion(moderate_betas(T)), SHAPE, torch.Generator(), progress=False, **kwargs)


def test_model_output_shape_checked():
    T = 3
    with pytest.raises(ValueError, match=r"eps_model\(x_t, t\) must return a tensor of shape \(3, 1, 2, 2\)"):
        ancestral_sample(lambda x, t: x[:1], GaussianDiffusion(moderate_betas(T)), SHAPE, torch.Generator(),
                         progress=False)


# ---------------------------------------------------------------------------------------------- compile
@pytest.mark.slow
def test_torch_compile_q_sample_and_p_sample():
    d = GaussianDiffusion(make_betas("linear", 1000))
    g = torch.Generator().manual_seed(0)
    x0, xt, eps, noise = (torch.randn(SHAPE, generator=g) for _ in range(4))
    t = torch.tensor([1, 500, 1000])

    def internal(x0, xt, eps, noise, t):
        step = ReverseStep(single_step_tables(d, ReverseVariance.BETA_TILDE, False, xt.dtype))
        return forward_sample(d, x0, t, noise), step(eps, xt, t, noise)

    def public(x0, xt, eps, noise, t):
        return d.q_sample(x0, t, noise), d.p_sample(eps, xt, t, noise, "beta")

    start = time.perf_counter()
    fullgraph = torch.compile(internal, fullgraph=True, dynamic=False)  # the hot path: no graph breaks allowed
    breaks_ok = torch.compile(public)  # validation may break the graph, must not fail
    for compiled, eager in ((fullgraph, internal), (breaks_ok, public)):
        for got, want in zip(compiled(x0, xt, eps, noise, t), eager(x0, xt, eps, noise, t), strict=True):
            assert_allclose(got.numpy(), want.numpy(), **tolerances.FLOAT32.kwargs())
    with pytest.raises(ValueError, match=r"got t = 0"):
        breaks_ok(x0, xt, eps, noise, torch.tensor([0, 1, 2]))
    print(f"torch.compile test took {time.perf_counter() - start:.1f} s")
