"""The run report: DIR/report.md and a self-contained DIR/report.html, generated only from the files in DIR.

`write_report(DIR)` reads what `train` and `evaluate` wrote (metrics.json and elbo_terms.json, which must exist;
run.json and train_log.jsonl, used when present; samples.png and trajectory.png), draws three plots with
matplotlib (Agg): loss_curve.png (the training loss from train_log.jsonl), elbo_terms.png (the per-term bound
L_0 .. L_T of the exact subset under each reverse variance, log scale, and the importance proposal over t) and
timings.png (where the time went), and writes the same content twice: report.md (images referenced by relative
file name) and report.html (images embedded as base64, so the one file can be mailed). Every number comes from
those files; none is typed here. The report names the commands that produced it (train from run.json, evaluate
from metrics.json, and the report command itself), seeds, devices, package versions and sample counts.

Numbers are printed with fixed formats (`FORMATS`): bits/dim and their standard errors to 4 decimals, FID to 2,
KID to 5, Gamma_t's standard error to 5, throughput to 2 and seconds to 1; tests read them back against
metrics.json. The bound section has a table of the exact bound under each reverse variance (metrics.json's
elbo_exact_by_variance) and names the variance of the headline bound, the samples and FID (elbo_variance); runs
evaluated before those keys existed are reported without the table.

A DIR without a finished evaluation (no metrics.json, or one without the required keys) is refused with a
`ReportError` (a ValueError) whose one-line message says what is missing and how to produce it.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from ddpm.evaluation.run_folder import ELBO_TERMS_FILE, METRICS_FILE, RUN_JSON, SAMPLES_PNG, TRAIN_LOG, TRAJECTORY_PNG
from ddpm.runtime.files import atomic_write_bytes
from ddpm.runtime.provenance import command_line, portable_command

REPORT_MD = "report.md"
REPORT_HTML = "report.html"
LOSS_CURVE_PNG = "loss_curve.png"
ELBO_TERMS_PNG = "elbo_terms.png"
TIMINGS_PNG = "timings.png"

# Keys metrics.json must have for a report (its headline keys, `ddpm.evaluation.evaluate`).
REQUIRED_METRICS = (
    "dataset", "preset", "device", "seed", "train_steps", "train_images_per_second", "sample_images_per_second",
    "elbo_bits_per_dim", "elbo_bits_per_dim_stderr", "elbo_num_images", "fid", "kid_mean", "fid_num_samples",
    "wall_seconds",
)

# Decimal places per kind of number (the tests format metrics.json values the same way).
FORMATS = {"bits": 4, "fid": 2, "kid": 5, "gamma": 5, "rate": 2, "seconds": 1, "loss": 4}


class ReportError(ValueError):
    """DIR does not hold a finished run (or one of its files is unreadable); the message is one line."""


# ------------------------------------------------------------------------------------------ document blocks
@dataclass(frozen=True)
class Heading:
    level: int
    text: str


@dataclass(frozen=True)
class Paragraph:
    """Text; `code` spans in backticks."""

    text: str


@dataclass(frozen=True)
class Table:
    header: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]


@dataclass(frozen=True)
class Figure:
    """An image file in DIR (relative name) with a caption."""

    file: str
    caption: str


@dataclass(frozen=True)
class Code:
    text: str


Block = Heading | Paragraph | Table | Figure | Code


def render_markdown(blocks: Sequence[Block]) -> str:
    """The blocks as GitHub-flavoured Markdown (images by relative path)."""
    out: list[str] = []
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"{'#' * block.level} {block.text}")
        elif isinstance(block, Paragraph):
            out.append(block.text)
        elif isinstance(block, Table):
            cell = lambda s: str(s).replace("|", "\\|")  # noqa: E731
            out.append("| " + " | ".join(cell(h) for h in block.header) + " |")
            out.append("|" + "|".join(" --- " for _ in block.header) + "|")
            out.extend("| " + " | ".join(cell(c) for c in row) + " |" for row in block.rows)
        elif isinstance(block, Figure):
            out.append(f"![{block.caption}]({block.file})\n\n*{block.caption}*")
        elif isinstance(block, Code):
            out.append(f"```\n{block.text}\n```")
        out.append("")
    return "\n".join(out)


def _inline_html(text: str) -> str:
    escaped = html.escape(text, quote=False)
    return re.sub(r"`([^`]+)`", r"<code>\1</code>", escaped)


_CSS = (
    "body{font-family:system-ui,sans-serif;max-width:60rem;margin:2rem auto;padding:0 1rem;line-height:1.45}"
    "table{border-collapse:collapse;margin:0.5rem 0}td,th{border:1px solid #bbb;padding:0.2rem 0.6rem;"
    "text-align:left}th{background:#eee}code,pre{background:#f4f4f4}pre{padding:0.6rem;overflow-x:auto}"
    "figure{margin:1rem 0}img{max-width:100%;image-rendering:pixelated}figcaption{font-style:italic}"
)


def render_html(blocks: Sequence[Block], run_dir: Path, title: str) -> str:
    """The blocks as one self-contained HTML page: images embedded as base64 data URIs."""
    out = ["<!DOCTYPE html>", '<html lang="en"><head><meta charset="utf-8">',
           f"<title>{html.escape(title)}</title><style>{_CSS}</style></head><body>"]
    for block in blocks:
        if isinstance(block, Heading):
            out.append(f"<h{block.level}>{_inline_html(block.text)}</h{block.level}>")
        elif isinstance(block, Paragraph):
            out.append(f"<p>{_inline_html(block.text)}</p>")
        elif isinstance(block, Table):
            out.append("<table><thead><tr>" + "".join(f"<th>{_inline_html(h)}</th>" for h in block.header)
                       + "</tr></thead><tbody>")
            out.extend("<tr>" + "".join(f"<td>{_inline_html(str(c))}</td>" for c in row) + "</tr>"
                       for row in block.rows)
            out.append("</tbody></table>")
        elif isinstance(block, Figure):
            payload = base64.b64encode((run_dir / block.file).read_bytes()).decode("ascii")
            out.append(f'<figure><img src="data:image/png;base64,{payload}" alt="{html.escape(block.caption)}" '
                       f'data-file="{html.escape(block.file)}"><figcaption>{_inline_html(block.caption)}'
                       "</figcaption></figure>")
        elif isinstance(block, Code):
            out.append(f"<pre><code>{html.escape(block.text)}</code></pre>")
    out.append("</body></html>")
    return "\n".join(out) + "\n"


# ------------------------------------------------------------------------------------------------- inputs
def _read_json(path: Path, what: str):
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as error:
        raise ReportError(f"cannot read {what} {str(path)!r}: {error}") from None


def load_metrics(run_dir: Path) -> dict:
    """metrics.json of a finished evaluation; ReportError naming what is missing otherwise."""
    if not run_dir.exists():
        raise ReportError(f"run folder {str(run_dir)!r} does not exist")
    if not run_dir.is_dir():
        raise ReportError(f"{str(run_dir)!r} is not a folder (give the --out folder of train/evaluate)")
    path = run_dir / METRICS_FILE
    if not path.is_file():
        raise ReportError(
            f"{str(run_dir)!r} holds no finished evaluation ({METRICS_FILE} missing): run `python -m ddpm evaluate "
            f"--checkpoint {run_dir / 'checkpoint.pt'} --out {run_dir}` first"
        )
    metrics = _read_json(path, "metrics")
    if not isinstance(metrics, dict):
        raise ReportError(f"{str(path)!r} is not a JSON object")
    missing = [k for k in REQUIRED_METRICS if k not in metrics]
    if missing:
        raise ReportError(f"{str(path)!r} lacks required key(s) {', '.join(missing)}")
    return metrics


def load_train_log(run_dir: Path) -> list[dict]:
    """The JSON lines of train_log.jsonl ([] when absent); ReportError for a malformed line."""
    path = run_dir / TRAIN_LOG
    if not path.is_file():
        return []
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as error:
            raise ReportError(f"{str(path)!r} line {number} is not JSON: {error}") from None
        if isinstance(row, dict):
            rows.append(row)
    return rows


# -------------------------------------------------------------------------------------------------- plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    return plt


def _save_figure(figure, path: Path) -> None:
    import io

    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=110, bbox_inches="tight", metadata={"Software": None})
    _pyplot().close(figure)
    atomic_write_bytes(path, buffer.getvalue())


def plot_loss_curve(rows: Sequence[Mapping], path: Path) -> bool:
    """Training loss against update step (log scale); False (nothing written) when there is no loss to plot."""
    points = [(r["step"], r["loss"]) for r in rows
              if isinstance(r.get("step"), (int, float)) and isinstance(r.get("loss"), (int, float))
              and math.isfinite(r["loss"])]
    if not points:
        return False
    plt = _pyplot()
    steps, losses = np.array(points, dtype=np.float64).T
    figure, axis = plt.subplots(figsize=(7, 3.5))
    axis.plot(steps, losses, lw=1.0, label="loss (mean over each log interval)")
    axis.set_xlabel("update step")
    axis.set_ylabel("training loss")
    if losses.min() > 0:
        axis.set_yscale("log")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    _save_figure(figure, path)
    return True


def _floats(values) -> np.ndarray:
    return np.array([np.nan if v is None else v for v in values or []], dtype=np.float64)


def term_curves(record: Mapping) -> list[tuple[str, np.ndarray, np.ndarray]]:
    """(label, L_0 .. L_T [T + 1], standard errors [T + 1]) per reverse variance of elbo_terms.json.

    One curve per entry of "by_variance" (the headline's labelled as such); a record without it (evaluated before
    it existed) gives the headline's terms alone.
    """
    headline = record.get("variance")
    by_variance = record.get("by_variance")
    if not isinstance(by_variance, Mapping) or not by_variance:
        return [(f"sigma_t^2 = {headline}", _floats(record.get("bits_per_dim")),
                 _floats(record.get("bits_per_dim_stderr")))]
    return [(f"sigma_t^2 = {name}" + (" (headline)" if name == headline else ""), _floats(entry.get("bits_per_dim")),
             _floats(entry.get("bits_per_dim_stderr"))) for name, entry in by_variance.items()]


def plot_elbo_terms(record: Mapping, path: Path) -> bool:
    """Per-term bits/dim L_0 .. L_T, one curve per reverse variance (log scale, +-1 standard error), and p(t)."""
    curves = [c for c in term_curves(record) if c[1].size and np.isfinite(c[1]).any()]
    if not curves:
        return False
    plt = _pyplot()
    proposal = record.get("proposal")
    rows = 2 if proposal else 1
    figure, axes = plt.subplots(rows, 1, figsize=(7, 3.2 * rows), squeeze=False)
    axis = axes[0, 0]
    for label, values, errors in curves:
        k = np.arange(values.size)
        positive = values > 0
        (line,) = axis.semilogy(k[positive], values[positive], lw=1.0, label=label)
        if errors.size == values.size:
            lower = np.clip(values - errors, values * 1e-3, None)
            axis.fill_between(k[positive], lower[positive], (values + errors)[positive], alpha=0.2,
                              color=line.get_color())
    axis.set_xlabel("k (L_0 decoder, L_1..L_{T-1} KL terms, L_T prior)")
    axis.set_ylabel("bits/dim")
    axis.set_title(f"bound terms on {record.get('num_images')} test images (T = {record.get('T')}; mean, "
                   "band +-1 std. error)")
    axis.grid(True, which="both", alpha=0.3)
    axis.legend()
    if proposal:
        p = np.asarray(proposal, dtype=np.float64)
        t = np.arange(1, p.size + 1)
        axis = axes[1, 0]
        axis.semilogy(t, p, lw=1.0, label="importance proposal p(t)")
        axis.semilogy(t, np.full(p.size, 1.0 / p.size), lw=1.0, ls="--", label="uniform 1/T")
        axis.set_xlabel("t (drawing t evaluates L_{t-1})")
        axis.set_ylabel("p(t)")
        axis.grid(True, which="both", alpha=0.3)
        axis.legend()
    figure.tight_layout()
    _save_figure(figure, path)
    return True


# Evaluation phases (metrics.json "timings") grouped into the shares the report shows; what is left is "other".
TIME_GROUPS = {
    "training": ("train",),
    "sampling": ("sampling", "write_images"),
    "FID/KID": ("fid_kid",),
    "bound": ("optimal_variance", "elbo_exact", "elbo_monte_carlo", "elbo_exact_other_variances", "decoder_bins"),
}


def time_split(timings: Mapping[str, float]) -> dict[str, float]:
    """Seconds per group of TIME_GROUPS (training, sampling, FID/KID, bound) and "other" (the remaining phases)."""
    seconds = {name: float(v) for name, v in timings.items() if isinstance(v, (int, float)) and math.isfinite(v)}
    split = {group: sum(seconds.pop(name, 0.0) for name in names) for group, names in TIME_GROUPS.items()}
    split["other"] = sum(seconds.values())
    return split


def plot_timings(timings: Mapping[str, float], path: Path) -> bool:
    """One horizontal bar of train + evaluate seconds, split into training, sampling, FID/KID, bound and other."""
    split = {name: v for name, v in time_split(timings).items() if v > 0}
    total = sum(split.values())
    if total <= 0:
        return False
    plt = _pyplot()
    figure, axis = plt.subplots(figsize=(8, 1.9))
    left = 0.0
    for index, (name, seconds) in enumerate(split.items()):
        bar = axis.barh(0, seconds, left=left, color=f"C{index}", label=f"{name}: {seconds / 60:.1f} min "
                        f"({100 * seconds / total:.0f}%)")
        if seconds / total >= 0.06:
            axis.bar_label(bar, labels=[f"{100 * seconds / total:.0f}%"], label_type="center", color="white")
        left += seconds
    axis.set_yticks([])
    axis.set_xlim(0, total)
    axis.set_xlabel("seconds of train + evaluate")
    axis.legend(loc="upper center", bbox_to_anchor=(0.5, -0.45), ncol=3, frameon=False)
    axis.set_title(f"where the {total / 60:.1f} minutes went")
    _save_figure(figure, path)
    return True


# ------------------------------------------------------------------------------------------------- report
def fmt(value, kind: str) -> str:
    """A number from the run files in the report's format for `kind` (FORMATS); 'n/a' for missing values."""
    if value is None or (isinstance(value, float) and not math.isfinite(value)):
        return "n/a"
    return f"{float(value):.{FORMATS[kind]}f}"


