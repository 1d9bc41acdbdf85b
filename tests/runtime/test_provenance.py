"""ddpm.runtime.provenance: every recorded command is portable (python -m <module> <args>), never an interpreter's
path; the interpreter's version is recorded apart, in versions()["python"]."""

from __future__ import annotations

import os
import platform
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

import ddpm
from ddpm.runtime.provenance import (
    command_line,
    module_argv,
    module_command,
    portable_argv,
    portable_command,
    running_argv,
    versions,
)

PACKAGE = Path(ddpm.__file__).resolve().parent


@pytest.mark.parametrize("interpreter", [sys.executable, "/opt/venv/bin/python3", "/usr/bin/python3.11",
                                         r"C:\Python311\python.exe", "python"])
def test_an_interpreter_path_becomes_python_and_the_arguments_stay(interpreter):
    assert portable_argv([interpreter, "-m", "ddpm", "train", "--out", "a/b"]) == [
        "python", "-m", "ddpm", "train", "--out", "a/b"]
    assert portable_command(f"{interpreter} -m ddpm report a/b") == "python -m ddpm report a/b"


@pytest.mark.parametrize(("script", "expected"), [
    (PACKAGE / "__main__.py", ["python", "-m", "ddpm"]),
    (PACKAGE / "studies" / "sweep.py", ["python", "-m", "ddpm.studies.sweep"]),
    ("/elsewhere/checkout/ddpm/options_study.py", ["python", "-m", "ddpm.options_study"]),  # stored on another machine
    ("/opt/venv/bin/ddpm", ["python", "-m", "ddpm"]),
    (PACKAGE.parent / "tools" / "golden.py", ["python", "tools/golden.py"]),
    ("/opt/venv/bin/pytest", ["pytest"]),
    ("golden", ["golden"]),
])
def test_a_script_path_becomes_its_module_or_its_name(script, expected):
    words = portable_argv([str(script), "--x", "1"])
    assert words == [*expected, "--x", "1"]
    assert portable_command([str(script), "--x", "1"]) == " ".join(words)


def test_module_command_quotes_its_arguments():
    assert module_argv("ddpm", ["report", "my run"]) == ["python", "-m", "ddpm", "report", "my run"]
    assert module_command("ddpm", ["report", "my run"]) == "python -m ddpm report 'my run'"


def test_the_running_command_names_its_module_not_the_interpreter(monkeypatch):
    main = sys.modules["__main__"]
    monkeypatch.setattr(main, "__spec__", SimpleNamespace(name="ddpm.__main__"))
    monkeypatch.setattr(sys, "argv", [str(PACKAGE / "__main__.py"), "train", "--preset", "tiny"])
    assert running_argv() == ["python", "-m", "ddpm", "train", "--preset", "tiny"]
    assert command_line() == "python -m ddpm train --preset tiny"
    monkeypatch.setattr(main, "__spec__", None)  # run as a file: python ddpm/studies/sweep.py --json x
    monkeypatch.setattr(sys, "argv", [str(PACKAGE / "studies" / "sweep.py"), "--json", "x"])
    assert command_line() == "python -m ddpm.studies.sweep --json x"
    assert os.sep not in command_line().split()[0] and sys.executable not in command_line()


def test_the_interpreter_version_is_recorded_apart():
    assert versions()["python"] == platform.python_version()
