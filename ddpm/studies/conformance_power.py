"""The power of the conformance suite's statistical cases, measured: how often each detects an error of a given size.

    python -m ddpm.studies.conformance_power --out reports/conformance [--seeds N] [--first-seed S]
        [--grid KIND=d1,d2,...] [--T T] [--no-progress]

For each kind of error of `ddpm.conformance.graded` (noise scaled, a per-step variance error that cancels in the
chain's output law, the loss scaled) and each delta of its grid, the graded adapter runs every statistical case it
has (every case whose result carries a p-value: found by one full suite run of the kind at delta = 0) under
SuiteConfig(seed=k) for the seeds k = S .. S + N - 1, the suite's sizes and alpha otherwise. A detection is a
failed case. The study writes power.json and power.md (and power.png) into --out: the detection rate per
(case, kind, delta) with its 95 % Clopper-Pearson interval. At delta = 0 the graded adapters are the reference,
so that row's rate is the case's false-rejection rate: it is flagged, and the exit status is 1, when the
one-sided binomial p-value of that many failures at rate alpha is below 0.01. The same seeds serve every delta
(common random numbers: the curves are smoother than independent draws would make them).
"""

from __future__ import annotations

import argparse
import io
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from scipy import stats
from tqdm.auto import tqdm

from ddpm.conformance.cases import Status, SuiteConfig
from ddpm.conformance.graded import T_DEFAULT, ErrorKind, GradedAdapter, graded_adapter
from ddpm.conformance.runner import run_adapter
from ddpm.runtime.files import atomic_write_bytes, atomic_write_text
from ddpm.runtime.provenance import module_command, versions

# From a pilot run (10 seeds, T = 50, the suite's sizes): the chain cases detected the noise error at 0/10 up to
# delta = 0.015, 5/10 at 0.03 and 10/10 at 0.05; loss_at_eps_star the loss error at 0/10 up to 0.02, 2/10 at 0.03 and
# 10/10 at 0.05. Each grid spans that climb. The cancelling error is invisible to the chain cases by construction;
# calibration[...] saw none of it at 40 seeds up to a first-half variance error of 100 % (the first half's noise is a
# small part of x_0's variance at T = 50), so its grid reaches 100 times the variance.
GRID: dict[ErrorKind, tuple[float, ...]] = {
    ErrorKind.NOISE: (0.0, 0.03, 0.04, 0.06),
    ErrorKind.CANCELLING: (0.0, 1.0, 10.0, 100.0),
    ErrorKind.LOSS: (0.0, 0.03, 0.04, 0.06),
}
SEEDS = 40  # the default run: about 2 to 3 minutes on two cores shared with other work (40 s of CPU per 30 seeds)
LEVEL = 0.95  # of the Clopper-Pearson intervals
FLAG_P = 0.01  # a false-rejection rate whose binomial p-value at alpha is below this is flagged
PROBE_LEVEL = 0.05  # at delta = 0, the fraction of runs with p <= 0.05: a finer view of calibration than alpha


@dataclass(frozen=True)
class PowerSettings:
    """What the study runs: the seeds, the grid of delta per kind, T of the graded adapters, the suite's sizes."""

    seeds: tuple[int, ...]
    grid: Mapping[ErrorKind, tuple[float, ...]] = field(default_factory=lambda: dict(GRID))
    T: int = T_DEFAULT
    config: SuiteConfig = field(default_factory=SuiteConfig)  # its seed is replaced by each of `seeds`


@dataclass
class Cell:
    """The outcomes of one statistical case of one kind of error at one delta, over the seeds."""

    kind: ErrorKind
    case: str
    delta: float
    failures: list[bool] = field(default_factory=list)
    p_values: list[float | None] = field(default_factory=list)

    def add(self, failed: bool, p_value: float | None) -> None:
        self.failures.append(failed)
        self.p_values.append(p_value)


def statistical_cases(kind: ErrorKind, settings: PowerSettings) -> list[str]:
    """The names of the cases whose result carries a p-value, from one full suite run of `kind` at delta = 0."""
    run = run_adapter(graded_adapter(kind, 0.0, settings.T), settings.config, progress=False)
    return [r.case for r in run.results if r.p_value is not None]


def run_kind(kind: ErrorKind, settings: PowerSettings, bar: tqdm) -> list[Cell]:
    """Every statistical case of `kind`'s graded adapter at every delta of its grid and every seed."""
    names = statistical_cases(kind, settings)
    cells = {(name, delta): Cell(kind, name, delta) for delta in settings.grid[kind] for name in names}
    for delta in settings.grid[kind]:
        adapter = graded_adapter(kind, delta, settings.T)
        for seed in settings.seeds:
            run = run_adapter(adapter, replace(settings.config, seed=seed), progress=False, only=set(names))
            for result in run.results:
                cells[(result.case, delta)].add(result.status is Status.FAIL, result.p_value)
            bar.update(1)
    return list(cells.values())


