"""Batched cases: one call steps every row b of a batch from its own t[b] to its own s[b] (the batched, noise-free
steps of diffusers' parallel schedulers, `batched_mean` and `batched_ddim`), each row against the oracle of its step.

The rows of one batch are at different timesteps: the steps to check (t -> t - 1 for every t, or the consecutive
visited timesteps of the adapter's own respaced list, the last one to x_0) are shuffled and cut into batches of
`SuiteConfig.batch` rows, so every step, t = 1 and t = T and the first and last of the list included, is some row of
some batch. A library that read one row's timestep for all rows, or mixed up rows and timesteps, fails.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import cast

import numpy as np
import torch

from ddpm.conformance import oracle
from ddpm.conformance.cases.context import (
    Context,
    Worst,
    draw,
    draw_output,
    exact_result,
    learned_input,
    rounding_criterion,
    to_numpy,
)
from ddpm.conformance.cases.exact import X0_MAP_CONVENTIONS, ddim_oracle, mean_oracle, x0_map
from ddpm.conformance.cases.results import CaseResult
from ddpm.conformance.protocol import Convention, DdimSteps, NotOffered, StridedSteps

Pair = tuple[int, int]  # (t, s) in the adapter's convention, s = base - 1 for x_0


def one_step_pairs(ctx: Context) -> list[Pair]:
    """t -> t - 1 for every t (adapter convention), t = 1 -> x_0 included."""
    return [(ctx.to_adapter(p), ctx.to_adapter(p - 1)) for p in range(1, ctx.T + 1)]


def listed_pairs(ctx: Context, steps: Sequence[int]) -> list[Pair]:
    """Consecutive visited timesteps of a descending list, the last one to x_0 (base - 1)."""
    visited = [int(t) for t in steps]
    return list(zip(visited, visited[1:] + [ctx.base - 1], strict=True))


def batches(ctx: Context, rng: np.random.Generator, pairs: Sequence[Pair]) -> list[list[Pair]]:
    """The pairs shuffled into batches of `batch` rows at distinct timesteps; a short last batch is topped up with
    other pairs, so every batch mixes timesteps (unless there are fewer pairs than rows)."""
    size = ctx.config.batch
    order = [pairs[i] for i in rng.permutation(len(pairs))]
    out = [order[i:i + size] for i in range(0, len(order), size)]
    if len(out) > 1 and len(out[-1]) < size:
        used = set(out[-1])
        out[-1] += [pair for pair in order if pair not in used][:size - len(out[-1])]
    return out


def update_rows(ctx: Context, worst: Worst, out: np.ndarray, expected: np.ndarray, tol: np.ndarray,
                rows: Sequence[Pair], inputs: Mapping[str, np.ndarray]) -> None:
    """Each row against its own oracle at its own t; a failure records the whole batch (every row's inputs and its
    t and s), which is what reproduces a batched step."""
    n = len(rows)
    whole = {**inputs, "t": np.array([t for t, _ in rows]), "s": np.array([s for _, s in rows])}
    tiled = {name: np.broadcast_to(np.asarray(value)[None], (n, *np.shape(value))) for name, value in whole.items()}
    for b, (t, s) in enumerate(rows):
        mask = (np.arange(n) == b).reshape((n,) + (1,) * (expected.ndim - 1))
        worst.update(f"x_s of row {b} (to s = {s}) of a batch at t = {[t for t, _ in rows]}", out,
                     np.where(mask, expected, np.nan), tol, ctx.to_paper(t), tiled)


def _intermediates(ctx: Context, rows: Sequence[Pair]) -> dict:
    """The oracle's intermediates of every row's step t -> s as [B, 1, 1, 1] arrays, those of a stride for every row
    (b = 1 - a_t / a_s from the alpha_bar table, s = t - 1 included): a batched step is given s, so it forms its
    coefficients from alpha_bar_t and alpha_bar_s (diffusers' ratio, ddpm.core's log tables), never from beta_t, and
    the stride's rounding model (a_t, a_s perturbed by u (1 + |log a|)) is the one that covers that route."""
    values = oracle.stride_intermediates(np.array([ctx.alpha_bar(ctx.to_paper(t)) for t, _ in rows]),
                                         np.array([ctx.alpha_bar(ctx.to_paper(s)) for _, s in rows]))
    return {symbol: np.asarray(value).reshape(-1, 1, 1, 1) for symbol, value in values.items()}


