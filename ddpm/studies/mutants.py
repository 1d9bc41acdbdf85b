"""`nox -s mutants`: how many plausible bugs in the math core the verify suite catches (mutmut 3), in reports/mutants.

Usage: python -m ddpm.studies.mutants [--sample N] [--seed S] [--max-children K] [--out DIR]
                                      [--skip-run | --report-only]

Why mutmut (not cosmic-ray): mutmut 3 records, in one run of the suite, which tests reach each function, and runs
only those tests on that function's mutants, each in a process forked from a server that has already imported
torch and collected the tests. cosmic-ray starts a fresh test command per mutant (torch's import alone is ~2 s
here) and leaves test selection to the user. The configuration is `[tool.mutmut]` in pyproject.toml: the files
mutated (schedules, diffusion, kernels, bound, losses, samplers, optimal_variance, update_rules for the EMA
and the learning rate, bound_statistics for the bound's estimators, pixels for the data scaling) and the lines not
mutated (those that only build an error message).

Phases:
1. `mutmut run` generates every mutant and runs the suite once to map functions to tests (its `slow` tests
   deselected: see phase 3).
2. Mutants are run: all of them, or with --sample N a uniform random sample of N (seeded), the score then being
   an estimate with a 95% Wilson interval. mutmut stops a mutant's tests at the first failure (a kill).
3. Every mutant that survived phase 2 (or that no fast test reached) is run again against the `slow` tests, which
   phase 1 deselected (end-to-end training, compile, FID, CLI): MUTANT_UNDER_TEST=name pytest -m slow -x; those the
   notes (below) already call equivalent or CUDA-only are not (no CPU test can kill them).
   --skip-run starts here from the last run's mutants/ (the same --sample and --seed pick the same mutants).
4. Every `killed_by` test of the notes is run on its mutant (the current tests/ copied into mutants/ first); the
   confirmed ones count as killed by the suite as it is now (the report gives the score before them too).
5. The report: the score (killed / (mutants run - equivalent)), per file, and for every survivor its diff and
   either the test that now kills it or the argument that it is equivalent, read from ddpm/studies/mutants_notes.toml:
   [equivalent] name = "argument" (no input tells it from the original), [cuda_only] name = "argument" (identical
   on the CPU, e.g. a dropped device= argument: only `nox -s gpu` can kill it), [killed_by] name = "test id" (a test
   written after the run; the next run confirms it). Equivalent and CUDA-only mutants are left out of the score and
   counted. A survivor without an entry is listed as open.

Exit status: 0 (the report is the result; a survivor is a finding, not a crash); 2 on bad arguments.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import math
import os
import random
import subprocess
import sys
import time
from collections import Counter
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[2]
MUTANTS_DIR = REPO / "mutants"
NOTES = Path(__file__).with_name("mutants_notes.toml")
MUTMUT = [sys.executable, "-m", "mutmut"]
NO_MATCH = "zzz-no-mutant-has-this-name"  # phase 1 only: mutmut generates and maps, then finds nothing to run
OUTCOMES = ("killed", "killed (slow test)", "killed (new test)", "equivalent", "cuda only", "survived", "not run")
KILLED = {"killed", "caught by type check", "timeout", "segfault"}  # a timeout or crash is a detected bug too


def _mutmut(*args: str, check: bool = True) -> str:
    """Run mutmut in the repository; its combined output (ProcessError with the tail if `check` and it failed)."""
    proc = subprocess.run([*MUTMUT, *args], cwd=REPO, capture_output=True, text=True)
    out = (proc.stdout or "") + (proc.stderr or "")
    if check and proc.returncode != 0:
        raise SystemExit(f"mutants: `mutmut {' '.join(args[:3])} ...` failed (exit {proc.returncode}):\n{out[-3000:]}")
    return out


def all_mutant_names() -> list[str]:
    """Every generated mutant, from mutmut's per-file .meta records (sorted)."""
    names: list[str] = []
    for meta in sorted(MUTANTS_DIR.rglob("*.py.meta")):
        names.extend(json.loads(meta.read_text())["exit_code_by_key"])
    return sorted(names)


