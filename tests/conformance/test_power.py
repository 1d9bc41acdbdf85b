"""The statistical cases' thresholds and power, pinned on the graded adapters (ddpm/conformance/graded.py).

A reference run only shows that a case does not reject correct code: a case made 1000 times stricter than its
stated alpha would still pass it. So each statistical case of a graded adapter is run once under a fixed seed, its
Holm-adjusted p-value p read from the result, and the same case rerun at alpha = 1.01 p (it must fail) and at
alpha = 0.99 p (it must pass): the draws depend on the seed and the case's name only, so p is the same and the
bracket pins the threshold to the configured alpha. Every case whose result carries a p-value is checked, so a
new statistical case is covered without changes here.

The power tests use deltas at which `python -m ddpm.studies.conformance_power` detected the error in every run
(reports/conformance/power.md: 40 of 40 seeds at delta = 0.06 for the noise and the loss errors); the tests at
delta = 0, and for the cancelling error that no test of a chain's output can see, are statistical (alpha stated).
"""

from __future__ import annotations

from dataclasses import replace

import pytest

from ddpm.conformance.cases import Status, SuiteConfig
from ddpm.conformance.graded import ErrorKind, graded_adapter
from ddpm.conformance.runner import run_adapter

SEED = 0
CASE_ALPHA = SuiteConfig().alpha  # 1e-3: each statistical case's family-wise alpha (Holm within the case)
# Errors small enough that p is neither 0 (which no alpha brackets) nor far from alpha at SEED.
MODERATE = {ErrorKind.NOISE: 0.03, ErrorKind.CANCELLING: 0.3, ErrorKind.LOSS: 0.03}
DETECTED = 0.06  # the study's power at this delta: 40/40 for the noise and loss errors


def _cases(adapter) -> set[str]:
    """The names of the chain and loss cases of an adapter (the statistical cases whose sizes the tests know)."""
    return {f"chain[{c.label}]" for c in adapter.chains()} | (
        {"loss_at_eps_star"} if adapter.kind is ErrorKind.LOSS else set())


@pytest.mark.parametrize("kind", list(ErrorKind), ids=lambda k: k.value)
def test_each_statistical_case_rejects_exactly_below_its_alpha(kind):
    adapter = graded_adapter(kind, MODERATE[kind])
    config = SuiteConfig(seed=SEED)
    statistical = [r for r in run_adapter(adapter, config, progress=False).results if r.p_value is not None]
    assert {r.case for r in statistical} >= _cases(adapter)
    for result in statistical:
        p = result.p_value
        assert 0.0 < p <= 1.0, (result.case, p)
        assert (result.status is Status.FAIL) == (p < CASE_ALPHA), (result.case, p, result.status)
        for factor, expected in ((1.01, Status.FAIL), (0.99, Status.PASS)):
            rerun = run_adapter(adapter, replace(config, alpha=p * factor), progress=False, only={result.case})
            (again,) = rerun.results
            assert again.p_value == p, (result.case, "the draws changed with alpha")
            assert again.status is expected, (
                f"{result.case} at alpha = {factor} p = {p * factor:.3g}: {again.status.value}, expected "
                f"{expected.value} (its threshold is not the configured alpha)")


@pytest.mark.parametrize("seed", [1, 2, 3])
@pytest.mark.parametrize("kind", [ErrorKind.NOISE, ErrorKind.LOSS], ids=lambda k: k.value)
def test_an_error_the_study_always_detected_fails_its_cases(kind, seed):
    """Deterministic (fixed seeds); the study's largest p-value at this delta over its seeds 0..39 was 5e-7 (chains)
    and 2.5e-4 (loss), against alpha = 1e-3."""
    adapter = graded_adapter(kind, DETECTED)
    names = _cases(adapter)
    run = run_adapter(adapter, SuiteConfig(seed=seed), progress=False, only=names)
    assert {r.case for r in run.results} == names and names
    missed = [(r.case, r.p_value) for r in run.results if r.status is not Status.FAIL]
    assert not missed, missed


ZERO_CASES = 3  # the noise adapter's two chains and the loss adapter's loss_at_eps_star
ZERO_ALPHA = ZERO_CASES * CASE_ALPHA  # Bonferroni over the cases


@pytest.mark.statistical(alpha=ZERO_ALPHA)
def test_graded_adapters_at_delta_zero_pass(seed_base, record_property):
    """At delta = 0 the graded adapters are the reference: their chain and loss cases pass (alpha above)."""
    results = []
    for kind in (ErrorKind.NOISE, ErrorKind.LOSS):
        adapter = graded_adapter(kind, 0.0)
        results += run_adapter(adapter, SuiteConfig(seed=seed_base + 21), progress=False, only=_cases(adapter)).results
    assert len(results) == ZERO_CASES
    record_property("alpha", ZERO_ALPHA)
    record_property("comparisons", ZERO_CASES)
    record_property("min_adjusted_p", min(1.0, ZERO_CASES * min(r.p_value for r in results)))
    failed = [f"{r.case}: {r.detail}" for r in results if r.status is Status.FAIL]
    assert not failed, failed


CANCELLING_CASES = 2  # the two chains
CANCELLING_ALPHA = CANCELLING_CASES * CASE_ALPHA


@pytest.mark.statistical(alpha=CANCELLING_ALPHA)
def test_the_chain_cases_cannot_see_a_cancelling_error(seed_base, record_property):
    """Variance doubled on the first half and cancelled on the second: each chain's output law is the reference's,
    so the chain cases pass (alpha above) - a single-step case is needed to see this error."""
    adapter = graded_adapter(ErrorKind.CANCELLING, 1.0)
    run = run_adapter(adapter, SuiteConfig(seed=seed_base + 22), progress=False, only=_cases(adapter))
    assert len(run.results) == CANCELLING_CASES
    record_property("alpha", CANCELLING_ALPHA)
    record_property("comparisons", CANCELLING_CASES)
    record_property("min_adjusted_p", min(1.0, CANCELLING_CASES * min(r.p_value for r in run.results)))
    failed = [f"{r.case}: {r.detail}" for r in run.results if r.status is Status.FAIL]
    assert not failed, failed
