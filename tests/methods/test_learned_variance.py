"""The learned reverse variance (derivation (k)): bound terms, hybrid objective, samplers, model, CLI.

Numeric-vs-oracle: the learned KL kernel equals derivation (k)'s LEARNED_KL (float64) with the mean gap of
derivation (d) rebuilt here from the betas; v = +1 / -1 reproduce the fixed beta / beta_tilde terms; a Monte Carlo
estimate of the KL (samples of the posterior) agrees with the kernel (z-tests, Holm, ALPHA). Property: the hybrid
objective's stop-gradient leaves the mean's gradient that of L_simple and gives the variance lambda T times that of
L_vlb. End to end: a tiny learned-variance run trains, is evaluated under every variance and samples from the CLI.
"""

from __future__ import annotations

import itertools
import json

import numpy as np
import pytest
import torch
from hypothesis import example, given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.forward import forward_sample
from ddpm.core.kernels import BoundRows, NetworkOutput, decoder_terms, kl_terms, model_output, pixel_index
from ddpm.core.losses import HYBRID_VLB_WEIGHT, training_loss_at
from ddpm.core.samplers import ancestral_sample, strided_sample
from ddpm.core.schedules import make_betas
from ddpm.core.variance import ReverseVariance
from ddpm.training.config import get_preset
from ddpm.training.model import build_unet
from derivations import learned_variance
from testkit import strategies
from testkit.doubles import grid_data
from testkit.oracles import Schedule, evaluate
from testkit.stat_checks import Family
from testkit.threads import one_thread
from testkit.tolerances import FLOAT64

ALPHA = 1e-3
LEARNED = ReverseVariance.LEARNED


class SplitModel(torch.nn.Module):
    """[eps, v] from separate parameters: eps = tanh(w_t x + b) (the mean's), v = c_t + 0.1 x (the variance's)."""

    def __init__(self, T: int, v_level: float = 0.0) -> None:
        super().__init__()
        self.w = torch.nn.Parameter(torch.linspace(0.3, 2.0, T + 1, dtype=torch.float64))
        self.b = torch.nn.Parameter(torch.tensor(0.1, dtype=torch.float64))
        self.c = torch.nn.Parameter(torch.full((T + 1,), v_level, dtype=torch.float64))
        self.slope = 0.1

    def forward(self, xt, t):
        shape = (-1,) + (1,) * (xt.ndim - 1)
        eps = torch.tanh(self.w[t].reshape(shape).to(xt.dtype) * xt + self.b.to(xt.dtype))
        v = self.c[t].reshape(shape).to(xt.dtype) + self.slope * xt
        return torch.cat([eps, v], dim=1)


class ConstantV(torch.nn.Module):
    """[eps_model(x, t), v], v constant: v = 1 is sigma^2 = beta_t, v = -1 is beta_tilde_t (beta_tilde_2 at t = 1)."""

    def __init__(self, eps_model, v: float) -> None:
        super().__init__()
        self.eps_model, self.v = eps_model, v

    def forward(self, xt, t):
        eps = self.eps_model(xt, t)
        return torch.cat([eps, torch.full_like(eps, self.v)], dim=1)


# ------------------------------------------------------------------------------- the kernels vs derivation (k)
@settings(max_examples=40, deadline=None)
@given(betas=strategies.schedules(min_T=2, max_T=400), u=strategies.fractions, seed=st.integers(0, 2**31 - 1),
       v_scale=st.floats(0.0, 3.0))
