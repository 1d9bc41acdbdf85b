"""A session budget: how long a run may train so that its training and its evaluation end before a deadline.

`nox -s train_small` promises to end within a fixed wall time on a 2-core CPU, venv creation and cold caches
included. What evaluation costs does not depend on how long the model trained: Algorithm 2 is N T network calls,
the bound and Gamma_t are T (exact images + Gamma_t's images per t) + (Monte Carlo images) calls, FID/KID is one
Inception pass per image set that is not cached yet. So a run with a `TrainingConfig.session_minutes` budget
measures this machine at its start (`probe_speed`: the evaluation's own Algorithm-2 sampler over a few steps, compiled
when the evaluation compiles it, the network's eager forward, and the Inception network on one batch), predicts the
evaluation's seconds from those counts (`predict_evaluation`), and trains for what is left of the session after the
time already spent, the prediction times SAFETY and MARGIN_SECONDS (`plan_training`). Machines differ by ~1.4x; the
plan is made on the machine that then runs the evaluation, which is what makes the end time hold on a slower one too.

The plan is recorded in run.json (the session's "budget" entry) and the report compares it with what the
evaluation then took.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass

import torch

from ddpm.images.data import DatasetInfo
from ddpm.training.config import Preset

Tensor = torch.Tensor

SAFETY = 1.15  # predicted evaluation seconds are multiplied by this ...
MARGIN_SECONDS = 45.0  # ... and this is added (the report, process start-up, a noisy neighbour)
MIN_TRAINING_SECONDS = 60.0  # a plan never trains for less than this (the deadline then slips, and it says so)
PROBE_FORWARD_CALLS = 6  # timed eager calls of the network per probe (after one untimed call)
PROBE_SAMPLER_STEPS = 8  # Algorithm-2 steps timed per probe (beyond a 2-step chain)
PROBE_INCEPTION_BATCHES = 1  # timed Inception batches (after one untimed batch)
FIXED_EVALUATION_SECONDS = 30.0  # loading data and the model, writing images and files, FID's matrix square roots


class BudgetError(ValueError):
    """A session budget that cannot be planned (the deadline has passed); one line."""


@dataclass(frozen=True)
class EvaluationWork:
    """What `ddpm.evaluation.evaluate` will compute for a preset, counted in network calls and Inception images."""

    sample_forwards: int  # N T: Algorithm 2
    bound_forwards: int  # T exact_images + Monte Carlo images (one draw each)
    gamma_forwards: int  # T gamma_images_per_t
    inception_images: int  # images not yet cached: N generated, N reference, N floor on a cold cache
    compile_sampler: bool


def evaluation_work(preset: Preset, test_images: int, cached_inception_images: int = 0,
                    fid: bool = True) -> EvaluationWork:
    """The counts of `EvaluationWork` for `preset` on a test split of `test_images` images.

    `cached_inception_images`: Inception features the FID cache already holds (the reference set and the
    real-vs-real floor), subtracted from the three passes of a cold cache. `fid`: False when the evaluation draws the
    samples but FID/KID are measured elsewhere (`evaluate --skip-fid`, the GPU check): no Inception images.
    """
    evaluation, T = preset.evaluation, preset.training.T
    n = evaluation.fid_num_samples
    mc_images = test_images if evaluation.elbo_mc_images is None else min(evaluation.elbo_mc_images, test_images)
    return EvaluationWork(
        sample_forwards=n * T,
        bound_forwards=T * evaluation.elbo_exact_images + mc_images * evaluation.elbo_mc_draws_per_image,
        gamma_forwards=T * evaluation.gamma_images_per_t,
        inception_images=max(0, 3 * n - cached_inception_images) if fid else 0,
        compile_sampler=evaluation.compile_sampler,
    )


@dataclass(frozen=True)
class MachineSpeed:
    """This machine's measured throughputs (network inputs or images per second) and what measuring cost."""

    sampling_forwards_per_second: float  # network calls per second inside Algorithm 2 as evaluated (compiled or not)
    eager_forwards_per_second: float  # at the sampling batch, eager (the bound and Gamma_t run eager)
    inception_images_per_second: float
    compile_seconds: float  # the sampler's first (1-step) call: the compilation when it compiles
    probe_seconds: float


def _time_calls(call: Callable[[], object], calls: int) -> float:
    """Seconds per call of `call` over `calls` calls, after one untimed call."""
    call()
    start = time.perf_counter()
    for _ in range(calls):
        call()
    return (time.perf_counter() - start) / calls


