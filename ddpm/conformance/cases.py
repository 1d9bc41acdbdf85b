"""The cases of the conformance suite: each a named check of one operation of an adapter against the oracle.

Exact cases compare an operation at every timestep (t = 1 and t = T included) with the float64 oracle of
`ddpm.conformance.oracle` under its rounding-error tolerance; statistical cases (`chain[...]`,
`loss_at_eps_star`) drive the implementation with the exact eps* of Gaussian data and test what it produces
against the law the derivations predict, at a family-wise `SuiteConfig.alpha` with Holm's correction.

Every case returns a `CaseResult`: pass, fail (with the worst deviation, where it occurs and the inputs there,
from which the runner builds a reproduction), not applicable (the implementation lacks the operation), or
convention (it passes only under a convention the adapter declared, which is shown with the result).
"""

from __future__ import annotations

import enum
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from functools import partial
from typing import TYPE_CHECKING, cast

import numpy as np
import torch
from scipy import stats

from ddpm.conformance import oracle
from ddpm.conformance.protocol import (
    Adapter,
    Chain,
    ChainKind,
    Convention,
    DdimSteps,
    NotOffered,
    ScheduleKind,
    StridedSteps,
    TrainingLoss,
    VarianceKind,
)

if TYPE_CHECKING:
    import sympy as sp

Tensor = torch.Tensor
IMAGE = (1, 2, 2)  # [C, H, W] of the tensors fed to adapters: small, but shaped like images


class Status(enum.Enum):
    """The outcome of one case."""

    PASS = "pass"
    FAIL = "fail"
    NOT_APPLICABLE = "not applicable"
    CONVENTION = "convention"


@dataclass(frozen=True)
class CaseResult:
    """What one case found for one adapter: `ratio` is the worst |deviation| / tolerance (exact cases), `p_value`
    the smallest Holm-adjusted p-value (statistical cases)."""

    case: str
    status: Status
    criterion: str
    detail: str = ""
    ratio: float | None = None
    deviation: float | None = None
    where: str = ""
    conventions: tuple[str, ...] = ()
    operation: str | None = None
    t: int | None = None
    inputs: dict | None = None
    expected: list | None = None
    reproduction: str | None = None
    reproduction_output: str | None = None
    p_value: float | None = None  # statistical cases: the smallest Holm-adjusted p-value of the case's family


@dataclass(frozen=True)
class SuiteConfig:
    """Sizes, seed and alpha of a suite run (the defaults are what `nox -s conformance` uses)."""

    batch: int = 4  # images per timestep in the exact cases
    strided_steps: int = 100  # S of the strided (respaced) case; capped at T
    ddim_steps: int = 50
    ddim_etas: tuple[float, ...] = (0.0, 0.5, 1.0)
    chain_samples: int = 2000  # images per chain (x [n, 1, 2, 2]: 4 values each)
    loss_timesteps: int = 4  # paper t in {1, ~T/3, ~2T/3, T}
    loss_batches: int = 40
    loss_batch: int = 100
    alpha: float = 1e-3  # family-wise, per statistical case (Holm)
    seed: int = 0
    data: oracle.GaussianData = field(default_factory=oracle.GaussianData)


