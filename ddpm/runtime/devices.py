"""The torch device a request names, with one set of rules for training, sampling, evaluation and FID.

`resolve_device(device, local_rank)` accepts "cpu", "cuda", "cuda:N" or a torch.device, and None for "cuda when
torch sees a GPU, else cpu". A CUDA device always comes back with its index: cuda:LOCAL_RANK for a torchrun
process (`local_rank` given), else the index asked for or torch's current device. Anything else raises
`DeviceError` (a ValueError) with a one-line message; the command line prints it as a usage error.

`canonical_device(device)` is the same device with a CUDA index filled in (torch's current device), so that "cuda" and
"cuda:0" compare equal where they name the same GPU (a cache or buffer keyed on the device is then reused).

`synchronize(device)` waits for the work queued on a CUDA device, so a timer read after it counts that work.
"""

from __future__ import annotations

import torch


class DeviceError(ValueError):
    """A device that cannot be used: an unknown name, a type other than cpu and cuda, CUDA without a GPU, or a GPU
    index past the last one; the message is one line."""


def resolve_device(device: str | torch.device | None = None, local_rank: int | None = None) -> torch.device:
    """The torch device `device` names (None: cuda when torch sees a GPU, else cpu); see the module docstring.

    `local_rank`: this process's GPU under torchrun (LOCAL_RANK), which replaces the index of a CUDA request.
    """
    if device is None:
        device = "cuda" if torch.cuda.is_available() else "cpu"
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError):
        raise DeviceError(f"unknown device {device!r}; use cpu, cuda or cuda:N") from None
    if resolved.type == "cuda":
        if not torch.cuda.is_available():
            raise DeviceError(f"device {device!r} requested but CUDA is not available")
        if local_rank is not None:
            resolved = torch.device("cuda", local_rank)
        elif resolved.index is None:
            resolved = torch.device("cuda", torch.cuda.current_device())
        if resolved.index >= torch.cuda.device_count():
            raise DeviceError(f"device {resolved} does not exist ({torch.cuda.device_count()} CUDA devices)")
    elif resolved.type != "cpu":
        raise DeviceError(f"unsupported device {device!r}; use cpu, cuda or cuda:N")
    return resolved


def canonical_device(device: str | torch.device) -> torch.device:
    """`device` as a torch.device; a CUDA device without an index gets torch's current device's (no other check)."""
    resolved = torch.device(device)
    if resolved.type == "cuda" and resolved.index is None:
        return torch.device("cuda", torch.cuda.current_device())
    return resolved


def synchronize(device: torch.device) -> None:
    """Wait for the work queued on `device` when it is a CUDA device; nothing on the CPU."""
    if device.type == "cuda":
        torch.cuda.synchronize(device)


__all__ = ["DeviceError", "canonical_device", "resolve_device", "synchronize"]
