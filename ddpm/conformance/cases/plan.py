"""The cases the suite runs on one adapter, in report order."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from ddpm.conformance.cases.batched import case_batched_ddim, case_batched_mean
from ddpm.conformance.cases.calibration import case_calibration
from ddpm.conformance.cases.context import Context
from ddpm.conformance.cases.edges import case_edges, case_edges_ddim
from ddpm.conformance.cases.exact import (
    case_ddim,
    case_finite,
    case_loss_given_draws,
    case_posterior,
    case_q_sample,
    case_reverse_step,
    case_schedule,
    case_strided,
)
from ddpm.conformance.cases.inversion import case_inversion
from ddpm.conformance.cases.results import CaseResult
from ddpm.conformance.cases.search import case_search, case_search_ddim
from ddpm.conformance.cases.statistical import case_chain, case_loss_at_eps_star


# ------------------------------------------------------------------------------------------------ the list
def planned_cases(ctx: Context) -> list[tuple[str, Callable[[], CaseResult], str | None]]:
    """(case name, thunk, the optional member it needs or None) in report order."""
    a = ctx.adapter
    out: list[tuple[str, Callable[[], CaseResult], str | None]] = [
        ("schedule", lambda: case_schedule(ctx), None),
        ("q_sample", lambda: case_q_sample(ctx), None),
        ("posterior", lambda: case_posterior(ctx), None),
    ]
    for option in a.variances:
        out.append((f"reverse_step[{option}]", partial(case_reverse_step, ctx, option), None))
    out.append(("finite", lambda: case_finite(ctx), None))
    S = ctx.inference_steps(ctx.config.strided_steps)
    for option in a.variances:
        out.append((f"strided[{option}, S={S}]", partial(case_strided, ctx, option), "strided_step"))
    D = ctx.inference_steps(ctx.config.ddim_steps)
    for eta_value in ctx.config.ddim_etas:
        out.append((f"ddim[eta={eta_value:g}, S={D}]", partial(case_ddim, ctx, eta_value), "ddim_step"))
    for option in a.variances:
        out.append((f"edges[{option}]", partial(case_edges, ctx, option), None))
    out.append(("edges[ddim]", lambda: case_edges_ddim(ctx), "ddim_step"))
    for option in a.variances:
        out.append((f"search[{option}]", partial(case_search, ctx, option), None))
    out.append(("search[ddim]", lambda: case_search_ddim(ctx), "ddim_step"))
    for option in a.variances:
        out.append((f"batched_mean[{option}, s=t-1]", partial(case_batched_mean, ctx, option, None), "batched_mean"))
        out.append((f"batched_mean[{option}, S={S}]", partial(case_batched_mean, ctx, option, S), "batched_mean"))
    out.append(("batched_ddim[s=t-1]", partial(case_batched_ddim, ctx, None), "batched_ddim"))
    out.append((f"batched_ddim[S={D}]", partial(case_batched_ddim, ctx, D), "batched_ddim"))
    for num_steps in sorted({ctx.T, D}, reverse=True):  # every timestep, then the DDIM sampler's S
        out.append((f"inversion[S={num_steps}]", partial(case_inversion, ctx, num_steps), "inversion_step"))
    out.append(("loss_given_draws", lambda: case_loss_given_draws(ctx), "training_loss"))
    out.append(("loss_at_eps_star", lambda: case_loss_at_eps_star(ctx), "training_loss"))
    return out


def chain_cases(ctx: Context) -> list[tuple[str, Callable[[], CaseResult]]]:
    """Two statistical cases per full sampler the adapter offers (none without `chains`): its marginal law
    (`chain[...]`), then its law given x_t (`calibration[...]`, not applicable without `Chain.resume`)."""
    chains = ctx.adapter.chains() if hasattr(ctx.adapter, "chains") else []
    out: list[tuple[str, Callable[[], CaseResult]]] = [(f"chain[{c.label}]", partial(case_chain, ctx, c))
                                                       for c in chains]
    return out + [(f"calibration[{c.label}]", partial(case_calibration, ctx, c)) for c in chains]
