"""Load adapters from `package.module:factory` specs and run every case on each (the suite's one entry point).

`run_suite(..., jobs=N)` runs the configurations in N worker processes (each loads its adapter from the spec again
and runs with one torch thread); results come back in the order of the specs, whatever the number of jobs. Every
spec is loaded in the calling process first, so a broken setup (`load_adapters`: one-line AdapterError) is reported
before any worker starts.
"""

from __future__ import annotations

import difflib
import importlib
import json
import multiprocessing
import os
import reprlib
import subprocess
import sys
import time
import traceback
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
from tqdm.auto import tqdm

from ddpm.conformance.adapters import SHIPPED
from ddpm.conformance.cases import (
    CaseResult,
    Context,
    Status,
    SuiteConfig,
    chain_cases,
    not_applicable,
    planned_cases,
    with_reproduction,
)
from ddpm.conformance.cases.results import root_cause
from ddpm.conformance.protocol import (
    Adapter,
    AdapterError,
    NotOffered,
    RejectedConfiguration,
    check_adapter,
    family_of,
    options_of,
    prediction_of,
)

REPRODUCTION_TIMEOUT_S = 300


@dataclass(frozen=True)
class Description:
    """What identifies one configuration of one implementation in a report (plain data: it crosses processes)."""

    name: str
    version: str
    family: str = "default"
    options: Mapping[str, Any] = field(default_factory=dict)
    timestep_base: int | None = None
    dtype: str = ""
    schedule: Mapping[str, Any] = field(default_factory=dict)
    prediction: str = "eps"
    variances: Mapping[str, str] = field(default_factory=dict)
    conventions: Mapping[str, str] = field(default_factory=dict)
    rejected: str | None = None  # the library's error for a configuration it refuses

    @property
    def implementation(self) -> str:
        """The implementation without its configuration, e.g. "diffusers DDPMScheduler"."""
        return self.name.partition("(")[0].strip()


def describe(adapter: Adapter | RejectedConfiguration) -> Description:
    """The `Description` of an adapter, or of a configuration its library rejected."""
    if isinstance(adapter, RejectedConfiguration):
        return Description(adapter.name, adapter.version, adapter.family, dict(adapter.options),
                           rejected=adapter.error)
    schedule = adapter.schedule
    return Description(
        adapter.name, adapter.version, family_of(adapter), options_of(adapter), int(adapter.timestep_base),
        str(adapter.dtype).replace("torch.", ""),
        {"kind": schedule.kind.value, "T": schedule.T, "rescaled": schedule.rescaled},
        prediction_of(adapter).value, {k: v.value for k, v in adapter.variances.items()},
        {c.value: note for c, note in adapter.conventions.items()})


@dataclass(frozen=True)
class AdapterRun:
    """The results of every case for one configuration, with what identifies the implementation."""

    spec: str
    description: Description
    results: tuple[CaseResult, ...]
    seconds: float

    @property
    def conformant(self) -> bool:
        """No case failed (pass, not applicable and declared conventions are conformant)."""
        return all(r.status is not Status.FAIL for r in self.results)


class AdapterUnavailable(AdapterError):
    """The adapter's module, or a package it needs, does not import, or its factory refused with AdapterError (a
    shipped third-party adapter without its extra): what `run_suite(..., skip_missing=True)` skips with a note."""


def _what_went_wrong(error: BaseException) -> str:
    """One line: the exception's type and first message line, with the file:line where it was raised."""
    if isinstance(error, SyntaxError):
        return f"{type(error).__name__}: {error.msg} ({error.filename}:{error.lineno})"
    lines = str(error).strip().splitlines()
    text = f"{type(error).__name__}: {lines[0]}" if lines else type(error).__name__
    frames = traceback.extract_tb(error.__traceback__)
    if frames and not frames[-1].filename.startswith("<") and frames[-1].filename != __file__:  # not importlib's
        text += f" ({frames[-1].filename}:{frames[-1].lineno})"
    return text