def run_study(settings: PowerSettings, progress: bool = True) -> list[Cell]:
    """The cells of every kind of the grid, kind by kind."""
    total = sum(len(deltas) for deltas in settings.grid.values()) * len(settings.seeds)
    cells: list[Cell] = []
    with tqdm(total=total, desc="conformance power", disable=not progress) as bar:
        for kind in settings.grid:
            cells += run_kind(kind, settings, bar)
    return cells


def clopper_pearson(k: int, n: int, level: float = LEVEL) -> tuple[float, float]:
    """The exact (Clopper-Pearson) interval of a binomial rate from k successes in n trials."""
    interval = stats.binomtest(k, n).proportion_ci(confidence_level=level, method="exact")
    return float(interval.low), float(interval.high)


def row_of(cell: Cell, alpha: float) -> dict:
    """One row of the report: the detection rate and its interval; at delta = 0 the false-rejection check."""
    n, k = len(cell.failures), sum(cell.failures)
    low, high = clopper_pearson(k, n)
    row = {"kind": cell.kind.value, "case": cell.case, "delta": cell.delta, "runs": n, "detections": k,
           "rate": k / n, "ci_low": low, "ci_high": high, "p_values": cell.p_values}
    if cell.delta == 0.0:
        binomial_p = float(stats.binom.sf(k - 1, n, alpha)) if k else 1.0
        probes = sum(p is not None and p <= PROBE_LEVEL for p in cell.p_values)
        row |= {"false_rejection_binomial_p": binomial_p, "flagged": binomial_p < FLAG_P,
                "probe_rate": probes / n}
    return row


def build_report(cells: Sequence[Cell], settings: PowerSettings, command: str, seconds: float) -> dict:
    """power.json's content: the rows, the settings and the provenance."""
    config = settings.config
    alpha = config.alpha
    return {
        "command": command,
        "seconds": seconds,
        "alpha": alpha,
        "seeds": list(settings.seeds),
        "T": settings.T,
        "grid": {kind.value: list(deltas) for kind, deltas in settings.grid.items()},
        "suite_config": {"chain_samples": config.chain_samples, "loss_timesteps": config.loss_timesteps,
                         "loss_batches": config.loss_batches, "loss_batch": config.loss_batch,
                         "data": {"mean": config.data.mean, "std": config.data.std}},
        "interval": f"{LEVEL:.0%} Clopper-Pearson",
        "versions": versions("scipy", "platform"),
        "rows": [row_of(cell, alpha) for cell in cells],
    }


KIND_NOTES = {
    "noise": "every step's noise sigma_t z multiplied by 1 + delta",
    "cancelling": ("sigma_t^2 x (1 + delta) for t > T/2 and x c below, c such that the chain's output law is "
                   "unchanged: the chain cases should stay at the false-rejection rate at every delta"),
    "loss": "the training loss multiplied by 1 + delta",
}


def to_markdown(report: dict) -> str:
    """power.md: the table of detection rates, kind by kind, with what was run."""
    alpha, rows = report["alpha"], report["rows"]
    seeds = report["seeds"]
    lines = [
        "# Power of the conformance suite's statistical cases",
        "",
        f"Generated by `{report['command']}` in {report['seconds']:.0f} s; seeds {seeds[0]}..{seeds[-1]} "
        f"({len(seeds)} per cell), alpha = {alpha:g} (family-wise per case, Holm), graded adapters of "
        f"`ddpm.conformance.graded` at T = {report['T']}, the suite's default sizes "
        f"({json.dumps(report['suite_config'])}). Versions: "
        + ", ".join(f"{name} {value}" for name, value in report["versions"].items()) + ". Never edited by hand.",
        "",
        f"A detection is a failed case; the interval is {report['interval']}. At delta = 0 each graded adapter is "
        "the reference: that row is the false-rejection rate, flagged when the binomial p-value of that many "
        f"failures at rate alpha is below {FLAG_P:g}; its last column, the fraction of runs whose Holm-adjusted "
        f"p-value is <= {PROBE_LEVEL:g}, is a finer view of calibration (Holm is conservative: it should not be much "
        f"above {PROBE_LEVEL:g}). The same seeds serve every delta; at delta = 0 the noise and cancelling adapters are "
        "the same adapter, so their rows are the same draws.",
        "",
    ]
    for kind in report["grid"]:
        lines += [f"## {kind}: {KIND_NOTES.get(kind, '')}", "",
                  f"| case | delta | detected | rate | interval | p <= {PROBE_LEVEL:g} (delta = 0) |",
                  "|---|---:|---:|---:|---|---:|"]
        for r in (r for r in rows if r["kind"] == kind):
            flag = " **FLAGGED**" if r.get("flagged") else ""
            probe = f"{r['probe_rate']:.2f}" if "probe_rate" in r else ""
            lines.append(f"| `{r['case']}` | {r['delta']:g} | {r['detections']}/{r['runs']} | {r['rate']:.2f}{flag} "
                         f"| [{r['ci_low']:.3f}, {r['ci_high']:.3f}] | {probe} |")
        lines.append("")
    if report.get("plot"):
        lines += [f"![detection rate against delta]({report['plot']})", ""]
    return "\n".join(lines)


