"""The command line (`python -m ddpm`): help, one-line user errors with exit status 2, sample grids.

Most cases call `ddpm.cli.main(argv)` in-process (the same code path as the program, without the ~5 s of
importing torch per case); a few run `sys.executable -m ddpm` to check the real process: exit status, stderr,
no traceback.
"""

from __future__ import annotations

import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from ddpm.cli import main
from ddpm.evaluation.generate import SamplerOptions, generate
from ddpm.training.checkpoint import load_checkpoint, save_checkpoint
from ddpm.training.trainer import TrainOptions, train
from testkit.paths import REPO
from testkit.threads import one_thread

pytestmark = pytest.mark.usefixtures("one_torch_thread")


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory) -> Path:
    """A finished 3-update tiny run on digits (its folder)."""
    run = tmp_path_factory.mktemp("cli") / "run"
    with one_thread():
        train("digits", run, "tiny", options=TrainOptions(seed=2, max_steps=3), progress=False)
    return run


def run_main(argv: list[str], capsys) -> tuple[int, str, str]:
    status = main([str(a) for a in argv])
    captured = capsys.readouterr()
    return status, captured.out, captured.err


def assert_user_error(argv, capsys, fragment: str) -> None:
    status, out, err = run_main(argv, capsys)
    assert status == 2, (status, err)
    assert out == ""
    lines = err.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm: error: "), err
    assert "Traceback" not in err
    assert fragment in lines[0], lines[0]


def test_help_of_every_subcommand(capsys):
    for argv in ([], ["train"], ["sample"]):
        with pytest.raises(SystemExit) as info:
            main([*argv, "--help"])
        assert info.value.code == 0
        out = capsys.readouterr().out
        assert out.startswith("usage: ddpm")
    completed = subprocess.run([sys.executable, "-m", "ddpm", "train", "--help"], cwd=REPO, capture_output=True,
                               text=True, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 0 and "--max-minutes" in completed.stdout and completed.stderr == ""


# ----------------------------------------------------------------------------------------------------------
# train: bad input


def _folder(tmp_path: Path, name: str, sizes: list[tuple[int, int]], garbage: bool = False) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    for i, size in enumerate(sizes):
        Image.fromarray(np.full(size[::-1], 40 * i, dtype=np.uint8)).save(folder / f"{i}.png")
    if garbage:
        (folder / "broken.png").write_bytes(b"\x89PNG but not really")
    return folder


@pytest.mark.parametrize(("data", "fragment"), [
    ("cifar10", "unknown dataset 'cifar10'"),
    ("./no_such_folder", "does not exist"),
    ("EMPTY", "has no PNG or JPEG files"),
    ("BROKEN", "cannot read image"),
    ("MIXED", "differ in size"),
])
def test_train_bad_data(tmp_path, capsys, data, fragment):
    if data == "EMPTY":
        (tmp_path / "empty").mkdir()
        data = tmp_path / "empty"
    elif data == "BROKEN":
        data = _folder(tmp_path, "broken", [(8, 8), (8, 8)], garbage=True)
    elif data == "MIXED":
        data = _folder(tmp_path, "mixed", [(8, 8), (8, 8), (9, 8)])
    assert_user_error(["train", "--data", data, "--out", tmp_path / "out", "--preset", "tiny"], capsys, fragment)
    assert not (tmp_path / "out").exists(), "a refused run must not create its folder"


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--preset", "huge"], "unknown preset 'huge'"),
    (["--max-steps", "0"], "positive integer"),
    (["--max-steps", "ten"], "positive integer"),
    (["--max-minutes", "-1"], "positive number"),
    (["--max-minutes", "nan"], "positive number"),
    (["--seed", "-3"], "integer >= 0"),
    (["--device", "tpu"], "device"),
    (["--bogus"], "unrecognized arguments"),
])
def test_train_bad_arguments(tmp_path, capsys, extra, fragment):
    assert_user_error(["train", "--data", "digits", "--out", tmp_path / "out", *extra], capsys, fragment)


def test_train_needs_data_and_a_command(tmp_path, capsys):
    assert_user_error(["train", "--out", tmp_path / "out"], capsys, "--data is required")
    assert_user_error([], capsys, "required")
    assert_user_error(["fly"], capsys, "invalid choice")


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the message when CUDA is absent")
def test_train_cuda_without_cuda(tmp_path, capsys):
    assert_user_error(["train", "--data", "digits", "--out", tmp_path / "o", "--device", "cuda"], capsys,
                      "CUDA is not available")


