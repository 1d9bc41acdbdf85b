"""Side-by-side study of `small` preset options on MNIST: which combination gives the lowest test bound.

`python -m ddpm.studies.options_study --out DIR [--steps N] [--fid-samples N] [--options a,b,...]` trains each option of
OPTIONS for the same number of updates from the same seed (so the comparison does not depend on how busy the
machine is), evaluates each with `ddpm.evaluation.evaluate.evaluate_checkpoint` (exact bound on the same seeded test
images under every reverse variance the model supports, FID/KID of N Algorithm-2 samples with the option's headline
variance), and writes DIR/study.md and DIR/study.json next to one run folder per option. It is how the `small`
preset's default was chosen; `nox -s train_small_options` runs it.
"""

from __future__ import annotations

import argparse
import json
import shlex
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from ddpm.runtime.provenance import module_command
from ddpm.training.config import Preset, get_preset


@dataclass(frozen=True)
class Option:
    """One combination: a schedule, whether the model learns its variance, and the variance of the headline."""

    name: str
    schedule: str
    learn_variance: bool
    headline_variance: str
    small_t_fraction: float = 0.0
    decoder_trains_mean: bool = False

    def preset(self, base: Preset) -> Preset:
        model = base.model.replace(learn_variance=self.learn_variance)
        training = base.training.replace(schedule=self.schedule,
                                         objective="hybrid" if self.learn_variance else "simple",
                                         small_t_fraction=self.small_t_fraction,
                                         decoder_trains_mean=self.decoder_trains_mean)
        evaluation = base.evaluation.replace(variance=self.headline_variance)
        return base.replace(name=f"{base.name}-{self.name}", model=model, training=training, evaluation=evaluation)


OPTIONS = {
    option.name: option
    for option in (  # the headline variance of a fixed-variance model is the optimal one: its bound is the lowest
        Option("fixed-linear", "linear", False, "optimal"),
        Option("learned-linear", "linear", True, "learned"),
        Option("fixed-cosine", "cosine", False, "optimal"),
        Option("learned-cosine", "cosine", True, "learned"),
        Option("learned-linear-small-t", "linear", True, "learned", small_t_fraction=0.2),
        Option("learned-linear-decoder", "linear", True, "learned", decoder_trains_mean=True),
        Option("learned-linear-decoder-small-t", "linear", True, "learned", small_t_fraction=0.2,
               decoder_trains_mean=True),
    )
}


@dataclass(frozen=True)
class StudySettings:
    """What every option of a study shares: `steps` updates from `seed` on `data`, the options applied to the preset
    `base`, then FID/KID of `fid_samples` samples and the exact bound on `exact_images` test images. `command`
    is what each option's run.json and metrics.json record (None: the running command)."""

    steps: int
    fid_samples: int
    exact_images: int
    seed: int = 0
    data: str = "mnist"
    base: str = "small"
    command: str | None = None


def run_option(option: Option, out: Path, settings: StudySettings, progress: bool) -> dict:
    """Train `option` for `settings.steps` updates into out/<name>, evaluate it, return its row of the study."""
    from ddpm.evaluation.evaluate import EvaluationOverrides, evaluate_checkpoint
    from ddpm.training.trainer import TrainOptions, train

    steps, seed = settings.steps, settings.seed
    run = out / option.name
    preset = option.preset(get_preset(settings.base))
    # Equal updates, not equal time: the base preset's time budget must not stop a run early on a busy machine.
    preset = preset.replace(training=preset.training.replace(max_steps=steps, max_minutes=None, session_minutes=None))
    start = time.perf_counter()
    command = None if settings.command is None else shlex.split(settings.command)
    result = train(settings.data, run, preset, options=TrainOptions(seed=seed, max_steps=steps), progress=progress,
                   command=command)
    train_seconds = time.perf_counter() - start
    start = time.perf_counter()
    overrides = EvaluationOverrides(fid_samples=settings.fid_samples, elbo_exact_images=settings.exact_images)
    evaluation = evaluate_checkpoint(run / "checkpoint.pt", run, overrides, progress=progress, log=print,
                                     command=settings.command)
    metrics = evaluation.metrics
    return {
        "option": option.name,
        "schedule": option.schedule,
        "learn_variance": option.learn_variance,
        "objective": preset.training.objective + (f", small-t {option.small_t_fraction:g}"
                                                  if option.small_t_fraction else "")
                     + (", L_0 trains the decoder mean" if option.decoder_trains_mean else ""),
        "steps": int(result.step),
        "train_seconds": train_seconds,
        "evaluate_seconds": time.perf_counter() - start,
        "headline_variance": option.headline_variance,
        "exact_by_variance": metrics["elbo_exact_by_variance"],
        "fid": metrics.get("fid"),
        "kid_mean": metrics.get("kid_mean"),
        "fid_num_samples": metrics.get("fid_num_samples"),
    }