@example(betas=make_betas("linear", 1000), u=0.0, seed=0, v_scale=1.0)
@example(betas=make_betas("linear", 1000), u=1.0, seed=1, v_scale=2.0)
def test_learned_kl_kernel_is_derivation_k(betas, u, seed, v_scale):
    T = betas.shape[0]
    t_value = max(2, strategies.timestep_from_fraction(u, T))  # KL rows: t >= 2
    rng = np.random.default_rng(seed)
    n, dims = 3, (1, 2, 2)
    x0 = grid_data((n, *dims), seed)
    noise = torch.tensor(rng.standard_normal((n, *dims)))
    eps_theta = torch.tensor(rng.standard_normal((n, *dims)))
    v = torch.tensor(rng.uniform(-v_scale, v_scale, (n, *dims)))
    d = GaussianDiffusion(betas)
    t = torch.full((n,), t_value)
    xt = forward_sample(d, x0, t, noise)
    got = kl_terms(d, LEARNED, BoundRows(x0, xt, t, noise), NetworkOutput(eps_theta, v), clip_x0=False).numpy()
    # Oracle: derivation (k)'s KL per dimension at Delta = beta_t / (sqrt(alpha_t) sqrt(1 - alpha_bar_t))
    # (eps_theta - eps) (derivation (d)); alpha_bar_{t-1} at 50 digits (1 - alpha_bar_{t-1} rounded to float64
    # would lose its digits when it is tiny), 1 - alpha_bar_t as -expm1(sum log1p(-beta)).
    beta = betas[t_value - 1]
    one_minus_ab = -np.expm1(np.sum(np.log1p(-betas[:t_value])))
    gap = beta / (np.sqrt(1.0 - beta) * np.sqrt(one_minus_ab)) * (eps_theta.numpy() - noise.numpy())
    values = Schedule(betas).at(np.array(t_value))
    want = evaluate(learned_variance.learned_kl, {"v": v.numpy(), r"\Delta_t": gap, **values})
    want = want.reshape(n, -1).sum(axis=1)
    assert_allclose(got, want, rtol=1e-9, atol=1e-12,
                    err_msg=f"learned L_(t-1) vs derivation (k), t = {t_value}, T = {T}")


@settings(max_examples=30, deadline=None)
@given(betas=strategies.schedules(min_T=2, max_T=400), u=strategies.fractions, seed=st.integers(0, 2**31 - 1))
@example(betas=make_betas("linear", 1000), u=0.0, seed=0)
def test_v_plus_and_minus_one_are_the_fixed_variances(betas, u, seed):
    """v = 1 is beta_t and v = -1 is beta_tilde_t in every bound term (t >= 2); at t = 1 v = 1 is the beta_1 decoder."""
    T = betas.shape[0]
    t_value = strategies.timestep_from_fraction(u, T)
    rng = np.random.default_rng(seed)
    n, dims = 2, (1, 2, 3)
    x0 = grid_data((n, *dims), seed)
    noise = torch.tensor(rng.standard_normal((n, *dims)))
    eps_theta = torch.tensor(rng.standard_normal((n, *dims)))
    d = GaussianDiffusion(betas)
    t = torch.full((n,), t_value)
    xt = forward_sample(d, x0, t, noise)
    ones = torch.ones_like(x0)
    if t_value >= 2:
        for (v, fixed), clip in itertools.product(((ones, ReverseVariance.BETA), (-ones, ReverseVariance.BETA_TILDE)),
                                                  (False, True)):
            got = kl_terms(d, LEARNED, BoundRows(x0, xt, t, noise), NetworkOutput(eps_theta, v), clip_x0=clip).numpy()
            want = kl_terms(d, fixed, BoundRows(x0, xt, t, noise), NetworkOutput(eps_theta), clip_x0=clip).numpy()
            assert_allclose(got, want, rtol=1e-9, atol=1e-10,
                            err_msg=f"v = {float(v.flatten()[0])} vs {fixed.value}, clip_x0 = {clip}")
    else:
        for clip in (False, True):
            got = decoder_terms(d, LEARNED, pixel_index(x0), xt, t, eps_theta, clip, ones).numpy()
            want = decoder_terms(d, ReverseVariance.BETA, pixel_index(x0), xt, t, eps_theta, clip).numpy()
            assert_allclose(got, want, **FLOAT64.kwargs(), err_msg=f"decoder, v = 1 vs beta_1, clip_x0 = {clip}")
        # v = -1 at t = 1: improved-diffusion's beta_tilde_2 (beta_tilde_1 = 0), from the betas here.
        one_minus = -np.expm1(np.cumsum(np.log1p(-betas)))  # 1 - alpha_bar_t, t = 1..T
        beta_tilde_2 = one_minus[0] / one_minus[1] * betas[1] if T >= 2 else np.nan
        _, var = d.p_mean_variance(eps_theta, xt, t, "learned", v=-ones)
        assert_allclose(var.numpy(), np.full(var.shape, beta_tilde_2), rtol=1e-12, err_msg="t = 1, v = -1")