def test_existing_run_is_never_clobbered(tmp_path, capsys, finished_run):
    before = {p.name: p.read_bytes() for p in finished_run.iterdir()}
    assert_user_error(["train", "--data", "digits", "--out", finished_run, "--preset", "tiny"], capsys, "not empty")
    (tmp_path / "notes.txt").write_text("mine")
    assert_user_error(["train", "--data", "digits", "--out", tmp_path, "--preset", "tiny"], capsys, "not empty")
    assert {p.name: p.read_bytes() for p in finished_run.iterdir()} == before


@pytest.mark.parametrize(("extra", "fragment"), [
    (["--preset", "small"], "preset 'tiny', not 'small'"),
    (["--seed", "9"], "seed 2, not 9"),
    (["--data", "mnist"], "trained on 'digits', not 'mnist'"),
])
def test_resume_must_match_the_run(capsys, finished_run, extra, fragment):
    before = (finished_run / "checkpoint.pt").read_bytes()
    assert_user_error(["train", "--out", finished_run, "--resume", *extra], capsys, fragment)
    assert (finished_run / "checkpoint.pt").read_bytes() == before


def test_resume_without_checkpoint(tmp_path, capsys):
    assert_user_error(["train", "--out", tmp_path / "nothing", "--resume"], capsys, "no checkpoint")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "run.json").write_text("{}")
    assert_user_error(["train", "--data", "digits", "--out", tmp_path / "half", "--resume"], capsys, "no checkpoint")


def test_resume_of_a_finished_run_does_nothing(capsys, finished_run):
    before = (finished_run / "checkpoint.pt").read_bytes()
    status, out, err = run_main(["train", "--out", finished_run, "--resume", "--no-progress"], capsys)
    assert status == 0 and "step 3 (max_steps)" in out
    assert (finished_run / "checkpoint.pt").read_bytes() == before


# ----------------------------------------------------------------------------------------------------------
# sample


def test_sample_writes_a_grid_of_the_generated_images(tmp_path, capsys, finished_run):
    num, seed = 10, 3
    out = tmp_path / "grid.png"
    status, stdout, err = run_main(["sample", "--checkpoint", finished_run / "checkpoint.pt", "--num", num,
                                    "--out", out, "--seed", seed, "--device", "cpu", "--no-progress"], capsys)
    assert status == 0, err
    columns = math.ceil(math.sqrt(num))
    rows = math.ceil(num / columns)
    pad, size = 2, 8
    picture = np.asarray(Image.open(out))
    assert picture.shape == (rows * size + (rows + 1) * pad, columns * size + (columns + 1) * pad)
    expected = generate(load_checkpoint(finished_run / "checkpoint.pt"), num, torch.Generator().manual_seed(seed),
                        progress=False)  # [N, 1, 8, 8], the same draws as the command
    for i in range(num):
        r, c = divmod(i, columns)
        top, left = pad + r * (size + pad), pad + c * (size + pad)
        assert np.array_equal(picture[top : top + size, left : left + size], expected[i, 0].numpy()), f"tile {i}"
    assert (picture[:pad] == 255).all() and (picture[:, :pad] == 255).all()
    blank = picture[pad + (rows - 1) * (size + pad):, pad + (num % columns) * (size + pad):]
    assert (blank == 255).all(), "cells after the last image stay padding"


def test_sample_bad_input(tmp_path, capsys, finished_run):
    checkpoint = finished_run / "checkpoint.pt"
    (tmp_path / "corrupt.pt").write_bytes(checkpoint.read_bytes()[:1000])
    mismatched = load_checkpoint(checkpoint)
    preset = mismatched.preset
    save_checkpoint(tmp_path / "mismatched.pt", mismatched.__class__(**{
        **mismatched.__dict__, "preset": preset.replace(model=preset.model.replace(base_channels=32))}))
    (tmp_path / "taken.png").write_bytes(b"mine")
    cases = [
        (["--checkpoint", tmp_path / "none.pt", "--out", tmp_path / "a.png"], "does not exist"),
        (["--checkpoint", tmp_path / "corrupt.pt", "--out", tmp_path / "a.png"], "not a readable checkpoint"),
        (["--checkpoint", tmp_path / "mismatched.pt", "--out", tmp_path / "a.png"], "does not match preset"),
        (["--checkpoint", checkpoint, "--out", tmp_path / "a.png", "--num", "0"], "positive integer"),
        (["--checkpoint", checkpoint, "--out", tmp_path / "a.png", "--variance", "big"], "invalid choice"),
        (["--checkpoint", checkpoint, "--out", tmp_path / "taken.png"], "exists"),
        (["--checkpoint", checkpoint, "--out", tmp_path / "a.jpg"], ".png"),
        (["--checkpoint", checkpoint, "--out", tmp_path / "no" / "a.png"], "does not exist"),
    ]
    for argv, fragment in cases:
        assert_user_error(["sample", *argv], capsys, fragment)
    assert (tmp_path / "taken.png").read_bytes() == b"mine"
    assert not (tmp_path / "a.png").exists()