def _seconds(call: Callable[[], object]) -> float:
    start = time.perf_counter()
    call()
    return time.perf_counter() - start


@dataclass(frozen=True)
class InceptionProbe:
    """The Inception network to time (uint8 [B, C, H, W] -> features) and the batch size it is timed at."""

    features: Callable[[Tensor], Tensor]
    batch_size: int


def probe_speed(model: torch.nn.Module, image_shape: tuple[int, int, int], T: int, batch_size: int,
                sample: Callable[[int], object], inception: InceptionProbe | None, device: torch.device,
                generator: torch.Generator) -> MachineSpeed:
    """Measure the throughputs `predict_evaluation` needs, on `model` (any weights: the cost is the architecture's).

    The eager forward runs under no_grad on random x_t and t at `batch_size`. `sample(steps)` runs the evaluation's
    own sampler (Algorithm 2, compiled or not, at `batch_size`) over a chain of `steps` steps: its first call
    (1 step) holds the compilation, and the sampling rate is PROBE_SAMPLER_STEPS steps' worth of network calls over
    the time they add to a 2-step chain, so what a sampling loop spends beyond the network is counted. `inception`
    (None to skip) runs on a batch of its batch size of random images.
    """
    start = time.perf_counter()
    model = model.eval()
    x = torch.randn((batch_size, *image_shape), generator=generator).to(device)  # [B, C, H, W]
    t = torch.randint(1, T + 1, (batch_size,), generator=generator).to(device)  # [B]
    with torch.no_grad():
        eager = _time_calls(lambda: model(x, t), PROBE_FORWARD_CALLS)
    compile_seconds = _seconds(lambda: sample(1))
    short = _seconds(lambda: sample(2))
    long = _seconds(lambda: sample(2 + PROBE_SAMPLER_STEPS))
    sampling = batch_size * PROBE_SAMPLER_STEPS / max(long - short, 1e-9)
    inception_rate = math.inf
    if inception is not None:
        images = torch.randint(0, 256, (inception.batch_size, *image_shape), generator=generator, dtype=torch.uint8)
        inception_rate = inception.batch_size / _time_calls(lambda: inception.features(images),
                                                            PROBE_INCEPTION_BATCHES)
    return MachineSpeed(sampling_forwards_per_second=sampling, eager_forwards_per_second=batch_size / eager,
                        inception_images_per_second=inception_rate, compile_seconds=compile_seconds,
                        probe_seconds=time.perf_counter() - start)


def predict_evaluation(work: EvaluationWork, speed: MachineSpeed) -> dict[str, float]:
    """Seconds per evaluation phase (sampling, fid_kid, bound, fixed) predicted from the counts and the speeds."""
    sampling = work.sample_forwards / speed.sampling_forwards_per_second
    if work.compile_sampler:
        sampling += speed.compile_seconds
    return {
        "sampling": sampling,
        "fid_kid": work.inception_images / speed.inception_images_per_second,
        "bound": (work.bound_forwards + work.gamma_forwards) / speed.eager_forwards_per_second,
        "fixed": FIXED_EVALUATION_SECONDS,
    }


@dataclass(frozen=True)
class BudgetPlan:
    """How a session's minutes are split: spent before training, training, the evaluation's prediction, margin."""

    session_seconds: float  # the whole budget
    spent_seconds: float  # from the session's start to the plan (venv, imports, data, the probe)
    predicted_evaluation: Mapping[str, float]  # seconds per phase, before SAFETY
    margin_seconds: float  # SAFETY's share of the prediction plus MARGIN_SECONDS
    training_seconds: float  # this session's training time
    speed: MachineSpeed
    work: EvaluationWork

    @property
    def predicted_end_seconds(self) -> float:
        """Session seconds at which the evaluation is predicted to end (without the margin)."""
        return self.spent_seconds + self.training_seconds + sum(self.predicted_evaluation.values())

    @property
    def overrun_seconds(self) -> float:
        """How far the predicted end plus the margin lies past the session's end (positive only at
        MIN_TRAINING_SECONDS)."""
        return max(0.0, self.predicted_end_seconds + self.margin_seconds - self.session_seconds)

    def summary(self) -> str:
        """One line: the session's minutes and how they are split."""
        parts = ", ".join(f"{name} {seconds / 60:.1f}" for name, seconds in self.predicted_evaluation.items())
        return (f"session budget {self.session_seconds / 60:.1f} min: {self.spent_seconds / 60:.1f} spent before "
                f"training (probe {self.speed.probe_seconds:.0f} s), evaluation predicted "
                f"{sum(self.predicted_evaluation.values()) / 60:.1f} ({parts}) + margin "
                f"{self.margin_seconds / 60:.1f}, so training {self.training_seconds / 60:.1f} min"
                + (f" (the minimum: the session will overrun by {self.overrun_seconds / 60:.1f} min)"
                   if self.overrun_seconds >= 1.0 else ""))

    def to_dict(self) -> dict:
        """Plain values for run.json."""
        record = dataclasses.asdict(self)
        record["predicted_evaluation"] = dict(self.predicted_evaluation)
        record["predicted_end_seconds"] = self.predicted_end_seconds
        return record


