"""The settings of the tiny trained-and-evaluated run (the `evaluated_run` fixture, tests/evaluation/conftest.py).

The `tiny` preset on sklearn's digits for TRAIN_STEPS updates, evaluated with FID skipped and small sample counts
(EVAL_OPTIONS); the commands the run records are TRAIN_COMMAND and EVAL_COMMAND. The tests that read the run compare
its files with these settings, and other tests evaluate with the same small options.
"""

from __future__ import annotations

import json
from pathlib import Path

TRAIN_STEPS = 60
EVAL_OPTIONS = dict(fid_samples=16, skip_fid=True, elbo_exact_images=8, elbo_mc_images=0, sample_batch_size=16)
TRAIN_COMMAND = ["python", "-m", "ddpm", "train", "--data", "digits", "--preset", "tiny", "--out", "RUN"]
EVAL_COMMAND = "python -m ddpm evaluate --checkpoint RUN/checkpoint.pt --out RUN --skip-fid (test fixture)"


def read_metrics(run: Path) -> dict:
    """metrics.json of a run folder."""
    return json.loads((run / "metrics.json").read_text(encoding="utf-8"))