def statuses() -> dict[str, str]:
    """mutant name -> mutmut's status ("killed", "survived", "no tests", "not checked", ...)."""
    out: dict[str, str] = {}
    for line in _mutmut("results", "--all", "true").splitlines():
        name, sep, status = line.strip().rpartition(": ")
        if sep and name.startswith("ddpm."):
            out[name] = status
    return out


def generate_and_map() -> float:
    """Phase 1. Returns its seconds."""
    start = time.perf_counter()
    out = _mutmut("run", "--max-children", "1", NO_MATCH, check=False)
    if not (MUTANTS_DIR / "mutmut-stats.json").exists() or not all_mutant_names():
        raise SystemExit(f"mutants: mutmut did not generate mutants or map the tests:\n{out[-3000:]}")
    return time.perf_counter() - start


def run_mutants(names: list[str], max_children: int) -> float:
    """Phase 2 over `names` (in chunks, so the command line stays short). Returns its seconds."""
    start = time.perf_counter()
    for i in range(0, len(names), 200):
        _mutmut("run", "--max-children", str(max_children), *names[i:i + 200])
    return time.perf_counter() - start


def _failed_test(output: str) -> str | None:
    for line in output.splitlines():
        if line.startswith("FAILED "):
            return line.split()[1]
    return None


def slow_test_phase(names: list[str]) -> tuple[dict[str, str | None], float]:
    """Phase 3: each name against the `slow` tests; name -> the slow test that kills it, or None."""
    start = time.perf_counter()
    result: dict[str, str | None] = {}
    for name in names:
        env = {**os.environ, "MUTANT_UNDER_TEST": name}
        proc = subprocess.run(
            [sys.executable, "-m", "pytest", "-m", "slow", "-x", "-q", "--hypothesis-profile=ci", "-p",
             "no:cacheprovider"],
            cwd=MUTANTS_DIR, env=env, capture_output=True, text=True,
        )
        out = proc.stdout + proc.stderr
        result[name] = (_failed_test(out) or f"pytest exit {proc.returncode}") if proc.returncode != 0 else None
    return result, time.perf_counter() - start


def confirm_killed_by(killed_by: dict[str, str], names: list[str]) -> dict[str, bool]:
    """For each mutant of `names` the notes say a later test kills: run that test on it (the current tests/ copied
    into mutants/tests first); name -> whether the test failed, i.e. killed it."""
    import shutil

    for source in (REPO / "tests").rglob("*.py"):
        target = MUTANTS_DIR / "tests" / source.relative_to(REPO / "tests")
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(source, target)
    confirmed = {}
    for name in names:
        if name not in killed_by:
            continue
        env = {**os.environ, "MUTANT_UNDER_TEST": name}
        proc = subprocess.run([sys.executable, "-m", "pytest", "-x", "-q", "--hypothesis-profile=ci", "-p",
                               "no:cacheprovider", killed_by[name]], cwd=MUTANTS_DIR, env=env, capture_output=True,
                              text=True)
        confirmed[name] = proc.returncode == 1  # 1: a test failed (2-5: usage or collection errors prove nothing)
    return confirmed


def wilson(k: int, n: int, z: float = 1.959963984540054) -> tuple[float, float]:
    """95% Wilson score interval for a binomial proportion k / n."""
    if n == 0:
        return math.nan, math.nan
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return centre - half, centre + half


def _file_of(name: str) -> str:
    """The file of a mutant: ddpm.core.diffusion.x_name__mutmut_1 -> ddpm/core/diffusion.py."""
    return "/".join(name.split(".")[:-1]) + ".py"


def load_notes() -> dict[str, dict[str, str]]:
    notes = tomllib.loads(NOTES.read_text()) if NOTES.exists() else {}
    return {key: dict(notes.get(key, {})) for key in ("equivalent", "cuda_only", "killed_by")}


