"""Algorithm 1 trainer (`ddpm.training.trainer`): warmup, EMA, clipping, learning, reproducibility, exact resume,
SIGINT.

All runs use the `tiny` preset on sklearn digits (8x8) for a handful of updates, with one intra-op thread: on a
shared 2-core machine two OpenMP threads can be tens of times slower, and bitwise comparisons between runs need
the same thread count anyway (the reduction order of a convolution can depend on it).
"""

from __future__ import annotations

import json
import math
import os
import platform
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.training.checkpoint import load_checkpoint
from ddpm.training.config import TrainingConfig, get_preset
from ddpm.training.model import build_unet
from ddpm.training.trainer import (
    LOG_NAME,
    StopReason,
    TrainOptions,
    derived_seed,
    train,
)
from ddpm.training.update_rules import ema_decay_at, ema_update, learning_rate_at
from testkit import tolerances
from testkit.paths import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")


def tiny(**training_changes):
    """The tiny preset with some TrainingConfig fields changed."""
    preset = get_preset("tiny")
    return preset.replace(training=preset.training.replace(**training_changes))


def read_log(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / LOG_NAME).read_text().splitlines()]


def assert_states_equal(a, b, what: str) -> None:
    """Bitwise equality of nested state (dicts, lists, tensors, numbers)."""
    if isinstance(a, torch.Tensor):
        assert isinstance(b, torch.Tensor) and a.dtype == b.dtype and a.shape == b.shape, what
        assert torch.equal(a, b), f"{what} differs (max |diff| {(a.double() - b.double()).abs().max().item()})"
    elif isinstance(a, dict):
        assert isinstance(b, dict) and a.keys() == b.keys(), f"{what}: keys differ"
        for key in a:
            assert_states_equal(a[key], b[key], f"{what}[{key!r}]")
    elif isinstance(a, (list, tuple)):
        assert isinstance(b, (list, tuple)) and len(a) == len(b), f"{what}: lengths differ"
        for i, (x, y) in enumerate(zip(a, b, strict=True)):
            assert_states_equal(x, y, f"{what}[{i}]")
    else:
        assert a == b, f"{what}: {a!r} != {b!r}"


def assert_same_run_state(a, b) -> None:
    for field in ("step", "epoch", "images_seen", "model_state", "ema_state", "optimizer_state", "sampler_state",
                  "loss_generator_state", "rng_states"):
        assert_states_equal(getattr(a, field), getattr(b, field), field)


# ----------------------------------------------------------------------------------------------------------
# Pieces of the update


def test_learning_rate_rises_linearly_over_warmup_then_stays():
    config = TrainingConfig(learning_rate=3e-4, warmup_steps=4, max_steps=10)
    expected = [3e-4 * n / 4 for n in (1, 2, 3, 4)] + [3e-4] * 3
    got = [learning_rate_at(config, n) for n in range(1, 8)]
    assert_allclose(got, expected, **tolerances.FLOAT64.kwargs(), err_msg="lr_n = lr * min(1, n / warmup)")
    assert learning_rate_at(config.replace(warmup_steps=0), 1) == 3e-4
    with pytest.raises(ValueError, match="update"):
        learning_rate_at(config, 0)


def test_ema_update_is_the_convex_combination():
    torch.manual_seed(0)  # test-local: the two networks' initial weights
    model, ema = torch.nn.Linear(3, 2), torch.nn.Linear(3, 2)
    before = [p.detach().double().clone() for p in ema.parameters()]
    decay = 0.9
    ema_update(ema, model, decay)
    for old, new, p in zip(before, ema.parameters(), model.parameters(), strict=True):
        expected = decay * old + (1 - decay) * p.detach().double()
        assert_allclose(new.detach().double().numpy(), expected.numpy(), **tolerances.FLOAT32.kwargs(),
                        err_msg="ema = decay * ema + (1 - decay) * theta")
    ema_update(ema, model, 0.0)  # decay 0: the EMA is the model
    for e, p in zip(ema.parameters(), model.parameters(), strict=True):
        assert torch.equal(e, p)


