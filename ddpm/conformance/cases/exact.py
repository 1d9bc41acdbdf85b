"""Exact cases: one operation at every timestep against the float64 oracle within its rounding-error bound."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from typing import TYPE_CHECKING, cast

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
from ddpm.conformance.cases.results import CaseResult, Status
from ddpm.conformance.protocol import (
    Convention,
    DdimSteps,
    NotOffered,
    Prediction,
    ScheduleKind,
    StridedSteps,
    TrainingLoss,
    VarianceKind,
)

if TYPE_CHECKING:
    import sympy as sp


# -------------------------------------------------------------------------------------------------- schedule
def case_schedule(ctx: Context) -> CaseResult:
    """betas against the formula the adapter claims; alpha_bar_t = prod_{s<=t} (1 - beta_s); 0 < beta_t < 1."""
    a = ctx.adapter
    spec = a.schedule
    betas = np.asarray(a.betas(), dtype=np.float64).reshape(-1)
    criterion = (f"beta: |beta - formula| <= {oracle.ROUNDING_FACTOR:g} u max(beta); alpha_bar: relative "
                 f"(t + 2) u (a product of t roundings), u = {ctx.u:.3g}")
    T = ctx.T
    problems = []
    if betas.shape[0] != T or spec.T != T:
        return CaseResult("schedule", Status.FAIL, criterion,
                          f"table lengths disagree: betas {betas.shape[0]}, alpha_bars {T}, declared T {spec.T}",
                          operation="schedule")
    valid = (betas > 0) & (betas < 1)
    valid[-1] |= betas[-1] == 1.0  # zero terminal SNR (Lin et al. 2023): beta_T = 1, alpha_bar_T = 0
    if not np.all(valid):
        k = int(np.argmax(~valid))
        problems.append((np.inf, np.nan, k + 1, f"beta outside (0, 1) (1 allowed at t = T only): {betas[k]!r}"))
    if spec.kind is ScheduleKind.LINEAR:
        formula = oracle.linear_betas(T, spec.rescaled)
    elif spec.kind is ScheduleKind.COSINE:
        formula = oracle.cosine_betas(T)
    else:
        formula = None
    if formula is not None:
        dev = np.abs(betas - formula)
        tol = oracle.ROUNDING_FACTOR * ctx.u * (np.max(np.abs(formula)) + oracle.schedule_condition(spec.kind, T))
        k = int(np.argmax(dev / tol))
        problems.append((dev[k] / tol[k], dev[k], k + 1, f"beta vs the {spec.kind.value} formula"))
    product = np.exp(np.cumsum(np.log1p(-betas)))
    dev = np.abs(ctx.alpha_bars - product)
    tol = (np.arange(1, T + 1) + 2) * ctx.u * product
    with np.errstate(divide="ignore", invalid="ignore"):
        ratios = np.where(tol > 0, dev / np.where(tol > 0, tol, 1.0), np.where(dev > 0, np.inf, 0.0))
        ratios = np.where(np.isfinite(ctx.alpha_bars), ratios, np.inf)
    k = int(np.argmax(ratios))
    problems.append((ratios[k], dev[k], k + 1, "alpha_bar vs prod (1 - beta)"))
    ratio, deviation, paper_t, part = max(problems, key=lambda p: p[0])
    where = f"t = {ctx.to_adapter(paper_t)} in its convention (paper t = {paper_t})"
    notes = ctx.notes(Convention.SCHEDULE)
    if spec.kind is ScheduleKind.LINEAR and not spec.rescaled:
        notes += ("schedule: linear ends not rescaled by 1000 / T (TF original, diffusers); Ho et al. used T = 1000 "
                  "only, where both agree",)
    if ratio <= 1:
        return CaseResult("schedule", Status.CONVENTION if notes and spec.T != 1000 else Status.PASS, criterion,
                          f"worst: {part}, {ratio:.3g} x tolerance at {where}", ratio, deviation, where,
                          notes, "schedule", ctx.to_adapter(paper_t))
    return CaseResult("schedule", Status.FAIL, criterion, f"{part}: {ratio:.3g} x tolerance at {where}", ratio,
                      deviation, where, notes, "schedule", ctx.to_adapter(paper_t), {},
                      None if formula is None else [float(formula[paper_t - 1])])


# ------------------------------------------------------------------------------------- forward and posterior
def case_q_sample(ctx: Context) -> CaseResult:
    """q_sample(x0, t, noise) = sqrt(alpha_bar_t) x_0 + sqrt(1 - alpha_bar_t) noise (eq. 4) at every t."""
    rng = ctx.rng("q_sample")
    worst = Worst()
    for p in range(1, ctx.T + 1):
        x0_, n = draw(rng, ctx, "x0"), draw(rng, ctx, "noise")
        out = to_numpy(ctx.adapter.q_sample(ctx.tensor(x0_), ctx.to_adapter(p), ctx.tensor(n)))
        values = {**ctx.step(p), oracle.x0: x0_,
                  oracle.noise: n}
        expected, tol = oracle.evaluate(oracle.Q_SAMPLE, values, ctx.u)
        worst.update("x_t", out, expected, tol, p, {"x0": x0_, "noise": n})
    return exact_result(ctx, "q_sample", worst, rounding_criterion(ctx), "q_sample")


def case_posterior(ctx: Context) -> CaseResult:
    """q(x_{t-1} | x_t, x_0): mean mu_tilde_t and variance beta_tilde_t (eq. 7) at every t; at t = 1 x_0 and 0."""
    rng = ctx.rng("posterior")
    worst = Worst()
    for p in range(1, ctx.T + 1):
        x0_, xt_ = draw(rng, ctx, "x0"), draw(rng, ctx, "xt")
        mean, var = ctx.adapter.q_posterior(ctx.tensor(x0_), ctx.tensor(xt_), ctx.to_adapter(p))
        values = {**ctx.step(p), oracle.x0: x0_,
                  oracle.xt: xt_}
        inputs = {"x0": x0_, "xt": xt_}
        expected, tol = oracle.evaluate(oracle.POSTERIOR_MEAN, values, ctx.u)
        worst.update("mean", to_numpy(mean), expected, tol, p, inputs)
        expected, tol = oracle.evaluate(oracle.POSTERIOR_VARIANCE, values, ctx.u)
        var_np = np.broadcast_to(to_numpy(var), np.broadcast_shapes(np.shape(to_numpy(var)), x0_.shape))
        worst.update("variance", var_np, np.broadcast_to(expected, var_np.shape), np.broadcast_to(tol, var_np.shape),
                     p, inputs)
    return exact_result(ctx, "posterior", worst, rounding_criterion(ctx), "q_posterior")


# ---------------------------------------------------------------------------------------- reverse steps
X0Map = Callable[[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]  # (x0_hat, tol) -> (x_0 used, its tol)
X0_MAP_CONVENTIONS = (Convention.CLIPS_X0, Convention.THRESHOLDS_X0)


def x0_map(ctx: Context) -> X0Map | None:
    """What the adapter's sampling does to x0_hat by its declared convention: dynamic thresholding (THRESHOLDS_X0, with
    its `threshold`), clipping to [-1, 1] (CLIPS_X0), or nothing (None)."""
    conventions = ctx.adapter.conventions
    if Convention.THRESHOLDS_X0 in conventions:
        p, s_max = ctx.adapter.threshold  # type: ignore[attr-defined]  # required with it (check_adapter)
        return partial(oracle.dynamic_threshold, p=p, s_max=s_max, u=ctx.u)
    if Convention.CLIPS_X0 in conventions:
        return oracle.clip_x0
    return None


def mapped_x0(ctx: Context, values: dict, mapping: X0Map) -> tuple[np.ndarray, np.ndarray]:
    """x0_hat from the network output, through the map (clipping or thresholding), with its tolerance."""
    x0_hat, tol_x0 = oracle.evaluate(oracle.X0_HATS[ctx.prediction], values, ctx.u)
    return mapping(x0_hat, np.broadcast_to(tol_x0, np.shape(x0_hat)))


def eps_route_bound(ctx: Context, values: dict, eps_forms: tuple, coef_eps: sp.Expr) -> np.ndarray:
    """The rounding bound of an implementation that converts an x_0 or v output to eps first (a rounded intermediate)
    and then takes the eps form: the eps form's bound at that eps plus |d out / d eps| times the conversion's bound.
    0 for an eps model (its output is the eps); NaN where the route has no value (alpha_bar_T = 0)."""
    if ctx.prediction is Prediction.EPS:
        return np.zeros(np.shape(values[oracle.xt]))
    eps_hat, tol_eps = oracle.evaluate(oracle.EPS_HATS[ctx.prediction], values, ctx.u)
    _, tol = oracle.evaluate(eps_forms, {**values, oracle.eps: eps_hat}, ctx.u)
    coef, _ = oracle.evaluate(coef_eps, values, ctx.u)
    return tol + np.abs(coef) * tol_eps


def mean_oracle(ctx: Context, values: dict, mapping: X0Map | None) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 2's mean over a step t -> s given the network output (in the adapter's parameterisation); with
    clipping or thresholding, mu_tilde(x_0, x_t) of the mapped x0_hat."""
    if mapping is None:
        mean, tol = oracle.evaluate(oracle.MEANS[ctx.prediction], values, ctx.u)
        return mean, np.fmax(tol, eps_route_bound(ctx, values, oracle.MEAN_FORMS, oracle.MEAN_COEF_EPS))
    x0_used, tol_x0 = mapped_x0(ctx, values, mapping)
    mean, tol = oracle.evaluate(oracle.POSTERIOR_MEAN, {**values, oracle.x0: x0_used}, ctx.u)
    coef, _ = oracle.evaluate(oracle.POSTERIOR_COEF_X0, values, ctx.u)
    return mean, tol + np.abs(coef) * tol_x0