def _command_of_run(run: Mapping) -> str | None:
    command = run.get("command")
    if isinstance(command, (list, str)) and command:
        return portable_command(command)  # a command stored with the interpreter's path reads as python
    return None


@dataclass(frozen=True)
class ReportFiles:
    """The files `write_report` wrote (paths in DIR)."""

    markdown: Path
    html: Path
    plots: tuple[Path, ...]


def _title_blocks(run_dir: Path, m: Mapping, command: str) -> list[Block]:
    """The title and where the numbers come from."""
    b: list[Block] = []
    title = f"DDPM run report: {m['dataset']}, preset {m['preset']}"
    b.append(Heading(1, title))
    b.append(Paragraph(
        f"Generated from the files in `{run_dir}` by `{command}` at "
        f"{datetime.now(timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}. Every number below is read from "
        f"`{METRICS_FILE}`, `{ELBO_TERMS_FILE}`, `{RUN_JSON}` and `{TRAIN_LOG}` in that folder."
    ))
    return b


def _headline_blocks(m: Mapping) -> list[Block]:
    """Headline numbers: the bounds, FID/KID, throughput, wall time, and the variance they use."""
    b: list[Block] = []
    b.append(Heading(2, "Headline numbers"))
    mc_images = m.get("elbo_num_images")
    b.append(Table(("quantity", "value", "based on"), (
        ("test-set bound (Monte Carlo), bits/dim", f"{fmt(m['elbo_bits_per_dim'], 'bits')} +- "
         f"{fmt(m['elbo_bits_per_dim_stderr'], 'bits')}", f"{mc_images} test images, "
         f"{m.get('elbo_mc_num_draws')} draws ({m.get('elbo_mc_proposal')} over t)"),
        ("test-set bound (exact in t), bits/dim", f"{fmt(m.get('elbo_exact_bits_per_dim'), 'bits')} +- "
         f"{fmt(m.get('elbo_exact_bits_per_dim_stderr'), 'bits')}", f"{m.get('elbo_exact_num_images')} test images"),
        ("reverse variance sigma_t^2 of the bounds above, the samples and FID", f"`{m.get('elbo_variance')}`",
         "the evaluation's variance (the bound under every variance: see the bound section)"),
        ("FID", fmt(m["fid"], "fid"), _fid_basis(m)),
        ("FID of real training images (the floor at this N)", fmt(m.get("fid_real_vs_real"), "fid"),
         _floor_basis(m)),
        ("KID +- standard error", _kid_with_error(m), _fid_basis(m)),
        ("training throughput, images/s", fmt(m["train_images_per_second"], "rate"), f"{m['train_steps']} updates"),
        ("sampling throughput, images/s", fmt(m["sample_images_per_second"], "rate"),
         f"Algorithm 2, T = {m.get('T')}, {m.get('sample_count')} samples"),
        ("wall time (train + evaluate), s", fmt(m["wall_seconds"], "seconds"), "timings below"),
    )))
    return b


