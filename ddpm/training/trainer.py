"""Algorithm 1 of Ho et al. (2020) as a resumable training run: repeat { x_0 ~ q(x_0), t ~ Uniform{1..T},
eps ~ N(0, I), gradient step on ||eps - eps_theta(sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) eps, t)||^2 }.

`train(data, out, preset, ...)` runs it with the preset's `TrainingConfig`: the objective of `ddpm.core.losses`
("simple" by default), Adam with linear learning-rate warmup (`ddpm.training.update_rules.learning_rate_at`),
gradient clipping by global norm, and an exponential moving average of the weights
(`ddpm.training.update_rules.ema_update`), which is what evaluation and sampling use.

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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from types import FrameType
from typing import Any, cast

import numpy as np
import torch
import torch.distributed as dist
from tqdm.auto import tqdm

from ddpm.core.diffusion import GaussianDiffusion, standard_normal
from ddpm.core.losses import training_loss_at, training_timesteps
from ddpm.core.schedules import make_betas
from ddpm.images.data import DatasetInfo, MinibatchSampler, dataset_info, load_images, to_model_range
from ddpm.runtime.devices import resolve_device
from ddpm.runtime.files import atomic_write_text
from ddpm.runtime.provenance import portable_argv, running_argv, versions
from ddpm.training.budget import BudgetPlan, plan_session
from ddpm.training.checkpoint import (
    CHECKPOINT_NAME,
    Checkpoint,
    load_checkpoint,
    save_checkpoint,
)
from ddpm.training.config import Preset, count_parameters, get_preset
from ddpm.training.model import build_unet
from ddpm.training.update_rules import ema_decay_at, ema_update, learning_rate_at

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


def distributed_from_env(environ: Mapping[str, str] | None = None) -> DistributedContext:
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
        self._previous: dict[int, Callable[[int, FrameType | None], Any] | int | signal.Handlers | None] = {}

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
    """The preset with max_minutes set by a session budget's plan (`ddpm.training.budget`), and the plan (None: no
    budget).

    A resumed run trains this session's planned seconds on top of the training time it already has."""
    minutes = preset.training.session_minutes
    if minutes is None:
        return preset, None
    plan = plan_session(preset, info, 60.0 * minutes, session_start, device, seed)
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


@dataclass(frozen=True)
class TrainOptions:
    """What a run is asked for beyond its preset (the options of `python -m ddpm train`).

    seed: the run's seed (None: 0 for a new run, the run's own when resuming); resume: continue the run in `out`;
    max_steps / max_minutes: override the preset's budget (whole-run counts; an explicit max_minutes turns a preset's
    session budget off); compile: torch.compile the network; session_start: when the session began (time.time()
    seconds; None: now), from which a preset with `TrainingConfig.session_minutes` plans its training time.
    """

    seed: int | None = None
    resume: bool = False
    max_steps: int | None = None
    max_minutes: float | None = None
    compile: bool = False
    session_start: float | None = None


def train(
    data: str | os.PathLike | None,
    out: str | os.PathLike,
    preset: str | Preset | None = None,
    options: TrainOptions | None = None,
    *,
    device: str | torch.device | None = None,
    progress: bool = True,
    command: Sequence[str] | None = None,
) -> TrainResult:
    """Train eps_theta by Algorithm 1 into the run folder `out` (see the module docstring).

    data: "mnist", "digits" or a folder of images (None with resume: the run's). preset: a name or a Preset
    (None: "small" for a new run, the run's own when resuming). options: `TrainOptions` (seed, resume, budgets,
    compile, session start). A preset with `TrainingConfig.session_minutes` plans its training time at the start
    (`ddpm.training.budget.plan_session`). device: cpu, cuda or cuda:N (None: cuda when available; cuda:LOCAL_RANK
    under torchrun). command: what run.json records, made portable (None: the running command, `running_argv`).
    ValueError (or DataError / CheckpointError / BudgetError / DeviceError, all ValueErrors) for bad input.
    """
    options = TrainOptions() if options is None else options
    session_start = time.time() if options.session_start is None else float(options.session_start)
    context = distributed_from_env()
    out = Path(out)
    stored, restart = _check_out(out, options.resume)
    data, preset, seed = _run_identity(data, preset, options.seed, stored, restart)
    chosen = _resolve_preset(preset, stored, options.max_steps, options.max_minutes)
    data, info = _check_data(data, stored)
    if chosen.training.batch_size % context.world_size:
        raise ValueError(f"batch_size {chosen.training.batch_size} is not divisible by the {context.world_size} "
                         "processes")
    images = load_images(data, "train")  # uint8 [N, C, H, W]
    device = resolve_device(device, context.local_rank if context.enabled else None)
    chosen, plan = _apply_session_budget(chosen, stored, info, device, session_start, seed)
    setup = _RunSetup(out=out, preset=chosen, seed=seed, device=device, context=context, stored=stored, info=info,
                      images=images, compile=options.compile, progress=progress,
                      command=running_argv() if command is None else portable_argv(command),
                      budget=None if plan is None else plan.to_dict())
    if context.enabled:
        if device.type == "cuda":
            torch.cuda.set_device(device)
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    try:
        fork_devices = [device.index] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=fork_devices):
            return _train(setup)
    finally:
        if context.enabled and dist.is_initialized():
            dist.destroy_process_group()


