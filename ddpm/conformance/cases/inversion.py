"""The DDIM inversion case: every step s -> t of the adapter's inversion list against eq. 12 at eta = 0 solved for
x_t (`oracle.INVERSION_BY_PREDICTION`), the network output read at the earlier timestep s, as inversion does."""

from __future__ import annotations

from dataclasses import replace
from typing import Any, cast

import numpy as np

from ddpm.conformance import oracle
from ddpm.conformance.cases.context import Context, Worst, draw, draw_output, exact_result, rounding_criterion, to_numpy
from ddpm.conformance.cases.results import CaseResult
from ddpm.conformance.protocol import Convention, NotOffered


def case_inversion(ctx: Context, num_steps: int) -> CaseResult:
    """x_t = sqrt(a_t) x0_hat + sqrt(1 - a_t) eps_hat with x0_hat, eps_hat from x_s and the output at s, for every
    step of inversion_timesteps(S) (ascending), the first one from x_0 (s = base - 1) when the library has it."""
    name = f"inversion[S={num_steps}]"
    if Convention.CLIPS_X0 in ctx.adapter.conventions:
        raise NotOffered("the suite has no oracle for a clipped inversion (the adapter declares clips_x0)")
    adapter = cast(Any, ctx.adapter)  # run only when inversion_step is offered (run_adapter checks)
    if not hasattr(adapter, "inversion_timesteps"):
        raise NotOffered("the inversion case needs inversion_timesteps() for the visited timesteps")
    steps = [int(t) for t in adapter.inversion_timesteps(num_steps)]
    rng = ctx.rng(name)
    worst = Worst()
    first: list[str] = []
    uncompared: list[str] = []
    for s, t in zip([ctx.base - 1] + steps[:-1], steps, strict=True):
        p, s_paper = ctx.to_paper(t), ctx.to_paper(s)
        out_, xs_ = draw_output(rng, ctx), draw(rng, ctx, "x0" if s_paper == 0 else "xt")
        try:
            result = to_numpy(adapter.inversion_step(ctx.tensor(out_), ctx.tensor(xs_), s, t))
        except NotOffered as why:
            if s_paper != 0:
                raise
            first.append(f"no step from x_0 (s = {s}) to t = {t}: {why}")
            continue
        values = {**oracle.stride_intermediates(ctx.alpha_bar(p), ctx.alpha_bar(s_paper)), oracle.xs: xs_,
                  oracle.OUTPUT[ctx.prediction]: out_}
        expected, tol = oracle.evaluate(oracle.INVERSION_BY_PREDICTION[ctx.prediction], values, ctx.u)
        if not np.all(np.isfinite(expected)):  # the x_0 output at s = 0: eps_hat divides by sqrt(1 - alpha_bar_0) = 0
            got = "finite" if np.all(np.isfinite(result)) else "non-finite"
            uncompared.append(f"s = {s} -> t = {t} not compared: the {ctx.output_name} output gives no eps_hat there "
                              f"(eq. 12 divides by sqrt(1 - alpha_bar_s) = 0); the library returned {got} values")
        worst.update(f"x_t (from s = {s})", result, expected, tol, p, {ctx.output_name: out_, "xs": xs_})
    notes = ctx.notes(*((Convention.TIMESTEPS,) if len(steps) < ctx.T else ())) + tuple(first)
    criterion = rounding_criterion(ctx) + f"; visits {len(steps)} timesteps, ascending"
    outcome = exact_result(ctx, name, worst, criterion, f"inversion_step:{num_steps}", notes)
    return replace(outcome, detail="; ".join([outcome.detail, *uncompared]))
