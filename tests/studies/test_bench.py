"""The bench (ddpm/studies/bench.py): its ratios come from its raw figures, its baselines compute what ours computes.

- A tiny bench run (tiny preset on sklearn digits, T = 100, a few images and updates) writes bench.json and bench.md
  with the documented keys; every ratio is recomputed here from the raw per-round throughputs; bench.md is
  generated from bench.json. Without diffusers (as in `nox -s verify`) the two diffusers comparisons are null.
- The per-timestep loop (improved-diffusion's calc_bpd_loop through our public functions) gives elbo_terms' terms.
- With diffusers installed: its DDPMScheduler loop, fed our float64 schedule and the same generator, is Algorithm 2
  (fixed_large <-> sigma_t^2 = beta_t, fixed_small <-> beta_tilde_t, step s <-> t = s + 1), and add_noise is q_sample.
"""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.core.bound import elbo_terms
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.samplers import ancestral_sample
from ddpm.studies.bench import (
    BENCH_JSON,
    BENCH_MD,
    BENCH_MODES,
    RATIO_NAMES,
    BenchConfig,
    BenchError,
    alternating_rounds,
    bench_markdown,
    compute_ratios,
    elbo_terms_loop,
    median_ratio,
    run_bench,
)
from testkit import tolerances
from testkit.doubles import STEEP_SLOPES, ToyEps, grid_data

F64 = tolerances.FLOAT64.kwargs()

try:
    import diffusers  # noqa: F401

    HAVE_DIFFUSERS = True
except ImportError:
    HAVE_DIFFUSERS = False
needs_diffusers = pytest.mark.skipif(not HAVE_DIFFUSERS, reason="diffusers is not installed (the `bench` extra)")


def tiny_config(**changes) -> BenchConfig:
    """Seconds, not minutes: tiny preset (8x8 digits, T = 100), 2 images a batch, 2 rounds of everything."""
    config = BenchConfig(preset="tiny", data="digits", threads=1, sample_batch=2, sample_repeats=2,
                         compile_sampler=False, train_steps=2,
                         train_repeats=2, bound_images=2, bound_batch_sizes=(50, 200), bound_repeats=2,
                         checkpoint=None, fallback_train_minutes=None, fallback_train_steps=3, mc_images=64,
                         mc_exact_images=2, verify=False, fid_images=2, fid_repeats=2, peak_matmul_size=128,
                         peak_repeats=2)
    return config.replace(**changes)


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("bench")
    record = run_bench(tiny_config(), out, command="pytest tiny bench", mode="custom")
    return out, record


# ------------------------------------------------------------------------------------- the bench record
def test_tiny_bench_writes_both_files_with_the_documented_keys(tiny_run):
    out, record = tiny_run
    stored = json.loads((out / BENCH_JSON).read_text())
    for key in ("format_version", "mode", "command", "config", "machine", "model", "sampling", "training",
                "exact_bound", "monte_carlo", "peak", "utilisation", "verify", "ratios", "targets", "wall_seconds"):
        assert key in stored, f"bench.json lacks {key!r}"
    assert set(RATIO_NAMES) <= set(stored["ratios"])
    for key in ("cpu_model", "cpus_usable", "torch_threads", "torch", "device"):
        assert key in stored["machine"], f"machine description lacks {key!r}"
    assert stored["machine"]["torch_threads"] == 1, "threads=1 must be in force during the run"
    assert stored["sampling"]["T"] == 100 and stored["sampling"]["batch"] == 2
    assert stored["command"] == "pytest tiny bench"
    assert (out / BENCH_MD).read_text() == bench_markdown(stored), "bench.md must be generated from bench.json"


