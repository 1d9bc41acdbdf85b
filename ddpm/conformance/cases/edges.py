"""Edge cases: the steps at inputs a network can produce at the boundaries, on a fixed grid and by a seeded search.

`edges[...]` runs the one-step, strided and DDIM operations at the boundary timesteps (paper t = 1, 2, T - 1, T, and
the first and last step of every respaced list) on a fixed grid of outputs and x_t (0, +-1, +-4, +-1000), with the
learned-variance outputs at and beyond the ends of their range (`EDGE_V`). `search[...]` lets Hypothesis look for
an input where the operation leaves its rounding bound: seeded (`SuiteConfig.seed`), `SuiteConfig.search_examples`
examples, guided towards the largest deviation / tolerance (`hypothesis.target`), and the failure it reports is the
shrunk (simplest) one. Both compare with the same oracle and tolerance as the exact cases (`cases.exact`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import cast

import numpy as np

from ddpm.conformance.cases.context import IMAGE, Context, Worst, exact_result, rounding_criterion
from ddpm.conformance.cases.exact import (
    X0_MAP_CONVENTIONS,
    StepInputs,
    check_ddim_at,
    check_step_at,
    ddim_steps,
    strided_steps,
    x0_map,
)
from ddpm.conformance.cases.results import CaseResult
from ddpm.conformance.protocol import Convention, NotOffered, Prediction, StridedSteps, VarianceKind

GRID = (0.0, 1.0, -1.0, 4.0, -4.0, 1e3, -1e3)  # eps and v outputs and x_t: zero, unit, large, very large
X0_GRID = (0.0, 1.0, -1.0, 1.5, -1.5, 1e3, -1e3)  # x_0 outputs: at, just beyond and far beyond the data's [-1, 1]
Z_GRID = (1.0, -1.0, 3.0, -3.0)  # |z| >= 0.5, as the exact cases need to read sigma off a step
# Learned-variance outputs at and beyond the ends of their range: learned_range's v in [-1, 1] and beyond (eq. 15
# extrapolates), a log-variance and a variance from tiny to large.
EDGE_V = {
    VarianceKind.LEARNED_RANGE: (-1.0, 1.0, -1.5, 1.5),
    VarianceKind.LEARNED_LOG_VARIANCE: (-30.0, 0.0, 2.0),
    VarianceKind.LEARNED_VARIANCE: (0.0, 1e-12, 4.0),
}
SEARCH_LIMIT = 1e4  # |output|, |x_t| searched


def boundary_timesteps(T: int) -> list[int]:
    """Paper t = 1, 2, T - 1, T (those that exist)."""
    return sorted({t for t in (1, 2, T - 1, T) if 1 <= t <= T})


def edge_inputs(ctx: Context, kind: VarianceKind | None) -> StepInputs:
    """Every (output, x_t) pair of GRID as one batch [B, C, H, W], z cycling through Z_GRID, v through EDGE_V."""
    size = int(np.prod(IMAGE))
    outputs = X0_GRID if ctx.prediction is Prediction.X0 else GRID
    pairs = [(o, x) for o in outputs for x in GRID]
    images = -(-len(pairs) // size)
    pairs += pairs[: images * size - len(pairs)]  # fill the last image by repeating the first pairs
    shape = (images, *IMAGE)
    out = np.array([o for o, _ in pairs]).reshape(shape)
    xt = np.array([x for _, x in pairs]).reshape(shape)
    z = np.resize(np.array(Z_GRID), images * size).reshape(shape)
    v = None if kind is None or kind not in EDGE_V else np.resize(np.array(EDGE_V[kind]), images * size).reshape(shape)
    return StepInputs(ctx.exact(out), ctx.exact(xt), ctx.exact(z), None if v is None else ctx.exact(v))


def _one_step(ctx: Context, option: str, p: int) -> Callable:
    def step(e, x, zz, vv):
        return ctx.adapter.reverse_step(e, x, ctx.to_adapter(p), zz, option, vv)
    return step


def _strided_step(ctx: Context, option: str, t: int, s: int) -> Callable:
    def step(e, x, zz, vv):
        return cast(StridedSteps, ctx.adapter).strided_step(e, x, t, s, zz, option, vv)
    return step


def _worst_of(parts: list[tuple[Worst, str]]) -> tuple[Worst, str]:
    return max(parts, key=lambda part: part[0].ratio)


def case_edges(ctx: Context, option: str) -> CaseResult:
    """Algorithm 2's step (one-step and strided) at boundary timesteps and edge inputs, variance option `option`."""
    kind = ctx.adapter.variances[option]
    mapping = x0_map(ctx)
    given = edge_inputs(ctx, kind)
    one = Worst()
    for p in boundary_timesteps(ctx.T):
        check_step_at(ctx, one, _one_step(ctx, option, p), p, p - 1, kind, given, mapping)
    parts = [(one, f"reverse_step:{option}")]
    if hasattr(ctx.adapter, "strided_step"):
        strided, S = Worst(), strided_steps(ctx)
        steps = list(zip(S, S[1:] + [ctx.base - 1], strict=True))
        for t, s in (steps[:1] + steps[-1:]) if len(steps) > 1 else steps:
            try:
                check_step_at(ctx, strided, _strided_step(ctx, option, t, s), ctx.to_paper(t), ctx.to_paper(s), kind,
                              given, mapping)
            except NotOffered:
                break
        parts.append((strided, f"strided_step:{option}:{len(S)}"))
    worst, operation = _worst_of(parts)
    criterion = (rounding_criterion(ctx) + f"; paper t in {boundary_timesteps(ctx.T)} and the first and last strided "
                 f"steps; outputs and x_t in {list(GRID)}" + (f", v in {list(EDGE_V[kind])}" if kind in EDGE_V else ""))
    notes = ctx.notes(*X0_MAP_CONVENTIONS, *((Convention.LEARNED_VARIANCE,) if kind.learned else ()))
    return exact_result(ctx, f"edges[{option}]", worst, criterion, operation, notes)


def case_edges_ddim(ctx: Context) -> CaseResult:
    """DDIM steps (every eta of the suite) at the first and last step of the DDIM list, on the edge grid."""
    steps = ddim_steps(ctx)
    given = edge_inputs(ctx, None)
    mapping = x0_map(ctx)
    parts = []
    for eta_value in ctx.config.ddim_etas:
        worst = Worst()
        for t, s in (steps[:1] + steps[-1:]) if len(steps) > 1 else steps:
            check_ddim_at(ctx, worst, t, s, eta_value, given, mapping)
        parts.append((worst, f"ddim_step:{eta_value:g}:{len(steps)}"))
    worst, operation = _worst_of(parts)
    criterion = (rounding_criterion(ctx) + f"; first and last of {len(steps)} DDIM steps, eta in "
                 f"{list(ctx.config.ddim_etas)}; outputs and x_t in {list(GRID)}")
    return exact_result(ctx, "edges[ddim]", worst, criterion, operation, ctx.notes(*X0_MAP_CONVENTIONS))


__all__ = ["EDGE_V", "GRID", "X0_GRID", "boundary_timesteps", "case_edges", "case_edges_ddim", "edge_inputs"]
