"""How a number was produced: the version record, the command line that is running, a device's description.

`versions()` is the one version record of the project: python, torch, numpy and ddpm (what checkpoints and run.json
keep), and on request further names: "platform" (`platform.platform()`) or an installed distribution's version
("not installed" when it is absent). metrics.json, the conformance report and the bench record ask for the names
they show.
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Sequence
from importlib import metadata

import numpy as np
import torch

import ddpm

BASE_NAMES = ("python", "torch", "numpy", "ddpm")  # the record checkpoints and run.json keep


def _version(name: str) -> str:
    if name == "python":
        return platform.python_version()
    if name == "torch":
        return str(torch.__version__)  # with its build tag (e.g. +cpu), which the distribution's metadata lacks
    if name == "numpy":
        return str(np.__version__)
    if name == "ddpm":
        return str(ddpm.__version__)
    if name == "platform":
        return platform.platform()
    try:
        return metadata.version(name)
    except metadata.PackageNotFoundError:
        return "not installed"


def versions(*extra: str, base: Sequence[str] = BASE_NAMES) -> dict[str, str]:
    """{name: version} for each of `base` (default python, torch, numpy, ddpm), then each of `extra`, in order.

    python is the interpreter's version, torch, numpy and ddpm the running modules' (torch's with its build tag),
    "platform" the platform string, and any other name the installed distribution's version or "not installed".
    """
    return {name: _version(name) for name in (*base, *extra)}


def command_line() -> str:
    """The command that is running, as a shell-like string (python -m ddpm ... when run as a module)."""
    argv = list(sys.argv)
    if argv and argv[0].endswith(("__main__.py", "ddpm")):
        argv[0] = "python -m ddpm"
    return " ".join(argv)


def device_description(device: torch.device) -> str:
    """'cpu (<processor>, N threads)' or 'cuda:0 (<GPU name>)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    processor = platform.processor() or platform.machine()
    return f"cpu ({processor}, {torch.get_num_threads()} threads)"


__all__ = ["BASE_NAMES", "command_line", "device_description", "versions"]
