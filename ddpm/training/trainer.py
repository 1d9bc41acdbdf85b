"""Algorithm 1 of Ho et al. (2020) as a resumable training run: repeat { x_0 ~ q(x_0), t ~ Uniform{1..T},
eps ~ N(0, I), gradient step on ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2 }.

`train(data, out, preset, ...)` runs it with the preset's `TrainingConfig`: the objective of `ddpm.core.losses`
("simple" by default), Adam with linear learning-rate warmup (`ddpm.training.update_rules.learning_rate_at`), gradient clipping by global
norm, and an exponential moving average of the weights (`ddpm.training.update_rules.ema_update`), which is what evaluation and sampling use.

Run folder `out` (layout in the README): checkpoint.pt (atomic, `ddpm.training.checkpoint`), train_log.jsonl (one
JSON object per `log_every` updates, appended and flushed: step, loss = the mean over the `loss_updates` updates
since the previous line of this session, lr, images_per_second over those updates, elapsed_seconds of training,
epoch, images_seen), run.json (command, config, seed, device, versions,
data, one entry per session). A new run refuses a non-empty folder; `resume=True` continues the run in it.

Randomness and exact resume. Nothing global is seeded outside a `torch.random.fork_rng` block, so the caller's
RNG state is untouched. From `seed`, independent seeds (numpy SeedSequence) are derived for: the initial
weights (torch's global RNG, once), the minibatch order (`MinibatchSampler`'s CPU generator), t and eps (one
generator on the training device), and dropout (torch's global RNG, one stream per process). The checkpoint
stores the sampler state, the t/eps generator state, each process's global RNG states (CPU and CUDA), the
weights, the EMA weights and Adam's state, so on CPU a resumed run reproduces the uninterrupted run bitwise.
Interruption: the first SIGINT (Ctrl-C) or SIGTERM only sets a flag; the run stops at the next update boundary,
writes a checkpoint at that step and returns with `stop_reason = INTERRUPTED` (the CLI exits 130). A second
signal raises KeyboardInterrupt at once (the last checkpoint written stays intact).

Data parallel (torchrun). Under `torchrun` (RANK / WORLD_SIZE / LOCAL_RANK in the environment) the process group
is initialised (nccl on CUDA, gloo on CPU) and the model wrapped in DistributedDataParallel. Every process draws
the whole global batch's indices, t and eps from the shared seed (the same draws as one process would make) and
keeps its slice of batch_size / world_size rows by rank. Each process's loss is the mean over its slice and DDP
averages the gradients, so the update equals the one-process update with the same global batch up to the order
of floating-point summation. (GroupNorm has no batch statistics, so nothing else couples the rows.) Dropout masks
come from each process's own stream, so with dropout > 0 they differ from a one-process run's. Only rank 0
writes files. Stop decisions that depend on clocks or signals are agreed with an all-reduce every
`DISTRIBUTED_CONTROL_EVERY` updates.

Weights and inputs are channels_last on every device (on the 2-core CPU the training step ran ~1.05x and the
forward ~1.17x faster than contiguous). CUDA adds bfloat16 autocast for the forward pass and the loss; optional
torch.compile. CPU runs the same code in float32.
"""

from __future__ import annotations

import copy
import dataclasses
import enum
import json
import math
import os
import signal
import sys
import threading
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ddpm.training.budget import BudgetPlan, plan_session
from ddpm.training.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ddpm.training.config import Preset, count_parameters, get_preset
from ddpm.images.data import DatasetInfo, MinibatchSampler, dataset_info, load_images, to_model_range
from ddpm.core.diffusion import GaussianDiffusion, standard_normal
from ddpm.core.losses import training_loss_at, training_timesteps
from ddpm.training.model import build_unet
from ddpm.core.schedules import make_betas
from ddpm.training.update_rules import ema_decay_at, ema_update, learning_rate_at
from ddpm.runtime.devices import resolve_device
from ddpm.runtime.files import atomic_write_text
from ddpm.runtime.provenance import versions

Tensor = torch.Tensor

LOG_NAME = "train_log.jsonl"
RUN_NAME = "run.json"
DISTRIBUTED_CONTROL_EVERY = 10  # updates between the all-reduces that agree on stopping / checkpointing

