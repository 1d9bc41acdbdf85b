"""The posterior-calibration case: a chain's law of x_0 given x_t, not only its marginal (simulation-based
calibration, Talts et al. 2018, arXiv:1804.06788).

`chain[...]` sees only the final marginal, so errors that cancel there pass it: noise too large at some steps and too
small at others, or scaled by 1 + delta and compensated elsewhere. Here, for a few start timesteps t of the chain
(visited ones near the `SuiteConfig.calibration_starts` fractions of T) and two data laws (`SuiteConfig.data`,
Gaussian, and `SuiteConfig.mixture`, two Gaussians: derivation (p)):

1. draw N images x_0 from the data and x_t ~ q(x_t | x_0) exactly in float64, rounded to the adapter's dtype;
2. run the implementation's chain from each x_t L times (`Chain.resume`; one call of batch 2 N L per start, a row
   answered by the exact output of its data, `data.model`, in the adapter's parameterisation);
3. per dimension, rank a reference draw of the chain's predicted law of x_0 given x_t among the L draws: under
   conformance the ranks are uniform on {0, ..., L} (ties broken at random), tested by a chi-square on L + 1 bins.
   For Gaussian data the predicted law is N(A x_t + B, V) exactly, so the draws are also standardised and their
   mean (z-test) and variance (chi-square) tested. The p-values of every start and data law are Holm-adjusted
   together, at the family-wise `SuiteConfig.alpha`.

The reference is a draw of the chain's own predicted law rather than the true x_0 (Talts et al. rank the latter): a
chain of finitely many steps does not draw q(x_0 | x_t) even with the exact denoiser. For Gaussian data its mean given
x_t is exact but its variance is not: with sigma_t^2 = beta_tilde_t at T = 1000 (linear schedule) it is 3% below
Var[x_0 | x_t], with beta_t 0.8% above, and a 100-step DDIM(eta = 1) chain is 20% below, so the true x_0's ranks would
fail correct implementations. The predicted law is that of the chain as claimed: the steps of `chain_law`
(ancestral with the claimed sigma, or DDIM eq. 12, in their x_0 form) started at x_t; for the mixture the oracle runs
those steps in float64 with the exact x_0* (clipped to [-1, 1] where the adapter declares clipping). The detail also
compares the draws' variance with q(x_0 | x_t) (derivation (p)), and reports the true x_0's rank test, untested.

A chain without `resume` is not applicable, and so is a deterministic one (DDIM with eta = 0): its law given x_t is a
point mass, which the exact `ddim[eta=0]` case checks step by step.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
from scipy import stats

from ddpm.conformance.cases.context import IMAGE, Context, to_numpy
from ddpm.conformance.cases.results import CaseResult, Status
from ddpm.conformance.cases.statistical import holm, step_coefficients
from ddpm.conformance.oracle import GaussianData, GaussianMixtureData
from ddpm.conformance.protocol import Chain, ChainKind, Convention

Data = GaussianData | GaussianMixtureData


@dataclass(frozen=True)
class ConditionalLaw:
    """x_0 = A x_t + B + sqrt(V) n, n ~ N(0, 1): a chain's law of x_0 given x_t when driven by the exact output of
    Gaussian data (every step is affine in x_t and adds independent Gaussian noise)."""

    A: float
    B: float
    V: float


def paper_steps(ctx: Context, chain: Chain, first: int) -> list[tuple[int, int]]:
    """The chain's steps (t, s) in paper timesteps from its visited timestep number `first` on (s = 0 is x_0)."""
    steps = [ctx.to_paper(t) for t in chain.timesteps[first:]]
    return list(zip(steps, steps[1:] + [0], strict=True))


def conditional_law(ctx: Context, chain: Chain, data: GaussianData, first: int) -> ConditionalLaw:
    """The claimed chain's law of x_0 given x at its visited timestep number `first`, driven by the exact output of
    Gaussian `data`: `chain_law`'s recursion started at the point mass x (A = 1, B = 0, V = 0)."""
    A, B, V = 1.0, 0.0, 0.0
    for p, s in paper_steps(ctx, chain, first):
        at, as_ = ctx.alpha_bar(p), ctx.alpha_bar(s)
        gain = float(data.gain(np.float64(at)))
        c_x, c_0, sigma2 = step_coefficients(ctx, chain, at, as_, s)
        a_step = c_x + c_0 * gain
        b_step = c_0 * (data.mean - gain * np.sqrt(at) * data.mean)
        A, B, V = a_step * A, a_step * B + b_step, a_step * a_step * V + sigma2
    return ConditionalLaw(float(A), float(B), float(V))


