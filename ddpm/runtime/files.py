"""Files written all-or-nothing, and files or folders set aside instead of overwritten.

`atomic_write(path, write)` fills a temporary file in the target's folder, flushes and fsyncs it, renames it over
the target with `os.replace` and fsyncs the folder, so after a crash the target holds either its old bytes or the
new ones; a failure at any point removes the temporary file and leaves the target as it was. `atomic_write_text`,
`atomic_write_bytes` and `write_json_atomic` (indented JSON, NaN and inf written as null) are built on it.

Nothing is overwritten that a reader may still want: `keep_previous_file` renames a file to
<stem>.previous-<UTC time of its last change><suffix> and `move_folder_aside` a non-empty folder to
<name>.previous-<UTC now>, with -1, -2, ... appended to the time when that name is taken.
"""

from __future__ import annotations

import json
import math
import os
import tempfile
from collections.abc import Callable, Mapping
from datetime import datetime, timezone
from pathlib import Path
from typing import IO

import numpy as np

STAMP_FORMAT = "%Y%m%dT%H%M%SZ"  # the UTC time in a set-aside name: 20250102T030405Z


def new_file_mode() -> int:
    """The permissions the process's umask gives a newly created file: 0o666 & ~umask (0o644 under umask 022)."""
    umask = os.umask(0)  # reading the umask means setting it; put it back at once
    os.umask(umask)
    return 0o666 & ~umask


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], object]) -> None:
    """Write a file all-or-nothing: `write(f)` fills a temporary file next to `path`, then os.replace.

    The temporary file is flushed and fsync'ed before the rename, and the folder is fsync'ed after it, so after
    a crash `path` holds either the old bytes or the new ones. If `write` raises, the temporary file is removed
    and `path` is untouched. The file gets the permissions of an ordinary new file under the umask
    (`new_file_mode`), not mkstemp's owner-only 0600.
    """
    path = Path(path)
    directory = path.parent
    fd, temporary = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=directory)
    try:
        os.fchmod(fd, new_file_mode())
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(temporary, path)
    except BaseException:
        try:
            os.unlink(temporary)
        except FileNotFoundError:
            pass
        raise
    try:  # make the rename itself durable; not every platform can open a folder
        dir_fd = os.open(directory, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(dir_fd)
    except OSError:
        pass
    finally:
        os.close(dir_fd)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """`atomic_write` of UTF-8 text."""
    atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def atomic_write_bytes(path: str | os.PathLike, payload: bytes) -> Path:
    """Write `payload` to `path` all-or-nothing (`atomic_write`), creating its folder if needed; returns the path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write(path, lambda f: f.write(payload))
    return path


def _json_default(value):
    if isinstance(value, (np.integer,)):
        return int(value)
    if isinstance(value, (np.floating,)):
        return float(value)
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def finite_or_none(obj):
    """A copy of a JSON-like object with non-finite floats replaced by None (JSON has no NaN)."""
    if isinstance(obj, float | np.floating):
        return float(obj) if math.isfinite(obj) else None
    if isinstance(obj, Mapping):
        return {k: finite_or_none(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [finite_or_none(v) for v in obj]
    return obj


def write_json_atomic(path: str | os.PathLike, obj) -> Path:
    """`obj` as indented JSON (NaN/inf written as null; NumPy numbers and arrays, paths as plain values) to `path`,
    atomically; returns the path."""
    text = json.dumps(finite_or_none(obj), indent=2, default=_json_default, allow_nan=False)
    return atomic_write_bytes(path, (text + "\n").encode("utf-8"))


def _free_previous_path(path: Path, stem: str, stamp: str, suffix: str) -> Path:
    """<stem>.previous-<stamp><suffix> next to `path`, or <stem>.previous-<stamp>-<k><suffix> for the first free k."""
    target = path.with_name(f"{stem}.previous-{stamp}{suffix}")
    k = 1
    while target.exists():
        target = path.with_name(f"{stem}.previous-{stamp}-{k}{suffix}")
        k += 1
    return target


def keep_previous_file(path: str | os.PathLike) -> Path | None:
    """Rename an existing file <stem><suffix> to <stem>.previous-<UTC mtime>[-k]<suffix>; its new path or None."""
    path = Path(path)
    if not path.is_file():
        return None
    stamp = datetime.fromtimestamp(path.stat().st_mtime, tz=timezone.utc).strftime(STAMP_FORMAT)
    target = _free_previous_path(path, path.stem, stamp, path.suffix)
    os.replace(path, target)
    return target


def move_folder_aside(path: str | os.PathLike) -> Path | None:
    """Rename a non-empty folder to <name>.previous-<UTC now>[-k] next to it; its new path, or None when `path` is
    not a folder or is empty (nothing to keep)."""
    path = Path(path)
    if not path.is_dir() or not any(path.iterdir()):
        return None
    stamp = datetime.now(timezone.utc).strftime(STAMP_FORMAT)
    target = _free_previous_path(path, path.name, stamp, "")
    os.replace(path, target)
    return target


__all__ = [
    "STAMP_FORMAT",
    "atomic_write",
    "atomic_write_bytes",
    "atomic_write_text",
    "finite_or_none",
    "keep_previous_file",
    "move_folder_aside",
    "new_file_mode",
    "write_json_atomic",
]
