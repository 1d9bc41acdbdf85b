"""One torch thread for a block of work.

The tests' tensors are small: one intra-op thread is as fast as two on a quiet machine, and on the shared 2-core
machine two OpenMP threads per process collapse under contention (measured: 17 ms vs 1.2 s per forward of the
tiny U-Net at batch 8 while other processes were busy; 10x on the exact-oracle tests). Bitwise comparisons between
runs also need the same thread count (the reduction order of a convolution can depend on it). The `one_torch_thread`
fixture (tests/conftest.py) applies this to a whole test.
"""

from __future__ import annotations

import contextlib

import torch


@contextlib.contextmanager
def one_thread():
    """torch.set_num_threads(1) inside the block, the previous value restored after it."""
    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(previous)