def _run_identity(data: str | os.PathLike | None, preset, seed: int | None, stored: Checkpoint | None,
                  restart: dict | None) -> tuple[str | os.PathLike | None, str | Preset | None, int]:
    """(data, preset, seed) of the run: a restarted run's from its run.json where not given, a resumed run's seed
    (a different one is refused), else the given seed or 0; ValueError for a bad seed."""
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
    return data, preset, 0 if seed is None else seed


def _check_data(data: str | os.PathLike | None, stored: Checkpoint | None) -> tuple[str | os.PathLike, DatasetInfo]:
    """(the dataset, its DatasetInfo); a resumed run's own when `data` is None, and it must be the same images."""
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
    return data, info


@dataclass(frozen=True)
class _RunSetup:
    """Everything `train` settled before the first update: where, what, on which device, from which checkpoint."""

    out: Path
    preset: Preset
    seed: int
    device: torch.device
    context: DistributedContext
    stored: Checkpoint | None  # the checkpoint a resumed run continues
    info: DatasetInfo
    images: Tensor  # uint8 [N, C, H, W], the training split
    compile: bool
    progress: bool
    command: list[str]
    budget: dict | None  # the session budget's plan (run.json), None without one

    @property
    def local_rows(self) -> slice:
        """This process's rows of the global batch."""
        share = self.preset.training.batch_size // self.context.world_size
        return slice(self.context.rank * share, (self.context.rank + 1) * share)


@dataclass
class _State:
    """The run's state: networks, optimizer, data order and noise generators, and the counters the loop advances."""

    model: torch.nn.Module
    ema: torch.nn.Module
    optimizer: torch.optim.Optimizer
    sampler: MinibatchSampler
    loss_generator: torch.Generator
    betas: np.ndarray
    start_step: int
    step: int
    images_seen: int
    train_seconds: float  # the whole run's
    session_seconds: float = 0.0  # this call's training loop, checkpoint writes excluded


def _initial_state(setup: _RunSetup) -> _State:
    """Model, EMA, optimizer, randomness: fresh from the seed, then overwritten by the checkpoint when resuming."""
    preset, seed, device, stored, info = setup.preset, setup.seed, setup.device, setup.stored, setup.info
    config = preset.training
    torch.manual_seed(derived_seed(seed, _SEED_INIT))
    model = build_unet(preset.model, info.channels, (info.height, info.width), config.T)
    betas = make_betas(config.schedule, config.T) if stored is None else stored.betas
    if stored is not None:
        model.load_state_dict(stored.model_state)
    ema = copy.deepcopy(model).requires_grad_(False)
    if stored is not None:
        ema.load_state_dict(stored.ema_state)
    model.to(  # type: ignore[call-overload]  # torch's stubs lack Module.to(device=, memory_format=)
        device=device, memory_format=torch.channels_last)
    ema.to(  # type: ignore[call-overload]  # torch's stubs lack Module.to(device=, memory_format=)
        device=device, memory_format=torch.channels_last)
    model.train()
    ema.eval()
    # foreach: one multi-tensor update for all parameters (torch's default on CUDA only); on CPU it saves ~1 ms of
    # per-parameter Python per update and gives bitwise the same weights (tests/methods/test_speedups.py).
    optimizer = torch.optim.Adam(model.parameters(), lr=learning_rate_at(config, 1), foreach=True)
    sampler = MinibatchSampler(setup.images.shape[0], config.batch_size,
                               torch.Generator().manual_seed(derived_seed(seed, _SEED_DATA)))
    loss_generator = torch.Generator(device=device).manual_seed(derived_seed(seed, _SEED_LOSS))
    torch.manual_seed(derived_seed(seed, _SEED_DROPOUT, setup.context.rank))
    state = _State(model, ema, optimizer, sampler, loss_generator, betas, start_step=0, step=0, images_seen=0,
                   train_seconds=0.0)
    if stored is not None:
        _resume(setup, state, stored)
    return state


