"""Search cases: Hypothesis looks for an input where a step leaves the oracle's rounding bound (`cases.edges` says how).

Each example is one image [1, C, H, W] at one timestep drawn from 1..T (both ends are explicit examples, tried
first; failures shrink towards t = 1); outputs and x_t range over [-SEARCH_LIMIT, SEARCH_LIMIT], learned-variance
outputs over their range and beyond (`RANGES`). `hypothesis.target` steers the search towards the largest
deviation / tolerance. The search is seeded by `SuiteConfig.seed`, keeps no example database and runs
`SuiteConfig.search_examples` examples; Hypothesis is needed only here (the `conformance` extra installs it): without
it the case is not applicable.

The search is a function of the seed and the Hypothesis version alone. Hypothesis also mixes into its draws the
constants it finds in the source of the non-library modules a process has imported, so that the same seed would
search differently after another test file or adapter was imported; `_seed_alone` switches that off while a search
runs (through Hypothesis internals, guarded: a version without them has no such constants).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from ddpm.conformance.cases.context import IMAGE, Context, Worst, exact_result, rounding_criterion
from ddpm.conformance.cases.exact import (
    X0_MAP_CONVENTIONS,
    StepInputs,
    check_ddim_at,
    check_step_at,
    ddim_steps,
    x0_map,
)
from ddpm.conformance.cases.results import CaseResult
from ddpm.conformance.protocol import Convention, NotOffered, Prediction, VarianceKind

SEARCH_LIMIT = 1e4
RANGES = {
    VarianceKind.LEARNED_RANGE: (-1.5, 1.5),
    VarianceKind.LEARNED_LOG_VARIANCE: (-30.0, 3.0),
    VarianceKind.LEARNED_VARIANCE: (0.0, 10.0),
}


@dataclass
class _Found:
    """The worst example seen, and the last failing one (after shrinking: the simplest)."""

    best: Worst = field(default_factory=Worst)
    failing: Worst | None = None
    examples: int = 0


def _hypothesis() -> Any:
    try:
        import hypothesis
        import hypothesis.strategies as st
    except ImportError:
        raise NotOffered("the search needs Hypothesis: pip install 'ddpm-verified[conformance]'") from None
    return hypothesis, st


@contextmanager
def _seed_alone() -> Iterator[None]:
    """Hypothesis draws no constants from the source of the modules this process has imported while the block runs
    (see the module docstring); the constants cache is emptied on the way in and out, so that neither side leaks."""
    try:
        from hypothesis.internal.conjecture import providers
        no_constants, cache = providers.Constants(), providers.CONSTANTS_CACHE
        original = providers._get_local_constants
    except (ImportError, AttributeError):  # a Hypothesis without source constants: nothing to switch off
        yield
        return
    providers._get_local_constants = lambda: no_constants
    cache.cache.clear()
    try:
        yield
    finally:
        providers._get_local_constants = original
        cache.cache.clear()


def _image(st: Any, low: float, high: float, zero_gap: float = 0.0) -> Any:
    """A strategy for the values of one image, as a list of floats."""
    size = int(np.prod(IMAGE))
    if zero_gap:
        value = st.builds(lambda sign, m: sign * m, st.sampled_from([1.0, -1.0]), st.floats(zero_gap, high))
    else:
        value = st.floats(low, high, allow_nan=False, allow_infinity=False)
    return st.lists(value, min_size=size, max_size=size)


def _inputs(ctx: Context, out: list, xt: list, z: list, v: list | None) -> StepInputs:
    shape = (1, *IMAGE)

    def arr(values: list) -> np.ndarray:
        return ctx.exact(np.asarray(values, dtype=np.float64).reshape(shape))
    return StepInputs(arr(out), arr(xt), arr(z), None if v is None else arr(v))


def _search(ctx: Context, probe: Callable[..., Worst], kind: VarianceKind | None, ends: tuple[int, int]) -> _Found:
    """Run the seeded Hypothesis search of `probe(t, inputs) -> Worst` over t in `ends` (inclusive) and return what it
    found. One probe at the first end comes before the search, so that an operation the adapter does not offer is not
    applicable without a search; both ends, with unit inputs, are the search's first (explicit) examples."""
    hypothesis, st = _hypothesis()
    found = _Found()
    shape = (1, *IMAGE)
    size = int(np.prod(IMAGE))
    v = np.zeros(shape) if kind in RANGES else None
    probe(ends[0], StepInputs(np.ones(shape), np.ones(shape), np.ones(shape), v))  # NotOffered here, before searching
    low = -1.5 if ctx.prediction is Prediction.X0 else -SEARCH_LIMIT
    outputs = _image(st, low, -low)
    vs = _image(st, *RANGES[kind]) if kind in RANGES else st.none()
    unit = [1.0] * size
    unit_v = [0.0] * size if kind in RANGES else None

    # Its own settings on Hypothesis' defaults, whatever profile the caller loaded (a test run's, say), and no source
    # constants (`_seed_alone`): the search is a function of the seed alone.
    @hypothesis.settings(hypothesis.settings.get_profile("default"), max_examples=ctx.config.search_examples,
                         deadline=None, database=None, derandomize=False,
                         suppress_health_check=list(hypothesis.HealthCheck), print_blob=False)
    @hypothesis.seed(ctx.config.seed)
    @hypothesis.given(t=st.integers(*ends), out=outputs, xt=_image(st, -SEARCH_LIMIT, SEARCH_LIMIT),
                      z=_image(st, 0.5, 4.0, zero_gap=0.5), v=vs)
    @hypothesis.example(t=ends[0], out=unit, xt=unit, z=unit, v=unit_v)
    @hypothesis.example(t=ends[1], out=unit, xt=unit, z=unit, v=unit_v)
    def check(t: int, out: list, xt: list, z: list, v: list | None) -> None:
        worst = probe(t, _inputs(ctx, out, xt, z, v))
        found.examples += 1
        ratio = worst.ratio if np.isfinite(worst.ratio) else 1e300
        hypothesis.target(min(ratio, 1e300))
        if worst.ratio > found.best.ratio or found.best.paper_t is None:
            found.best = worst
        if worst.ratio > 1.0:
            found.failing = worst
            raise AssertionError(f"deviation {worst.ratio:.3g} x tolerance")

    try:
        with _seed_alone():
            check()
    except Exception:  # AssertionError: a failure found and shrunk; anything else after a failure (Hypothesis' Flaky:
        if found.failing is None:  # the library answered an identical call differently) keeps the failure found
            raise
    return found