@pytest.mark.statistical
def test_learned_kl_matches_its_monte_carlo_estimate(seed_base):
    """KL(q || p_theta) = E_q[log q(x_{t-1}) - log p_theta(x_{t-1})], estimated from posterior samples.

    For each of several (t, v) the kernel's value is compared with the mean of N log-ratios (z-test with the sample
    standard error, N = 20000); Holm over the comparisons at ALPHA.
    """
    rng = np.random.default_rng(seed_base + 811)
    betas = make_betas("linear", 1000)
    d = GaussianDiffusion(betas)
    family = Family("learned KL vs Monte Carlo", ALPHA)
    dims, N = (1, 2, 2), 20_000
    for t_value in (2, 10, 200, 900):
        for v_level in (-1.5, 0.0, 0.7):
            x0 = grid_data((1, *dims), int(rng.integers(2**31)))
            noise = torch.tensor(rng.standard_normal((1, *dims)))
            eps_theta = noise + torch.tensor(rng.normal(0.0, 0.3, (1, *dims)))
            v = torch.tensor(v_level + rng.normal(0.0, 0.2, (1, *dims)))
            t = torch.full((1,), t_value)
            xt = forward_sample(d, x0, t, noise)
            kernel = float(kl_terms(d, LEARNED, BoundRows(x0, xt, t, noise), NetworkOutput(eps_theta, v),
                                    clip_x0=False)[0])
            mean_q, var_q = d.q_posterior_mean_variance(x0, xt, t)
            mean_p, var_p = d.p_mean_variance(eps_theta, xt, t, "learned", v=v)
            q = torch.distributions.Normal(mean_q, var_q.sqrt())
            p = torch.distributions.Normal(mean_p, var_p.sqrt())
            z = torch.tensor(rng.standard_normal((N, *mean_q.shape)))  # [N, 1, ...]
            samples = mean_q + var_q.sqrt() * z
            log_ratio = (q.log_prob(samples) - p.log_prob(samples)).reshape(N, -1).sum(dim=1).numpy()
            family.z_test(f"t = {t_value}, v ~ {v_level}", log_ratio.mean(), kernel,
                          log_ratio.std(ddof=1) / np.sqrt(N))
    family.check()


# ----------------------------------------------------------------------------------------- hybrid objective
def test_hybrid_stop_gradient_trains_the_mean_by_simple_and_the_variance_by_vlb():
    T = 12
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = grid_data((8, 1, 2, 2), 3)
    g = torch.Generator().manual_seed(4)
    t = torch.tensor([1, 2, 3, 5, 7, 9, 11, 12])  # decoder and KL rows
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    model = SplitModel(T)

    def grads(objective):
        model.zero_grad()
        loss = training_loss_at(model, d, x0, t, noise, objective, "learned")
        loss.backward()
        return {name: p.grad.detach().clone() for name, p in model.named_parameters()}, loss.detach()

    simple, _ = grads("simple")
    vlb, vlb_value = grads("vlb")
    hybrid, hybrid_value = grads("hybrid")
    _, simple_value = grads("simple")
    assert_allclose(hybrid_value.item(), simple_value.item() + HYBRID_VLB_WEIGHT * T * vlb_value.item(),
                    **FLOAT64.kwargs(), err_msg="hybrid = simple + lambda T vlb")
    for name in ("w", "b"):  # the mean's parameters: L_simple's gradient alone
        assert_allclose(hybrid[name].numpy(), simple[name].numpy(), **FLOAT64.kwargs(),
                        err_msg=f"d hybrid / d {name} must be d simple / d {name} (stop-gradient)")
        assert not np.allclose(vlb[name].numpy(), 0.0), f"vlb alone must pull on the mean ({name})"
    assert float(simple["c"].abs().sum()) == 0.0, "L_simple gives the variance output no gradient"
    assert float(hybrid["c"].abs().sum()) > 0.0
    assert_allclose(hybrid["c"].numpy(), HYBRID_VLB_WEIGHT * T * vlb["c"].numpy(), **FLOAT64.kwargs(),
                    err_msg="d hybrid / d v = lambda T d vlb / d v")


