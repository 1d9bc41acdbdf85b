"""The shipped conformance adapters as their tests use them: each factory called once per process, and float32 draws
of the suite's image shape (the third-party adapters' tests in tests/conformance, run by `nox -s conformance`)."""

from __future__ import annotations

import functools
import importlib

import torch


@functools.cache
def factory_output(module: str) -> list:
    """What `ddpm.conformance.adapters.<module>.factory()` returns, built once per process (the libraries are slow to
    configure)."""
    return importlib.import_module(f"ddpm.conformance.adapters.{module}").factory()


def draws(seed: int, count: int, shape: tuple[int, ...]) -> list[torch.Tensor]:
    """`count` standard normal float32 tensors of `shape` ([B, C, H, W]) from a generator seeded with `seed`."""
    g = torch.Generator().manual_seed(seed)
    return [torch.randn(shape, generator=g, dtype=torch.float32) for _ in range(count)]