def test_derived_seeds_are_distinct_and_stable():
    seeds = {derived_seed(s, purpose, rank) for s in (0, 1) for purpose in range(4) for rank in range(2)}
    assert len(seeds) == 16
    assert derived_seed(5, 1) == derived_seed(5, 1)
    assert all(0 <= s < 2**63 for s in seeds)


# ----------------------------------------------------------------------------------------------------------
# Training runs


def test_ema_decay_warms_up_so_the_initial_weights_fade():
    config = tiny(ema_decay=0.999).training
    assert ema_decay_at(config, 1) == 2 / 11 and ema_decay_at(config, 90) == 91 / 100
    assert ema_decay_at(config, 10**6) == 0.999 and ema_decay_at(config.replace(ema_warmup=False), 1) == 0.999
    # The share of the initial weights in the EMA after n updates is prod_k d_k: 0.999^n without the warmup.
    share = np.cumprod([ema_decay_at(config, k) for k in range(1, 1501)])
    assert share[-1] < 1e-3 and 0.999**1500 > 0.2, "the warmup must remove the initial weights' share"
    with pytest.raises(ValueError, match="update numbers start at 1"):
        ema_decay_at(config, 0)


def test_first_update_starts_ema_from_initial_weights_and_uses_warmup_lr(tmp_path):
    """After one update: ema_1 = d_1 theta_0 + (1 - d_1) theta_1 with theta_0 the seeded initial weights."""
    preset = tiny(ema_decay=0.75, warmup_steps=4, max_steps=1, log_every=1)
    decay = ema_decay_at(preset.training, 1)
    assert decay == 2 / 11
    train("digits", tmp_path / "run", preset, options=TrainOptions(seed=3), progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    torch.manual_seed(derived_seed(3, 0))  # the trainer's documented initial-weight seed
    initial = build_unet(preset.model, 1, (8, 8), preset.training.T).state_dict()
    for name, theta_1 in checkpoint.model_state.items():
        expected = decay * initial[name].double() + (1 - decay) * theta_1.double()
        assert_allclose(checkpoint.ema_state[name].double().numpy(), expected.numpy(),
                        **tolerances.FLOAT32.kwargs(), err_msg=f"EMA after one update, {name}")
    # The output layer starts at zero, so the first gradient reaches only it: it must have moved.
    assert not torch.equal(checkpoint.model_state["output_conv.weight"], initial["output_conv.weight"])
    (record,) = read_log(tmp_path / "run")
    assert record["step"] == 1 and math.isclose(record["lr"], preset.training.learning_rate / 4)


def test_gradient_clipping_rescales_the_gradient_to_the_bound(tmp_path):
    """Adam's first moment after one update is (1 - beta1) g: with clipping, g = g_raw * c / ||g_raw||."""
    bound = 1e-3
    runs = {}
    for name, clip in (("raw", None), ("clipped", bound)):
        train("digits", tmp_path / name, tiny(grad_clip=clip, max_steps=1), options=TrainOptions(seed=1),
              progress=False)
        state = load_checkpoint(tmp_path / name / "checkpoint.pt").optimizer_state["state"]
        beta1 = 0.9  # torch.optim.Adam's default, which the trainer uses
        runs[name] = [state[i]["exp_avg"].double() / (1 - beta1) for i in sorted(state)]
    raw_norm = torch.sqrt(sum((g**2).sum() for g in runs["raw"])).item()
    assert raw_norm > 10 * bound, "the test needs a gradient well above the bound"
    for raw, clipped in zip(runs["raw"], runs["clipped"], strict=True):
        assert_allclose(clipped.numpy(), (raw * bound / raw_norm).numpy(), rtol=tolerances.FLOAT32.rtol,
                        atol=tolerances.FLOAT32.atol * bound, err_msg="clipped gradient = g * c / ||g||")


def test_loss_decreases_on_digits(tmp_path):
    """eps_theta starts at 0 (zero output layer), so the loss starts at E[eps^2] = 1; 150 updates must halve it."""
    result = train("digits", tmp_path / "run", tiny(max_steps=150, log_every=10), options=TrainOptions(seed=0),
                   progress=False)
    log = read_log(tmp_path / "run")
    assert result.stop_reason is StopReason.MAX_STEPS and result.step == 150
    assert [r["step"] for r in log] == list(range(10, 151, 10))
    assert 0.5 < log[0]["loss"] < 1.5, "the first window should be near the initial loss 1"
    assert log[-1]["loss"] < 0.5 * log[0]["loss"], f"loss did not halve: {log[0]['loss']} -> {log[-1]['loss']}"
    assert all(r["images_per_second"] > 0 and r["epoch"] >= 1 for r in log)


def test_same_seed_same_weights_other_seed_other_weights(tmp_path):
    for name, seed in (("a", 7), ("b", 7), ("c", 8)):
        train("digits", tmp_path / name, tiny(max_steps=6), options=TrainOptions(seed=seed), progress=False)
    a, b, c = (load_checkpoint(tmp_path / n / "checkpoint.pt") for n in "abc")
    assert_same_run_state(a, b)
    assert not torch.equal(a.model_state["input_conv.weight"], c.model_state["input_conv.weight"])


def test_resume_reproduces_the_uninterrupted_run_bitwise(tmp_path):
    preset = tiny(max_steps=24, log_every=4)
    preset = preset.replace(model=preset.model.replace(dropout=0.1))  # dropout draws from torch's global RNG
    train("digits", tmp_path / "straight", preset, options=TrainOptions(seed=11), progress=False)
    train("digits", tmp_path / "resumed", preset, options=TrainOptions(seed=11, max_steps=10), progress=False)
    with open(tmp_path / "resumed" / LOG_NAME, "a") as f:  # what a hard kill can leave past the checkpoint
        f.write(json.dumps({"step": 12, "loss": 0.0}) + "\n" + '{"step": 1')
    result = train(None, tmp_path / "resumed", options=TrainOptions(resume=True, max_steps=24), progress=False)
    assert result.start_step == 10 and result.step == 24
    straight = load_checkpoint(tmp_path / "straight" / "checkpoint.pt")
    resumed = load_checkpoint(tmp_path / "resumed" / "checkpoint.pt")
    assert_same_run_state(straight, resumed)
    def essentials(run: str) -> list[tuple]:  # the first window after the resume (steps 11, 12) is shorter
        return [(r["step"], r["loss"], r["lr"], r["epoch"], r["images_seen"]) for r in read_log(tmp_path / run)
                if r["step"] not in (12,)]

    assert [r["step"] for r in read_log(tmp_path / "resumed")] == [4, 8, 12, 16, 20, 24]
    assert read_log(tmp_path / "resumed")[2]["loss_updates"] == 2
    assert essentials("resumed") == essentials("straight"), "the resumed log must equal the uninterrupted one"
    run = json.loads((tmp_path / "resumed" / "run.json").read_text())
    assert [s["start_step"] for s in run["sessions"]] == [0, 10]


def test_periodic_checkpoints_are_written_and_change_nothing(tmp_path, monkeypatch):
    import ddpm.training.trainer

    saved_steps = []
    original = ddpm.training.trainer.save_checkpoint

    def recording_save(path, checkpoint):
        saved_steps.append(checkpoint.step)
        original(path, checkpoint)

    monkeypatch.setattr(ddpm.training.trainer, "save_checkpoint", recording_save)
    train("digits", tmp_path / "often", tiny(max_steps=5, checkpoint_every_minutes=1e-9),
          options=TrainOptions(seed=2), progress=False)
    assert saved_steps == [1, 2, 3, 4, 5], "a due checkpoint is written before each update, and one at the end"
    monkeypatch.undo()
    train("digits", tmp_path / "once", tiny(max_steps=5), options=TrainOptions(seed=2), progress=False)
    assert_same_run_state(load_checkpoint(tmp_path / "often" / "checkpoint.pt"),
                          load_checkpoint(tmp_path / "once" / "checkpoint.pt"))


def test_time_budget_stops_the_run(tmp_path):
    result = train("digits", tmp_path / "run", tiny(max_steps=10_000, max_minutes=0.002), progress=False)
    assert result.stop_reason is StopReason.MAX_MINUTES
    assert 1 <= result.step < 10_000 and result.train_seconds >= 0.002 * 60
    assert load_checkpoint(tmp_path / "run" / "checkpoint.pt").step == result.step


def _cli_env() -> dict[str, str]:
    return {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}


@pytest.mark.slow
def test_sigint_saves_a_checkpoint_and_resume_matches_a_straight_run(tmp_path):
    run = tmp_path / "run"
    command = [sys.executable, "-m", "ddpm", "train", "--data", "digits", "--out", str(run), "--preset", "tiny",
               "--max-steps", "100000", "--seed", "5", "--no-progress"]
    process = subprocess.Popen(command, cwd=REPO, env=_cli_env(), stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                               text=True)
    try:
        deadline = time.monotonic() + 120
        while not ((run / LOG_NAME).exists() and (run / LOG_NAME).read_text().count("\n") >= 1):
            assert process.poll() is None, process.communicate()
            assert time.monotonic() < deadline, "training did not log within 120 s"
            time.sleep(0.2)
        process.send_signal(signal.SIGINT)
        stdout, stderr = process.communicate(timeout=120)
    finally:
        if process.poll() is None:
            process.kill()
    assert process.returncode == 130, stderr
    assert "Traceback" not in stderr
    checkpoint = load_checkpoint(run / "checkpoint.pt")
    log = read_log(run)
    assert log and all(r["step"] <= checkpoint.step for r in log)
    assert checkpoint.step >= log[-1]["step"] >= 10
    k = checkpoint.step
    train(None, run, options=TrainOptions(resume=True, max_steps=k + 5), progress=False)
    train("digits", tmp_path / "straight", "tiny", options=TrainOptions(seed=5, max_steps=k + 5), progress=False)
    assert_same_run_state(load_checkpoint(tmp_path / "straight" / "checkpoint.pt"),
                          load_checkpoint(run / "checkpoint.pt"))
    assert read_log(run)[: len(log)] == log, "resuming must keep every log line written before the interrupt"
    sessions = json.loads((run / "run.json").read_text())["sessions"]
    assert [(s["start_step"], s["end_step"], s["stop_reason"]) for s in sessions] == [
        (0, k, "interrupted"), (k, k + 5, "max_steps")]


@pytest.mark.parametrize("objective", ["vlb", "hybrid"])
def test_other_objectives_train(tmp_path, objective):
    train("digits", tmp_path / "run", tiny(objective=objective, max_steps=4, log_every=2), progress=False)
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [2, 4] and all(math.isfinite(r["loss"]) for r in log)


def test_a_folder_of_rgb_images_trains(tmp_path):
    from PIL import Image

    folder = tmp_path / "images"
    folder.mkdir()
    rng = np.random.default_rng(0)  # test-local: pixel values
    for i in range(12):
        Image.fromarray(rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)).save(folder / f"{i:02d}.png")
    train(str(folder), tmp_path / "run", tiny(max_steps=2, batch_size=4), progress=False)
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint.channels == 3 and checkpoint.dataset == str(folder.resolve())
    assert checkpoint.model_state["input_conv.weight"].shape[1] == 3


