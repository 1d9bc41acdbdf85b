"""ddpm.evaluation.report: report.md / report.html of a trained and evaluated run, built only from the run's files.

The run is the tiny digits run of the `evaluated_run` fixture (tests/evaluation/conftest.py, built once per
session); each test copies it, so the report's files land in a folder of its own. Numbers are checked against
metrics.json in the report's documented formats (bits/dim to 4 decimals, FID 2, KID 5, rates 2, seconds 1), written
out here independently.
"""

from __future__ import annotations

import base64
import json
import re
import shutil

import pytest

from ddpm.cli import main
from ddpm.evaluation.report import REQUIRED_METRICS, ReportError, term_curves, write_report
from testkit.runs import EVAL_COMMAND, read_metrics

SECTIONS = (
    "Headline numbers", "How this run was produced", "Configuration and versions", "Training",
    "Test-set bound (negative ELBO) in bits/dim", "Samples", "Denoising trajectory", "FID and KID", "Throughput",
    "Where the time went",
)
FIGURES = ("loss_curve.png", "elbo_terms.png", "samples.png", "trajectory.png", "timings.png")
REPORT_COMMAND = "python -m ddpm report RUN (test)"


@pytest.fixture
def run(evaluated_run, tmp_path):
    copy = tmp_path / "run"
    shutil.copytree(evaluated_run, copy)
    return copy


@pytest.fixture
def reported(run):
    write_report(run, command=REPORT_COMMAND)
    return run, (run / "report.md").read_text(encoding="utf-8"), (run / "report.html").read_text(encoding="utf-8")


def test_report_has_every_section_in_both_formats(reported):
    _, md, page = reported
    headings = re.findall(r"^#{1,3} (.+)$", md, flags=re.M)
    for section in SECTIONS:
        assert section in headings, f"report.md lacks section {section!r}"
        assert re.search(rf"<h[23]>{re.escape(section)}</h[23]>", page), f"report.html lacks section {section!r}"


