"""The GPU check (`python -m ddpm gpu-check`, `bash .ci/gpu`): its dry run on the CPU, what it refuses in one line,
what comes back under the device's limits, what travels under the carry limit, and the report assembled back here.

The dry run is the check itself with `--device cpu` and the tiny preset on the 8x8 digits: every stage runs (the
gpu tests are collected and skip without CUDA), so what a lent GPU machine runs is what runs here, less the CUDA work.
"""

from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import tarfile
from pathlib import Path

import numpy as np
import pytest

from ddpm.cli import main
from ddpm.studies import gpu_check
from testkit.paths import REPO

pytestmark = pytest.mark.usefixtures("one_torch_thread")

DRY_RUN = ["--device", "cpu", "--preset", "tiny", "--data", "digits", "--max-steps", "10", "--samples", "16"]


@pytest.fixture(scope="module")
def dry_run(tmp_path_factory) -> tuple[Path, Path, int, str]:
    """(the returned folder, the work folder, the exit status, stderr) of one dry run with the gpu tests."""
    root = tmp_path_factory.mktemp("gpu-check")
    out, work = root / "out", root / "work"
    completed = subprocess.run([sys.executable, "-m", "ddpm", "gpu-check", "--out", str(out), "--work", str(work),
                                *DRY_RUN], cwd=REPO, capture_output=True, text=True, timeout=600,
                               env={**os.environ, "PYTHONPATH": str(REPO)})
    return out, work, completed.returncode, completed.stderr


def test_the_dry_run_passes_every_stage(dry_run):
    out, _, code, stderr = dry_run
    assert code == 0, stderr
    summary = json.loads((out / gpu_check.SUMMARY).read_text())
    assert summary["passed"] is True and summary["failure"] is None
    assert list(summary["stages"]) == ["tests", "train", "evaluate", "throughput", "returned"]
    assert summary["stages"]["train"]["steps"] == 10
    assert summary["stages"]["evaluate"]["fid_num_samples"] == 16
    assert np.isfinite(summary["stages"]["evaluate"]["elbo_bits_per_dim"])
    assert summary["stages"]["throughput"]["forward_gflop_per_image"] > 0


