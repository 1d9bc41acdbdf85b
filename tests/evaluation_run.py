"""A tiny trained-and-evaluated run shared by test_evaluate.py and test_report.py (built once per pytest process).

`ddpm.training.trainer.train` runs the `tiny` preset on sklearn's digits for TRAIN_STEPS updates, then
`ddpm.evaluation.evaluate.evaluate_checkpoint` evaluates it into the same folder with FID skipped (Inception is tested once,
separately, as slow) and small sample counts. Everything runs with one torch thread: on the shared 2-core
machine two OpenMP threads per process collapse under contention (measured: 17 ms vs 1.2 s per forward of the
tiny U-Net at batch 8 while other processes were busy), and one thread is as fast when the machine is quiet.
"""

from __future__ import annotations

import contextlib
import json
from pathlib import Path

import torch

TRAIN_STEPS = 60
EVAL_OPTIONS = dict(fid_samples=16, skip_fid=True, elbo_exact_images=8, elbo_mc_images=0, sample_batch_size=16)
EVAL_COMMAND = "python -m ddpm evaluate --checkpoint RUN/checkpoint.pt --out RUN --skip-fid (test fixture)"

_CACHE: dict[str, Path] = {}


@contextlib.contextmanager
def one_thread():
    """torch.set_num_threads(1) inside the block, the previous value restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)


def trained_and_evaluated_run(tmp_path_factory) -> Path:
    """The run folder (checkpoint.pt, run.json, train_log.jsonl and the evaluation's files), built once."""
    if "run" not in _CACHE:
        from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint
        from ddpm.training.trainer import TrainOptions, train

        run = tmp_path_factory.mktemp("tiny-digits-run") / "run"
        with one_thread():
            train("digits", run, "tiny", options=TrainOptions(seed=0, max_steps=TRAIN_STEPS), device="cpu",
                  progress=False,
                  command=["python", "-m", "ddpm", "train", "--data", "digits", "--preset", "tiny", "--out", "RUN"])
            evaluate_checkpoint(run / "checkpoint.pt", run, EvaluationOverrides(**EVAL_OPTIONS), device="cpu",
                                progress=False, command=EVAL_COMMAND)
        _CACHE["run"] = run
    return _CACHE["run"]


def read_metrics(run: Path) -> dict:
    """metrics.json of a run folder."""
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))
