"""The conformance suite (ddpm/conformance): the reference passes every case, broken adapters fail exactly theirs.

No third-party package is needed here (their adapters are tested by tests/conformance/test_adapters.py in
`nox -s conformance`). The broken adapters of tests/testkit/broken_adapters.py each carry one plausible bug; the
suite must fail the cases that bug touches and no other, which shows both that the cases can fail and that
their tolerances do not flag correct code.
"""

from __future__ import annotations

import json
import os

import pytest
import torch

from ddpm.cli import main
from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.cases import Status, SuiteConfig
from ddpm.conformance.protocol import AdapterError, Convention, check_adapter
from ddpm.conformance.report import to_json, to_markdown
from ddpm.conformance.runner import load_adapters, run_adapter, run_suite
from testkit import broken_adapters
from testkit.paths import REPO, TESTS

SMALL = SuiteConfig(strided_steps=broken_adapters.S, ddim_steps=broken_adapters.S, chain_samples=1000,
                    loss_batches=20)
STATISTICAL = {"loss_at_eps_star"}


def _statuses(run) -> dict[str, Status]:
    return {r.case: r.status for r in run.results}


@pytest.mark.parametrize("schedule", ["linear", "cosine"])
@pytest.mark.parametrize("dtype", [torch.float64, torch.float32], ids=["float64", "float32"])
def test_reference_passes_every_exact_case(schedule, dtype):
    """Our library passes in float64 and in float32 (the float32 tolerance comes from the rounding model)."""
    run = run_adapter(ReferenceAdapter(schedule, 100, dtype), SMALL, progress=False)
    exact = {r.case: r for r in run.results if r.case not in STATISTICAL and not r.case.startswith("chain[")}
    assert len(exact) == 12
    bad = {name: r.detail for name, r in exact.items() if r.status is not Status.PASS}
    assert not bad, f"reference ({schedule}, {dtype}) must pass: {bad}"
    worst = max(r.ratio for r in exact.values() if r.ratio is not None)
    assert worst < 1.0


CHAIN_CASES = 4 + 1  # the reference's 4 chains and loss_at_eps_star, each at the suite's alpha
ALPHA = CHAIN_CASES * SMALL.alpha  # Bonferroni over the statistical cases of one reference run


@pytest.mark.statistical(alpha=ALPHA)
def test_reference_statistical_cases_pass(seed_base, record_property):
    """Chains driven by eps* produce the predicted law; the loss at eps* is its analytic minimum (alpha above)."""
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


def test_reference_at_T_1000_with_the_default_config_is_conformant():
    runs, skipped = run_suite(["reference"], progress=False)
    assert not skipped and len(runs) == 2
    for run in runs:
        assert run.conformant, [(r.case, r.detail) for r in run.results if r.status is Status.FAIL]
        assert all(r.status is Status.PASS for r in run.results), _statuses(run)


@pytest.mark.parametrize("bug", sorted(broken_adapters.EXPECTED_FAILURES))
def test_broken_adapter_fails_exactly_its_cases(bug):
    runs, _ = run_suite([f"testkit.broken_adapters:{bug}"], SMALL, progress=False)
    (run,) = runs
    failed = {case for case, status in _statuses(run).items() if status is Status.FAIL}
    assert failed == broken_adapters.EXPECTED_FAILURES[bug], f"{bug}: failed {sorted(failed)}"
    for result in run.results:
        if result.status is Status.FAIL:
            assert result.detail, result.case
            assert result.where or result.case.startswith("chain[") or "raised" in result.detail or result.p_value


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
    monkeypatch.setattr("ddpm.cli.argv_is_cli", lambda: False)
    assert main(["conform", "--adapter", "testkit.broken_adapters:wrong_variance", "--adapter", "reference",
                 "--out", str(tmp_path), "--no-progress"]) == 1
    out = capsys.readouterr().out
    assert "NOT conformant: reverse_step[beta_tilde]" in out
    assert "ddpm-verified GaussianDiffusion(linear, T=1000)" in out and ": conformant" in out
    report = json.loads((tmp_path / "conformance.json").read_text())
    (broken, *refs) = report["implementations"]
    assert not broken["conformant"] and all(r["conformant"] for r in refs)
    failed = [c for c in broken["cases"] if c["status"] == "fail"]
    assert [c["case"] for c in failed] == ["reverse_step[beta_tilde]"]
    assert "a.reverse_step(eps, xt, t, z, 'beta_tilde')" in failed[0]["reproduction"]
    assert "(exit status 0)" in failed[0]["reproduction_output"], failed[0]["reproduction_output"]
    markdown = (tmp_path / "conformance.md").read_text()
    assert "## Failures and their reproductions" in markdown and "**FAIL**" in markdown
    for implementation in report["implementations"]:
        for case in implementation["cases"]:
            assert f"`{case['case']}`" in markdown


def test_cli_exit_0_when_conformant(capsys, monkeypatch):
    monkeypatch.setattr("ddpm.conformance.cases.SuiteConfig", lambda seed=0: SMALL)
    assert main(["conform", "--adapter", "testkit.broken_adapters:clips_declared", "--no-progress"]) == 0
    assert ": conformant" in capsys.readouterr().out


@pytest.mark.parametrize("spec", ["nonsense", "no_such_module_xyz:factory"])
def test_cli_bad_adapter_is_a_one_line_error_with_exit_2(spec, capsys):
    assert main(["conform", "--adapter", spec, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("ddpm: error: ") and err.count("\n") == 1 and "Traceback" not in err


def test_markdown_lists_conventions_and_not_applicable():
    runs, _ = run_suite(["testkit.broken_adapters:clips_declared"], SMALL, progress=False)
    text = to_markdown(to_json(runs, SMALL, [], "test", 0.0))
    assert "Declared conventions:" in text and "conv." in text and "n/a" in text


def test_readme_example_adapter_is_conformant(tmp_path, monkeypatch):
    """The README's example adapter (the code block after its conformance-example marker) passes the suite."""
    readme = (REPO / "README.md").read_text()
    block = readme.split("<!-- conformance-example -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "my_ddpm_adapter.py").write_text(block)
    monkeypatch.syspath_prepend(str(tmp_path))
    runs, _ = run_suite(["my_ddpm_adapter:factory"], SMALL, progress=False)
    (run,) = runs
    assert run.conformant, [(r.case, r.detail) for r in run.results if r.status is Status.FAIL]
    assert {r.case for r in run.results if r.status is Status.PASS} >= {
        "schedule", "q_sample", "posterior", "reverse_step[small]", "reverse_step[large]", "finite"}