def _resolve(spec: str) -> tuple[str, str]:
    """(module, factory) of a `package.module:factory` spec or a shipped short name; AdapterError otherwise."""
    if ":" not in spec and spec not in SHIPPED:
        close = difflib.get_close_matches(spec, SHIPPED, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise AdapterError(f"adapter spec {spec!r} is not a shipped adapter ({', '.join(SHIPPED)}){hint}; any other "
                           "spec must look like package.module:factory")
    module_name, _, attribute = SHIPPED.get(spec, spec).partition(":")
    if not module_name or not attribute:
        raise AdapterError(f"adapter spec {spec!r} must look like package.module:factory")
    return module_name, attribute


def _with_current_folder_importable() -> None:
    """Put the current folder first on sys.path when it is not there, as `python -m ddpm` has it, so that the
    console script `ddpm` and `python -m ddpm` find the same adapter modules (worker processes inherit sys.path)."""
    here = os.getcwd()
    if here not in {os.path.abspath(entry or os.curdir) for entry in sys.path}:
        sys.path.insert(0, here)


def _import_factory(spec: str, module_name: str, attribute: str) -> Callable[[], Any]:
    if not module_name.startswith("ddpm."):
        _with_current_folder_importable()
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AdapterUnavailable(f"adapter {spec!r}: module {module_name!r} does not import: "
                                 f"{_what_went_wrong(error)}") from error
    except Exception as error:  # the adapter's own code is input here: a SyntaxError or NameError is bad input
        raise AdapterError(f"adapter {spec!r}: module {module_name!r} does not import: "
                           f"{_what_went_wrong(error)}") from error
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise AdapterError(f"adapter {spec!r}: module {module_name} has no callable {attribute!r}")
    return factory


def _checked(spec: str, attribute: str, made: object) -> list[Adapter | RejectedConfiguration]:
    """What a factory returned as a list of checked adapters; AdapterError naming the spec and the first problem."""
    single = not isinstance(made, Iterable) or hasattr(made, "q_sample") or isinstance(made, (str, bytes))
    try:
        items = [made] if single else list(made)  # type: ignore[call-overload]  # an Iterable here
    except Exception as error:
        raise AdapterError(f"adapter {spec!r}: iterating what {attribute}() returned raised "
                           f"{_what_went_wrong(error)}") from error
    if not items:
        raise AdapterError(f"adapter {spec!r}: {attribute}() returned no adapters")
    adapters: list[Adapter | RejectedConfiguration] = []
    for index, item in enumerate(items):
        where = (f"{attribute}() returned {reprlib.repr(made)}, not an adapter or a list of adapters" if single
                 else f"item {index} ({reprlib.repr(item)}) of the list {attribute}() returned is not an adapter")
        try:
            adapters.append(item if isinstance(item, RejectedConfiguration) else check_adapter(item))
        except AdapterError as error:
            raise AdapterError(f"adapter {spec!r}: {where}: {error}") from error
        except Exception as error:  # e.g. a property of the adapter that raises
            raise AdapterError(f"adapter {spec!r}: {where}: {_what_went_wrong(error)}") from error
    return adapters


def load_adapters(spec: str) -> list[Adapter | RejectedConfiguration]:
    """The adapters a `package.module:factory` spec (or a shipped short name) produces, with the configurations the
    library rejected in their place.

    Modules are looked up on sys.path with the current folder on it (as `python -m` has it, also under the console
    script). Any failure is an AdapterError naming the spec and what went wrong in one line (the exception type,
    message and file:line; the original exception is its `__cause__`): a spec that is neither a shipped name nor
    `module:factory`, a module that does not import (AdapterUnavailable for an ImportError), a missing factory, a
    factory that raises (its own AdapterError is AdapterUnavailable) or returns something other than adapters.
    """
    module_name, attribute = _resolve(spec)
    factory = _import_factory(spec, module_name, attribute)
    try:
        made = factory()
    except AdapterError as error:  # the factory's own refusal, e.g. a shipped adapter without its extra
        raise AdapterUnavailable(f"adapter {spec!r}: {_one_line(error)}") from error
    except Exception as error:
        raise AdapterError(f"adapter {spec!r}: calling {attribute}() raised {_what_went_wrong(error)}") from error
    return _checked(spec, attribute, made)


def _one_line(error: BaseException) -> str:
    lines = str(error).strip().splitlines()
    return lines[0] if lines else type(error).__name__


def _generic_snippet(spec: str, index: int, result: CaseResult) -> str | None:
    """A reproduction through the adapter itself (for adapters without their own `reproduction`)."""
    if result.operation is None or result.t is None or not result.inputs:
        return None
    op, *rest = result.operation.split(":")
    tensors = "\n".join(f"{k} = torch.tensor({v!r}, dtype=a.dtype).reshape(1, 1, 1, -1)"
                        for k, v in result.inputs.items())
    if op == "q_sample":
        call = "a.q_sample(x0, t, noise)"
    elif op == "q_posterior":
        call = "a.q_posterior(x0, xt, t)"
    elif op == "reverse_step" and rest:
        call = f"a.reverse_step(eps, xt, t, z, {rest[0]!r}{', v' if 'v' in result.inputs else ''})"
    else:
        return None
    return (f"import torch\nfrom ddpm.conformance.runner import load_adapters\n"
            f"a = load_adapters({spec!r})[{index}]\nt = {result.t}\n{tensors}\n"
            f"print({call})\nprint('oracle:', {result.expected!r})\n")


def _run_snippet(snippet: str) -> str:
    try:
        done = subprocess.run([sys.executable, "-c", snippet], capture_output=True, text=True,
                              timeout=REPRODUCTION_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return f"(timed out after {REPRODUCTION_TIMEOUT_S} s)"
    text = (done.stdout + done.stderr).strip()
    lines = text.splitlines()
    if len(lines) > 20:
        text = "\n".join(lines[:8] + ["..."] + lines[-10:])
    return f"{text}\n(exit status {done.returncode})"


SAME_CAUSE = "(not run: an earlier failure of this configuration with the same root cause ran its snippet)"


def _reproduce(adapter: Adapter, spec: str, index: int, result: CaseResult, run_it: bool,
               causes_run: set[tuple[str, str]]) -> CaseResult:
    """`result` with its reproduction snippet; the snippet runs (with `run_it`) once per root cause (`root_cause`)."""
    if result.status is not Status.FAIL:
        return result
    cause = root_cause(result, list(adapter.variances))
    run_it = run_it and cause not in causes_run
    snippet = None
    if hasattr(adapter, "reproduction") and result.operation is not None:
        try:
            snippet = adapter.reproduction(result.operation, result.t, result.inputs or {})
        except Exception as error:  # a broken snippet writer must not lose the result
            snippet = f"# the adapter's reproduction() raised {type(error).__name__}: {error}"
    if snippet is None:
        snippet = _generic_snippet(spec, index, result)
    output = None
    if snippet and not snippet.startswith("#"):
        if run_it:
            output = _run_snippet(snippet)
            causes_run.add(cause)
        elif cause in causes_run:
            output = SAME_CAUSE
    return with_reproduction(result, snippet, output)


def _run_case(name: str, thunk) -> CaseResult:
    try:
        return thunk()
    except NotOffered as why:
        return not_applicable(name, str(why))
    except Exception as error:  # an implementation that crashes fails the case; the suite goes on
        return CaseResult(name, Status.FAIL, "", f"raised {type(error).__name__}: {error}".splitlines()[0])


def run_adapter(adapter: Adapter | RejectedConfiguration, config: SuiteConfig, spec: str = "", index: int = 0,
                run_reproductions: bool = False, progress: bool = True,
                only: Collection[str] | None = None) -> AdapterRun:
    """Every case for one configuration, in report order (one "not applicable" row for a rejected one); with `only`,
    just the cases of those names."""
    start = time.perf_counter()
    if isinstance(adapter, RejectedConfiguration):
        why = f"the library rejects this configuration: {adapter.error}"
        return AdapterRun(spec, describe(adapter), (replace(not_applicable("configuration", why), seconds=0.0),), 0.0)
    ctx = Context(adapter, config)
    results = []
    causes_run: set[tuple[str, str]] = set()
    plan: list[tuple[str, Callable[[], CaseResult], str | None]] = [
        (name, thunk, None) for name, thunk in chain_cases(ctx)
    ]
    plan = planned_cases(ctx) + plan
    if only is not None:
        plan = [entry for entry in plan if entry[0] in only]
    for name, thunk, needs in tqdm(plan, desc=adapter.name[:40], disable=not progress, leave=False):
        if needs is not None and not hasattr(adapter, needs):
            results.append(replace(not_applicable(name, f"the adapter has no {needs}()"), seconds=0.0))
            continue
        started = time.perf_counter()
        with np.errstate(all="ignore"):
            result = _run_case(name, thunk)
        result = replace(result, seconds=round(time.perf_counter() - started, 3))
        results.append(_reproduce(adapter, spec, index, result, run_reproductions, causes_run))
    return AdapterRun(spec, describe(adapter), tuple(results), time.perf_counter() - start)


def _run_unit(spec: str, index: int, config: SuiteConfig, run_reproductions: bool) -> AdapterRun:
    """One configuration in a worker process: load it from its spec again and run it on one torch thread."""
    import torch

    torch.set_num_threads(1)
    return run_adapter(load_adapters(spec)[index], config, spec, index, run_reproductions, progress=False)


def run_suite(specs: Sequence[str], config: SuiteConfig | None = None, run_reproductions: bool = False,
              progress: bool = True, skip_missing: bool = False, jobs: int = 1) -> tuple[list[AdapterRun], list[str]]:
    """Run the suite on every configuration of every spec; returns the runs (in spec order) and the specs skipped.

    With `skip_missing`, a spec that is `AdapterUnavailable` (its module does not import, or its factory refuses) is
    skipped with a note instead of raising (the shipped third-party adapters when their extra is not installed); any
    other AdapterError is raised. Every spec is loaded here, before any worker starts, so a broken setup is reported
    before any case runs. `jobs` > 1 runs configurations in that many processes.
    """
    config = config or SuiteConfig()
    units, skipped = [], []
    for spec in specs:
        try:
            adapters = load_adapters(spec)
        except AdapterUnavailable as error:
            if skip_missing:
                skipped.append(str(error))  # names the spec
                continue
            raise
        units += [(SHIPPED.get(spec, spec), index, adapter) for index, adapter in enumerate(adapters)]
    if jobs <= 1:
        return [run_adapter(adapter, config, spec, index, run_reproductions, progress)
                for spec, index, adapter in units], skipped
    context = multiprocessing.get_context("spawn")
    with ProcessPoolExecutor(max_workers=jobs, mp_context=context) as pool:
        futures = [pool.submit(_run_unit, spec, index, config, run_reproductions) for spec, index, _ in units]
        done = tqdm(futures, desc="configurations", disable=not progress)
        return [future.result() for future in done], skipped


def json_ready(value):
    """Floats that JSON can hold (inf and NaN as strings)."""
    if isinstance(value, float) and not np.isfinite(value):
        return str(value)
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_ready(v) for v in value]
    return value


def load_report(path) -> dict:
    """A conformance.json written by `ddpm.conformance.report.write_report`."""
    with open(path) as handle:
        return json.load(handle)


__all__ = ["SAME_CAUSE", "AdapterRun", "AdapterUnavailable", "Description", "describe", "load_adapters", "run_adapter",
           "run_suite"]
