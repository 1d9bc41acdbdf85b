"""The configurations of the diffusers adapters: every listed option is enumerated, each reaches the library, the
library's refusals come back as RejectedConfiguration with its message, and the reproduction snippets of the new
configurations run standalone.

Skipped where diffusers is absent (the runner's handling of rejected configurations is tested without it). The
values themselves are checked against the derived oracles by the conformance suite; here only the plumbing is.
"""

from __future__ import annotations

import ast
import functools
import importlib
import subprocess
import sys

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.conformance.cases import Context, Status, SuiteConfig
from ddpm.conformance.cases.context import OUTPUT_NAMES
from ddpm.conformance.cases.exact import case_ddim, case_finite
from ddpm.conformance.protocol import (
    Convention,
    NotOffered,
    Prediction,
    RejectedConfiguration,
    ScheduleKind,
    check_adapter,
)
from ddpm.conformance.runner import load_adapters, run_suite
from testkit import tolerances
from testkit.shipped_adapters import draws

F32 = tolerances.FLOAT32.kwargs()
T = 1000
MODULES = ("diffusers_ddpm", "diffusers_ddim")
SPACING_GRID = {(spacing, offset, steps) for spacing in ("leading", "trailing", "linspace") for offset in (0, 1)
                for steps in (100, 300)}
SHAPE = (2, 1, 2, 2)  # [B, C, H, W]


@functools.cache
def _rows(module: str) -> list:
    return importlib.import_module(f"ddpm.conformance.adapters.{module}").factory()


def _family(module: str, family: str) -> list:
    return [r for r in _rows(module) if r.family == family]


@pytest.fixture(params=MODULES)
def module(request):
    pytest.importorskip("diffusers")
    return request.param



# -- enumeration -------------------------------------------------------------------------------------------------


def test_factories_enumerate_every_listed_option(module):
    rows = _rows(module)
    assert [(r.family, dict(r.options)) for r in rows[:2]] == [
        ("default", {"beta_schedule": "linear"}), ("default", {"beta_schedule": "squaredcos_cap_v2"})]
    spacing = {(r.options["timestep_spacing"], r.options["steps_offset"], r.options["num_inference_steps"])
               for r in _family(module, "timestep_spacing")}
    assert spacing == SPACING_GRID and len(_family(module, "timestep_spacing")) == len(SPACING_GRID)
    assert [r.options for r in _family(module, "prediction_type")] == [
        {"prediction_type": p} for p in ("epsilon", "sample", "v_prediction")]
    assert [r.options["beta_schedule"] for r in _family(module, "beta_schedule")] == [
        "linear", "scaled_linear", "squaredcos_cap_v2", "sigmoid"]
    assert [r.options for r in _family(module, "zero_snr")] == [
        {"rescale_betas_zero_snr": True, "timestep_spacing": "trailing", "prediction_type": p}
        for p in ("v_prediction", "epsilon", "sample")]
    if module == "diffusers_ddim":
        assert [r.options for r in _family(module, "set_alpha_to_one")] == [
            {"set_alpha_to_one": True}, {"set_alpha_to_one": False}]
        assert [r.options for r in _family(module, "clip_sample")] == [
            {"clip_sample": True, "use_clipped_model_output": False},
            {"clip_sample": True, "use_clipped_model_output": True}]
        assert [r.options.get("thresholding") for r in _family(module, "thresholding")] == [True]
    families = {r.family for r in rows}
    expected = {"default", "timestep_spacing", "prediction_type", "beta_schedule", "zero_snr"}
    assert families == expected | ({"set_alpha_to_one", "clip_sample", "thresholding"}
                                   if module == "diffusers_ddim" else set())
    names = [r.name for r in rows]
    assert len(set(names)) == len(names), "names tell rows apart"


def test_every_accepted_configuration_is_an_adapter(module):
    for row in _rows(module):
        if isinstance(row, RejectedConfiguration):
            continue
        assert check_adapter(row) is row
        assert row.variances and row.chains(), row.name
        if row.family != "default":
            assert len(row.chains()) == 1, f"{row.name}: one chain per non-default configuration"
            if module == "diffusers_ddpm":
                assert list(row.variances) == ["fixed_small"], row.name


