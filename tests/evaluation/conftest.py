"""Fixtures of the evaluation tests: the tiny trained-and-evaluated run that test_evaluate.py and test_report.py read.

`ddpm.training.trainer.train` runs the `tiny` preset on sklearn's digits for TRAIN_STEPS updates, then
`ddpm.evaluation.evaluate.evaluate_checkpoint` evaluates it into the same folder with FID skipped (Inception is
tested once, separately, as slow) and small sample counts (`testkit.runs`), all with one torch thread. Built once per
pytest process that needs it (under pytest-xdist, once per worker); tests that change files work on a copy.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from testkit.runs import EVAL_COMMAND, EVAL_OPTIONS, TRAIN_COMMAND, TRAIN_STEPS
from testkit.threads import one_thread


@pytest.fixture(scope="session")
def evaluated_run(tmp_path_factory) -> Path:
    """The run folder: checkpoint.pt, run.json, train_log.jsonl and the evaluation's files."""
    from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint
    from ddpm.training.trainer import TrainOptions, train

    run = tmp_path_factory.mktemp("tiny-digits-run") / "run"
    with one_thread():
        train("digits", run, "tiny", options=TrainOptions(seed=0, max_steps=TRAIN_STEPS), device="cpu", progress=False,
              command=TRAIN_COMMAND)
        evaluate_checkpoint(run / "checkpoint.pt", run, EvaluationOverrides(**EVAL_OPTIONS), device="cpu",
                            progress=False, command=EVAL_COMMAND)
    return run
