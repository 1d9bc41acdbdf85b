"""The evaluation's randomness: one seeded CPU generator per phase, and seeded random subsets of a split.

Every phase has its own CPU torch.Generator seeded from (seed, phase) through numpy's SeedSequence, so a phase
can be rerun alone and CUDA and CPU runs draw the same numbers (drawn on the CPU, then moved).
"""

from __future__ import annotations

import numpy as np
import torch

from ddpm.evaluation.errors import EvaluationError

Tensor = torch.Tensor

# Phases and their generator streams (SeedSequence(seed, spawn_key=(index,))); new phases are appended, so the
# streams of the older ones never change.
PHASES = ("elbo_exact", "elbo_mc", "sampling", "subset_exact", "subset_mc", "gamma")


def phase_generator(seed: int, phase: str) -> torch.Generator:
    """A CPU torch.Generator for one evaluation phase, seeded from SeedSequence(seed, spawn_key=(phase index,))."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; options: {', '.join(PHASES)}")
    state = np.random.SeedSequence(int(seed), spawn_key=(PHASES.index(phase),)).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed((int(state[0]) | (int(state[1]) << 32)) & ((1 << 63) - 1))


def random_subset(num_available: int, num: int, generator: torch.Generator) -> Tensor:
    """The first `num` of torch.randperm(num_available), sorted: int64 [num] indices of a uniform random subset."""
    if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num <= num_available:
        raise EvaluationError(f"subset size must be an integer in 0..{num_available}, got {num!r}")
    return torch.randperm(num_available, generator=generator)[:num].sort().values


__all__ = ["PHASES", "phase_generator", "random_subset"]