def test_tiny_bench_ratios_are_the_raw_figures_ratios(tiny_run):
    _, record = tiny_run
    ratios = record["ratios"]
    s, tr, b, mc, u = (record[k] for k in ("sampling", "training", "exact_bound", "monte_carlo", "utilisation"))
    if HAVE_DIFFUSERS:
        expected = np.median(np.array(s["ours_images_per_second"]) / np.array(s["diffusers_images_per_second"]))
        assert_allclose(ratios["sampling_vs_diffusers"], expected, **F64)
        expected = np.median(np.array(tr["ours_images_per_second"]) / np.array(tr["diffusers_images_per_second"]))
        assert_allclose(ratios["train_step_vs_diffusers"], expected, **F64)
        assert len(s["ours_images_per_second"]) == len(s["diffusers_images_per_second"]) == 2
    else:
        assert ratios["sampling_vs_diffusers"] is None and ratios["train_step_vs_diffusers"] is None
        assert "not installed" in s["skipped"] and "not installed" in tr["skipped"]
    # Sampling against the raw forward at the same batch: T network inputs per sampled image.
    per_round = 100 * np.array(s["ours_images_per_second"]) / np.array(s["forward_images_per_second"])
    assert_allclose(ratios["sampling_vs_forward"], np.median(per_round), **F64)
    # Inception features: ours over torch-fidelity's pipeline, and both over the peak.
    f = record["fid_features"]
    assert_allclose(ratios["fid_features_vs_torch_fidelity"],
                    np.median(np.array(f["ours_images_per_second"]) / np.array(f["torch_fidelity_images_per_second"])),
                    **F64)
    assert_allclose(u["fid_features_ours"], f["flops_per_image"] * np.median(f["ours_images_per_second"])
                    / record["peak"]["flops_per_second"], **F64)
    assert 5e9 < f["flops_per_image"] < 2e10, "Inception-v3 at 299 x 299 is ~5.7 G multiply-adds"
    # The best batch size is the one with the highest median bound throughput; the ratio is taken there.
    medians = {row["batch_size"]: np.median(row["bound_rows_per_second"]) for row in b["sweep"]}
    assert b["best_batch_size"] == max(medians, key=medians.get)
    best = next(row for row in b["sweep"] if row["batch_size"] == b["best_batch_size"])
    per_round = np.array(best["bound_rows_per_second"]) / np.array(best["forward_rows_per_second"])
    assert_allclose(ratios["exact_bound_vs_forward"], np.median(per_round), **F64)
    loop = b["loop"]
    assert_allclose(ratios["exact_bound_vs_loop"],
                    np.median(np.array(loop["ours_rows_per_second"]) / np.array(loop["loop_rows_per_second"])), **F64)
    # Monte Carlo: draws = ceil(variance / target^2), plus the exact subset's T calls per image.
    imp = mc["importance"]
    assert imp["draws_for_target"] == math.ceil(imp["per_draw_variance"] / mc["target_stderr_bits_per_dim"] ** 2)
    assert imp["network_calls_for_target"] == imp["draws_for_target"] + mc["exact_subset_images"] * mc["T"]
    assert_allclose(imp["per_draw_variance"], imp["stderr"] ** 2 * mc["measured_on_images"], **F64)
    assert mc["exact_network_calls"] == 297 * 100, "the exact sum costs T calls per test image (297 digits)"
    assert_allclose(ratios["mc_bound_speedup"], mc["exact_network_calls"] / imp["network_calls_for_target"], **F64)
    # Utilisation: FLOPs per image x T network calls per sample x samples/s over the peak.
    expected = u["forward_flops_per_image"] * 100 * np.median(s["ours_images_per_second"]) / record["peak"][
        "flops_per_second"]
    assert_allclose(ratios["utilisation"], expected, **F64)
    assert record["peak"]["flops_per_second"] == max(record["peak"]["before"]["flops_per_second"],
                                                     record["peak"]["after"]["flops_per_second"])
    assert 0 < u["forward_flops_per_image"] < u["training_flops_per_image"]


def test_tiny_bench_cross_checks_agree(tiny_run):
    _, record = tiny_run
    loop = record["exact_bound"]["loop"]
    # Both sides run the float32 network, on differently composed batches, so eps_theta agrees to float32 rounding
    # only: the tolerance is float32's. A float64 one failed when only the trained weights changed
    # (3.3e-9 against 1.6e-9 bits/dim); a missing or misweighted term would differ by orders of magnitude more.
    tolerance = tolerances.FLOAT32.rtol * abs(loop["bits_per_dim"]) + tolerances.FLOAT32.atol
    assert loop["max_abs_difference_bits_per_dim"] <= tolerance, "elbo_terms and the per-timestep loop must agree"
    if HAVE_DIFFUSERS:
        cross = record["sampling"]["cross_check"]
        tolerance = tolerances.DIFFUSERS_FLOAT32_SCHEDULE
        assert cross["max_abs_difference"] <= tolerance.atol + tolerance.rtol * cross["max_abs_sample"], cross


