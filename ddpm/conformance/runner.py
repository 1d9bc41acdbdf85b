"""Load adapters from `package.module:factory` specs and run every case on each (the suite's one entry point)."""

from __future__ import annotations

import importlib
import json
import subprocess
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

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
from ddpm.conformance.protocol import Adapter, AdapterError, NotOffered, RejectedConfiguration, check_adapter

REPRODUCTION_TIMEOUT_S = 300


@dataclass(frozen=True)
class AdapterRun:
    """The results of every case for one adapter, with what identifies the implementation."""

    spec: str
    adapter: Adapter
    results: tuple[CaseResult, ...]
    seconds: float

    @property
    def conformant(self) -> bool:
        """No case failed (pass, not applicable and declared conventions are conformant)."""
        return all(r.status is not Status.FAIL for r in self.results)


def load_adapters(spec: str) -> list[Adapter | RejectedConfiguration]:
    """The adapters a `package.module:factory` spec (or a shipped short name) produces, with the configurations the
    library refused (`RejectedConfiguration`, passed through unchecked); AdapterError otherwise."""
    spec = SHIPPED.get(spec, spec)
    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise AdapterError(f"adapter spec {spec!r} must look like package.module:factory")
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise AdapterError(f"adapter module {module_name!r} does not import: {error}") from None
    factory = getattr(module, attribute, None)
    if not callable(factory):
        raise AdapterError(f"{module_name} has no callable {attribute!r}")
    made = factory()
    adapters = list(made) if isinstance(made, Iterable) and not hasattr(made, "q_sample") else [made]
    if not adapters:
        raise AdapterError(f"{spec} returned no adapters")
    return [a if isinstance(a, RejectedConfiguration) else check_adapter(a) for a in adapters]


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


def _reproduce(adapter: Adapter, spec: str, index: int, result: CaseResult, run_it: bool) -> CaseResult:
    if result.status is not Status.FAIL:
        return result
    snippet = None
    if hasattr(adapter, "reproduction") and result.operation is not None:
        try:
            snippet = adapter.reproduction(result.operation, result.t, result.inputs or {})
        except Exception as error:  # a broken snippet writer must not lose the result
            snippet = f"# the adapter's reproduction() raised {type(error).__name__}: {error}"
    if snippet is None:
        snippet = _generic_snippet(spec, index, result)
    output = _run_snippet(snippet) if (run_it and snippet and not snippet.startswith("#")) else None
    return with_reproduction(result, snippet, output)


def _run_case(name: str, thunk) -> CaseResult:
    try:
        return thunk()
    except NotOffered as why:
        return not_applicable(name, str(why))
    except Exception as error:  # an implementation that crashes fails the case; the suite goes on
        return CaseResult(name, Status.FAIL, "", f"raised {type(error).__name__}: {error}".splitlines()[0])


def run_adapter(adapter: Adapter, config: SuiteConfig, spec: str = "", index: int = 0,
                run_reproductions: bool = False, progress: bool = True) -> AdapterRun:
    """Every case for one adapter, in report order."""
    start = time.perf_counter()
    ctx = Context(adapter, config)
    results = []
    plan: list[tuple[str, Callable[[], CaseResult], str | None]] = [
        (name, thunk, None) for name, thunk in chain_cases(ctx)
    ]
    plan = planned_cases(ctx) + plan
    for name, thunk, needs in tqdm(plan, desc=adapter.name[:40], disable=not progress, leave=False):
        if needs is not None and not hasattr(adapter, needs):
            results.append(not_applicable(name, f"the adapter has no {needs}()"))
            continue
        with np.errstate(all="ignore"):
            result = _run_case(name, thunk)
        results.append(_reproduce(adapter, spec, index, result, run_reproductions))
    return AdapterRun(spec, adapter, tuple(results), time.perf_counter() - start)


def run_suite(specs: Sequence[str], config: SuiteConfig | None = None, run_reproductions: bool = False,
              progress: bool = True, skip_missing: bool = False) -> tuple[list[AdapterRun], list[str]]:
    """Run the suite on every adapter of every spec; returns the runs and the specs skipped (and why).

    With `skip_missing`, a spec whose module does not import is skipped with a note instead of raising
    (the shipped third-party adapters when their extra is not installed). A configuration the library rejected
    (`RejectedConfiguration`) has nothing to run: it is listed among the skipped with the library's error.
    """
    config = config or SuiteConfig()
    runs, skipped = [], []
    for spec in specs:
        try:
            adapters = load_adapters(spec)
        except AdapterError as error:
            if skip_missing:
                skipped.append(f"{spec}: {error}")
                continue
            raise
        for index, adapter in enumerate(adapters):
            if isinstance(adapter, RejectedConfiguration):  # no operation to run: listed with the library's error
                skipped.append(f"{adapter.name}: rejected by {adapter.version}: {adapter.error}")
                continue
            runs.append(run_adapter(adapter, config, SHIPPED.get(spec, spec), index, run_reproductions, progress))
    return runs, skipped


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


__all__ = ["AdapterRun", "load_adapters", "run_adapter", "run_suite"]