def build_record(run_names: list[str], total: int, status: dict[str, str], slow: dict[str, str | None],
                 seconds: dict[str, float], args, confirmed: dict[str, bool]) -> dict:
    notes = load_notes()
    outcome: dict[str, str] = {}
    for name in run_names:
        s = status.get(name, "not checked")
        if s in KILLED:
            outcome[name] = "killed"
        elif name in slow and slow[name] is not None:
            outcome[name] = "killed (slow test)"
        elif confirmed.get(name):
            outcome[name] = "killed (new test)"
        elif name in notes["equivalent"]:
            outcome[name] = "equivalent"
        elif name in notes["cuda_only"]:
            outcome[name] = "cuda only"
        elif s == "not checked":
            outcome[name] = "not run"
        else:
            outcome[name] = "survived"
    counts = Counter(outcome.values())
    killed = counts["killed"] + counts["killed (slow test)"] + counts["killed (new test)"]
    scored = killed + counts["survived"]
    low, high = wilson(killed, scored)
    killed_as_run = counts["killed"] + counts["killed (slow test)"]  # before the tests written for survivors
    survivors = []
    for name in sorted(n for n, o in outcome.items() if o in ("survived", "equivalent", "cuda only",
                                                              "killed (new test)")):
        survivors.append({
            "name": name, "file": _file_of(name), "mutmut_status": status.get(name), "outcome": outcome[name],
            "diff": _mutmut("show", name, check=False).split("\n", 1)[-1].strip(),
            "equivalent_because": notes["equivalent"].get(name) or notes["cuda_only"].get(name),
            "now_killed_by": notes["killed_by"].get(name),
        })
    per_file: dict[str, Counter] = {}
    for name, o in outcome.items():
        per_file.setdefault(_file_of(name), Counter())[o] += 1
    return {
        "generated": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "command": "nox -s mutants -- " + " ".join(sys.argv[1:]),
        "tool": "mutmut " + _mutmut("--version", check=False).strip().split()[-1],
        "mutants_generated": total, "mutants_run": len(run_names),
        "sample": args.sample, "seed": args.seed, "max_children": args.max_children,
        "counts": dict(counts), "killed": killed, "scored": scored,
        "score": killed / scored if scored else math.nan, "score_95": [low, high],
        "killed_as_run": killed_as_run, "score_as_run": killed_as_run / scored if scored else math.nan,
        "per_file": {f: dict(c) for f, c in sorted(per_file.items())},
        "seconds": seconds, "survivors": survivors,
        "killed_by_slow_tests": {n: t for n, t in sorted(slow.items()) if t},
    }