def _provenance_blocks(m: Mapping, run: Mapping, command: str) -> list[Block]:
    """How this run was produced: commands, seeds, devices, checkpoint."""
    b: list[Block] = []
    b.append(Heading(2, "How this run was produced"))
    rows = []
    sessions = [s for s in run.get("sessions") or [] if isinstance(s, Mapping)]
    for number, session in enumerate(sessions, start=1):
        label = "train" if len(sessions) == 1 else f"train (session {number})"
        text = _command_of_run(session)
        rows.append((label, f"`{text}`" if text else f"(no command in {RUN_JSON})"))
    if not sessions:
        text = _command_of_run(run)
        rows.append(("train", f"`{text}`" if text else f"(no {RUN_JSON} in this folder)"))
    rows.append(("evaluate", f"`{_command_of_run(m)}`"))
    rows.append(("report", f"`{command}`"))
    b.append(Table(("step", "command"), tuple(rows)))
    setting_rows = [
        ("dataset", str(m["dataset"])),
        ("preset", str(m["preset"])),
        ("evaluation seed", str(m["seed"])),
        ("evaluation device", str(m["device"])),
    ]
    if "seed" in run:
        setting_rows.append(("training seed", str(run["seed"])))
    for number, session in enumerate(sessions, start=1):
        suffix = "" if len(sessions) == 1 else f" (session {number})"
        setting_rows.append((f"training device{suffix}", f"{session.get('device')} x {session.get('world_size')} "
                             f"process(es), steps {session.get('start_step')} to {session.get('end_step')}, "
                             f"stopped by {session.get('stop_reason')}"))
    setting_rows += [
        ("checkpoint", f"`{m.get('checkpoint')}` (step {m.get('checkpoint_step')})"),
        ("parameters of eps_theta", str(m.get("num_parameters"))),
        ("image shape (C, H, W)", str(m.get("image_shape"))),
        ("metrics written", str(m.get("created_utc"))),
    ]
    b.append(Table(("setting", "value"), tuple(setting_rows)))
    return b


