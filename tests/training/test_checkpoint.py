"""Checkpoints (`ddpm.training.checkpoint`): round trip, atomic writes, and one-line errors for bad files."""

from __future__ import annotations

import dataclasses
import os
import zipfile

import numpy as np
import pytest
import torch

from ddpm.core.schedules import make_betas
from ddpm.images.data import MinibatchSampler, dataset_info
from ddpm.runtime.files import atomic_write
from ddpm.runtime.provenance import versions
from ddpm.training.checkpoint import (
    Checkpoint,
    CheckpointError,
    build_eps_model,
    diffusion_from,
    load_checkpoint,
    save_checkpoint,
)
from ddpm.training.config import get_preset
from ddpm.training.model import build_unet
from testkit.bad_checkpoints import KINDS, MARKER, expected_fragment, write_bad_checkpoint


def make_checkpoint(preset_name: str = "tiny", step: int = 3) -> Checkpoint:
    """A checkpoint of a freshly initialised tiny U-Net (EMA weights perturbed so they differ from the raw ones)."""
    preset = get_preset(preset_name)
    torch.manual_seed(0)  # test-local: initial weights
    model = build_unet(preset.model, 1, (8, 8), preset.training.T)
    ema_state = {k: v + 0.01 for k, v in model.state_dict().items()}
    optimizer = torch.optim.Adam(model.parameters())
    sampler = MinibatchSampler(1500, preset.training.batch_size, torch.Generator().manual_seed(1))
    next(sampler)
    return Checkpoint(
        preset=preset, dataset="digits", dataset_info=dataset_info("digits"), seed=4, step=step,
        betas=make_betas(preset.training.schedule, preset.training.T), model_state=model.state_dict(),
        ema_state=ema_state, optimizer_state=optimizer.state_dict(), sampler_state=sampler.state_dict(),
        loss_generator_state=torch.Generator().manual_seed(2).get_state(),
        rng_states=({"cpu": torch.get_rng_state(), "cuda": None},), epoch=1, images_seen=step * 64,
        train_seconds=1.5, versions=versions(),
    )


def test_round_trip_keeps_every_field(tmp_path):
    original = make_checkpoint()
    save_checkpoint(tmp_path / "c.pt", original)
    loaded = load_checkpoint(tmp_path / "c.pt")
    for field in dataclasses.fields(Checkpoint):
        a, b = getattr(original, field.name), getattr(loaded, field.name)
        if field.name == "betas":
            assert b.dtype == np.float64 and np.array_equal(a, b)
        elif field.name in ("model_state", "ema_state"):
            assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
        elif field.name == "loss_generator_state":
            assert torch.equal(a, b)
        elif field.name in ("optimizer_state", "sampler_state", "rng_states"):
            continue  # compared through their use in tests/training/test_trainer.py (bitwise resume)
        else:
            assert a == b, field.name
    assert loaded.T == 100 and (loaded.channels, loaded.height, loaded.width) == (1, 8, 8)
    assert loaded.train_images_per_second == pytest.approx(3 * 64 / 1.5)


def test_build_eps_model_uses_the_ema_weights_and_the_trained_T(tmp_path):
    checkpoint = make_checkpoint()
    ema_model = build_eps_model(checkpoint)
    raw_model = build_eps_model(checkpoint, use_ema=False)
    assert not ema_model.training and not any(p.requires_grad for p in ema_model.parameters())
    for key, value in ema_model.state_dict().items():
        assert torch.equal(value, checkpoint.ema_state[key])
        assert torch.equal(raw_model.state_dict()[key], checkpoint.model_state[key])
    diffusion = diffusion_from(checkpoint)
    assert diffusion.T == checkpoint.T
    assert np.array_equal(diffusion.betas[1:].numpy(), checkpoint.betas)


def test_failed_write_leaves_the_previous_checkpoint_intact(tmp_path, monkeypatch):
    path = tmp_path / "checkpoint.pt"
    save_checkpoint(path, make_checkpoint(step=3))
    before = path.read_bytes()

    def broken_save(obj, f, *args, **kwargs):
        f.write(b"PK\x03\x04 half a checkpoint")  # some bytes reach the file, then the disk fills up
        raise OSError("No space left on device")

    monkeypatch.setattr(torch, "save", broken_save)
    with pytest.raises(OSError, match="No space"):
        save_checkpoint(path, make_checkpoint(step=4))
    monkeypatch.undo()
    assert path.read_bytes() == before
    assert load_checkpoint(path).step == 3
    assert sorted(os.listdir(tmp_path)) == ["checkpoint.pt"], "the temporary file must be removed"


