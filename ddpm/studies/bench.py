"""Speed of this library, measured side by side: `run_bench` writes bench.json and bench.md.

Every headline figure is a ratio of two throughputs measured in the same process in alternating rounds
(A B, then B A, then A B, ...), so that the drift of a shared machine hits both sides alike. A ratio is the
median over rounds of the per-round ratio; the raw per-round throughputs are stored next to it, and
`compute_ratios` rebuilds every ratio from them.

1. Sampling. Algorithm 2 at the preset's T (1000 for `small`) for one fixed batch: `ddpm.core.samplers.ancestral_sample`
   against the step loop of diffusers' DDPMPipeline (`DDPMScheduler.step`) driving the very same network object.
   Mapping: our sigma_t^2 = beta_t ("beta") is diffusers' variance_type "fixed_large", beta_tilde_t ("beta_tilde")
   is "fixed_small"; clip_sample=False (Algorithm 2 as written); prediction_type "epsilon"; diffusers numbers its
   steps s = 0..T-1, our t = s + 1 (the adapter `PaperTimesteps`). Both sides draw x_T and then z at every step but
   the last from generators seeded alike, in the same order, so their samples agree up to rounding: the largest
   difference is recorded as a cross-check (diffusers keeps its schedule in float32 and forms
   beta_t = 1 - alpha_bar_t / alpha_bar_{t-1} by cancellation, so the agreement is ~1e-4, not float32 rounding).
   Also timed, not the headline: `ancestral_sample(compile=True)` (torch.compile of the network; both loops would
   gain alike from a compiled network) and its compilation time.
2. Training. Images/s of the trainer itself (`ddpm.training.trainer.train` in a temporary folder; its train_log.jsonl
   gives the rate of a window of updates after as many warm-up updates) against a plain diffusers-style loop (diffusers'
   train_unconditional example: add_noise, the same network, MSE, backward, gradient clipping at 1, Adam, EMAModel),
   timed over the same windows. Each side builds the network from the same preset and seed.
3. The exact bound. `ddpm.core.bound.elbo_terms` ((image, t) pairs packed into batches) against a per-timestep loop
   (`elbo_terms_loop`: one network call per t on the image batch, as improved-diffusion's calc_bpd_loop, through our
   public q_sample / p_mean_variance / q_posterior_mean_variance / normal_kl / discretized_gaussian_log_likelihood);
   the bound's throughput over the network's raw forward throughput (inference mode, same batch size), over a sweep
   of batch sizes; and the Monte Carlo estimate's cost for a standard error of 0.01 bits/dim on the test split
   (`ddpm.evaluation.bounds.evaluate_elbo`: importance proposal from an exact subset, one draw per image): the per-draw
   variance s^2 it measures gives n = s^2 / 0.01^2 draws (one network call each; conservative: it counts the
   variation between images too), plus the exact subset's T calls per image, against T calls per test image.
4. Utilisation. Forward FLOPs per image (`ddpm.training.config.forward_flops_per_image`, torch.utils.flop_counter:
   convolutions and matrix products) times images/s, over the peak measured in the same run (the best of float32
   2048^3 matmuls on CPU, bfloat16 8192^3 on CUDA, before and after the measurements).
5. Wall time of the parts of `nox -s verify` (pytest -m symbolic, -m statistical, and the rest), each run once.

diffusers is optional (the `bench` extra): without it the two diffusers comparisons are null and say why.
"""

from __future__ import annotations

import copy
import dataclasses
import json
import math
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, TypeVar

import torch
import torch.nn.functional as F

from ddpm.core.bound import (
    ElboTerms,
    discretized_gaussian_log_likelihood,
    elbo_terms,
    normal_kl,
)
from ddpm.core.diffusion import GaussianDiffusion, check_generator, standard_normal
from ddpm.core.forward import compute_dtype
from ddpm.core.kernels import model_output
from ddpm.core.samplers import ancestral_sample
from ddpm.core.schedules import make_betas
from ddpm.core.variance import ReverseVariance
from ddpm.images import data
from ddpm.runtime.devices import synchronize
from ddpm.runtime.provenance import versions
from ddpm.training.config import Preset, forward_flops_per_image, get_preset
from ddpm.training.model import build_unet

Tensor = torch.Tensor
_T = TypeVar("_T")

BENCH_JSON = "bench.json"
BENCH_MD = "bench.md"
FORMAT_VERSION = 1
# What each ratio should reach (ours over theirs, or over the network's raw forward; above 1: ours is faster).
TARGETS = {
    "sampling_vs_diffusers": 1.0,
    "sampling_vs_forward": 0.95,
    "train_step_vs_diffusers": 1.0,
    "exact_bound_vs_forward": 0.9,
    "mc_bound_speedup": 10.0,
}
RATIO_NAMES = (
    "sampling_vs_diffusers",
    "sampling_vs_forward",
    "train_step_vs_diffusers",
    "exact_bound_vs_loop",
    "exact_bound_vs_forward",
    "mc_bound_speedup",
    "utilisation",
)
# Also reported when measured: torch.compile of the network in our sampler (an option; the headline is eager).
EXTRA_RATIO_NAMES = ("sampling_compiled_vs_diffusers", "sampling_compiled_vs_eager", "fid_features_vs_torch_fidelity")
# Our reverse variance -> diffusers' DDPMScheduler variance_type (same sigma_t^2 for t >= 2; no noise at t = 1).
# "learned_range" splits a 2C-channel output into eps and v and interpolates log beta_t and log beta_tilde_t with
# frac = (v + 1) / 2, our "learned" (derivation (k)).
DIFFUSERS_VARIANCE_TYPE = {ReverseVariance.BETA: "fixed_large", ReverseVariance.BETA_TILDE: "fixed_small",
                           ReverseVariance.LEARNED: "learned_range"}
# Network calls per round of the raw-forward figure beside sampling (rows = sample_batch each).
FORWARD_STEPS = 100
# `nox -s verify`'s parts: name -> pytest -m expression.
VERIFY_PARTS = {
    "symbolic": "symbolic",
    "statistical": "statistical",
    "numeric (everything else)": "not symbolic and not statistical",
}


class BenchError(ValueError):
    """A bench setting that cannot work (sizes, paths); the message is one line."""


