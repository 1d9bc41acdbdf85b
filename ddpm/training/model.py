"""The noise-prediction network eps_theta(x_t, t) of Ho et al. (2020), Section 4 and Appendix B.

A small U-Net: a sinusoidal embedding of the paper's timestep t in {1..T} fed through an MLP, residual
blocks (GroupNorm, SiLU, 3x3 convolution, the time embedding added as a per-channel bias, dropout),
stride-2 downsampling and nearest-neighbour upsampling with skip connections, and optional
self-attention at chosen resolution levels. Odd sizes are handled: a stride-2 convolution maps 7 to 4,
and each upsampling goes back to the exact size of the skip it meets (4 -> 7), so 28x28 inputs may use
any number of levels. An optional space-to-depth stem (`ModelConfig.patch_size` = p) runs the U-Net on
[C p^2, H/p, W/p] and shuffles the output back to [C, H, W]: with p = 2 the same widths cost ~4x fewer
FLOPs, which is what lets a CPU draw 1000 samples x 1000 steps in minutes (see the `small` preset).

The output convolution starts at zero, so an untrained model predicts eps_theta = 0 (the prior mean). With
`ModelConfig.learn_variance` the network outputs 2C channels [eps_theta, v] (v = 0 at the start: the geometric
mean of beta_t and beta_tilde_t, derivation (k)); `ddpm.core.kernels.model_output` splits them.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ddpm.training.config import ModelConfig


def timestep_embedding(t: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """Sinusoidal embedding of the paper's timestep t (Vaswani et al. 2017, as used by Ho et al. 2020).

    Returns [B, dim] float32: [cos(t w_0), ..., cos(t w_{k-1}), sin(t w_0), ..., sin(t w_{k-1})] with
    k = dim / 2 and w_i = max_period^(-i / k). t enters as the integer the paper writes (1..T), not t - 1.
    """
    if t.ndim != 1:
        raise ValueError(f"t must be 1-D [B], got shape {tuple(t.shape)}")
    if t.dtype != torch.int64:
        raise ValueError(f"t must be int64 (the paper's integer timestep), got {t.dtype}")
    if dim < 2 or dim % 2:
        raise ValueError(f"embedding dim must be even and >= 2, got {dim}")
    half = dim // 2
    exponent = torch.arange(half, dtype=torch.float64, device=t.device) / half  # [k]
    frequencies = torch.exp(-math.log(max_period) * exponent)  # [k] float64
    angles = t.to(torch.float64)[:, None] * frequencies[None, :]  # [B, k]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=1).to(torch.float32)  # [B, dim]


class ResidualBlock(nn.Module):
    """h = x + conv(dropout(act(norm(conv(act(norm(x))) + W e_t)))), with a 1x1 skip when widths differ."""

    def __init__(self, in_channels: int, out_channels: int, time_channels: int, groups: int, dropout: float):
        super().__init__()
        self.norm1 = nn.GroupNorm(groups, in_channels)
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, padding=1)
        self.time_proj = nn.Linear(time_channels, out_channels)
        self.norm2 = nn.GroupNorm(groups, out_channels)
        self.dropout = nn.Dropout(dropout)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, padding=1)
        self.skip = nn.Identity() if in_channels == out_channels else nn.Conv2d(in_channels, out_channels, 1)

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        # x: [B, C_in, H, W], emb: [B, time_channels] (already passed through SiLU)
        h = self.conv1(F.silu(self.norm1(x)))  # [B, C_out, H, W]
        h = h + self.time_proj(emb)[:, :, None, None]
        h = self.conv2(self.dropout(F.silu(self.norm2(h))))
        return self.skip(x) + h  # [B, C_out, H, W]


class SelfAttention(nn.Module):
    """Multi-head self-attention over the H*W positions, pre-normalised, added residually."""

    def __init__(self, channels: int, groups: int, heads: int):
        super().__init__()
        self.heads = heads
        self.norm = nn.GroupNorm(groups, channels)
        # No bias: a key bias cancels in the softmax and a value bias only shifts the output (the
        # projection's bias does that), so they would be parameters without gradient.
        self.qkv = nn.Conv2d(channels, 3 * channels, 1, bias=False)
        self.proj = nn.Conv2d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, height, width = x.shape
        qkv = self.qkv(self.norm(x))  # [B, 3C, H, W]
        qkv = qkv.reshape(b, 3, self.heads, c // self.heads, height * width)  # [B, 3, heads, d, HW]
        q, k, v = (qkv[:, i].transpose(-1, -2) for i in range(3))  # each [B, heads, HW, d]
        h = F.scaled_dot_product_attention(q, k, v)  # [B, heads, HW, d]
        h = h.transpose(-1, -2).reshape(b, c, height, width)  # [B, C, H, W]
        return x + self.proj(h)


class Downsample(nn.Module):
    """Stride-2 3x3 convolution: H -> ceil(H / 2)."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, stride=2, padding=1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """Nearest-neighbour upsampling to the skip's exact size (so 4 -> 7 works), then a 3x3 convolution."""

    def __init__(self, channels: int):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, padding=1)

    def forward(self, x: torch.Tensor, size: tuple[int, int]) -> torch.Tensor:
        if (2 * x.shape[-2], 2 * x.shape[-1]) == tuple(size):
            x = F.interpolate(x, scale_factor=2.0, mode="nearest")
        else:
            x = F.interpolate(x, size=size, mode="nearest")
        return self.conv(x)


