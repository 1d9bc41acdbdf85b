"""The conformance power study (ddpm/studies/conformance_power.py): its intervals, its false-rejection flag, a small
run of the whole study and its command line."""

from __future__ import annotations

import json

import pytest
from scipy import stats

from ddpm.conformance.graded import ErrorKind
from ddpm.studies import conformance_power as power


def test_clopper_pearson_matches_its_closed_forms():
    """0 of n: [0, 1 - (a/2)^(1/n)]; n of n: [(a/2)^(1/n), 1]; otherwise beta quantiles (a = 0.05)."""
    low, high = power.clopper_pearson(0, 30)
    assert low == 0.0 and high == pytest.approx(1 - 0.025 ** (1 / 30), rel=1e-9)
    low, high = power.clopper_pearson(30, 30)
    assert high == 1.0 and low == pytest.approx(0.025 ** (1 / 30), rel=1e-9)
    low, high = power.clopper_pearson(7, 20)
    assert low == pytest.approx(stats.beta.ppf(0.025, 7, 14), rel=1e-9)
    assert high == pytest.approx(stats.beta.ppf(0.975, 8, 13), rel=1e-9)


@pytest.mark.parametrize("failures, flagged", [(0, False), (1, False), (2, True)])
def test_false_rejections_above_alpha_are_flagged(failures, flagged):
    """At alpha = 1e-3 over 40 seeds one false rejection has binomial p 0.039, two have 7.6e-4 < 0.01."""
    cell = power.Cell(ErrorKind.NOISE, "chain[x]", 0.0)
    for i in range(40):
        cell.add(i < failures, 1e-4 if i < failures else 0.5)
    row = power.row_of(cell, alpha=1e-3)
    assert row["flagged"] is flagged and row["detections"] == failures
    assert row["probe_rate"] == failures / 40
    assert "flagged" not in power.row_of(power.Cell(ErrorKind.NOISE, "chain[x]", 0.1, [True], [1e-5]), 1e-3)


def test_parse_grid_replaces_one_kind_and_refuses_nonsense():
    grid = power.parse_grid(["loss=0,0.5"])
    assert grid[ErrorKind.LOSS] == (0.0, 0.5) and grid[ErrorKind.NOISE] == power.GRID[ErrorKind.NOISE]
    for bad in ("loss", "nonsense=0,1", "loss=", "loss=a"):
        with pytest.raises(ValueError, match="KIND=d1,d2"):
            power.parse_grid([bad])


@pytest.mark.slow
def test_a_small_study_writes_its_report(tmp_path, capsys):
    """Two seeds, delta 0 and a large error per kind: the large noise and loss errors are detected every time (the
    default study measured 40/40 at delta = 0.06), the cancelling one never, and nothing at delta = 0."""
    code = power.main(["--out", str(tmp_path), "--seeds", "2", "--grid", "noise=0,0.06", "--grid", "loss=0,0.06",
                       "--grid", "cancelling=0,1", "--no-progress"])
    assert code == 0, capsys.readouterr().err
    report = json.loads((tmp_path / "power.json").read_text())
    assert report["seeds"] == [0, 1] and report["alpha"] == 1e-3 and report["versions"]["scipy"]
    rates = {(r["kind"], r["case"], r["delta"]): r["rate"] for r in report["rows"]}
    chains = ["chain[algorithm_2(variance='beta')]", "chain[algorithm_2(variance='beta_tilde')]"]
    calibrations = [c.replace("chain[", "calibration[") for c in chains]  # every statistical case of the chains
    assert set(rates) == {(k, c, d) for k, d in (("noise", 0.0), ("noise", 0.06), ("cancelling", 0.0),
                                                 ("cancelling", 1.0)) for c in chains + calibrations} | {
        ("loss", "loss_at_eps_star", 0.0), ("loss", "loss_at_eps_star", 0.06)}
    for (kind, case, delta), rate in rates.items():
        if case.startswith("chain[") or case == "loss_at_eps_star":
            assert rate == (1.0 if delta == 0.06 else 0.0), (kind, case, delta)
        elif delta == 0.0:
            assert rate == 0.0, (kind, case)
    markdown = (tmp_path / "power.md").read_text()
    assert "`python -m ddpm.studies.conformance_power --out" in markdown and "alpha = 0.001" in markdown
    assert "| `loss_at_eps_star` | 0.06 | 2/2 | 1.00 |" in markdown
    assert (tmp_path / "power.png").read_bytes().startswith(b"\x89PNG")


@pytest.mark.parametrize("argv", [["--seeds", "0"], ["--grid", "cancelling=0,1000"], ["--grid", "x=1"]])
def test_bad_arguments_exit_2_with_one_line(tmp_path, capsys, argv):
    assert power.main(["--out", str(tmp_path), *argv]) == 2
    err = capsys.readouterr().err
    assert err.startswith("conformance_power: ") and err.count("\n") == 1
    assert not (tmp_path / "power.json").exists()