def _resume(setup: _RunSetup, state: _State, stored: Checkpoint) -> None:
    """Load the stored optimizer, data order, noise generator, RNG and counters into `state`; say when the
    continuation cannot be bitwise that of an uninterrupted run (another device type or process count)."""
    seed, device = setup.seed, setup.device
    exact = True
    state.optimizer.load_state_dict(stored.optimizer_state)
    state.sampler.load_state_dict(stored.sampler_state)
    if torch.device(stored.device).type == device.type:
        state.loss_generator.set_state(stored.loss_generator_state)
    else:  # a CPU generator's state does not fit a CUDA generator: continue with a fresh stream
        state.loss_generator.manual_seed(derived_seed(seed, _SEED_LOSS + 1000 * stored.step))
        exact = False
    exact = _restore_rng(stored, setup.context, device, seed) and exact
    state.start_step = state.step = stored.step
    state.train_seconds, state.images_seen = stored.train_seconds, stored.images_seen
    if not exact and setup.context.is_main:
        print("ddpm: note: resuming on another device type or process count; the continuation is not bitwise "
              "that of an uninterrupted run", file=sys.stderr)


def _network(setup: _RunSetup, model: torch.nn.Module) -> torch.nn.Module:
    """The module the loss calls: the model, wrapped in DistributedDataParallel under torchrun, compiled if asked."""
    net: torch.nn.Module = model
    if setup.context.enabled:
        net = torch.nn.parallel.DistributedDataParallel(
            model, device_ids=[setup.device.index] if setup.device.type == "cuda" else None)
    if setup.compile:
        net = torch.compile(net)  # type: ignore[assignment]  # compiling a Module gives a Module (OptimizedModule)
    return net


def _start_session(setup: _RunSetup, state: _State) -> tuple[dict, dict]:
    """Rank 0: create the folder, trim the log to the checkpoint's step and append this session to run.json;
    (the session's entry, the whole run.json record). The folder was checked to be empty or resumable."""
    out, context, device = setup.out, setup.context, setup.device
    session = {"command": setup.command, "started": _now(), "start_step": state.start_step, "device": str(device),
               "world_size": context.world_size, "compile": setup.compile, "bfloat16_autocast": device.type == "cuda",
               "channels_last": True, "budget": setup.budget}
    run_record: dict = {}
    if context.is_main:
        out.mkdir(parents=True, exist_ok=True)
        _truncate_log(out / LOG_NAME, state.start_step)
        run_record = _read_run_json(out / RUN_NAME)  # {} for a new run; a resumed or restarted run keeps its sessions
        run_record.update({
            "command": run_record.get("command", setup.command),
            "preset": setup.preset.to_dict(),
            "seed": setup.seed,
            "dataset": setup.info.name,
            "dataset_info": dataclasses.asdict(setup.info),
            "parameters": count_parameters(state.model),
            "versions": versions(),
        })
        run_record.setdefault("sessions", []).append(session)
        atomic_write_text(out / RUN_NAME, json.dumps(run_record, indent=2) + "\n")
    if context.enabled:
        dist.barrier()
    return session, run_record


def _write_checkpoint(setup: _RunSetup, state: _State, step: int) -> None:
    """Collective under torchrun (every process's RNG state is gathered); rank 0 writes the file."""
    context, device = setup.context, setup.device
    states = [_rng_state(device)]
    if context.enabled:
        gathered: list[dict | None] = [None] * context.world_size
        dist.all_gather_object(gathered, _rng_state(device))
        states = cast("list[dict]", gathered)  # every slot now holds a process's state
    if context.is_main:
        save_checkpoint(setup.out / CHECKPOINT_NAME, Checkpoint(
            preset=setup.preset, dataset=setup.info.name, dataset_info=setup.info, seed=setup.seed, step=step,
            betas=state.betas, model_state=state.model.state_dict(), ema_state=state.ema.state_dict(),
            optimizer_state=state.optimizer.state_dict(), sampler_state=state.sampler.state_dict(),
            loss_generator_state=state.loss_generator.get_state(), rng_states=tuple(states),
            epoch=state.sampler.epoch, images_seen=state.images_seen, train_seconds=state.train_seconds,
            world_size=context.world_size, device=str(device), versions=versions()))
    if context.enabled:
        dist.barrier()


