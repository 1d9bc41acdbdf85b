"""ddpm.evaluation.evaluate: the importance proposal over t, the test-set bound, samples, files and metrics.json.

The proposal and the predicted variance are checked against independent NumPy computations (enumerating every
(image, t) pair); the bound of a tiny trained model is checked for agreement between the exact sum and the
importance-sampled Monte Carlo estimate (statistical, ALPHA per test); the files of an evaluated run (the
`evaluated_run` fixture, built once) are checked for their keys, types and internal consistency. The bound under
every reverse variance is checked for consistency, not for an ordering that holds only in expectation: the headline
variance's entry is the headline number, and the three per-term curves share images, x_t and network outputs
(checked exactly from elbo_terms.json); optimal_variance.json is `estimate_gamma` with the documented generator and
is reused by a second evaluate, a stale one set aside. FID runs once, with N = 8 (slow: Inception on a CPU).
"""

from __future__ import annotations

import io
import json
import math
import os
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from numpy.testing import assert_allclose
from PIL import Image
from scipy import stats

from ddpm.core.bound import ElboTerms, elbo_monte_carlo, elbo_terms
from ddpm.core.bound_statistics import UNIFORM_MIX, importance_proposal, predicted_draw_variance
from ddpm.evaluation.bounds import VARIANCES, BoundSettings, evaluate_elbo
from ddpm.evaluation.errors import EvaluationError
from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint
from ddpm.evaluation.optimal_variance import FILE_NAME as GAMMA_FILE
from ddpm.evaluation.optimal_variance import GammaEstimate, estimate_gamma, load_gamma, save_gamma
from ddpm.evaluation.randomness import phase_generator, random_subset
from ddpm.evaluation.run_folder import METRICS_FILE, keep_previous_metrics
from ddpm.images import data
from ddpm.images.pictures import image_grid, trajectory_strip
from ddpm.runtime.files import write_json_atomic
from ddpm.training.checkpoint import build_eps_model, diffusion_from, load_checkpoint
from ddpm.training.config import EvaluationConfig, Preset, get_preset
from testkit import tolerances
from testkit.runs import EVAL_OPTIONS, TRAIN_STEPS, read_metrics
from testkit.stat_checks import Family

pytestmark = pytest.mark.usefixtures("one_torch_thread")

ALPHA = 0.01  # false-failure probability of each statistical test
F64 = tolerances.FLOAT64.kwargs()

# The keys metrics.json must have, with their JSON types (None allowed only for FID/KID when FID is skipped).
REQUIRED_KEYS = {
    "dataset": str, "preset": str, "device": str, "seed": int, "train_steps": int,
    "train_images_per_second": float, "sample_images_per_second": float, "elbo_bits_per_dim": float,
    "elbo_bits_per_dim_stderr": float, "elbo_num_images": int, "fid": (float, type(None)),
    "kid_mean": (float, type(None)), "fid_num_samples": int, "wall_seconds": float,
}


@pytest.fixture(scope="session")
def tiny_model(evaluated_run):
    checkpoint = load_checkpoint(evaluated_run / "checkpoint.pt")
    return build_eps_model(checkpoint), diffusion_from(checkpoint)


def synthetic_terms(values: np.ndarray, prior: np.ndarray, num_dims: int = 1) -> ElboTerms:
    """ElboTerms whose bits/dim by t are `values` [B, T] (column 0 the decoder) and prior `prior` [B]."""
    scale = num_dims * math.log(2.0)
    v = torch.as_tensor(values, dtype=torch.float64) * scale
    return ElboTerms(prior=torch.as_tensor(prior, dtype=torch.float64) * scale, kl=v[:, 1:].contiguous(),
                     decoder=v[:, 0].clone(), num_dims=num_dims)


# ---------------------------------------------------------------------------------------- the proposal
def test_proposal_is_sqrt_second_moment_mixed_with_uniform():
    rng = np.random.default_rng(1)
    values = rng.gamma(0.5, 2.0, size=(5, 7)) * np.arange(7, 0, -1)  # [B, T], decreasing in t on average
    proposal = importance_proposal(synthetic_terms(values, np.zeros(5)), uniform_mix=0.1)
    root = np.sqrt(np.mean(values**2, axis=0))
    expected = 0.9 * root / root.sum() + 0.1 / 7
    assert_allclose(proposal.probabilities, expected, **F64, err_msg="p(t) = 0.9 sqrt(m_t)/sum sqrt(m) + 0.1/T")
    assert_allclose(proposal.second_moments, np.mean(values**2, axis=0), **F64)
    assert proposal.num_images == 5 and proposal.T == 7


@settings(max_examples=50, deadline=None)
@given(
    B=st.integers(1, 6),
    T=st.integers(2, 30),
    mix=st.floats(1e-6, 1.0),
    zero_columns=st.integers(0, 30),
    seed=st.integers(0, 2**32 - 1),
)
def test_proposal_is_a_distribution_with_a_floor(B, T, mix, zero_columns, seed):
    rng = np.random.default_rng(seed)
    values = rng.exponential(size=(B, T)) * 10.0 ** rng.uniform(-8, 3, size=T)
    values[:, : min(zero_columns, T)] = 0.0  # terms that vanish on the subset still get p(t) >= mix / T
    p = importance_proposal(synthetic_terms(values, rng.exponential(size=B)), uniform_mix=mix).probabilities
    assert p.shape == (T,)
    assert np.all(np.isfinite(p))
    assert abs(p.sum() - 1.0) <= 1e-12, f"sum p = {p.sum()!r}"
    assert p.min() >= mix / T * (1 - 1e-12), f"min p = {p.min()} < mix / T = {mix / T}"