def _configuration_blocks(m: Mapping) -> list[Block]:
    """The preset, the evaluation settings as run, and package versions."""
    b: list[Block] = []
    b.append(Heading(2, "Configuration and versions"))
    b.append(Paragraph("The preset as stored in the checkpoint (model, training, evaluation), and the evaluation "
                       "settings actually used (after command-line overrides):"))
    preset_config = m.get("preset_config") or {}
    lines = [f"{key}: {json.dumps(value)}" for key, value in preset_config.items()]
    lines.append(f"evaluation as run: {json.dumps(m.get('evaluation_config'))}")
    b.append(Code("\n".join(lines)))
    versions = dict(m.get("versions") or {})
    trained = dict(m.get("checkpoint_versions") or {})
    names = list(versions) + [n for n in trained if n not in versions]
    b.append(Table(("package", "evaluation", "training (checkpoint)"),
                   tuple((n, str(versions.get(n, "")), str(trained.get(n, ""))) for n in names)))
    return b


def _training_blocks(m: Mapping, train_log: Sequence[Mapping], plots: Mapping[str, bool]) -> list[Block]:
    """The loss curve and training throughput."""
    b: list[Block] = []
    b.append(Heading(2, "Training"))
    if plots.get(LOSS_CURVE_PNG):
        last = train_log[-1] if train_log else {}
        b.append(Figure(LOSS_CURVE_PNG, f"training loss over {m['train_steps']} updates ({len(train_log)} log lines; "
                                        f"last logged loss {fmt(last.get('loss'), 'loss')})"))
    else:
        b.append(Paragraph(f"No training log (`{TRAIN_LOG}`) in this folder: no loss curve."))
    b.append(Paragraph(
        f"{m['train_steps']} updates in {fmt(m.get('train_seconds'), 'seconds')} s of training: "
        f"{fmt(m['train_images_per_second'], 'rate')} images/s (images seen / training seconds)."
    ))
    return b


