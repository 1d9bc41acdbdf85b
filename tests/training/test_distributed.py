"""torchrun + DistributedDataParallel (gloo, CPU): 2 processes train the same model as 1 process.

Both runs use the same seed and the same global batch (tiny preset: 64 digits per update); each of the 2
processes draws the whole batch's indices, t and eps and keeps its half by rank, so the averaged gradient equals
the one-process gradient up to float32 summation order (tolerance `DISTRIBUTED_WEIGHTS` in testkit/tolerances.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest
from numpy.testing import assert_allclose

from ddpm.training.checkpoint import load_checkpoint
from ddpm.training.trainer import LOG_NAME, TrainOptions, train
from testkit import tolerances
from testkit.paths import REPO
from testkit.threads import one_thread

STEPS = 10  # the tiny preset logs every 10 updates: one log line, its loss averaged over both processes


@pytest.mark.slow
def test_two_processes_train_the_one_process_model(tmp_path):
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", "2",
               "-m", "ddpm", "train", "--data", "digits", "--out", str(tmp_path / "two"), "--preset", "tiny",
               "--max-steps", str(STEPS), "--seed", "1", "--device", "cpu", "--no-progress"]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    completed = subprocess.run(command, cwd=REPO, env=env, capture_output=True, text=True, timeout=300)
    assert completed.returncode == 0, completed.stderr[-3000:]
    assert completed.stdout.count("ddpm: step") == 1, "only rank 0 reports"

    with one_thread():
        train("digits", tmp_path / "one", "tiny", options=TrainOptions(seed=1, max_steps=STEPS), device="cpu",
              progress=False)

    one = load_checkpoint(tmp_path / "one" / "checkpoint.pt")
    two = load_checkpoint(tmp_path / "two" / "checkpoint.pt")
    assert (two.world_size, len(two.rng_states), two.step, two.images_seen) == (2, 2, STEPS, STEPS * 64)
    assert sorted(p.name for p in (tmp_path / "two").iterdir()) == ["checkpoint.pt", "run.json", LOG_NAME]
    for name in ("model_state", "ema_state"):
        for key, value in getattr(one, name).items():
            assert_allclose(getattr(two, name)[key].numpy(), value.numpy(),
                            **tolerances.DISTRIBUTED_WEIGHTS.kwargs(),
                            err_msg=f"{name}[{key}]: 2 processes vs 1 with the same global batch")
    one_log = (tmp_path / "one" / LOG_NAME).read_text().splitlines()
    two_log = (tmp_path / "two" / LOG_NAME).read_text().splitlines()
    assert len(one_log) == len(two_log) == 1, "rank 0 alone writes the log"
    assert_allclose(json.loads(two_log[0])["loss"], json.loads(one_log[0])["loss"], **tolerances.FLOAT32.kwargs(),
                    err_msg="the logged loss is the mean over both processes' halves")