class Context:
    """One adapter with what every case needs: its tables in float64, timestep maps, a seeded NumPy generator."""

    def __init__(self, adapter: Adapter, config: SuiteConfig) -> None:
        self.adapter = adapter
        self.config = config
        self.u = oracle.unit_roundoff(adapter.dtype)
        self.alpha_bars = np.asarray(adapter.alpha_bars(), dtype=np.float64).reshape(-1)  # [T], index paper t - 1
        self.T = self.alpha_bars.shape[0]
        self.betas = np.asarray(adapter.betas(), dtype=np.float64).reshape(-1)  # [T], index paper t - 1
        self.base = int(adapter.timestep_base)

    def rng(self, case: str) -> np.random.Generator:
        return np.random.default_rng([self.config.seed, *case.encode()])

    def to_adapter(self, paper_t: int) -> int:
        return paper_t - 1 + self.base

    def to_paper(self, adapter_t: int) -> int:
        return int(adapter_t) - self.base + 1

    def step(self, paper_t: int) -> dict:
        """The oracle's intermediates of the one step t -> t - 1 (beta_t from the adapter's betas table)."""
        return oracle.stride_intermediates(self.alpha_bar(paper_t), self.alpha_bar(paper_t - 1),
                                           self.betas[paper_t - 1])

    def alpha_bar(self, paper_t: int) -> float:
        """alpha_bar at the paper's t (1 at t = 0)."""
        return 1.0 if paper_t == 0 else float(self.alpha_bars[paper_t - 1])

    def tensor(self, values: np.ndarray) -> Tensor:
        return torch.tensor(values, dtype=torch.float64).to(self.adapter.dtype)

    def exact(self, values: np.ndarray) -> np.ndarray:
        """The values as the adapter sees them (rounded to its dtype), back in float64."""
        return self.tensor(values).to(torch.float64).numpy()

    def where(self, paper_t: int, index: tuple) -> str:
        return f"t = {self.to_adapter(paper_t)} in its convention (paper t = {paper_t}), element {list(index)}"

    def notes(self, *kinds: Convention) -> tuple[str, ...]:
        return tuple(f"{c.value}: {self.adapter.conventions[c]}" for c in kinds if c in self.adapter.conventions)


def _numpy(x: object) -> np.ndarray:
    return (x.detach().to(torch.float64).cpu().numpy() if isinstance(x, Tensor)
            else np.asarray(x, dtype=np.float64))


@dataclass
class _Worst:
    """The running worst deviation / tolerance over the timesteps of one exact case."""

    ratio: float = 0.0
    deviation: float = 0.0
    paper_t: int | None = None
    index: tuple = ()
    part: str = ""
    inputs: dict | None = None
    expected: list | None = None

    def update(self, part: str, out: np.ndarray, expected: np.ndarray, tol: np.ndarray, paper_t: int,
               inputs: dict[str, np.ndarray]) -> None:
        out = np.broadcast_to(out, expected.shape)
        dev = np.abs(out - expected)
        with np.errstate(divide="ignore", invalid="ignore"):
            ratio = np.where(tol > 0, dev / np.where(tol > 0, tol, 1.0), np.where(dev > 0, np.inf, 0.0))
        ratio = np.where(np.isfinite(out), ratio, np.inf)
        ratio = np.where(np.isfinite(expected) & np.isfinite(tol), ratio, 0.0)  # no oracle there: not compared
        k = np.unravel_index(int(np.argmax(ratio)), ratio.shape)
        if ratio[k] > self.ratio or self.paper_t is None:
            b = k[0] if ratio.ndim >= 1 else slice(None)  # the image (batch row) of the worst element
            self.ratio, self.deviation = float(ratio[k]), float(dev[k])
            self.paper_t, self.index, self.part = paper_t, tuple(int(i) for i in k), part
            self.inputs = {name: np.asarray(value)[b].reshape(-1).tolist() for name, value in inputs.items()
                           if np.ndim(value) > 0}
            expected = np.asarray(expected)
            self.expected = (expected[b] if expected.ndim else expected).reshape(-1).tolist()


def _exact_result(ctx: Context, case: str, worst: _Worst, criterion: str, operation: str,
                  conventions: tuple[str, ...] = ()) -> CaseResult:
    where = ctx.where(worst.paper_t, worst.index) if worst.paper_t is not None else ""
    if worst.ratio <= 1.0:
        status = Status.CONVENTION if conventions else Status.PASS
        detail = f"worst deviation {worst.deviation:.3g} = {worst.ratio:.3g} x tolerance ({worst.part}, {where})"
    else:
        status = Status.FAIL
        dev = "non-finite output" if not np.isfinite(worst.ratio) and not np.isfinite(worst.deviation) else (
            f"deviation {worst.deviation:.3g} = {worst.ratio:.3g} x tolerance")
        detail = f"{worst.part}: {dev} at {where}"
    return CaseResult(case, status, criterion, detail, worst.ratio, worst.deviation, where, conventions,
                      operation, None if worst.paper_t is None else ctx.to_adapter(worst.paper_t),
                      worst.inputs, worst.expected)