def simulate_chain(ctx: Context, chain: Chain, data: Data, first: int, x: np.ndarray,
                   rng: np.random.Generator) -> np.ndarray:
    """One draw of the claimed chain's x_0 per element of x (at its visited timestep number `first`), run by the
    oracle in float64 with the exact x_0* of `data` (clipped to [-1, 1] where the adapter declares clipping)."""
    clip = Convention.CLIPS_X0 in ctx.adapter.conventions
    x = np.asarray(x, dtype=np.float64)
    for p, s in paper_steps(ctx, chain, first):
        at, as_ = ctx.alpha_bar(p), ctx.alpha_bar(s)
        c_x, c_0, sigma2 = step_coefficients(ctx, chain, at, as_, s)
        x0_hat = data.posterior_mean(x, at)
        if clip:
            x0_hat = np.clip(x0_hat, -1.0, 1.0)
        x = c_x * x + c_0 * x0_hat + (np.sqrt(sigma2) * rng.standard_normal(x.shape) if sigma2 > 0 else 0.0)
    return x


def start_indices(ctx: Context, chain: Chain) -> list[int]:
    """Numbers of the chain's visited timesteps nearest each `calibration_starts` fraction of T (paper timesteps),
    among those followed by at least one noisy step (so the law given x_t is not a point mass); unique, in order."""
    paper = np.array([ctx.to_paper(t) for t in chain.timesteps], dtype=np.float64)
    usable = [k for k in range(len(paper)) if k < len(paper) - 1 and paper[k + 1] > 0]
    out: list[int] = []
    for fraction in ctx.config.calibration_starts:
        if usable:
            k = min(usable, key=lambda j: (abs(paper[j] - fraction * ctx.T), j))
            if k not in out:
                out.append(k)
    return out