def test_every_figure_exists_and_is_embedded_in_the_html(reported):
    run, md, page = reported
    referenced = re.findall(r"!\[[^\]]*\]\(([^)]+)\)", md)
    assert sorted(referenced) == sorted(FIGURES)
    pattern = r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"[^>]*data-file="([^"]+)"'
    embedded = {name: payload for payload, name in re.findall(pattern, page)}
    for name in FIGURES:
        path = run / name
        assert path.is_file() and path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", f"{name} is not a PNG in DIR"
        assert base64.b64decode(embedded[name]) == path.read_bytes(), f"report.html embeds another {name}"


def test_html_is_self_contained(reported):
    _, _, page = reported
    sources = re.findall(r'(?:src|href)="([^"]*)"', page)
    assert sources and all(s.startswith("data:image/png;base64,") for s in sources), sources[:3]


def test_numbers_in_the_report_equal_metrics_json(reported):
    run, md, page = reported
    m = read_metrics(run)
    expected = [
        f"| test-set bound (Monte Carlo), bits/dim | {m['elbo_bits_per_dim']:.4f} +- "
        f"{m['elbo_bits_per_dim_stderr']:.4f} |",
        f"| test-set bound (exact in t), bits/dim | {m['elbo_exact_bits_per_dim']:.4f} +- "
        f"{m['elbo_exact_bits_per_dim_stderr']:.4f} |",
        f"Monte Carlo estimate: {m['elbo_bits_per_dim']:.4f} +- {m['elbo_bits_per_dim_stderr']:.4f} bits/dim",
        f"terms: {m['elbo_exact_bits_per_dim']:.4f} +- {m['elbo_exact_bits_per_dim_stderr']:.4f} bits/dim",
        f"| training throughput, images/s | {m['train_images_per_second']:.2f} |",
        f"| sampling throughput, images/s | {m['sample_images_per_second']:.2f} |",
        f"| wall time (train + evaluate), s | {m['wall_seconds']:.1f} |",
        f"{m['elbo_num_images']} test images, {m['elbo_mc_num_draws']} draws (importance over t)",
        f"| {m['elbo_exact_num_images']} test images |",
        f"{m['sample_count']} samples in {m['sample_seconds']:.1f} s",
        f"{m['train_steps']} updates in {m['train_seconds']:.1f} s",
        f"a factor {m['elbo_mc_predicted_variance_reduction']:.2f} fewer network calls",
    ]
    expected += [f"| {name} | {seconds:.1f} |" for name, seconds in m["timings"].items()]
    for text in expected:
        assert text in md, f"report.md lacks {text!r}"
        cells = text.strip("| ").split(" | ")
        assert all(cell in page for cell in cells), f"report.html lacks {cells!r}"


def test_report_shows_the_bound_under_each_variance_side_by_side(reported):
    """A table row per variance (exact bound +- stderr, images), the headline's marked; the Gamma_t record; the plot
    has one curve per variance and its caption names them."""
    run, md, page = reported
    m = read_metrics(run)
    headline = m["elbo_variance"]
    assert "### The bound under each reverse variance" in md
    for name, entry in m["elbo_exact_by_variance"].items():
        use = "headline bound, samples and FID" if name == headline else ""
        row = f"| `{name}` | {entry['bits_per_dim']:.4f} +- {entry['stderr']:.4f} | {entry['images']} | {use} |"
        assert row in md, f"report.md lacks {row!r}"
        assert f"<td><code>{name}</code></td><td>{entry['bits_per_dim']:.4f} +- {entry['stderr']:.4f}</td>" in page
    assert f"| reverse variance sigma_t^2 of the bounds above, the samples and FID | `{headline}` |" in md
    gamma = m["optimal_variance"]
    assert (f"from {gamma['images_per_t']} images of the train split per t (seed {gamma['seed']}, checkpoint step "
            f"{gamma['step']}): largest standard error {gamma['gamma_stderr_max']:.5f}, "
            f"{gamma['gamma_clipped_timesteps']} of T = {m['T']} values clipped") in md
    assert f"estimated by this evaluation on {gamma['train_split_images']} training images" in md
    assert "under sigma_t^2 = beta (headline), beta_tilde, optimal" in md
    record = json.loads((run / "elbo_terms.json").read_text())
    labels = [label for label, _, _ in term_curves(record)]
    assert labels == ["sigma_t^2 = beta (headline)", "sigma_t^2 = beta_tilde", "sigma_t^2 = optimal"]


def test_a_run_evaluated_before_the_variance_keys_existed_is_reported_without_the_table(run):
    m = read_metrics(run)
    del m["elbo_exact_by_variance"], m["optimal_variance"]
    (run / "metrics.json").write_text(json.dumps(m))
    record = json.loads((run / "elbo_terms.json").read_text())
    del record["by_variance"]
    (run / "elbo_terms.json").write_text(json.dumps(record))
    files = write_report(run, command=REPORT_COMMAND)
    md = files.markdown.read_text()
    assert "The bound under each reverse variance" not in md and "elbo_terms.png" in md
    assert [label for label, _, _ in term_curves(record)] == [f"sigma_t^2 = {m['elbo_variance']}"]


def test_report_names_commands_seeds_device_versions_and_counts(reported):
    run, md, _ = reported
    m = read_metrics(run)
    record = json.loads((run / "run.json").read_text())
    assert f"`{' '.join(record['sessions'][0]['command'])}`" in md
    assert f"`{EVAL_COMMAND}`" in md and f"`{REPORT_COMMAND}`" in md
    assert f"| evaluation seed | {m['seed']} |" in md and f"| training seed | {record['seed']} |" in md
    assert f"| evaluation device | {m['device']} |" in md
    assert f"| torch | {m['versions']['torch']} | {m['checkpoint_versions']['torch']} |" in md
    assert f"the first {m['sample_count']} of {m['sample_count']}" in md
    assert "not computed (evaluate ran with --skip-fid)" in md


def test_fid_and_kid_are_shown_with_n_and_the_reference_set(run):
    m = read_metrics(run)
    m.update(fid=12.34567, kid_mean=0.0123456, kid_std=0.00098765, kid_subsets=100, kid_subset_size=8,
             fid_reference={"dataset": "digits", "split": "test", "num_images": m["fid_num_samples"],
                            "subset": "seeded random subset (seed 0)", "cache_name": "ddpm-digits-test-n16-x",
                            "feature_extractor": "inception-v3-compat", "weights_sha256": "ab" * 32})
    (run / "metrics.json").write_text(json.dumps(m))
    write_report(run, command=REPORT_COMMAND)
    md = (run / "report.md").read_text()
    n = m["fid_num_samples"]
    assert "| FID | 12.35 |" in md and "0.01235 +- 0.00099" in md
    assert f"N = {n} samples vs {n} test images" in md
    assert f"{n} images of the test split of digits (seeded random subset (seed 0))" in md
    assert "`ddpm-digits-test-n16-x`" in md and "100 subsets of 8 images a side" in md
    assert "Inception Score is not reported" in md
    from ddpm.images.fid import kid_standard_error

    computed = kid_standard_error(0.00098765, 8, n, 100)  # a metrics file without kid_stderr: computed from its std
    assert f"| KID +- standard error | 0.01235 +- {computed:.5f} |" in md
    m.update(kid_stderr=0.00054321)
    (run / "metrics.json").write_text(json.dumps(m))
    write_report(run, command=REPORT_COMMAND)
    md = (run / "report.md").read_text()
    assert "| KID +- standard error | 0.01235 +- 0.00054 |" in md
    assert "| KID's std over subsets (one subset's spread) | 0.00099 |" in md


def test_a_run_without_training_files_is_reported_without_a_loss_curve(run):
    (run / "train_log.jsonl").unlink()
    (run / "run.json").unlink()
    files = write_report(run, command=REPORT_COMMAND)
    md = files.markdown.read_text()
    assert "No training log (`train_log.jsonl`) in this folder" in md and "loss_curve.png" not in md
    assert "(no run.json in this folder)" in md


@pytest.mark.parametrize(
    ("damage", "match"),
    [
        (lambda run: shutil.rmtree(run), "does not exist"),
        (lambda run: (shutil.rmtree(run), run.write_text("x")), "is not a folder"),
        (lambda run: (run / "metrics.json").unlink(), "no finished evaluation"),
        (lambda run: (run / "metrics.json").write_text("{not json"), "cannot read metrics"),
        (lambda run: (run / "metrics.json").write_text("[1, 2]"), "not a JSON object"),
        (lambda run: (run / "elbo_terms.json").unlink(), "lacks elbo_terms.json"),
        (lambda run: (run / "samples.png").unlink(), "lacks samples.png"),
    ],
)
def test_report_refuses_a_folder_without_a_finished_run(run, damage, match):
    damage(run)
    with pytest.raises(ReportError, match=match):
        write_report(run)
    assert not (run / "report.md").exists() if run.is_dir() else True


@pytest.mark.parametrize("key", REQUIRED_METRICS)
def test_report_names_a_missing_metrics_key(run, key):
    m = read_metrics(run)
    del m[key]
    (run / "metrics.json").write_text(json.dumps(m))
    with pytest.raises(ReportError, match=f"lacks required key.*{key}"):
        write_report(run)


def test_cli_report_writes_and_refuses_with_one_line(run, tmp_path, capsys):
    assert main(["report", str(run)]) == 0
    assert f"python -m ddpm report {run}" in (run / "report.md").read_text()
    empty = tmp_path / "empty"
    empty.mkdir()
    assert main(["report", str(empty)]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("ddpm: error: ") and "metrics.json" in err[0]


def test_time_split_groups_every_phase_once():
    from ddpm.evaluation.report import time_split

    timings = {"train": 600.0, "load": 5.0, "optimal_variance": 20.0, "elbo_exact": 40.0, "elbo_monte_carlo": 8.0,
               "sampling": 500.0, "write_images": 1.0, "fid_kid": 300.0, "notes": "ignored", "nan": float("nan")}
    split = time_split(timings)
    assert split == {"training": 600.0, "sampling": 501.0, "FID/KID": 300.0, "bound": 68.0, "other": 5.0}
    assert sum(split.values()) == sum(v for k, v in timings.items() if k not in ("notes", "nan"))


def test_report_shows_the_time_split_and_the_session_budget_beside_what_it_took(run):
    """A run whose run.json holds a session budget's plan: planned and measured seconds side by side."""
    from ddpm.evaluation.report import time_split

    record = json.loads((run / "run.json").read_text())
    plan = {"session_seconds": 1620.0, "spent_seconds": 150.0, "training_seconds": 528.5, "margin_seconds": 89.0,
            "predicted_evaluation": {"sampling": 486.0, "fid_kid": 282.0, "bound": 54.0, "fixed": 30.0},
            "speed": {"sampling_forwards_per_second": 2100.0, "eager_forwards_per_second": 1500.0,
                      "inception_images_per_second": 10.6, "compile_seconds": 31.0, "probe_seconds": 44.0}}
    record["sessions"][-1]["budget"] = plan
    (run / "run.json").write_text(json.dumps(record))
    write_report(run, command=REPORT_COMMAND)
    md = (run / "report.md").read_text(encoding="utf-8")
    m = read_metrics(run)
    split = time_split(m["timings"])
    assert "### The session budget" in md
    assert f"| training | 528.5 | {split['training']:.1f} |" in md
    assert f"| sampling | 486.0 | {split['sampling']:.1f} |" in md
    assert f"| FID/KID | 282.0 | {split['FID/KID']:.1f} |" in md
    total = sum(split.values())
    assert f"| training | {split['training']:.1f} | {100 * split['training'] / total:.0f} |" in md
    achieved = m["sample_images_per_second"] * m["T"]
    assert f"{achieved / 2100.0:.2f} of what the budget probe measured" in md


def test_commands_stored_with_the_interpreter_path_render_as_python(run):
    """run.json and metrics.json written before commands were recorded portably hold the interpreter's absolute
    path; the report shows `python` in its place and keeps the arguments."""
    interpreter = "/opt/old-venv/bin/python3"
    record = json.loads((run / "run.json").read_text())
    record["command"] = record["sessions"][0]["command"] = [interpreter, "-m", "ddpm", "train", "--out", "RUN"]
    (run / "run.json").write_text(json.dumps(record))
    m = read_metrics(run)
    m["command"] = f"{interpreter} -m ddpm evaluate --out RUN"
    (run / "metrics.json").write_text(json.dumps(m))
    files = write_report(run, command=REPORT_COMMAND)
    for text in (files.markdown.read_text(), files.html.read_text()):
        assert "python -m ddpm train --out RUN" in text and "python -m ddpm evaluate --out RUN" in text
        assert interpreter not in text