def _bound_blocks(m: Mapping, elbo_record: Mapping, plots: Mapping[str, bool]) -> list[Block]:
    """The test-set bound: Monte Carlo, exact, importance sampling, every variance, per-term plot."""
    b: list[Block] = []
    mc_images = m.get("elbo_num_images")
    b.append(Heading(2, "Test-set bound (negative ELBO) in bits/dim"))
    b.append(Paragraph(
        f"The bound L_T + sum_t L_(t-1) of Ho et al. eq. 5 with sigma_t^2 = `{m.get('elbo_variance')}`, "
        f"clip_x0 = {m.get('elbo_clip_x0')}, discretised decoder, no dequantisation. "
        f"Monte Carlo estimate: {fmt(m['elbo_bits_per_dim'], 'bits')} +- {fmt(m['elbo_bits_per_dim_stderr'], 'bits')} "
        f"bits/dim (one standard error) on {mc_images} of the {m.get('elbo_test_split_images')} test images, "
        f"{m.get('elbo_mc_draws_per_image')} draw(s) of (t, x_t) per image, t drawn from the "
        f"{m.get('elbo_mc_proposal')} proposal. Exact sum over all T = {m.get('T')} terms: "
        f"{fmt(m.get('elbo_exact_bits_per_dim'), 'bits')} +- {fmt(m.get('elbo_exact_bits_per_dim_stderr'), 'bits')} "
        f"bits/dim on a seeded random subset of {m.get('elbo_exact_num_images')} test images."
    ))
    if m.get("elbo_mc_proposal") == "importance":
        b.append(Paragraph(
            f"Importance sampling over t: p(t) proportional to sqrt(E[L_(t-1)^2]) estimated on the exact subset, "
            f"mixed with weight {m.get('elbo_mc_uniform_mix')} of the uniform distribution, fixed before the Monte "
            f"Carlo draws (each draw L_T + L_(t-1) / p(t) is unbiased). Predicted variance of one draw, (bits/dim)^2: "
            f"{fmt(m.get('elbo_mc_predicted_draw_variance_uniform'), 'bits')} (uniform t) vs "
            f"{fmt(m.get('elbo_mc_predicted_draw_variance_importance'), 'bits')} (importance), a factor "
            f"{fmt(m.get('elbo_mc_predicted_variance_reduction'), 'rate')} fewer network calls at equal error."
        ))
    b.extend(variance_blocks(m))
    b.append(decoder_bins_block(m))
    if plots.get(ELBO_TERMS_PNG):
        names = ", ".join(label.removeprefix("sigma_t^2 = ") for label, _, _ in term_curves(elbo_record))
        b.append(Figure(ELBO_TERMS_PNG, f"per-term bound L_0 .. L_T in bits/dim on {elbo_record.get('num_images')} "
                                        f"test images (log scale) under sigma_t^2 = {names}, and the importance "
                                        "proposal over t"))
    return b


def _sample_blocks(m: Mapping) -> list[Block]:
    """Samples and the denoising trajectory."""
    b: list[Block] = []
    b.append(Heading(2, "Samples"))
    b.append(Figure(SAMPLES_PNG, f"Algorithm 2 samples with the EMA weights at T = {m.get('T')} (the first "
                                 f"{min(100, int(m.get('sample_count') or 0))} of {m.get('sample_count')})"))
    b.append(Paragraph(
        f"{m.get('sample_count')} samples in {fmt(m.get('sample_seconds'), 'seconds')} s: "
        f"{fmt(m['sample_images_per_second'], 'rate')} images/s "
        f"({fmt(m.get('sample_network_evaluations_per_second'), 'rate')} network evaluations/s), batches of "
        f"{m.get('sample_batch_size')}, sigma_t^2 = `{m.get('elbo_variance')}`."
    ))
    b.append(Heading(2, "Denoising trajectory"))
    steps = m.get("trajectory_timesteps") or []
    b.append(Figure(TRAJECTORY_PNG, "x_t of the first samples at t = " + ", ".join(str(t) for t in steps)
                    + " (left to right: x_T noise to x_0)"))
    return b