@dataclass(frozen=True)
class BenchConfig:
    """Sizes of one bench run. `BENCH_MODES` holds the named ones; tests use tiny custom ones."""

    preset: str = "small"
    """The network, schedule (T) and training settings measured."""
    data: str = "mnist"
    """Dataset (train split for training, test split for the bound) when no checkpoint is used."""
    device: str = "cpu"
    threads: int | None = None
    """torch.set_num_threads for the run (None: torch's default)."""
    seed: int = 0
    sample_batch: int = 32
    """Images per Algorithm-2 run (both sides)."""
    sample_repeats: int = 3
    """Rounds of (ours, diffusers[, ours compiled]) sampling."""
    compile_sampler: bool = True
    """Also time `ancestral_sample(compile=True)` (torch.compile of the network) and its compilation."""
    train_steps: int = 20
    """Timed updates per training round, after as many warm-up updates."""
    train_repeats: int = 3
    bound_images: int = 8
    """Images of the exact bound (T network inputs each) for the sweep and the per-timestep loop."""
    bound_batch_sizes: tuple[int, ...] = (125, 250, 500)
    bound_repeats: int = 2
    checkpoint: str | None = "reports/train_small/checkpoint.pt"
    """A trained model for the Monte Carlo variance (and every measurement); missing: train one briefly here."""
    fallback_train_minutes: float | None = 1.0
    fallback_train_steps: int | None = None
    mc_images: int | None = None
    """Test images of the Monte Carlo variance measurement (None: the whole test split)."""
    mc_exact_images: int = 8
    """Exact-subset images that build the importance proposal (their T calls each are charged to Monte Carlo)."""
    mc_target_stderr: float = 0.01
    """Standard error (bits/dim) the Monte Carlo cost is computed for."""
    verify: bool = True
    """Time the parts of `nox -s verify` (pytest subprocesses)."""
    verify_timeout_seconds: float = 600.0
    fid_images: int = 64
    """Images per round of the Inception feature comparison (ours vs torch-fidelity's own pipeline)."""
    fid_repeats: int = 2
    peak_repeats: int = 5
    peak_matmul_size: int | None = None
    """Side of the square matmul of the peak (None: 2048 float32 on CPU, 8192 bfloat16 on CUDA)."""

    def __post_init__(self) -> None:
        object.__setattr__(self, "bound_batch_sizes", tuple(self.bound_batch_sizes))
        get_preset(self.preset)
        for name in ("sample_batch", "sample_repeats", "train_steps", "train_repeats", "bound_images",
                     "bound_repeats", "mc_exact_images", "fid_images", "fid_repeats", "peak_repeats"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise BenchError(f"{name} must be a positive int, got {value!r}")
        if not self.bound_batch_sizes or any(isinstance(b, bool) or not isinstance(b, int) or b < 1
                                             for b in self.bound_batch_sizes):
            raise BenchError(f"bound_batch_sizes must be positive ints, got {self.bound_batch_sizes!r}")
        if self.threads is not None and (not isinstance(self.threads, int) or self.threads < 1):
            raise BenchError(f"threads must be a positive int or None, got {self.threads!r}")
        if not (isinstance(self.mc_target_stderr, float) and self.mc_target_stderr > 0):
            raise BenchError(f"mc_target_stderr must be a positive float, got {self.mc_target_stderr!r}")
        if self.fallback_train_minutes is None and self.fallback_train_steps is None:
            raise BenchError("set fallback_train_minutes or fallback_train_steps (for the model trained when no "
                             "checkpoint exists)")

    def replace(self, **changes) -> BenchConfig:
        """A copy with `changes` applied (validated again)."""
        return dataclasses.replace(self, **changes)


BENCH_MODES: dict[str, BenchConfig] = {
    # `nox -s bench` on the 2-core CPU: ~8 minutes plus the verify parts.
    "full": BenchConfig(),
    # A look in ~2 minutes: one sampling round of 16 images, fewer training updates and batch sizes, no verify.
    "quick": BenchConfig(sample_batch=16, sample_repeats=1, compile_sampler=False, train_steps=10,
                         train_repeats=2, bound_batch_sizes=(250, 500), bound_repeats=1, mc_images=2000,
                         verify=False, fallback_train_minutes=0.5, fid_images=16, fid_repeats=1, peak_repeats=3),
}


# ---------------------------------------------------------------------------------------------- helpers
def _timed(fn: Callable[[], _T], device: torch.device) -> tuple[float, _T]:
    """(seconds, fn()) with the device synchronised on both ends."""
    synchronize(device)
    start = time.perf_counter()
    out = fn()
    synchronize(device)
    return time.perf_counter() - start, out


def alternating_rounds(sides: Mapping[str, Callable[[int], object]], repeats: int) -> dict[str, list]:
    """Call every side once per round, in alternating order (A B, B A, ...); {name: [result of round r]}."""
    names = list(sides)
    results: dict[str, list] = {name: [] for name in names}
    for r in range(repeats):
        for name in names if r % 2 == 0 else names[::-1]:
            results[name].append(sides[name](r))
    return results


def median_ratio(numerator: Sequence[float], denominator: Sequence[float]) -> float:
    """Median over rounds of numerator[r] / denominator[r] (NaN when there are no rounds)."""
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return statistics.median(ratios) if ratios else math.nan


def _ratio_summary(numerator: Sequence[float], denominator: Sequence[float]) -> dict:
    ratios = [a / b for a, b in zip(numerator, denominator, strict=True)]
    return {"median": median_ratio(numerator, denominator), "min": min(ratios), "max": max(ratios),
            "per_round": ratios}


def _diffusers():
    """The diffusers module, or None when it is not installed (it is only a benchmark dependency)."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")  # construct from config only; never reach for the hub
    try:
        import diffusers
    except ImportError:
        return None
    return diffusers


def machine_description(device: torch.device) -> dict:
    """CPU model, cores, threads, torch version and capability, device name, load averages now."""
    cpu_model = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu_model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        usable: int | None = len(os.sched_getaffinity(0))
    except AttributeError:
        usable = os.cpu_count()
    software = versions("platform", base=("torch", "python"))
    description = {
        "cpu_model": cpu_model,
        "cpu_count": os.cpu_count(),
        "cpus_usable": usable,
        "torch_threads": torch.get_num_threads(),
        "torch_interop_threads": torch.get_num_interop_threads(),
        "torch": software["torch"],
        "cpu_capability": torch.backends.cpu.get_cpu_capability(),
        "python": software["python"],
        "platform": software["platform"],
        "device": str(device),
        "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_model,
        "load_average": list(os.getloadavg()) if hasattr(os, "getloadavg") else None,
    }
    diffusers = _diffusers()
    description["diffusers"] = None if diffusers is None else str(diffusers.__version__)
    return description


def matmul_peak(device: torch.device, size: int | None = None, repeats: int = 5) -> dict:
    """The best FLOP/s of `repeats` square matmuls (float32 2048 on CPU, bfloat16 8192 on CUDA): the machine's peak."""
    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    n = size or (8192 if device.type == "cuda" else 2048)
    generator = torch.Generator(device=device).manual_seed(0)
    a = torch.randn(n, n, generator=generator, device=device, dtype=dtype)
    b = torch.randn(n, n, generator=generator, device=device, dtype=dtype)
    torch.mm(a, b)  # warm-up
    seconds = [_timed(lambda: torch.mm(a, b), device)[0] for _ in range(repeats)]
    flops = 2.0 * n**3
    return {"size": n, "dtype": str(dtype).removeprefix("torch."), "flops_per_second": flops / min(seconds),
            "flops_per_second_each": [flops / s for s in seconds]}


def training_flops_per_image(model: torch.nn.Module, image_channels: int, image_size: tuple[int, int],
                             num_timesteps: int, batch_size: int = 2) -> float:
    """FLOPs of one forward + backward pass per image (torch.utils.flop_counter; convolutions and matmuls)."""
    from torch.utils.flop_counter import FlopCounterMode

    net = copy.deepcopy(model).train().requires_grad_(True)
    parameter = next(net.parameters())
    x = torch.zeros(batch_size, image_channels, *image_size, dtype=parameter.dtype, device=parameter.device)
    t = torch.full((batch_size,), num_timesteps, dtype=torch.int64, device=parameter.device)
    with FlopCounterMode(display=False) as counter:
        net(x, t).square().mean().backward()
    return counter.get_total_flops() / batch_size


# ------------------------------------------------------------------------------------------- sampling
class PaperTimesteps:
    """eps_model called the diffusers way, eps(sample, s), s a 0-d step in 0..T-1: eps_model(x_t, t = s + 1 [B])."""

    def __init__(self, eps_model) -> None:
        self.eps_model = eps_model

    def __call__(self, sample: Tensor, s: Tensor) -> Tensor:
        t = (s.to(device=sample.device, dtype=torch.int64) + 1).expand(sample.shape[0])  # [B]
        return self.eps_model(sample, t)


def diffusers_scheduler(diffusion: GaussianDiffusion, variance: str | ReverseVariance = "beta"):
    """diffusers' DDPMScheduler for our betas and reverse variance, Algorithm 2 as written (no clipping)."""
    from diffusers import DDPMScheduler

    choice = ReverseVariance.from_value(variance)
    betas = diffusion.betas[1:].cpu().numpy()  # float64 [T], beta_1 .. beta_T
    return DDPMScheduler(num_train_timesteps=diffusion.T, trained_betas=betas,
                         variance_type=DIFFUSERS_VARIANCE_TYPE[choice], clip_sample=False,
                         prediction_type="epsilon")


@torch.no_grad()
def diffusers_ancestral_sample(eps_model, scheduler, shape: tuple[int, ...], generator: torch.Generator,
                               device: torch.device | str = "cpu", dtype: torch.dtype = torch.float32) -> Tensor:
    """x_0 by diffusers' DDPMPipeline loop: x_T = randn_tensor, then scheduler.step for s = T-1..0 (our t = s + 1).

    eps_model takes the paper's t (ddpm convention); `PaperTimesteps` adapts it. No clipping, no post-processing.
    """
    from diffusers.utils.torch_utils import randn_tensor

    check_generator(generator)
    model = PaperTimesteps(eps_model)
    sample = randn_tensor(shape, generator=generator, device=torch.device(device), dtype=dtype)  # [B, ...], x_T
    scheduler.set_timesteps(scheduler.config.num_train_timesteps, device=device)
    for s in scheduler.timesteps:
        model_output = model(sample, s)
        sample = scheduler.step(model_output, s, sample, generator=generator).prev_sample
    return sample


def sampling_variance(preset: Preset) -> str:
    """The reverse variance the bench samples with: the model's own (`Preset.training_variance`)."""
    return preset.training_variance.value


def bench_sampling(model, diffusion: GaussianDiffusion, image_shape: tuple[int, int, int], config: BenchConfig,
                   device: torch.device, variance: str = "beta") -> dict:
    """Algorithm 2 at T for `sample_batch` images, ours vs diffusers' DDPMScheduler loop, alternating rounds, and
    the network's raw forward at the same batch (`forward_images_per_second`, per image and step)."""
    shape = (config.sample_batch, *image_shape)
    T = diffusion.T
    record: dict = {"T": T, "batch": config.sample_batch, "variance": variance, "rounds": config.sample_repeats}

    def forward(r: int) -> float:
        return _forward_rate(model, config.sample_batch * min(T, FORWARD_STEPS), config.sample_batch, image_shape, T,
                             device, config.seed + r)

    if _diffusers() is None:
        record["diffusers"] = None
        record["skipped"] = "diffusers is not installed (pip install -e .[bench])"
        rates = _ours_and_forward_rates(model, diffusion, shape, config, device, variance, forward)
        record["ours_images_per_second"] = rates["ours"]
        record["forward_images_per_second"] = rates["forward"]
        return record
    scheduler = diffusers_scheduler(diffusion, variance)
    record["diffusers_variance_type"] = scheduler.config.variance_type
    record["diffusers_clip_sample"] = bool(scheduler.config.clip_sample)
    outputs: dict[str, list[Tensor]] = {"diffusers": []}

    def our_side(name: str, compile: bool):
        """One round of ancestral_sample (eager or compiled) -> images/s; its x_0 kept in outputs[name]."""
        outputs[name] = []

        def side(r: int) -> float:
            seconds, result = _timed(lambda: ancestral_sample(model, diffusion, shape,
                                                              _generator(config.seed + r, device), variance=variance,
                                                              progress=False, device=device, compile=compile), device)
            outputs[name].append(result.x0)
            return config.sample_batch / seconds

        return side

    def theirs(r: int) -> float:
        seconds, x0 = _timed(lambda: diffusers_ancestral_sample(model, scheduler, shape,
                                                                _generator(config.seed + r, device), device), device)
        outputs["diffusers"].append(x0)
        return config.sample_batch / seconds

    sides = {"ours": our_side("ours", compile=False), "diffusers": theirs, "forward": forward}
    if config.compile_sampler:
        # Compilation happens at the first network call: time it on a 2-step chain of the same batch shape.
        short = GaussianDiffusion(diffusion.betas[1:3].cpu().numpy()).to(device)
        record["compile_seconds"], _ = _timed(lambda: ancestral_sample(model, short, shape, _generator(0, device),
                                                                       variance=variance, progress=False,
                                                                       device=device, compile=True),
                                              device)
        sides["ours_compiled"] = our_side("ours_compiled", compile=True)
    rates = alternating_rounds(sides, config.sample_repeats)
    for name in sides:
        record[f"{name}_images_per_second"] = rates[name]
    record["cross_check"] = _cross_check(outputs, config.compile_sampler)
    return record


def _ours_and_forward_rates(model, diffusion: GaussianDiffusion, shape: tuple[int, ...], config: BenchConfig,
                            device: torch.device, variance: str, forward: Callable[[int], float]) -> dict[str, list]:
    """Images/s of our Algorithm 2 and of the raw forward (`forward(round)`), alternating rounds: the sampling
    figures when diffusers is not installed."""

    def ours_only(r: int) -> float:
        seconds, _ = _timed(lambda: ancestral_sample(model, diffusion, shape, _generator(config.seed + r, device),
                                                     variance=variance, progress=False, device=device), device)
        return config.sample_batch / seconds

    return alternating_rounds({"ours": ours_only, "forward": forward}, config.sample_repeats)


def _cross_check(outputs: Mapping[str, list[Tensor]], compiled: bool) -> dict:
    """The largest |x_0| difference of our samples from diffusers' (and from our compiled sampler's) per round."""
    def largest_difference(other: str) -> float:
        return max(float((a - b).abs().max()) for a, b in zip(outputs["ours"], outputs[other], strict=True))

    scale = max(float(x.abs().max()) for x in outputs["ours"])
    check = {"max_abs_difference": largest_difference("diffusers"), "max_abs_sample": scale, "same_noise": True}
    if compiled:
        check["compiled_max_abs_difference"] = largest_difference("ours_compiled")
    return check


def _generator(seed: int, device: torch.device) -> torch.Generator:
    return torch.Generator(device=device).manual_seed(seed)


# ------------------------------------------------------------------------------------------- training
def _ours_training_rate(dataset: str, preset: Preset, steps: int, seed: int, device: torch.device,
                        workdir: Path, name: str) -> float:
    """Images/s of `ddpm.training.trainer.train` over updates steps+1 .. 2 steps (its second train_log.jsonl window)."""
    from ddpm.training.trainer import LOG_NAME, TrainOptions, train

    training = preset.training.replace(max_steps=2 * steps, max_minutes=None, session_minutes=None,
                                       log_every=steps, checkpoint_every_minutes=1e6)
    out = workdir / name
    try:
        train(dataset, out, preset.replace(training=training), options=TrainOptions(seed=seed), device=device,
              progress=False, command=["ddpm", "bench"])
        lines = (out / LOG_NAME).read_text(encoding="utf-8").splitlines()
        return float(json.loads(lines[-1])["images_per_second"])
    finally:
        shutil.rmtree(out, ignore_errors=True)


def _diffusers_training_rate(images: Tensor, preset: Preset, steps: int, seed: int, device: torch.device) -> float:
    """Images/s of diffusers' train_unconditional loop (add_noise, MSE, clip 1, Adam, EMAModel) with our network."""
    from diffusers import DDPMScheduler
    from diffusers.optimization import get_scheduler
    from diffusers.training_utils import EMAModel

    from ddpm.training.trainer import derived_seed

    config = preset.training
    _, C, H, W = images.shape
    B, T = config.batch_size, config.T
    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
        torch.manual_seed(derived_seed(seed, 0))  # the trainer's initial weights (same stream as ddpm.training.trainer)
        model = build_unet(preset.model, C, (H, W), T).to(device).train()
        noise_scheduler = DDPMScheduler(num_train_timesteps=T, trained_betas=make_betas(config.schedule, T))
        optimizer = torch.optim.Adam(model.parameters(), lr=config.learning_rate)
        lr_scheduler = get_scheduler("constant_with_warmup", optimizer=optimizer,
                                     num_warmup_steps=config.warmup_steps)
        ema = EMAModel(model.parameters(), decay=config.ema_decay)
        images = images.to(device)
        index_generator = torch.Generator().manual_seed(seed)
        generator = torch.Generator(device=device).manual_seed(seed + 1)
        cuda = device.type == "cuda"
        seconds = 0.0
        for step in range(2 * steps):
            synchronize(device)
            start = time.perf_counter()
            index = torch.randint(0, images.shape[0], (B,), generator=index_generator).to(device)
            clean = images[index].to(torch.float32) / 127.5 - 1.0  # [B, C, H, W]
            noise = torch.randn(clean.shape, generator=generator, device=device)
            timesteps = torch.randint(0, T, (B,), generator=generator, device=device)  # diffusers' s = t - 1
            noisy = noise_scheduler.add_noise(clean, noise, timesteps)
            with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                prediction = model(noisy, timesteps + 1)[:, :C]  # eps (a learned-variance model adds v after it)
                loss = F.mse_loss(prediction.float(), noise)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
            optimizer.step()
            lr_scheduler.step()
            optimizer.zero_grad()
            ema.step(model.parameters())
            synchronize(device)
            if step >= steps:
                seconds += time.perf_counter() - start
    return B * steps / seconds


def bench_training(dataset: str, preset: Preset, config: BenchConfig, device: torch.device) -> dict:
    """Training images/s, ours (the trainer) vs a diffusers-style loop, alternating rounds."""
    record: dict = {"batch": preset.training.batch_size, "warmup_updates": config.train_steps,
                    "timed_updates": config.train_steps, "rounds": config.train_repeats, "dataset": dataset}
    with tempfile.TemporaryDirectory(prefix="ddpm-bench-") as tmp:
        workdir = Path(tmp)
        if _diffusers() is None:
            record["diffusers"] = None
            record["skipped"] = "diffusers is not installed (pip install -e .[bench])"
            record["ours_images_per_second"] = [_ours_training_rate(dataset, preset, config.train_steps,
                                                                    config.seed, device, workdir, "ours")]
            return record
        images = data.load_images(dataset, "train")

        def ours(r: int) -> float:
            return _ours_training_rate(dataset, preset, config.train_steps, config.seed, device, workdir, f"ours{r}")

        def theirs(r: int) -> float:
            return _diffusers_training_rate(images, preset, config.train_steps, config.seed, device)

        rates = alternating_rounds({"ours": ours, "diffusers": theirs}, config.train_repeats)
    record["ours_images_per_second"] = rates["ours"]
    record["diffusers_images_per_second"] = rates["diffusers"]
    return record


# ------------------------------------------------------------------------------------------ the bound
def elbo_terms_loop(eps_model, diffusion: GaussianDiffusion, x0: Tensor, generator: torch.Generator,
                    variance: str | ReverseVariance = "beta") -> ElboTerms:
    """The bound of eq. 5 the straightforward way: for t = 1..T one network call on the whole image batch.

    As improved-diffusion's calc_bpd_loop, through the public functions (each validates its inputs): q_sample,
    p_mean_variance, q_posterior_mean_variance, normal_kl, discretized_gaussian_log_likelihood, float64 arithmetic.
    eps is drawn as one torch.randn([B, ...]) per t (x_0's compute dtype) in the order t = 1..T, as `elbo_terms`
    draws it, so the two give the same terms up to rounding.
    """
    choice = ReverseVariance.from_value(variance)
    B, T = x0.shape[0], diffusion.T
    f64 = torch.float64
    x0_64 = x0.to(f64)
    noise_dtype = compute_dtype(x0.dtype)
    dims = tuple(range(1, x0.ndim))
    kl = torch.empty(B, T - 1, dtype=f64, device=x0.device)  # [B, T - 1]
    decoder = torch.empty(B, dtype=f64, device=x0.device)
    with torch.no_grad():
        for t_value in range(1, T + 1):
            noise = standard_normal(tuple(x0.shape), generator, noise_dtype, x0.device).to(f64)  # [B, ...]
            t = torch.full((B,), t_value, dtype=torch.int64, device=x0.device)  # [B]
            xt = diffusion.q_sample(x0_64, t, noise)  # [B, ...]
            eps = model_output(eps_model, xt.to(x0.dtype), t)[0].to(f64)
            mean, var = diffusion.p_mean_variance(eps, xt, t, choice)
            if t_value == 1:
                decoder = -discretized_gaussian_log_likelihood(x0_64, mean, var).sum(dim=dims)
            else:
                true_mean, true_var = diffusion.q_posterior_mean_variance(x0_64, xt, t)
                kl[:, t_value - 2] = normal_kl(true_mean, true_var, mean, var).sum(dim=dims)
        t_last = torch.full((B,), T, dtype=torch.int64, device=x0.device)
        prior_mean, prior_var = diffusion.q_mean_variance(x0_64, t_last)
        prior = normal_kl(prior_mean, prior_var, 0.0, 1.0).sum(dim=dims)
    return ElboTerms(prior=prior, kl=kl, decoder=decoder, num_dims=x0[0].numel())


def _forward_rate(model, rows: int, batch_size: int, image_shape: tuple[int, ...], T: int,
                  device: torch.device, seed: int) -> float:
    """Network inputs per second of `rows` forward rows in chunks of batch_size (inference mode, random x_t and t)."""
    generator = torch.Generator(device=device).manual_seed(seed)
    x = torch.randn((batch_size, *image_shape), generator=generator, device=device)  # [bs, C, H, W]
    t = torch.randint(1, T + 1, (batch_size,), generator=generator, device=device)  # [bs]
    sizes = [batch_size] * (rows // batch_size) + ([rows % batch_size] if rows % batch_size else [])

    def run() -> None:
        with torch.inference_mode():
            for n in sizes:
                model(x[:n], t[:n])

    seconds, _ = _timed(run, device)
    return rows / seconds


def bench_exact_bound(model, diffusion: GaussianDiffusion, x0: Tensor, config: BenchConfig,
                      device: torch.device) -> dict:
    """The exact bound's (image, t) pairs/s vs the raw forward (batch sweep) and vs the per-timestep loop."""
    T, B = diffusion.T, x0.shape[0]
    rows = B * T
    image_shape = tuple(x0.shape[1:])
    sweep: list[dict[str, Any]] = []
    for batch_size in config.bound_batch_sizes:

        def bound(r: int, batch_size=batch_size) -> float:
            seconds, _ = _timed(lambda: elbo_terms(model, diffusion, x0, _generator(config.seed + r, device),
                                                   batch_size=batch_size), device)
            return rows / seconds

        def forward(r: int, batch_size=batch_size) -> float:
            return _forward_rate(model, rows, batch_size, image_shape, T, device, config.seed + r)

        rates = alternating_rounds({"bound": bound, "forward": forward}, config.bound_repeats)
        sweep.append({"batch_size": batch_size, "bound_rows_per_second": rates["bound"],
                      "forward_rows_per_second": rates["forward"]})
    best = max(sweep, key=lambda s: statistics.median(s["bound_rows_per_second"]))
    outputs: dict[str, list[ElboTerms]] = {"ours": [], "loop": []}

    def ours(r: int) -> float:
        seconds, terms = _timed(lambda: elbo_terms(model, diffusion, x0, _generator(config.seed + r, device),
                                                   batch_size=best["batch_size"]), device)
        outputs["ours"].append(terms)
        return rows / seconds

    def loop(r: int) -> float:
        seconds, terms = _timed(lambda: elbo_terms_loop(model, diffusion, x0, _generator(config.seed + r, device)),
                                device)
        outputs["loop"].append(terms)
        return rows / seconds

    rates = alternating_rounds({"ours": ours, "loop": loop}, config.bound_repeats)
    differences = [float((a.bits_per_dim() - b.bits_per_dim()).abs().max())
                   for a, b in zip(outputs["ours"], outputs["loop"], strict=True)]
    return {
        "T": T,
        "images": B,
        "rows_per_call": rows,
        "sweep": sweep,
        "best_batch_size": best["batch_size"],
        "loop": {"batch_size_ours": best["batch_size"], "batch_size_loop": B,
                 "ours_rows_per_second": rates["ours"], "loop_rows_per_second": rates["loop"],
                 "max_abs_difference_bits_per_dim": max(differences),
                 "bits_per_dim": float(outputs["ours"][0].bits_per_dim().mean())},
    }


def bench_monte_carlo(model, diffusion: GaussianDiffusion, test_images: Tensor, config: BenchConfig,
                      batch_size: int, device: torch.device) -> dict:
    """Network calls for a `mc_target_stderr` Monte Carlo bound on the test split vs T calls per test image."""
    from ddpm.evaluation.bounds import BoundSettings, evaluate_elbo

    T = diffusion.T
    num_test = test_images.shape[0]
    mc_images = None if config.mc_images is None else min(config.mc_images, num_test)
    exact = min(config.mc_exact_images, num_test)
    settings = BoundSettings(exact_images=exact, seed=config.seed, mc_images=mc_images, batch_size=batch_size)
    importance = evaluate_elbo(model, diffusion, test_images, settings, device=device)
    uniform = evaluate_elbo(model, diffusion, test_images, dataclasses.replace(settings, exact_images=0), device=device)
    target = config.mc_target_stderr
    record: dict = {"test_images": num_test, "T": T, "target_stderr_bits_per_dim": target,
                    "exact_subset_images": exact, "measured_on_images": importance.monte_carlo.num_images}
    for name, evaluation, overhead in (("importance", importance, exact * T), ("uniform", uniform, 0)):
        mc = evaluation.monte_carlo
        variance = mc.stderr**2 * mc.num_images  # one draw per image: the per-draw variance
        draws = math.ceil(variance / target**2)
        record[name] = {
            "bits_per_dim": mc.bits_per_dim,
            "stderr": mc.stderr,
            "per_draw_variance": variance,
            "draws_for_target": draws,
            "proposal_network_calls": overhead,
            "network_calls_for_target": draws + overhead,
            "seconds": evaluation.exact_seconds + evaluation.monte_carlo_seconds,
        }
    if importance.proposal is not None:
        record["importance"]["predicted_variance_reduction"] = importance.proposal.variance_reduction
    record["exact_bits_per_dim_subset"] = importance.exact_bits_per_dim
    record["exact_network_calls"] = num_test * T
    return record


# ------------------------------------------------------------------------------------------- FID features
def inception_flops_per_image(network: torch.nn.Module, image_shape: tuple[int, ...]) -> float:
    """FLOPs of one Inception forward (the resize to 299 x 299 included; convolutions and matmuls counted)."""
    from torch.utils.flop_counter import FlopCounterMode

    device = next(network.parameters()).device
    images = torch.zeros((1, 3, *image_shape[1:]), dtype=torch.uint8, device=device)
    with torch.inference_mode(), FlopCounterMode(display=False) as counter:
        network(images)
    return float(counter.get_total_flops())


def bench_fid_features(dataset: str, config: BenchConfig, device: torch.device) -> dict:
    """Inception images/s: `ddpm.images.fid.InceptionFeatures` against torch-fidelity's own feature pipeline (its
    DataLoader and plain forward, the same weights and batch size), alternating rounds on the same test images."""
    from ddpm.images import fid

    try:
        ours = fid.inception_features(device=device)
    except fid.FidWeightsError as error:
        return {"skipped": str(error)}
    from torch_fidelity.utils import get_featuresdict_from_dataset

    plain = fid.inception_feature_extractor().to(device)
    images = data.load_images(dataset, "test")[: config.fid_images]  # [n, C, H, W]
    outputs: dict[str, Tensor] = {}

    def ours_side(r: int) -> float:
        seconds, outputs["ours"] = _timed(lambda: ours(images), device)
        return images.shape[0] / seconds

    def plain_side(r: int) -> float:
        seconds, features = _timed(lambda: get_featuresdict_from_dataset(
            fid.RgbDataset(images), plain, ours.batch_size, device.type == "cuda", True, False), device)
        outputs["torch_fidelity"] = features[fid.FEATURE_LAYER]
        return images.shape[0] / seconds

    rates = alternating_rounds({"ours": ours_side, "torch_fidelity": plain_side}, config.fid_repeats)
    return {"images": int(images.shape[0]), "batch_size": ours.batch_size, "rounds": config.fid_repeats,
            "channels_last": ours.channels_last,
            "ours_images_per_second": rates["ours"], "torch_fidelity_images_per_second": rates["torch_fidelity"],
            "flops_per_image": inception_flops_per_image(ours.network, tuple(images.shape[1:])),
            "max_abs_feature_difference": float((outputs["ours"] - outputs["torch_fidelity"].cpu()).abs().max()),
            "max_abs_feature": float(outputs["torch_fidelity"].abs().max())}


# -------------------------------------------------------------------------------------------- verify parts
def time_verify_parts(repo: Path, timeout: float) -> dict:
    """Wall seconds, exit status and pytest's summary line of each part of `nox -s verify`, run one after another."""
    if not (repo / "tests").is_dir():
        return {"skipped": f"no tests/ folder under {repo}"}
    parts = {}
    for name, expression in VERIFY_PARTS.items():
        command = [sys.executable, "-m", "pytest", "-q", "-m", expression, "--hypothesis-profile=ci",
                   "-p", "no:cacheprovider"]
        start = time.perf_counter()
        try:
            completed = subprocess.run(command, cwd=repo, capture_output=True, text=True, timeout=timeout)
            status, output = completed.returncode, completed.stdout
        except subprocess.TimeoutExpired as error:
            status, output = None, (error.stdout or b"").decode() if isinstance(error.stdout, bytes) else ""
        lines = [line for line in output.strip().splitlines() if line.strip()]
        parts[name] = {"marker_expression": expression, "seconds": time.perf_counter() - start,
                       "exit_status": status, "summary": lines[-1] if lines else ""}
    return {"parts": parts, "how": "each part run once as `python -m pytest -q -m EXPR --hypothesis-profile=ci`"}


# ------------------------------------------------------------------------------------------- the record
def compute_ratios(record: Mapping) -> dict:
    """Every headline ratio from the raw figures of `record` (None where a side was not measured)."""
    ratios: dict[str, float | None] = dict.fromkeys(RATIO_NAMES + EXTRA_RATIO_NAMES)
    sampling = record["sampling"]
    if sampling.get("diffusers_images_per_second"):
        ratios["sampling_vs_diffusers"] = median_ratio(sampling["ours_images_per_second"],
                                                       sampling["diffusers_images_per_second"])
    if sampling.get("diffusers_images_per_second") and sampling.get("ours_compiled_images_per_second"):
        ratios["sampling_compiled_vs_diffusers"] = median_ratio(sampling["ours_compiled_images_per_second"],
                                                                sampling["diffusers_images_per_second"])
    if sampling.get("forward_images_per_second"):
        T = sampling["T"]  # one sampled image is T network inputs
        ratios["sampling_vs_forward"] = median_ratio([T * rate for rate in sampling["ours_images_per_second"]],
                                                     sampling["forward_images_per_second"])
    if sampling.get("ours_compiled_images_per_second"):
        ratios["sampling_compiled_vs_eager"] = median_ratio(sampling["ours_compiled_images_per_second"],
                                                            sampling["ours_images_per_second"])
    training = record["training"]
    if training.get("diffusers_images_per_second"):
        ratios["train_step_vs_diffusers"] = median_ratio(training["ours_images_per_second"],
                                                         training["diffusers_images_per_second"])
    bound = record["exact_bound"]
    best = next(s for s in bound["sweep"] if s["batch_size"] == bound["best_batch_size"])
    ratios["exact_bound_vs_forward"] = median_ratio(best["bound_rows_per_second"], best["forward_rows_per_second"])
    ratios["exact_bound_vs_loop"] = median_ratio(bound["loop"]["ours_rows_per_second"],
                                                 bound["loop"]["loop_rows_per_second"])
    features = record.get("fid_features") or {}
    if features.get("ours_images_per_second"):
        ratios["fid_features_vs_torch_fidelity"] = median_ratio(features["ours_images_per_second"],
                                                                features["torch_fidelity_images_per_second"])
    mc = record["monte_carlo"]
    ratios["mc_bound_speedup"] = mc["exact_network_calls"] / mc["importance"]["network_calls_for_target"]
    ratios["utilisation"] = record["utilisation"]["sampling_ours"]
    return ratios


def utilisation_record(flops_per_image: float, train_flops_per_image: float, peak: float, record: Mapping) -> dict:
    """Achieved FLOP/s over the peak for sampling (both sides), training (both), the raw forward and the bound."""
    T = record["sampling"]["T"]
    bound = record["exact_bound"]
    best = next(s for s in bound["sweep"] if s["batch_size"] == bound["best_batch_size"])
    median = statistics.median

    def util(rate_list: Sequence[float] | None, flops: float, per_item: int = 1) -> float | None:
        return None if not rate_list else flops * per_item * median(rate_list) / peak

    sampling, training = record["sampling"], record["training"]
    features = record.get("fid_features") or {}
    return {
        "forward_flops_per_image": flops_per_image,
        "training_flops_per_image": train_flops_per_image,
        "peak_flops_per_second": peak,
        "sampling_ours": util(sampling["ours_images_per_second"], flops_per_image, T),
        "sampling_diffusers": util(sampling.get("diffusers_images_per_second"), flops_per_image, T),
        "training_ours": util(training["ours_images_per_second"], train_flops_per_image),
        "training_diffusers": util(training.get("diffusers_images_per_second"), train_flops_per_image),
        "forward_at_best_bound_batch": util(best["forward_rows_per_second"], flops_per_image),
        "exact_bound": util(best["bound_rows_per_second"], flops_per_image),
        "fid_features_ours": util(features.get("ours_images_per_second"), features.get("flops_per_image", 0.0)),
        "fid_features_torch_fidelity": util(features.get("torch_fidelity_images_per_second"),
                                            features.get("flops_per_image", 0.0)),
    }


def _load_model(config: BenchConfig, device: torch.device, workdir: Path):
    """(eps_model, diffusion, dataset, preset, description): the checkpoint's EMA model, or one trained here briefly."""
    from ddpm.training.checkpoint import build_eps_model, diffusion_from, load_checkpoint
    from ddpm.training.trainer import TrainOptions, train

    path = None if config.checkpoint is None else Path(config.checkpoint)
    if path is not None and path.is_file():
        checkpoint = load_checkpoint(path)  # its preset is what is measured (config.preset is the fallback's)
        source = {"source": "checkpoint", "path": str(path), "train_steps": checkpoint.step,
                  "train_seconds": checkpoint.train_seconds}
    else:
        preset = get_preset(config.preset)
        training = preset.training.replace(max_steps=config.fallback_train_steps,
                                           max_minutes=config.fallback_train_minutes, session_minutes=None)
        out = workdir / "model"
        start = time.perf_counter()
        result = train(config.data, out, preset.replace(training=training), options=TrainOptions(seed=config.seed),
                       device=device, progress=False, command=["ddpm", "bench"])
        checkpoint = load_checkpoint(result.checkpoint_path)
        source = {"source": "trained here (no checkpoint at "
                            f"{config.checkpoint!r})", "train_steps": result.step,
                  "train_seconds": result.train_seconds, "wall_seconds": time.perf_counter() - start}
    model = build_eps_model(checkpoint, use_ema=True, device=device)
    return model, diffusion_from(checkpoint, device), checkpoint.dataset, checkpoint.preset, source


def run_bench(config: BenchConfig, out: str | os.PathLike | None = None, command: str | None = None,
              repo: str | os.PathLike | None = None, mode: str = "custom",
              log: Callable[[str], None] | None = None) -> dict:
    """Measure everything of the module docstring; write bench.json and bench.md into `out` (if given); the record."""
    log = log or (lambda message: None)
    device = torch.device(config.device)
    previous_threads = torch.get_num_threads()
    if config.threads is not None:
        torch.set_num_threads(config.threads)
    started = time.perf_counter()
    try:
        record: dict = {"format_version": FORMAT_VERSION, "mode": mode, "command": command,
                        "started": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                        "config": dataclasses.asdict(config), "machine": machine_description(device),
                        "targets": dict(TARGETS)}
        peaks = [matmul_peak(device, config.peak_matmul_size, config.peak_repeats)]
        log(f"peak {peaks[0]['flops_per_second'] / 1e9:.1f} GFLOP/s")
        with tempfile.TemporaryDirectory(prefix="ddpm-bench-") as tmp:
            model, diffusion, dataset, preset, source = _load_model(config, device, Path(tmp))
        record["model"] = {**source, "preset": preset.name, "dataset": dataset}
        info = data.dataset_info(dataset)
        image_shape = (info.channels, info.height, info.width)
        log(f"model: {source['source']} ({preset.name}, {dataset})")

        record["sampling"] = bench_sampling(model, diffusion, image_shape, config, device, sampling_variance(preset))
        log(f"sampling: ours {_rates(record['sampling']['ours_images_per_second'])} images/s, diffusers "
            f"{_rates(record['sampling'].get('diffusers_images_per_second'))}")
        record["training"] = bench_training(dataset, preset, config, device)
        log(f"training: ours {_rates(record['training']['ours_images_per_second'])} images/s, diffusers "
            f"{_rates(record['training'].get('diffusers_images_per_second'))}")
        record["exact_bound"], record["monte_carlo"] = _bound_records(model, diffusion, dataset, config, device, log)
        record["fid_features"] = bench_fid_features(dataset, config, device)
        log(f"FID features: ours {_rates(record['fid_features'].get('ours_images_per_second'))} images/s, "
            f"torch-fidelity {_rates(record['fid_features'].get('torch_fidelity_images_per_second'))}")
        peaks.append(matmul_peak(device, config.peak_matmul_size, config.peak_repeats))
        peak = max(p["flops_per_second"] for p in peaks)
        record["peak"] = {"before": peaks[0], "after": peaks[1], "flops_per_second": peak}
        flops = forward_flops_per_image(model, image_shape[0], image_shape[1:], diffusion.T)
        train_flops = training_flops_per_image(model, image_shape[0], image_shape[1:], diffusion.T)
        record["utilisation"] = utilisation_record(flops, train_flops, peak, record)
        record["verify"] = _verify_record(config, repo, log)
        record["machine"]["load_average_end"] = list(os.getloadavg()) if hasattr(os, "getloadavg") else None
        record["ratios"] = compute_ratios(record)
        record["wall_seconds"] = time.perf_counter() - started
    finally:
        torch.set_num_threads(previous_threads)
    if out is not None:
        write_bench(record, out)
    return record


def _bound_records(model, diffusion: GaussianDiffusion, dataset: str, config: BenchConfig, device: torch.device,
                   log: Callable[[str], None]) -> tuple[dict, dict]:
    """Section 3's records: the exact bound on the first `bound_images` test images, then the Monte Carlo bound's
    cost at the exact bound's best batch size."""
    test_images = data.load_images(dataset, "test")
    n = min(config.bound_images, test_images.shape[0])
    x0 = data.to_model_range(test_images[:n]).to(device)  # [n, C, H, W]
    exact = bench_exact_bound(model, diffusion, x0, config, device)
    log(f"exact bound: best batch {exact['best_batch_size']}")
    monte_carlo = bench_monte_carlo(model, diffusion, test_images, config, exact["best_batch_size"], device)
    log(f"monte carlo: {monte_carlo['importance']['network_calls_for_target']} network calls for "
        f"the target standard error vs {monte_carlo['exact_network_calls']} for the exact sum")
    return exact, monte_carlo


def _verify_record(config: BenchConfig, repo: str | os.PathLike | None, log: Callable[[str], None]) -> dict:
    """Section 5's record: the verify parts timed in `repo`, or why they were not."""
    if not config.verify:
        return {"skipped": "not requested (quick mode or --no-verify)"}
    root = Path(repo) if repo is not None else Path(__file__).resolve().parents[2]  # the repository
    log("timing the verify parts")
    return time_verify_parts(root, config.verify_timeout_seconds)


def write_bench(record: Mapping, out: str | os.PathLike) -> tuple[Path, Path]:
    """bench.json (the record, NaN/inf as null) and bench.md (`bench_markdown`) in `out`, atomically."""
    from ddpm.runtime.files import atomic_write_bytes, write_json_atomic

    out = Path(out)
    json_path = write_json_atomic(out / BENCH_JSON, record)
    md_path = atomic_write_bytes(out / BENCH_MD, bench_markdown(record).encode("utf-8"))
    return json_path, md_path


# ------------------------------------------------------------------------------------------- bench.md
def _fmt(value, digits: int = 3) -> str:
    if value is None:
        return "n/a"
    if isinstance(value, float):
        if not math.isfinite(value):
            return "n/a"
        return f"{value:.{digits}g}" if abs(value) < 1e4 else f"{value:,.0f}"
    return str(value)


def _rates(values: Sequence[float] | None) -> str:
    if not values:
        return "n/a"
    shown = ", ".join(f"{v:.4g}" for v in values)
    return f"{statistics.median(values):.4g} (rounds: {shown})"


def bench_markdown(record: Mapping) -> str:
    """bench.md: the ratios against their targets, then each section's raw figures, from the bench.json record."""
    lines = _ratio_section(record)
    for section in (_sampling_section, _training_section, _bound_section, _fid_features_section,
                    _utilisation_section, _verify_section):
        lines += section(record)
    lines.append("")
    return "\n".join(lines)


def _ratio_section(record: Mapping) -> list[str]:
    """The title, command, machine and model, and the table of ratios against their targets."""
    ratios, machine = record["ratios"], record["machine"]
    lines = ["# `nox -s bench`: speed side by side", ""]
    lines += [f"Command: `{record.get('command') or 'python -m ddpm bench'}` (mode {record['mode']}), started "
              f"{record['started']}, {record['wall_seconds']:.0f} s.",
              f"Machine: {machine['cpu_model']}, {machine['cpus_usable']} usable CPUs, torch {machine['torch']} "
              f"({machine['cpu_capability']}), {machine['torch_threads']} threads, device {machine['device']}, "
              f"diffusers {machine['diffusers'] or 'not installed'}; load average at start "
              f"{_fmt_load(machine.get('load_average'))}, at end {_fmt_load(machine.get('load_average_end'))} "
              "(a shared machine: compare ratios, not absolute rates).",
              f"Model: {record['model']['preset']} preset on {record['model']['dataset']}, "
              f"{record['model']['source']}, {record['model']['train_steps']} updates.",
              "", "Each ratio is the median over alternating rounds of ours / theirs (above 1: ours is faster).", "",
              "| ratio | value | target | met |", "|---|---|---|---|"]
    for name in RATIO_NAMES + EXTRA_RATIO_NAMES:
        if name in EXTRA_RATIO_NAMES and ratios.get(name) is None:
            continue
        value, target = ratios.get(name), record["targets"].get(name)
        met = "n/a" if value is None or target is None else ("yes" if value >= target else "no")
        lines.append(f"| {name} | {_fmt(value)} | {_fmt(target) if target is not None else '-'} | {met} |")
    return lines


def _sampling_section(record: Mapping) -> list[str]:
    """Section 1: Algorithm 2 ours vs diffusers, and the raw forward beside it."""
    ratios = record["ratios"]
    s = record["sampling"]
    lines: list[str] = []
    lines += ["", f"## 1. Sampling: Algorithm 2, T = {s['T']}, batch {s['batch']}", ""]
    if s.get("diffusers_images_per_second"):
        cross = s["cross_check"]
        lines += [f"ancestral_sample vs diffusers DDPMScheduler (variance_type={s['diffusers_variance_type']} = our "
                  f"sigma_t^2 = {s['variance']}, clip_sample={s['diffusers_clip_sample']}) driving the same network.",
                  "",
                  "| side | images/s |", "|---|---|",
                  f"| ours | {_rates(s['ours_images_per_second'])} |",
                  f"| diffusers | {_rates(s['diffusers_images_per_second'])} |"]
        if s.get("ours_compiled_images_per_second"):
            lines += [f"| ours, compile=True | {_rates(s['ours_compiled_images_per_second'])} |"]
        lines += ["", f"Cross-check, same seeds: largest |x_0 difference| ours vs diffusers "
                  f"{cross['max_abs_difference']:.3g} (largest |x_0| {cross['max_abs_sample']:.3g}; diffusers keeps "
                  "its schedule in float32)."]
        if s.get("compile_seconds") is not None:
            lines += [f"torch.compile: {s['compile_seconds']:.1f} s at the first call (a warm inductor cache makes it "
                      f"a few seconds); compiled vs eager samples differ by at most "
                      f"{cross['compiled_max_abs_difference']:.3g}."]
    else:
        lines += [f"ours {_rates(s['ours_images_per_second'])} images/s; diffusers: {s.get('skipped')}."]
    if s.get("forward_images_per_second"):
        lines += ["", f"The network's raw forward at the same batch (inference mode, random x_t and t): "
                  f"{_rates(s['forward_images_per_second'])} inputs/s, i.e. "
                  f"{_rates([rate / s['T'] for rate in s['forward_images_per_second']])} images/s at T = {s['T']} "
                  f"steps; Algorithm 2 runs at {_fmt(ratios.get('sampling_vs_forward'))} of it "
                  f"(`sampling_vs_forward`)."]
    return lines


def _training_section(record: Mapping) -> list[str]:
    """Section 2: the training step, ours vs a diffusers-style loop."""
    tr = record["training"]
    lines: list[str] = []
    lines += ["", f"## 2. Training step: batch {tr['batch']}, {tr['timed_updates']} timed updates after "
              f"{tr['warmup_updates']} warm-up updates per round", ""]
    if tr.get("diffusers_images_per_second"):
        lines += ["| side | images/s |", "|---|---|",
                  f"| ours (ddpm.training.trainer.train) | {_rates(tr['ours_images_per_second'])} |",
                  f"| diffusers-style loop | {_rates(tr['diffusers_images_per_second'])} |"]
    else:
        lines += [f"ours {_rates(tr['ours_images_per_second'])} images/s; diffusers: {tr.get('skipped')}."]
    return lines


def _bound_section(record: Mapping) -> list[str]:
    """Section 3: the exact bound over batch sizes and against the loop, and the Monte Carlo bound's cost."""
    b = record["exact_bound"]
    lines: list[str] = []
    lines += ["", f"## 3. The exact bound: {b['images']} test images x T = {b['T']} (image, t) pairs", "",
              "| batch size | bound pairs/s | raw forward images/s | bound / forward |", "|---|---|---|---|"]
    for row in b["sweep"]:
        mark = " (best)" if row["batch_size"] == b["best_batch_size"] else ""
        lines.append(f"| {row['batch_size']}{mark} | {_rates(row['bound_rows_per_second'])} | "
                     f"{_rates(row['forward_rows_per_second'])} | "
                     f"{median_ratio(row['bound_rows_per_second'], row['forward_rows_per_second']):.3f} |")
    loop = b["loop"]
    lines += ["", f"elbo_terms (batch {loop['batch_size_ours']}) {_rates(loop['ours_rows_per_second'])} pairs/s vs "
              f"the per-timestep loop (batch {loop['batch_size_loop']}) {_rates(loop['loop_rows_per_second'])} "
              f"pairs/s; the two agree to {loop['max_abs_difference_bits_per_dim']:.2g} bits/dim "
              f"(bound {loop['bits_per_dim']:.4f} bits/dim on these images)."]
    mc = record["monte_carlo"]
    imp, uni = mc["importance"], mc["uniform"]
    lines += ["", f"Monte Carlo bound on the {mc['test_images']} test images (variance measured with one draw on "
              f"each of {mc['measured_on_images']} images), standard error target "
              f"{mc['target_stderr_bits_per_dim']} bits/dim:", "",
              "| proposal over t | bits/dim | per-draw variance | draws for target | network calls | exact sum calls "
              "| speed-up |", "|---|---|---|---|---|---|---|"]
    for name, row in (("importance (evaluate.py)", imp), ("uniform", uni)):
        lines.append(f"| {name} | {row['bits_per_dim']:.4f} | {row['per_draw_variance']:.4g} | "
                     f"{row['draws_for_target']} | {row['network_calls_for_target']} | {mc['exact_network_calls']} | "
                     f"{mc['exact_network_calls'] / row['network_calls_for_target']:.1f} |")
    lines += ["", f"Importance calls include the exact subset that builds the proposal ({mc['exact_subset_images']} "
              f"images x T = {imp['proposal_network_calls']} calls)."]
    return lines


def _fid_features_section(record: Mapping) -> list[str]:
    """The Inception network: ours vs torch-fidelity's pipeline."""
    f = record.get("fid_features") or {}
    lines: list[str] = []
    lines += ["", "## FID features: the Inception network", ""]
    if f.get("ours_images_per_second"):
        lines += [f"{f['images']} test images in batches of {f['batch_size']}: `ddpm.images.fid.InceptionFeatures` "
                  f"(inference mode, channels-last weights: {f['channels_last']}) against torch-fidelity's own "
                  f"pipeline (its DataLoader and plain forward) with the same weights, "
                  f"{f['flops_per_image'] / 1e9:.2f} GFLOP per image.", "",
                  "| side | images/s |", "|---|---|",
                  f"| ours | {_rates(f['ours_images_per_second'])} |",
                  f"| torch-fidelity | {_rates(f['torch_fidelity_images_per_second'])} |", "",
                  f"Largest feature difference {f['max_abs_feature_difference']:.2g} (largest feature "
                  f"{f['max_abs_feature']:.3g}; tests/images/test_fid.py bounds it by float32 rounding)."]
    else:
        lines += [f"Skipped: {f.get('skipped', 'not measured')}."]
    return lines


def _utilisation_section(record: Mapping) -> list[str]:
    """Section 4: achieved FLOP/s over the peak."""
    u = record["utilisation"]
    peak = record["peak"]
    lines: list[str] = []
    lines += ["", "## 4. Utilisation", "",
              f"Forward {u['forward_flops_per_image'] / 1e6:.1f} MFLOP/image, forward + backward "
              f"{u['training_flops_per_image'] / 1e6:.1f} MFLOP/image (torch.utils.flop_counter); peak "
              f"{peak['flops_per_second'] / 1e9:.1f} GFLOP/s ({peak['before']['dtype']} {peak['before']['size']}^3 "
              f"matmul, best of before {peak['before']['flops_per_second'] / 1e9:.1f} and after "
              f"{peak['after']['flops_per_second'] / 1e9:.1f}).", "",
              "| workload | achieved / peak |", "|---|---|"]
    for key in ("sampling_ours", "sampling_diffusers", "training_ours", "training_diffusers",
                "forward_at_best_bound_batch", "exact_bound", "fid_features_ours", "fid_features_torch_fidelity"):
        lines.append(f"| {key} | {_fmt(u[key])} |")
    return lines


def _verify_section(record: Mapping) -> list[str]:
    """Section 5: the parts of `nox -s verify`."""
    v = record["verify"]
    lines: list[str] = []
    lines += ["", "## 5. `nox -s verify` parts", ""]
    if "parts" in v:
        lines += [f"{v['how']}.", "", "| part | seconds | exit status | pytest summary |", "|---|---|---|---|"]
        for name, part in v["parts"].items():
            lines.append(f"| {name} | {part['seconds']:.0f} | {part['exit_status']} | {part['summary']} |")
    else:
        lines.append(f"Skipped: {v['skipped']}.")
    return lines


def _fmt_load(load) -> str:
    return "n/a" if not load else "/".join(f"{v:.2f}" for v in load)


__all__ = [
    "BENCH_JSON",
    "BENCH_MD",
    "BENCH_MODES",
    "BenchConfig",
    "BenchError",
    "DIFFUSERS_VARIANCE_TYPE",
    "EXTRA_RATIO_NAMES",
    "PaperTimesteps",
    "TARGETS",
    "alternating_rounds",
    "bench_markdown",
    "compute_ratios",
    "diffusers_ancestral_sample",
    "diffusers_scheduler",
    "elbo_terms_loop",
    "machine_description",
    "matmul_peak",
    "median_ratio",
    "run_bench",
    "training_flops_per_image",
    "write_bench",
]
