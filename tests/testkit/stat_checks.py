"""A family of hypothesis tests with one family-wise error rate ALPHA, for statistical tests.

A statistical test fails on correct code with a probability it states (ALPHA), however many comparisons it makes:
that is what makes a failure informative and lets `nox -s sweep` measure the rate.

A statistical test collects every comparison it makes into a `Family` (label, p-value, and what was compared),
then calls `check()`: the p-values are adjusted for multiplicity by Holm's step-down procedure (default) or by
Bonferroni, and the test fails iff some adjusted p-value is <= ALPHA. Both corrections keep the probability of
any false failure <= ALPHA whatever the dependence between the comparisons. `check(record_property)` also
records the smallest adjusted p-value ("min_adjusted_p"), which `ddpm/studies/sweep.py` collects across seeds.

The helpers return two-sided p-values unless `alternative` says otherwise; each documents its null
distribution. No retries: a family is evaluated once, on draws from a generator seeded by seed_base + offset.
"""

from __future__ import annotations

import enum
import math
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from scipy import stats


class Correction(enum.Enum):
    """Family-wise error control: Holm's step-down (uniformly more powerful) or plain Bonferroni."""

    HOLM = "holm"
    BONFERRONI = "bonferroni"


def adjusted_p_values(p: np.ndarray, correction: Correction) -> np.ndarray:
    """Holm or Bonferroni adjusted p-values, in the order given (reject iff adjusted <= alpha)."""
    p = np.asarray(p, dtype=np.float64)
    m = p.shape[0]
    if correction is Correction.BONFERRONI:
        return np.minimum(1.0, m * p)
    order = np.argsort(p, kind="stable")
    stepped = np.minimum(1.0, (m - np.arange(m)) * p[order])  # (m - i) p_(i), i = 0..m-1
    out = np.empty(m)
    out[order] = np.maximum.accumulate(stepped)
    return out


def _two_sided_from_cdf(cdf: float, sf: float) -> float:
    return float(min(1.0, 2.0 * min(cdf, sf)))