def test_proposal_of_all_zero_terms_is_uniform():
    p = importance_proposal(synthetic_terms(np.zeros((3, 4)), np.zeros(3))).probabilities
    assert_allclose(p, np.full(4, 0.25), **F64)


@pytest.mark.parametrize("mix", [0.0, -0.1, 1.5, float("nan")])
def test_proposal_rejects_a_mix_outside_0_1(mix):
    with pytest.raises(ValueError, match="uniform_mix"):
        importance_proposal(synthetic_terms(np.ones((2, 3)), np.zeros(2)), uniform_mix=mix)


def test_proposal_rejects_non_finite_terms():
    values = np.ones((2, 3))
    values[1, 2] = np.inf
    with pytest.raises(ValueError, match="finite"):
        importance_proposal(synthetic_terms(values, np.zeros(2)))


def enumerated_draw_variance(values: np.ndarray, prior: np.ndarray, p: np.ndarray) -> float:
    """Var of Y = prior_b + L_{t-1}(b) / p(t), b uniform over rows and t ~ p, by enumerating every (b, t)."""
    B, T = values.shape
    ys, weights = [], []
    for b in range(B):
        for t in range(T):
            ys.append(prior[b] + values[b, t] / p[t])
            weights.append(p[t] / B)
    ys, weights = np.array(ys), np.array(weights)
    mean = np.sum(weights * ys)
    return float(np.sum(weights * (ys - mean) ** 2))


@settings(max_examples=30, deadline=None)
@given(B=st.integers(1, 5), T=st.integers(2, 12), seed=st.integers(0, 2**32 - 1))
def test_predicted_draw_variance_equals_enumeration(B, T, seed):
    rng = np.random.default_rng(seed)
    values, prior = rng.exponential(size=(B, T)), rng.exponential(size=B)
    p = rng.dirichlet(np.ones(T)) * 0.9 + 0.1 / T
    expected = enumerated_draw_variance(values, prior, p)
    got = predicted_draw_variance(synthetic_terms(values, prior), p)
    assert_allclose(got, expected, rtol=1e-9, atol=1e-12, err_msg="predicted variance vs enumeration over (b, t)")


def test_sqrt_second_moment_proposal_minimises_the_draw_variance():
    """Cauchy-Schwarz: sum_t m_t / p(t) is smallest at p proportional to sqrt(m_t); try 200 other proposals."""
    rng = np.random.default_rng(7)
    values = rng.exponential(size=(6, 10)) * np.geomspace(100, 0.01, 10)
    terms = synthetic_terms(values, rng.exponential(size=6))
    best = importance_proposal(terms, uniform_mix=1e-9)
    assert_allclose(best.predicted_variance_importance, predicted_draw_variance(terms, best.probabilities), **F64)
    for _ in range(200):
        other = rng.dirichlet(np.full(10, 0.5)) * 0.999 + 0.001 / 10
        assert predicted_draw_variance(terms, other) >= best.predicted_variance_importance * (1 - 1e-12)
    assert best.variance_reduction > 1.0


# ------------------------------------------------------------------------------------- small helpers
def test_phase_generators_are_reproducible_and_distinct():
    draws = {phase: torch.rand(4, generator=phase_generator(3, phase)) for phase in ("elbo_exact", "sampling")}
    assert torch.equal(draws["sampling"], torch.rand(4, generator=phase_generator(3, "sampling")))
    assert not torch.equal(draws["sampling"], draws["elbo_exact"])
    assert not torch.equal(draws["sampling"], torch.rand(4, generator=phase_generator(4, "sampling")))
    with pytest.raises(ValueError, match="unknown phase"):
        phase_generator(0, "nope")


def test_random_subset_is_sorted_distinct_and_reproducible():
    index = random_subset(100, 30, torch.Generator().manual_seed(0))
    assert index.shape == (30,) and index.dtype == torch.int64
    assert torch.equal(index, index.sort().values) and index.unique().numel() == 30
    assert 0 <= int(index.min()) and int(index.max()) < 100
    assert torch.equal(index, random_subset(100, 30, torch.Generator().manual_seed(0)))
    assert not torch.equal(index, torch.arange(30)), "a prefix is not a random subset"
    with pytest.raises(EvaluationError, match="0..100"):
        random_subset(100, 101, torch.Generator())


def test_image_grid_places_each_image_at_its_cell():
    n, h, w, columns, pad, scale = 7, 3, 2, 3, 2, 2
    images = torch.arange(1, n + 1, dtype=torch.uint8).mul(30)[:, None, None, None].expand(n, 1, h, w).contiguous()
    grid = np.asarray(image_grid(images, columns=columns, padding=pad, scale=scale))
    rows = math.ceil(n / columns)
    assert grid.shape == (scale * (rows * (h + pad) + pad), scale * (columns * (w + pad) + pad))
    for i in range(n):
        r, c = divmod(i, columns)
        y, x = scale * (pad + r * (h + pad)), scale * (pad + c * (w + pad))
        assert np.all(grid[y : y + scale * h, x : x + scale * w] == 30 * (i + 1)), f"image {i} misplaced"
    assert grid[0, 0] == 255 and grid[-1, -1] == 255  # padding and the empty cells are white


def test_trajectory_strip_orders_columns_from_x_T_to_x_0():
    trajectory = {t: torch.full((2, 1, 4, 4), t, dtype=torch.uint8) for t in (0, 50, 100)}
    strip = np.asarray(trajectory_strip(trajectory, scale=1))
    first_row = [int(strip[2, 2 + c * 6]) for c in range(3)]  # padding 2, width 4
    assert first_row == [100, 50, 0]