def gpu_test_names(path: Path) -> set[str]:
    """The test functions of a file that are marked gpu (by its pytestmark or their own decorator)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    whole_file = any(isinstance(node, ast.Assign) and ast.unparse(node).startswith("pytestmark = pytest.mark.gpu")
                     for node in tree.body)
    return {node.name for node in tree.body if isinstance(node, ast.FunctionDef) and node.name.startswith("test_")
            and (whole_file or any(ast.unparse(d) == "pytest.mark.gpu" for d in node.decorator_list))}


def test_the_dry_run_collects_every_gpu_test_and_they_skip_without_cuda(dry_run):
    out, _, _, _ = dry_run
    tests = json.loads((out / gpu_check.SUMMARY).read_text())["stages"]["tests"]
    assert tests["passed"] == tests["failed"] == tests["errors"] == 0
    assert tests["skipped"] == len(tests["skip_reasons"])
    assert all(reason.endswith("needs CUDA") for reason in tests["skip_reasons"])
    ran = {reason.split(":")[0].split("[")[0] for reason in tests["skip_reasons"]}
    expected = set().union(*(gpu_test_names(REPO / path) for path in gpu_check.GPU_TEST_PATHS))
    assert ran == expected and "test_unet_forward_has_no_host_sync" in ran


def test_every_gpu_test_lives_where_the_check_runs_them():
    marked = {str(path.relative_to(REPO)) for path in (REPO / "tests").rglob("test_*.py") if gpu_test_names(path)}
    assert marked == set(gpu_check.GPU_TEST_PATHS)


def test_what_comes_back_is_the_returned_files_within_the_limits(dry_run):
    out, _, _, _ = dry_run
    assert sorted(p.name for p in out.iterdir()) == sorted(gpu_check.RETURNED)
    assert gpu_check.limit_violations(out) == []
    with tarfile.open(out / gpu_check.RUN_ARCHIVE) as archive:
        assert sorted(archive.getnames()) == sorted(gpu_check.ARCHIVED)
    with np.load(out / gpu_check.SAMPLES) as samples:
        assert samples["images"].dtype == np.uint8 and samples["images"].shape == (16, 1, 8, 8)
    log = (out / gpu_check.LOG).read_text()
    assert "python -m pytest -m gpu" in log and "sampling: 16 images by Algorithm 2" in log


def test_the_checkpoint_stays_in_the_work_folder(dry_run):
    out, work, _, _ = dry_run
    assert (work / "run" / "checkpoint.pt").is_file()
    assert not list(out.rglob("*.pt"))


def test_the_report_is_assembled_back_here_without_fid(dry_run, tmp_path):
    out, _, _, _ = dry_run
    code = main(["gpu-report", str(out), "--out", str(tmp_path / "report"), "--skip-fid", "--no-progress"])
    assert code == 0
    report = (tmp_path / "report" / "report.md").read_text()
    assert "not computed" in report
    summary = (tmp_path / "report" / gpu_check.SUMMARY_MD).read_text()
    assert summary.startswith("# GPU check\n\nPassed on cpu") and "gpu tests: 0 passed" in summary


@pytest.mark.slow
def test_fid_of_the_returned_samples_is_recorded_in_the_run(dry_run, tmp_path):
    out, _, _, _ = dry_run
    run = tmp_path / "run"
    assert main(["gpu-report", str(out), "--out", str(run), "--skip-fid", "--no-progress"]) == 0
    code = main(["fid", "--samples", str(run / gpu_check.SAMPLES), "--reference", "digits-test", "--run", str(run),
                 "--cache-dir", str(tmp_path / "cache"), "--no-progress"])  # never the user's cache
    assert code == 0
    metrics = json.loads((run / "metrics.json").read_text())
    assert metrics["fid_skipped"] is False and metrics["fid"] > 0 and metrics["fid_num_samples"] == 16
    assert metrics["fid_reference"]["num_images"] == 16 and metrics["fid_command"].startswith("python -m ddpm fid")
    assert len(list(run.glob("metrics.previous-*.json"))) == 1, "the evaluation without FID is kept"


@pytest.mark.parametrize(("arguments", "message"), [
    (["--device", "cuda"], "no CUDA device: torch "),
    (["--device", "cpu", "--data", "nothing-here"], "nothing-here"),
    (["--device", "cpu", "--preset", "huge"], "unknown preset 'huge'"),
])
def test_what_cannot_run_here_is_one_line_and_writes_nothing(arguments, message, tmp_path, capsys):
    import torch

    if arguments[1] == "cuda" and torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "out"
    code = main(["gpu-check", "--out", str(out), *arguments])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err
    assert not out.exists()


def test_a_non_empty_out_is_refused(tmp_path, capsys):
    (tmp_path / "kept.txt").write_text("a finished result")
    code = main(["gpu-check", "--out", str(tmp_path), *DRY_RUN])
    assert code == 2 and "not an empty folder" in capsys.readouterr().err
    assert [p.name for p in tmp_path.iterdir()] == ["kept.txt"]


def test_a_stage_that_breaks_fails_the_check_and_keeps_what_it_finished(tmp_path, monkeypatch, capsys):
    from ddpm.evaluation import evaluate

    def broken(*args, **kwargs):
        raise RuntimeError("CUDA error: an illegal memory access was encountered")

    monkeypatch.setattr(evaluate, "evaluate_checkpoint", broken)
    out = tmp_path / "out"
    code = main(["gpu-check", "--out", str(out), "--work", str(tmp_path / "work"), "--skip-tests", *DRY_RUN])
    assert code == 1 and "gpu-check FAILED: RuntimeError: CUDA error" in capsys.readouterr().err
    summary = json.loads((out / gpu_check.SUMMARY).read_text())
    assert summary["passed"] is False and list(summary["stages"]) == ["train"]
    assert "Traceback" in (out / gpu_check.LOG).read_text()


@pytest.mark.parametrize(("version", "fits"), [
    ("2.11.0+cu130", True), ("2.14.1", True), ("2.4.0", True), ("2.3.1", False), ("2.14.2", False), ("2.15.0", False),
])
def test_torch_outside_the_range_is_refused(version, fits):
    if fits:
        gpu_check.check_torch(version)
    else:
        with pytest.raises(gpu_check.CheckError, match=rf"torch {re.escape(version)} is outside"):
            gpu_check.check_torch(version)


def test_the_tests_outcome_fails_the_check_where_it_should():
    counts = {"returncode": 0, "passed": 0, "failed": 0, "errors": 0, "skipped": 17}
    import torch

    assert gpu_check.tests_failure(counts, torch.device("cpu")) is None
    assert gpu_check.tests_failure(counts, torch.device("cuda", 0)) == "gpu tests: none ran on CUDA"
    assert "1 failed" in gpu_check.tests_failure({**counts, "passed": 9, "failed": 1, "returncode": 1},
                                                 torch.device("cuda", 0))
    assert gpu_check.tests_failure({**counts, "returncode": 4}, torch.device("cpu")) is not None


@pytest.mark.parametrize("make", ["nine files", "a large file", "a bad name", "too deep"])
def test_limit_violations_finds_what_would_not_come_back(make, tmp_path):
    if make == "nine files":
        for i in range(9):
            (tmp_path / f"f{i}.txt").write_text("x")
    elif make == "a large file":
        with (tmp_path / "big.bin").open("wb") as f:
            f.truncate(gpu_check.RETURN_LIMITS.file_bytes + 1)
    elif make == "a bad name":
        (tmp_path / "a b.txt").write_text("x")
    else:
        (tmp_path / "a" / "b" / "c").mkdir(parents=True)
        (tmp_path / "a" / "b" / "c" / "f.txt").write_text("x")
    assert len(gpu_check.limit_violations(tmp_path)) == 1
    (tmp_path / "ok").mkdir()
    assert len(gpu_check.limit_violations(tmp_path / "ok")) == 0


def test_what_travels_fits_the_carry_limit():
    """The checkout (tracked and untracked, not ignored: what a device call sends) and the carried wheels, each wheel
    bounded by the installed files it unpacked to plus a zip entry's overhead (its contents are stored at least as
    compactly in the wheel)."""
    listed = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"], cwd=REPO,
                            capture_output=True, check=False)
    if listed.returncode != 0:
        pytest.skip("not a git checkout")
    checkout = sum((REPO / name).stat().st_size for name in listed.stdout.decode().split("\0")
                   if name and (REPO / name).is_file())
    wheels = 0
    for pin in gpu_check.CARRIED_WHEELS:
        name, version = pin.split("==")
        distribution = importlib.metadata.distribution(name)
        assert distribution.version == version, f"{name} {distribution.version} installed, {version} carried"
        wheels += sum((entry.size or 0) + 512 for entry in distribution.files or [])
    assert checkout + wheels < gpu_check.CARRY_BYTES, f"{checkout} + {wheels} bytes"


def test_carried_wheels_are_the_data_wheels_the_sessions_install():
    noxfile = (REPO / "noxfile.py").read_text()
    for pin in gpu_check.CARRIED_WHEELS:
        assert f'"{pin}"' in noxfile


def test_the_wrapper_refuses_a_python_without_torch(tmp_path):
    fake = tmp_path / "bin"
    fake.mkdir()
    (fake / "python3").write_text("#!/bin/sh\nexit 1\n")
    (fake / "python3").chmod(0o755)
    completed = subprocess.run(["bash", str(REPO / ".ci" / "gpu"), str(tmp_path / "out")], capture_output=True,
                               text=True, env={**os.environ, "PATH": f"{fake}:{os.environ['PATH']}"}, timeout=60)
    assert completed.returncode == 2 and "cannot import torch" in completed.stderr
    assert len(completed.stderr.strip().splitlines()) == 1


def test_the_wrapper_runs_the_check(tmp_path):
    """`bash .ci/gpu OUT ...` as on the lent machine, with this interpreter as its python3 (no tests: the dry run
    above runs them)."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "python3").write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
    (bin_dir / "python3").chmod(0o755)
    completed = subprocess.run(["bash", str(REPO / ".ci" / "gpu"), str(tmp_path / "out"), "--work",
                                str(tmp_path / "work"), "--skip-tests", *DRY_RUN], capture_output=True, text=True,
                               env={**os.environ, "PATH": f"{bin_dir}:{os.environ['PATH']}",
                                    "PYTHONPATH": str(REPO)}, timeout=600)
    assert completed.returncode == 0, completed.stderr
    assert json.loads((tmp_path / "out" / gpu_check.SUMMARY).read_text())["passed"] is True