def _criterion(ctx: Context) -> str:
    return (f"|out - oracle| <= {oracle.ROUNDING_FACTOR:g} (u |f| + sum_q |df/dq| dq), u = {ctx.u:.3g} "
            f"({str(ctx.adapter.dtype).replace('torch.', '')}); oracle at the adapter's own alpha_bar table")


def _draw(rng: np.random.Generator, ctx: Context, kind: str) -> np.ndarray:
    shape = (ctx.config.batch, *IMAGE)
    if kind == "x0":
        return ctx.exact(rng.uniform(-1.0, 1.0, shape))
    if kind == "z":  # |z| >= 0.5 so that sigma = (out(z) - out(0)) / z is well conditioned
        return ctx.exact(rng.choice([-1.0, 1.0], shape) * (0.5 + np.abs(rng.standard_normal(shape))))
    scale = 1.5 if kind == "xt" else 1.0
    return ctx.exact(scale * rng.standard_normal(shape))


def _learned_input(rng: np.random.Generator, ctx: Context, kind: VarianceKind) -> np.ndarray | None:
    shape = (ctx.config.batch, *IMAGE)
    if kind is VarianceKind.LEARNED_RANGE:
        return ctx.exact(rng.uniform(-1.0, 1.0, shape))
    log_var = rng.uniform(np.log(1e-4), np.log(0.5), shape)
    if kind is VarianceKind.LEARNED_LOG_VARIANCE:
        return ctx.exact(log_var)
    if kind is VarianceKind.LEARNED_VARIANCE:
        return ctx.exact(np.exp(log_var))
    return None


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
    if not np.all((betas > 0) & (betas < 1)):
        k = int(np.argmax(~((betas > 0) & (betas < 1))))
        problems.append((np.inf, np.nan, k + 1, f"beta outside (0, 1): {betas[k]!r}"))
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
        ratios = np.where(np.isfinite(ctx.alpha_bars), dev / tol, np.inf)
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
    worst = _Worst()
    for p in range(1, ctx.T + 1):
        x0_, n = _draw(rng, ctx, "x0"), _draw(rng, ctx, "noise")
        out = _numpy(ctx.adapter.q_sample(ctx.tensor(x0_), ctx.to_adapter(p), ctx.tensor(n)))
        values = {**ctx.step(p), oracle.x0: x0_,
                  oracle.noise: n}
        expected, tol = oracle.evaluate(oracle.Q_SAMPLE, values, ctx.u)
        worst.update("x_t", out, expected, tol, p, {"x0": x0_, "noise": n})
    return _exact_result(ctx, "q_sample", worst, _criterion(ctx), "q_sample")


def case_posterior(ctx: Context) -> CaseResult:
    """q(x_{t-1} | x_t, x_0): mean mu_tilde_t and variance beta_tilde_t (eq. 7) at every t; at t = 1 x_0 and 0."""
    rng = ctx.rng("posterior")
    worst = _Worst()
    for p in range(1, ctx.T + 1):
        x0_, xt_ = _draw(rng, ctx, "x0"), _draw(rng, ctx, "xt")
        mean, var = ctx.adapter.q_posterior(ctx.tensor(x0_), ctx.tensor(xt_), ctx.to_adapter(p))
        values = {**ctx.step(p), oracle.x0: x0_,
                  oracle.xt: xt_}
        inputs = {"x0": x0_, "xt": xt_}
        expected, tol = oracle.evaluate(oracle.POSTERIOR_MEAN, values, ctx.u)
        worst.update("mean", _numpy(mean), expected, tol, p, inputs)
        expected, tol = oracle.evaluate(oracle.POSTERIOR_VARIANCE, values, ctx.u)
        var_np = np.broadcast_to(_numpy(var), np.broadcast_shapes(np.shape(_numpy(var)), x0_.shape))
        worst.update("variance", var_np, np.broadcast_to(expected, var_np.shape), np.broadcast_to(tol, var_np.shape),
                     p, inputs)
    return _exact_result(ctx, "posterior", worst, _criterion(ctx), "q_posterior")