def test_hybrid_with_a_fixed_variance_keeps_the_mean_gradient():
    T = 12
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = grid_data((6, 1, 2, 2), 5)
    t = torch.tensor([1, 2, 4, 6, 8, 12])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(6), dtype=torch.float64)

    def eps_only(xt, tt):
        return model(xt, tt)[:, :1]

    model = SplitModel(T)
    simple = torch.autograd.grad(training_loss_at(eps_only, d, x0, t, noise, "simple"), model.w)[0]
    hybrid = torch.autograd.grad(training_loss_at(eps_only, d, x0, t, noise, "hybrid", "beta"), model.w)[0]
    assert not np.allclose(hybrid.numpy(), simple.numpy()), "a fixed-variance hybrid's vlb term trains the mean"


def test_decoder_trains_mean_replaces_simple_by_l0_at_t1_only():
    """With decoder_trains_mean, w[1] (used by the t = 1 rows only) gets lambda T times L_0's gradient through the
    mean and no L_simple; every other parameter gets the plain hybrid's gradient; the value drops L_simple's t = 1
    rows."""
    T = 12
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = grid_data((8, 1, 2, 2), 3)
    t = torch.tensor([1, 2, 1, 5, 7, 1, 11, 12])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    model = SplitModel(T)

    def grads(objective, **kwargs):
        model.zero_grad()
        loss = training_loss_at(model, d, x0, t, noise, objective, "learned", **kwargs)
        loss.backward()
        return {name: p.grad.detach().clone() for name, p in model.named_parameters()}, loss.detach()

    hybrid, hybrid_value = grads("hybrid")
    decoder, decoder_value = grads("hybrid", decoder_trains_mean=True)
    vlb, _ = grads("vlb")
    eps, _ = model_output(model, forward_sample(d, x0, t, noise), t)
    per_image = ((noise - eps.detach()) ** 2).reshape(8, -1).mean(dim=1)
    assert_allclose(decoder_value.item(), hybrid_value.item() - per_image[t == 1].sum().item() / 8,
                    **FLOAT64.kwargs(), err_msg="the t = 1 rows lose their L_simple term, nothing else changes")
    assert_allclose(decoder["w"][1].item(), HYBRID_VLB_WEIGHT * T * vlb["w"][1].item(), **FLOAT64.kwargs(),
                    err_msg="at t = 1 the mean is trained by lambda T L_0")
    assert abs(vlb["w"][1].item()) > 0.0
    others = [k for k in range(T + 1) if k != 1]
    assert_allclose(decoder["w"][others].numpy(), hybrid["w"][others].numpy(), **FLOAT64.kwargs(),
                    err_msg="rows with t >= 2 keep the hybrid's gradient (L_simple trains their mean)")
    assert_allclose(decoder["c"].numpy(), hybrid["c"].numpy(), **FLOAT64.kwargs(),
                    err_msg="the variance's gradient is the hybrid's")


def test_decoder_trains_mean_moves_an_edge_pixel_mean_past_the_edge():
    """At eps_theta = eps (mean exactly x_0 = -1, L_simple's optimum) the plain hybrid's gradient on eps vanishes at
    t = 1, while L_0 still falls as the mean moves below -1: its gradient raises eps_theta, which lowers the mean."""
    T = 12
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = torch.full((4, 1, 2, 2), -1.0, dtype=torch.float64)
    t = torch.ones(4, dtype=torch.int64)
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    out = torch.nn.Parameter(torch.cat([noise.clone(), torch.zeros_like(noise)], dim=1))

    def grad(**kwargs):
        out.grad = None
        training_loss_at(lambda xt, tt: out, d, x0, t, noise, "hybrid", "learned", **kwargs).backward()
        return out.grad[:, :1].clone()

    assert float(grad().abs().max()) == 0.0, "plain hybrid: L_simple at its minimum, L_vlb behind a stop-gradient"
    assert bool((grad(decoder_trains_mean=True) < 0).all()), "L_0 pushes eps_theta up, the mean below -1"


def test_decoder_trains_mean_needs_the_hybrid_objective():
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, 12))
    x0 = grid_data((2, 1, 2, 2), 1)
    t = torch.tensor([1, 2])
    noise = torch.zeros_like(x0)
    model = SplitModel(12)
    for objective in ("simple", "vlb"):
        with pytest.raises(ValueError, match="decoder_trains_mean needs the 'hybrid' objective"):
            training_loss_at(model, d, x0, t, noise, objective, "learned", decoder_trains_mean=True)
    with pytest.raises(ValueError, match="decoder_trains_mean must be a bool"):
        training_loss_at(model, d, x0, t, noise, "hybrid", "learned", decoder_trains_mean=1)
    with pytest.raises(ValueError, match="decoder_trains_mean needs the 'hybrid' objective"):
        get_preset("tiny").training.replace(decoder_trains_mean=True)