def _run(ctx: Context, name: str, pairs: Sequence[Pair], step: Callable, expect: Callable, learned=None) -> Worst:
    """Every pair, in mixed batches: step(out, xt, t, s, v) against expect(rows, values) row by row."""
    rng = ctx.rng(name)
    worst = Worst()
    for rows in batches(ctx, rng, pairs):
        n = len(rows)
        out_, xt_ = draw_output(rng, ctx)[:n], draw(rng, ctx, "xt")[:n]
        v_ = None if learned is None else learned_input(rng, ctx, learned)
        v_ = None if v_ is None else v_[:n]
        t = torch.tensor([t for t, _ in rows], dtype=torch.int64)  # [B]
        s = torch.tensor([s for _, s in rows], dtype=torch.int64)  # [B]
        result = to_numpy(step(ctx.tensor(out_), ctx.tensor(xt_), t, s, None if v_ is None else ctx.tensor(v_)))
        expected, tol = expect(rows, {oracle.xt: xt_, oracle.OUTPUT[ctx.prediction]: out_})
        inputs = {ctx.output_name: out_, "xt": xt_} | ({} if v_ is None else {"v": v_})
        update_rows(ctx, worst, result, expected, tol, rows, inputs)
    return worst


def case_batched_mean(ctx: Context, option: str, num_steps: int | None) -> CaseResult:
    """Algorithm 2's mean (no noise) over each row's own step, the strided posterior mean of derivation (i) at
    x0_hat: t -> t - 1 for every t (num_steps None), or the adapter's respaced list of S steps, rows of a batch at
    different t."""
    kind = ctx.adapter.variances[option]
    mapping = x0_map(ctx)
    name = f"batched_mean[{option}, {'s=t-1' if num_steps is None else f'S={num_steps}'}]"
    if num_steps is None:
        pairs = one_step_pairs(ctx)
    elif hasattr(ctx.adapter, "strided_timesteps"):
        pairs = listed_pairs(ctx, cast(StridedSteps, ctx.adapter).strided_timesteps(num_steps))
    else:
        raise NotOffered("the respaced batched case needs strided_timesteps() for the visited timesteps")
    adapter = ctx.adapter

    def step(out, xt, t, s, v):
        return adapter.batched_mean(out, xt, t, s, option, v)  # offered: the plan runs the case only then

    def expect(rows, data):
        return mean_oracle(ctx, {**_intermediates(ctx, rows), **data}, mapping)

    worst = _run(ctx, name, pairs, step, expect, kind if kind.learned else None)
    notes = ctx.notes(*X0_MAP_CONVENTIONS, *((Convention.TIMESTEPS,) if num_steps is not None else ()))
    criterion = rounding_criterion(ctx) + f"; {len(pairs)} steps, {ctx.config.batch} rows at different t per call"
    return exact_result(ctx, name, worst, criterion, f"batched_mean:{option}", notes)


def case_batched_ddim(ctx: Context, num_steps: int | None) -> CaseResult:
    """Eq. 12 at eta = 0 over each row's own step: t -> t - 1 for every t (num_steps None), or the adapter's DDIM list
    of S steps, rows of a batch at different t."""
    mapping = x0_map(ctx)
    name = f"batched_ddim[{'s=t-1' if num_steps is None else f'S={num_steps}'}]"
    if num_steps is None:
        pairs = one_step_pairs(ctx)
    elif hasattr(ctx.adapter, "ddim_timesteps"):
        pairs = listed_pairs(ctx, cast(DdimSteps, ctx.adapter).ddim_timesteps(num_steps))
    else:
        raise NotOffered("the respaced batched case needs ddim_timesteps() for the visited timesteps")
    adapter = ctx.adapter

    def step(out, xt, t, s, v):
        return adapter.batched_ddim(out, xt, t, s)  # offered: the plan runs the case only then

    def expect(rows, data):
        values = {**_intermediates(ctx, rows), **data, oracle.eta: 0.0}
        return ddim_oracle(ctx, values, mapping)

    worst = _run(ctx, name, pairs, step, expect)
    notes = ctx.notes(*X0_MAP_CONVENTIONS, *((Convention.TIMESTEPS,) if num_steps is not None else ()))
    criterion = rounding_criterion(ctx) + f"; {len(pairs)} steps, {ctx.config.batch} rows at different t per call"
    return exact_result(ctx, name, worst, criterion, "batched_ddim", notes)
