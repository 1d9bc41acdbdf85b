"""The conformance suite (ddpm/conformance): the reference passes every case, broken adapters fail exactly theirs.

No third-party package is needed here (their adapters are tested by tests/conformance/test_adapters.py in
`nox -s conformance`). The broken adapters of tests/testkit/broken_adapters.py each carry one plausible bug; the
suite must fail the cases that bug touches and no other, which shows both that the cases can fail and that
their tolerances do not flag correct code.
"""

from __future__ import annotations

import json
import os
import platform
import sys

import numpy as np
import pytest
import torch

from ddpm.cli import main
from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.cases import Status, SuiteConfig
from ddpm.conformance.cases.statistical import mean_test
from ddpm.conformance.protocol import AdapterError, Convention, check_adapter
from ddpm.conformance.report import to_json, to_markdown
from ddpm.conformance.runner import SAME_CAUSE, load_adapters, run_adapter, run_suite
from testkit import broken_adapters
from testkit.paths import TESTS

SMALL = SuiteConfig(strided_steps=broken_adapters.S, ddim_steps=broken_adapters.S, chain_samples=1000,
                    loss_batches=20)
STATISTICAL = {"loss_at_eps_star"}
# ddpm.core steps only from t down to s < t: the reference offers no DDIM inversion (ddpm/conformance/adapters/
# reference.py), so these cases are not applicable to it and every other case passes.
REFERENCE_NOT_OFFERED = "inversion_step"


def _statuses(run) -> dict[str, Status]:
    return {r.case: r.status for r in run.results}


# x_0 and v with the linear schedule only, as the factory ships them: with the cosine schedule (alpha_bar_T ~ 2e-7 at
# T = 100) the reference's DDIM step at t = T, which converts the output to eps and back to x0_hat, rounds ~20-40x
# beyond the bound of the oracle's one x_0-route form (the round trip amplifies by 1 / sqrt(alpha_bar_T)).
@pytest.mark.parametrize("schedule, prediction", [("linear", "eps"), ("cosine", "eps"), ("linear", "x0"),
                                                  ("linear", "v")])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_reference_passes_every_exact_case(schedule, prediction, dtype):
    """Our library passes in float64 and in float32 (the float32 tolerance comes from the rounding model), for an
    eps, x_0 or v network output."""
    run = run_adapter(ReferenceAdapter(schedule, 100, dtype, prediction), SMALL, progress=False)
    exact = {r.case: r for r in run.results
             if r.case not in STATISTICAL and not r.case.startswith(("chain[", "calibration["))}
    # schedule, q_sample, posterior, finite, loss_given_draws; reverse_step, strided, edges, search and two batched_mean
    # for each of the 3 variances; ddim at 3 etas, edges[ddim], search[ddim], two batched_ddim; two inversion (n/a)
    assert len(exact) == 5 + 6 * 3 + 3 + 2 + 2 + 2
    offered = {name: r for name, r in exact.items() if not name.startswith("inversion[")}
    assert {f"batched_mean[beta, S={SMALL.strided_steps}]", "batched_ddim[s=t-1]"} <= set(offered)
    bad = {name: r.detail for name, r in offered.items() if r.status is not Status.PASS}
    assert not bad, f"reference ({schedule}, {prediction}, {dtype}) must pass: {bad}"
    assert all(exact[name].status is Status.NOT_APPLICABLE and REFERENCE_NOT_OFFERED in exact[name].detail
               for name in set(exact) - set(offered))
    worst = max(r.ratio for r in offered.values() if r.ratio is not None)
    assert worst < 1.0


# The reference's 4 chains, the calibration of its 3 stochastic ones (DDIM eta = 0 is not applicable) and
# loss_at_eps_star, each at the suite's alpha.
CHAIN_CASES = 4 + 3 + 1
ALPHA = CHAIN_CASES * SMALL.alpha  # Bonferroni over the statistical cases of one reference run