# Purposes of the seeds derived from the run's seed (never change them: runs must stay reproducible).
_SEED_INIT, _SEED_DATA, _SEED_LOSS, _SEED_DROPOUT = 0, 1, 2, 3


class TrainingError(RuntimeError):
    """Training cannot go on (a non-finite loss); the last checkpoint written is intact."""


class StopReason(enum.Enum):
    """Why `train` returned."""

    MAX_STEPS = "max_steps"
    MAX_MINUTES = "max_minutes"
    INTERRUPTED = "interrupted"


@dataclass(frozen=True)
class TrainResult:
    """What a call of `train` did: the step reached, why it stopped, and this session's throughput."""

    out: Path
    checkpoint_path: Path
    step: int
    start_step: int
    train_seconds: float  # whole run
    session_seconds: float  # this call's training loop, checkpoint writes excluded
    images_per_second: float  # this call: global images / session_seconds
    stop_reason: StopReason
    signal_number: int | None = None  # the signal that interrupted the run


def derived_seed(seed: int, purpose: int, rank: int = 0) -> int:
    """A 63-bit seed for one purpose (and process) from the run's seed (numpy SeedSequence: independent streams)."""
    state = np.random.SeedSequence([seed, purpose, rank]).generate_state(1, dtype=np.uint64)
    return int(state[0]) & ((1 << 63) - 1)


# ----------------------------------------------------------------------------------------------------------
# Processes and devices


@dataclass(frozen=True)
class DistributedContext:
    """Where this process sits in a torchrun job (rank 0 of 1 without torchrun)."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def distributed_from_env(environ: dict[str, str] | None = None) -> DistributedContext:
    """RANK / WORLD_SIZE / LOCAL_RANK as set by torchrun (absent: a single process); ValueError if inconsistent."""
    environ = os.environ if environ is None else environ
    try:
        world_size = int(environ.get("WORLD_SIZE", "1"))
        rank = int(environ.get("RANK", "0"))
        local_rank = int(environ.get("LOCAL_RANK", str(rank)))
    except ValueError:
        raise ValueError("RANK, WORLD_SIZE and LOCAL_RANK must be integers (set by torchrun)") from None
    if world_size < 1 or not 0 <= rank < world_size or local_rank < 0:
        raise ValueError(f"inconsistent torchrun environment: RANK={rank}, WORLD_SIZE={world_size}")
    return DistributedContext(rank=rank, world_size=world_size, local_rank=local_rank)


# ----------------------------------------------------------------------------------------------------------
# Signals


class _StopRequest:
    """First SIGINT/SIGTERM: remember it (stop at the next update boundary). Second: KeyboardInterrupt now."""

    def __init__(self) -> None:
        self.signal_number: int | None = None
        self._previous: dict[int, object] = {}

    def __enter__(self) -> _StopRequest:
        if threading.current_thread() is threading.main_thread():
            for signum in (signal.SIGINT, signal.SIGTERM):
                self._previous[signum] = signal.getsignal(signum)
                signal.signal(signum, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for signum, handler in self._previous.items():
            signal.signal(signum, handler)

    def _handle(self, signum, frame) -> None:
        if self.signal_number is not None:
            raise KeyboardInterrupt
        self.signal_number = signum


# ----------------------------------------------------------------------------------------------------------
# The run folder


def _unstarted_run(out: Path) -> dict | None:
    """run.json of a run stopped (SIGKILL, power loss) before its first checkpoint, else None."""
    if not out.is_dir() or (out / CHECKPOINT_NAME).exists() or not (out / RUN_NAME).is_file():
        return None
    record = _read_run_json(out / RUN_NAME)
    return record if isinstance(record.get("preset"), dict) else None


def _check_out(out: Path, resume: bool) -> tuple[Checkpoint | None, dict | None]:
    """(the checkpoint to resume from, or None; run.json of a run to restart in place, or None).

    ValueError if `out` cannot hold the run. A folder whose run was killed before its first checkpoint holds
    run.json (and maybe train_log.jsonl) but no checkpoint: --resume restarts it from update 0 in place.
    """
    unstarted = _unstarted_run(out)
    if not resume:
        if out.exists() and (not out.is_dir() or any(out.iterdir())):
            if unstarted is not None:
                raise ValueError(f"output folder {str(out)!r} holds a run stopped before its first checkpoint: add "
                                 "--resume to restart it from update 0 in place, or choose a new --out")
            raise ValueError(f"output folder {str(out)!r} exists and is not empty: add --resume to continue "
                             "its run, or choose a new --out")
        return None, None
    path = out / CHECKPOINT_NAME
    if not path.is_file():
        if unstarted is not None:
            return None, unstarted
        raise ValueError(f"--resume: no checkpoint at {str(path)!r}")
    return load_checkpoint(path), None


def _truncate_log(path: Path, step: int) -> None:
    """Keep the log lines of updates <= step (a hard kill can leave lines past the last checkpoint, or half a line)."""
    if not path.exists():
        return
    kept, dropped = [], False
    for line in path.read_text(encoding="utf-8").splitlines():
        try:
            record = json.loads(line)
        except json.JSONDecodeError:
            dropped = True
            continue
        if isinstance(record, dict) and isinstance(record.get("step"), int) and record["step"] <= step:
            kept.append(line)
        else:
            dropped = True
    if dropped:
        atomic_write_text(path, "".join(line + "\n" for line in kept))


def _read_run_json(path: Path) -> dict:
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
        return record if isinstance(record, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


# ----------------------------------------------------------------------------------------------------------
# Training


def _resolve_preset(preset: str | Preset | None, stored: Checkpoint | None, max_steps, max_minutes) -> Preset:
    if stored is not None:
        chosen = stored.preset
        if preset is not None:
            name = preset.name if isinstance(preset, Preset) else preset
            if name != chosen.name:
                raise ValueError(f"--resume: the run was trained with preset {chosen.name!r}, not {name!r}")
    else:
        chosen = get_preset("small" if preset is None else preset) if not isinstance(preset, Preset) else preset
    changes = {}
    if max_steps is not None:
        changes["max_steps"] = max_steps
    if max_minutes is not None:
        changes.update(max_minutes=max_minutes, session_minutes=None)
    if changes:
        chosen = chosen.replace(training=chosen.training.replace(**changes))
    return chosen


def _apply_session_budget(preset: Preset, stored: Checkpoint | None, info: DatasetInfo, device: torch.device,
                          session_start: float, seed: int) -> tuple[Preset, BudgetPlan | None]:
    """The preset with max_minutes set by a session budget's plan (`ddpm.training.budget`), and the plan (None: no budget).

    A resumed run trains this session's planned seconds on top of the training time it already has."""
    minutes = preset.training.session_minutes
    if minutes is None:
        return preset, None
    plan = plan_session(preset, (info.channels, info.height, info.width), info.num("test"), info.name,
                        60.0 * minutes, session_start, device, seed)
    done = 0.0 if stored is None else stored.train_seconds
    print(f"ddpm: {plan.summary()}", file=sys.stderr)
    training = preset.training.replace(max_minutes=(done + plan.training_seconds) / 60.0)
    return preset.replace(training=training), plan


