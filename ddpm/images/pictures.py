"""Pictures of uint8 images [N, C, H, W] (C = 1 or 3): a grid, a strip of a sampling trajectory, PNG bytes.

Small images are shown larger: `image_grid` upscales by an integer factor (nearest neighbour) to at least
MIN_DISPLAY_PIXELS rows per image unless a scale is given. The evaluation's samples.png and trajectory.png are drawn
here; PIL is imported only when a picture is made.
"""

from __future__ import annotations

import io
import math
from collections.abc import Mapping

import numpy as np
import torch

Tensor = torch.Tensor

MIN_DISPLAY_PIXELS = 56  # images are upscaled (nearest) by an integer factor to at least this height


def png_bytes(image) -> bytes:
    """A PIL image encoded as PNG."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def _display_scale(height: int) -> int:
    """The integer factor that brings an image of `height` rows to at least MIN_DISPLAY_PIXELS rows (at least 1)."""
    return max(1, math.ceil(MIN_DISPLAY_PIXELS / height))


def image_grid(images: Tensor, columns: int = 10, padding: int = 2, scale: int | None = None):
    """uint8 [N, C, H, W] (C = 1 or 3) as one PIL image: `columns` per row, padded, upscaled by `scale` (nearest)."""
    from PIL import Image

    if images.dtype != torch.uint8 or images.ndim != 4 or images.shape[1] not in (1, 3) or images.shape[0] < 1:
        raise ValueError(
            f"image_grid needs uint8 [N, 1 or 3, H, W] with N >= 1, got {images.dtype} {tuple(images.shape)}"
        )
    n, c, h, w = images.shape
    scale = _display_scale(h) if scale is None else scale
    columns = min(columns, n)
    rows = math.ceil(n / columns)
    canvas = np.full((rows * (h + padding) + padding, columns * (w + padding) + padding, c), 255, dtype=np.uint8)
    pixels = images.permute(0, 2, 3, 1).numpy()  # [N, H, W, C]
    for i in range(n):
        r, col = divmod(i, columns)
        y, x = padding + r * (h + padding), padding + col * (w + padding)
        canvas[y : y + h, x : x + w] = pixels[i]
    canvas = canvas[:, :, 0] if c == 1 else canvas
    image = Image.fromarray(canvas, mode="L" if c == 1 else "RGB")
    return image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST)


def trajectory_strip(trajectory: Mapping[int, Tensor], scale: int | None = None):
    """Rows = samples, columns = x_t for t descending (x_T left, x_0 right), as one PIL image."""
    if not trajectory:
        raise ValueError("trajectory_strip needs at least one snapshot")
    steps = sorted(trajectory, reverse=True)
    stacked = torch.stack([trajectory[t] for t in steps], dim=1)  # [k, S, C, H, W]
    k, s = stacked.shape[:2]
    return image_grid(stacked.reshape(k * s, *stacked.shape[2:]), columns=s, scale=scale)


__all__ = ["MIN_DISPLAY_PIXELS", "image_grid", "png_bytes", "trajectory_strip"]