@pytest.mark.statistical(alpha=ALPHA)
def test_reference_statistical_cases_pass(seed_base, record_property):
    """Chains driven by eps* produce the predicted law, marginally and given x_t; the loss at eps* is its analytic
    minimum (alpha above)."""
    config = SuiteConfig(strided_steps=10, ddim_steps=10, chain_samples=1000, loss_batches=20, seed=seed_base + 11)
    run = run_adapter(ReferenceAdapter("linear", 100), config, progress=False)
    statistical = [r for r in run.results if r.p_value is not None]
    assert len(statistical) == CHAIN_CASES
    p_min = min(r.p_value for r in statistical)
    record_property("alpha", ALPHA)
    record_property("comparisons", CHAIN_CASES)
    record_property("min_adjusted_p", min(1.0, CHAIN_CASES * p_min))
    failed = [f"{r.case}: {r.detail}" for r in statistical if r.status is Status.FAIL]
    assert not failed, failed


def test_run_adapter_runs_only_the_named_cases():
    run = run_adapter(ReferenceAdapter("linear", 50), SMALL, progress=False, only={"loss_at_eps_star", "q_sample"})
    assert [r.case for r in run.results] == ["q_sample", "loss_at_eps_star"]
    assert all(r.status is Status.PASS for r in run.results)


@pytest.mark.parametrize("bug", sorted(broken_adapters.EXPECTED_FAILURES))
def test_broken_adapter_fails_exactly_its_cases(bug):
    runs, _ = run_suite([f"testkit.broken_adapters:{bug}"], SMALL, progress=False)
    (run,) = runs
    failed = {case for case, status in _statuses(run).items() if status is Status.FAIL}
    assert failed == broken_adapters.EXPECTED_FAILURES[bug], f"{bug}: failed {sorted(failed)}"
    for result in run.results:
        if result.status is Status.FAIL:
            assert result.detail, result.case
            assert (result.where or result.case.startswith("chain[") or "raised" in result.detail
                    or result.p_value is not None)


def test_a_non_finite_loss_fails_the_statistical_test():
    """A NaN batch mean must reject: its NaN p-value would pass Holm's correction as 1."""
    assert mean_test(np.array([0.10, np.nan, 0.11]), 0.1) == 0.0
    assert mean_test(np.array([0.10, np.inf, 0.11]), 0.1) == 0.0
    assert mean_test(np.array([0.09, 0.10, 0.11]), 0.1) > 0.5


def test_failures_say_where_and_by_how_much():
    (run,) = run_suite(["testkit.broken_adapters:noise_at_t_one"], SMALL, progress=False)[0]
    result = next(r for r in run.results if r.case == "reverse_step[beta]")
    assert "paper t = 1" in result.where and result.t == 1
    assert result.ratio > 1e6 and result.deviation > 1e-3
    assert set(result.inputs) == {"eps", "xt", "z"} and len(result.expected) == 4


def test_declared_clipping_is_shown_as_a_convention():
    (run,) = run_suite(["testkit.broken_adapters:clips_declared"], SMALL, progress=False)[0]
    statuses = _statuses(run)
    assert statuses["reverse_step[beta]"] is Status.CONVENTION
    assert statuses["reverse_step[beta_tilde]"] is Status.CONVENTION
    assert statuses[f"strided[beta, S={broken_adapters.S}]"] is Status.NOT_APPLICABLE
    note = next(r for r in run.results if r.case == "reverse_step[beta]").conventions
    assert note and "clips_x0" in note[0]
    assert run.conformant


def test_a_batched_failure_records_the_whole_batch_and_the_row():
    (run,) = run_suite(["testkit.broken_adapters:batched_with_row_zeros_timestep"], SMALL, progress=False)[0]
    result = next(r for r in run.results if r.case == "batched_ddim[s=t-1]")
    assert result.status is Status.FAIL and result.ratio > 1e6
    rows = SMALL.batch
    assert set(result.inputs) == {"eps", "xt", "t", "s"} and len(result.inputs["t"]) == rows
    assert len(result.inputs["eps"]) == rows * 4 and [t - 1 for t in result.inputs["t"]] == result.inputs["s"]
    assert len(set(result.inputs["t"])) == rows, "the rows of a batch are at different timesteps"
    row = int(result.where.split("element [")[1].split(",")[0])  # the batch row of the worst element
    assert row > 0 and result.t == result.inputs["t"][row], "row 0 itself is stepped right; another row fails"