@dataclass
class _Window:
    """The updates since the last log line: their summed loss (float64, on the device), count and seconds."""

    loss_sum: Tensor
    steps: int = 0
    seconds: float = 0.0


def _update(setup: _RunSetup, state: _State, net: torch.nn.Module, diffusion: GaussianDiffusion,
            images: Tensor) -> tuple[Tensor, float]:
    """One update of Algorithm 1 (update state.step + 1): the global batch's randomness drawn identically on every
    process, this process's rows, the loss, the gradient step and the EMA; (the loss, the learning rate)."""
    config, device, info = setup.preset.training, setup.device, setup.info
    B, local = config.batch_size, setup.local_rows
    state.step += 1
    lr = learning_rate_at(config, state.step)
    for group in state.optimizer.param_groups:
        group["lr"] = lr
    indices = next(state.sampler)  # [B]
    t, weights = training_timesteps(B, config.T, state.loss_generator, device, config.small_t_fraction)  # [B]
    noise = standard_normal((B, info.channels, info.height, info.width), state.loss_generator, torch.float32,
                            device)  # [B, C, H, W]
    rows = indices[local]
    if device.type == "cuda":  # from pinned memory the copy is queued; from pageable memory it waits for the GPU
        rows = rows.pin_memory().to(device, non_blocking=True)
    x0 = to_model_range(images[rows.to(device)])  # [B / world, C, H, W]
    x0 = x0.contiguous(memory_format=torch.channels_last)
    with torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
        loss = training_loss_at(net, diffusion, x0, t[local], noise[local], config.objective,
                                setup.preset.training_variance, None if weights is None else weights[local],
                                config.decoder_trains_mean)
    state.optimizer.zero_grad(set_to_none=True)
    loss.backward()
    if config.grad_clip is not None:
        torch.nn.utils.clip_grad_norm_(state.model.parameters(), config.grad_clip)
    state.optimizer.step()
    ema_update(state.ema, state.model, ema_decay_at(config, state.step))
    state.images_seen += B
    return loss, lr


def _log_window(setup: _RunSetup, state: _State, window: _Window, lr: float,
                log_file) -> tuple[float, float]:
    """Write one line of train_log.jsonl for the updates of `window` (rank 0) and start a new window; TrainingError
    for a non-finite loss. Returns (the window's mean loss, its images/s)."""
    if setup.context.enabled:
        dist.all_reduce(window.loss_sum)
        window.loss_sum /= setup.context.world_size
    mean_loss = window.loss_sum.item() / window.steps
    if not math.isfinite(mean_loss):
        raise TrainingError(f"the loss is {mean_loss} at update {state.step}; training diverged "
                            "(the last checkpoint written is intact)")
    B = setup.preset.training.batch_size
    speed = B * window.steps / window.seconds if window.seconds > 0 else 0.0
    if log_file is not None:
        log_file.write(json.dumps({
            "step": state.step, "loss": mean_loss, "loss_updates": window.steps, "lr": lr,
            "images_per_second": speed,
            "elapsed_seconds": state.train_seconds, "epoch": state.sampler.epoch, "images_seen": state.images_seen,
        }) + "\n")
        log_file.flush()
    window.loss_sum.zero_()
    window.steps, window.seconds = 0, 0.0
    return mean_loss, speed