@dataclass
class Family:
    """Comparisons of one statistical test, controlled together at family-wise error rate `alpha`."""

    name: str
    alpha: float
    correction: Correction = Correction.HOLM
    labels: list[str] = field(default_factory=list)
    p_values: list[float] = field(default_factory=list)
    details: list[str] = field(default_factory=list)

    def add(self, label: str, p_value: float, detail: str = "") -> float:
        """Record one comparison's p-value (must be a number in [0, 1])."""
        p_value = float(p_value)
        if not 0.0 <= p_value <= 1.0:  # also rejects NaN
            raise AssertionError(f"{self.name}: {label}: p-value {p_value!r} is not in [0, 1] ({detail})")
        self.labels.append(label)
        self.p_values.append(p_value)
        self.details.append(detail)
        return p_value

    # ------------------------------------------------------------------------------------ common tests
    def z_test(self, label: str, estimate: float, expected: float, stderr: float, alternative: str = "two-sided"):
        """(estimate - expected) / stderr ~ N(0, 1) under the null (large-sample CLT or exact Gaussian)."""
        z = (estimate - expected) / stderr
        if alternative == "two-sided":
            p = 2.0 * stats.norm.sf(abs(z))
        elif alternative == "greater":  # H1: estimate > expected
            p = stats.norm.sf(z)
        elif alternative == "less":
            p = stats.norm.cdf(z)
        else:
            raise ValueError(f"unknown alternative {alternative!r}")
        return self.add(label, p, f"estimate {estimate:.6g}, expected {expected:.6g}, stderr {stderr:.3g}, z {z:.2f}")

    def t_test(self, label: str, estimate: float, expected: float, stderr: float, dof: int):
        """(estimate - expected) / stderr ~ Student t with `dof` degrees of freedom (two-sided)."""
        t = (estimate - expected) / stderr
        p = 2.0 * stats.t.sf(abs(t), dof)
        return self.add(label, p, f"estimate {estimate:.6g}, expected {expected:.6g}, stderr {stderr:.3g}, t {t:.2f}")

    def mean_test(self, label: str, values: np.ndarray, expected: float):
        """One-sample t-test of mean(values) = expected (i.i.d. values; exact for Gaussian, CLT otherwise)."""
        values = np.asarray(values, dtype=np.float64).reshape(-1)
        n = values.shape[0]
        return self.t_test(label, float(values.mean()), expected, float(values.std(ddof=1)) / math.sqrt(n), n - 1)

    def variance_chi2(self, label: str, sum_squares: float, dof: int, expected_variance: float):
        """sum_squares / expected_variance ~ chi-square(dof) for Gaussian data (two-sided)."""
        q = sum_squares / expected_variance
        p = _two_sided_from_cdf(stats.chi2.cdf(q, dof), stats.chi2.sf(q, dof))
        return self.add(label, p, f"variance {sum_squares / dof:.6g}, expected {expected_variance:.6g}, dof {dof}")

    def spread_test(self, label: str, estimates: np.ndarray, stderrs: np.ndarray):
        """Do reported standard errors match the spread of their estimates over R independent repeats?

        H0: Var(estimate) = E[stderr^2]. Per repeat, d_i = R / (R - 1) (e_i - mean e)^2 - stderr_i^2, whose mean is
        exactly s^2 - mean(stderr^2); the test is a one-sample t-test of mean d = 0 (CLT over the repeats: valid
        for any law of the estimates with finite fourth moment, and for stderrs correlated with their estimates,
        unlike the chi-square test of a variance, which assumes Gaussian estimates). Two-sided: an error bar
        too small and one too large are both wrong.
        """
        e = np.asarray(estimates, dtype=np.float64).reshape(-1)
        se = np.asarray(stderrs, dtype=np.float64).reshape(-1)
        if e.shape != se.shape or e.shape[0] < 10 or not np.isfinite(e).all() or not np.isfinite(se).all():
            raise AssertionError(f"{self.name}: {label}: needs >= 10 finite (estimate, stderr) pairs")
        r = e.shape[0]
        d = r / (r - 1) * (e - e.mean()) ** 2 - se**2
        t = d.mean() / (d.std(ddof=1) / math.sqrt(r))
        p = 2.0 * stats.t.sf(abs(t), r - 1)
        ratio = math.sqrt(e.var(ddof=1) / np.mean(se**2))
        return self.add(label, p, f"spread / reported stderr {ratio:.3f} over {r} repeats, t {t:.2f}")

    def ks(self, label: str, sample: np.ndarray, cdf: Callable | str, args: tuple = ()):
        """One-sample Kolmogorov-Smirnov test against a fully specified continuous CDF."""
        result = stats.kstest(np.asarray(sample).reshape(-1), cdf, args=args)
        return self.add(label, result.pvalue, f"KS D {result.statistic:.4g}")

    def cramervonmises(self, label: str, sample: np.ndarray, cdf: Callable | str, args: tuple = ()):
        """One-sample Cramer-von Mises test against a fully specified continuous CDF."""
        result = stats.cramervonmises(np.asarray(sample).reshape(-1), cdf, args=args)
        return self.add(label, result.pvalue, f"CvM W^2 {result.statistic:.4g}")

    def chi2_counts(self, label: str, counts: np.ndarray, probabilities: np.ndarray, min_expected: float = 5.0):
        """Pearson chi-square goodness of fit of multinomial counts; cells with expectation < min_expected pooled."""
        counts = np.asarray(counts, dtype=np.float64)
        probabilities = np.asarray(probabilities, dtype=np.float64)
        n = counts.sum()
        expected = n * probabilities
        small = expected < min_expected
        if small.any():
            counts = np.concatenate([counts[~small], [counts[small].sum()]])
            expected = np.concatenate([expected[~small], [expected[small].sum()]])
            if expected[-1] < min_expected and expected.shape[0] > 2:  # fold a still-small pool into the last cell
                counts = np.concatenate([counts[:-2], [counts[-2:].sum()]])
                expected = np.concatenate([expected[:-2], [expected[-2:].sum()]])
        stat = float(((counts - expected) ** 2 / expected).sum())
        dof = expected.shape[0] - 1
        return self.add(label, stats.chi2.sf(stat, dof), f"chi2 {stat:.3g}, dof {dof}")

    # ------------------------------------------------------------------------------------------ verdict
    def check(self, record_property: Callable[[str, object], None] | None = None) -> None:
        """Fail (AssertionError listing the rejected comparisons) iff some adjusted p-value is <= alpha."""
        if not self.p_values:
            raise AssertionError(f"{self.name}: no comparisons were made")
        adjusted = adjusted_p_values(np.asarray(self.p_values), self.correction)
        if record_property is not None:
            record_property("alpha", self.alpha)
            record_property("comparisons", len(self.p_values))
            record_property("min_adjusted_p", float(adjusted.min()))
        rejected = np.flatnonzero(adjusted <= self.alpha)
        if rejected.size:
            lines = [
                f"  {self.labels[i]}: p = {self.p_values[i]:.3g}, {self.correction.value}-adjusted {adjusted[i]:.3g}; "
                f"{self.details[i]}"
                for i in rejected
            ]
            raise AssertionError(
                f"{self.name}: {rejected.size} of {len(self.p_values)} comparisons rejected at family-wise "
                f"alpha = {self.alpha:g} ({self.correction.value}):\n" + "\n".join(lines)
            )


__all__ = ["Correction", "Family", "adjusted_p_values"]