# ------------------------------------------------------------------------------------------------- samplers
def test_ancestral_sampler_with_v_at_the_ends_is_the_fixed_sampler():
    T = 40
    d = GaussianDiffusion(make_betas("linear", T))
    base = SplitModel(T)

    def eps_model(xt, t):
        return base(xt, t)[:, :1]

    shape = (3, 1, 2, 2)
    for v, fixed in ((1.0, "beta"), (-1.0, "beta_tilde")):
        got = ancestral_sample(ConstantV(eps_model, v), d, shape, torch.Generator().manual_seed(7), "learned",
                               progress=False, dtype=torch.float64).x0
        want = ancestral_sample(eps_model, d, shape, torch.Generator().manual_seed(7), fixed, progress=False,
                                dtype=torch.float64).x0
        assert_allclose(got.numpy(), want.numpy(), rtol=1e-10, atol=1e-12, err_msg=f"v = {v} vs {fixed}")
        strided = strided_sample(ConstantV(eps_model, v), d, shape, torch.Generator().manual_seed(7), T,
                                 "learned", progress=False, dtype=torch.float64).x0
        assert_allclose(strided.numpy(), want.numpy(), rtol=1e-10, atol=1e-12,
                        err_msg=f"strided S = T, v = {v} vs Algorithm 2 with {fixed}")


def test_learned_sampler_noise_is_per_dimension():
    """One step t -> t - 1 with v differing between two pixels scales each pixel's noise by its own sigma."""
    T = 50
    d = GaussianDiffusion(make_betas("linear", T))
    xt = torch.zeros(1, 1, 1, 2, dtype=torch.float64)
    eps = torch.zeros_like(xt)
    z = torch.ones_like(xt)
    v = torch.tensor([[[[1.0, -1.0]]]], dtype=torch.float64)
    t = torch.tensor([T])
    out = d.p_sample(eps, xt, t, z, "learned", v=v)
    assert_allclose(out.reshape(-1).numpy(),
                    [np.sqrt(d.reverse_variance("beta")[T].item()),
                     np.sqrt(d.reverse_variance("beta_tilde")[T].item())],
                    rtol=1e-12, err_msg="per-pixel sigma: beta_T at v = 1, beta_tilde_T at v = -1")


# ------------------------------------------------------------------------------------------- model and errors
def test_unet_with_learned_variance_outputs_eps_and_v():
    preset = get_preset("tiny")
    model = build_unet(preset.model.replace(learn_variance=True), 1, 8, 100)
    plain = build_unet(preset.model, 1, 8, 100)
    x = torch.randn(3, 1, 8, 8)
    t = torch.tensor([1, 50, 100])
    out = model(x, t)
    assert out.shape == (3, 2, 8, 8)
    eps, v = model_output(model, x, t)
    assert eps.shape == v.shape == x.shape
    assert float(out.detach().abs().max()) == 0.0, "zero-initialised: eps = 0, v = 0"
    extra = sum(p.numel() for p in model.parameters()) - sum(p.numel() for p in plain.parameters())
    conv = plain.output_conv
    assert extra == conv.in_channels * 9 + 1, "only the output convolution grows (one more output channel)"


def test_learned_variance_errors_are_clear():
    d = GaussianDiffusion(make_betas("linear", 10, rescale=False))
    x0 = grid_data((2, 1, 2, 2), 0)
    t = torch.tensor([3, 4])
    noise = torch.zeros_like(x0)
    with pytest.raises(ValueError, match="'learned' reverse variance is per dimension.*no table"):
        d.reverse_variance("learned")
    with pytest.raises(ValueError, match="needs a model that outputs it"):
        training_loss_at(lambda x, tt: x, d, x0, t, noise, "hybrid", "learned")
    with pytest.raises(ValueError, match="needs the network's variance output v"):
        d.p_sample(x0, x0, t, noise, "learned")
    from ddpm.core.bound import elbo_terms

    with pytest.raises(ValueError, match=r"needs a model that outputs it \(ModelConfig.learn_variance"):
        elbo_terms(lambda x, tt: x, d, x0, torch.Generator(), variance="learned")
    with pytest.raises(ValueError, match="strided sampling offers .* 'optimal'"):
        strided_sample(lambda x, tt: x, d.with_optimal_variance(np.ones(10)), (1, 1, 2, 2), torch.Generator(), 5,
                       "optimal", progress=False)
    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="learn_variance needs the 'hybrid' or 'vlb' objective"):
        tiny.replace(model=tiny.model.replace(learn_variance=True))
    with pytest.raises(ValueError, match="evaluation variance 'learned' needs a model with learn_variance"):
        tiny.replace(evaluation=tiny.evaluation.replace(variance="learned"))