def plot_power(report: dict, path: Path) -> bool:
    """power.png: detection rate against delta, one panel per kind, one line per case; False without matplotlib."""
    try:
        import matplotlib
    except ImportError:
        return False
    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    kinds = list(report["grid"])
    figure, axes = plt.subplots(1, len(kinds), figsize=(4.5 * len(kinds), 3.5), squeeze=False)
    for axis, kind in zip(axes[0], kinds, strict=True):
        rows = [r for r in report["rows"] if r["kind"] == kind]
        for case in dict.fromkeys(r["case"] for r in rows):
            mine = [r for r in rows if r["case"] == case]
            x = [r["delta"] for r in mine]
            y = [r["rate"] for r in mine]
            err = [[r["rate"] - r["ci_low"] for r in mine], [r["ci_high"] - r["rate"] for r in mine]]
            axis.errorbar(x, y, yerr=err, marker="o", capsize=3, label=case)
        axis.axhline(report["alpha"], color="grey", lw=0.8, ls="--", label="alpha")
        axis.set_title(kind)
        axis.set_xlabel("delta")
        axis.set_ylim(-0.05, 1.05)
        axis.legend(fontsize=6)
    axes[0][0].set_ylabel("detection rate")
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100, bbox_inches="tight", metadata={"Software": None})
    plt.close(figure)
    atomic_write_bytes(path, buffer.getvalue())
    return True


def write_power(out: Path, report: dict) -> tuple[Path, Path]:
    """power.png (when matplotlib is there), power.json and power.md in `out`, each written atomically."""
    out.mkdir(parents=True, exist_ok=True)
    if plot_power(report, out / "power.png"):
        report = {**report, "plot": "power.png"}
    atomic_write_text(out / "power.json", json.dumps(report, indent=1) + "\n")
    atomic_write_text(out / "power.md", to_markdown(report))
    return out / "power.json", out / "power.md"


def parse_grid(items: Sequence[str]) -> dict[ErrorKind, tuple[float, ...]]:
    """KIND=d1,d2,... items (each replacing that kind's default grid; the other kinds keep theirs)."""
    grid = dict(GRID)
    for item in items:
        name, sep, values = item.partition("=")
        try:
            kind = ErrorKind(name)
            deltas = tuple(float(v) for v in values.split(",") if v)
        except ValueError:
            raise ValueError(f"--grid {item!r} must look like KIND=d1,d2,... with KIND one of "
                             f"{', '.join(k.value for k in ErrorKind)}") from None
        if not sep or not deltas:
            raise ValueError(f"--grid {item!r} must look like KIND=d1,d2,... (at least one delta)")
        grid[kind] = deltas
    return grid


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run the study, write the report; exit 1 when a false-rejection rate is flagged."""
    parser = argparse.ArgumentParser(prog="python -m ddpm.studies.conformance_power",
                                     description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, required=True, help="folder of power.md and power.json")
    parser.add_argument("--seeds", type=int, default=SEEDS, help=f"seeds per cell (default {SEEDS})")
    parser.add_argument("--first-seed", type=int, default=0)
    parser.add_argument("--grid", action="append", default=[], help="KIND=d1,d2,... (repeatable)")
    parser.add_argument("--T", type=int, default=T_DEFAULT, help=f"T of the graded adapters (default {T_DEFAULT})")
    parser.add_argument("--no-progress", action="store_true")
    args = parser.parse_args(argv)
    try:
        grid = parse_grid(args.grid)
        if args.seeds < 1 or args.T < 2:
            raise ValueError(f"--seeds must be >= 1 and --T >= 2, got {args.seeds} and {args.T}")
        settings = PowerSettings(tuple(range(args.first_seed, args.first_seed + args.seeds)), grid, args.T)
        GradedAdapter(ErrorKind.CANCELLING, max(grid[ErrorKind.CANCELLING]), args.T)  # a delta c cannot cancel
    except ValueError as error:
        print(f"conformance_power: {error}", file=sys.stderr)
        return 2
    command = module_command("ddpm.studies.conformance_power", argv if argv is not None else sys.argv[1:])
    started = time.perf_counter()
    cells = run_study(settings, progress=not args.no_progress)
    report = build_report(cells, settings, command.strip(), time.perf_counter() - started)
    _, md_path = write_power(args.out, report)
    flagged = [f"{r['kind']}: {r['case']}" for r in report["rows"] if r.get("flagged")]
    print(f"conformance_power: wrote {md_path} ({report['seconds']:.0f} s)")
    if flagged:
        print("conformance_power: false-rejection rate above alpha for " + "; ".join(flagged), file=sys.stderr)
    return 1 if flagged else 0


if __name__ == "__main__":
    sys.exit(main())


__all__ = ["GRID", "Cell", "PowerSettings", "build_report", "clopper_pearson", "main", "parse_grid", "run_study",
           "statistical_cases", "to_markdown", "write_power"]
