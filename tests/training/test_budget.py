"""ddpm.training.budget: the session budget's counts, prediction and plan, the probe, and how `train` applies a plan.

- `evaluation_work` counts what `ddpm.evaluation.evaluate` computes for the small preset (N T sampling calls, the
  bound's and Gamma_t's calls, three Inception passes on a cold cache less what is cached).
- `plan_training` leaves exactly the predicted evaluation times SAFETY plus MARGIN_SECONDS before the deadline.
- `probe_speed` measures positive, finite rates on the tiny network.
- `train` with a session budget trains the plan's seconds (run.json records the plan, the checkpoint's preset the
  derived max_minutes); an explicit max_minutes turns the budget off.
"""

from __future__ import annotations

import json
import math

import pytest
import torch

from ddpm.images.data import dataset_info
from ddpm.training import budget
from ddpm.training.budget import (
    MARGIN_SECONDS,
    MIN_TRAINING_SECONDS,
    SAFETY,
    BudgetError,
    BudgetPlan,
    EvaluationWork,
    InceptionProbe,
    MachineSpeed,
    evaluation_work,
    plan_training,
    predict_evaluation,
    probe_speed,
)
from ddpm.training.checkpoint import load_checkpoint
from ddpm.training.config import get_preset
from ddpm.training.model import build_unet

SPEED = MachineSpeed(sampling_forwards_per_second=2000.0, eager_forwards_per_second=1600.0,
                     inception_images_per_second=10.0, compile_seconds=30.0, probe_seconds=12.0)


def test_evaluation_work_counts_what_evaluate_computes_for_small():
    small = get_preset("small")
    work = evaluation_work(small, test_images=10_000)
    ev, T = small.evaluation, small.training.T
    assert work.sample_forwards == ev.fid_num_samples * T == 1_000_000
    assert work.bound_forwards == T * ev.elbo_exact_images + 10_000 * ev.elbo_mc_draws_per_image
    assert work.gamma_forwards == T * ev.gamma_images_per_t
    assert work.inception_images == 3 * ev.fid_num_samples, "generated, reference and floor on a cold cache"
    assert evaluation_work(small, 10_000, cached_inception_images=2000).inception_images == 1000
    assert evaluation_work(small, 10_000, cached_inception_images=5000).inception_images == 0
    assert evaluation_work(small, 10_000, fid=False).inception_images == 0, "FID measured elsewhere costs nothing"
    assert evaluation_work(small, 10_000, fid=False).sample_forwards == work.sample_forwards
    capped = small.replace(evaluation=ev.replace(elbo_mc_images=50))
    assert evaluation_work(capped, 10_000).bound_forwards == T * ev.elbo_exact_images + 50


def test_prediction_is_counts_over_rates():
    work = EvaluationWork(sample_forwards=1_000_000, bound_forwards=74_000, gamma_forwards=32_000,
                          inception_images=3000, compile_sampler=True)
    predicted = predict_evaluation(work, SPEED)
    assert predicted["sampling"] == pytest.approx(1_000_000 / 2000.0 + 30.0)
    assert predicted["fid_kid"] == pytest.approx(300.0)
    assert predicted["bound"] == pytest.approx(106_000 / 1600.0)
    assert predicted["fixed"] == budget.FIXED_EVALUATION_SECONDS
    eager = predict_evaluation(EvaluationWork(10, 0, 0, 0, compile_sampler=False), SPEED)
    assert eager["sampling"] == pytest.approx(10 / 2000.0), "no compile time when the sampler is not compiled"


def test_plan_leaves_the_prediction_with_its_margin_before_the_deadline():
    work = EvaluationWork(1_000_000, 74_000, 32_000, 3000, True)
    plan = plan_training(1560.0, 100.0, work, SPEED)
    evaluation = sum(predict_evaluation(work, SPEED).values())
    assert plan.margin_seconds == pytest.approx((SAFETY - 1.0) * evaluation + MARGIN_SECONDS)
    assert plan.training_seconds == pytest.approx(1560.0 - 100.0 - evaluation - plan.margin_seconds)
    assert plan.predicted_end_seconds + plan.margin_seconds == pytest.approx(1560.0)
    record = json.loads(json.dumps(plan.to_dict()))
    assert record["training_seconds"] == plan.training_seconds and record["speed"]["compile_seconds"] == 30.0
    assert "training" in plan.summary() and f"{plan.training_seconds / 60:.1f}" in plan.summary()
    short = plan_training(200.0, 100.0, work, SPEED)
    assert short.training_seconds == MIN_TRAINING_SECONDS, "never less than the minimum (the deadline then slips)"
    assert short.overrun_seconds > 0 and "overrun" in short.summary() and plan.overrun_seconds == pytest.approx(0)
    with pytest.raises(BudgetError, match="spent before training"):
        plan_training(100.0, 100.0, work, SPEED)