# ------------------------------------------------------------------------------------------------ end to end
@pytest.fixture(scope="module")
def learned_run(tmp_path_factory):
    from ddpm.training.trainer import TrainOptions, train

    tiny = get_preset("tiny")
    preset = tiny.replace(model=tiny.model.replace(learn_variance=True),
                          training=tiny.training.replace(objective="hybrid"),
                          evaluation=tiny.evaluation.replace(variance="learned"))
    run = tmp_path_factory.mktemp("learned") / "run"
    with one_thread():
        train("digits", run, preset, options=TrainOptions(seed=3, max_steps=5), progress=False)
    return run


def test_learned_run_is_evaluated_under_every_variance(learned_run, tmp_path):
    from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint

    overrides = EvaluationOverrides(skip_fid=True, elbo_exact_images=2, elbo_mc_images=8, gamma_images_per_t=2)
    result = evaluate_checkpoint(learned_run / "checkpoint.pt", tmp_path / "eval", overrides, progress=False)
    by_variance = result.metrics["elbo_exact_by_variance"]
    assert set(by_variance) == {"beta", "beta_tilde", "optimal", "learned"}
    assert result.metrics["elbo_variance"] == "learned"
    assert all(np.isfinite(entry["bits_per_dim"]) for entry in by_variance.values())


def test_sample_cli_with_the_learned_variance(learned_run, tmp_path, capsys):
    from ddpm.cli import main

    assert main(["sample", "--checkpoint", str(learned_run / "checkpoint.pt"), "--num", "3", "--variance", "learned",
                 "--out", str(tmp_path / "s.png"), "--no-progress"]) == 0
    assert (tmp_path / "s.png").is_file()
    assert main(["sample", "--checkpoint", str(learned_run / "checkpoint.pt"), "--num", "3", "--variance", "learned",
                 "--sampler", "strided", "--steps", "10", "--out", str(tmp_path / "t.png"), "--no-progress"]) == 0


def test_sample_cli_refuses_learned_for_a_fixed_variance_checkpoint(tmp_path, capsys):
    from ddpm.cli import main
    from ddpm.training.trainer import TrainOptions, train

    run = tmp_path / "fixed"
    train("digits", run, "tiny", options=TrainOptions(seed=1, max_steps=1), progress=False)
    code = main(["sample", "--checkpoint", str(run / "checkpoint.pt"), "--num", "2", "--variance", "learned",
                 "--out", str(tmp_path / "x.png"), "--no-progress"])
    err = capsys.readouterr().err
    assert code != 0 and "needs a checkpoint whose model learns its variance" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1


def test_options_study_writes_its_table(tmp_path, capsys):
    from ddpm.studies.options_study import main

    out = tmp_path / "study"
    assert main(["--out", str(out), "--steps", "2", "--fid-samples", "4", "--exact-images", "2", "--data", "digits",
                 "--preset", "tiny", "--options", "fixed-linear,learned-cosine", "--no-progress"]) == 0
    table = (out / "study.md").read_text()
    rows = [line for line in table.splitlines() if line.startswith("| fixed-linear") or line.startswith("| learned-")]
    assert len(rows) == 2 and "n/a" in rows[0] and "n/a" not in rows[1].split("|")[6], table
    # Each option's run records the study's command (python -m ddpm.studies.options_study ...), not the process's.
    run = json.loads((out / "fixed-linear" / "run.json").read_text())
    metrics = json.loads((out / "fixed-linear" / "metrics.json").read_text())
    assert " ".join(run["command"]) == metrics["command"]
    assert metrics["command"].startswith("python -m ddpm.studies.options_study --out ")
    assert main(["--out", str(out), "--options", "nonsense"]) == 2
    assert "unknown option(s) ['nonsense']" in capsys.readouterr().err


