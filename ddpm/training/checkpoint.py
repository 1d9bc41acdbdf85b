"""Training checkpoints: one file holds everything a run needs to continue exactly or to be evaluated.

File format (format_version 1): `torch.save` of a dict of plain values and tensors only (no pickled classes),
read back with `torch.load(weights_only=True)`, so loading a checkpoint cannot execute code. Keys:

    format ("ddpm-verified checkpoint"), format_version, preset (`Preset.to_dict()`), dataset (the --data
    string: "mnist", "digits" or a folder's absolute path), dataset_info (`DatasetInfo` fields), seed, step
    (updates done), epoch, images_seen, train_seconds, betas (float64 [T]), model_state, ema_state,
    optimizer_state, sampler_state (`MinibatchSampler.state_dict()`), loss_generator_state (the generator of
    t and eps), rng_states (one {"cpu", "cuda"} pair of torch's global RNG states per process, for dropout),
    world_size, device, versions {python, torch, numpy, ddpm} (`ddpm.runtime.provenance.versions`).

Writes are atomic (`ddpm.runtime.files.atomic_write`): the bytes go to a temporary file in the same folder, are
flushed and fsync'ed, and `os.replace` renames it over the target; a failure at any point removes the temporary
file and leaves the previous checkpoint as it was. `load_checkpoint` validates everything it returns (format, version,
preset, shapes of both weight sets against the preset's U-Net, betas) and raises `CheckpointError` (a
ValueError) with a one-line message otherwise. Before torch.load it reads only bytes and the zip directory, so a
file that is not a torch zip archive (a text file, an empty file, a plain pickle) or a zip archive without a
torch.save record is named as such; a torch file that torch.load(weights_only=True) refuses is one that needs code
execution to load, and the message says so and names the globals its pickle imports (read from its opcodes, never
run). torch's own message, which suggests loading with weights_only=False, is never passed on: this project never
loads such files.
"""

from __future__ import annotations

import dataclasses
import os
import pickle
import pickletools
import zipfile
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import ddpm
from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.schedules import validate_betas
from ddpm.images.data import DatasetInfo
from ddpm.runtime.files import atomic_write
from ddpm.training.config import Preset
from ddpm.training.model import UNet, build_unet

Tensor = torch.Tensor

FORMAT = "ddpm-verified checkpoint"
FORMAT_VERSION = 1
CHECKPOINT_NAME = "checkpoint.pt"  # DIR/checkpoint.pt of a training run


class CheckpointError(ValueError):
    """A checkpoint file that is missing, unreadable, of another format or version, or inconsistent; one line."""


@dataclass(frozen=True)
class Checkpoint:
    """The state of a training run after `step` updates (see the module docstring for the file layout)."""

    preset: Preset
    dataset: str
    dataset_info: DatasetInfo
    seed: int
    step: int
    betas: np.ndarray  # float64 [T], betas[t - 1] = beta_t
    model_state: dict[str, Tensor]
    ema_state: dict[str, Tensor]
    optimizer_state: dict
    sampler_state: dict
    loss_generator_state: Tensor
    rng_states: tuple[dict, ...] = ()
    epoch: int = 0
    images_seen: int = 0
    train_seconds: float = 0.0
    world_size: int = 1
    device: str = "cpu"
    versions: dict[str, str] = field(default_factory=dict)
    format_version: int = FORMAT_VERSION

    @property
    def T(self) -> int:
        """Number of diffusion steps the model was trained with."""
        return int(self.betas.shape[0])

    @property
    def channels(self) -> int:
        return self.dataset_info.channels

    @property
    def height(self) -> int:
        return self.dataset_info.height

    @property
    def width(self) -> int:
        return self.dataset_info.width

    @property
    def train_images_per_second(self) -> float:
        """Training throughput over the whole run: images_seen / train_seconds (0 before the first update)."""
        return self.images_seen / self.train_seconds if self.train_seconds > 0 else 0.0


# ----------------------------------------------------------------------------------------------------------
# Save and load