@dataclass(frozen=True)
class StepInputs:
    """The inputs of one step, as float64 arrays [B, C, H, W] already rounded to the adapter's dtype: the network output
    (in the adapter's parameterisation), x_t, the draw z (|z| >= 0.5) and the learned-variance output v (or None)."""

    out: np.ndarray
    xt: np.ndarray
    z: np.ndarray
    v: np.ndarray | None = None


def draw_step_inputs(ctx: Context, rng: np.random.Generator, kind: VarianceKind | None) -> StepInputs:
    """Interior inputs: the output of `draw_output`, x_t ~ N(0, 1.5^2), z and v in range."""
    out, xt_, z_ = draw_output(rng, ctx), draw(rng, ctx, "xt"), draw(rng, ctx, "z")
    return StepInputs(out, xt_, z_, learned_input(rng, ctx, kind) if kind is not None else None)


def check_step(ctx: Context, worst: Worst, step: Callable, p: int, s_paper: int, kind: VarianceKind | None,
               rng: np.random.Generator, mapping: X0Map | None) -> None:
    """One stochastic step t -> s at interior inputs drawn from `rng` (`check_step_at`)."""
    check_step_at(ctx, worst, step, p, s_paper, kind, draw_step_inputs(ctx, rng, kind), mapping)


def check_step_at(ctx: Context, worst: Worst, step: Callable, p: int, s_paper: int, kind: VarianceKind | None,
                  given: StepInputs, mapping: X0Map | None) -> None:
    """One stochastic step t -> s: the mean from z = 0 and sigma = (out(z) - out(0)) / z against the oracle."""
    eps_, xt_, z_, v_ = given.out, given.xt, given.z, given.v
    inputs = {ctx.output_name: eps_, "xt": xt_, "z": z_} | ({} if v_ is None else {"v": v_})
    zero = np.zeros_like(z_)
    out0 = to_numpy(step(ctx.tensor(eps_), ctx.tensor(xt_), ctx.tensor(zero), None if v_ is None else ctx.tensor(v_)))
    outz = to_numpy(step(ctx.tensor(eps_), ctx.tensor(xt_), ctx.tensor(z_), None if v_ is None else ctx.tensor(v_)))
    intermediates = ctx.step(p) if s_paper == p - 1 else oracle.stride_intermediates(ctx.alpha_bar(p),
                                                                                      ctx.alpha_bar(s_paper))
    values = {**intermediates, oracle.xt: xt_, oracle.OUTPUT[ctx.prediction]: eps_, oracle.z: z_}
    if v_ is not None:
        values[oracle.v] = v_
    mean, tol_mean = mean_oracle(ctx, values, mapping)
    worst.update("mean (z = 0)", out0, mean, tol_mean, p, inputs)
    if s_paper == 0 or kind is None:  # the last step adds no noise (Algorithm 2: z = 0 at t = 1)
        sigma, tol_sigma = np.zeros_like(z_), np.zeros_like(z_)
    else:
        sigma, tol_sigma = oracle.evaluate(oracle.sigma_form(kind), values, ctx.u)
        sigma = np.broadcast_to(sigma, z_.shape)
    tol_sigma = tol_sigma + (2 * tol_mean + oracle.ROUNDING_FACTOR * ctx.u * np.abs(outz)) / np.abs(z_)
    worst.update("sigma = (out(z) - out(0)) / z", (outz - out0) / z_, sigma, tol_sigma, p, inputs)