# ---------------------------------------------------------------------------------------- reverse steps
def _mean_oracle(ctx: Context, values: dict, clip: bool) -> tuple[np.ndarray, np.ndarray]:
    """Algorithm 2's mean over a step t -> s given eps; with clipping, mu_tilde(clamp(x0_hat, -1, 1), x_t)."""
    if not clip:
        return oracle.evaluate(oracle.MEAN_FORMS, values, ctx.u)
    x0_hat, tol_x0 = oracle.evaluate(oracle.X0_HAT, values, ctx.u)
    clipped = {**values, oracle.x0: np.clip(x0_hat, -1.0, 1.0)}
    mean, tol = oracle.evaluate(oracle.POSTERIOR_MEAN, clipped, ctx.u)
    coef, _ = oracle.evaluate(oracle.POSTERIOR_COEF_X0, values, ctx.u)
    return mean, tol + np.abs(coef) * np.where(np.abs(x0_hat) > 1, 0.0, tol_x0)


def _check_step(ctx: Context, worst: _Worst, step: Callable, p: int, s_paper: int, kind: VarianceKind | None,
                rng: np.random.Generator, clip: bool) -> None:
    """One stochastic step t -> s: the mean from z = 0 and sigma = (out(z) - out(0)) / z against the oracle."""
    eps_, xt_, z_ = _draw(rng, ctx, "eps"), _draw(rng, ctx, "xt"), _draw(rng, ctx, "z")
    v_ = _learned_input(rng, ctx, kind) if kind is not None else None
    inputs = {"eps": eps_, "xt": xt_, "z": z_} | ({} if v_ is None else {"v": v_})
    zero = np.zeros_like(z_)
    out0 = _numpy(step(ctx.tensor(eps_), ctx.tensor(xt_), ctx.tensor(zero), None if v_ is None else ctx.tensor(v_)))
    outz = _numpy(step(ctx.tensor(eps_), ctx.tensor(xt_), ctx.tensor(z_), None if v_ is None else ctx.tensor(v_)))
    intermediates = ctx.step(p) if s_paper == p - 1 else oracle.stride_intermediates(ctx.alpha_bar(p),
                                                                                      ctx.alpha_bar(s_paper))
    values = {**intermediates, oracle.xt: xt_, oracle.eps: eps_, oracle.z: z_}
    if v_ is not None:
        values[oracle.v] = v_
    mean, tol_mean = _mean_oracle(ctx, values, clip)
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
    clip = Convention.CLIPS_X0 in ctx.adapter.conventions
    rng = ctx.rng(f"reverse_step[{option}]")
    worst = _Worst()
    for p in range(1, ctx.T + 1):
        def step(e, x, zz, vv, p=p):
            return ctx.adapter.reverse_step(e, x, ctx.to_adapter(p), zz, option, vv)
        _check_step(ctx, worst, step, p, p - 1, kind, rng, clip)
    notes = ctx.notes(Convention.CLIPS_X0, *((Convention.LEARNED_VARIANCE,) if kind.learned else ()))
    criterion = _criterion(ctx) + f"; sigma_t^2 claimed: {kind.value}"
    return _exact_result(ctx, f"reverse_step[{option}]", worst, criterion, f"reverse_step:{option}", notes)