def save_checkpoint(path: str | os.PathLike, checkpoint: Checkpoint) -> None:
    """Write `checkpoint` to `path` atomically (the previous file survives any failure)."""
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "preset": checkpoint.preset.to_dict(),
        "dataset": checkpoint.dataset,
        "dataset_info": dataclasses.asdict(checkpoint.dataset_info),
        "seed": int(checkpoint.seed),
        "step": int(checkpoint.step),
        "epoch": int(checkpoint.epoch),
        "images_seen": int(checkpoint.images_seen),
        "train_seconds": float(checkpoint.train_seconds),
        "betas": torch.as_tensor(np.asarray(checkpoint.betas, dtype=np.float64)),
        "model_state": checkpoint.model_state,
        "ema_state": checkpoint.ema_state,
        "optimizer_state": checkpoint.optimizer_state,
        "sampler_state": checkpoint.sampler_state,
        "loss_generator_state": checkpoint.loss_generator_state,
        "rng_states": list(checkpoint.rng_states),
        "world_size": int(checkpoint.world_size),
        "device": str(checkpoint.device),
        "versions": {str(k): str(v) for k, v in checkpoint.versions.items()},
    }
    atomic_write(path, lambda f: torch.save(payload, f))


_REQUIRED = {
    "preset": dict, "dataset": str, "dataset_info": dict, "seed": int, "step": int, "epoch": int,
    "images_seen": int, "train_seconds": float, "betas": Tensor, "model_state": dict, "ema_state": dict,
    "optimizer_state": dict, "sampler_state": dict, "loss_generator_state": Tensor, "rng_states": list,
    "world_size": int, "device": str, "versions": dict,
}


def _one_line(error: BaseException) -> str:
    text = str(error).strip().splitlines()
    return f"{type(error).__name__}: {text[0]}" if text else type(error).__name__


_EXPECTED = "expected a checkpoint.pt written by python -m ddpm train"
_ZIP_MAGIC = b"PK\x03\x04"  # a zip archive's first local file header; torch.save writes one
# The modules whose globals the pickle of tensors and plain containers names (storages, dtypes, rebuild functions)
_PLAIN_MODULES = frozenset({"torch", "torch._utils", "collections", "builtins", "__builtin__", "_codecs"})