def case_reverse_step(ctx: Context, option: str) -> CaseResult:
    """Algorithm 2 line 4: x_{t-1} = mu_theta(x_t, t) + sigma_t z given eps, at every t (z = 0 at t = 1)."""
    kind = ctx.adapter.variances[option]
    mapping = x0_map(ctx)
    rng = ctx.rng(f"reverse_step[{option}]")
    worst = Worst()
    for p in range(1, ctx.T + 1):
        def step(e, x, zz, vv, p=p):
            return ctx.adapter.reverse_step(e, x, ctx.to_adapter(p), zz, option, vv)
        check_step(ctx, worst, step, p, p - 1, kind, rng, mapping)
    notes = ctx.notes(*X0_MAP_CONVENTIONS, *((Convention.LEARNED_VARIANCE,) if kind.learned else ()))
    criterion = rounding_criterion(ctx) + f"; sigma_t^2 claimed: {kind.value}"
    return exact_result(ctx, f"reverse_step[{option}]", worst, criterion, f"reverse_step:{option}", notes)


def strided_steps(ctx: Context) -> list[int]:
    """The timesteps the adapter's respaced sampler visits at its S, descending (adapter convention)."""
    S = ctx.inference_steps(ctx.config.strided_steps)
    return [int(t) for t in cast(StridedSteps, ctx.adapter).strided_timesteps(S)]  # run only when offered