def case_strided(ctx: Context, option: str) -> CaseResult:
    """A respaced step t -> s against the strided posterior q(x_s | x_t, x_0) of derivation (i), every stride."""
    kind = ctx.adapter.variances[option]
    S = min(ctx.config.strided_steps, ctx.T)
    name = f"strided[{option}, S={S}]"
    steps = [int(t) for t in cast(StridedSteps, ctx.adapter).strided_timesteps(S)]  # run only when offered
    clip = Convention.CLIPS_X0 in ctx.adapter.conventions
    rng = ctx.rng(name)
    worst = _Worst()
    for t, s in zip(steps, steps[1:] + [ctx.base - 1], strict=True):
        p, s_paper = ctx.to_paper(t), ctx.to_paper(s)

        def step(e, x, zz, vv, t=t, s=s):
            return ctx.adapter.strided_step(e, x, t, s, zz, option, vv)
        _check_step(ctx, worst, step, p, s_paper, kind, rng, clip)
    notes = ctx.notes(Convention.CLIPS_X0, Convention.TIMESTEPS,
                      *((Convention.LEARNED_VARIANCE,) if kind.learned else ()))
    criterion = _criterion(ctx) + f"; sigma^2 over the stride claimed: {kind.value}; visits {len(steps)} timesteps"
    return _exact_result(ctx, name, worst, criterion, f"strided_step:{option}:{S}", notes)


def case_ddim(ctx: Context, eta_value: float) -> CaseResult:
    """A DDIM step t -> s against Song et al. eq. 12 with sigma(eta) of eq. 16, every step of S."""
    S = min(ctx.config.ddim_steps, ctx.T)
    name = f"ddim[eta={eta_value:g}, S={S}]"
    adapter = cast(DdimSteps, ctx.adapter)  # run only when offered (run_adapter checks)
    steps = [int(t) for t in adapter.ddim_timesteps(S)]
    clip = Convention.CLIPS_X0 in ctx.adapter.conventions
    rng = ctx.rng(name)
    worst = _Worst()
    for t, s in zip(steps, steps[1:] + [ctx.base - 1], strict=True):
        p, s_paper = ctx.to_paper(t), ctx.to_paper(s)
        eps_, xt_, z_ = _draw(rng, ctx, "eps"), _draw(rng, ctx, "xt"), _draw(rng, ctx, "z")
        out = _numpy(adapter.ddim_step(ctx.tensor(eps_), ctx.tensor(xt_), t, s, eta_value, ctx.tensor(z_)))
        values: dict[sp.Symbol, np.ndarray | float] = {
            **oracle.stride_intermediates(ctx.alpha_bar(p), ctx.alpha_bar(s_paper)), oracle.xt: xt_,
            oracle.eps: eps_, oracle.z: z_ if s_paper > 0 else np.zeros_like(z_), oracle.eta: eta_value}
        if clip:
            x0_hat, tol_x0 = oracle.evaluate(oracle.X0_HAT, values, ctx.u)
            x0c = np.clip(x0_hat, -1.0, 1.0)
            values[oracle.eps] = (xt_ - np.sqrt(values[oracle.a_t]) * x0c) / np.sqrt(values[oracle.m_t])
        expected, tol = oracle.evaluate(oracle.DDIM_FORMS, values, ctx.u)
        worst.update("x_s", out, expected, tol, p, {"eps": eps_, "xt": xt_, "z": z_})
    notes = ctx.notes(Convention.CLIPS_X0, Convention.TIMESTEPS)
    criterion = _criterion(ctx) + f"; visits {len(steps)} timesteps"
    return _exact_result(ctx, name, worst, criterion, f"ddim_step:{eta_value:g}:{S}", notes)