def test_keep_previous_metrics_renames_and_never_overwrites(tmp_path):
    assert keep_previous_metrics(tmp_path) is None
    kept = []
    for content in ("first", "second"):
        (tmp_path / METRICS_FILE).write_text(content)
        os.utime(tmp_path / METRICS_FILE, (1_700_000_000, 1_700_000_000))  # same stamp twice: names must differ
        kept.append(keep_previous_metrics(tmp_path))
    assert not (tmp_path / METRICS_FILE).exists()
    assert kept[0] != kept[1] and [p.read_text() for p in kept] == ["first", "second"]
    assert kept[0].name.startswith("metrics.previous-20231114T")


def test_write_json_atomic_writes_null_for_nan_and_leaves_no_temporary(tmp_path):
    path = write_json_atomic(tmp_path / "m.json", {"a": float("nan"), "b": [1.5, float("inf")], "c": np.int64(3)})
    assert json.loads(path.read_text()) == {"a": None, "b": [1.5, None], "c": 3}
    with pytest.raises(TypeError):
        write_json_atomic(path, {"bad": object()})
    assert json.loads(path.read_text())["c"] == 3, "a failed write must leave the old file intact"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["m.json"]


# ------------------------------------------------------------------------------------- the evaluated run
def test_metrics_json_has_the_required_keys_and_types(evaluated_run):
    metrics = read_metrics(evaluated_run)
    for key, kind in REQUIRED_KEYS.items():
        assert key in metrics, f"metrics.json lacks {key!r}"
        assert isinstance(metrics[key], kind) and not isinstance(metrics[key], bool), f"{key}: {metrics[key]!r}"
    assert metrics["dataset"] == "digits" and metrics["preset"] == "tiny" and metrics["seed"] == 0
    assert metrics["train_steps"] == TRAIN_STEPS
    assert metrics["fid"] is None and metrics["kid_mean"] is None and metrics["fid_skipped"] is True
    assert metrics["fid_num_samples"] == EVAL_OPTIONS["fid_samples"] == metrics["sample_count"]
    assert metrics["elbo_num_images"] == 297, "elbo_mc_images=0 means the whole digits test split"
    assert metrics["elbo_exact_num_images"] == EVAL_OPTIONS["elbo_exact_images"]
    assert metrics["elbo_mc_proposal"] == "importance" and metrics["elbo_mc_uniform_mix"] == UNIFORM_MIX
    for key in ("elbo_bits_per_dim", "elbo_exact_bits_per_dim", "train_images_per_second",
                "sample_images_per_second", "elbo_bits_per_dim_stderr", "elbo_exact_bits_per_dim_stderr"):
        assert math.isfinite(metrics[key]) and metrics[key] > 0, key


def test_metrics_numbers_are_consistent_with_each_other(evaluated_run):
    m = read_metrics(evaluated_run)
    checkpoint = load_checkpoint(evaluated_run / "checkpoint.pt")
    assert_allclose(m["wall_seconds"], checkpoint.train_seconds + m["evaluate_seconds"], **F64)
    assert_allclose(m["train_images_per_second"], checkpoint.images_seen / checkpoint.train_seconds, **F64)
    assert_allclose(m["sample_images_per_second"], m["sample_count"] / m["sample_seconds"], **F64)
    assert_allclose(m["timings"]["train"], checkpoint.train_seconds, **F64)
    assert sum(v for k, v in m["timings"].items() if k != "train") <= m["evaluate_seconds"]
    assert m["elbo_mc_num_draws"] == m["elbo_num_images"] * m["elbo_mc_draws_per_image"]
    assert m["T"] == checkpoint.T and m["trajectory_timesteps"] == list(checkpoint.preset.evaluation.trajectory_steps)


def test_sample_files_hold_the_n_samples(evaluated_run):
    m = read_metrics(evaluated_run)
    with np.load(evaluated_run / "samples_uint8.npz") as archive:
        images = archive["images"]
    assert images.dtype == np.uint8 and images.shape == (m["sample_count"], 1, 8, 8)
    assert images.min() < images.max(), "samples are not constant images"
    scale = math.ceil(56 / 8)
    grid = Image.open(evaluated_run / "samples.png")
    n = m["sample_count"]
    columns, rows = min(10, n), math.ceil(n / min(10, n))
    assert grid.size == (scale * (columns * 10 + 2), scale * (rows * 10 + 2))
    assert_allclose(  # the first cell of the grid is the first sample, upscaled
        np.asarray(grid)[2 * scale : 10 * scale : scale, 2 * scale : 10 * scale : scale], images[0, 0], rtol=0, atol=0
    )
    strip = Image.open(evaluated_run / "trajectory.png")
    steps = len(m["trajectory_timesteps"])
    assert strip.size == (scale * (steps * 10 + 2), scale * (8 * 10 + 2))


def test_elbo_terms_json_sums_to_the_exact_bound(evaluated_run):
    m = read_metrics(evaluated_run)
    record = json.loads((evaluated_run / "elbo_terms.json").read_text())
    T = m["T"]
    assert record["T"] == T and len(record["bits_per_dim"]) == T + 1 and len(record["proposal"]) == T
    assert_allclose(sum(record["bits_per_dim"]), m["elbo_exact_bits_per_dim"], rtol=1e-12, atol=0,
                    err_msg="sum of L_0 .. L_T is the exact bound")
    assert_allclose(sum(record["proposal"]), 1.0, **F64)
    assert min(record["proposal"]) >= UNIFORM_MIX / T * (1 - 1e-12)
    terms = np.array(record["bits_per_dim"])
    assert terms[0] > terms[1:T].max(), "L_0 (the decoder) is the largest term of a trained model"
    assert terms[T] < 1e-3, "L_T = KL(q(x_T|x_0) || N(0, I)) is tiny for the linear schedule"