def _checked_size(config: ModelConfig, image_channels: int, image_size: int | tuple[int, int],
                  num_timesteps: int) -> tuple[int, int]:
    """(height, width) of `image_size`; ValueError naming the problem for sizes the U-Net cannot take."""
    height, width = (image_size, image_size) if isinstance(image_size, int) else tuple(image_size)
    if image_channels < 1 or height < 1 or width < 1:
        raise ValueError(f"image_channels and image_size must be positive, got {image_channels}, {image_size}")
    if height % config.patch_size or width % config.patch_size:
        raise ValueError(f"image size {height}x{width} is not divisible by patch_size={config.patch_size}")
    if num_timesteps < 1:
        raise ValueError(f"num_timesteps must be >= 1, got {num_timesteps}")
    return height, width


class UNet(nn.Module):
    """eps_theta(x_t, t): [B, C, H, W] float, int64 [B] in {1..T} -> [B, C, H, W] (Ho et al. 2020, App. B).

    With `learn_variance`, [B, 2C, H, W]: eps_theta then the learned-range variance output v.

    `image_channels`, `image_size` and `num_timesteps` fix what the public `forward` accepts; anything
    else raises ValueError naming the mismatch.
    """

    def __init__(self, config: ModelConfig, image_channels: int, image_size: int | tuple[int, int],
                 num_timesteps: int):
        super().__init__()
        height, width = _checked_size(config, image_channels, image_size, num_timesteps)
        self.config = config
        self.image_channels = image_channels
        self.image_size = (height, width)
        self.num_timesteps = num_timesteps

        ch = config.base_channels
        time_channels = config.time_embedding_mult * ch
        groups = config.norm_groups
        level_channels = config.level_channels()
        num_levels = len(level_channels)

        self.time_mlp = nn.Sequential(nn.Linear(ch, time_channels), nn.SiLU(), nn.Linear(time_channels, time_channels))
        patch_channels = image_channels * config.patch_size**2  # channels after the space-to-depth stem
        self.input_conv = nn.Conv2d(patch_channels, ch, 3, padding=1)

        # Way down: each block's output is kept as a skip; so is the input conv's and each downsample's.
        self.down = nn.ModuleList()
        skip_channels = [ch]
        width_now = ch
        for level, out_channels in enumerate(level_channels):
            for _ in range(config.num_res_blocks):
                self.down.append(self._block(width_now, out_channels, time_channels, level))
                width_now = out_channels
                skip_channels.append(width_now)
            if level < num_levels - 1:
                self.down.append(Downsample(width_now))
                skip_channels.append(width_now)

        self.middle_block1 = ResidualBlock(width_now, width_now, time_channels, groups, config.dropout)
        self.middle_attention = (SelfAttention(width_now, groups, config.attention_heads)
                                 if config.middle_attention else nn.Identity())
        self.middle_block2 = ResidualBlock(width_now, width_now, time_channels, groups, config.dropout)

        # Way up: num_res_blocks + 1 blocks per level, each consuming one skip, then an upsample.
        self.up = nn.ModuleList()
        for level in reversed(range(num_levels)):
            out_channels = level_channels[level]
            for _ in range(config.num_res_blocks + 1):
                self.up.append(self._block(width_now + skip_channels.pop(), out_channels, time_channels, level))
                width_now = out_channels
            if level > 0:
                self.up.append(Upsample(width_now))
        assert not skip_channels, "every skip connection must be consumed"

        self.output_norm = nn.GroupNorm(groups, width_now)
        # Learned variance: twice the channels, [eps, v] after the shuffle (pixel_shuffle keeps channel blocks).
        self.output_channels = image_channels * (2 if config.learn_variance else 1)
        self.output_conv = nn.Conv2d(width_now, self.output_channels * config.patch_size**2, 3, padding=1)
        nn.init.zeros_(self.output_conv.weight)
        assert self.output_conv.bias is not None, "Conv2d has a bias by default"
        nn.init.zeros_(self.output_conv.bias)

    def _block(self, in_channels: int, out_channels: int, time_channels: int, level: int) -> nn.Module:
        block = ResidualBlock(in_channels, out_channels, time_channels, self.config.norm_groups, self.config.dropout)
        if level in self.config.attention_levels:
            return _AttendedBlock(block, SelfAttention(out_channels, self.config.norm_groups,
                                                       self.config.attention_heads))
        return block

    def check_inputs(self, x: torch.Tensor, t: torch.Tensor) -> None:
        """ValueError unless x is [B, C, H, W] floating with this model's C, H, W and t is int64 [B], in {1..T} when t
        is on the CPU (the range is not read back from a GPU: see the comment below)."""
        expected = (self.image_channels, *self.image_size)
        if x.ndim != 4 or tuple(x.shape[1:]) != expected:
            raise ValueError(f"x must have shape [B, {expected[0]}, {expected[1]}, {expected[2]}] "
                             f"(channels, height, width of this model), got {tuple(x.shape)}")
        if not x.is_floating_point():
            raise ValueError(f"x must be a floating tensor, got {x.dtype}")
        if t.ndim != 1 or t.shape[0] != x.shape[0]:
            raise ValueError(f"t must have shape [B] = [{x.shape[0]}], got {tuple(t.shape)}")
        if t.dtype != torch.int64:
            raise ValueError(f"t must be int64 (the paper's timestep in 1..T), got {t.dtype}")
        # Data-dependent, so checked only where reading t costs no device sync: on the CPU, and not while torch.compile
        # traces (it would break the graph). On a GPU, t comes from this project's samplers, bound and trainer, which
        # draw it in 1..T; reading it back would stall every step (two host syncs per forward).
        if (t.device.type == "cpu" and not torch.compiler.is_compiling() and t.numel()
                and (int(t.min()) < 1 or int(t.max()) > self.num_timesteps)):
            raise ValueError(f"t must lie in {{1..{self.num_timesteps}}}, got values in "
                             f"[{int(t.min())}, {int(t.max())}]")

    def forward(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.check_inputs(x, t)
        emb = F.silu(self.time_mlp(timestep_embedding(t, self.config.base_channels).to(x.dtype)))  # [B, 4ch]

        p = self.config.patch_size
        h = self.input_conv(F.pixel_unshuffle(x, p) if p > 1 else x)  # [B, ch, H/p, W/p]
        skips = [h]
        for module in self.down:
            h = module(h) if isinstance(module, Downsample) else module(h, emb)
            skips.append(h)

        h = self.middle_block1(h, emb)  # [B, ch_last, H_last, W_last]
        h = self.middle_attention(h)
        h = self.middle_block2(h, emb)

        for module in self.up:
            if isinstance(module, Upsample):
                h = module(h, skips[-1].shape[-2:])  # back to the size of the skip this level consumes
            else:
                h = module(torch.cat([h, skips.pop()], dim=1), emb)
        out = self.output_conv(F.silu(self.output_norm(h)))  # [B, C' p^2, H/p, W/p], C' = C or 2C
        return F.pixel_shuffle(out, p) if p > 1 else out  # [B, C', H, W]


class _AttendedBlock(nn.Module):
    """A residual block followed by self-attention (at levels listed in `attention_levels`)."""

    def __init__(self, block: ResidualBlock, attention: SelfAttention):
        super().__init__()
        self.block = block
        self.attention = attention

    def forward(self, x: torch.Tensor, emb: torch.Tensor) -> torch.Tensor:
        return self.attention(self.block(x, emb))


def build_unet(config: ModelConfig, image_channels: int, image_size: int | tuple[int, int],
               num_timesteps: int) -> UNet:
    """The U-Net eps_theta for images [C, H, W] and timesteps 1..num_timesteps."""
    return UNet(config, image_channels, image_size, num_timesteps)