def case_search(ctx: Context, option: str) -> CaseResult:
    """Hypothesis searches t and the inputs of Algorithm 2's one-step `reverse_step` with variance option `option`."""
    kind = ctx.adapter.variances[option]
    mapping = x0_map(ctx)

    def probe(p: int, given: StepInputs) -> Worst:
        worst = Worst()

        def step(e, x, zz, vv):
            return ctx.adapter.reverse_step(e, x, ctx.to_adapter(p), zz, option, vv)
        check_step_at(ctx, worst, step, p, p - 1, kind, given, mapping)
        return worst

    found = _search(ctx, probe, kind, (1, ctx.T))
    criterion = (rounding_criterion(ctx) + f"; Hypothesis, seed {ctx.config.seed}, {found.examples} examples, "
                 f"paper t in 1..T, |output|, |x_t| <= {SEARCH_LIMIT:g}"
                 + (f", v in {list(RANGES[kind])}" if kind in RANGES else "") + "; a failure shown is shrunk")
    notes = ctx.notes(*X0_MAP_CONVENTIONS, *((Convention.LEARNED_VARIANCE,) if kind.learned else ()))
    worst = found.failing or found.best
    return exact_result(ctx, f"search[{option}]", worst, criterion, f"reverse_step:{option}", notes)


def case_search_ddim(ctx: Context) -> CaseResult:
    """Hypothesis searches the DDIM list's steps, eta in [0, 1] and the inputs of `ddim_step`."""
    steps = ddim_steps(ctx)
    clip_notes = ctx.notes(*X0_MAP_CONVENTIONS)
    mapping = x0_map(ctx)
    eta_value = max(ctx.config.ddim_etas)

    def probe(k: int, given: StepInputs) -> Worst:
        worst = Worst()
        t, s = steps[k]
        check_ddim_at(ctx, worst, t, s, eta_value, given, mapping)
        return worst

    found = _search(ctx, probe, None, (0, len(steps) - 1))
    criterion = (rounding_criterion(ctx) + f"; Hypothesis, seed {ctx.config.seed}, {found.examples} examples over the "
                 f"{len(steps)} DDIM steps at eta = {eta_value:g}, |output|, |x_t| <= {SEARCH_LIMIT:g}; a failure "
                 "shown is shrunk")
    return exact_result(ctx, "search[ddim]", found.failing or found.best, criterion,
                        f"ddim_step:{eta_value:g}:{len(steps)}", clip_notes)


__all__ = ["RANGES", "SEARCH_LIMIT", "case_search", "case_search_ddim"]