# -------------------------------------------------------------------------------------------------- finite
def case_finite(ctx: Context) -> CaseResult:
    """Every required operation returns finite values at every t (t = 1 and t = T included), every variance."""
    rng = ctx.rng("finite")
    a = ctx.adapter
    criterion = "all outputs finite (x in [-1, 1] or N(0, 1.5^2), eps, z ~ N(0, 1); learned v in range)"
    for p in range(1, ctx.T + 1):
        t = ctx.to_adapter(p)
        x0_, xt_, e_, z_ = (ctx.tensor(_draw(rng, ctx, k)) for k in ("x0", "xt", "eps", "z"))
        calls: list[tuple[str, Callable[[], object]]] = [
            ("q_sample", partial(a.q_sample, x0_, t, z_)),
            ("q_posterior", partial(a.q_posterior, x0_, xt_, t)),
        ]
        for option, kind in a.variances.items():
            v_ = _learned_input(rng, ctx, kind)
            vt = None if v_ is None else ctx.tensor(v_)
            calls.append((f"reverse_step:{option}", partial(a.reverse_step, e_, xt_, t, z_, option, vt)))
        for operation, call in calls:
            try:
                out = call()
            except NotOffered:
                continue
            for part in (out if isinstance(out, tuple) else (out,)):
                values = _numpy(part)
                if not np.all(np.isfinite(values)):
                    bad = int(np.sum(~np.isfinite(values)))
                    where = f"t = {t} in its convention (paper t = {p})"
                    inputs = {"x0": _numpy(x0_)[0].reshape(-1).tolist(), "xt": _numpy(xt_)[0].reshape(-1).tolist(),
                              "eps": _numpy(e_)[0].reshape(-1).tolist(), "z": _numpy(z_)[0].reshape(-1).tolist()}
                    return CaseResult("finite", Status.FAIL, criterion,
                                      f"{operation} returned {bad} non-finite values ({values.reshape(-1)[0]!r}...) "
                                      f"at {where}", float("inf"), float("nan"), where, (), operation, t, inputs)
    return CaseResult("finite", Status.PASS, criterion, f"{ctx.T} timesteps x every operation and variance option")


# ------------------------------------------------------------------------------------------- statistical
def _holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error control)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def chain_law(ctx: Context, chain: Chain) -> tuple[float, float]:
    """The exact law N(mean, var) per dimension of the chain's output when driven by eps* of the suite's data.

    eps* is affine in x_t, so every step (ancestral over t -> s with the claimed sigma, or DDIM eq. 12) maps
    N(mu, v) to N(A mu + B, A^2 v + sigma^2), starting from N(0, 1) at the first visited timestep.
    """
    data = ctx.config.data
    steps = [ctx.to_paper(t) for t in chain.timesteps]
    mean, var = 0.0, 1.0
    for p, s in zip(steps, steps[1:] + [0], strict=True):
        at, as_ = ctx.alpha_bar(p), ctx.alpha_bar(s)
        kappa = float(data.kappa(np.float64(at)))
        # eps* = kappa (x - sqrt(at) m); both step kinds are c_x x + c_e eps + sigma z.
        if chain.kind is ChainKind.ANCESTRAL:
            b = 1.0 - at / as_
            c_x, c_e = np.sqrt(as_ / at), -np.sqrt(as_ / at) * b / np.sqrt(1.0 - at)
            kind = ctx.adapter.variances[chain.variance]  # type: ignore[index]  # an ancestral Chain names one
            sigma2 = 0.0 if s == 0 else (b if kind is VarianceKind.BETA else (1.0 - as_) / (1.0 - at) * b)
        else:
            sigma2 = 0.0 if s == 0 else (
                chain.eta**2 * (1.0 - as_) / (1.0 - at) * (1.0 - at / as_))  # type: ignore[operator]  # ddim: eta set
            direction = np.sqrt(max(1.0 - as_ - sigma2, 0.0))
            c_x = np.sqrt(as_ / at)
            c_e = direction - np.sqrt(as_) * np.sqrt(1.0 - at) / np.sqrt(at)
        A = c_x + c_e * kappa
        B = -c_e * kappa * np.sqrt(at) * data.mean
        mean, var = A * mean + B, A * A * var + sigma2
    return float(mean), float(var)


