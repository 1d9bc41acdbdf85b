"""Images from a trained checkpoint (Algorithm 2 with the EMA weights at the trained T, or DDIM / strided), and PNG
grids.

`generate(checkpoint, num, generator, ...)` draws `num` samples x_0 ~ p_theta(x_0) in batches of `batch_size`
(one generator shared by the batches in order, so the images depend on the seed and the batch size) and returns
them as uint8 pixels [N, C, H, W] (`ddpm.images.data.to_uint8`: x in [-1, 1] -> round((x + 1) 127.5), clamped).
`image_grid` tiles images row-major into ceil(sqrt(N)) columns with `padding` pixels of `pad_value` around and
between them; `save_image_grid` writes the grid as a PNG atomically.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass

import numpy as np
import torch
from tqdm.auto import tqdm

from ddpm.core.samplers import Sampler, ancestral_sample, check_sampler_options, ddim_sample, strided_sample
from ddpm.core.variance import ReverseVariance
from ddpm.images.data import to_uint8
from ddpm.runtime.files import atomic_write
from ddpm.training.checkpoint import Checkpoint, build_eps_model, diffusion_from

Tensor = torch.Tensor


@dataclass(frozen=True)
class SamplerOptions:
    """How `generate` samples: `sampler` "ancestral" (Algorithm 2, all T steps), "ddim" (Song et al., `num_steps` S
    and `eta`, default 0) or "strided" (Algorithm 2 over S steps, derivation (i)); `variance` sigma_t^2 of the
    ancestral and strided samplers and `clip_x0` (ancestral only), by default the preset's evaluation config;
    `gamma`: this checkpoint's Gamma_t estimates, which variance "optimal" needs (`ddpm.evaluation.optimal_variance`).
    `ddpm.core.samplers.check_sampler_options` says which combinations are valid."""

    sampler: str | Sampler = "ancestral"
    num_steps: int | None = None
    eta: float | None = None
    variance: str | ReverseVariance | None = None
    clip_x0: bool | None = None
    gamma: tuple[float, ...] | None = None


def generate(
    checkpoint: Checkpoint,
    num: int,
    generator: torch.Generator,
    options: SamplerOptions | None = None,
    *,
    batch_size: int | None = None,
    device: str | torch.device = "cpu",
    use_ema: bool = True,
    progress: bool = True,
) -> Tensor:
    """`num` samples from the checkpoint's model as uint8 [N, C, H, W]; by default Algorithm 2 (x_T ~ N(0, I),
    t = T..1).

    `options` (`SamplerOptions`): DDIM or strided sampling take S network evaluations per image instead of T.
    batch_size defaults to the preset's evaluation config; use_ema=False samples with the raw weights.
    """
    options = SamplerOptions() if options is None else options
    variance = options.variance
    choice, num_steps, eta = check_sampler_options(options.sampler, checkpoint.T, options.num_steps, options.eta,
                                                   variance is not None)
    if choice is not Sampler.ANCESTRAL and options.clip_x0:
        raise ValueError(f"clip_x0 is offered by the ancestral sampler only, not {choice.value!r}")
    evaluation = checkpoint.preset.evaluation
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise ValueError(f"num must be a positive int, got {num!r}")
    batch_size = evaluation.sample_batch_size if batch_size is None else batch_size
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise ValueError(f"batch_size must be a positive int, got {batch_size!r}")
    variance = ReverseVariance.from_value(evaluation.variance if variance is None else variance)
    if variance.is_learned and not checkpoint.preset.model.learn_variance:
        raise ValueError("variance 'learned' needs a checkpoint whose model learns its variance (learn_variance)")
    clip_x0 = (evaluation.clip_x0 and choice is Sampler.ANCESTRAL) if options.clip_x0 is None else bool(options.clip_x0)
    device = torch.device(device)
    model = build_eps_model(checkpoint, use_ema=use_ema, device=device)
    diffusion = diffusion_from(checkpoint, device)
    if variance is ReverseVariance.OPTIMAL:
        if options.gamma is None:
            raise ValueError("variance 'optimal' needs the checkpoint's Gamma_t estimates (optimal_variance.json, "
                             "written by python -m ddpm evaluate)")
        diffusion = diffusion.with_optimal_variance(options.gamma)
    settled = SamplerOptions(choice, num_steps, eta, variance, clip_x0, options.gamma)
    shape = (checkpoint.channels, checkpoint.height, checkpoint.width)
    out = torch.empty((num, *shape), dtype=torch.uint8)  # [N, C, H, W]
    with tqdm(total=num, unit="img", desc="sample", disable=not progress) as bar:
        for start in range(0, num, batch_size):
            n = min(batch_size, num - start)
            result = _sample_batch(model, diffusion, (n, *shape), generator, settled, device, progress)
            out[start : start + n] = to_uint8(result.x0.float()).cpu()
            bar.update(n)
    return out


def _sample_batch(model, diffusion, shape: tuple[int, ...], generator: torch.Generator, options: SamplerOptions,
                  device: torch.device, progress: bool):
    """One batch by the sampler of `options` (its choices settled by `generate`)."""
    variance, clip_x0, num_steps = options.variance, options.clip_x0, options.num_steps
    assert variance is not None and clip_x0 is not None, "generate settles the variance and clip_x0"
    if options.sampler is Sampler.ANCESTRAL:
        return ancestral_sample(model, diffusion, shape, generator, variance=variance,
                                clip_x0=clip_x0, progress=progress, device=device)
    assert num_steps is not None, "check_sampler_options gives ddim and strided a number of steps"
    if options.sampler is Sampler.DDIM:
        assert options.eta is not None, "check_sampler_options gives ddim an eta"
        return ddim_sample(model, diffusion, shape, generator, num_steps=num_steps, eta=options.eta,
                           progress=progress, device=device)
    return strided_sample(model, diffusion, shape, generator, num_steps=num_steps,
                          variance=variance, progress=progress, device=device)


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


def save_npz(path: str | os.PathLike, images: Tensor) -> None:
    """Write uint8 images [N, C, H, W] to `path` as a compressed .npz with the key "images" (atomically)."""
    import io

    buffer = io.BytesIO()
    np.savez_compressed(buffer, images=images.cpu().numpy())
    atomic_write(path, lambda f: f.write(buffer.getvalue()))


__all__ = ["SamplerOptions", "generate", "grid_shape", "image_grid", "save_image_grid", "save_npz"]