def test_inversion_cases_run_and_pass_on_a_correct_inversion():
    (run,) = run_suite(["testkit.broken_adapters:inversion_correct"], SMALL, progress=False)[0]
    statuses = _statuses(run)
    assert statuses[f"inversion[S={broken_adapters.T}]"] is Status.PASS
    assert statuses[f"inversion[S={broken_adapters.S}]"] is Status.PASS
    forward = run_suite(["testkit.broken_adapters:inversion_with_forward_s"], SMALL, progress=False)[0][0]
    result = next(r for r in forward.results if r.case == f"inversion[S={broken_adapters.S}]")
    assert result.ratio > 1e6 and set(result.inputs) == {"eps", "xs"}


def test_an_inversion_without_a_step_from_x0_says_so():
    (run,) = run_suite(["testkit.broken_adapters:inversion_without_first_step"], SMALL, progress=False)[0]
    result = next(r for r in run.results if r.case == f"inversion[S={broken_adapters.S}]")
    assert result.status is Status.CONVENTION
    assert any("no step from x_0 (s = 0)" in note and "alpha_bar_1" in note for note in result.conventions)


def test_rejected_configurations_are_shown_not_applicable_with_the_error():
    runs, skipped = run_suite(["testkit.broken_adapters:with_rejected_configuration"], SMALL, progress=False)
    assert not skipped and [run.description.name for run in runs] == [
        "refused: linear, T=50, option='nope'", "broken: the reference, accepted"]
    rejected, accepted = runs
    assert rejected.description.rejected == "ValueError: option must be one of ['yes']"
    assert rejected.description.family == "option" and rejected.description.options == {"option": "nope"}
    (row,) = rejected.results
    assert row.status is Status.NOT_APPLICABLE and "the library rejects this configuration: ValueError" in row.detail
    assert rejected.conformant and len(accepted.results) > 10


def test_not_offered_is_not_applicable():
    (run,) = run_suite(["testkit.broken_adapters:no_posterior"], SMALL, progress=False)[0]
    result = next(r for r in run.results if r.case == "posterior")
    assert result.status is Status.NOT_APPLICABLE and "no q(x_{t-1}" in result.detail


# ------------------------------------------------------------------------------------------ protocol, loading
def test_check_adapter_names_what_is_missing():
    with pytest.raises(AdapterError, match="no method q_posterior"):
        check_adapter(broken_adapters.MissingPosterior())
    bad = ReferenceAdapter("linear", 50)
    bad.timestep_base = 2
    with pytest.raises(AdapterError, match="timestep_base must be 0 or 1"):
        check_adapter(bad)
    thresholds = ReferenceAdapter("linear", 50)
    thresholds.conventions = {Convention.THRESHOLDS_X0: "thresholds x0_hat"}
    with pytest.raises(AdapterError, match="threshold must be"):
        check_adapter(thresholds)
    thresholds.threshold = (0.995, 1.5)
    assert check_adapter(thresholds) is thresholds


@pytest.mark.parametrize("spec, message", [
    ("no_colon", "must look like package.module:factory"),
    ("no_such_module_xyz:factory", "does not import"),
    ("testkit.broken_adapters:no_such_factory", "has no callable"),
    ("testkit.broken_adapters:missing_posterior", "no method q_posterior"),
])
def test_load_adapters_rejects_bad_specs(spec, message):
    with pytest.raises(AdapterError, match=message):
        load_adapters(spec)