def case_strided(ctx: Context, option: str) -> CaseResult:
    """A respaced step t -> s against the strided posterior q(x_s | x_t, x_0) of derivation (i), every stride."""
    kind = ctx.adapter.variances[option]
    S = ctx.inference_steps(ctx.config.strided_steps)
    name = f"strided[{option}, S={S}]"
    steps = strided_steps(ctx)
    mapping = x0_map(ctx)
    rng = ctx.rng(name)
    worst = Worst()
    for t, s in zip(steps, steps[1:] + [ctx.base - 1], strict=True):
        p, s_paper = ctx.to_paper(t), ctx.to_paper(s)

        def step(e, x, zz, vv, t=t, s=s):
            return ctx.adapter.strided_step(e, x, t, s, zz, option, vv)
        check_step(ctx, worst, step, p, s_paper, kind, rng, mapping)
    notes = ctx.notes(*X0_MAP_CONVENTIONS, Convention.TIMESTEPS,
                      *((Convention.LEARNED_VARIANCE,) if kind.learned else ()))
    criterion = (rounding_criterion(ctx)
                 + f"; sigma^2 over the stride claimed: {kind.value}; visits {len(steps)} timesteps")
    return exact_result(ctx, name, worst, criterion, f"strided_step:{option}:{S}", notes)


