"""The run folder: the names of the files that training and evaluation leave in it, and how an evaluation takes
it over without losing anything.

A finished metrics.json is never overwritten or lost: before the first expensive step, an existing
out_dir/metrics.json is renamed to metrics.previous-<UTC time of its last change>.json (a counter is appended
if that name is taken). The other files are then regenerated, and the new metrics.json appears only when
everything it describes has been written, so a folder never pairs a metrics.json with another run's images.
`move_run_aside` renames a whole run folder out of the way (`python -m ddpm set-aside`).
"""

from __future__ import annotations

import os
from pathlib import Path

from ddpm.evaluation.errors import EvaluationError
from ddpm.runtime.files import atomic_write_bytes, keep_previous_file, move_folder_aside
from ddpm.training.trainer import LOG_NAME as TRAIN_LOG
from ddpm.training.trainer import RUN_NAME as RUN_JSON

METRICS_FILE = "metrics.json"
ELBO_TERMS_FILE = "elbo_terms.json"
SAMPLES_NPZ = "samples_uint8.npz"
SAMPLES_PNG = "samples.png"
TRAJECTORY_PNG = "trajectory.png"
RUN_FILES_COPIED = (RUN_JSON, TRAIN_LOG)  # copied next to the metrics when out_dir is elsewhere
METRICS_FORMAT_VERSION = 1  # format_version of metrics.json and elbo_terms.json


def keep_previous_metrics(out_dir: str | os.PathLike) -> Path | None:
    """Rename an existing out_dir/metrics.json to metrics.previous-<UTC mtime>[-k].json; its new path or None."""
    return keep_previous_file(Path(out_dir) / METRICS_FILE)


def move_run_aside(run_dir: str | os.PathLike) -> Path | None:
    """Rename a non-empty run folder to <name>.previous-<UTC now>[-k] next to it; its new path (None: nothing to move).

    Lets a fixed output folder (`nox -s train_small` uses reports/train_small) start a new run without deleting
    the last one: `train` refuses a non-empty folder, and nothing is ever overwritten.
    """
    path = Path(run_dir)
    if path.exists() and not path.is_dir():
        raise EvaluationError(f"{str(path)!r} is not a folder")
    return move_folder_aside(path)


def copy_run_files(checkpoint_path: Path, out_dir: Path) -> list[str]:
    """Copy run.json / train_log.jsonl from the checkpoint's folder into out_dir when that is another folder; the
    names copied."""
    source_dir = checkpoint_path.resolve().parent
    if source_dir == out_dir.resolve():
        return []
    copied = []
    for name in RUN_FILES_COPIED:
        source = source_dir / name
        if source.is_file():
            atomic_write_bytes(out_dir / name, source.read_bytes())
            copied.append(name)
    return copied


def prepare_run_folder(checkpoint_path: Path, out_dir: Path) -> tuple[Path | None, list[str]]:
    """Create out_dir, set an older metrics.json aside and copy the run files; (where the old metrics went, the
    names copied)."""
    out_dir.mkdir(parents=True, exist_ok=True)
    previous = keep_previous_metrics(out_dir)
    return previous, copy_run_files(checkpoint_path, out_dir)


__all__ = [
    "ELBO_TERMS_FILE",
    "METRICS_FILE",
    "METRICS_FORMAT_VERSION",
    "RUN_FILES_COPIED",
    "RUN_JSON",
    "SAMPLES_NPZ",
    "SAMPLES_PNG",
    "TRAIN_LOG",
    "TRAJECTORY_PNG",
    "copy_run_files",
    "keep_previous_metrics",
    "move_run_aside",
    "prepare_run_folder",
]