def test_evaluate_elbo_exact_part_is_elbo_terms_with_the_documented_generator(tiny_model):
    """With the whole (8-image) set as subset: mean, standard error std/sqrt(n) and per-term means of the exact
    sum equal `elbo_terms` run with phase_generator(seed, "elbo_exact"), computed here with NumPy."""
    model, diffusion = tiny_model
    images = data.load_images("digits", "test")[:8]
    result = evaluate_elbo(model, diffusion, images, BoundSettings(exact_images=8, seed=9))
    terms = elbo_terms(model, diffusion, data.to_model_range(images), phase_generator(9, "elbo_exact"),
                       batch_size=256)
    per_image = terms.bits_per_dim().numpy()
    assert_allclose(result.exact_bits_per_dim, per_image.mean(), **F64)
    assert_allclose(result.exact_stderr, per_image.std(ddof=1) / np.sqrt(8), **F64)
    by_term = np.concatenate([terms.decoder[:, None].numpy(), terms.kl.numpy(), terms.prior[:, None].numpy()], 1)
    assert_allclose(result.per_term_bits_per_dim, by_term.mean(0) / (terms.num_dims * np.log(2)), **F64)
    assert result.exact_num_images == 8 and result.monte_carlo.num_images == 8


# ------------------------------------------------------------------- every variance, and Gamma_t behind "optimal"
def test_metrics_json_has_the_bound_under_every_variance_and_the_gamma_record(evaluated_run):
    m = read_metrics(evaluated_run)
    by_variance = m["elbo_exact_by_variance"]
    assert list(by_variance) == list(VARIANCES) == ["beta", "beta_tilde", "optimal"]
    for name, entry in by_variance.items():
        assert set(entry) == {"bits_per_dim", "stderr", "images"}, name
        assert isinstance(entry["bits_per_dim"], float) and math.isfinite(entry["bits_per_dim"]), name
        assert isinstance(entry["stderr"], float) and entry["stderr"] > 0, name
        assert type(entry["images"]) is int and entry["images"] == m["elbo_exact_num_images"], name
    headline = by_variance[m["elbo_variance"]]
    assert headline["bits_per_dim"] == m["elbo_exact_bits_per_dim"], "the headline's entry is the headline number"
    assert headline["stderr"] == m["elbo_exact_bits_per_dim_stderr"]
    record = m["optimal_variance"]
    expected_types = {"file": str, "reused": bool, "previous_file": type(None), "split": str, "train_split_images": int,
                      "images_per_t": int, "seed": int, "step": int, "gamma_stderr_max": float,
                      "gamma_clipped_timesteps": int, "seconds": float}
    assert set(record) == set(expected_types)
    for key, kind in expected_types.items():
        assert type(record[key]) is kind, f"optimal_variance.{key}: {record[key]!r}"
    assert record["file"] == GAMMA_FILE and record["reused"] is False and record["split"] == "train"
    assert record["train_split_images"] == 1500 and record["seed"] == m["seed"]
    assert record["step"] == m["checkpoint_step"] == TRAIN_STEPS
    assert record["images_per_t"] == m["evaluation_config"]["gamma_images_per_t"] == 4, "the tiny preset's 4"
    assert 0 <= record["gamma_clipped_timesteps"] <= m["T"] and record["gamma_stderr_max"] > 0
    assert m["timings"]["optimal_variance"] == record["seconds"] > 0
    assert m["timings"]["elbo_exact"] > 0 and "elbo_exact_other_variances" not in m["timings"], \
        "one pass of the network serves every variance"


def test_optimal_variance_json_is_estimate_gamma_with_the_documented_generator(evaluated_run, tiny_model):
    """optimal_variance.json = estimate_gamma(EMA model, the training split, phase_generator(seed, "gamma"),
    gamma_images_per_t, elbo_batch_size) with seed and step filled in; it round-trips through save/load_gamma.

    Both sides run the same float32 network calls in the same order: float32 tolerance (STYLE 19)."""
    m = read_metrics(evaluated_run)
    model, diffusion = tiny_model
    config = load_checkpoint(evaluated_run / "checkpoint.pt").preset.evaluation
    stored = load_gamma(evaluated_run / GAMMA_FILE)
    direct = estimate_gamma(model, diffusion, data.to_model_range(data.load_images("digits", "train")),
                            phase_generator(m["seed"], "gamma"), images_per_t=config.gamma_images_per_t,
                            batch_size=config.elbo_batch_size, progress=False)
    assert (stored.seed, stored.step, stored.images_per_t, stored.T) == (m["seed"], TRAIN_STEPS, 4, m["T"])
    assert_allclose(stored.gamma, direct.gamma, **tolerances.FLOAT32.kwargs(), err_msg="stored vs direct Gamma_t")
    assert_allclose(stored.stderr, direct.stderr, **tolerances.FLOAT32.kwargs(), err_msg="stored vs direct stderr")
    assert m["optimal_variance"]["gamma_stderr_max"] == max(stored.stderr)
    clipped = diffusion.with_optimal_variance(stored.gamma).optimal_gamma.numpy()[1:]
    assert m["optimal_variance"]["gamma_clipped_timesteps"] == int(np.sum(clipped != np.array(stored.gamma)))
    copy = save_gamma(evaluated_run.parent / "round-trip.json", stored)
    assert load_gamma(copy) == stored
    copy.unlink()


