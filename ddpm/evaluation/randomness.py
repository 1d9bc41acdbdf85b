"""The evaluation's randomness: one seeded generator per phase, and seeded random subsets of a split.

Every phase has its own torch.Generator seeded from (seed, phase) through numpy's SeedSequence, so a phase can be
rerun alone. The phases that draw noise for the network (the bound's x_t, Gamma_t's, Algorithm 2's z) draw it on the
evaluation's device: a CPU generator would make every step of a GPU loop wait for a host-to-device copy. A CUDA
generator's stream is not the CPU's, so a GPU evaluation draws other (equally distributed) numbers than a CPU one;
each is reproducible on its own device. Test subsets are drawn on the CPU on every device, so both pick the same
images.
"""

from __future__ import annotations

import numpy as np
import torch

from ddpm.evaluation.errors import EvaluationError

Tensor = torch.Tensor

# Phases and their generator streams (SeedSequence(seed, spawn_key=(index,))); new phases are appended, so the
# streams of the older ones never change.
PHASES = ("elbo_exact", "elbo_mc", "sampling", "subset_exact", "subset_mc", "gamma")


def phase_generator(seed: int, phase: str, device: str | torch.device = "cpu") -> torch.Generator:
    """A torch.Generator on `device` for one evaluation phase, seeded from SeedSequence(seed, spawn_key=(phase
    index,)) (the same seed on every device)."""
    if phase not in PHASES:
        raise ValueError(f"unknown phase {phase!r}; options: {', '.join(PHASES)}")
    state = np.random.SeedSequence(int(seed), spawn_key=(PHASES.index(phase),)).generate_state(2, dtype=np.uint32)
    generator = torch.Generator(device=torch.device(device))
    return generator.manual_seed((int(state[0]) | (int(state[1]) << 32)) & ((1 << 63) - 1))


def random_subset(num_available: int, num: int, generator: torch.Generator) -> Tensor:
    """The first `num` of torch.randperm(num_available), sorted: int64 [num] indices of a uniform random subset."""
    if isinstance(num, bool) or not isinstance(num, int) or not 0 <= num <= num_available:
        raise EvaluationError(f"subset size must be an integer in 0..{num_available}, got {num!r}")
    return torch.randperm(num_available, generator=generator)[:num].sort().values


__all__ = ["PHASES", "phase_generator", "random_subset"]