def test_spacing_rows_offer_no_one_step_operation(module):
    """Their one-step calls are the default row's: not offered, with the reason; `finite` is then not applicable."""
    row = _family(module, "timestep_spacing")[0]
    eps, xt, z = draws(3, 3, SHAPE)
    calls = [lambda: row.q_sample(eps, 5, z), lambda: row.q_posterior(eps, xt, 5),
             lambda: row.reverse_step(eps, xt, 5, z, next(iter(row.variances)))]
    for call in calls:
        with pytest.raises(NotOffered, match="act only through set_timesteps|DDIMScheduler has no posterior"):
            call()
    result = case_finite(Context(row, SuiteConfig()))
    assert result.status is Status.NOT_APPLICABLE and "set_timesteps" in result.detail


# -- the options reach the library -------------------------------------------------------------------------------


def test_library_records_every_option(module):
    """The scheduler each adapter builds has, in its own config, every constructor option its row names."""
    for row in _rows(module):
        if isinstance(row, RejectedConfiguration):
            continue
        config = row.library_config()
        assert config["num_train_timesteps"] == T
        for key, value in row.options.items():
            if key in ("num_inference_steps", "use_clipped_model_output"):
                continue  # set_timesteps and step() arguments: checked by behaviour below
            assert config[key] == value, f"{row.name}: {key} = {config[key]!r}, asked {value!r}"


