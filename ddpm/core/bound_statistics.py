"""The statistics of the test-set bound: the importance proposal over t, the predicted variance of one Monte Carlo
draw, the per-term matrix of the exact bound and standard errors (used by `ddpm.evaluation.evaluate`, checked in
tests/evaluation/test_evaluate.py and, for the spread they predict, tests/methods/test_calibration.py).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import torch

from ddpm.core.bound import ElboTerms

Tensor = torch.Tensor

UNIFORM_MIX = 0.05  # weight of the uniform distribution in the importance proposal over t


@dataclass(frozen=True)
class TimestepProposal:
    """The importance distribution p(t), t = 1..T, of the Monte Carlo bound, and what it was built from.

    probabilities [T] (entry t - 1 is p(t), the probability of evaluating L_{t-1}); second_moments [T]
    (m_t = mean over the subset of L_{t-1}^2, in (bits/dim)^2); uniform_mix (the weight of Uniform{1..T});
    predicted_variance_uniform / predicted_variance_importance: the variance of one draw L_T + L_{t-1} / p(t)
    (bits/dim squared) predicted from the subset for t ~ Uniform and t ~ p.
    """

    probabilities: np.ndarray
    second_moments: np.ndarray
    uniform_mix: float
    num_images: int
    predicted_variance_uniform: float
    predicted_variance_importance: float

    @property
    def T(self) -> int:
        """The number of timesteps the proposal covers."""
        return int(self.probabilities.shape[0])

    @property
    def variance_reduction(self) -> float:
        """predicted_variance_uniform / predicted_variance_importance: network calls saved at equal error."""
        if self.predicted_variance_importance <= 0:
            return math.nan
        return self.predicted_variance_uniform / self.predicted_variance_importance


def terms_by_t(terms: ElboTerms) -> Tensor:
    """[B, T] float64 bits/dim: column t - 1 is L_{t-1} (decoder for t = 1, KL for t >= 2)."""
    scale = 1.0 / (terms.num_dims * math.log(2.0))
    return torch.cat([terms.decoder[:, None], terms.kl], dim=1).to(torch.float64).cpu() * scale


def predicted_draw_variance(terms: ElboTerms, probabilities: npt.ArrayLike) -> float:
    """Variance of one draw L_T + L_{t-1} / p(t) (bits/dim^2) with t ~ p, predicted from the exact terms.

    E[Y^2] = mean_b (L_T^2 + 2 L_T S_b + sum_t L_{t-1}^2 / p(t)), S_b = sum_t L_{t-1}, each L_{t-1}(b) being one
    draw of x_t (so L^2 estimates its second moment over x_t); Var = E[Y^2] - (mean_b (L_T + S_b))^2.
    """
    p = torch.as_tensor(np.asarray(probabilities, dtype=np.float64))
    by_t = terms_by_t(terms)  # [B, T]
    prior = terms.prior.to(torch.float64).cpu() / (terms.num_dims * math.log(2.0))  # [B]
    s = by_t.sum(dim=1)  # [B]
    second = prior**2 + 2 * prior * s + (by_t**2 / p).sum(dim=1)  # [B]
    return float(second.mean() - (prior + s).mean() ** 2)


def importance_proposal(terms: ElboTerms, uniform_mix: float = UNIFORM_MIX) -> TimestepProposal:
    """p(t) = (1 - mix) sqrt(m_t) / sum_s sqrt(m_s) + mix / T, m_t = mean_b L_{t-1}(b)^2 over the exact subset.

    A valid distribution over t = 1..T with p(t) >= mix / T > 0 for every t (so the importance-weighted
    estimator stays unbiased); uniform when every m_t is 0. ValueError unless 0 < mix <= 1 and the terms are
    finite.
    """
    if not 0.0 < float(uniform_mix) <= 1.0:
        raise ValueError(f"uniform_mix must be in (0, 1], got {uniform_mix!r}")
    by_t = terms_by_t(terms)  # [B, T]
    if not bool(torch.isfinite(by_t).all()):
        raise ValueError("bound terms must be finite to build an importance proposal")
    T = by_t.shape[1]
    m = (by_t**2).mean(dim=0).numpy()  # [T]
    root = np.sqrt(m)
    uniform = np.full(T, 1.0 / T)
    shape = root / root.sum() if root.sum() > 0 else uniform
    p = (1.0 - uniform_mix) * shape + uniform_mix * uniform
    p = p / p.sum()
    return TimestepProposal(
        probabilities=p,
        second_moments=m,
        uniform_mix=float(uniform_mix),
        num_images=int(by_t.shape[0]),
        predicted_variance_uniform=predicted_draw_variance(terms, uniform),
        predicted_variance_importance=predicted_draw_variance(terms, p),
    )



def per_term_matrix(terms: ElboTerms) -> Tensor:
    """[B, T + 1] bits/dim: L_0, L_1, ..., L_{T-1}, L_T."""
    scale = 1.0 / (terms.num_dims * math.log(2.0))
    return torch.cat([terms.decoder[:, None], terms.kl, terms.prior[:, None]], dim=1).to(torch.float64).cpu() * scale


def standard_error(values: Tensor) -> float:
    """Sample standard deviation (n - 1) over sqrt(n) of a [n] tensor; NaN below 2 values."""
    n = values.shape[0]
    return float(values.std(unbiased=True)) / math.sqrt(n) if n >= 2 else math.nan


__all__ = [
    "UNIFORM_MIX",
    "TimestepProposal",
    "importance_proposal",
    "per_term_matrix",
    "predicted_draw_variance",
    "standard_error",
    "terms_by_t",
]