def _not_a_checkpoint(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{str(path)!r} is not a ddpm-verified checkpoint: {what}; {_EXPECTED}")


def _unreadable(path: Path, what: str) -> CheckpointError:
    return CheckpointError(f"{str(path)!r} is not a readable checkpoint: {what}; {_EXPECTED}")


def _pickle_globals(archive: zipfile.ZipFile, record: str) -> list[str] | None:
    """The "module.name" globals the pickle `record` imports, found by reading its opcodes (nothing is run);
    None when the record is not a well-formed pickle."""
    found: list[str] = []
    strings: list[str] = []
    try:
        for opcode, argument, _ in pickletools.genops(archive.read(record)):
            if opcode.name == "GLOBAL":
                found.append(str(argument).replace(" ", "."))
            elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                found.append(f"{strings[-2]}.{strings[-1]}")
            if isinstance(argument, str) and "UNICODE" in opcode.name:
                strings.append(argument)
    except Exception:  # any failure to read or parse (bad opcode, truncation, CRC) means a corrupt record
        return None
    return found


def _check_archive(path: Path) -> str:
    """The name of the pickle record of the torch zip archive at `path`; CheckpointError for any other file.

    Only the file's bytes and the zip directory are read here: nothing is unpickled.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(len(_ZIP_MAGIC))
        if not head:
            raise _not_a_checkpoint(path, "the file is empty")
        if not zipfile.is_zipfile(path):
            if head == _ZIP_MAGIC:
                raise _unreadable(path, "a truncated or corrupt zip archive")
            raise _not_a_checkpoint(path, "not a torch zip archive")
        with zipfile.ZipFile(path) as archive:
            records = [name for name in archive.namelist() if name.rsplit("/", 1)[-1] == "data.pkl"]
    except OSError as error:
        raise CheckpointError(f"checkpoint {str(path)!r} cannot be read ({_one_line(error)})") from None
    except zipfile.BadZipFile:
        raise _unreadable(path, "a truncated or corrupt zip archive") from None
    if len(records) != 1:
        raise _not_a_checkpoint(path, "a zip archive without a ddpm-verified checkpoint (no torch data.pkl record)")
    return records[0]


def _load_error(path: Path, record: str, error: Exception) -> CheckpointError:
    """The one-line CheckpointError for a torch zip archive that torch.load(weights_only=True) refused.

    torch's own message goes on to suggest loading with weights_only=False, that is, running whatever the file
    asks for: it is never passed on.
    """
    try:
        with zipfile.ZipFile(path) as archive:
            imported = _pickle_globals(archive, record)
    except (OSError, zipfile.BadZipFile):
        imported = None
    if imported is None:
        return _unreadable(path, f"a zip archive whose {record} record is not a well-formed pickle")
    if isinstance(error, pickle.UnpicklingError):
        foreign = sorted({name for name in imported if name.rsplit(".", 1)[0] not in _PLAIN_MODULES})
        named = f": {', '.join(foreign[:3])}" if foreign else ""
        return _not_a_checkpoint(path, f"it needs code execution to load (pickled objects other than tensors and "
                                       f"plain containers{named}); this project never loads such files")
    detail = _one_line(error)
    detail = "" if "weights_only" in detail else f" ({detail})"
    return _unreadable(path, f"a torch zip archive that torch cannot read{detail}")


def _read_payload(path: Path, map_location) -> dict:
    if not path.exists():
        raise CheckpointError(f"checkpoint {str(path)!r} does not exist")
    if path.is_dir():
        raise CheckpointError(f"checkpoint {str(path)!r} is a folder; give the file (e.g. {path / CHECKPOINT_NAME})")
    record = _check_archive(path)
    try:
        payload = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as error:  # unpickling, zip, EOF, ... : any failure means the file is not usable
        raise _load_error(path, record, error) from None
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        holds = f"a dict without format {FORMAT!r}" if isinstance(payload, dict) else type(payload).__name__
        raise _not_a_checkpoint(path, f"a torch file holding {holds}")
    version = payload.get("format_version")
    if version != FORMAT_VERSION:
        raise CheckpointError(
            f"{str(path)!r} has checkpoint format_version {version!r}; this ddpm {ddpm.__version__} reads "
            f"version {FORMAT_VERSION}"
        )
    for key, kind in _REQUIRED.items():
        value = payload.get(key)
        ok = isinstance(value, kind) and not (kind is int and isinstance(value, bool))
        if kind is float:
            ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        if not ok:
            raise CheckpointError(f"{str(path)!r} is corrupt: field {key!r} is missing or not a {kind.__name__}")
    return payload


def _check_state(name: str, state: dict, expected: dict[str, Tensor], preset: str, where: str) -> None:
    missing = sorted(set(expected) - set(state))
    unexpected = sorted(set(state) - set(expected))
    if missing or unexpected:
        detail = f"missing {missing[:3]}" if missing else f"unexpected {unexpected[:3]}"
        raise CheckpointError(f"{where}: {name} does not match preset {preset!r}'s U-Net ({detail})")
    for key, reference in expected.items():
        value = state[key]
        if not isinstance(value, Tensor) or tuple(value.shape) != tuple(reference.shape):
            got = tuple(value.shape) if isinstance(value, Tensor) else type(value).__name__
            raise CheckpointError(
                f"{where}: {name} does not match preset {preset!r}'s U-Net ({key} has shape {got}, "
                f"expected {tuple(reference.shape)})"
            )
        if value.dtype != reference.dtype:
            raise CheckpointError(f"{where}: {name}[{key}] has dtype {value.dtype}, expected {reference.dtype}")


def load_checkpoint(path: str | os.PathLike, map_location: str | torch.device = "cpu") -> Checkpoint:
    """Read and validate the checkpoint at `path` (tensors on `map_location`); CheckpointError on any problem."""
    path = Path(path)
    where = repr(str(path))
    payload = _read_payload(path, map_location)
    try:
        preset = Preset.from_dict(payload["preset"])
        info = DatasetInfo(**payload["dataset_info"])
    except (ValueError, TypeError) as error:
        raise CheckpointError(f"{where} is corrupt: bad preset or dataset info ({_one_line(error)})") from None
    betas_tensor = payload["betas"]
    if betas_tensor.dtype != torch.float64 or betas_tensor.ndim != 1:
        raise CheckpointError(f"{where} is corrupt: betas must be a float64 vector")
    try:
        betas = validate_betas(betas_tensor.cpu().numpy())
    except ValueError as error:
        raise CheckpointError(f"{where} is corrupt: bad betas ({_one_line(error)})") from None
    if betas.shape[0] != preset.training.T:
        raise CheckpointError(f"{where} is corrupt: {betas.shape[0]} betas for T = {preset.training.T}")
    for key in ("step", "epoch", "images_seen", "seed"):
        if payload[key] < 0:
            raise CheckpointError(f"{where} is corrupt: {key} = {payload[key]} is negative")
    if payload["world_size"] < 1 or payload["train_seconds"] < 0:
        raise CheckpointError(f"{where} is corrupt: world_size or train_seconds out of range")
    try:
        with torch.device("meta"):
            reference = _unet(preset, info, preset.training.T).state_dict()
    except ValueError as error:
        raise CheckpointError(f"{where}: preset {preset.name!r} does not fit the data ({_one_line(error)})") from None
    _check_state("model_state", payload["model_state"], reference, preset.name, where)
    _check_state("ema_state", payload["ema_state"], reference, preset.name, where)
    return Checkpoint(
        preset=preset,
        dataset=payload["dataset"],
        dataset_info=info,
        seed=payload["seed"],
        step=payload["step"],
        betas=betas,
        model_state=payload["model_state"],
        ema_state=payload["ema_state"],
        optimizer_state=payload["optimizer_state"],
        sampler_state=payload["sampler_state"],
        loss_generator_state=payload["loss_generator_state"],
        rng_states=tuple(payload["rng_states"]),
        epoch=payload["epoch"],
        images_seen=payload["images_seen"],
        train_seconds=float(payload["train_seconds"]),
        world_size=payload["world_size"],
        device=payload["device"],
        versions=dict(payload["versions"]),
        format_version=payload["format_version"],
    )


# ----------------------------------------------------------------------------------------------------------
# What evaluation needs


def _unet(preset: Preset, info: DatasetInfo, T: int) -> UNet:
    return build_unet(preset.model, info.channels, (info.height, info.width), T)


def build_eps_model(checkpoint: Checkpoint, use_ema: bool = True,
                    device: str | torch.device = "cpu") -> UNet:
    """eps_theta with the checkpoint's EMA weights (or the raw weights), on `device`, in eval mode, no grads.

    The weights are channels_last, so the convolutions run in that layout whatever the input's (faster on CPU and
    CUDA for this U-Net; the outputs agree with the contiguous layout to float32 rounding).
    """
    model = _unet(checkpoint.preset, checkpoint.dataset_info, checkpoint.T)
    model.load_state_dict(checkpoint.ema_state if use_ema else checkpoint.model_state)
    model.requires_grad_(False)
    return model.to(  # type: ignore[call-overload]  # torch's stubs lack Module.to(device=, memory_format=)
        device=device, memory_format=torch.channels_last).eval()


def diffusion_from(checkpoint: Checkpoint, device: str | torch.device | None = None) -> GaussianDiffusion:
    """The GaussianDiffusion of the checkpoint's betas (the trained T), optionally on `device`."""
    diffusion = GaussianDiffusion(checkpoint.betas)
    return diffusion if device is None else diffusion.to(device)


__all__ = [
    "CHECKPOINT_NAME",
    "Checkpoint",
    "CheckpointError",
    "FORMAT_VERSION",
    "build_eps_model",
    "diffusion_from",
    "load_checkpoint",
    "save_checkpoint",
]
