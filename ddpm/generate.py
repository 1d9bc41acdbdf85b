"""Images from a trained checkpoint: Algorithm 2 with the EMA weights at the trained T, and PNG grids of them.

`generate(checkpoint, num, generator, ...)` draws `num` samples x_0 ~ p_theta(x_0) in batches of `batch_size`
(one generator shared by the batches in order, so the images depend on the seed and the batch size) and returns
them as uint8 pixels [N, C, H, W] (`ddpm.data.to_uint8`: x in [-1, 1] -> round((x + 1) 127.5), clamped).
`image_grid` tiles images row-major into ceil(sqrt(N)) columns with `padding` pixels of `pad_value` around and
between them; `save_image_grid` writes the grid as a PNG atomically.
"""

from __future__ import annotations

import math
import os

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm.checkpoint import Checkpoint, atomic_write, build_eps_model, diffusion_from
from ddpm.data import to_uint8
from ddpm.diffusion import ReverseVariance
from ddpm.samplers import ancestral_sample

Tensor = torch.Tensor


def generate(
    checkpoint: Checkpoint,
    num: int,
    generator: torch.Generator,
    variance: str | ReverseVariance | None = None,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    clip_x0: bool | None = None,
    use_ema: bool = True,
    progress: bool = True,
) -> Tensor:
    """`num` samples of Algorithm 2 (x_T ~ N(0, I), t = T..1) from the checkpoint's model, as uint8 [N, C, H, W].

    variance, batch_size and clip_x0 default to the checkpoint preset's evaluation config.
    """
    evaluation = checkpoint.preset.evaluation
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    batch_size = evaluation.sample_batch_size if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    variance = ReverseVariance.from_value(evaluation.variance if variance is None else variance)
    clip_x0 = evaluation.clip_x0 if clip_x0 is None else bool(clip_x0)
    device = torch.device(device)
    model = build_eps_model(checkpoint, use_ema=use_ema, device=device)
    diffusion = diffusion_from(checkpoint, device)
    shape = (checkpoint.channels, checkpoint.height, checkpoint.width)
    out = torch.empty((num, *shape), dtype=torch.uint8)  # [N, C, H, W]
    with tqdm(total=num, unit="img", desc="sample", disable=not progress) as bar:
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            result = ancestral_sample(model, diffusion, (n, *shape), generator, variance=variance, clip_x0=clip_x0,
                                      progress=progress, device=device)
            out[start : start + n] = to_uint8(result.x0.float()).cpu()
            bar.update(n)
    return out


def grid_shape(num: int, columns: int | None = None) -> tuple[int, int]:
    """(rows, columns) of a grid of `num` images: ceil(sqrt(num)) columns unless given."""
    columns = math.ceil(math.sqrt(num)) if columns is None else columns
    if columns < 1 or num < 1:
        raise ValueError(f"a grid needs num >= 1 and columns >= 1, got {num}, {columns}")
    return math.ceil(num / columns), columns


def image_grid(images: Tensor, columns: int | None = None, padding: int = 2, pad_value: int = 255) -> np.ndarray:
    """uint8 [N, C, H, W] (C = 1 or 3) -> one uint8 image [rows H + (rows + 1) p, cols W + (cols + 1) p, C]."""
    if (not isinstance(images, Tensor) or images.dtype != torch.uint8 or images.ndim != 4
            or images.shape[1] not in (1, 3)):
        got = (images.dtype, tuple(images.shape)) if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"image_grid expects uint8 images [N, 1 or 3, H, W], got {got}")
    if padding < 0 or not 0 <= pad_value <= 255:
        raise ValueError(f"padding must be >= 0 and pad_value in 0..255, got {padding}, {pad_value}")
    N, C, H, W = images.shape
    rows, cols = grid_shape(N, columns)
    grid = np.full((rows * H + (rows + 1) * padding, cols * W + (cols + 1) * padding, C), pad_value, dtype=np.uint8)
    pixels = images.permute(0, 2, 3, 1).cpu().numpy()  # [N, H, W, C]
    for i in range(N):
        r, c = divmod(i, cols)
        top, left = padding + r * (H + padding), padding + c * (W + padding)
        grid[top : top + H, left : left + W] = pixels[i]
    return grid


def save_image_grid(path: str | os.PathLike, images: Tensor, columns: int | None = None, padding: int = 2,
                    pad_value: int = 255) -> tuple[int, int]:
    """Write `image_grid(images, ...)` as a PNG at `path` (atomically); returns the PNG's (width, height)."""
    from PIL import Image

    grid = image_grid(images, columns, padding, pad_value)
    picture = Image.fromarray(grid[:, :, 0] if grid.shape[2] == 1 else grid)  # mode "L" or "RGB" from the shape
    atomic_write(path, lambda f: picture.save(f, format="PNG"))
    return picture.size


__all__ = ["generate", "grid_shape", "image_grid", "save_image_grid"]
