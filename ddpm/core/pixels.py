"""The data map of Ho et al. (2020): uint8 pixels k in {0..255} <-> x = k / 127.5 - 1 in [-1, 1], and back by
rounding. Re-exported by `ddpm.images.data`, whose loaders return uint8 images.
"""

from __future__ import annotations

import torch

Tensor = torch.Tensor


def to_model_range(images: Tensor, dtype: torch.dtype = torch.float32) -> Tensor:
    """uint8 pixels k in {0..255} -> x = k / 127.5 - 1 in [-1, 1] (the data map of Ho et al.), as `dtype`."""
    if not isinstance(images, Tensor) or images.dtype != torch.uint8:
        got = images.dtype if isinstance(images, Tensor) else type(images).__name__
        raise ValueError(f"to_model_range expects a uint8 tensor, got {got}")
    if not dtype.is_floating_point:
        raise ValueError(f"to_model_range needs a floating dtype, got {dtype}")
    return images.to(dtype) / 127.5 - 1.0


def to_uint8(x: Tensor) -> Tensor:
    """x in [-1, 1] -> uint8 k = round((x + 1) * 127.5) clamped to {0..255}; the exact inverse of `to_model_range`.

    Values outside [-1, 1] are clamped (samples of a diffusion model may overshoot); NaN or infinite values
    raise ValueError rather than turning silently into some pixel value.
    """
    if not isinstance(x, Tensor) or not x.dtype.is_floating_point:
        got = x.dtype if isinstance(x, Tensor) else type(x).__name__
        raise ValueError(f"to_uint8 expects a floating tensor, got {got}")
    if not bool(torch.isfinite(x).all()):
        raise ValueError("to_uint8: x contains NaN or infinite values")
    return ((x + 1.0) * 127.5).round().clamp(0, 255).to(torch.uint8)


__all__ = ["to_model_range", "to_uint8"]