def _fid_blocks(m: Mapping) -> list[Block]:
    """FID and KID with N and the reference set."""
    b: list[Block] = []
    b.append(Heading(2, "FID and KID"))
    if m.get("fid") is None:
        b.append(Paragraph("FID and KID were not computed for this run (evaluate ran with `--skip-fid`)."))
    else:
        reference = m.get("fid_reference") or {}
        b.append(Table(("quantity", "value"), (
            ("FID", fmt(m["fid"], "fid")),
            ("KID +- standard error", _kid_with_error(m)),
            ("KID's std over subsets (one subset's spread)", fmt(m.get("kid_std"), "kid")),
            ("FID, N real training images vs the same reference (the floor)", fmt(m.get("fid_real_vs_real"), "fid")),
            ("KID of those real images +- std over subsets", f"{fmt(m.get('kid_real_vs_real_mean'), 'kid')} +- "
                                         f"{fmt(m.get('kid_real_vs_real_std'), 'kid')}"),
            ("KID subsets", f"{m.get('kid_subsets')} subsets of {m.get('kid_subset_size')} images a side"),
            ("generated samples N", str(m["fid_num_samples"])),
            ("reverse variance of the samples", f"`{m.get('elbo_variance')}`"),
            ("reference set", f"{reference.get('num_images')} images of the {reference.get('split')} split of "
                              f"{reference.get('dataset')} ({reference.get('subset')})"),
            ("reference statistics cache", f"`{reference.get('cache_name')}`"),
            ("feature extractor", str(reference.get("feature_extractor"))),
            ("weights sha256", f"`{reference.get('weights_sha256')}`"),
        )))
        b.append(Paragraph("FID is biased upwards at small N: compare FIDs only at equal N (KID is unbiased). "
                           "Inception Score is not reported."))
    return b


def _budget_plan(run: Mapping) -> Mapping | None:
    """The session budget's plan of the run's last training session (run.json), or None."""
    sessions = run.get("sessions") if isinstance(run.get("sessions"), list) else []
    plan = sessions[-1].get("budget") if sessions and isinstance(sessions[-1], Mapping) else None
    return plan if isinstance(plan, Mapping) else None


def _throughput_blocks(m: Mapping, run: Mapping) -> list[Block]:
    """Images per second of training and sampling, and sampling against the raw forward the budget probe measured."""
    b: list[Block] = []
    b.append(Heading(2, "Throughput"))
    b.append(Table(("phase", "images/s"), (
        ("training (images seen / training seconds)", fmt(m["train_images_per_second"], "rate")),
        (f"sampling (Algorithm 2, T = {m.get('T')})", fmt(m["sample_images_per_second"], "rate")),
    )))
    plan = _budget_plan(run)
    forward = (plan.get("speed") or {}).get("sampling_forwards_per_second") if isinstance(plan, Mapping) else None
    if forward and m.get("T") and m.get("sample_images_per_second"):
        achieved = m["sample_images_per_second"] * m["T"]
        b.append(Paragraph(f"Algorithm 2 made {fmt(achieved, 'rate')} network calls per second (compile time "
                           f"included), {achieved / forward:.2f} of what the budget probe measured for the same "
                           f"sampler at the start of training ({fmt(forward, 'rate')} calls/s)."))
    return b


def _time_blocks(m: Mapping, run: Mapping, plots: Mapping[str, bool]) -> list[Block]:
    """Seconds per phase, their split into training / sampling / FID / bound, and the session budget's plan."""
    b: list[Block] = []
    b.append(Heading(2, "Where the time went"))
    timings = m.get("timings") or {}
    if plots.get(TIMINGS_PNG):
        b.append(Figure(TIMINGS_PNG, "train + evaluate seconds split into training, sampling, FID/KID, the bound "
                                     "(Gamma_t, exact and Monte Carlo) and the rest"))
    split = time_split(timings)
    total = sum(split.values())
    b.append(Table(("share", "seconds", "% of train + evaluate"),
                   tuple((name, fmt(v, "seconds"), f"{100 * v / total:.0f}" if total > 0 else "n/a")
                         for name, v in split.items())))
    b.append(Table(("phase", "seconds"), tuple((name, fmt(v, "seconds")) for name, v in timings.items())
                   + (("total (train + evaluate)", fmt(m["wall_seconds"], "seconds")),)))
    b += _budget_blocks(run, split)
    return b