@pytest.mark.parametrize("sampler, extra, evaluations", [
    ("ancestral", [], "T"),
    ("ddim", ["--steps", "7"], 7),
    ("ddim", ["--steps", "5", "--eta", "1"], 5),
    ("strided", ["--steps", "9", "--variance", "beta_tilde"], 9),
])
def test_sample_each_sampler_writes_png_and_npz(tmp_path, capsys, finished_run, sampler, extra, evaluations):
    """Each sampler draws the images `generate` draws with the same options; the npz holds them raw."""
    checkpoint = load_checkpoint(finished_run / "checkpoint.pt")
    out, npz = tmp_path / "grid.png", tmp_path / "raw.npz"
    status, stdout, err = run_main(["sample", "--checkpoint", finished_run / "checkpoint.pt", "--num", 5, "--out",
                                    out, "--npz", npz, "--seed", 4, "--sampler", sampler, *extra, "--device", "cpu",
                                    "--no-progress"], capsys)
    assert status == 0, err
    expected_evaluations = checkpoint.T if evaluations == "T" else evaluations
    assert f"{sampler}" in stdout and f"{expected_evaluations} network evaluations per image" in stdout, stdout
    options = dict(zip(extra[::2], extra[1::2], strict=True))
    steps = int(options["--steps"]) if "--steps" in options else None
    eta = float(options["--eta"]) if "--eta" in options else (0.0 if sampler == "ddim" else None)
    settings = SamplerOptions(sampler=sampler, num_steps=steps, eta=eta, variance=options.get("--variance"))
    expected = generate(checkpoint, 5, torch.Generator().manual_seed(4), settings, progress=False)
    with np.load(npz) as stored:
        assert stored["images"].dtype == np.uint8 and np.array_equal(stored["images"], expected.numpy())
    assert out.is_file()


def test_sample_bad_sampler_combinations(tmp_path, capsys, finished_run):
    checkpoint = finished_run / "checkpoint.pt"
    T = load_checkpoint(checkpoint).T
    base = ["sample", "--checkpoint", checkpoint, "--out", tmp_path / "a.png"]
    cases = [
        (["--sampler", "ddim"], "needs a number of steps"),
        (["--sampler", "ddim", "--steps", T + 1], f"1..T = {T}"),
        (["--sampler", "strided", "--steps", "0"], "positive integer"),
        (["--steps", "5"], "ancestral takes all T"),
        (["--eta", "0.5"], "eta applies to the ddim sampler only"),
        (["--sampler", "strided", "--steps", "5", "--eta", "1"], "eta applies to the ddim sampler only"),
        (["--sampler", "ddim", "--steps", "5", "--variance", "beta"], "DDIM's noise is set by eta"),
        (["--sampler", "ddim", "--steps", "5", "--eta", "-1"], "a number >= 0"),
        (["--sampler", "fast"], "invalid choice"),
        (["--npz", tmp_path / "a.npy"], ".npz"),
    ]
    for argv, fragment in cases:
        assert_user_error([*base, *argv], capsys, fragment)
    assert not (tmp_path / "a.png").exists()


# ----------------------------------------------------------------------------------------------------------
# The real process


@pytest.mark.parametrize("argv", [
    ["train", "--data", "nowhere_dataset", "--out", "{tmp}/o"],
    ["sample", "--checkpoint", "{tmp}/bad.pt", "--out", "{tmp}/a.png"],
    ["train", "--data", "digits", "--out", "{tmp}/o", "--max-minutes", "soon"],
])
def test_process_prints_one_line_and_exits_2(tmp_path, argv):
    (tmp_path / "bad.pt").write_bytes(b"garbage")
    command = [sys.executable, "-m", "ddpm", *(a.format(tmp=tmp_path) for a in argv)]
    completed = subprocess.run(command, cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert completed.returncode == 2
    assert completed.stdout == ""
    lines = completed.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("ddpm: error: ") and "Traceback" not in completed.stderr