class _Control:
    """The stop and checkpoint decisions taken every `every` updates (agreed by an all-reduce under torchrun)."""

    def __init__(self, setup: _RunSetup, stop: _StopRequest) -> None:
        config = setup.preset.training
        self.setup, self.stop = setup, stop
        self.budget_seconds = None if config.max_minutes is None else 60.0 * config.max_minutes
        self.every = DISTRIBUTED_CONTROL_EVERY if setup.context.enabled else 1
        self.last_checkpoint = time.perf_counter()

    def __call__(self, state: _State) -> StopReason | None:
        """Why the run stops before the next update (None: it goes on); writes a checkpoint that is due."""
        setup, config = self.setup, self.setup.preset.training
        if config.max_steps is not None and state.step >= config.max_steps:
            return StopReason.MAX_STEPS
        if (state.step - state.start_step) % self.every != 0:
            return None
        flags = torch.tensor([
            self.stop.signal_number is not None,
            self.budget_seconds is not None and state.train_seconds >= self.budget_seconds,
            time.perf_counter() - self.last_checkpoint >= 60.0 * config.checkpoint_every_minutes,
        ], dtype=torch.int32, device=setup.device if setup.context.enabled else "cpu")  # [3]
        if setup.context.enabled:
            dist.all_reduce(flags, op=dist.ReduceOp.MAX)
        interrupted, time_up, checkpoint_due = (bool(v) for v in flags.tolist())
        if interrupted:
            return StopReason.INTERRUPTED
        if time_up:
            return StopReason.MAX_MINUTES
        if checkpoint_due and state.step > state.start_step:
            _write_checkpoint(setup, state, state.step)
            self.last_checkpoint = time.perf_counter()
        return None


def _loop(setup: _RunSetup, state: _State, net: torch.nn.Module, diffusion: GaussianDiffusion, images: Tensor,
          stop: _StopRequest) -> StopReason:
    """Updates until a stop decision (`_Control`), a log line every log_every updates; the final checkpoint."""
    config, is_main = setup.preset.training, setup.context.is_main
    log_file = open(setup.out / LOG_NAME, "a", encoding="utf-8") if is_main else None
    bar = tqdm(total=config.max_steps, initial=state.step, unit="step", desc="train", dynamic_ncols=True,
               disable=not (setup.progress and is_main))
    window = _Window(torch.zeros((), device=setup.device, dtype=torch.float64))
    control = _Control(setup, stop)
    try:
        while (reason := control(state)) is None:
            started = time.perf_counter()
            loss, lr = _update(setup, state, net, diffusion, images)
            window.loss_sum += loss.detach().to(torch.float64)
            elapsed = time.perf_counter() - started
            state.train_seconds += elapsed
            state.session_seconds += elapsed
            window.steps += 1
            window.seconds += elapsed
            bar.update(1)
            if state.step % config.log_every == 0:
                mean_loss, speed = _log_window(setup, state, window, lr, log_file)
                bar.set_postfix(loss=f"{mean_loss:.4f}", img_s=f"{speed:.0f}", refresh=False)
        if state.step > state.start_step or not (setup.out / CHECKPOINT_NAME).exists():
            _write_checkpoint(setup, state, state.step)
    finally:
        bar.close()
        if log_file is not None:
            log_file.close()
    return reason


def _train(setup: _RunSetup) -> TrainResult:
    """The run's phases: the initial (or resumed) state, the network, the session's files, the loop, the session's
    end in run.json."""
    state = _initial_state(setup)
    net = _network(setup, state.model)
    diffusion = GaussianDiffusion(state.betas).to(setup.device)
    images = setup.images.to(setup.device)
    session, run_record = _start_session(setup, state)
    with _StopRequest() as stop, warnings.catch_warnings():
        # DDP warns once that a 1x1 convolution's weight gradient has other strides (over its size-1 dimensions)
        # than its bucket view: the memory layout is the same, so the warning is only noise.
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        reason = _loop(setup, state, net, diffusion, images, stop)
    B = setup.preset.training.batch_size
    speed = (state.step - state.start_step) * B / state.session_seconds if state.session_seconds > 0 else 0.0
    if setup.context.is_main:
        session.update({"end_step": state.step, "stop_reason": reason.value,
                        "session_seconds": state.session_seconds, "images_per_second": speed, "ended": _now()})
        atomic_write_text(setup.out / RUN_NAME, json.dumps(run_record, indent=2) + "\n")
    return TrainResult(out=setup.out, checkpoint_path=setup.out / CHECKPOINT_NAME, step=state.step,
                       start_step=state.start_step, train_seconds=state.train_seconds,
                       session_seconds=state.session_seconds, images_per_second=speed, stop_reason=reason,
                       signal_number=stop.signal_number)


__all__ = [
    "DISTRIBUTED_CONTROL_EVERY",
    "DistributedContext",
    "LOG_NAME",
    "RUN_NAME",
    "StopReason",
    "TrainOptions",
    "TrainResult",
    "TrainingError",
    "derived_seed",
    "distributed_from_env",
    "train",
]