def _rng_state(device: torch.device) -> dict:
    return {"cpu": torch.get_rng_state(),
            "cuda": torch.cuda.get_rng_state(device) if device.type == "cuda" else None}


def _restore_rng(stored: Checkpoint, context: DistributedContext, device: torch.device, seed: int) -> bool:
    """Set this process's global RNG from the checkpoint; False (reseeded instead) if it cannot be matched."""
    states = stored.rng_states
    if len(states) == context.world_size:
        state = states[context.rank]
        cuda_state = state.get("cuda")
        if (cuda_state is None) == (device.type != "cuda"):
            torch.set_rng_state(state["cpu"])
            if cuda_state is not None:
                torch.cuda.set_rng_state(cuda_state, device)
            return True
    torch.manual_seed(derived_seed(seed, _SEED_DROPOUT + 1000 * stored.step, context.rank))
    return False


def train(
    data: str | os.PathLike | None,
    out: str | os.PathLike,
    preset: str | Preset | None = None,
    *,
    seed: int | None = None,
    device: str | torch.device | None = None,
    resume: bool = False,
    max_steps: int | None = None,
    max_minutes: float | None = None,
    compile: bool = False,
    progress: bool = True,
    command: Sequence[str] | None = None,
    session_start: float | None = None,
) -> TrainResult:
    """Train eps_theta by Algorithm 1 into the run folder `out` (see the module docstring).

    data: "mnist", "digits" or a folder of images (None with resume: the run's). preset: a name or a Preset
    (None: "small" for a new run, the run's own when resuming). max_steps / max_minutes override the preset's
    budget (whole-run counts); an explicit max_minutes turns a preset's session budget off. A preset with
    `TrainingConfig.session_minutes` plans its training time at the start (`ddpm.training.budget.plan_session`) for a
    session that began at `session_start` (time.time() seconds; default: now). ValueError (or DataError /
    CheckpointError / BudgetError, all ValueErrors) for bad input.
    """
    session_start = time.time() if session_start is None else float(session_start)
    context = distributed_from_env()
    out = Path(out)
    stored, restart = _check_out(out, resume)
    if restart is not None:  # killed before its first checkpoint: the same run again from update 0
        preset = Preset.from_dict(restart["preset"]) if preset is None else preset
        seed = restart.get("seed") if seed is None else seed
        data = restart.get("dataset") if data is None else data
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed < 2**63):
        raise ValueError(f"seed must be an integer in [0, 2**63), got {seed!r}")
    if stored is not None:
        if seed is not None and seed != stored.seed:
            raise ValueError(f"--resume: the run was trained with seed {stored.seed}, not {seed}")
        seed = stored.seed
    seed = 0 if seed is None else seed
    chosen = _resolve_preset(preset, stored, max_steps, max_minutes)
    config = chosen.training

    if data is None:
        if stored is None:
            raise ValueError("no dataset given (use mnist, digits or a folder of images)")
        data = stored.dataset
    if stored is not None:
        name = os.fspath(data) if os.fspath(data) in ("mnist", "digits") else str(Path(data).resolve())
        if name != stored.dataset:  # checked before the (possibly slow) dataset_info
            raise ValueError(f"--resume: the run was trained on {stored.dataset!r}, not {name!r}")
    info = dataset_info(data)
    if stored is not None:
        if info.name != stored.dataset:
            raise ValueError(f"--resume: the run was trained on {stored.dataset!r}, not {info.name!r}")
        if info.fingerprint != stored.dataset_info.fingerprint:
            raise ValueError(f"--resume: the images of {info.name!r} changed since the run started")
    if config.batch_size % context.world_size:
        raise ValueError(f"batch_size {config.batch_size} is not divisible by the {context.world_size} processes")
    images = load_images(data, "train")  # uint8 [N, C, H, W]
    device = resolve_device(device, context.local_rank if context.enabled else None)
    chosen, plan = _apply_session_budget(chosen, stored, info, device, session_start, seed)

    if context.enabled:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        fork_devices = [device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            return _train(out=out, preset=chosen, seed=seed, device=device, context=context,
                          stored=stored, info=info, images=images, compile=compile, progress=progress,
                          command=list(sys.argv if command is None else command),
                          budget=None if plan is None else plan.to_dict())
    finally:
        if context.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _train(*, out: Path, preset: Preset, seed: int, device: torch.device, context: DistributedContext,
           stored: Checkpoint | None, info: DatasetInfo, images: Tensor, compile: bool, progress: bool,
           command: list[str], budget: dict | None) -> TrainResult:
    config = preset.training
    training_variance = preset.training_variance
    cuda = device.type == "cuda"
    C, H, W = info.channels, info.height, info.width
    B = config.batch_size
    local = slice(context.rank * (B // context.world_size), (context.rank + 1) * (B // context.world_size))

    # Model, EMA, optimizer, randomness: fresh from the seed, then overwritten by the checkpoint when resuming.
    torch.manual_seed(derived_seed(seed, _SEED_INIT))
    model = build_unet(preset.model, C, (H, W), config.T)
    betas = make_betas(config.schedule, config.T) if stored is None else stored.betas
    if stored is not None:
        model.load_state_dict(stored.model_state)
    ema = copy.deepcopy(model).requires_grad_(False)
    if stored is not None:
        ema.load_state_dict(stored.ema_state)
    memory_format = torch.channels_last
    model.to(device=device, memory_format=memory_format)
    ema.to(device=device, memory_format=memory_format)
    model.train()
    ema.eval()
    # foreach: one multi-tensor update for all parameters (torch's default on CUDA only); on CPU it saves ~1 ms of
    # per-parameter Python per update and gives bitwise the same weights (tests/test_speedups.py).
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate_at(config, 1), foreach=True)
    sampler = MinibatchSampler(images.shape[0], B, torch.Generator().manual_seed(derived_seed(seed, _SEED_DATA)))
    loss_generator = torch.Generator(device=device).manual_seed(derived_seed(seed, _SEED_LOSS))
    torch.manual_seed(derived_seed(seed, _SEED_DROPOUT, context.rank))
    start_step, train_seconds, images_seen = 0, 0.0, 0
    exact = True
    if stored is not None:
        optimizer.load_state_dict(stored.optimizer_state)
        sampler.load_state_dict(stored.sampler_state)
        if torch.device(stored.device).type == device.type:
            loss_generator.set_state(stored.loss_generator_state)
        else:  # a CPU generator's state does not fit a CUDA generator: continue with a fresh stream
            loss_generator.manual_seed(derived_seed(seed, _SEED_LOSS + 1000 * stored.step))
            exact = False
        exact = _restore_rng(stored, context, device, seed) and exact
        start_step, train_seconds, images_seen = stored.step, stored.train_seconds, stored.images_seen
    if not exact and context.is_main:
        print("ddpm: note: resuming on another device type or process count; the continuation is not bitwise "
              "that of an uninterrupted run", file=sys.stderr)

    net: torch.nn.Module = model
    if context.enabled:
        net = torch.nn.parallel.DistributedDataParallel(model, device_ids=[device.index] if cuda else None)
    if compile:
        net = torch.compile(net)
    diffusion = GaussianDiffusion(betas).to(device)
    images = images.to(device)

    # Files (rank 0). The folder was checked to be empty or resumable before anything was written.
    log_path, run_path, checkpoint_path = out / LOG_NAME, out / RUN_NAME, out / CHECKPOINT_NAME
    session = {"command": command, "started": _now(), "start_step": start_step, "device": str(device),
               "world_size": context.world_size, "compile": compile, "bfloat16_autocast": cuda,
               "channels_last": True, "budget": budget}
    run_record: dict = {}
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(log_path, start_step)
        run_record = _read_run_json(run_path)  # {} for a new run; a resumed or restarted run keeps its sessions
        run_record.update({
            "command": run_record.get("command", command),
            "preset": preset.to_dict(),
            "seed": seed,
            "dataset": info.name,
            "dataset_info": dataclasses.asdict(info),
            "parameters": count_parameters(model),
            "versions": versions(),
        })
        run_record.setdefault("sessions", []).append(session)
        atomic_write_text(run_path, json.dumps(run_record, indent=2) + "\n")
    if context.enabled:
        dist.barrier()

    def write_checkpoint(step: int) -> None:
        """Collective under torchrun (every process's RNG state is gathered); rank 0 writes the file."""
        states = [_rng_state(device)]
        if context.enabled:
            states = [None] * context.world_size
            dist.all_gather_object(states, _rng_state(device))
        if context.is_main:
            save_checkpoint(checkpoint_path, Checkpoint(
                preset=preset, dataset=info.name, dataset_info=info, seed=seed, step=step, betas=betas,
                model_state=model.state_dict(), ema_state=ema.state_dict(), optimizer_state=optimizer.state_dict(),
                sampler_state=sampler.state_dict(), loss_generator_state=loss_generator.get_state(),
                rng_states=tuple(states), epoch=sampler.epoch, images_seen=images_seen,
                train_seconds=train_seconds, world_size=context.world_size, device=str(device),
                versions=versions()))
        if context.enabled:
            dist.barrier()

    step = start_step
    budget_seconds = None if config.max_minutes is None else 60.0 * config.max_minutes
    session_seconds = 0.0
    log_file = open(log_path, "a", encoding="utf-8") if context.is_main else None
    bar = tqdm(total=config.max_steps, initial=step, unit="step", desc="train", dynamic_ncols=True,
               disable=not (progress and context.is_main))
    loss_sum = torch.zeros((), device=device, dtype=torch.float64)
    window_steps, window_seconds = 0, 0.0
    last_checkpoint = time.perf_counter()
    control_every = DISTRIBUTED_CONTROL_EVERY if context.enabled else 1
    reason = None
    with _StopRequest() as stop, warnings.catch_warnings():
        # DDP warns once that a 1x1 convolution's weight gradient has other strides (over its size-1 dimensions)
        # than its bucket view: the memory layout is the same, so the warning is only noise.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        try:
            while True:
                if config.max_steps is not None and step >= config.max_steps:
                    reason = StopReason.MAX_STEPS
                    break
                if (step - start_step) % control_every == 0:
                    flags = torch.tensor([
                        stop.signal_number is not None,
                        budget_seconds is not None and train_seconds >= budget_seconds,
                        time.perf_counter() - last_checkpoint >= 60.0 * config.checkpoint_every_minutes,
                    ], dtype=torch.int32, device=device if context.enabled else "cpu")  # [3]
                    if context.enabled:
                        dist.all_reduce(flags, op=dist.ReduceOp.MAX)
                    interrupted, time_up, checkpoint_due = (bool(v) for v in flags.tolist())
                    if interrupted:
                        reason = StopReason.INTERRUPTED
                        break
                    if time_up:
                        reason = StopReason.MAX_MINUTES
                        break
                    if checkpoint_due and step > start_step:
                        write_checkpoint(step)
                        last_checkpoint = time.perf_counter()

                started = time.perf_counter()
                step += 1
                lr = learning_rate_at(config, step)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                # The global batch's randomness, drawn identically on every process; this process keeps `local`.
                indices = next(sampler)  # [B]
                t, weights = training_timesteps(B, config.T, loss_generator, device, config.small_t_fraction)  # [B]
                noise = standard_normal((B, C, H, W), loss_generator, torch.float32, device)  # [B, C, H, W]
                x0 = to_model_range(images[indices[local].to(device)])  # [B / world, C, H, W]
                x0 = x0.contiguous(memory_format=memory_format)
                with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=cuda):
                    loss = training_loss_at(net, diffusion, x0, t[local], noise[local], config.objective,
                                            training_variance, None if weights is None else weights[local],
                                            config.decoder_trains_mean)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                if config.grad_clip is not None:
                    torch.nn.utils.clip_grad_norm_(model.parameters(), config.grad_clip)
                optimizer.step()
                ema_update(ema, model, ema_decay_at(config, step))
                images_seen += B
                loss_sum += loss.detach().to(torch.float64)
                elapsed = time.perf_counter() - started
                train_seconds += elapsed
                session_seconds += elapsed
                window_steps += 1
                window_seconds += elapsed
                bar.update(1)

                if step % config.log_every == 0:
                    if context.enabled:
                        dist.all_reduce(loss_sum)
                        loss_sum /= context.world_size
                    mean_loss = loss_sum.item() / window_steps
                    if not math.isfinite(mean_loss):
                        raise TrainingError(f"the loss is {mean_loss} at update {step}; training diverged "
                                            "(the last checkpoint written is intact)")
                    speed = B * window_steps / window_seconds if window_seconds > 0 else 0.0
                    if log_file is not None:
                        log_file.write(json.dumps({
                            "step": step, "loss": mean_loss, "loss_updates": window_steps, "lr": lr,
                            "images_per_second": speed,
                            "elapsed_seconds": train_seconds, "epoch": sampler.epoch, "images_seen": images_seen,
                        }) + "\n")
                        log_file.flush()
                    bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{speed:.0f}", refresh=False)
                    loss_sum.zero_()
                    window_steps, window_seconds = 0, 0.0
            if step > start_step or not (out / CHECKPOINT_NAME).exists():
                write_checkpoint(step)
        finally:
            bar.close()
            if log_file is not None:
                log_file.close()

    speed = (step - start_step) * B / session_seconds if session_seconds > 0 else 0.0
    if context.is_main:
        session.update({"end_step": step, "stop_reason": reason.value, "session_seconds": session_seconds,
                        "images_per_second": speed, "ended": _now()})
        atomic_write_text(run_path, json.dumps(run_record, indent=2) + "\n")
    return TrainResult(out=out, checkpoint_path=checkpoint_path, step=step, start_step=start_step,
                       train_seconds=train_seconds, session_seconds=session_seconds, images_per_second=speed,
                       stop_reason=reason, signal_number=stop.signal_number)


__all__ = [
    "DISTRIBUTED_CONTROL_EVERY",
    "DistributedContext",
    "LOG_NAME",
    "RUN_NAME",
    "StopReason",
    "TrainResult",
    "TrainingError",
    "derived_seed",
    "distributed_from_env",
    "train",
]