def _budget_blocks(run: Mapping, split: Mapping[str, float]) -> list[Block]:
    """The session budget's plan (run.json, last session) beside what the phases then took; [] without a plan."""
    plan = _budget_plan(run)
    if not isinstance(plan, Mapping):
        return []
    predicted = plan.get("predicted_evaluation") or {}
    speed = plan.get("speed") or {}
    rows = [("spent before training (venv, installs, start-up, probe)", fmt(plan.get("spent_seconds"), "seconds"),
             "")]
    rows.append(("training", fmt(plan.get("training_seconds"), "seconds"), fmt(split.get("training"), "seconds")))
    for name, group in (("sampling", "sampling"), ("fid_kid", "FID/KID"), ("bound", "bound")):
        rows.append((group, fmt(predicted.get(name), "seconds"), fmt(split.get(group), "seconds")))
    rows.append(("fixed costs / other", fmt(predicted.get("fixed"), "seconds"), fmt(split.get("other"), "seconds")))
    rows.append(("margin", fmt(plan.get("margin_seconds"), "seconds"), ""))
    return [
        Heading(3, "The session budget"),
        Paragraph(f"The preset's session budget of {fmt(plan.get('session_seconds'), 'seconds')} s "
                  f"(`TrainingConfig.session_minutes`, `ddpm.training.budget`) set the training time at the start "
                  f"of the run from this machine's measured speed: Algorithm 2 at the sampling batch "
                  f"{fmt(speed.get('sampling_forwards_per_second'), 'rate')} network calls/s (the evaluation's "
                  f"sampler timed over a few steps; the eager forward "
                  f"{fmt(speed.get('eager_forwards_per_second'), 'rate')}"
                  f" inputs/s), the Inception network "
                  f"{fmt(speed.get('inception_images_per_second'), 'rate')} images/s, a first compiled call of "
                  f"{fmt(speed.get('compile_seconds'), 'seconds')} s; the probe took "
                  f"{fmt(speed.get('probe_seconds'), 'seconds')} s."),
        Table(("part", "planned seconds", "measured seconds"), tuple(rows)),
    ]


def build_blocks(run_dir: Path, metrics: Mapping, run: Mapping, train_log: Sequence[Mapping], elbo_record: Mapping,
                 plots: Mapping[str, bool], command: str) -> list[Block]:
    """The report's content, in order; every number is read from `metrics`, `run`, `train_log` or `elbo_record`."""
    m = metrics
    return [
        *_title_blocks(run_dir, m, command),
        *_headline_blocks(m),
        *_provenance_blocks(m, run, command),
        *_configuration_blocks(m),
        *_training_blocks(m, train_log, plots),
        *_bound_blocks(m, elbo_record, plots),
        *_sample_blocks(m),
        *_fid_blocks(m),
        *_throughput_blocks(m, run),
        *_time_blocks(m, run, plots),
    ]


def variance_blocks(m: Mapping) -> list[Block]:
    """The bound under each reverse variance (a table) and where Gamma_t came from; [] for older metrics.json."""
    by_variance = m.get("elbo_exact_by_variance")
    if not isinstance(by_variance, Mapping) or not by_variance:
        return []
    headline = m.get("elbo_variance")
    rows = tuple(
        (f"`{name}`", f"{fmt(entry.get('bits_per_dim'), 'bits')} +- {fmt(entry.get('stderr'), 'bits')}",
         str(entry.get("images")), "headline bound, samples and FID" if name == headline else "")
        for name, entry in by_variance.items() if isinstance(entry, Mapping)
    )
    blocks: list[Block] = [
        Heading(3, "The bound under each reverse variance"),
        Paragraph("The exact bound on the same test images with the same x_t under each reverse variance "
                  "sigma_t^2: `beta` (beta_t), `beta_tilde` (beta_tilde_t), `optimal` (Analytic-DPM's "
                  "sigma*_t^2 = beta_tilde_t + beta_t^2 / (alpha_t (1 - alpha_bar_t)) (1 - Gamma_t))"
                  + (" and `learned` (the network's own per-pixel Sigma_theta(v), Nichol & Dhariwal's learned range)"
                     if "learned" in by_variance else "") + ". The rows share "
                  "the images, the noise and the network's outputs, so their differences are the variances' alone "
                  f"(the standard errors, mostly variation between images, are shared too: a difference between rows "
                  f"is known far better than they suggest); the headline bound, the samples and FID use "
                  f"`{headline}`."),
        Table(("sigma_t^2", "bits/dim (exact in t) +- std. error", "test images", "used for"), rows),
    ]
    gamma = m.get("optimal_variance")
    if isinstance(gamma, Mapping):
        origin = ("reused from an earlier evaluation of this checkpoint" if gamma.get("reused") else
                  f"estimated by this evaluation on {gamma.get('train_split_images')} training images in "
                  f"{fmt(gamma.get('seconds'), 'seconds')} s")
        blocks.append(Paragraph(
            f"Gamma_t = E||eps_theta(x_t, t)||^2 / d of the EMA model, from {gamma.get('images_per_t')} images of "
            f"the {gamma.get('split')} split per t (seed {gamma.get('seed')}, checkpoint step {gamma.get('step')}): "
            f"largest standard error {fmt(gamma.get('gamma_stderr_max'), 'gamma')}, "
            f"{gamma.get('gamma_clipped_timesteps')} of T = {m.get('T')} values clipped to their bounds; "
            f"`{gamma.get('file')}`, {origin}."
        ))
    return blocks