# ------------------------------------------------------------------------------------------------------- CLI
def test_cli_exit_codes_and_report(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(TESTS), os.environ.get("PYTHONPATH", "")]))
    monkeypatch.setattr("ddpm.conformance.cases.SuiteConfig", lambda seed=0: SMALL)
    argv = ["conform", "--adapter", "testkit.broken_adapters:wrong_variance", "--adapter",
            "testkit.broken_adapters:conformant", "--out", str(tmp_path), "--no-progress"]
    assert main(argv) == 1
    out = capsys.readouterr().out
    assert "NOT conformant: reverse_step[beta_tilde], edges[beta_tilde], search[beta_tilde]" in out
    assert "ddpm-verified GaussianDiffusion(linear, T=50)" in out and ": conformant" in out
    report = json.loads((tmp_path / "conformance.json").read_text())
    (broken, *refs) = report["implementations"]
    assert not broken["conformant"] and all(r["conformant"] for r in refs)
    failed = [c for c in broken["cases"] if c["status"] == "fail"]
    assert [c["case"] for c in failed] == ["reverse_step[beta_tilde]", "edges[beta_tilde]", "search[beta_tilde]"]
    for case in failed:
        assert "a.reverse_step(eps, xt, t, z, 'beta_tilde')" in case["reproduction"]
    # One root cause: its first case's snippet runs, the others say why theirs did not.
    assert "(exit status 0)" in failed[0]["reproduction_output"], failed[0]["reproduction_output"]
    assert all(c["reproduction_output"] == SAME_CAUSE for c in failed[1:])
    (finding,) = report["findings"]  # three cases, one root cause
    assert finding["option"] == "beta_tilde" and len(finding["cases"]) == 3
    assert all(c["seconds"] >= 0 for imp in report["implementations"] for c in imp["cases"])  # each case timed
    markdown = (tmp_path / "conformance.md").read_text()
    # The command it records is the one parsed, portable: python -m ddpm, never the interpreter's path.
    assert report["command"] == "python -m ddpm " + " ".join(argv) and sys.executable not in markdown
    assert f"Generated by `{report['command']}`" in markdown and f"(Python {platform.python_version()}, " in markdown
    assert "## Findings" in markdown and "### F1. broken: " in markdown and "**FAIL**" in markdown
    for implementation in report["implementations"]:
        for case in implementation["cases"]:
            assert f"`{case['case']}`" in markdown


def test_cli_exit_0_when_conformant(capsys, monkeypatch):
    monkeypatch.setattr("ddpm.conformance.cases.SuiteConfig", lambda seed=0: SMALL)
    assert main(["conform", "--adapter", "testkit.broken_adapters:clips_declared", "--no-progress"]) == 0
    assert ": conformant" in capsys.readouterr().out


def test_cli_fail_on_holds_only_the_named_adapters_to_the_result(monkeypatch):
    monkeypatch.setattr("ddpm.conformance.cases.SuiteConfig", lambda seed=0: SMALL)
    broken, textbook = "testkit.broken_adapters:wrong_variance", "testkit.broken_adapters:zero_snr_textbook"
    both = ["conform", "--adapter", broken, "--adapter", textbook, "--no-progress", "--no-reproductions"]
    assert main([*both, "--fail-on", textbook]) == 0
    assert main([*both, "--fail-on", broken]) == 1


@pytest.mark.parametrize("spec", ["nonsense", "no_such_module_xyz:factory"])
def test_cli_bad_adapter_is_a_one_line_error_with_exit_2(spec, capsys):
    assert main(["conform", "--adapter", spec, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddpm: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_markdown_lists_conventions_and_not_applicable():
    runs, _ = run_suite(["testkit.broken_adapters:clips_declared"], SMALL, progress=False)
    text = to_markdown(to_json(runs, SMALL, [], "test", 0.0))
    assert "Declared conventions:" in text and "conv." in text and "n/a" in text
    # A command stored with the interpreter's path (before commands were recorded portably) renders as python.
    text = to_markdown(to_json(runs, SMALL, [], f"{sys.executable} -m ddpm conform --out x", 0.0))
    assert "Generated by `python -m ddpm conform --out x`" in text and sys.executable not in text