@pytest.fixture(scope="module")
def learned_checkpoint(tmp_path_factory):
    """A tiny learned-variance model (2 output channels, hybrid objective) trained for 3 updates on digits."""
    from ddpm.training.config import get_preset
    from ddpm.training.trainer import train

    tiny = get_preset("tiny")
    preset = tiny.replace(model=tiny.model.replace(learn_variance=True),
                          training=tiny.training.replace(objective="hybrid", max_steps=3),
                          evaluation=tiny.evaluation.replace(variance="learned"))
    return train("digits", tmp_path_factory.mktemp("learned") / "run", preset, progress=False).checkpoint_path


def test_cli_bench_quick_runs_on_a_learned_variance_checkpoint(learned_checkpoint, tmp_path, capsys):
    """`python -m ddpm bench --quick` on the model shape `nox -s train_small` writes (a 2C-channel output): both
    sides sample with the learned variance (diffusers, where installed, with its learned_range variance type)."""
    from ddpm.cli import main

    out = tmp_path / "bench"
    assert main(["bench", "--quick", "--checkpoint", str(learned_checkpoint), "--out", str(out), "--threads", "1"]) == 0
    record = json.loads((out / BENCH_JSON).read_text())
    assert record["model"]["source"] == "checkpoint" and record["model"]["preset"] == "tiny"
    sampling = record["sampling"]
    assert sampling["variance"] == "learned" and sampling["T"] == 100
    assert record["ratios"]["sampling_vs_forward"] > 0
    if HAVE_DIFFUSERS:
        assert sampling["diffusers_variance_type"] == "learned_range"
        tolerance = tolerances.DIFFUSERS_FLOAT32_SCHEDULE
        cross = sampling["cross_check"]
        assert cross["max_abs_difference"] <= tolerance.atol + tolerance.rtol * cross["max_abs_sample"], cross
        assert record["ratios"]["train_step_vs_diffusers"] > 0
    assert "bench.json" in capsys.readouterr().out


@needs_diffusers
@pytest.mark.parametrize("T", [2, 25])
def test_diffusers_learned_range_loop_is_algorithm2_with_the_learned_variance(T):
    """diffusers' learned_range (its float32 tables replaced by our float64 ones) is our "learned" variance."""
    from ddpm.studies.bench import diffusers_ancestral_sample

    betas = np.linspace(1e-3, 0.3, T)
    diffusion = GaussianDiffusion(betas)
    scheduler = float64_scheduler(diffusion, "learned")
    assert scheduler.config.variance_type == "learned_range"
    eps = ToyEps(T, STEEP_SLOPES)

    def model(xt, t):  # [B, 2C]: eps, then v = sin(x) in [-1, 1], per dimension
        return torch.cat([eps(xt, t), torch.sin(3.0 * xt)], dim=1)

    shape = (3, 1, 2, 2)
    ours = ancestral_sample(model, diffusion, shape, torch.Generator().manual_seed(11), variance="learned",
                            progress=False, dtype=torch.float64).x0
    theirs = diffusers_ancestral_sample(model, scheduler, shape, torch.Generator().manual_seed(11),
                                        dtype=torch.float64)
    assert_allclose(theirs.numpy(), ours.numpy(), **F64,
                    err_msg="diffusers' learned_range loop != Algorithm 2 with the learned variance")