def test_the_bounds_under_each_variance_share_images_noise_and_network_outputs(evaluated_run, tiny_model):
    """From elbo_terms.json alone: the three per-term curves come from one set of (x_0, x_t, eps_theta).

    L_0 (sigma_1^2 = beta_1 for every variance) and L_T (no network) agree; for t >= 2 (clip_x0 = False)
    L_{t-1} = lambda_t S_t + d C_t with S_t = mean ||eps - eps_theta||^2 the same for every variance, so
    S_t / d = (L_{t-1} ln 2 - C_t) / lambda_t (bits/dim) agrees, with lambda_t and C_t of the "optimal" variance
    built from the stored Gamma_t. The subtraction loses float64 digits in proportion to (|L ln 2| + |C_t|) /
    lambda_t, which sets the tolerance.
    """
    _, diffusion = tiny_model
    record = json.loads((evaluated_run / "elbo_terms.json").read_text())
    assert record["clip_x0"] is False and list(record["by_variance"]) == list(VARIANCES)
    diffusion = diffusion.with_optimal_variance(load_gamma(evaluated_run / GAMMA_FILE).gamma)
    T = record["T"]
    top = record["by_variance"][record["variance"]]
    assert top["bits_per_dim"] == record["bits_per_dim"] and top["total_bits_per_dim"] == record["total_bits_per_dim"]
    shared, scale = {}, {}
    for name, entry in record["by_variance"].items():
        terms = np.array(entry["bits_per_dim"])  # [T + 1]
        assert entry["num_images"] == record["num_images"]
        assert_allclose(terms[[0, T]], np.array(top["bits_per_dim"])[[0, T]], **F64, err_msg=f"L_0, L_T: {name}")
        assert_allclose(terms.sum(), entry["total_bits_per_dim"], rtol=1e-12, atol=0)
        C, lam = diffusion.kl_variance_terms(name).numpy()[2:], diffusion.loss_weights(name).numpy()[2:]
        shared[name] = (terms[1:T] * math.log(2.0) - C) / lam  # [T - 1], t = 2..T
        scale[name] = (np.abs(terms[1:T] * math.log(2.0)) + np.abs(C)) / lam
    for name in VARIANCES:
        gap = np.abs(shared[name] - shared["beta"])
        allowed = tolerances.FLOAT64.rtol * (scale[name] + scale["beta"])
        assert np.all(gap <= allowed), f"{name} vs beta: S_t differs at t = {np.flatnonzero(gap > allowed)[:5] + 2}"


def test_exact_bounds_share_one_pass_and_equal_separate_calls(tiny_model):
    """exact_bounds under several variances = one exact_bound call per variance, bitwise, and = `elbo_terms` with
    phase_generator(seed, "elbo_exact") on the seeded subset; the network runs once per chunk, not per variance."""
    from ddpm.evaluation.bounds import exact_bound, exact_bounds

    model, diffusion = tiny_model
    images = data.load_images("digits", "test")
    calls = []

    def counted(xt, t):
        calls.append(xt.shape[0])
        return model(xt, t)

    result = exact_bounds(counted, diffusion, images, BoundSettings(exact_images=3, seed=5), ("beta", "beta_tilde"))
    assert sum(calls) == 3 * diffusion.T, "one network evaluation per (image, t), whatever the number of variances"
    for variance in ("beta", "beta_tilde"):
        alone = exact_bound(model, diffusion, images, BoundSettings(exact_images=3, seed=5, variance=variance))
        assert result[variance].bits_per_dim == alone.bits_per_dim
        assert np.array_equal(result[variance].per_term_bits_per_dim, alone.per_term_bits_per_dim)
    index = random_subset(images.shape[0], 3, phase_generator(5, "subset_exact"))
    terms = elbo_terms(model, diffusion, data.to_model_range(images[index]), phase_generator(5, "elbo_exact"),
                       variance="beta_tilde")
    assert_allclose(result["beta_tilde"].bits_per_dim, terms.bits_per_dim().mean().item(), **F64)
    with pytest.raises(ValueError, match="needs Gamma_t"):
        exact_bounds(model, diffusion, images, BoundSettings(exact_images=3, seed=5), ("beta", "optimal"))


def test_presets_size_gamma_and_old_checkpoints_load_with_the_default():
    assert {name: get_preset(name).evaluation.gamma_images_per_t for name in ("tiny", "small", "gpu")} == \
        {"tiny": 4, "small": 32, "gpu": 64}
    stored = get_preset("tiny").to_dict()
    del stored["evaluation"]["gamma_images_per_t"]  # a preset stored before the field existed
    assert Preset.from_dict(stored).evaluation.gamma_images_per_t == EvaluationConfig().gamma_images_per_t == 32
    for bad in (1, 0, 2.5, True):
        with pytest.raises(ValueError, match="gamma_images_per_t"):
            EvaluationConfig(gamma_images_per_t=bad)
    assert EvaluationConfig(variance="optimal").variance == "optimal"


