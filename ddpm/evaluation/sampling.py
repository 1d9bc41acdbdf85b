"""Algorithm-2 samples of the evaluated model, and the files that show them.

N = fid_num_samples samples by Algorithm 2 at the trained T with the EMA weights and the headline variance, in
batches of sample_batch_size (one generator, batches drawn in order), with sample images/s = N / sampling seconds;
with EvaluationConfig.compile_sampler the network runs through torch.compile (compiled once; its compile time is
part of the sampling seconds; metrics.json "sampling_compiled"). `write_sample_files` stores them in the run folder:
samples_uint8.npz (key "images", uint8 [N, C, H, W]), samples.png (a grid of the first GRID_MAX_IMAGES) and
trajectory.png (rows: the first TRAJECTORY_ROWS samples of the first batch; columns: x_t from T to 0).
"""

from __future__ import annotations

import math
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import torch
from tqdm.auto import tqdm

from ddpm.core.diffusion import GaussianDiffusion
from ddpm.core.samplers import ancestral_sample
from ddpm.evaluation.errors import EvaluationError
from ddpm.evaluation.generate import save_npz
from ddpm.evaluation.run_folder import SAMPLES_NPZ, SAMPLES_PNG, TRAJECTORY_PNG
from ddpm.images import data
from ddpm.images.pictures import image_grid, png_bytes, trajectory_strip
from ddpm.runtime.devices import synchronize
from ddpm.runtime.files import atomic_write_bytes
from ddpm.training.config import EvaluationConfig

Tensor = torch.Tensor

GRID_MAX_IMAGES = 100  # samples.png shows the first min(N, 100) samples, 10 per row
TRAJECTORY_ROWS = 8  # trajectory.png shows the first 8 samples of the first batch


@dataclass(frozen=True)
class SampleRun:
    """N Algorithm-2 samples as uint8 [N, C, H, W], snapshots {t: uint8 [k, C, H, W]} of the first batch, timing."""

    images: Tensor
    trajectory: Mapping[int, Tensor] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def images_per_second(self) -> float:
        """N / sampling seconds."""
        return self.images.shape[0] / self.seconds if self.seconds > 0 else math.nan


@dataclass(frozen=True)
class SampleRequest:
    """What `draw_samples` draws: `num` images of `image_shape` (C, H, W) in batches of `batch_size`, under the
    reverse variance `variance` (clip_x0: the predicted x_0 clipped to [-1, 1]), with snapshots x_t at
    `trajectory_steps` of the first `trajectory_rows` images of the first batch, through torch.compile or not."""

    num: int
    image_shape: tuple[int, int, int]
    batch_size: int
    variance: str = "beta"
    clip_x0: bool = False
    trajectory_steps: Iterable[int] | None = None
    trajectory_rows: int = TRAJECTORY_ROWS
    compile: bool = False

    @classmethod
    def from_config(cls, config: EvaluationConfig, image_shape: tuple[int, int, int]) -> SampleRequest:
        """The evaluation's samples: fid_num_samples images under the headline variance, as `config` says."""
        return cls(num=config.fid_num_samples, image_shape=image_shape, batch_size=config.sample_batch_size,
                   variance=config.variance, clip_x0=config.clip_x0, trajectory_steps=config.trajectory_steps,
                   compile=config.compile_sampler)


def draw_samples(
    eps_model,
    diffusion: GaussianDiffusion,
    request: SampleRequest,
    generator: torch.Generator,
    *,
    device: torch.device | str = "cpu",
    progress: bool = True,
) -> SampleRun:
    """`request.num` samples of p_theta(x_0) by Algorithm 2 in batches of `request.batch_size`, as uint8 (clamped to
    [-1, 1]), all drawn from `generator` in order.

    `request.compile` wraps the network in torch.compile(dynamic=False) once for all batches (a smaller last batch
    compiles its own shape); the compile time counts in `seconds`."""
    num, batch_size, image_shape = request.num, request.batch_size, request.image_shape
    if isinstance(num, bool) or not isinstance(num, int) or num < 1:
        raise EvaluationError(f"number of samples must be an integer >= 1, got {num!r}")
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise EvaluationError(f"sample batch size must be an integer >= 1, got {batch_size!r}")
    device = torch.device(device)
    diffusion = diffusion.to(device)
    if request.compile:
        eps_model = torch.compile(eps_model, dynamic=False)
    out = torch.empty((num, *image_shape), dtype=torch.uint8)  # [N, C, H, W]
    trajectory: dict[int, Tensor] = {}
    start = time.perf_counter()
    bar = tqdm(total=num, desc="samples", unit="img", disable=not progress)
    done = 0
    while done < num:
        b = min(batch_size, num - done)
        result = ancestral_sample(
            eps_model, diffusion, (b, *image_shape), generator, variance=request.variance, clip_x0=request.clip_x0,
            progress=progress, trajectory_steps=request.trajectory_steps if done == 0 else None, device=device,
        )
        out[done : done + b] = data.to_uint8(result.x0).cpu()
        if done == 0:
            trajectory = {t: data.to_uint8(x[:request.trajectory_rows]).cpu() for t, x in result.trajectory.items()}
        done += b
        bar.update(b)
        bar.set_postfix(img_per_s=f"{done / max(time.perf_counter() - start, 1e-9):.2f}")
    bar.close()
    synchronize(device)
    return SampleRun(images=out, trajectory=trajectory, seconds=time.perf_counter() - start)


def write_sample_files(out_dir: Path, samples: SampleRun) -> None:
    """samples_uint8.npz, samples.png and trajectory.png of `samples` in out_dir (each atomically)."""
    save_npz(out_dir / SAMPLES_NPZ, samples.images)
    atomic_write_bytes(out_dir / SAMPLES_PNG, png_bytes(image_grid(samples.images[:GRID_MAX_IMAGES])))
    atomic_write_bytes(out_dir / TRAJECTORY_PNG, png_bytes(trajectory_strip(samples.trajectory)))


__all__ = ["GRID_MAX_IMAGES", "TRAJECTORY_ROWS", "SampleRequest", "SampleRun", "draw_samples", "write_sample_files"]
