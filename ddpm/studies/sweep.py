"""Rerun the `statistical` tests over many seed bases; print each test's observed false-failure rate next to ALPHA.

    python -m ddpm.studies.sweep [--seeds N] [--first-base B] [--spacing S] [--json PATH] [pytest arguments ...]

(`nox -s sweep -- ...` runs this.) N defaults to $DDPM_SWEEP_SEEDS or 50. One pytest process: a plugin
parametrizes the `seed_base` fixture of every test marked `statistical` over the bases B, B + S, ...,
B + (N - 1) S (default B = S = 100000: larger than any offset a test adds, so no two runs share a seed, and
the default run's base 0 is not among them), so each test runs N times with fresh draws. Extra arguments go
to pytest (e.g. `-k monte_carlo`).

Each statistical test declares its family-wise error rate as `@pytest.mark.statistical(alpha=ALPHA)` and records
the smallest Holm/Bonferroni-adjusted p-value of its family (`stat_checks.Family.check(record_property)`). For
every test the table shows: ALPHA, failures / runs, the one-sided binomial p-value of seeing that many failures
if the true rate were ALPHA, and - a finer view of calibration, since failures at ALPHA = 1e-3 are rare - the
fraction of runs whose min adjusted p-value is <= 0.05, next to 0.05 (Holm and Bonferroni are conservative, so
it should not be much above 0.05). A rate significantly above its nominal value (binomial p < 0.01) is flagged
and makes the exit status 1. To reproduce one run: DDPM_TEST_SEED_BASE=<base> pytest <test id without the seed>.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import sys
import time
from dataclasses import dataclass, field

import pytest
import scipy
from scipy import stats

FLAG_P = 0.01  # a rate whose binomial p-value is below this is flagged
PROBE_LEVEL = 0.05  # the finer calibration view: fraction of runs with min adjusted p <= 0.05
SEED_ID = re.compile(r"sweepbase\d+")


@dataclass
class SweepRecord:
    """Outcomes of one statistical test over the sweep's seed bases."""

    alpha: float | None
    runs: int = 0
    failures: int = 0
    failed_bases: list[int] = field(default_factory=list)
    min_adjusted_p: list[float] = field(default_factory=list)


def _base_test_id(nodeid: str) -> str:
    """The node id without the sweep's seed parameter (tests/x.py::name[beta-sweepbase5] -> tests/x.py::name[beta])."""
    head, bracket, rest = nodeid.partition("[")
    if not bracket:
        return nodeid
    params = [p for p in rest.rstrip("]").split("-") if not SEED_ID.fullmatch(p)]
    return f"{head}[{'-'.join(params)}]" if params else head


class SweepPlugin:
    """Parametrizes `seed_base` of statistical tests over the bases and records outcomes per test."""

    def __init__(self, bases: list[int]) -> None:
        self.bases = bases
        self.records: dict[str, SweepRecord] = {}
        self.errors: list[str] = []

    def pytest_generate_tests(self, metafunc: pytest.Metafunc) -> None:
        if metafunc.definition.get_closest_marker("statistical") and "seed_base" in metafunc.fixturenames:
            metafunc.parametrize("seed_base", self.bases, ids=[f"sweepbase{b}" for b in self.bases])

    @pytest.hookimpl(hookwrapper=True)
    def pytest_runtest_makereport(self, item: pytest.Item, call):
        outcome = yield
        report = outcome.get_result()
        marker = item.get_closest_marker("statistical")
        callspec = getattr(item, "callspec", None)
        if marker is None or callspec is None or "seed_base" not in callspec.params:
            return
        if report.when == "setup" and not report.failed:
            return
        if report.when == "teardown" and not report.failed:
            return
        key = _base_test_id(item.nodeid)
        record = self.records.setdefault(key, SweepRecord(alpha=marker.kwargs.get("alpha")))
        base = int(callspec.params["seed_base"])
        if report.when == "call":
            record.runs += 1
            properties = dict(report.user_properties)
            if "min_adjusted_p" in properties:
                record.min_adjusted_p.append(float(properties["min_adjusted_p"]))
            if report.failed:
                record.failures += 1
                record.failed_bases.append(base)
        elif report.failed:  # a setup or teardown error is not a statistical failure: list it separately
            self.errors.append(f"{item.nodeid} ({report.when})")


def _binomial_p(k: int, n: int, rate: float) -> float:
    """P(K >= k) for K ~ Binomial(n, rate): how surprising k or more events are at the nominal rate."""
    return float(stats.binom.sf(k - 1, n, rate)) if k > 0 else 1.0