def test_interrupt_during_write_leaves_the_target_untouched(tmp_path):
    path = tmp_path / "file.txt"
    path.write_text("old")

    def interrupted(f):
        f.write(b"new, partial")
        raise KeyboardInterrupt

    with pytest.raises(KeyboardInterrupt):
        atomic_write(path, interrupted)
    assert path.read_text() == "old" and os.listdir(tmp_path) == ["file.txt"]
    atomic_write(path, lambda f: f.write(b"new"))
    assert path.read_text() == "new"


def _error(path) -> str:
    with pytest.raises(CheckpointError) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert "\n" not in message
    return message


def test_missing_file_and_folder(tmp_path):
    assert "does not exist" in _error(tmp_path / "nope.pt")
    assert "is a folder" in _error(tmp_path)


@pytest.mark.parametrize("content", [b"", b"not a checkpoint at all", b"\x80\x02K\x01."])
def test_garbage_is_not_a_checkpoint(tmp_path, content):
    path = tmp_path / "c.pt"
    path.write_bytes(content)
    assert "not a" in _error(path)


@pytest.mark.parametrize("fraction", [0.1, 0.5, 0.99])
def test_truncated_checkpoint(tmp_path, fraction):
    good = tmp_path / "good.pt"
    save_checkpoint(good, make_checkpoint())
    data = good.read_bytes()
    bad = tmp_path / "bad.pt"
    bad.write_bytes(data[: int(len(data) * fraction)])
    assert "not a readable checkpoint" in _error(bad)


def test_foreign_dicts_are_refused(tmp_path):
    torch.save({"weights": torch.zeros(2)}, tmp_path / "other.pt")
    assert "not a ddpm-verified checkpoint: a torch file holding a dict without format" in _error(tmp_path / "other.pt")
    torch.save([torch.zeros(2)], tmp_path / "list.pt")
    assert "a torch file holding list" in _error(tmp_path / "list.pt")


@pytest.mark.parametrize("kind", sorted(KINDS))
def test_files_that_are_not_checkpoints_get_one_line_without_unsafe_advice(tmp_path, kind):
    path = write_bad_checkpoint(kind, tmp_path / "files")
    message = _error(path)
    assert expected_fragment(kind) in message
    assert message.startswith(repr(str(path)))
    assert "expected a checkpoint.pt written by python -m ddpm train" in message
    assert "weights_only" not in message and "Traceback" not in message
    assert not (path.parent / MARKER).exists(), "the pickle was run"


def test_code_execution_names_what_the_pickle_would_import(tmp_path):
    message = _error(write_bad_checkpoint("code_execution", tmp_path))
    assert f"{os.mkdir.__module__}.mkdir" in message and "this project never loads such files" in message
    message = _error(write_bad_checkpoint("custom_class", tmp_path))
    assert "testkit.bad_checkpoints.CustomObject" in message
    torch.save(torch.nn.Linear(2, 2), tmp_path / "module.pt")
    assert "torch.nn.modules.linear.Linear" in _error(tmp_path / "module.pt")


def test_a_zip_whose_pickle_record_is_corrupt(tmp_path):
    with zipfile.ZipFile(tmp_path / "c.pt", "w") as archive:
        archive.writestr("archive/data.pkl", b"\xff not a pickle")
    assert "not a readable checkpoint: a zip archive whose archive/data.pkl record is not a well-formed pickle" in (
        _error(tmp_path / "c.pt"))


def _save_modified(tmp_path, **changes) -> str:
    """Save a good checkpoint, then rewrite fields of its payload; return the load error."""
    path = tmp_path / "c.pt"
    save_checkpoint(path, make_checkpoint())
    payload = torch.load(path, weights_only=True)
    payload.update(changes)
    torch.save(payload, path)
    return _error(path)


def test_other_format_version(tmp_path):
    assert "format_version 2" in _save_modified(tmp_path, format_version=2)


def test_weights_of_another_model_are_a_mismatch(tmp_path):
    preset = get_preset("tiny").to_dict()
    preset["model"]["base_channels"] = 32  # the stored weights are those of base_channels = 16
    message = _save_modified(tmp_path, preset=preset)
    assert "does not match preset 'tiny'" in message


def test_missing_and_mistyped_fields(tmp_path):
    assert "'step'" in _save_modified(tmp_path, step="3")
    assert "'ema_state'" in _save_modified(tmp_path, ema_state=None)
    assert "betas" in _save_modified(tmp_path, betas=torch.zeros(100, dtype=torch.float64))
    assert "betas" in _save_modified(tmp_path, betas=torch.full((99,), 0.01, dtype=torch.float64))
    assert "bad preset" in _save_modified(tmp_path, preset={"name": "tiny"})
    checkpoint = make_checkpoint()
    state = dict(checkpoint.ema_state)
    state["input_conv.weight"] = torch.zeros(3)
    assert "input_conv.weight has shape (3,)" in _save_modified(tmp_path, ema_state=state)