@pytest.mark.gpu
def test_cuda_run_bf16_channels_last_compiled_resume(tmp_path):
    """The CUDA path (bfloat16 autocast, channels_last, torch.compile) trains, resumes and loads on the CPU."""
    from ddpm.evaluation.generate import generate
    from ddpm.training.checkpoint import build_eps_model

    first = train("digits", tmp_path / "run", tiny(max_steps=20, log_every=10), device="cuda", progress=False)
    assert first.step == 20
    second = train(None, tmp_path / "run", options=TrainOptions(resume=True, max_steps=40, compile=True),
                   device="cuda", progress=False)
    assert (second.start_step, second.step) == (20, 40)
    log = read_log(tmp_path / "run")
    assert [r["step"] for r in log] == [10, 20, 30, 40] and all(math.isfinite(r["loss"]) for r in log)
    assert log[-1]["loss"] < log[0]["loss"]
    checkpoint = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    assert checkpoint.device.startswith("cuda") and checkpoint.rng_states[0]["cuda"] is not None
    build_eps_model(checkpoint, device="cpu")
    images = generate(checkpoint, 8, torch.Generator(device="cuda").manual_seed(0), device="cuda", progress=False)
    assert images.shape == (8, 1, 8, 8) and images.dtype == torch.uint8


def test_a_run_killed_before_its_first_checkpoint_restarts_with_resume(tmp_path, capsys):
    """SIGKILL before the first checkpoint leaves run.json and log lines but no checkpoint.pt."""
    from ddpm.cli import main

    out = tmp_path / "run"
    train("digits", out, tiny(max_steps=2, log_every=1), options=TrainOptions(seed=4), progress=False)
    (out / "checkpoint.pt").unlink()  # what a hard kill before the first checkpoint leaves behind
    with pytest.raises(ValueError, match="stopped before its first checkpoint: add --resume to restart it"):
        train("digits", out, "tiny", progress=False)
    code = main(["train", "--out", str(out), "--data", "digits", "--preset", "tiny", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and "add --resume to restart it from update 0" in err and len(err.strip().splitlines()) == 1
    # data, preset and seed: run.json's
    result = train(None, out, None, options=TrainOptions(resume=True, max_steps=3), progress=False)
    assert result.step == 3 and result.start_step == 0
    checkpoint = load_checkpoint(out / "checkpoint.pt")
    assert checkpoint.seed == 4 and checkpoint.preset.name == "tiny" and checkpoint.dataset == "digits"
    run = json.loads((out / "run.json").read_text())
    assert len(run["sessions"]) == 2, "the killed session stays on record"
    steps = [record["step"] for record in read_log(out)]
    assert steps == [1, 2, 3], f"the log restarts at update 1, got {steps}"
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="--resume: no checkpoint at"):
        train("digits", tmp_path / "empty", "tiny", options=TrainOptions(resume=True), progress=False)


def test_run_json_records_a_portable_command_and_the_interpreter_version(tmp_path, monkeypatch, capsys):
    """The CLI records `python -m ddpm <its argv>`; a command given with the interpreter's path, or none (the
    running one), is recorded with `python` in its place; the interpreter's version is under "versions"."""
    from types import SimpleNamespace

    from ddpm.cli import main

    argv = ["train", "--out", str(tmp_path / "cli"), "--data", "digits", "--preset", "tiny", "--max-steps", "1",
            "--device", "cpu", "--no-progress"]
    assert main(argv) == 0
    capsys.readouterr()
    run = json.loads((tmp_path / "cli" / "run.json").read_text())
    assert run["command"] == run["sessions"][0]["command"] == ["python", "-m", "ddpm", *argv]
    assert run["versions"]["python"] == platform.python_version()
    given = [sys.executable, "-m", "ddpm", "train", "--preset", "tiny"]
    train("digits", tmp_path / "given", tiny(max_steps=1), device="cpu", progress=False, command=given)
    assert json.loads((tmp_path / "given" / "run.json").read_text())["command"] == ["python", *given[1:]]
    monkeypatch.setattr(sys.modules["__main__"], "__spec__", SimpleNamespace(name="ddpm.__main__"))
    monkeypatch.setattr(sys, "argv", [str(REPO / "ddpm" / "__main__.py"), "train", "--preset", "tiny"])
    train("digits", tmp_path / "running", tiny(max_steps=1), device="cpu", progress=False)
    recorded = json.loads((tmp_path / "running" / "run.json").read_text())["command"]
    assert recorded == ["python", "-m", "ddpm", "train", "--preset", "tiny"]
    assert not any(os.sep in word for word in recorded)