def ddim_oracle(ctx: Context, values: dict, mapping: X0Map | None) -> tuple[np.ndarray, np.ndarray]:
    """Eq. 12 given the network output; with clipping or thresholding, eps re-derived from the mapped x0_hat first
    (the mapped x0_hat's own tolerance moves x_s through oracle.DDIM_COEF_X0).

    At alpha_bar_s = 1 (s is x_0; m_s = 0, so sigma = 0) eq. 12 is x0_hat itself. It is evaluated as such: the general
    forms' rounding bound is infinite there (sqrt(m_s - sigma^2) has 0 / 0 partial derivatives), which would leave
    the last step uncompared.
    """
    if np.all(np.asarray(values[oracle.m_s]) == 0.0):
        if mapping is None:
            x0_hat, tol = oracle.evaluate(oracle.X0_HATS[ctx.prediction], values, ctx.u)
            return x0_hat, np.fmax(tol, eps_route_bound(ctx, values, oracle.X0_HAT, oracle.X0_HAT_COEF_EPS))
        return mapped_x0(ctx, values, mapping)
    if mapping is None:
        expected, tol = oracle.evaluate(oracle.DDIM_BY_PREDICTION[ctx.prediction], values, ctx.u)
        return expected, np.fmax(tol, eps_route_bound(ctx, values, oracle.DDIM_FORMS, oracle.DDIM_COEF_EPS))
    x0_used, tol_x0 = mapped_x0(ctx, values, mapping)
    eps_used = (values[oracle.xt] - np.sqrt(values[oracle.a_t]) * x0_used) / np.sqrt(values[oracle.m_t])
    expected, tol = oracle.evaluate(oracle.DDIM_FORMS, {**values, oracle.eps: eps_used}, ctx.u)
    coef, _ = oracle.evaluate(oracle.DDIM_COEF_X0, values, ctx.u)
    return expected, tol + np.abs(coef) * tol_x0


def ddim_steps(ctx: Context) -> list[tuple[int, int]]:
    """The (t, s) steps of the adapter's DDIM list at its S (s = base - 1 for the last)."""
    S = ctx.inference_steps(ctx.config.ddim_steps)
    steps = [int(t) for t in cast(DdimSteps, ctx.adapter).ddim_timesteps(S)]  # run only when offered
    return list(zip(steps, steps[1:] + [ctx.base - 1], strict=True))


def check_ddim_at(ctx: Context, worst: Worst, t: int, s: int, eta_value: float, given: StepInputs,
                  mapping: X0Map | None) -> None:
    """One DDIM step t -> s at the given inputs against eq. 12 (clipping or thresholding as the adapter declares)."""
    p, s_paper = ctx.to_paper(t), ctx.to_paper(s)
    out = to_numpy(cast(DdimSteps, ctx.adapter).ddim_step(ctx.tensor(given.out), ctx.tensor(given.xt), t, s,
                                                          eta_value, ctx.tensor(given.z)))
    values: dict[sp.Symbol, np.ndarray | float] = {
        **oracle.stride_intermediates(ctx.alpha_bar(p), ctx.alpha_bar(s_paper)), oracle.xt: given.xt,
        oracle.OUTPUT[ctx.prediction]: given.out, oracle.z: given.z if s_paper > 0 else np.zeros_like(given.z),
        oracle.eta: eta_value}
    expected, tol = ddim_oracle(ctx, values, mapping)
    worst.update("x_s", out, expected, tol, p, {ctx.output_name: given.out, "xt": given.xt, "z": given.z})