def _spacing(spacing: str, offset: int, steps: int) -> list[int]:
    """What set_timesteps(steps) visits under each spacing, as diffusers documents the three (its t = paper t - 1)."""
    if spacing == "leading":
        return [k * (T // steps) + offset for k in range(steps - 1, -1, -1)]
    if spacing == "trailing":
        return [int(u) - 1 for u in np.round(np.arange(T, 0, -T / steps))]
    return [int(u) for u in np.round(np.linspace(0, T - 1, steps))[::-1]]


def test_spacing_rows_visit_the_timesteps_of_their_spacing(module):
    for row in _family(module, "timestep_spacing"):
        options = row.options
        S = options["num_inference_steps"]
        assert row.num_inference_steps == S
        visited = row.strided_timesteps(S) if module == "diffusers_ddpm" else row.ddim_timesteps(S)
        assert visited == _spacing(options["timestep_spacing"], options["steps_offset"], S), row.name
        assert [list(c.timesteps) for c in row.chains()] == [visited], row.name


def test_schedules_and_zero_snr_reach_the_tables(module):
    pytest.importorskip("diffusers")
    rows = {r.options["beta_schedule"]: r for r in _family(module, "beta_schedule")
            if not isinstance(r, RejectedConfiguration)}
    scaled = np.asarray(rows["scaled_linear"].betas(), dtype=np.float64)
    assert_allclose(scaled[[0, -1]], [1e-4, 0.02], **F32)
    assert_allclose(scaled[T // 2], (1e-2 + (0.02**0.5 - 1e-2) * (T // 2) / (T - 1)) ** 2, **F32)
    assert rows["scaled_linear"].schedule.kind is ScheduleKind.CUSTOM
    if "sigmoid" in rows:
        sigmoid = np.asarray(rows["sigmoid"].betas(), dtype=np.float64)
        assert_allclose(sigmoid[0], 1e-4 + (0.02 - 1e-4) / (1 + np.exp(6.0)), **F32)
        assert rows["sigmoid"].schedule.kind is ScheduleKind.CUSTOM
    for row in _family(module, "zero_snr"):
        assert row.alpha_bars()[-1] == 0.0 and row.alpha_bars()[0] > 0.99, row.name
        assert row.schedule.kind is ScheduleKind.CUSTOM


def test_prediction_types_reach_the_step(module):
    """x_0 = 0.3 in each parameterisation (eps, x_0 or v at x_t) gives the same next sample at t = 500."""
    rows = {r.options["prediction_type"]: r for r in _family(module, "prediction_type")}
    assert {p: r.prediction for p, r in rows.items()} == {
        "epsilon": Prediction.EPS, "sample": Prediction.X0, "v_prediction": Prediction.V}
    xt, z = draws(7, 2, SHAPE)
    t = 500
    a = float(rows["epsilon"].alpha_bars()[t])
    x0 = torch.full(SHAPE, 0.3)
    eps = (xt - a**0.5 * x0) / (1 - a) ** 0.5
    outputs = {"epsilon": eps, "sample": x0, "v_prediction": a**0.5 * eps - (1 - a) ** 0.5 * x0}
    variance = next(iter(rows["epsilon"].variances))
    steps = {p: rows[p].reverse_step(outputs[p], xt, t, z, variance) for p in rows}
    for p in ("sample", "v_prediction"):
        assert_allclose(steps[p].numpy(), steps["epsilon"].numpy(), atol=1e-5, rtol=1e-5, err_msg=p)
    assert not torch.allclose(rows["sample"].reverse_step(eps, xt, t, z, variance), steps["epsilon"])


def test_use_clipped_model_output_reaches_the_step():
    pytest.importorskip("diffusers")
    keeps, rederives = _family("diffusers_ddim", "clip_sample")
    eps, z = draws(8, 2, SHAPE)
    t, s = keeps.ddim_timesteps(50)[:2]
    far = torch.full(SHAPE, 3.0)  # x0_hat far outside [-1, 1]: clipped
    assert not torch.allclose(keeps.ddim_step(eps, far, t, s, 0.0, z), rederives.ddim_step(eps, far, t, s, 0.0, z))
    near = keeps.q_sample(torch.full(SHAPE, 0.2), t, eps)  # x0_hat = 0.2 exactly: nothing clipped
    assert_allclose(keeps.ddim_step(eps, near, t, s, 0.0, z).numpy(),
                    rederives.ddim_step(eps, near, t, s, 0.0, z).numpy(), **F32)


def test_final_alpha_option_reaches_the_last_step():
    """set_alpha_to_one=False: the step from t = 0 keeps alpha_bar_0 (adapter t = 0), so with eta = 0 it returns
    x_t itself; True goes to x_0."""
    pytest.importorskip("diffusers")
    to_one, to_first = _family("diffusers_ddim", "set_alpha_to_one")
    eps, xt = draws(9, 2, SHAPE)
    assert_allclose(to_first.ddim_step(eps, xt, 0, -1, 0.0, None).numpy(), xt.numpy(), **F32)
    a0 = float(to_one.alpha_bars()[0])
    assert_allclose(to_one.ddim_step(eps, xt, 0, -1, 0.0, None).numpy(),
                    ((xt - (1 - a0) ** 0.5 * eps) / a0**0.5).numpy(), **F32)


def test_thresholding_is_declared_and_its_oracle_tells_its_parameters_apart():
    """The row declares THRESHOLDS_X0 with the library's (p, s_max); its DDIM steps pass against that oracle and
    fail against the oracle of other parameters (plain clipping, another quantile)."""
    pytest.importorskip("diffusers")
    (row,) = _family("diffusers_ddim", "thresholding")
    config = row.library_config()
    assert row.threshold == (config["dynamic_thresholding_ratio"], config["sample_max_value"]) == (0.95, 3.0)
    assert Convention.THRESHOLDS_X0 in row.conventions and Convention.CLIPS_X0 not in row.conventions
    assert case_ddim(Context(row, SuiteConfig()), 0.5).status is Status.CONVENTION
    for wrong in [(0.95, 1.0), (0.5, 3.0)]:
        row.threshold = wrong
        try:
            assert case_ddim(Context(row, SuiteConfig()), 0.5).status is Status.FAIL, wrong
        finally:
            row.threshold = (0.95, 3.0)


# -- rejected configurations -------------------------------------------------------------------------------------


def test_rejected_configurations_carry_the_library_message(module):
    import diffusers

    rejected = [r for r in _rows(module) if isinstance(r, RejectedConfiguration)]
    if module == "diffusers_ddpm":
        assert rejected == []
        return
    (row,) = rejected
    assert (row.family, dict(row.options)) == ("beta_schedule", {"beta_schedule": "sigmoid"})
    with pytest.raises(NotImplementedError) as info:
        diffusers.DDIMScheduler(num_train_timesteps=T, beta_schedule="sigmoid")
    assert row.error == f"NotImplementedError: {info.value}"
    assert row.version == f"diffusers {diffusers.__version__}" and "sigmoid" in row.name


def test_rejection_reads_set_timesteps_too():
    diffusers = pytest.importorskip("diffusers")
    from ddpm.conformance.adapters.diffusers_configurations import rejection

    error = rejection(lambda: diffusers.DDPMScheduler(num_train_timesteps=10), [11])
    assert error is not None and error.startswith("ValueError: `num_inference_steps`: 11 cannot be larger")
    assert rejection(lambda: diffusers.DDPMScheduler(num_train_timesteps=10), [10]) is None


def test_runner_passes_rejected_configurations_through_and_lists_them():
    (row,) = load_adapters("testkit.broken_adapters:rejected_only")
    assert isinstance(row, RejectedConfiguration)
    (run,), skipped = run_suite(["testkit.broken_adapters:rejected_only"], progress=False)
    assert not skipped and run.description.rejected == row.error and run.conformant
    (result,) = run.results
    assert result.status.value == "not applicable" and row.error in result.detail


# -- reproduction snippets ---------------------------------------------------------------------------------------


def _run(code: str) -> str:
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    return done.stdout


@pytest.mark.slow
def test_snippets_of_new_configurations_print_the_adapter_output():
    """One step snippet per kind of new option (spacing with S not dividing T, v prediction, zero SNR, clipping with
    the re-derived eps) runs standalone in one interpreter and prints what the adapter computes."""
    pytest.importorskip("diffusers")
    eps, xt, z = (u[:1, :, :1, :].reshape(1, 1, 1, -1) for u in draws(4, 3, SHAPE))  # [1, 1, 1, 2]
    inputs = {"xt": xt.flatten().tolist(), "z": z.flatten().tolist()}
    spaced = next(r for r in _family("diffusers_ddim", "timestep_spacing")
                  if r.options["timestep_spacing"] == "trailing" and r.options["num_inference_steps"] == 300)
    jobs = []
    for row, operation, t, s in [
            (spaced, "ddim_step:0.5:300", *spaced.ddim_timesteps(300)[1:3]),
            (_family("diffusers_ddpm", "timestep_spacing")[7], "strided_step:fixed_small:300", None, None),
            (_family("diffusers_ddpm", "prediction_type")[2], "reverse_step:fixed_small", 700, 699),
            (_family("diffusers_ddim", "zero_snr")[0], "reverse_step:eta=1, all T steps", 999, 998),
            (_family("diffusers_ddim", "clip_sample")[1], "ddim_step:0:50", 980, 960)]:
        if t is None:
            t, s = row.strided_timesteps(300)[1:3]
        code = row.reproduction(operation, t, {**inputs, OUTPUT_NAMES[row.prediction]: eps.flatten().tolist()})
        kind, _, rest = operation.partition(":")
        if kind == "ddim_step":
            expected = row.ddim_step(eps, xt, t, s, float(rest.split(":")[0]), z)
        elif kind == "strided_step":
            expected = row.strided_step(eps, xt, t, s, z, "fixed_small")
        else:
            expected = row.reverse_step(eps, xt, t, z, rest)
        jobs.append((row.name, code, expected))
    runner = "".join(f"exec({code!r}, {{}})\n" for _, code, _ in jobs)
    lines = _run(runner).strip().splitlines()
    assert len(lines) == len(jobs)
    for (label, _, expected), line in zip(jobs, lines, strict=True):
        printed = np.array(ast.literal_eval(line.replace("nan", "None")), dtype=np.float64)
        assert_allclose(printed, expected.flatten().double().numpy(), **F32, err_msg=label)


@pytest.mark.slow
def test_chain_snippets_of_new_configurations_run():
    pytest.importorskip("diffusers")
    rows = [_family("diffusers_ddpm", "zero_snr")[0], _family("diffusers_ddim", "zero_snr")[2],
            _family("diffusers_ddim", "timestep_spacing")[7]]
    snippets = [row.reproduction(f"chain:{row.chains()[0].label}", 0, {}) for row in rows]
    assert all(snippets)
    out = _run("".join(f"exec({code!r}, {{}})\n" for code in snippets))
    assert out.count("finite: True") == len(rows), out
