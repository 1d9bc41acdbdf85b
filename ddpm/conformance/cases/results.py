"""What a case reports (`CaseResult`, `Status`) and the sizes of a suite run (`SuiteConfig`)."""

from __future__ import annotations

import enum
import math
from collections.abc import Sequence
from dataclasses import dataclass, field, replace

from ddpm.conformance import oracle


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
    seconds: float | None = None  # wall-clock time of the case (set by the runner)


@dataclass(frozen=True)
class SuiteConfig:
    """Sizes, seed and alpha of a suite run (the defaults are what `nox -s conformance` uses)."""

    batch: int = 4  # images per timestep in the exact cases
    strided_steps: int = 100  # S of the strided (respaced) case unless the adapter declares its own; capped at T
    ddim_steps: int = 50  # likewise for the DDIM case
    ddim_etas: tuple[float, ...] = (0.0, 0.5, 1.0)
    chain_samples: int = 2000  # images per chain (x [n, 1, 2, 2]: 4 values each)
    loss_timesteps: int = 4  # paper t in {1, ~T/3, ~2T/3, T}
    loss_batches: int = 40
    loss_batch: int = 100
    search_examples: int = 100  # Hypothesis examples per search case
    alpha: float = 1e-3  # family-wise, per statistical case (Holm)
    seed: int = 0
    data: oracle.GaussianData = field(default_factory=oracle.GaussianData)
    # calibration[...]: N images x_t per start and data law, L chain draws from each, starts as fractions of T
    calibration_draws: int = 50
    calibration_samples: int = 19
    calibration_starts: tuple[float, ...] = (0.25, 0.5, 0.75)
    mixture: oracle.GaussianMixtureData = field(default_factory=oracle.GaussianMixtureData)

def root_cause(result: CaseResult, variances: Sequence[str]) -> tuple[str, str]:
    """(variance option involved, symptom) of a failing case: the key under which failures are one finding.

    The option is the longest variance option its name or operation mentions ("" for none); the symptom is "raises",
    "non-finite output", "statistical" or "deviation beyond the rounding bound"."""
    text = f"{result.case} {result.operation or ''}"
    named = [option for option in variances if option in text]
    if result.detail.startswith("raised "):
        symptom = "raises"
    elif "non-finite" in result.detail or (result.ratio is not None and not math.isfinite(result.ratio)):
        symptom = "non-finite output"
    else:
        symptom = "statistical" if result.p_value is not None else "deviation beyond the rounding bound"
    return (max(named, key=len) if named else ""), symptom


def not_applicable(name: str, why: str) -> CaseResult:
    """The result of a case whose operation the implementation does not offer."""
    return CaseResult(name, Status.NOT_APPLICABLE, "", why)


def with_reproduction(result: CaseResult, snippet: str | None, output: str | None) -> CaseResult:
    """`result` with a reproduction snippet (and what running it printed)."""
    return replace(result, reproduction=snippet, reproduction_output=output)