def case_ddim(ctx: Context, eta_value: float) -> CaseResult:
    """A DDIM step t -> s against Song et al. eq. 12 with sigma(eta) of eq. 16, every step of S."""
    S = ctx.inference_steps(ctx.config.ddim_steps)
    name = f"ddim[eta={eta_value:g}, S={S}]"
    steps = ddim_steps(ctx)
    mapping = x0_map(ctx)
    rng = ctx.rng(name)
    worst = Worst()
    for t, s in steps:
        check_ddim_at(ctx, worst, t, s, eta_value, draw_step_inputs(ctx, rng, None), mapping)
    notes = ctx.notes(*X0_MAP_CONVENTIONS, Convention.TIMESTEPS)
    criterion = rounding_criterion(ctx) + f"; visits {len(steps)} timesteps"
    return exact_result(ctx, name, worst, criterion, f"ddim_step:{eta_value:g}:{S}", notes)


# -------------------------------------------------------------------------------------------------- finite
def case_finite(ctx: Context) -> CaseResult:
    """Every required operation returns finite values at every t (t = 1 and t = T included), every variance."""
    rng = ctx.rng("finite")
    a = ctx.adapter
    criterion = "all outputs finite (x in [-1, 1] or N(0, 1.5^2), eps, z ~ N(0, 1); learned v in range)"
    not_offered: dict[str, str] = {}  # operation -> why, for those the adapter does not offer
    for p in range(1, ctx.T + 1):
        t = ctx.to_adapter(p)
        x0_, xt_, z_ = (ctx.tensor(draw(rng, ctx, k)) for k in ("x0", "xt", "z"))
        e_ = ctx.tensor(draw_output(rng, ctx))
        calls: list[tuple[str, Callable[[], object]]] = [
            ("q_sample", partial(a.q_sample, x0_, t, z_)),
            ("q_posterior", partial(a.q_posterior, x0_, xt_, t)),
        ]
        for option, kind in a.variances.items():
            v_ = learned_input(rng, ctx, kind)
            vt = None if v_ is None else ctx.tensor(v_)
            calls.append((f"reverse_step:{option}", partial(a.reverse_step, e_, xt_, t, z_, option, vt)))
        for operation, call in calls:
            if operation in not_offered:
                continue
            try:
                out = call()
            except NotOffered as why:
                not_offered[operation] = str(why)
                continue
            for part in (out if isinstance(out, tuple) else (out,)):
                values = to_numpy(part)
                if not np.all(np.isfinite(values)):
                    bad = int(np.sum(~np.isfinite(values)))
                    where = f"t = {t} in its convention (paper t = {p})"
                    inputs = {"x0": to_numpy(x0_)[0].reshape(-1).tolist(), "xt": to_numpy(xt_)[0].reshape(-1).tolist(),
                              ctx.output_name: to_numpy(e_)[0].reshape(-1).tolist(),
                              "z": to_numpy(z_)[0].reshape(-1).tolist()}
                    return CaseResult("finite", Status.FAIL, criterion,
                                      f"{operation} returned {bad} non-finite values ({values.reshape(-1)[0]!r}...) "
                                      f"at {where}", float("inf"), float("nan"), where, (), operation, t, inputs)
    if len(not_offered) == len(calls):  # nothing to check
        return CaseResult("finite", Status.NOT_APPLICABLE, criterion, "; ".join(sorted(set(not_offered.values()))))
    return CaseResult("finite", Status.PASS, criterion, f"{ctx.T} timesteps x every operation and variance option")


def loss_weights(ctx: Context) -> np.ndarray:
    """The per-timestep weights [T] the adapter's loss declares (`loss_weights()`), 1 where it declares none."""
    if not hasattr(ctx.adapter, "loss_weights"):
        return np.ones(ctx.T)
    return np.asarray(ctx.adapter.loss_weights(), dtype=np.float64).reshape(-1)


def loss_target(ctx: Context, p: int, x0_: np.ndarray, noise_: np.ndarray) -> np.ndarray:
    """What the network output is trained towards at paper t = p: noise, x_0, or v = sqrt(a) eps - sqrt(1 - a) x_0."""
    if ctx.prediction is Prediction.EPS:
        return noise_
    if ctx.prediction is Prediction.X0:
        return x0_
    a = ctx.alpha_bar(p)
    return np.sqrt(a) * noise_ - np.sqrt(1.0 - a) * x0_