def plan_training(session_seconds: float, spent_seconds: float, work: EvaluationWork,
                  speed: MachineSpeed) -> BudgetPlan:
    """The training seconds that leave the evaluation's predicted cost, times SAFETY plus MARGIN_SECONDS, before
    the end of the session; at least MIN_TRAINING_SECONDS. BudgetError when the session is already over."""
    if spent_seconds >= session_seconds:
        raise BudgetError(f"the session budget of {session_seconds / 60:.1f} min is spent before training starts "
                          f"({spent_seconds / 60:.1f} min have passed since the session started)")
    predicted = predict_evaluation(work, speed)
    evaluation = sum(predicted.values())
    margin = (SAFETY - 1.0) * evaluation + MARGIN_SECONDS
    training = max(MIN_TRAINING_SECONDS, session_seconds - spent_seconds - evaluation - margin)
    return BudgetPlan(session_seconds=session_seconds, spent_seconds=spent_seconds, predicted_evaluation=predicted,
                      margin_seconds=margin, training_seconds=training, speed=speed, work=work)


def plan_session(preset: Preset, info: DatasetInfo, session_seconds: float, session_start: float,
                 device: torch.device, seed: int, cache: str | None = None, fid: bool = True) -> BudgetPlan:
    """Probe this machine with `preset`'s network for the images of `info` (freshly built; the caller's RNG state
    is kept) and the FID Inception (skipped when every Inception pass is cached, or `fid` is False: FID/KID are
    measured elsewhere), and plan the session that started at `session_start` (time.time() seconds) and lasts
    `session_seconds`."""
    from ddpm.core.diffusion import GaussianDiffusion
    from ddpm.core.samplers import ancestral_sample
    from ddpm.core.schedules import make_betas
    from ddpm.images import fid as fid_files
    from ddpm.training.model import build_unet

    evaluation = preset.evaluation
    image_shape = (info.channels, info.height, info.width)
    cached = fid_files.cached_inception_images(info.name, evaluation.fid_num_samples, cache) if fid else 0
    work = evaluation_work(preset, info.num("test"), cached, fid)
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[device.index] if device.type == "cuda" else []):
        model = build_unet(preset.model, image_shape[0], image_shape[1:], preset.training.T)
    model = model.requires_grad_(False)
    model = model.to(  # type: ignore[call-overload]  # torch's stubs lack Module.to(device=, memory_format=)
        device=device, memory_format=torch.channels_last).eval()  # as evaluated
    network = torch.compile(model, dynamic=False) if evaluation.compile_sampler else model
    betas = make_betas(preset.training.schedule, preset.training.T)
    shape = (evaluation.sample_batch_size, *image_shape)
    # The optimal variance needs Gamma_t, which is estimated later; "beta" costs the same per step.
    variance = "learned" if evaluation.variance == "learned" else "beta"

    def sample(steps: int) -> None:
        chain = GaussianDiffusion(betas[:steps]).to(device)  # the schedule's first steps: the same network calls
        ancestral_sample(network, chain, shape, torch.Generator(device=device).manual_seed(seed), variance=variance,
                         clip_x0=evaluation.clip_x0, progress=False, device=device)

    inception = None
    if work.inception_images > 0:
        inception = InceptionProbe(fid_files.inception_features(cache, device),
                                   fid_files.DEFAULT_BATCH_SIZE[device.type])
    speed = probe_speed(model, image_shape, preset.training.T, evaluation.sample_batch_size, sample, inception,
                        device, generator)
    return plan_training(session_seconds, time.time() - session_start, work, speed)


__all__ = [
    "BudgetError",
    "BudgetPlan",
    "EvaluationWork",
    "FIXED_EVALUATION_SECONDS",
    "InceptionProbe",
    "MARGIN_SECONDS",
    "MIN_TRAINING_SECONDS",
    "MachineSpeed",
    "SAFETY",
    "evaluation_work",
    "plan_session",
    "plan_training",
    "predict_evaluation",
    "probe_speed",
]
