"""Statistical cases: the implementation driven by the exact eps* of Gaussian data, its output tested against the
law the derivations predict (SciPy; Holm's correction; family-wise alpha per case)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import cast

import numpy as np
import torch
from scipy import stats

from ddpm.conformance.cases.context import IMAGE, Context, to_numpy
from ddpm.conformance.cases.exact import loss_weights
from ddpm.conformance.cases.results import CaseResult, Status
from ddpm.conformance.protocol import Chain, ChainKind, Convention, TrainingLoss, VarianceKind


# ------------------------------------------------------------------------------------------- statistical
def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm-adjusted p-values (family-wise error control)."""
    p = np.asarray(p_values, dtype=np.float64)
    order = np.argsort(p)
    adjusted = np.empty_like(p)
    running = 0.0
    for rank, i in enumerate(order):
        running = max(running, min(1.0, (len(p) - rank) * p[i]))
        adjusted[i] = running
    return adjusted


def chain_law(ctx: Context, chain: Chain, variance_factors: Sequence[float] | None = None) -> tuple[float, float]:
    """The exact law N(mean, var) per dimension of the chain's output when driven by the exact output of the suite's
    data.

    x_0* = m + g (x_t - sqrt(a_t) m) is affine in x_t, and every step (ancestral over t -> s with the claimed sigma,
    or DDIM eq. 12) is c_x x_t + c_0 x_0* + sigma z in its x_0 form (finite at alpha_bar_T = 0, derivation (o)), so
    each maps N(mu, v) to N(A mu + B, A^2 v + sigma^2), starting from N(0, 1) at the first visited timestep.
    `variance_factors[k]`, when given, multiplies sigma^2 of the k-th visited step: the law of a chain whose
    per-step variances depart from the claimed ones (the graded adapters of `ddpm.conformance.graded`).
    """
    data = ctx.config.data
    steps = [ctx.to_paper(t) for t in chain.timesteps]
    factors = [1.0] * len(steps) if variance_factors is None else [float(f) for f in variance_factors]
    if len(factors) != len(steps):
        raise ValueError(f"variance_factors must have one entry per visited timestep ({len(steps)}), "
                         f"got {len(factors)}")
    mean, var = 0.0, 1.0
    for p, s, factor in zip(steps, steps[1:] + [0], factors, strict=True):
        at, as_ = ctx.alpha_bar(p), ctx.alpha_bar(s)
        gain = float(data.gain(np.float64(at)))
        c_x, c_0, sigma2 = step_coefficients(ctx, chain, at, as_, s)
        A = c_x + c_0 * gain
        B = c_0 * (data.mean - gain * np.sqrt(at) * data.mean)
        mean, var = A * mean + B, A * A * var + factor * sigma2
    return float(mean), float(var)


