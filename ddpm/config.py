"""Configuration records: one frozen dataclass per concern, and small named presets.

Concerns: `ModelConfig` (the U-Net eps_theta, `ddpm/model.py`). Training and evaluation configs join the
`Preset` record next to it (issue 4). A preset names a tested combination; everything in it is a plain
frozen value, so a preset can be printed, compared and stored in a checkpoint as it is.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

import torch
from torch.utils.flop_counter import FlopCounterMode


@dataclass(frozen=True)
class ModelConfig:
    """Shape of the U-Net eps_theta(x_t, t) (`ddpm.model.UNet`).

    Level i of the U-Net works at resolution ceil(H / 2**i) x ceil(W / 2**i) with
    `base_channels * channel_mults[i]` channels: 28x28 MNIST with three levels runs at 28, 14, 7.
    """

    base_channels: int = 32
    """Channels of the first convolution; also the width of the sinusoidal time embedding."""
    channel_mults: tuple[int, ...] = (1, 2, 2)
    """Channel multiplier per resolution level; its length is the number of levels."""
    num_res_blocks: int = 1
    """Residual blocks per level on the way down (the way up has one more, for the extra skip)."""
    attention_levels: tuple[int, ...] = ()
    """Levels (indices into `channel_mults`, 0 = full resolution) whose blocks carry self-attention."""
    middle_attention: bool = True
    """Self-attention between the two residual blocks at the lowest resolution."""
    dropout: float = 0.0
    """Dropout probability inside each residual block (before its second convolution)."""
    norm_groups: int = 8
    """Groups of every GroupNorm; must divide every channel count of the network."""
    time_embedding_mult: int = 4
    """Width of the time-embedding MLP as a multiple of `base_channels`."""
    attention_heads: int = 1
    """Heads of each self-attention layer; must divide the channel count where attention sits."""
    patch_size: int = 1
    """Space-to-depth factor p of the stem: the U-Net runs on [C p^2, H/p, W/p] (pixel unshuffle), and the
    output is shuffled back; p = 2 cuts the FLOPs of equal widths by ~4. H and W must be divisible by p."""

    def __post_init__(self) -> None:
        # Tuples may arrive as lists (from JSON); store them as tuples so the record stays hashable.
        object.__setattr__(self, "channel_mults", tuple(self.channel_mults))
        object.__setattr__(self, "attention_levels", tuple(self.attention_levels))
        _require(isinstance(self.base_channels, int) and self.base_channels >= 1,
                 f"base_channels must be a positive int, got {self.base_channels!r}")
        _require(len(self.channel_mults) >= 1 and all(isinstance(m, int) and m >= 1 for m in self.channel_mults),
                 f"channel_mults must be a non-empty tuple of positive ints, got {self.channel_mults!r}")
        _require(isinstance(self.num_res_blocks, int) and self.num_res_blocks >= 1,
                 f"num_res_blocks must be an int >= 1, got {self.num_res_blocks!r}")
        levels = len(self.channel_mults)
        _require(all(isinstance(a, int) and 0 <= a < levels for a in self.attention_levels),
                 f"attention_levels must be level indices in 0..{levels - 1}, got {self.attention_levels!r}")
        _require(isinstance(self.patch_size, int) and self.patch_size >= 1,
                 f"patch_size must be a positive int, got {self.patch_size!r}")
        _require(0.0 <= self.dropout < 1.0, f"dropout must be in [0, 1), got {self.dropout!r}")
        _require(isinstance(self.time_embedding_mult, int) and self.time_embedding_mult >= 1,
                 f"time_embedding_mult must be a positive int, got {self.time_embedding_mult!r}")
        _require(self.base_channels % 2 == 0,
                 f"base_channels must be even (sinusoidal embedding of width base_channels), got {self.base_channels}")
        for width in self.level_channels():
            _require(isinstance(self.norm_groups, int) and self.norm_groups >= 1 and width % self.norm_groups == 0,
                     f"norm_groups={self.norm_groups!r} must divide every channel count {self.level_channels()}")
        attended = [self.level_channels()[a] for a in self.attention_levels]
        if self.middle_attention:
            attended.append(self.level_channels()[-1])
        for width in attended:
            _require(isinstance(self.attention_heads, int) and self.attention_heads >= 1
                     and width % self.attention_heads == 0,
                     f"attention_heads={self.attention_heads!r} must divide the attended channel counts {attended}")

    def level_channels(self) -> tuple[int, ...]:
        """Channel count at each resolution level: base_channels * channel_mults[i]."""
        return tuple(self.base_channels * m for m in self.channel_mults)

    def replace(self, **changes) -> ModelConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)


def _require(condition: bool, message: str) -> None:
    if not condition:
        raise ValueError(message)


@dataclass(frozen=True)
class Preset:
    """A named, tested combination of the per-concern configs.

    Issue 4 adds `training: TrainingConfig` and `evaluation: EvaluationConfig` fields here.
    """

    name: str
    model: ModelConfig
    description: str = ""


# Sizing of `small` (CPU MNIST, `nox -s train_small`): Algorithm 2 at T = 1000 for N >= 1000 samples is
# 1e6 forward passes of a 28x28 image, so the forward must stay at tens of MFLOP per image.
# See the measurements summarised in the sizing notes of issue 4.
PRESETS: dict[str, Preset] = {
    preset.name: preset
    for preset in (
        Preset(
            name="tiny",
            model=ModelConfig(base_channels=16, channel_mults=(1, 2), num_res_blocks=1, attention_levels=(),
                              middle_attention=True, dropout=0.0, norm_groups=4),
            description="tests and sklearn digits 8x8: seconds per run",
        ),
        Preset(
            name="small",
            model=ModelConfig(base_channels=16, channel_mults=(1, 2, 2), num_res_blocks=1, attention_levels=(),
                              middle_attention=False, dropout=0.0, norm_groups=8),
            description="CPU MNIST 28x28 (`nox -s train_small`): sized so 1000 Algorithm-2 samples fit the budget",
        ),
        Preset(
            name="gpu",
            model=ModelConfig(base_channels=96, channel_mults=(1, 2, 2), num_res_blocks=2, attention_levels=(1,),
                              middle_attention=True, dropout=0.1, norm_groups=32, attention_heads=4),
            description="one GPU, MNIST 28x28: quality run (targets FID < 5, bits/dim < 1.0)",
        ),
    )
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; ValueError naming the value and the options otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; options: {', '.join(sorted(PRESETS))}") from None


def count_parameters(model: torch.nn.Module) -> int:
    """Number of trainable scalar parameters of `model`."""
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def forward_flops_per_image(model: torch.nn.Module, image_channels: int, image_size: int | tuple[int, int],
                            num_timesteps: int = 1000, batch_size: int = 2) -> float:
    """FLOPs of one forward pass per image, counted by `torch.utils.flop_counter.FlopCounterMode`.

    The counter sees matrix products and convolutions (2 FLOPs per multiply-add) and attention; it does
    not count elementwise work (normalisation, activations, additions), which is memory-bound anyway.
    """
    height, width = (image_size, image_size) if isinstance(image_size, int) else image_size
    parameter = next(model.parameters())
    x = torch.zeros(batch_size, image_channels, height, width, dtype=parameter.dtype, device=parameter.device)
    t = torch.full((batch_size,), num_timesteps, dtype=torch.int64, device=parameter.device)
    was_training = model.training
    model.eval()
    try:
        with torch.inference_mode(), FlopCounterMode(display=False) as counter:
            model(x, t)
    finally:
        model.train(was_training)
    return counter.get_total_flops() / batch_size