def write_study(out: Path, rows: list[dict], settings: dict) -> None:
    """study.json (rows and settings) and study.md (one table) in `out`, atomically."""
    from ddpm.runtime.files import atomic_write_text, write_json_atomic

    write_json_atomic(out / "study.json", {"settings": settings, "rows": rows})
    variances = ("beta", "beta_tilde", "optimal", "learned")
    lines = [
        "# `small` preset options, side by side",
        "",
        "Command(s): " + ", ".join(f"`{c}`" for c in dict.fromkeys(row.get("command", settings["command"])
                                                               for row in rows))
        + f". Each option trained {settings['steps']} updates from seed "
        f"{settings['seed']} (same data order and noise draws where the options allow), then evaluated by "
        f"`evaluate_checkpoint`: exact bound (bits/dim, all T terms) on the same {settings['exact_images']} seeded "
        f"test images with the same x_t under each reverse variance the model supports (+- standard error over "
        f"images), FID/KID of {settings['fid_samples']} Algorithm-2 samples with the headline variance against "
        f"{settings['fid_samples']} test images (small N: FID is biased upwards; compare the options with each "
        "other, not with FID at other N).",
        "",
        "| option | objective | " + " | ".join(f"bound, {v}" for v in variances)
        + " | headline variance | FID | KID | train s |",
        "| --- | --- | " + " | ".join("---" for _ in variances) + " | --- | --- | --- | --- |",
    ]
    for row in rows:
        cells = []
        for v in variances:
            entry = row["exact_by_variance"].get(v)
            cells.append("n/a" if entry is None else f"{entry['bits_per_dim']:.3f} +- {entry['stderr']:.3f}")
        fid = "n/a" if row["fid"] is None else f"{row['fid']:.1f}"
        kid = "n/a" if row["kid_mean"] is None else f"{row['kid_mean']:.4f}"
        lines.append(f"| {row['option']} | {row['objective']} | " + " | ".join(cells)
                     + f" | {row['headline_variance']} | {fid} | {kid} | {row['train_seconds']:.0f} |")
    atomic_write_text(out / "study.md", "\n".join(lines) + "\n")


def _earlier_rows(out: Path, settings: dict, names: list[str]) -> list[dict]:
    """Rows of an earlier study in `out` with the same settings (steps, seed, sizes, data, preset), except `names`.

    So options can be added to a study one run at a time; a study with other settings is not mixed in."""
    path = out / "study.json"
    if not path.is_file():
        return []
    try:
        record = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, json.JSONDecodeError):
        return []
    same = all(record.get("settings", {}).get(key) == settings[key]
               for key in ("steps", "seed", "fid_samples", "exact_images", "data", "preset"))
    return [row for row in record.get("rows", []) if row.get("option") not in names] if same else []


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpm.studies.options_study", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of the study (run folders inside)")
    parser.add_argument("--steps", type=int, default=1500, help="updates per option (default 1500)")
    parser.add_argument("--fid-samples", type=int, default=250, help="samples for FID/KID per option (default 250)")
    parser.add_argument("--exact-images", type=int, default=32, help="test images of the exact bound (default 32)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", default="mnist", help="dataset (default mnist)")
    parser.add_argument("--preset", default="small", help="the preset whose options are compared (default small)")
    parser.add_argument("--options", default=",".join(OPTIONS), help=f"comma-separated subset of {', '.join(OPTIONS)}")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    names = [name for name in args.options.split(",") if name]
    unknown = [name for name in names if name not in OPTIONS]
    try:
        get_preset(args.preset)
    except ValueError as error:
        print(f"options_study: {error}", file=sys.stderr)
        return 2
    if unknown or args.steps < 1 or args.fid_samples < 2 or args.exact_images < 2:
        print(f"options_study: unknown option(s) {unknown} (options: {', '.join(OPTIONS)}) or a count below its "
              "minimum (steps >= 1, fid-samples >= 2, exact-images >= 2)", file=sys.stderr)
        return 2
    args.out.mkdir(parents=True, exist_ok=True)
    command_args = argv if argv is not None else sys.argv[1:]
    settings = {"command": module_command("ddpm.studies.options_study", command_args),
                "steps": args.steps, "seed": args.seed, "fid_samples": args.fid_samples, "data": args.data,
                "preset": args.preset,
                "exact_images": args.exact_images}
    study = StudySettings(steps=args.steps, fid_samples=args.fid_samples, exact_images=args.exact_images,
                          seed=args.seed, data=args.data, base=args.preset, command=settings["command"])
    rows = _earlier_rows(args.out, settings, names)
    for name in names:
        row = run_option(OPTIONS[name], args.out, study, not args.no_progress)
        rows.append({**row, "command": settings["command"]})
        write_study(args.out, rows, settings)  # after each option: a crash keeps the finished rows
    print(f"options_study: wrote {args.out / 'study.md'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