def ranks(draws: np.ndarray, reference: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """The rank of each reference value among its L draws (draws [L, ...], reference [...]): the number of draws
    below it plus a uniform share of the draws equal to it (ties broken at random)."""
    below = np.sum(draws < reference, axis=0)
    ties = np.sum(draws == reference, axis=0)
    return below + np.floor(rng.random(reference.shape) * (ties + 1)).astype(np.int64)


def uniform_ranks_p(rank: np.ndarray, L: int) -> float:
    """Chi-square p-value of ranks against the uniform law on {0, ..., L}."""
    counts = np.bincount(rank.reshape(-1), minlength=L + 1)
    return float(stats.chisquare(counts).pvalue)


@dataclass
class _Part:
    """One (data law, start) of the case: its labelled p-values and what the detail says about it."""

    label: str
    p_values: dict[str, float]
    variance_ratio: float  # mean over x_t of the draws' variance / Var[x_0 | x_t]
    predicted_ratio: float | None  # the same for the predicted law (Gaussian data)
    talts_p: float  # the true x_0's ranks against uniform (not tested)


def _rows(models: list, count: int):
    """One model callable whose rows [k count, (k + 1) count) are answered by models[k] (a batch of several data laws
    goes through the chain in one call)."""

    def output(x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        return torch.cat([model(x[k * count:(k + 1) * count], t[k * count:(k + 1) * count])
                          for k, model in enumerate(models)])

    return output


def _calibrate(ctx: Context, chain: Chain, laws: list[tuple[str, Data]], first: int,
               rng: np.random.Generator) -> list[_Part]:
    """Steps 1-3 of the module docstring at one start, for every data law (one resume call of batch N L per law)."""
    N, L = ctx.config.calibration_draws, ctx.config.calibration_samples
    start = chain.timesteps[first]
    a = ctx.alpha_bar(ctx.to_paper(start))
    x0 = [data.sample(rng, (N, *IMAGE)) for _, data in laws]
    xt = [ctx.exact(np.sqrt(a) * x + np.sqrt(1.0 - a) * rng.standard_normal(x.shape)) for x in x0]  # as held
    generator = torch.Generator().manual_seed(int(rng.integers(2**62)))
    model = _rows([data.model(ctx.alpha_bars, ctx.base, ctx.prediction) for _, data in laws], N * L)
    batch = np.concatenate([np.tile(x, (L, 1, 1, 1)) for x in xt])  # law k: rows [k N L, (k + 1) N L), l N + i
    resume = chain.resume
    assert resume is not None  # checked by case_calibration
    out = to_numpy(resume(model, ctx.tensor(batch), start, generator)).reshape(len(laws), L, *xt[0].shape)
    if not np.all(np.isfinite(out)):
        raise FloatingPointError(f"{int(np.sum(~np.isfinite(out)))} non-finite draws from t = {start}")
    return [_part(ctx, chain, law, data, first, x0[k], xt[k], out[k], rng) for k, (law, data) in enumerate(laws)]


def _part(ctx: Context, chain: Chain, law: str, data: Data, first: int, x0: np.ndarray, xt: np.ndarray,
          draws: np.ndarray, rng: np.random.Generator) -> _Part:
    """The tests of one data law at one start, from its draws [L, N, C, H, W] given xt [N, C, H, W]."""
    start = chain.timesteps[first]
    a = ctx.alpha_bar(ctx.to_paper(start))
    L = draws.shape[0]
    p_values: dict[str, float] = {}
    predicted_ratio = None
    if isinstance(data, GaussianData):
        law_given = conditional_law(ctx, chain, data, first)
        mean = law_given.A * xt + law_given.B
        reference = mean + np.sqrt(law_given.V) * rng.standard_normal(xt.shape)
        z = ((draws - mean) / np.sqrt(law_given.V)).reshape(-1)
        p_values["mean"] = float(2 * stats.norm.sf(abs(z.mean()) * np.sqrt(z.size)))
        chi2 = float(np.sum(z**2))
        p_values["variance"] = float(2 * min(stats.chi2.cdf(chi2, z.size), stats.chi2.sf(chi2, z.size)))
        predicted_ratio = law_given.V / float(np.mean(data.posterior_variance(xt, a)))
    else:
        reference = simulate_chain(ctx, chain, data, first, xt, rng)
    p_values["ranks"] = uniform_ranks_p(ranks(draws, reference, rng), L)
    variance_ratio = float(np.mean(draws.var(axis=0, ddof=1) / data.posterior_variance(xt, a)))
    talts_p = uniform_ranks_p(ranks(draws, x0, rng), L)
    return _Part(f"{law}, t = {start}", p_values, variance_ratio, predicted_ratio, talts_p)


def case_calibration(ctx: Context, chain: Chain) -> CaseResult:
    """The chain's law of x_0 given x_t at a few start timesteps, for Gaussian and mixture data (module docstring)."""
    config = ctx.config
    name = f"calibration[{chain.label}]"
    N, L = config.calibration_draws, config.calibration_samples
    starts = start_indices(ctx, chain)
    shown = [chain.timesteps[k] for k in starts]
    criterion = (f"N = {N} x_t per start (x 4 values), L = {L} chain draws from each, starts t = {shown} (visited, "
                 f"near {', '.join(f'{f:g}' for f in config.calibration_starts)} of T); Gaussian and mixture data: "
                 f"ranks of a draw of the predicted law given x_t among the L draws, chi-square on {L + 1} bins; "
                 f"Gaussian data also mean z-test and variance chi-square of the standardised draws; Holm over "
                 f"every test, family-wise alpha = {config.alpha:g}")
    operation = f"chain:{chain.label}"
    if chain.resume is None:
        return CaseResult(name, Status.NOT_APPLICABLE, criterion, "the chain has no resume (it cannot start from a "
                          "given x_t)", operation=operation)
    if chain.kind is ChainKind.ANCESTRAL and (
            chain.variance not in ctx.adapter.variances
            or ctx.adapter.variances[chain.variance].learned):  # type: ignore[index]  # in variances: a str
        return CaseResult(name, Status.NOT_APPLICABLE, criterion, "needs a fixed variance option",
                          operation=operation)
    if chain.kind is ChainKind.DDIM and chain.eta == 0.0:
        return CaseResult(name, Status.NOT_APPLICABLE, criterion, "deterministic given x_t (eta = 0): its law of x_0 "
                          "given x_t is a point mass; the ddim[eta=0] case checks its steps", operation=operation)
    if not starts:
        return CaseResult(name, Status.NOT_APPLICABLE, criterion, "no visited timestep is followed by a noisy step",
                          operation=operation)
    rng = ctx.rng(name)
    laws: list[tuple[str, Data]] = [("Gaussian", config.data), ("mixture", config.mixture)]
    by_start = [_calibrate(ctx, chain, laws, first, rng) for first in starts]
    parts = [by_start[i][j] for j in range(len(laws)) for i in range(len(starts))]  # law by law in the detail
    return _result(ctx, chain, name, criterion, parts)


def _result(ctx: Context, chain: Chain, name: str, criterion: str, parts: list[_Part]) -> CaseResult:
    labels = [f"{part.label} {test}" for part in parts for test in part.p_values]
    adjusted = holm([p for part in parts for p in part.p_values.values()])
    k = int(np.argmin(adjusted))
    described = []
    for part in parts:
        predicted = "" if part.predicted_ratio is None else f" (predicted {part.predicted_ratio:.3f})"
        tests = ", ".join(f"{test} {p:.2g}" for test, p in part.p_values.items())
        described.append(f"{part.label}: p {tests}; draws' var / Var[x_0 | x_t] {part.variance_ratio:.3f}"
                         f"{predicted}; true x_0's ranks p {part.talts_p:.2g}")
    detail = (f"smallest Holm p {adjusted[k]:.3g} ({labels[k]}). " + "; ".join(described)
              + " (the true x_0's ranks are not tested: a finite chain does not draw q(x_0 | x_t) exactly)")
    strided = len(chain.timesteps) < ctx.T  # as in chain[...]: the visited timesteps matter when some are skipped
    notes = ctx.notes(Convention.CLIPS_X0, *((Convention.TIMESTEPS,) if strided else ()))
    status = Status.FAIL if adjusted[k] < ctx.config.alpha else (Status.CONVENTION if notes else Status.PASS)
    deviation = max((abs(part.variance_ratio / part.predicted_ratio - 1.0) for part in parts
                     if part.predicted_ratio is not None), default=None)
    return CaseResult(name, status, criterion, detail, None, deviation, labels[k], notes, f"chain:{chain.label}",
                      p_value=float(adjusted[k]))