def test_probe_measures_finite_positive_rates_on_the_tiny_network():
    tiny = get_preset("tiny")
    model = build_unet(tiny.model, 1, (8, 8), tiny.training.T)
    calls, chains = [], []

    def inception(images):
        calls.append(images.shape)
        return torch.zeros(images.shape[0], 2048)

    def sample(steps):
        chains.append(steps)
        for _ in range(steps):
            model(torch.zeros(4, 1, 8, 8), torch.ones(4, dtype=torch.int64))

    speed = probe_speed(model, (1, 8, 8), tiny.training.T, 4, sample, InceptionProbe(inception, 3),
                        torch.device("cpu"), torch.Generator().manual_seed(0))
    assert chains == [1, 2, 2 + budget.PROBE_SAMPLER_STEPS], "the compile call, then a short and a long chain"
    for rate in (speed.sampling_forwards_per_second, speed.eager_forwards_per_second):
        assert math.isfinite(rate) and rate > 0
    assert 0 < speed.inception_images_per_second < math.inf and speed.probe_seconds > 0
    assert speed.compile_seconds > 0
    assert calls and all(shape == (3, 1, 8, 8) for shape in calls)
    skipped = probe_speed(model, (1, 8, 8), tiny.training.T, 4, sample, None, torch.device("cpu"),
                          torch.Generator().manual_seed(0))
    assert skipped.inception_images_per_second == math.inf, "no Inception pass to predict: no Inception probe"


def test_plan_session_probes_the_evaluations_sampler(monkeypatch):
    """plan_session on the tiny preset: its sampler runs (eager here), the Inception probe is skipped when cached."""
    from ddpm.images import fid

    monkeypatch.setattr(fid, "cached_inception_images", lambda source, num, cache=None: 3 * num)
    tiny = get_preset("tiny")
    tiny = tiny.replace(training=tiny.training.replace(session_minutes=10.0))
    plan = budget.plan_session(tiny, dataset_info("digits"), 600.0, __import__("time").time(), torch.device("cpu"), 0)
    assert plan.work.inception_images == 0 and plan.speed.inception_images_per_second == math.inf
    assert plan.speed.sampling_forwards_per_second > 0 and plan.training_seconds > 0


def _fixed_plan(training_seconds: float) -> BudgetPlan:
    return BudgetPlan(session_seconds=1000.0, spent_seconds=10.0, predicted_evaluation={"sampling": 1.0},
                      margin_seconds=1.0, training_seconds=training_seconds, speed=SPEED,
                      work=EvaluationWork(1, 1, 1, 0, False))


def test_train_trains_the_planned_seconds_and_records_the_plan(tmp_path, monkeypatch):
    from ddpm.training import trainer as train_module

    calls = []

    def fake_plan(preset, info, session_seconds, session_start, device, seed):
        calls.append(((info.channels, info.height, info.width), info.num("test"), info.name, session_seconds))
        return _fixed_plan(training_seconds=0.6)

    monkeypatch.setattr(train_module, "plan_session", fake_plan)
    tiny = get_preset("tiny")
    preset = tiny.replace(training=tiny.training.replace(max_steps=None, session_minutes=2.0))
    result = train_module.train("digits", tmp_path / "run", preset, progress=False)
    assert calls == [((1, 8, 8), 297, "digits", 120.0)]
    assert result.stop_reason is train_module.StopReason.MAX_MINUTES
    checkpoint = load_checkpoint(result.checkpoint_path)
    assert checkpoint.preset.training.max_minutes == pytest.approx(0.6 / 60)
    assert checkpoint.preset.training.session_minutes == 2.0
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["sessions"][-1]["budget"]["training_seconds"] == 0.6


def test_an_explicit_max_minutes_turns_the_session_budget_off(tmp_path, monkeypatch):
    from ddpm.training import trainer as train_module

    def refuse(*args, **kwargs):
        raise AssertionError("an explicit max_minutes must not be replaced by a session plan")

    monkeypatch.setattr(train_module, "plan_session", refuse)
    tiny = get_preset("tiny")
    preset = tiny.replace(training=tiny.training.replace(max_steps=2, session_minutes=2.0))
    result = train_module.train("digits", tmp_path / "run", preset,
                                options=train_module.TrainOptions(max_minutes=5.0), progress=False)
    assert load_checkpoint(result.checkpoint_path).preset.training.session_minutes is None
    run = json.loads((tmp_path / "run" / "run.json").read_text())
    assert run["sessions"][-1]["budget"] is None


def test_small_preset_has_a_session_budget_and_tiny_does_not():
    assert get_preset("small").training.session_minutes is not None
    assert get_preset("tiny").training.session_minutes is None
    with pytest.raises(ValueError, match="session_minutes"):
        get_preset("tiny").training.replace(session_minutes=0.0)
