"""Every file the project writes gets the permissions the umask gives a new file (0644 under umask 022), not 0600.

Files are written atomically (a temporary file from mkstemp, which is owner-only, then a rename), so the mode
must be set on purpose (`ddpm.runtime.files.new_file_mode`). The test runs train, evaluate, report, sample and bench
(tiny settings) and the conformance report under a non-default umask 027 and checks every file they leave.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from ddpm.cli import main
from ddpm.conformance.cases import SuiteConfig
from ddpm.conformance.report import write_report as write_conformance_report
from ddpm.conformance.runner import run_suite
from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint
from ddpm.evaluation.report import write_report
from ddpm.runtime.files import atomic_write_text, new_file_mode
from ddpm.studies.bench import BenchConfig, run_bench
from ddpm.training.trainer import TrainOptions, train
from testkit.runs import EVAL_OPTIONS
from testkit.threads import one_thread


@pytest.fixture
def umask():
    """Set a umask for the test and restore the previous one."""
    previous = os.umask(0o022)

    def set_umask(value: int) -> int:
        os.umask(value)
        return 0o666 & ~value

    yield set_umask
    os.umask(previous)


def _modes(folder: Path) -> dict[str, int]:
    return {str(p.relative_to(folder)): stat.S_IMODE(p.stat().st_mode) for p in folder.rglob("*") if p.is_file()}


@pytest.mark.parametrize("mask", [0o022, 0o027, 0o002])
def test_atomic_write_follows_the_umask(tmp_path, umask, mask):
    expected = umask(mask)
    assert new_file_mode() == expected
    atomic_write_text(tmp_path / "a.txt", "x")
    assert stat.S_IMODE((tmp_path / "a.txt").stat().st_mode) == expected
    assert [p.name for p in tmp_path.iterdir()] == ["a.txt"], "no temporary file is left"


@pytest.mark.slow
def test_every_file_train_evaluate_report_sample_bench_and_conform_write(tmp_path, umask, capsys):
    expected = umask(0o027)  # 0640: distinguishable from both 0600 and the usual 0644
    run, out = tmp_path / "run", tmp_path / "out"
    out.mkdir()
    with one_thread():
        train("digits", run, "tiny", options=TrainOptions(seed=0, max_steps=3), device="cpu", progress=False)
        evaluate_checkpoint(run / "checkpoint.pt", run, EvaluationOverrides(**EVAL_OPTIONS), device="cpu",
                            progress=False, command="test")
        write_report(run)
        assert main(["sample", "--checkpoint", str(run / "checkpoint.pt"), "--num", "2", "--out", str(out / "s.png"),
                     "--npz", str(out / "s.npz"), "--device", "cpu", "--no-progress"]) == 0
        config = BenchConfig(preset="tiny", data="digits", threads=1, sample_batch=2, sample_repeats=1,
                             compile_sampler=False, train_steps=1, train_repeats=1, bound_images=2,
                             bound_batch_sizes=(50,), bound_repeats=1, checkpoint=None, fallback_train_minutes=None,
                             fallback_train_steps=2, mc_images=16, mc_exact_images=2, verify=False,
                             peak_matmul_size=64, peak_repeats=1)
        run_bench(config, out / "bench", command="test", mode="custom")
    small = SuiteConfig(strided_steps=5, ddim_steps=5, chain_samples=50, loss_batches=3, loss_batch=10)
    runs, skipped = run_suite(["testkit.broken_adapters:conformant"], small, progress=False)
    write_conformance_report(out / "conformance", runs, SuiteConfig(), skipped, 0.0, "test")
    capsys.readouterr()
    modes = {**_modes(run), **{f"out/{k}": v for k, v in _modes(out).items()}}
    for name in ("checkpoint.pt", "run.json", "train_log.jsonl", "metrics.json", "elbo_terms.json", "samples.png",
                 "optimal_variance.json", "samples_uint8.npz", "trajectory.png", "report.md", "report.html",
                 "out/s.png", "out/s.npz",
                 "out/bench/bench.json", "out/bench/bench.md", "out/conformance/conformance.md",
                 "out/conformance/conformance.json"):
        assert name in modes, f"{name} was not written (files: {sorted(modes)})"
    wrong = {name: oct(mode) for name, mode in modes.items() if mode != expected}
    assert not wrong, f"files without mode {oct(expected)}: {wrong}"