def summarise(records: dict[str, SweepRecord], bases: list[int]) -> tuple[list[dict], bool]:
    """Rows of the summary table and whether any rate is flagged."""
    rows, flagged = [], False
    for name, r in sorted(records.items()):
        row: dict[str, object] = {"test": name, "alpha": r.alpha, "runs": r.runs, "failures": r.failures,
                                  "failed_bases": r.failed_bases}
        row["failure_rate"] = r.failures / r.runs if r.runs else float("nan")
        binomial_p = _binomial_p(r.failures, r.runs, r.alpha) if r.alpha else float("nan")
        row["binomial_p"] = binomial_p
        probes = sum(p <= PROBE_LEVEL for p in r.min_adjusted_p)
        row["probe_runs"] = len(r.min_adjusted_p)
        row["probe_rate"] = probes / len(r.min_adjusted_p) if r.min_adjusted_p else float("nan")
        probe_binomial_p = _binomial_p(probes, len(r.min_adjusted_p), PROBE_LEVEL) if r.min_adjusted_p else 1.0
        row["probe_binomial_p"] = probe_binomial_p
        row_flagged = bool((r.alpha and binomial_p < FLAG_P) or probe_binomial_p < FLAG_P)
        row["flagged"] = row_flagged
        flagged |= row_flagged
        rows.append(row)
    return rows, flagged


def print_table(rows: list[dict], n_bases: int) -> None:
    """The per-test table: observed rates next to their nominal values."""
    width = max([len(r["test"]) for r in rows] + [4])
    print(f"\nSweep over {n_bases} seed bases (runs per test; failures at the test's ALPHA; p<=0.05 = runs whose "
          f"min adjusted p-value <= {PROBE_LEVEL}):")
    print(f"{'test':<{width}}  {'ALPHA':>7}  {'failures':>9}  {'rate':>7}  {'binom p':>8}  "
          f"{'p<=0.05':>8}  {'vs':>4}  {'binom p':>8}")
    for r in rows:
        alpha = f"{r['alpha']:.0e}" if r["alpha"] else "?"
        print(
            f"{r['test']:<{width}}  {alpha:>7}  {r['failures']:>4}/{r['runs']:<4}  {r['failure_rate']:>7.3f}  "
            f"{r['binomial_p']:>8.3g}  {r['probe_rate']:>8.3f}  {PROBE_LEVEL:>4}  {r['probe_binomial_p']:>8.3g}"
            + ("  FLAGGED" if r["flagged"] else "")
        )
        for base in r["failed_bases"]:
            print(f"    failed at base {base}: DDPM_TEST_SEED_BASE={base} pytest '{r['test']}'")


def main(argv: list[str] | None = None) -> int:
    """Parse arguments, run pytest once with the sweep plugin, print the table; exit 1 if a rate is flagged."""
    parser = argparse.ArgumentParser(prog="python -m ddpm.studies.sweep", description=__doc__.split("\n")[0])
    parser.add_argument("--seeds", type=int, default=int(os.environ.get("DDPM_SWEEP_SEEDS", "50")))
    parser.add_argument("--first-base", type=int, default=100_000)
    parser.add_argument("--spacing", type=int, default=100_000)
    parser.add_argument("--json", default=None, help="also write the table and run details to this JSON file")
    args, pytest_args = parser.parse_known_args(argv)
    if args.seeds < 1:
        parser.error(f"--seeds must be >= 1, got {args.seeds}")
    bases = [args.first_base + i * args.spacing for i in range(args.seeds)]
    if os.getcwd() not in sys.path:  # as `python -m pytest` does: the project is importable from its root
        sys.path.insert(0, os.getcwd())
    plugin = SweepPlugin(bases)
    command = ["-m", "statistical", "-q", "--tb=line", "-p", "no:cacheprovider", *pytest_args]
    started = time.perf_counter()
    exit_code = pytest.main(command, plugins=[plugin])
    elapsed = time.perf_counter() - started
    if exit_code not in (pytest.ExitCode.OK, pytest.ExitCode.TESTS_FAILED):
        print(f"sweep: pytest stopped with {exit_code!r}", file=sys.stderr)
        return int(exit_code)
    if not plugin.records:
        print("sweep: no statistical test taking `seed_base` was selected", file=sys.stderr)
        return 1
    rows, flagged = summarise(plugin.records, bases)
    print_table(rows, len(bases))
    if plugin.errors:
        print("\nSetup/teardown errors (not counted as statistical failures):\n  " + "\n  ".join(plugin.errors))
    print(f"\n{len(bases)} bases x {len(rows)} tests in {elapsed:.0f} s")
    if args.json:
        import numpy
        import torch

        from ddpm.runtime.provenance import running_argv

        details = {
            "command": running_argv(),
            "pytest_arguments": command,
            "bases": bases,
            "seconds": elapsed,
            "python": platform.python_version(),
            "numpy": numpy.__version__,
            "scipy": scipy.__version__,
            "torch": torch.__version__,
            "machine": platform.platform(),
            "rows": rows,
            "errors": plugin.errors,
        }
        with open(args.json, "w") as handle:
            json.dump(details, handle, indent=1)
    return 1 if flagged or plugin.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())


__all__ = ["SweepPlugin", "SweepRecord", "main", "summarise"]