def case_chain(ctx: Context, chain: Chain) -> CaseResult:
    """The full sampler driven by eps* of N(m, s^2) data produces the law the derivations predict (SciPy tests)."""
    config = ctx.config
    name = f"chain[{chain.label}]"
    criterion = (f"n = {config.chain_samples} x 4 values; KS, mean z-test and variance chi-square against the "
                 f"predicted law, Holm, family-wise alpha = {config.alpha:g}")
    if chain.kind is ChainKind.ANCESTRAL and (
            chain.variance not in ctx.adapter.variances
            or ctx.adapter.variances[chain.variance].learned):  # type: ignore[index]  # in variances: a str
        return CaseResult(name, Status.NOT_APPLICABLE, criterion, "needs a fixed variance option")
    mean, var = chain_law(ctx, chain)
    eps_model = config.data.eps_model(ctx.alpha_bars, ctx.base)
    generator = torch.Generator().manual_seed(int(ctx.rng(name).integers(2**62)))
    x = _numpy(chain.run(eps_model, (config.chain_samples, *IMAGE), generator)).reshape(-1)
    n = x.size
    if not np.all(np.isfinite(x)):
        return CaseResult(name, Status.FAIL, criterion, f"{int(np.sum(~np.isfinite(x)))} non-finite samples",
                          float("inf"), operation=f"chain:{chain.label}")
    sd = np.sqrt(var)
    p_ks = stats.kstest(x, "norm", args=(mean, sd)).pvalue
    zscore = (x.mean() - mean) / (sd / np.sqrt(n))
    p_mean = 2 * stats.norm.sf(abs(zscore))
    chi2 = np.sum((x - x.mean()) ** 2) / var
    p_var = 2 * min(stats.chi2.cdf(chi2, n - 1), stats.chi2.sf(chi2, n - 1))
    adjusted = _holm([p_ks, p_mean, p_var])
    labels = ("KS", "mean", "variance")
    data = config.data
    detail = (f"predicted N({mean:.5f}, {sd:.5f}^2) (data N({data.mean:g}, {data.std:g}^2)); sample mean "
              f"{x.mean():.5f}, sd {x.std(ddof=1):.5f}; Holm p: " + ", ".join(
                  f"{lab} {p:.3g}" for lab, p in zip(labels, adjusted, strict=True)))
    strided = len(chain.timesteps) < ctx.T  # the visited timesteps matter only when some are skipped
    notes = ctx.notes(Convention.CLIPS_X0, *((Convention.TIMESTEPS,) if strided else ()))
    if Convention.CLIPS_X0 in ctx.adapter.conventions:
        detail += "; the law ignores clipping (|E[x_0 | x_t]| > 1 has probability < 1e-4 for this data)"
    status = Status.FAIL if adjusted.min() < config.alpha else (Status.CONVENTION if notes else Status.PASS)
    return CaseResult(name, status, criterion, detail, None, abs(x.mean() - mean), "", notes,
                      f"chain:{chain.label}", p_value=float(adjusted.min()))