def test_evaluate_is_reproducible_and_keeps_the_previous_metrics(evaluated_run, tmp_path):
    """A second identical evaluate reproduces every number, keeps the first metrics.json and reuses Gamma_t."""
    out = tmp_path / "again"
    overrides = EvaluationOverrides(fid_samples=2, skip_fid=True, elbo_exact_images=2, elbo_mc_images=8,
                                    sample_batch_size=2, seed=11)
    first = evaluate_checkpoint(evaluated_run / "checkpoint.pt", out, overrides, progress=False, device="cpu")
    assert first.previous_metrics is None
    assert sorted(p.name for p in out.iterdir()) == sorted(
        ["metrics.json", "elbo_terms.json", "samples_uint8.npz", "samples.png", "trajectory.png", "run.json",
         "train_log.jsonl", GAMMA_FILE])
    first_bytes = (out / METRICS_FILE).read_bytes()
    first_samples = np.load(out / "samples_uint8.npz")["images"]
    gamma_bytes, gamma_mtime = (out / GAMMA_FILE).read_bytes(), (out / GAMMA_FILE).stat().st_mtime_ns
    assert first.metrics["optimal_variance"]["reused"] is False
    second = evaluate_checkpoint(evaluated_run / "checkpoint.pt", out, overrides, progress=False, device="cpu")
    assert second.previous_metrics is not None and second.previous_metrics.read_bytes() == first_bytes
    assert second.metrics["previous_metrics"] == second.previous_metrics.name
    for key in ("elbo_bits_per_dim", "elbo_bits_per_dim_stderr", "elbo_exact_bits_per_dim", "elbo_exact_by_variance"):
        assert second.metrics[key] == json.loads(first_bytes)[key], f"{key} differs between identical runs"
    assert np.array_equal(np.load(out / "samples_uint8.npz")["images"], first_samples)
    reuse = second.metrics["optimal_variance"]
    assert reuse["reused"] is True and reuse["train_split_images"] is None and reuse["previous_file"] is None
    assert (out / GAMMA_FILE).read_bytes() == gamma_bytes and (out / GAMMA_FILE).stat().st_mtime_ns == gamma_mtime, \
        "a matching optimal_variance.json is reused, not rewritten"
    assert not list(out.glob("optimal_variance.previous-*"))


@pytest.mark.parametrize(("step_offset", "requested"), [(1, None), (0, 3)], ids=["other step", "other images per t"])
def test_evaluate_sets_a_stale_gamma_file_aside_and_estimates_again(evaluated_run, tmp_path, step_offset, requested):
    """A file of another checkpoint step, or of another sample size than asked for, is renamed, never reused."""
    checkpoint = load_checkpoint(evaluated_run / "checkpoint.pt")
    out = tmp_path / "stale"
    out.mkdir()
    T, per_t = checkpoint.T, checkpoint.preset.evaluation.gamma_images_per_t
    stale = GammaEstimate((0.5,) * T, (0.01,) * T, per_t, seed=0, step=checkpoint.step + step_offset)
    save_gamma(out / GAMMA_FILE, stale)
    overrides = EvaluationOverrides(fid_samples=2, skip_fid=True, elbo_exact_images=2, elbo_mc_images=4,
                                    sample_batch_size=2, gamma_images_per_t=requested)
    result = evaluate_checkpoint(evaluated_run / "checkpoint.pt", out, overrides, progress=False, device="cpu")
    record = result.metrics["optimal_variance"]
    assert record["reused"] is False and record["previous_file"].startswith("optimal_variance.previous-")
    assert load_gamma(out / record["previous_file"]) == stale
    fresh = load_gamma(out / GAMMA_FILE)
    assert fresh.step == checkpoint.step and fresh.images_per_t == (requested or per_t) == record["images_per_t"]


@pytest.mark.parametrize(
    ("options", "match"),
    [
        (dict(fid_samples=298), "exceeds the 297 test images"),
        (dict(elbo_exact_images=300, skip_fid=True), "has 297 images"),
        (dict(device="tpu", skip_fid=True), "device"),
        (dict(fid_samples=0, skip_fid=True), "fid_num_samples"),
        (dict(seed=-1, skip_fid=True), "seed"),
        (dict(variance="learned", skip_fid=True), "variance 'learned' needs a model that learns its variance"),
        (dict(gamma_images_per_t=1, skip_fid=True), "gamma_images_per_t must be an int >= 2"),
    ],
)
def test_evaluate_refuses_bad_requests_before_touching_out_dir(evaluated_run, tmp_path, options, match):
    out = tmp_path / "out"
    out.mkdir()
    (out / METRICS_FILE).write_text("{}")
    device = options.pop("device", None)
    with pytest.raises(ValueError, match=match):
        evaluate_checkpoint(evaluated_run / "checkpoint.pt", out, EvaluationOverrides(**options), device=device,
                            progress=False)
    assert sorted(p.name for p in out.iterdir()) == [METRICS_FILE] and (out / METRICS_FILE).read_text() == "{}"


# ----------------------------------------------------------------------------------- statistical checks
@pytest.mark.statistical(alpha=ALPHA)
def test_exact_and_importance_sampled_bounds_agree_per_image(tiny_model, seed_base, record_property):
    """Paired t-test: d_i = exact_i - MC_i over 20 images, 256 draws each (proposal from 8 other images); E[d_i] = 0.

    The importance weights make an image's Monte Carlo mean right-skewed, which makes a t-test on few draws reject
    too often (16 draws: 2 of 40 seed bases at ALPHA); with 256 draws a sweep over seed bases 0..99 rejected 1 of
    100 at ALPHA = 0.01 and 1 of 100 at 0.05.
    """
    model, diffusion = tiny_model
    images = data.load_images("digits", "test")
    index = torch.randperm(images.shape[0], generator=torch.Generator().manual_seed(seed_base + 101))
    proposal_images, test_images = index[:8], index[8:28]
    terms = elbo_terms(model, diffusion, data.to_model_range(images[proposal_images]),
                       torch.Generator().manual_seed(seed_base + 102))
    proposal = importance_proposal(terms).probabilities
    x0 = data.to_model_range(images[test_images])
    exact = elbo_terms(model, diffusion, x0, torch.Generator().manual_seed(seed_base + 103)).bits_per_dim().numpy()
    generator = torch.Generator().manual_seed(seed_base + 104)
    mc = np.array([elbo_monte_carlo(model, diffusion, x0[i : i + 1], generator, draws_per_image=256,
                                    proposal=proposal).bits_per_dim for i in range(x0.shape[0])])
    family = Family("exact bound vs importance-sampled Monte Carlo, per image", ALPHA)
    family.mean_test("mean of exact_i - MC_i (bits/dim)", exact - mc, 0.0)
    family.check(record_property)