def test_compute_ratios_from_made_up_figures():
    record = {
        "sampling": {"T": 10, "ours_images_per_second": [2.0, 3.0, 5.0], "diffusers_images_per_second": [1.0, 3.0, 4.0],
                     "ours_compiled_images_per_second": [3.0, 6.0, 5.0]},
        "training": {"ours_images_per_second": [9.0, 8.0], "diffusers_images_per_second": [3.0, 2.0]},
        "exact_bound": {
            "best_batch_size": 20,
            "sweep": [
                {"batch_size": 10, "bound_rows_per_second": [1.0], "forward_rows_per_second": [10.0]},
                {"batch_size": 20, "bound_rows_per_second": [9.0], "forward_rows_per_second": [10.0]},
            ],
            "loop": {"ours_rows_per_second": [50.0], "loop_rows_per_second": [5.0]},
        },
        "monte_carlo": {"exact_network_calls": 1000, "importance": {"network_calls_for_target": 40}},
        "utilisation": {"sampling_ours": 0.5},
    }
    ratios = compute_ratios(record)
    assert ratios["sampling_vs_diffusers"] == 1.25  # per-round ratios 2, 1, 1.25: median 1.25 (mean would be 1.42)
    assert ratios["train_step_vs_diffusers"] == 3.5  # 3 and 4
    assert ratios["exact_bound_vs_forward"] == 0.9  # at the best batch size, not the first
    assert ratios["exact_bound_vs_loop"] == 10.0
    assert ratios["mc_bound_speedup"] == 25.0
    assert ratios["utilisation"] == 0.5
    assert ratios["sampling_compiled_vs_diffusers"] == 2.0  # 3, 2, 1.25
    assert ratios["sampling_compiled_vs_eager"] == 1.5  # 1.5, 2, 1
    assert ratios["sampling_vs_forward"] is None, "no raw-forward figure, no ratio"
    record["sampling"]["forward_images_per_second"] = [40.0, 20.0, 60.0]  # per round: 0.5, 1.5, 0.83
    assert compute_ratios(record)["sampling_vs_forward"] == pytest.approx(50.0 / 60.0)
    record["sampling"].pop("diffusers_images_per_second")
    assert compute_ratios(record)["sampling_vs_diffusers"] is None


def test_alternating_rounds_alternate_and_median_ratio():
    calls = []
    results = alternating_rounds({"a": lambda r: calls.append(("a", r)) or r, "b": lambda r: calls.append(("b", r))},
                                 3)
    assert calls == [("a", 0), ("b", 0), ("b", 1), ("a", 1), ("a", 2), ("b", 2)]
    assert results["a"] == [0, 1, 2]
    assert median_ratio([4.0, 1.0], [2.0, 1.0]) == 1.5
    assert math.isnan(median_ratio([], []))


def test_bench_config_errors_and_modes():
    with pytest.raises(BenchError, match="sample_batch must be a positive int"):
        BenchConfig(sample_batch=0)
    with pytest.raises(BenchError, match="bound_batch_sizes"):
        BenchConfig(bound_batch_sizes=())
    with pytest.raises(ValueError, match="unknown preset 'huge'"):
        BenchConfig(preset="huge")
    full, quick = BENCH_MODES["full"], BENCH_MODES["quick"]
    assert full.preset == quick.preset == "small" and full.verify and not quick.verify
    assert quick.sample_batch * quick.sample_repeats < full.sample_batch * full.sample_repeats


# ------------------------------------------------------------------------------------ the bound baseline
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32])
def test_per_timestep_loop_equals_elbo_terms(dtype):
    T = 15
    betas = np.linspace(1e-3, 0.3, T)
    diffusion = GaussianDiffusion(betas)
    x0 = grid_data((3, 1, 2, 2), 0).to(dtype)
    model = ToyEps(T, STEEP_SLOPES)
    ours = elbo_terms(model, diffusion, x0, torch.Generator().manual_seed(4), batch_size=7)
    loop = elbo_terms_loop(model, diffusion, x0, torch.Generator().manual_seed(4))
    for name in ("prior", "kl", "decoder"):
        assert_allclose(getattr(loop, name).numpy(), getattr(ours, name).numpy(), **F64,
                        err_msg=f"{name}: the per-timestep loop must give elbo_terms' terms (same noise order)")


# ------------------------------------------------------------------------------------------- diffusers
def float64_scheduler(diffusion: GaussianDiffusion, variance: str):
    """diffusers' scheduler for our betas, its float32 tables replaced by our float64 ones (exact arithmetic check)."""
    from ddpm.studies.bench import diffusers_scheduler

    scheduler = diffusers_scheduler(diffusion, variance)
    scheduler.betas = diffusion.betas[1:].clone()
    scheduler.alphas = diffusion.alphas[1:].clone()
    scheduler.alphas_cumprod = diffusion.alpha_bars[1:].clone()
    return scheduler