def case_loss_given_draws(ctx: Context) -> CaseResult:
    """The training loss at given (x_0, t, noise) equals mean((noise - eps_theta(x_t, t))^2) (Algorithm 1)."""
    rng = ctx.rng("loss_given_draws")
    config = ctx.config
    eps_model = config.data.eps_model(ctx.alpha_bars, ctx.base)
    adapter = cast(TrainingLoss, ctx.adapter)  # run only when offered (run_adapter checks)
    worst = _Worst()
    criterion = _criterion(ctx)
    for p in sorted({1, max(1, ctx.T // 2), ctx.T}):
        x0_, n = _draw(rng, ctx, "x0"), _draw(rng, ctx, "noise")
        t = torch.full((x0_.shape[0],), ctx.to_adapter(p), dtype=torch.int64)
        out = _numpy(adapter.training_loss(eps_model, ctx.tensor(x0_), t, ctx.tensor(n)))
        values = {**ctx.step(p), oracle.x0: x0_,
                  oracle.noise: n}
        xt_, tol_xt = oracle.evaluate(oracle.Q_SAMPLE, values, ctx.u)
        e = _numpy(eps_model(torch.tensor(xt_), t))
        per_image = ((n - e) ** 2).reshape(n.shape[0], -1).mean(axis=1)
        kappa = float(config.data.kappa(np.float64(ctx.alpha_bar(p))))
        scale = (2 * np.abs(n - e) * (np.abs(n) + np.abs(e) + kappa * tol_xt / ctx.u)).reshape(n.shape[0], -1).mean(1)
        expected = per_image if out.size == per_image.size else np.array(per_image.mean())
        tol = oracle.ROUNDING_FACTOR * ctx.u * (np.abs(expected) + (scale if out.size == per_image.size
                                                                    else scale.mean()))
        worst.update("loss", out.reshape(expected.shape), expected, np.asarray(tol), p, {"x0": x0_, "noise": n})
    return _exact_result(ctx, "loss_given_draws", worst, criterion, "training_loss")


def case_loss_at_eps_star(ctx: Context) -> CaseResult:
    """E[loss] at eps* equals its analytic minimum a s^2 / (a s^2 + 1 - a) at several t (t-tests, Holm)."""
    config = ctx.config
    rng = ctx.rng("loss_at_eps_star")
    data = config.data
    eps_model = data.eps_model(ctx.alpha_bars, ctx.base)
    adapter = cast(TrainingLoss, ctx.adapter)  # run only when offered (run_adapter checks)
    ts = sorted({int(round(v)) for v in np.linspace(1, ctx.T, config.loss_timesteps)})
    criterion = (f"{config.loss_batches} batches of {config.loss_batch} per t at paper t in {ts}; t-test of the "
                 f"batch means against a s^2 / (a s^2 + 1 - a), Holm, family-wise alpha = {config.alpha:g}")
    p_values, parts = [], []
    for p in ts:
        means = []
        for _ in range(config.loss_batches):
            shape = (config.loss_batch, *IMAGE)
            x0_ = ctx.exact(rng.normal(data.mean, data.std, shape))
            n = ctx.exact(rng.standard_normal(shape))
            t = torch.full((shape[0],), ctx.to_adapter(p), dtype=torch.int64)
            means.append(float(_numpy(adapter.training_loss(eps_model, ctx.tensor(x0_), t, ctx.tensor(n))).mean()))
        batch_means = np.asarray(means)
        expected = data.loss_minimum(ctx.alpha_bar(p))
        test = stats.ttest_1samp(batch_means, expected)
        p_values.append(test.pvalue)
        parts.append(f"t = {ctx.to_adapter(p)}: {batch_means.mean():.5f} vs {expected:.5f}")
    adjusted = _holm(p_values)
    k = int(np.argmin(adjusted))
    detail = "; ".join(f"{part} (Holm p {q:.3g})" for part, q in zip(parts, adjusted, strict=True))
    status = Status.FAIL if adjusted[k] < config.alpha else Status.PASS
    return CaseResult("loss_at_eps_star", status, criterion, detail, operation="training_loss",
                      t=ctx.to_adapter(ts[k]), p_value=float(adjusted[k]))


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
    S = min(ctx.config.strided_steps, ctx.T)
    for option in a.variances:
        out.append((f"strided[{option}, S={S}]", partial(case_strided, ctx, option), "strided_step"))
    D = min(ctx.config.ddim_steps, ctx.T)
    for eta_value in ctx.config.ddim_etas:
        out.append((f"ddim[eta={eta_value:g}, S={D}]", partial(case_ddim, ctx, eta_value), "ddim_step"))
    out.append(("loss_given_draws", lambda: case_loss_given_draws(ctx), "training_loss"))
    out.append(("loss_at_eps_star", lambda: case_loss_at_eps_star(ctx), "training_loss"))
    return out


def chain_cases(ctx: Context) -> list[tuple[str, Callable[[], CaseResult]]]:
    """One statistical case per full sampler the adapter offers (none without `chains`)."""
    chains = ctx.adapter.chains() if hasattr(ctx.adapter, "chains") else []
    return [(f"chain[{c.label}]", partial(case_chain, ctx, c)) for c in chains]


def not_applicable(name: str, why: str) -> CaseResult:
    """The result of a case whose operation the implementation does not offer."""
    return CaseResult(name, Status.NOT_APPLICABLE, "", why)


def with_reproduction(result: CaseResult, snippet: str | None, output: str | None) -> CaseResult:
    """`result` with a reproduction snippet (and what running it printed)."""
    return replace(result, reproduction=snippet, reproduction_output=output)


__all__ = ["CaseResult", "Context", "Status", "SuiteConfig", "chain_cases", "chain_law", "planned_cases"]