def step_coefficients(ctx: Context, chain: Chain, at: float, as_: float, s: int) -> tuple[float, float, float]:
    """(c_x, c_0, sigma^2) of one step t -> s written x_s = c_x x_t + c_0 x0_hat + sigma z."""
    if chain.kind is ChainKind.ANCESTRAL:  # the posterior mean of x0_hat (eq. 7, over a stride derivation (i))
        b = 1.0 - at / as_
        kind = ctx.adapter.variances[chain.variance]  # type: ignore[index]  # an ancestral Chain names one
        sigma2 = 0.0 if s == 0 else (b if kind is VarianceKind.BETA else (1.0 - as_) / (1.0 - at) * b)
        return np.sqrt(at / as_) * (1.0 - as_) / (1.0 - at), np.sqrt(as_) * b / (1.0 - at), sigma2
    # DDIM eq. 12 with eps_hat = (x_t - sqrt(a_t) x0_hat) / sqrt(1 - a_t)
    sigma2 = 0.0 if s == 0 else (
        chain.eta**2 * (1.0 - as_) / (1.0 - at) * (1.0 - at / as_))  # type: ignore[operator]  # ddim: eta set
    direction = np.sqrt(max(1.0 - as_ - sigma2, 0.0)) / np.sqrt(1.0 - at)
    return direction, np.sqrt(as_) - direction * np.sqrt(at), sigma2


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
    eps_model = config.data.model(ctx.alpha_bars, ctx.base, ctx.prediction)
    generator = torch.Generator().manual_seed(int(ctx.rng(name).integers(2**62)))
    x = to_numpy(chain.run(eps_model, (config.chain_samples, *IMAGE), generator)).reshape(-1)
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
    adjusted = holm([p_ks, p_mean, p_var])
    labels = ("KS", "mean", "variance")
    data = config.data
    detail = (f"predicted N({mean:.5f}, {sd:.5f}^2) (data N({data.mean:g}, {data.std:g}^2)); sample mean "
              f"{x.mean():.5f}, sd {x.std(ddof=1):.5f}; Holm p: " + ", ".join(
                  f"{lab} {p:.3g}" for lab, p in zip(labels, adjusted, strict=True)))
    strided = len(chain.timesteps) < ctx.T  # the visited timesteps matter only when some are skipped
    notes = ctx.notes(Convention.CLIPS_X0, Convention.THRESHOLDS_X0, *((Convention.TIMESTEPS,) if strided else ()))
    if Convention.CLIPS_X0 in ctx.adapter.conventions or Convention.THRESHOLDS_X0 in ctx.adapter.conventions:
        detail += ("; the law ignores clipping and thresholding (|E[x_0 | x_t]| > 1 has probability < 1e-4 for this "
                   "data)")
    status = Status.FAIL if adjusted.min() < config.alpha else (Status.CONVENTION if notes else Status.PASS)
    return CaseResult(name, status, criterion, detail, None, abs(x.mean() - mean), "", notes,
                      f"chain:{chain.label}", p_value=float(adjusted.min()))


def mean_test(batch_means: np.ndarray, expected: float) -> float:
    """Two-sided t-test p-value of the batch means against `expected`; a constant sample is judged exactly, and a
    non-finite batch mean rejects (p = 0: its NaN p-value would otherwise pass Holm's correction as 1)."""
    if not np.all(np.isfinite(batch_means)):
        return 0.0
    if np.ptp(batch_means) == 0:  # e.g. a zero-weighted timestep: no spread, the t statistic is undefined
        return 1.0 if np.isclose(batch_means[0], expected, rtol=1e-6, atol=1e-12) else 0.0
    return float(stats.ttest_1samp(batch_means, expected).pvalue)


def case_loss_at_eps_star(ctx: Context) -> CaseResult:
    """E[loss] at the exact output equals its analytic minimum w_t E Var(target | x_t) at several t (t-tests, Holm):
    a s^2 / (a s^2 + 1 - a) for an eps model (oracle.GaussianData.loss_minimum for x_0 and v)."""
    config = ctx.config
    rng = ctx.rng("loss_at_eps_star")
    data = config.data
    eps_model = data.model(ctx.alpha_bars, ctx.base, ctx.prediction)
    weights = loss_weights(ctx)
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
            means.append(float(to_numpy(adapter.training_loss(eps_model, ctx.tensor(x0_), t, ctx.tensor(n))).mean()))
        batch_means = np.asarray(means)
        expected = weights[p - 1] * data.loss_minimum(ctx.alpha_bar(p), ctx.prediction)
        p_values.append(mean_test(batch_means, expected))
        parts.append(f"t = {ctx.to_adapter(p)}: {batch_means.mean():.5f} vs {expected:.5f}")
    adjusted = holm(p_values)
    k = int(np.argmin(adjusted))
    detail = "; ".join(f"{part} (Holm p {q:.3g})" for part, q in zip(parts, adjusted, strict=True))
    status = Status.FAIL if adjusted[k] < config.alpha else Status.PASS
    return CaseResult("loss_at_eps_star", status, criterion, detail, operation="training_loss",
                      t=ctx.to_adapter(ts[k]), p_value=float(adjusted[k]))