@needs_diffusers
@pytest.mark.parametrize(("variance", "variance_type"), [("beta", "fixed_large"), ("beta_tilde", "fixed_small")])
@pytest.mark.parametrize("T", [1, 2, 25])
def test_diffusers_step_loop_is_algorithm2(variance, variance_type, T):
    from ddpm.studies.bench import diffusers_ancestral_sample

    betas = np.linspace(1e-3, 0.3, T)
    diffusion = GaussianDiffusion(betas)
    scheduler = float64_scheduler(diffusion, variance)
    assert scheduler.config.variance_type == variance_type and not scheduler.config.clip_sample
    shape = (3, 1, 2, 2)
    model = ToyEps(T, STEEP_SLOPES)
    ours = ancestral_sample(model, diffusion, shape, torch.Generator().manual_seed(11), variance=variance,
                            progress=False, dtype=torch.float64).x0
    theirs = diffusers_ancestral_sample(model, scheduler, shape, torch.Generator().manual_seed(11),
                                        dtype=torch.float64)
    assert_allclose(theirs.numpy(), ours.numpy(), **F64,
                    err_msg="diffusers' DDPMScheduler loop != Algorithm 2 with the same noise")


@needs_diffusers
def test_diffusers_add_noise_is_q_sample_at_t_plus_one():
    T = 1000
    from ddpm.core.schedules import make_betas

    diffusion = GaussianDiffusion(make_betas("linear", T))
    scheduler = float64_scheduler(diffusion, "beta")
    g = torch.Generator().manual_seed(2)
    x0 = grid_data((6, 1, 3, 3), 1)
    noise = torch.randn(x0.shape, generator=g, dtype=torch.float64)
    s = torch.tensor([0, 1, 499, 500, 998, 999])  # diffusers' steps; ours t = s + 1, boundaries 1 and T included
    assert_allclose(scheduler.add_noise(x0, noise, s).numpy(), diffusion.q_sample(x0, s + 1, noise).numpy(), **F64)


def paper_algorithm2_float64(model, betas, shape, seed):
    """Algorithm 2 line by line in float64, sigma_t^2 = beta_t, z drawn in float32 (as the float32 samplers draw)."""
    alpha_bar = np.cumprod(1.0 - betas)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(shape, generator=g).double()
    for t in range(len(betas), 0, -1):
        z = torch.randn(shape, generator=g).double() if t > 1 else torch.zeros(shape, dtype=torch.float64)
        eps = model(x, torch.full((shape[0],), t, dtype=torch.int64))
        beta = betas[t - 1]
        x = (x - beta / np.sqrt(1.0 - alpha_bar[t - 1]) * eps) / np.sqrt(1.0 - beta) + np.sqrt(beta) * z
    return x


@needs_diffusers
def test_float32_samplers_at_T1000_against_float64_algorithm2():
    """The bench's configuration (float32 samples, diffusers' own float32 tables) at T = 1000 with a stable eps*."""
    from ddpm.core.schedules import make_betas
    from ddpm.studies.bench import diffusers_ancestral_sample, diffusers_scheduler
    from testkit.optimal_denoisers import EpsStar, GaussianData

    T = 1000
    betas = make_betas("linear", T)
    diffusion = GaussianDiffusion(betas)
    shape = (16, 1, 3, 3)
    model = EpsStar(GaussianData(0.0, 0.5), betas)
    reference = paper_algorithm2_float64(model, betas, shape, 5).numpy()
    ours = ancestral_sample(model, diffusion, shape, torch.Generator().manual_seed(5), progress=False).x0
    theirs = diffusers_ancestral_sample(model, diffusers_scheduler(diffusion, "beta"), shape,
                                        torch.Generator().manual_seed(5))
    assert_allclose(ours.double().numpy(), reference, **tolerances.FLOAT32.kwargs(),
                    err_msg="float32 Algorithm 2 (float64 constants cast at use) drifted from float64 over T = 1000")
    assert_allclose(theirs.double().numpy(), reference, **tolerances.DIFFUSERS_FLOAT32_SCHEDULE.kwargs(),
                    err_msg="diffusers' float32 DDPMScheduler loop is not Algorithm 2 up to its float32 schedule")
    ours_error = np.abs(ours.double().numpy() - reference).max()
    theirs_error = np.abs(theirs.double().numpy() - reference).max()
    assert ours_error <= theirs_error, f"ours {ours_error:.3g} is less accurate than diffusers' {theirs_error:.3g}"