def plan_record(predicted_end: float, session: float = 420.0) -> dict:
    return {"predicted_end_seconds": predicted_end, "session_seconds": session,
            "predicted_evaluation": {"sampling": 500.0}, "work": {"sample_forwards": 10**7}}


def test_an_evaluation_predicted_past_the_deadline_stops_the_check_before_training():
    assert gpu_check.overrun(plan_record(predicted_end=600.0)) == (
        "the evaluation is predicted to end at 10.0 min, past the deadline of 7.0 min (Algorithm 2 alone 8.3 min for "
        "10000000 network calls): lower --samples or raise --deadline-minutes")
    assert gpu_check.overrun(plan_record(predicted_end=419.0)) is None


def test_the_plan_sizes_training_and_is_returned(tmp_path):
    """Without --minutes and --max-steps the check plans its training from a measurement of this machine; a deadline
    that the evaluation's fixed cost alone would pass stops it before training, with the plan returned."""
    out = tmp_path / "out"
    arguments = ["gpu-check", "--work", str(tmp_path / "work"), "--skip-tests", "--device", "cpu", "--preset",
                 "tiny", "--data", "digits", "--samples", "8"]
    assert main([*arguments, "--out", str(out), "--deadline-minutes", "0.5"]) == 1
    summary = json.loads((out / gpu_check.SUMMARY).read_text())
    assert list(summary["stages"]) == ["plan"] and "is predicted to end at" in summary["failure"]
    plan = summary["stages"]["plan"]
    assert plan["speed"]["sampling_forwards_per_second"] > 0 and plan["work"]["sample_forwards"] == 8 * 100
    assert plan["work"]["inception_images"] == 0, "FID is measured back here, not planned there"
