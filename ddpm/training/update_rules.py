"""The per-update rules of Algorithm 1's optimiser around the gradient step: the learning rate's linear warmup and
the exponential moving average of the weights (its decay schedule and the update itself). `ddpm.training.trainer`
applies them; tests/training/test_trainer.py checks each against its formula.
"""

from __future__ import annotations

import torch

from ddpm.training.config import TrainingConfig


def learning_rate_at(config: TrainingConfig, update: int) -> float:
    """Learning rate of update n = 1, 2, ...: learning_rate * min(1, n / warmup_steps) (linear warmup)."""
    if isinstance(update, bool) or not isinstance(update, int) or update < 1:
        raise ValueError(f"update must be an int >= 1 (updates count from 1), got {update!r}")
    if config.warmup_steps == 0:
        return config.learning_rate
    return config.learning_rate * min(1.0, update / config.warmup_steps)


def ema_decay_at(config: TrainingConfig, step: int) -> float:
    """The EMA decay d_n of update n >= 1: min(ema_decay, (1 + n) / (10 + n)) with ema_warmup, else ema_decay."""
    if isinstance(step, bool) or not isinstance(step, int) or step < 1:
        raise ValueError(f"update numbers start at 1, got {step!r}")
    return min(config.ema_decay, (1 + step) / (10 + step)) if config.ema_warmup else config.ema_decay


@torch.no_grad()
def ema_update(ema_model: torch.nn.Module, model: torch.nn.Module, decay: float) -> None:
    """theta_ema <- decay * theta_ema + (1 - decay) * theta for every parameter; buffers are copied.

    One multi-tensor lerp over all parameters (bitwise the per-parameter lerp_ loop, tests/methods/test_speedups.py).
    """
    ema_parameters: list[torch.Tensor] = list(ema_model.parameters())
    parameters = list(model.parameters())
    if len(ema_parameters) != len(parameters):
        raise ValueError(f"the EMA model has {len(ema_parameters)} parameters, the model {len(parameters)}")
    if parameters:
        # torch's multi-tensor lerp (what its optimizers use; no public name): bitwise the per-parameter lerp_
        torch._foreach_lerp_(ema_parameters, [p.detach() for p in parameters], 1.0 - decay)
    for ema_b, b in zip(ema_model.buffers(), model.buffers(), strict=True):
        ema_b.copy_(b)


__all__ = ["ema_decay_at", "ema_update", "learning_rate_at"]
