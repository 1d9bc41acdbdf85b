"""Files that are not checkpoints of this project, each with the fragment its one-line CheckpointError must hold.

`write_bad_checkpoint(kind, folder)` writes one and returns its path. The two pickles that would run code on
loading (`custom_class`, `code_execution`) are only ever written here; the loader must refuse them without
unpickling them. `code_execution` would create the folder `MARKER` next to the file if it were ever unpickled, so
a test can see that it was not (os.mkdir: nothing outside the test's folder is touched even then).
"""

from __future__ import annotations

import os
import pickle
import zipfile
from pathlib import Path

import torch

MARKER = "unpickled-marker"


class CustomObject:
    """A class of the tests: unpickling an instance of it means importing and calling test code."""

    def __init__(self) -> None:
        self.value = 1


class RunsCode:
    """Pickles as a call of os.mkdir(path): loading the pickle with plain `pickle` would create `path`."""

    def __init__(self, path: Path) -> None:
        self.path = str(path)

    def __reduce__(self):
        return (os.mkdir, (self.path,))


def _text(path: Path) -> None:
    path.write_text("# ddpm-verified\n\nA README, not a checkpoint.\n")


def _empty(path: Path) -> None:
    path.write_bytes(b"")


def _zip_of_text(path: Path) -> None:
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("notes.txt", "a zip archive, but not of torch.save")


def _custom_class(path: Path) -> None:
    torch.save({"format": "ddpm-verified checkpoint", "model": CustomObject()}, path)


def _code_execution(path: Path) -> None:
    torch.save({"format": "ddpm-verified checkpoint", "x": RunsCode(path.parent / MARKER)}, path)


def _plain_pickle(path: Path) -> None:
    path.write_bytes(pickle.dumps(RunsCode(path.parent / MARKER), protocol=4))  # pickling runs nothing


def _truncated_zip(path: Path) -> None:
    torch.save({"weights": torch.zeros(64)}, path)
    path.write_bytes(path.read_bytes()[:200])


# kind: (writer, fragment of the message)
KINDS = {
    "text": (_text, "is not a ddpm-verified checkpoint: not a torch zip archive"),
    "empty": (_empty, "is not a ddpm-verified checkpoint: the file is empty"),
    "zip_of_text": (_zip_of_text, "a zip archive without a ddpm-verified checkpoint"),
    "custom_class": (_custom_class, "needs code execution to load"),
    "code_execution": (_code_execution, "needs code execution to load"),
    "plain_pickle": (_plain_pickle, "not a torch zip archive"),
    "truncated_zip": (_truncated_zip, "not a readable checkpoint: a truncated or corrupt zip archive"),
}


def write_bad_checkpoint(kind: str, folder: Path, name: str = "checkpoint.pt") -> Path:
    """Write the file of `kind` (a key of KINDS) as folder/name; its path."""
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    KINDS[kind][0](path)
    return path


def expected_fragment(kind: str) -> str:
    return KINDS[kind][1]


__all__ = ["KINDS", "MARKER", "CustomObject", "RunsCode", "expected_fragment", "write_bad_checkpoint"]
