"""ddpm.evaluation.decoder_bins: the decoder's interior-bin error in metrics.json and the report, against (t).

The stored measurement of the tiny evaluated run (`evaluated_run`, tests/evaluation/conftest.py) is recomputed here
from the model's own mu_theta(x_1, 1) and sigma_1 (`GaussianDiffusion.p_mean_variance`, the network called on the
exact bound's documented subset and x_1) through derivation (t)'s 50-digit E(delta, eta); a per-pixel sigma (as a
learned variance gives) is checked the same way; the report shows the line, or says the measurement is absent.
"""

from __future__ import annotations

import json
import math
import shutil

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.core.bound import BIN_HALF_WIDTH
from ddpm.evaluation.decoder_bins import METRICS_KEY, summarise_decoder_bins
from ddpm.evaluation.randomness import phase_generator, random_subset
from ddpm.evaluation.report import write_report
from ddpm.images import data
from ddpm.training.checkpoint import build_eps_model, diffusion_from, load_checkpoint
from derivations import interior_bin
from testkit import tolerances
from testkit.runs import EVAL_OPTIONS, read_metrics

pytestmark = pytest.mark.usefixtures("one_torch_thread")

F32 = tolerances.FLOAT32.kwargs()  # the float32 network on both sides
F64 = tolerances.FLOAT64.kwargs()


def _oracle(x0: np.ndarray, mean: np.ndarray, std: np.ndarray) -> dict[str, float]:
    """Mean over images of sum_interior E / (D ln 2) with (t)'s E(delta, eta), and the interior fraction."""
    k = np.rint((x0 + 1.0) * 127.5)
    inside = (k > 0) & (k < 255)
    delta = (k / 127.5 - 1.0 - mean) / std
    error = np.zeros_like(delta)
    error[inside] = interior_bin.interior_bin_error(delta[inside], BIN_HALF_WIDTH / std[inside])
    per_image = error.reshape(x0.shape[0], -1).sum(1) / (x0[0].size * math.log(2))
    return {"error": float(per_image.mean()), "fraction": float(inside.mean()),
            "ratio_mean": float((std / BIN_HALF_WIDTH)[inside].mean())}


def test_stored_error_is_derivation_t_on_the_models_decoder(evaluated_run):
    metrics = read_metrics(evaluated_run)
    stored = metrics[METRICS_KEY]
    checkpoint = load_checkpoint(evaluated_run / "checkpoint.pt")
    model, diffusion = build_eps_model(checkpoint), diffusion_from(checkpoint)
    n, seed, variance = EVAL_OPTIONS["elbo_exact_images"], metrics["seed"], metrics["elbo_variance"]
    images = data.load_images("digits", "test")
    x0 = data.to_model_range(images[random_subset(images.shape[0], n, phase_generator(seed, "subset_exact"))])
    eps_draw = torch.randn(x0.shape, generator=phase_generator(seed, "elbo_exact"), dtype=x0.dtype)  # t = 1 first
    t = torch.ones(n, dtype=torch.int64)
    ab1 = float(diffusion.alpha_bars[1])
    x1 = math.sqrt(ab1) * x0.double() + math.sqrt(1.0 - ab1) * eps_draw.double()
    with torch.no_grad():
        eps = model(x1.to(x0.dtype), t).double()
    mean, var = diffusion.p_mean_variance(eps, x1, t, variance)
    std = var.sqrt().expand_as(mean)
    expected = _oracle(x0.numpy().astype(np.float64), mean.numpy(), std.numpy())

    assert stored["variance"] == variance and stored["images"] == n
    assert_allclose(stored["error_bits_per_dim"], expected["error"], **F32)
    assert_allclose(stored["interior_fraction"], expected["fraction"], **F64)
    assert_allclose(stored["sigma_over_h_mean"], expected["ratio_mean"], **F64)
    assert 0 < stored["interior_fraction"] < 1
    # the decoder's L_0 is the exact bound's L_0 (same subset, same x_1), and density times width is L_0 - E
    terms = json.loads((evaluated_run / "elbo_terms.json").read_text())
    assert_allclose(stored["decoder_bits_per_dim"], terms["bits_per_dim"][0], **F32)
    assert_allclose(stored["density_width_bits_per_dim"],
                    stored["decoder_bits_per_dim"] - stored["error_bits_per_dim"], **F64)
    assert "decoder_bins" in metrics["timings"]


def test_per_pixel_sigma_is_summarised_with_derivation_t(seed_base):
    """A decoder with a different sigma in every pixel (a learned variance's shape), on grid data with edge bins."""
    rng = np.random.default_rng(seed_base)
    k = rng.integers(0, 256, size=(5, 1, 4, 4))
    k[0, 0, 0, :2] = (0, 255)  # edge bins present
    x0 = torch.as_tensor(k / 127.5 - 1.0, dtype=torch.float32)
    std = torch.as_tensor(rng.uniform(0.004, 0.05, size=k.shape))
    mean = x0.double() + std * torch.as_tensor(rng.normal(0.0, 1.5, size=k.shape))
    summary = summarise_decoder_bins(x0, mean, std, "learned")
    expected = _oracle(x0.numpy().astype(np.float64), mean.numpy(), std.numpy())
    assert_allclose(summary.error_bits_per_dim, expected["error"], **F64)
    assert_allclose(summary.interior_fraction, expected["fraction"], **F64)
    assert_allclose(summary.sigma_over_h_mean, expected["ratio_mean"], **F64)


def test_report_shows_the_line_or_says_it_is_absent(evaluated_run, tmp_path):
    run = tmp_path / "run"
    shutil.copytree(evaluated_run, run)
    bins = read_metrics(run)[METRICS_KEY]
    md = write_report(run, command="report (test)").markdown.read_text()
    line = next(text for text in md.splitlines() if text.startswith("Decoder interior bins"))
    for key in ("decoder_bits_per_dim", "density_width_bits_per_dim", "error_bits_per_dim"):
        assert f"{bins[key]:.4f}" in line
    assert f"sigma_1 / h = {bins['sigma_over_h_mean']:.2f}" in line
    metrics = read_metrics(run)
    del metrics[METRICS_KEY]  # a run evaluated before the measurement existed
    (run / "metrics.json").write_text(json.dumps(metrics))
    md = write_report(run, command="report (test)").markdown.read_text()
    assert "Decoder interior bins: not measured for this run" in md
