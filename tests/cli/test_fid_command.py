"""`python -m ddpm fid`: FID/KID of samples returned from elsewhere; every bad input is one line and exit status 2,
before any Inception pass. (Its measurement and the metrics.json it records: tests/studies/test_gpu_check.py.)"""

from __future__ import annotations

import json

import numpy as np
import pytest

from ddpm.cli import main
from ddpm.evaluation.sample_quality import reference_dataset


def write_samples(path, array, key="images"):
    np.savez_compressed(path, **{key: array})
    return path


@pytest.mark.parametrize("reference", ["mnist-train", "cifar10-test", "mnist", ""])
def test_unknown_references_name_the_options(reference):
    with pytest.raises(ValueError, match="use mnist-test, digits-test"):
        reference_dataset(reference)


def test_known_references_are_test_splits():
    assert reference_dataset("mnist-test") == "mnist" and reference_dataset("digits-test") == "digits"


@pytest.mark.parametrize(("name", "array", "key", "message"), [
    ("no-key.npz", np.zeros((4, 1, 8, 8), np.uint8), "samples", "has no array 'images' (it holds samples)"),
    ("float.npz", np.zeros((4, 1, 8, 8), np.float32), "images", "holds float32 [4, 1, 8, 8]; FID against digits "
                                                                 "needs uint8 [N, 1, 8, 8]"),
    ("shape.npz", np.zeros((4, 1, 28, 28), np.uint8), "images", "needs uint8 [N, 1, 8, 8]"),
    ("one.npz", np.zeros((1, 1, 8, 8), np.uint8), "images", "holds 1 images; FID compares N samples with N test"),
    ("many.npz", np.zeros((400, 1, 8, 8), np.uint8), "images", "N must lie in 2..297"),
])
def test_bad_sample_files_are_one_line(name, array, key, message, tmp_path, capsys):
    path = write_samples(tmp_path / name, array, key)
    code = main(["fid", "--samples", str(path), "--reference", "digits-test", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1, err


def test_a_missing_or_foreign_file_is_one_line(tmp_path, capsys):
    assert main(["fid", "--samples", str(tmp_path / "none.npz"), "--reference", "digits-test"]) == 2
    (tmp_path / "text.npz").write_text("not an archive")
    assert main(["fid", "--samples", str(tmp_path / "text.npz"), "--reference", "digits-test"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 2 and all(line.startswith("ddpm: error: cannot read samples from") for line in lines)


def test_a_run_without_an_evaluation_is_refused_before_measuring(tmp_path, capsys):
    path = write_samples(tmp_path / "s.npz", np.zeros((4, 1, 8, 8), np.uint8))
    code = main(["fid", "--samples", str(path), "--reference", "digits-test", "--run", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and "metrics.json' does not exist" in err


def test_a_count_that_differs_from_the_run_is_refused(tmp_path):
    from ddpm.evaluation.sample_quality import record_sample_quality

    (tmp_path / "metrics.json").write_text(json.dumps({"fid_num_samples": 16, "fid": None}))
    with pytest.raises(ValueError, match="describes 16 samples, the FID was measured on 8"):
        record_sample_quality(tmp_path, {"fid": 1.0, "fid_reference": {"num_images": 8}}, "python -m ddpm fid")
    assert json.loads((tmp_path / "metrics.json").read_text())["fid"] is None, "unchanged"