@pytest.mark.statistical(alpha=ALPHA)
def test_evaluate_elbo_exact_subset_and_monte_carlo_agree(tiny_model, evaluated_run, seed_base, record_property):
    """evaluate_elbo's two estimates, both unbiased for the mean bound of the test split, agree (z with both
    standard errors; conservative, as the subset lies inside the Monte Carlo set), for sigma_t^2 = beta,
    beta_tilde and optimal (the run's Gamma_t; Holm over the three). This is the check of the exact bound's
    error bar under each variance the report prints. 4 draws per image tame the right tail of the importance
    weights: a sweep over seed bases 0..99 (beta_tilde) rejected 1 of 100 at 0.005 and 5 of 100 at 0.05; with
    the three variances, `python -m ddpm.studies.sweep --seeds 40` rejected 0 of 40 at ALPHA and 1 of 40 at 0.05.
    """
    model, diffusion = tiny_model
    diffusion = diffusion.with_optimal_variance(load_gamma(evaluated_run / GAMMA_FILE).gamma)
    images = data.load_images("digits", "test")
    family = Family("evaluate_elbo: exact subset vs Monte Carlo", ALPHA)
    for offset, variance in enumerate(VARIANCES):
        settings = BoundSettings(exact_images=24, seed=seed_base + 200 + offset, draws_per_image=4, variance=variance)
        result = evaluate_elbo(model, diffusion, images, settings)
        family.z_test(f"{variance}: exact - Monte Carlo", result.exact_bits_per_dim - result.monte_carlo.bits_per_dim,
                      0.0, math.hypot(result.exact_stderr, result.monte_carlo.stderr))
    family.check(record_property)


@pytest.mark.statistical(alpha=ALPHA)
def test_importance_sampling_lowers_the_variance_of_a_draw(tiny_model, seed_base):
    """One image, 200 draws each way: one-sided F-test rejects Var(importance) >= Var(uniform) at ALPHA.

    A power check (it fails when the test does NOT reject); the predicted reduction is ~200x for this model.
    """
    model, diffusion = tiny_model
    images = data.to_model_range(data.load_images("digits", "test"))
    terms = elbo_terms(model, diffusion, images[:8], torch.Generator().manual_seed(seed_base + 301))
    proposal = importance_proposal(terms).probabilities
    x0 = images[8:9]
    draws = 200
    spread = {}
    for name, p in (("uniform", None), ("importance", proposal)):
        estimate = elbo_monte_carlo(model, diffusion, x0, torch.Generator().manual_seed(seed_base + 302),
                                    draws_per_image=draws, proposal=p)
        spread[name] = (estimate.stderr * math.sqrt(draws)) ** 2  # sample variance of one draw
    ratio = spread["uniform"] / spread["importance"]
    p_value = stats.f.sf(ratio, draws - 1, draws - 1)
    assert p_value < ALPHA, f"importance sampling did not lower the variance: ratio {ratio:.2f}, p = {p_value:.2e}"


# ------------------------------------------------------------------------------------------------ FID
@pytest.mark.slow
def test_evaluate_with_fid_on_8_samples(evaluated_run, tmp_path):
    out = tmp_path / "fid"
    overrides = EvaluationOverrides(fid_samples=8, elbo_exact_images=1, elbo_mc_images=4, sample_batch_size=8)
    result = evaluate_checkpoint(evaluated_run / "checkpoint.pt", out, overrides, progress=False, device="cpu",
                                 cache_dir=tmp_path / "cache")
    m = read_metrics(out)
    assert m == result.metrics
    assert m["elbo_exact_bits_per_dim_stderr"] is None, "one exact image has no standard error: null, not NaN"
    assert isinstance(m["fid"], float) and m["fid"] > 0 and math.isfinite(m["fid"])
    assert isinstance(m["kid_mean"], float) and math.isfinite(m["kid_mean"]) and m["kid_std"] >= 0
    reference = m["fid_reference"]
    assert reference["num_images"] == m["fid_num_samples"] == 8 and reference["split"] == "test"
    assert "-n8-" in reference["cache_name"] and "digits" in reference["cache_name"]
    assert m["timings"]["fid_kid"] > 0
    assert (tmp_path / "cache" / "features").is_dir(), "reference features are cached"
    # The floor: 8 real training images against the same 8 test images, computed once and then cached.
    assert isinstance(m["fid_real_vs_real"], float) and math.isfinite(m["fid_real_vs_real"])
    assert m["real_vs_real"] == {"split": "train", "num_images": 8, "subset_seed": 1, "cached": False}
    from ddpm.images.fid import KidSettings, ReferenceSet, fid_kid, real_vs_real

    kid = KidSettings(subsets=m["kid_subsets"], subset_size=m["kid_subset_size"], seed=m["seed"])
    direct = fid_kid(ReferenceSet("digits", "train", 8, seed=1).load(), ReferenceSet("digits", "test", 8, seed=0),
                     kid=kid, device="cpu", cache=tmp_path / "cache")
    assert direct.fid == pytest.approx(m["fid_real_vs_real"], rel=1e-9), "the floor is FID(train subset, test set)"
    again, cached = real_vs_real("digits", 8, kid=kid, device="cpu", cache=tmp_path / "cache")
    assert cached and again.fid == m["fid_real_vs_real"] and again.kid_mean == m["kid_real_vs_real_mean"]
    shutil.rmtree(tmp_path / "cache")