# ------------------------------------------------------------------------------------ small-t draws for L_vlb
def test_training_timesteps_without_the_mixture_are_algorithm_1():
    from ddpm.core.diffusion import uniform_timesteps
    from ddpm.core.losses import training_timesteps

    t, weights = training_timesteps(64, 1000, torch.Generator().manual_seed(3), torch.device("cpu"))
    assert weights is None
    assert torch.equal(t, uniform_timesteps(64, 1000, torch.Generator().manual_seed(3), torch.device("cpu")))


@pytest.mark.parametrize("m, T", [(0.25, 1000), (0.5, 12), (0.1, 4)])
def test_small_t_weights_keep_l_simple_unbiased(m, T):
    """p(t) w(t) = 1 / T for every t, so E_p[w(t) f(t)] = mean_t f(t) (exact, enumerating t)."""
    from ddpm.core.losses import SMALL_T_MAX, training_timesteps

    K = min(SMALL_T_MAX, T)
    t, weights = training_timesteps(20_000, T, torch.Generator().manual_seed(4), torch.device("cpu"), m)
    p = (1 - m) / T + m * (np.arange(1, T + 1) <= K) / K  # [T], the documented mixture
    assert_allclose(p.sum(), 1.0, rtol=1e-12)
    w_of_t = np.full(T + 1, np.nan)
    w_of_t[t.numpy()] = weights.numpy()
    seen = np.unique(t.numpy())
    assert_allclose(w_of_t[seen] * p[seen - 1], 1.0 / T, rtol=1e-6, err_msg="w(t) = (1/T) / p(t)")
    # The draws follow p: P(t <= K) against its binomial standard error (alpha 1e-3, one comparison).
    from scipy import stats

    k = int((t <= K).sum())
    result = stats.binomtest(k, t.numel(), float(p[:K].sum()))
    assert result.pvalue > ALPHA, f"P(t <= {K}): {k / t.numel():.4f} vs {p[:K].sum():.4f}, p = {result.pvalue:.2g}"


def test_small_t_fraction_needs_the_hybrid_objective_and_a_learned_variance():
    tiny = get_preset("tiny")
    with pytest.raises(ValueError, match="small_t_fraction needs the 'hybrid' objective"):
        tiny.training.replace(small_t_fraction=0.2)
    with pytest.raises(ValueError, match="small_t_fraction needs a learned-variance model"):
        tiny.replace(training=tiny.training.replace(objective="hybrid", small_t_fraction=0.2))
    with pytest.raises(ValueError, match=r"small_t_fraction must be in \[0, 1\)"):
        tiny.training.replace(objective="hybrid", small_t_fraction=1.0)


def test_weighted_simple_term_is_the_weighted_mean():
    T = 12
    d = GaussianDiffusion(np.linspace(1e-3, 0.3, T))
    x0 = grid_data((4, 1, 2, 2), 9)
    t = torch.tensor([1, 3, 7, 12])
    noise = torch.randn(x0.shape, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    model = SplitModel(T)
    w = torch.tensor([0.5, 2.0, 1.0, 0.25])
    got = training_loss_at(model, d, x0, t, noise, "simple", "learned", w)
    eps = model(forward_sample(d, x0, t, noise), t)[:, :1]
    want = (w.double() * ((noise - eps) ** 2).reshape(4, -1).mean(dim=1)).mean()
    assert_allclose(got.item(), want.item(), **FLOAT64.kwargs())


def test_options_study_keeps_earlier_rows_of_the_same_settings(tmp_path):
    import json

    # private: the study's row lookup is under test, the study itself is too slow here
    from ddpm.studies.options_study import _earlier_rows

    settings = {"steps": 5, "seed": 0, "fid_samples": 4, "exact_images": 2, "data": "digits", "preset": "tiny"}
    rows = [{"option": "fixed-linear"}, {"option": "learned-linear"}]
    (tmp_path / "study.json").write_text(json.dumps({"settings": settings, "rows": rows}))
    assert _earlier_rows(tmp_path, settings, ["learned-linear"]) == [{"option": "fixed-linear"}]
    assert _earlier_rows(tmp_path, {**settings, "steps": 6}, []) == [], "other settings are not mixed in"
    assert _earlier_rows(tmp_path / "none", settings, []) == []
