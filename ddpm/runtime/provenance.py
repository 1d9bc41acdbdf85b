"""How a number was produced: the version record, the command line that is running, a device's description.

Every recorded command is portable: `python -m <module> <args>` (`module_command`, `running_argv`,
`command_line`), never the interpreter's path; the interpreter's version is versions()["python"]. `portable_command`
renders a command stored before that rule (an absolute interpreter path first) the same way.

`versions()` is the one version record of the project: python, torch, numpy and ddpm (what checkpoints and run.json
keep), and on request further names: "platform" (`platform.platform()`) or an installed distribution's version
("not installed" when it is absent). metrics.json, the conformance report and the bench record ask for the names
they show.
"""

from __future__ import annotations

import platform
import re
import shlex
import sys
from collections.abc import Sequence
from importlib import metadata
from pathlib import Path, PurePath

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


PYTHON = "python"  # how a recorded command names the interpreter: never its path (its version is in versions())
_INTERPRETER = re.compile(r"python(\d+(\.\d+)*)?(\.exe)?", re.IGNORECASE)
_PACKAGE_DIR = Path(ddpm.__file__).resolve().parent


def module_argv(module: str, args: Sequence[str] = ()) -> list[str]:
    """['python', '-m', <module>, *args]: the words of a command of this project as it is recorded."""
    return [PYTHON, "-m", module, *(str(a) for a in args)]


def module_command(module: str, args: Sequence[str] = ()) -> str:
    """'python -m <module> <args>' as a shell-quoted string (`module_argv` joined)."""
    return shlex.join(module_argv(module, args))


def _module_of_file(path: str) -> str | None:
    """The dotted module of a .py file of the ddpm package ('ddpm' for its __main__.py), else None. A file that
    exists must lie in this package; one that does not (a command stored on another machine) is read from its
    path, from the last folder named ddpm."""
    if Path(path).exists():
        try:
            parts = Path(path).resolve().relative_to(_PACKAGE_DIR.parent).with_suffix("").parts
        except ValueError:
            return None
    else:
        parts = PurePath(path.replace("\\", "/")).with_suffix("").parts
        if "ddpm" not in parts:
            return None
        parts = parts[len(parts) - 1 - parts[::-1].index("ddpm"):]
    if not parts or parts[0] != "ddpm":
        return None
    return ".".join(parts[:-1] if parts[-1] in ("__main__", "__init__") else parts)


def portable_argv(argv: Sequence[str]) -> list[str]:
    """`argv` with its first word made portable: an interpreter's path becomes 'python', a ddpm entry point
    (.../bin/ddpm, .../ddpm/__main__.py) or another file of the ddpm package 'python -m <module>', another script
    'python <its path from the checkout's root, or its file name>', any other path (an entry point such as pytest)
    its file name. The other words are kept as they are."""
    words = [str(w) for w in argv]
    if not words:
        return words
    first, rest = words[0], words[1:]
    name = PurePath(first.replace("\\", "/")).name
    if _INTERPRETER.fullmatch(name):
        return [PYTHON, *rest]
    module = "ddpm" if name == "ddpm" else _module_of_file(first) if name.endswith(".py") else None
    if module is not None:
        return [PYTHON, "-m", module, *rest]
    if name.endswith(".py"):  # a script beside the package (tools/golden.py) keeps its path from the checkout's root
        try:
            return [PYTHON, Path(first).resolve().relative_to(_PACKAGE_DIR.parent).as_posix(), *rest]
        except ValueError:
            return [PYTHON, name, *rest]
    return [name, *rest]


def portable_command(command: str | Sequence[str]) -> str:
    """A recorded command (a string or its words) as a portable string: `portable_argv` applied to its first word.

    For rendering commands stored before the recorders were made portable (an interpreter's absolute path first)."""
    if isinstance(command, str):
        first, _, rest = command.strip().partition(" ")
        words = portable_argv([first]) if first else []
        return " ".join([*words, rest]) if rest else " ".join(words)
    return " ".join(portable_argv(command))


def running_argv() -> list[str]:
    """The command that is running, portable: ['python', '-m', <module>, ...] when run with -m (or as a file of
    the ddpm package), otherwise `portable_argv(sys.argv)`."""
    spec = getattr(sys.modules.get("__main__"), "__spec__", None)
    name = getattr(spec, "name", None)
    if name:
        return [PYTHON, "-m", name.removesuffix(".__main__"), *sys.argv[1:]]
    return portable_argv(sys.argv)


def command_line() -> str:
    """The command that is running, as a portable shell-like string (`running_argv`): 'python -m ddpm ...' when
    run as a module, never the interpreter's path."""
    return " ".join(running_argv())


def device_description(device: torch.device) -> str:
    """'cpu (<processor>, N threads)' or 'cuda:0 (<GPU name>)'."""
    if device.type == "cuda":
        return f"{device} ({torch.cuda.get_device_name(device)})"
    processor = platform.processor() or platform.machine()
    return f"cpu ({processor}, {torch.get_num_threads()} threads)"


__all__ = ["BASE_NAMES", "PYTHON", "command_line", "device_description", "module_argv", "module_command",
           "portable_argv", "portable_command", "running_argv", "versions"]