def eps_route_scale(ctx: Context, p: int, xt_: np.ndarray, tol_xt: np.ndarray, noise_: np.ndarray,
                    out_: np.ndarray) -> np.ndarray:
    """The rounding scale [B] (per image, before K u) of the x_0 or v loss computed as Algorithm 1's eps loss of the
    converted output, mean((noise - eps_hat(x_t, output))^2) with eps_hat of derivation (o).

    Both routes give w_t mean((target - output)^2) with w_t = SNR_t (x_0) or alpha_bar_t (v), but this one forms
    noise - eps_hat = sqrt(w_t) (target - output) from two O(1) terms: where w_t is small (t near T) it cancels, and
    its rounding is about u / sqrt(w_t) times that of the direct form's, which its bound must allow for.
    eps_hat(x_t, output*(x_t)) = eps*(x_t), so x_t's rounding reaches it through eps*'s slope.
    """
    values = {**ctx.step(p), oracle.xt: xt_, oracle.OUTPUT[ctx.prediction]: out_}
    eps_hat, tol_eps = oracle.evaluate(oracle.EPS_HATS[ctx.prediction], values, ctx.u)
    slope = abs(ctx.config.data.slope(ctx.alpha_bar(p), Prediction.EPS))
    spread = np.abs(noise_) + np.abs(eps_hat) + tol_eps / (oracle.ROUNDING_FACTOR * ctx.u) + slope * tol_xt / ctx.u
    per_dim = 2 * np.abs(noise_ - eps_hat) * spread
    return per_dim.reshape(noise_.shape[0], -1).mean(1)


def case_loss_given_draws(ctx: Context) -> CaseResult:
    """The training loss at given (x_0, t, noise) equals w_t mean((target - output(x_t, t))^2): Algorithm 1 for an
    eps model (target = noise, w = 1); the x_0 or v target (derivation (o)) and the adapter's declared weights
    otherwise."""
    rng = ctx.rng("loss_given_draws")
    config = ctx.config
    eps_model = config.data.model(ctx.alpha_bars, ctx.base, ctx.prediction)
    weights = loss_weights(ctx)
    adapter = cast(TrainingLoss, ctx.adapter)  # run only when offered (run_adapter checks)
    worst = Worst()
    criterion = rounding_criterion(ctx)
    for p in sorted({1, max(1, ctx.T // 2), ctx.T}):
        x0_, n = draw(rng, ctx, "x0"), draw(rng, ctx, "noise")
        t = torch.full((x0_.shape[0],), ctx.to_adapter(p), dtype=torch.int64)
        out = to_numpy(adapter.training_loss(eps_model, ctx.tensor(x0_), t, ctx.tensor(n)))
        values = {**ctx.step(p), oracle.x0: x0_,
                  oracle.noise: n}
        xt_, tol_xt = oracle.evaluate(oracle.Q_SAMPLE, values, ctx.u)
        e = to_numpy(eps_model(torch.tensor(xt_), t))
        target = loss_target(ctx, p, x0_, n)
        w = weights[p - 1]
        per_image = w * ((target - e) ** 2).reshape(n.shape[0], -1).mean(axis=1)
        slope = abs(config.data.slope(ctx.alpha_bar(p), ctx.prediction))
        scale = w * (2 * np.abs(target - e) * (np.abs(target) + np.abs(e) + slope * tol_xt / ctx.u)
                     ).reshape(n.shape[0], -1).mean(1)
        if ctx.prediction is not Prediction.EPS:  # the same loss by the other route: the largest bound decides
            scale = np.maximum(scale, eps_route_scale(ctx, p, xt_, tol_xt, n, e))
        expected = per_image if out.size == per_image.size else np.array(per_image.mean())
        tol = oracle.ROUNDING_FACTOR * ctx.u * (np.abs(expected) + (scale if out.size == per_image.size
                                                                    else scale.mean()))
        worst.update("loss", out.reshape(expected.shape), expected, np.asarray(tol), p, {"x0": x0_, "noise": n})
    return exact_result(ctx, "loss_given_draws", worst, criterion, "training_loss")