def test_png_bytes_round_trip():
    from ddpm.images.pictures import png_bytes

    image = image_grid(torch.zeros(1, 3, 4, 4, dtype=torch.uint8), scale=1)
    assert Image.open(io.BytesIO(png_bytes(image))).size == image.size


# ------------------------------------------------------------------------------------------------ CLI
def test_cli_evaluate_writes_metrics_and_records_its_command(evaluated_run, tmp_path, capsys):
    from ddpm.cli import main

    out = tmp_path / "cli"
    argv = ["evaluate", "--checkpoint", str(evaluated_run / "checkpoint.pt"), "--out", str(out), "--fid-samples", "2",
            "--device", "cpu", "--seed", "5", "--skip-fid", "--elbo-exact-images", "2", "--elbo-mc-images", "4",
            "--sample-batch-size", "2", "--variance", "optimal", "--gamma-images", "3", "--no-progress"]
    assert main(argv) == 0
    m = read_metrics(out)
    assert m["command"] == "python -m ddpm " + " ".join(argv)
    assert m["seed"] == 5 and m["fid_num_samples"] == 2 and m["elbo_num_images"] == 4
    assert m["elbo_variance"] == "optimal" and m["evaluation_config"]["variance"] == "optimal"
    assert m["optimal_variance"]["images_per_t"] == 3 == load_gamma(out / GAMMA_FILE).images_per_t
    assert m["elbo_exact_by_variance"]["optimal"]["bits_per_dim"] == m["elbo_exact_bits_per_dim"]
    printed = capsys.readouterr().out
    assert f"{m['elbo_bits_per_dim']:.4f} +- {m['elbo_bits_per_dim_stderr']:.4f}" in printed
    assert "sigma_t^2 = optimal" in printed
    for name, entry in m["elbo_exact_by_variance"].items():
        assert f"{name} {entry['bits_per_dim']:.4f}" in printed


@pytest.mark.parametrize(
    ("argv", "match"),
    [
        (["evaluate", "--checkpoint", "/no/such/checkpoint.pt", "--out", "OUT"], "does not exist"),
        (["evaluate", "--checkpoint", "CKPT", "--out", "OUT", "--fid-samples", "0"], "positive integer"),
        (["evaluate", "--checkpoint", "CKPT", "--out", "OUT", "--fid-samples", "5000"], "exceeds the 297 test"),
        (["evaluate", "--checkpoint", "CKPT", "--out", "OUT", "--device", "quantum", "--skip-fid"], "device"),
        (["evaluate", "--checkpoint", "CKPT", "--out", "OUT", "--variance", "small"], "invalid choice"),
        (["evaluate", "--checkpoint", "CKPT", "--out", "OUT", "--gamma-images", "0"], "positive integer"),
        (["evaluate", "--checkpoint", "CKPT", "--out", "OUT", "--gamma-images", "1", "--skip-fid"],
         "gamma_images_per_t must be an int >= 2"),
        (["evaluate", "--out", "OUT"], "--checkpoint"),
        (["report"], "DIR"),
    ],
)
def test_cli_errors_are_one_line_with_status_2(evaluated_run, tmp_path, capsys, argv, match):
    from ddpm.cli import main

    argv = [{"CKPT": str(evaluated_run / "checkpoint.pt"), "OUT": str(tmp_path / "out")}.get(a, a) for a in argv]
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddpm: error: ") and match in err[0], err
    assert not (tmp_path / "out").exists()


def test_cli_set_aside_moves_a_run_and_ignores_an_empty_folder(tmp_path):
    from ddpm.cli import main

    run = tmp_path / "train_small"
    assert main(["set-aside", str(run)]) == 0 and not run.exists()
    run.mkdir()
    assert main(["set-aside", str(run)]) == 0 and run.is_dir()
    (run / "metrics.json").write_text("{}")
    assert main(["set-aside", str(run)]) == 0
    moved = [p for p in tmp_path.iterdir() if p.name.startswith("train_small.previous-")]
    assert not run.exists() and len(moved) == 1 and (moved[0] / "metrics.json").read_text() == "{}"
    run.mkdir()
    (run / "x").write_text("second")
    assert main(["set-aside", str(run)]) == 0
    assert len([p for p in tmp_path.iterdir() if p.name.startswith("train_small.previous-")]) == 2


def test_metrics_record_the_running_command_portably_and_the_interpreter_version(evaluated_run, tmp_path,
                                                                                 monkeypatch):
    """With no command given, metrics.json records the running one as python -m ddpm ..., never the interpreter's
    path (here the process runs ddpm/__main__.py as a file); the interpreter's version is under "versions"."""
    import platform
    import sys

    import ddpm

    monkeypatch.setattr(sys.modules["__main__"], "__spec__", None)
    monkeypatch.setattr(sys, "argv", [os.path.join(os.path.dirname(ddpm.__file__), "__main__.py"), "evaluate"])
    out = tmp_path / "eval"
    evaluate_checkpoint(evaluated_run / "checkpoint.pt", out, EvaluationOverrides(**EVAL_OPTIONS), device="cpu",
                        progress=False)
    m = read_metrics(out)
    assert m["command"] == "python -m ddpm evaluate" and sys.executable not in json.dumps(m)
    assert m["versions"]["python"] == platform.python_version()