def write_report(record: dict, out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "mutants.json").write_text(json.dumps(record, indent=2) + "\n")
    r = record
    sampled = r["sample"] and r["mutants_run"] < r["mutants_generated"]
    lines = [
        "# Mutation score of the verify suite over the math core",
        "",
        f"Generated {r['generated']} by `{r['command']}` ({r['tool']}, {r['max_children']} worker(s)). "
        "Written by ddpm/studies/mutants.py; do not edit.",
        "",
        f"**Score: {r['killed']} / {r['scored']} = {100 * r['score']:.1f}%** of the non-equivalent mutants run are "
        f"killed by the suite as it is now (95% Wilson interval {100 * r['score_95'][0]:.1f}-"
        f"{100 * r['score_95'][1]:.1f}%); by the suite as run, before the tests written for its survivors: "
        f"{r['killed_as_run']} / {r['scored']} = {100 * r['score_as_run']:.1f}%.",
        "",
        (f"A uniform random sample of {r['mutants_run']} of the {r['mutants_generated']} mutants (seed {r['seed']}); "
         "the interval is that of the whole population's score." if sampled else
         f"All {r['mutants_generated']} mutants were run."),
        "",
        "Outcomes: " + ", ".join(f"{k} {v}" for k, v in sorted(r["counts"].items())) + ". "
        "Killed: a fast test failed, crashed or timed out (mutmut); killed (slow test): it survived the fast tests "
        "and a `slow` test failed; equivalent: no input can tell it from the original (argument below); cuda only: "
        "identical on the CPU (argument below), for `nox -s gpu` to kill. Equivalent and CUDA-only mutants are not "
        "in the score.",
        "",
        "Seconds: " + ", ".join(f"{k} {v:.0f}" for k, v in r["seconds"].items()) + ".",
        "",
        "| file | " + " | ".join(OUTCOMES) + " |",
        "|---" * (len(OUTCOMES) + 1) + "|",
    ]
    for f, c in r["per_file"].items():
        lines.append(f"| {f} | " + " | ".join(str(c.get(k, 0)) for k in OUTCOMES) + " |")
    lines += ["", "## Survivors", ""]
    if not r["survivors"]:
        lines.append("None.")
    for s in r["survivors"]:
        verdict = (f"{s['outcome']}: {s['equivalent_because']}" if s["outcome"] in ("equivalent", "cuda only") else
                   f"killed by `{s['now_killed_by']}`, written after the run (confirmed: that test fails on this "
                   "mutant)" if s["outcome"] == "killed (new test)" else
                   f"open: `{s['now_killed_by']}` does not kill it" if s["now_killed_by"] else
                   "open: no test kills it yet")
        lines += [f"### `{s['name']}` ({s['file']})", "", verdict, "", "```diff", s["diff"], "```", ""]
    (out / "mutants.md").write_text("\n".join(lines).rstrip() + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m ddpm.studies.mutants", description=__doc__.split("\n")[0])
    parser.add_argument("--sample", type=int, default=0, help="run a seeded random sample of N mutants (0: all)")
    parser.add_argument("--seed", type=int, default=0, help="the sample's seed")
    parser.add_argument("--max-children", type=int, default=max(1, (os.cpu_count() or 1)), help="mutmut workers")
    parser.add_argument("--out", default="reports/mutants", help="report folder")
    parser.add_argument("--skip-run", action="store_true", help="phases 3 to 5 only, on the last run's mutants/")
    parser.add_argument("--report-only", action="store_true", help="rewrite the report from the last run's state")
    args = parser.parse_args(argv)
    if args.sample < 0 or args.max_children < 1:
        parser.error("--sample must be >= 0 and --max-children >= 1")
    if args.skip_run and args.report_only:
        parser.error("--skip-run and --report-only exclude each other")
    seconds: dict[str, float] = {}
    state_file = MUTANTS_DIR / "ddpm-mutants-run.json"
    if args.report_only:
        if not state_file.exists():
            parser.error(f"--report-only: no earlier run ({state_file.relative_to(REPO)} is missing)")
        state = json.loads(state_file.read_text())
        run_names, slow, seconds = state["run_names"], state["slow"], state["seconds"]
        args.sample, args.seed, args.max_children = state["sample"], state["seed"], state["max_children"]
    else:
        if args.skip_run:
            state = json.loads(state_file.read_text()) if state_file.exists() else {}
            seconds = {k: v for k, v in state.get("seconds", {}).items() if k != "slow_tests"}
            if "mutants" not in seconds:  # a run stopped after phase 2: its length from mutmut's file times
                stats = (MUTANTS_DIR / "mutmut-stats.json").stat().st_mtime
                seconds["mutants"] = max(m.stat().st_mtime for m in MUTANTS_DIR.rglob("*.py.meta")) - stats
        else:
            seconds["generate_and_map"] = generate_and_map()
        names = all_mutant_names()
        run_names = sorted(random.Random(args.seed).sample(names, args.sample)) if 0 < args.sample < len(names) \
            else names
        if not args.skip_run:
            print(f"mutants: {len(names)} generated; running {len(run_names)} with {args.max_children} worker(s)",
                  flush=True)
            seconds["mutants"] = run_mutants(run_names, args.max_children)
            state_file.write_text(json.dumps({"run_names": run_names, "slow": {}, "seconds": seconds,
                                              "sample": args.sample, "seed": args.seed,
                                              "max_children": args.max_children}))
        status = statuses()
        notes = load_notes()
        candidates = [n for n in run_names if status.get(n) in ("survived", "no tests")
                      and n not in notes["equivalent"] and n not in notes["cuda_only"]]
        print(f"mutants: {len(candidates)} survived the fast tests (less those the notes explain); running the slow "
              "tests on each", flush=True)
        slow, seconds["slow_tests"] = slow_test_phase(candidates)
        state_file.write_text(json.dumps({"run_names": run_names, "slow": slow, "seconds": seconds,
                                          "sample": args.sample, "seed": args.seed,
                                          "max_children": args.max_children}))
    status = statuses()
    candidates = [n for n in run_names if status.get(n) in ("survived", "no tests") and not (slow.get(n))]
    confirmed = confirm_killed_by(load_notes()["killed_by"], candidates)
    record = build_record(run_names, len(all_mutant_names()), status, slow, seconds, args, confirmed)
    write_report(record, REPO / args.out)
    print(f"mutants: score {record['killed']} / {record['scored']} = {100 * record['score']:.1f}% "
          f"({len(record['survivors'])} survivors listed); {args.out}/mutants.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
