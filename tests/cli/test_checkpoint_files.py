"""Every command that reads a checkpoint answers a file that is not one with one line and exit status 2.

The files come from `testkit.bad_checkpoints` (text, empty, zips, pickles that would run code). The line names
what the file is not, never suggests loading with weights_only=False, and no pickle is ever run. The commands run
in-process through `ddpm.cli.main`, as in tests/cli/test_cli.py; one case starts the real process.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from ddpm.cli import main
from testkit.bad_checkpoints import KINDS, MARKER, expected_fragment, write_bad_checkpoint
from testkit.paths import REPO


def _commands(checkpoint: Path, tmp: Path) -> dict[str, list[str]]:
    """Each command that takes a checkpoint, reading `checkpoint` (train --resume reads its folder's)."""
    return {
        "sample": ["sample", "--checkpoint", str(checkpoint), "--out", str(tmp / "a.png")],
        "evaluate": ["evaluate", "--checkpoint", str(checkpoint), "--out", str(tmp / "evaluation")],
        "bench": ["bench", "--quick", "--no-verify", "--checkpoint", str(checkpoint), "--out", str(tmp / "bench")],
        "train --resume": ["train", "--out", str(checkpoint.parent), "--resume", "--no-progress"],
    }


def _one_line_error(argv: list[str], capsys) -> str:
    status = main(argv)
    captured = capsys.readouterr()
    assert status == 2, (status, captured.err)
    assert captured.out == ""
    lines = captured.err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm: error: "), captured.err
    assert "Traceback" not in captured.err and "weights_only" not in captured.err
    return lines[0]


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_sample_refuses_each_kind_of_file(tmp_path, capsys, kind):
    path = write_bad_checkpoint(kind, tmp_path / "run")
    line = _one_line_error(_commands(path, tmp_path)["sample"], capsys)
    assert expected_fragment(kind) in line and str(path) in line
    assert not (path.parent / MARKER).exists(), "the pickle was run"
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("command", ["sample", "evaluate", "bench", "train --resume"])
def test_every_command_refuses_a_pickle_that_runs_code(tmp_path, capsys, command):
    path = write_bad_checkpoint("code_execution", tmp_path / "run")
    line = _one_line_error(_commands(path, tmp_path)[command], capsys)
    assert "needs code execution to load" in line and "this project never loads such files" in line
    assert not (path.parent / MARKER).exists(), "the pickle was run"
    assert sorted(os.listdir(tmp_path)) == ["run"], "nothing is written"


@pytest.mark.parametrize("command", ["sample", "evaluate", "bench", "train --resume"])
def test_every_command_says_when_the_checkpoint_is_missing(tmp_path, capsys, command):
    (tmp_path / "run").mkdir()
    path = tmp_path / "run" / "checkpoint.pt"
    line = _one_line_error(_commands(path, tmp_path)[command], capsys)
    assert str(path) in line
    assert ("no checkpoint at" if command == "train --resume" else "does not exist") in line


def test_process_sample_of_the_readme(tmp_path):
    command = [sys.executable, "-m", "ddpm", "sample", "--checkpoint", "README.md", "--out", str(tmp_path / "a.png")]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 2 and completed.stdout == ""
    assert completed.stderr.strip() == ("ddpm: error: 'README.md' is not a ddpm-verified checkpoint: not a torch zip "
                                        "archive; expected a checkpoint.pt written by python -m ddpm train")