def decoder_bins_block(m: Mapping) -> Paragraph:
    """One line: L_0, its density-times-width value, their difference and sigma_1 / h (metrics.json's
    decoder_interior_bins, derivation (t)); says so when this run's metrics.json has no such measurement."""
    bins = m.get("decoder_interior_bins")
    if not isinstance(bins, Mapping):
        return Paragraph("Decoder interior bins: not measured for this run (its metrics.json has no "
                         "`decoder_interior_bins`; runs evaluated before that measurement existed lack it).")
    fraction = bins.get("interior_fraction")
    share = f"{100 * fraction:.1f}%" if isinstance(fraction, (int, float)) else "n/a"
    return Paragraph(
        f"Decoder interior bins (derivation (t)), sigma_1 of `{bins.get('variance')}` on the exact subset of "
        f"{bins.get('images')} images: L_0 = {fmt(bins.get('decoder_bits_per_dim'), 'bits')} bits/dim, density times "
        f"bin width {fmt(bins.get('density_width_bits_per_dim'), 'bits')}, difference "
        f"{fmt(bins.get('error_bits_per_dim'), 'bits')} +- {fmt(bins.get('error_bits_per_dim_stderr'), 'bits')} "
        f"(the exact interior-bin error, over the {share} of pixels in interior bins); sigma_1 / h = "
        f"{fmt(bins.get('sigma_over_h_mean'), 'rate')} (mean over those pixels; "
        f"{fmt(bins.get('sigma_over_h_min'), 'rate')} to {fmt(bins.get('sigma_over_h_max'), 'rate')})."
    )


def _floor_basis(metrics: Mapping) -> str:
    floor = metrics.get("real_vs_real")
    if not isinstance(floor, Mapping):
        return "not computed for this run"
    return (f"{floor.get('num_images')} training images (subset seed {floor.get('subset_seed')}) vs the same test "
            "images: no model can score below it at this N")


def _kid_with_error(m: Mapping) -> str:
    """KID's mean +- its standard error (metrics written before kid_stderr existed: computed from their std over
    subsets, subset size, N and number of subsets by `ddpm.images.fid.kid_standard_error`)."""
    stderr = m.get("kid_stderr")
    needed = ("kid_std", "kid_subset_size", "fid_num_samples", "kid_subsets")
    if stderr is None and all(m.get(key) is not None for key in needed):
        from ddpm.images.fid import kid_standard_error

        stderr = kid_standard_error(m["kid_std"], m["kid_subset_size"], m["fid_num_samples"], m["kid_subsets"])
    return f"{fmt(m['kid_mean'], 'kid')} +- {fmt(stderr, 'kid')}"


def _fid_basis(metrics: Mapping) -> str:
    reference = metrics.get("fid_reference")
    if metrics.get("fid") is None or not isinstance(reference, Mapping):
        return "not computed (evaluate ran with --skip-fid)"
    return f"N = {metrics['fid_num_samples']} samples vs {reference.get('num_images')} test images"


def write_report(run_dir: str | os.PathLike, command: str | None = None) -> ReportFiles:
    """Write DIR/report.md, DIR/report.html and the plots from the run files in DIR; ReportError if none."""
    run_dir = Path(run_dir)
    metrics = load_metrics(run_dir)
    elbo_path = run_dir / ELBO_TERMS_FILE
    if not elbo_path.is_file():
        raise ReportError(f"{str(run_dir)!r} lacks {ELBO_TERMS_FILE}: rerun `python -m ddpm evaluate`")
    elbo_record = _read_json(elbo_path, "bound terms")
    for name in (SAMPLES_PNG, TRAJECTORY_PNG):
        if not (run_dir / name).is_file():
            raise ReportError(f"{str(run_dir)!r} lacks {name}: rerun `python -m ddpm evaluate`")
    run_path = run_dir / RUN_JSON
    run = _read_json(run_path, "run record") if run_path.is_file() else {}
    run = run if isinstance(run, dict) else {}
    train_log = load_train_log(run_dir)
    plots = {
        LOSS_CURVE_PNG: plot_loss_curve(train_log, run_dir / LOSS_CURVE_PNG),
        ELBO_TERMS_PNG: plot_elbo_terms(elbo_record, run_dir / ELBO_TERMS_PNG),
        TIMINGS_PNG: plot_timings(metrics.get("timings") or {}, run_dir / TIMINGS_PNG),
    }
    command = command if command is not None else command_line()
    blocks = build_blocks(run_dir, metrics, run, train_log, elbo_record, plots, command)
    title = blocks[0].text if isinstance(blocks[0], Heading) else "DDPM run report"
    markdown = atomic_write_bytes(run_dir / REPORT_MD, render_markdown(blocks).encode("utf-8"))
    page = atomic_write_bytes(run_dir / REPORT_HTML, render_html(blocks, run_dir, title).encode("utf-8"))
    return ReportFiles(markdown=markdown, html=page,
                       plots=tuple(run_dir / name for name, written in plots.items() if written))


__all__ = [
    "FORMATS",
    "REQUIRED_METRICS",
    "ReportError",
    "ReportFiles",
    "build_blocks",
    "fmt",
    "load_metrics",
    "plot_elbo_terms",
    "plot_loss_curve",
    "plot_timings",
    "time_split",
    "term_curves",
    "variance_blocks",
    "render_html",
    "render_markdown",
    "write_report",
]
