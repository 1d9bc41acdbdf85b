"""Third-party conformance adapters (diffusers DDPM/DDIM, lucidrains, MONAI DDPM/DDIM): protocol, timestep mapping,
noise injection, reproduction snippets and chains.

Tests of an adapter are skipped where its library is absent (`nox -s verify` installs neither); the import and
missing-library tests run everywhere. Values are checked against the derived oracles by the conformance suite
itself; here only the adapters' plumbing is.
"""

from __future__ import annotations

import ast
import functools
import importlib
import importlib.metadata
import math
import subprocess
import sys

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose, assert_array_equal

from ddpm.conformance.protocol import AdapterError, Convention, NotOffered, ScheduleKind, VarianceKind, check_adapter
from testkit import tolerances
from testkit.shipped_adapters import draws, factory_output

F32 = tolerances.FLOAT32.kwargs()
# float32 storage of alpha_bar_1 = 1 - beta_1 rounds to within half an ulp of 1: one float32 epsilon bounds it.
F32_EPS_AT_ONE = float(np.finfo(np.float32).eps)
SHAPE = (2, 1, 2, 2)  # [B, C, H, W], as the suite feeds them

# adapter module -> the package it wraps.
MODULES = {
    "diffusers_ddpm": "diffusers",
    "diffusers_ddim": "diffusers",
    "lucidrains": "denoising_diffusion_pytorch",
    "monai_schedulers": "monai",
}
# An adapter's name starts with its library's; the distribution whose version it reports.
DISTRIBUTIONS = {"diffusers ": "diffusers", "lucidrains ": "denoising-diffusion-pytorch", "MONAI ": "monai"}
# (module, index into its factory's list, label). diffusers and lucidrains: [linear, cosine, ...], lucidrains' next
# two its pred_x0 and pred_v objectives (linear). MONAI: the order test_monai_factory_rows checks.
CASES = [(module, index, label) for module in ("diffusers_ddpm", "diffusers_ddim", "lucidrains")
         for index, label in enumerate(("linear", "cosine"))] + [
    ("lucidrains", 2, "linear-pred_x0"), ("lucidrains", 3, "linear-pred_v"),
    ("monai_schedulers", 0, "ddpm-linear"), ("monai_schedulers", 1, "ddim-linear"),
    ("monai_schedulers", 2, "ddpm-linear-variance_types"), ("monai_schedulers", 3, "ddpm-cosine"),
    ("monai_schedulers", 5, "ddim-cosine"), ("monai_schedulers", 8, "ddpm-linear-v_prediction"),
    ("monai_schedulers", 9, "ddim-linear-v_prediction")]


def _installed(library: str) -> bool:
    try:
        importlib.import_module(library)
    except ImportError:
        return False
    return True



@pytest.fixture(scope="module", params=CASES, ids=[f"{m}-{label}" for m, _, label in CASES])
def adapter(request):
    module, index, _ = request.param
    pytest.importorskip(MODULES[module])
    return factory_output(module)[index]



def _v_for(kind: VarianceKind) -> torch.Tensor | None:
    """A constant variance output v (so sigma is one number): sigma^2 = 0.04, or f = 0.6 for learned_range."""
    if kind is VarianceKind.LEARNED_VARIANCE:
        return torch.full(SHAPE, 0.04)
    if kind is VarianceKind.LEARNED_RANGE:
        return torch.full(SHAPE, 0.2)
    return None


def _paper_beta_1(adapter) -> float:
    """beta at paper t = 1 from the formula the ScheduleSpec claims, in float64."""
    spec = adapter.schedule
    if spec.kind is ScheduleKind.LINEAR:
        return 1e-4 * (1000 / spec.T if spec.rescaled else 1.0)
    f = [math.cos((u / spec.T + 0.008) / 1.008 * math.pi / 2) ** 2 for u in (0, 1)]
    return 1.0 - f[1] / f[0]


# -- protocol and timestep mapping -------------------------------------------------------------------------------


def test_adapter_satisfies_protocol_and_names_its_library(adapter):
    assert check_adapter(adapter) is adapter
    assert adapter.timestep_base == 0 and adapter.dtype == torch.float32
    (distribution,) = (d for prefix, d in DISTRIBUTIONS.items() if adapter.name.startswith(prefix))
    assert adapter.version == f"{distribution} {importlib.metadata.version(distribution)}", adapter.version
    module = sys.modules[type(adapter).__module__]
    assert f"Tested with {distribution} {module.TESTED_VERSION}" in module.__doc__


def test_tables_have_length_T_and_start_at_paper_t_1(adapter):
    T = adapter.schedule.T
    betas, alpha_bars = np.asarray(adapter.betas()), np.asarray(adapter.alpha_bars())
    assert betas.shape == alpha_bars.shape == (T,)
    beta_1 = _paper_beta_1(adapter)
    assert_allclose(betas[0], beta_1, **F32, err_msg="betas()[0] is beta at paper t = 1")
    assert_allclose(1.0 - np.float64(alpha_bars[0]), beta_1, rtol=0.0, atol=F32_EPS_AT_ONE,
                    err_msg="alpha_bars()[0] is alpha_bar_1 = 1 - beta_1 (adapter t = 0 is paper t = 1)")


# -- noise injection ---------------------------------------------------------------------------------------------


def _steps(adapter):
    """(label, z -> step output) for reverse_step per variance option and t, and the optional strided / DDIM steps."""
    eps, xt = draws(1, 2, SHAPE)
    T = adapter.schedule.T
    for variance, kind in adapter.variances.items():
        for t in (1, T // 2, T - 1):
            step = functools.partial(adapter.reverse_step, eps, xt, t, variance=variance, v=_v_for(kind))
            yield f"reverse_step({variance!r}, t={t})", lambda z, step=step: step(z=z)
    if hasattr(adapter, "strided_timesteps") and getattr(adapter, "respaced", True):
        t, s = adapter.strided_timesteps(100)[:2]
        yield f"strided_step(t={t}, s={s})", lambda z: adapter.strided_step(eps, xt, t, s, z, "fixed_small")
    if hasattr(adapter, "ddim_timesteps") and getattr(adapter, "respaced", True):
        # the first two of the second half: from the first visited t, alpha_bar_t = 2e-9 under MONAI's cosine makes
        # x0_hat ~ 1e4 x_t, and the float32 output carries ~1e-5 of cancellation that is not the noise's
        visited = adapter.ddim_timesteps(50)
        t, s = visited[len(visited) // 2: len(visited) // 2 + 2]
        yield f"ddim_step(eta=1, t={t}, s={s})", lambda z: adapter.ddim_step(eps, xt, t, s, 1.0, z)


def test_step_is_linear_in_the_injected_z(adapter):
    (z,) = draws(2, 1, SHAPE)
    for label, step in _steps(adapter):
        if "fixed_large_log" in label:
            continue  # NaN in diffusers 0.42.1: test_diffusers_fixed_large_log_is_nan
        d = (step(z) - step(torch.zeros_like(z))).double()  # sigma z if z is what the library adds
        sigma = float((d * z).sum() / (z * z).sum())
        assert sigma > 0, f"{label}: the injected z does not reach the output"
        assert_allclose(d, sigma * z.double(), **F32, err_msg=f"{label}: step(z) - step(0) = sigma z")


def test_reverse_step_noise_scale_is_the_claimed_fixed_variance(adapter):
    """At paper t = 2, beta_tilde / beta ~ 0.45: the injected step's sigma^2 is nearer its claim than the other one."""
    (z,) = draws(2, 1, SHAPE)
    eps, xt = draws(1, 2, SHAPE)
    ab = np.asarray(adapter.alpha_bars(), dtype=np.float64)
    beta = 1.0 - ab[1] / ab[0]
    claims = {VarianceKind.BETA: beta, VarianceKind.BETA_TILDE: (1.0 - ab[0]) / (1.0 - ab[1]) * beta}
    for variance, kind in adapter.variances.items():
        if kind not in claims or variance == "fixed_large_log":
            continue
        d = (adapter.reverse_step(eps, xt, 1, z, variance) - adapter.reverse_step(eps, xt, 1, 0 * z, variance)).double()
        sigma2 = float((d * z).sum() / (z * z).sum()) ** 2
        nearest = min(claims, key=lambda k: abs(math.log(sigma2 / claims[k])))
        assert nearest is kind, f"{variance!r}: sigma^2 = {sigma2:.4g}, claims {kind}, nearer to {nearest}"


def test_no_noise_at_paper_t_1(adapter):
    (z,) = draws(2, 1, SHAPE)
    eps, xt = draws(1, 2, SHAPE)
    for variance, kind in adapter.variances.items():
        v = _v_for(kind)
        assert_array_equal(adapter.reverse_step(eps, xt, 0, z, variance, v),
                           adapter.reverse_step(eps, xt, 0, torch.zeros_like(z), variance, v),
                           err_msg=f"{variance!r}: Algorithm 2 adds no noise at t = 1")


def test_lucidrains_loss_weights_are_the_snr_weights_of_its_objective():
    """loss_weights() (the model's loss_weight buffer) against the weights derived from SNR_t = a / (1 - a) in float64
    from the schedule's formula: 1 (pred_noise), SNR_t (pred_x0), a = SNR_t / (SNR_t + 1) (pred_v), each with SNR_t
    clamped at gamma = 5 first under min_snr_loss_weight (pred_noise: min(SNR_t, 5) / SNR_t)."""
    pytest.importorskip("denoising_diffusion_pytorch")
    from ddpm.conformance.oracle import linear_betas

    a = np.cumprod(1.0 - linear_betas(1000, rescaled=True))  # [T], paper t = 1..T
    snr = a / (1.0 - a)
    derived = {("pred_noise", False): np.ones_like(a), ("pred_x0", False): snr, ("pred_v", False): a,
               ("pred_noise", True): np.minimum(snr, 5.0) / snr}
    seen = set()
    for adapter in factory_output("lucidrains"):
        if adapter.beta_schedule != "linear":
            continue
        key = (adapter.objective, adapter.min_snr_loss_weight)
        seen.add(key)
        # the buffer is the float64 weight rounded once to float32 (the schedule itself is float64 in the library)
        assert_allclose(adapter.loss_weights(), derived[key], rtol=4 * F32_EPS_AT_ONE, atol=0.0, err_msg=str(key))
        assert adapter.prediction.value == {"pred_noise": "eps", "pred_x0": "x0", "pred_v": "v"}[adapter.objective]
    assert seen == set(derived)


def test_diffusers_fixed_large_log_is_nan():
    """diffusers 0.42.1: _get_variance gives log(beta_t) and step() takes its ** 0.5, so every t > 0 step is NaN."""
    pytest.importorskip("diffusers")
    ddpm = factory_output("diffusers_ddpm")[0]
    eps, xt, z = draws(3, 3, SHAPE)
    assert torch.isnan(ddpm.reverse_step(eps, xt, 500, z, "fixed_large_log")).all()
    assert torch.isfinite(ddpm.reverse_step(eps, xt, 0, z, "fixed_large_log")).all()


def test_monai_factory_rows():
    """The configurations MONAI's factory returns, in order (CASES indexes them), and the two it refuses."""
    pytest.importorskip("monai")
    from ddpm.conformance.protocol import RejectedConfiguration

    rows = factory_output("monai_schedulers")
    runnable = [r for r in rows if not isinstance(r, RejectedConfiguration)]
    assert [(r.scheduler_class[:4], r.schedule_name, r.prediction_type, r.clip_sample, r.family) for r in runnable] == [
        ("DDPM", "linear_beta", "epsilon", False, "default"), ("DDIM", "linear_beta", "epsilon", False, "default"),
        ("DDPM", "linear_beta", "epsilon", False, "variance_type"),
        ("DDPM", "cosine", "epsilon", False, "schedule"), ("DDPM", "scaled_linear_beta", "epsilon", False, "schedule"),
        ("DDIM", "cosine", "epsilon", False, "schedule"),
        ("DDPM", "linear_beta", "sample", False, "prediction_type"),
        ("DDIM", "linear_beta", "sample", False, "prediction_type"),
        ("DDPM", "linear_beta", "v_prediction", False, "prediction_type"),
        ("DDIM", "linear_beta", "v_prediction", False, "prediction_type"),
        ("DDPM", "linear_beta", "epsilon", True, "clip_sample")]
    assert list(runnable[0].variances) == ["fixed_small"]
    assert list(runnable[2].variances) == ["fixed_large", "learned", "learned_range"]
    assert [r.respaced for r in runnable] == [True, True] + [False] * 9
    assert [r.prediction.value for r in runnable[6:10]] == ["x0", "x0", "v", "v"]
    assert [r.schedule.kind for r in runnable[:6]] == [ScheduleKind.LINEAR, ScheduleKind.LINEAR, ScheduleKind.LINEAR,
                                                       ScheduleKind.COSINE, ScheduleKind.CUSTOM, ScheduleKind.COSINE]
    assert Convention.CLIPS_X0 in runnable[10].conventions and Convention.CLIPS_X0 not in runnable[0].conventions
    rejected = [r for r in rows if isinstance(r, RejectedConfiguration)]
    assert [(r.family, dict(r.options)) for r in rejected] == [
        ("variance_type", {"variance_type": "fixed_small_log"}),
        ("variance_type", {"variance_type": "fixed_large_log"})]
    for r in rejected:
        assert r.error == "ValueError: Argument `variance_type` must be a member of `DDPMVarianceType`", r.error
        assert r.version == f"monai {importlib.metadata.version('monai')}"


def test_monai_ddpm_step_after_set_timesteps_still_goes_to_t_minus_1():
    """MONAI 1.6.1: DDPMScheduler.step uses alphas_cumprod[t - 1] whatever set_timesteps(S) chose, so the loop's step
    from t = 989 to the next visited timestep 979 (S = 100) is the one-step update to 988."""
    pytest.importorskip("monai")
    ddpm = factory_output("monai_schedulers")[0]
    eps, xt, z = draws(3, 3, SHAPE)
    assert ddpm.strided_timesteps(100)[:3] == [999, 989, 979]
    assert_array_equal(ddpm.strided_step(eps, xt, 989, 979, z, "fixed_small"),
                       ddpm.reverse_step(eps, xt, 989, z, "fixed_small"))
    with pytest.raises(NotOffered, match="goes from t to t - 1"):  # not run again in the other rows
        factory_output("monai_schedulers")[3].strided_timesteps(100)


def test_monai_ddim_step_goes_to_t_minus_T_over_S_not_to_the_next_visited_timestep():
    """MONAI 1.6.1: DDIMScheduler visits linspace(T - 1, 0, S).round() but steps to t - T // S: from 979 (S = 50) the
    loop's next timestep is 958, the step lands at 959 (eq. 12 at eta = 0, in float64 from its own table)."""
    pytest.importorskip("monai")
    ddim = factory_output("monai_schedulers")[1]
    eps, xt, _ = draws(3, 3, SHAPE)
    assert ddim.ddim_timesteps(50)[:3] == [999, 979, 958]
    ab = np.asarray(ddim.alpha_bars(), dtype=np.float64)
    e, x = eps.double().numpy(), xt.double().numpy()

    def eq12(t, s):
        x0 = (x - np.sqrt(1 - ab[t]) * e) / np.sqrt(ab[t])
        return np.sqrt(ab[s]) * x0 + np.sqrt(1 - ab[s]) * e

    out = ddim.ddim_step(eps, xt, 979, 958, 0.0, torch.zeros_like(xt)).double().numpy()
    assert_allclose(out, eq12(979, 959), **F32)
    assert np.max(np.abs(out - eq12(979, 958))) > 1e-3
    with pytest.raises(NotOffered, match="goes to t - T // S"):  # not run again in the other rows
        factory_output("monai_schedulers")[5].ddim_timesteps(50)


def test_monai_learned_range_interpolates_the_variances_not_their_logs():
    """MONAI 1.6.1 DDPMScheduler 'learned_range': sigma^2 = f beta_t + (1 - f) beta_tilde_t, f = (v + 1) / 2, where
    eq. 15 (improved-diffusion's learned_range) has log sigma^2 = f log beta_t + (1 - f) log beta_tilde_t. At paper
    t = 2, f = 1 / 2 the two differ by 8% (beta_tilde_2 / beta_2 ~ 0.45); the suite's reverse_step case does not
    resolve it in float32 (module docstring of monai_schedulers)."""
    pytest.importorskip("monai")
    ddpm = factory_output("monai_schedulers")[2]
    ab, beta = np.asarray(ddpm.alpha_bars(), dtype=np.float64), np.asarray(ddpm.betas(), dtype=np.float64)
    beta_tilde = (1 - ab[0]) / (1 - ab[1]) * beta[1]
    zeros, ones = torch.zeros(1, 1, 1, 1), torch.ones(1, 1, 1, 1)
    sigma = float(ddpm.reverse_step(zeros, zeros, 1, ones, "learned_range", zeros))  # mean 0: the output is sigma
    assert_allclose(sigma**2, (beta[1] + beta_tilde) / 2, **F32)
    assert abs(sigma**2 / np.sqrt(beta[1] * beta_tilde) - 1) > 0.05


def test_strides_the_library_cannot_take_raise():
    pytest.importorskip("diffusers")
    eps, xt, z = draws(3, 3, SHAPE)
    ddpm, ddim = factory_output("diffusers_ddpm")[0], factory_output("diffusers_ddim")[0]
    ddpm.strided_timesteps(100)
    with pytest.raises(ValueError, match="t = 995 to s = 980"):
        ddpm.strided_step(eps, xt, 995, 980, z, "fixed_small")
    ddim.ddim_timesteps(50)
    with pytest.raises(ValueError, match="t = 20 to s = -1"):  # "leading" ends at t = 0
        ddim.ddim_step(eps, xt, 20, -1, 0.0, z)
    assert torch.isfinite(ddim.ddim_step(eps, xt, 0, -1, 1.0, z)).all()


# -- reproduction snippets ---------------------------------------------------------------------------------------


@pytest.mark.slow
def test_reverse_step_snippets_run_and_match_the_adapter():
    """Each "reverse_step:<option>" snippet runs standalone (exit 0) and prints the adapter's own output."""
    jobs = []
    eps, xt, z = (u[:1, :, :1, :].reshape(1, 1, 1, -1) for u in draws(4, 3, SHAPE))  # [1, 1, 1, 2]
    inputs = {"eps": eps.flatten().tolist(), "xt": xt.flatten().tolist(), "z": z.flatten().tolist()}
    for module, library in MODULES.items():
        if not _installed(library):
            continue
        # linear; the cosine snippets differ only in the schedule's name. MONAI: its other DDPM variance types too.
        adapters = [factory_output(module)[0]] + ([factory_output(module)[2]] if module == "monai_schedulers" else [])
        for adapter, variance in ((a, variance) for a in adapters for variance in a.variances):
            kind = adapter.variances[variance]
            v = None if _v_for(kind) is None else torch.full_like(eps, float(_v_for(kind).flatten()[0]))
            given = {**inputs, **({} if v is None else {"v": v.flatten().tolist()})}
            t = adapter.schedule.T // 2
            code = adapter.reproduction(f"reverse_step:{variance}", t, given)
            expected = adapter.reverse_step(eps, xt, t, z, variance, v)
            process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, text=True)
            jobs.append((f"{adapter.name} {variance!r}", process, expected))
    if not jobs:
        pytest.skip("none of diffusers, denoising_diffusion_pytorch and monai is installed")
    for label, process, expected in jobs:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{label}: snippet failed\n{err}"
        printed = np.array(ast.literal_eval(out.strip().replace("nan", "None")), dtype=np.float64)
        assert_allclose(printed, expected.flatten().double().numpy(), **F32, err_msg=f"{label}: snippet output")


@pytest.mark.slow
def test_lucidrains_objective_snippets_take_the_output_by_its_name():
    """pred_x0 / pred_v: the reverse_step snippet reads the output as "x0_pred" / "v_pred" (the name the suite gives
    a failure's input) and prints the adapter's own step."""
    pytest.importorskip("denoising_diffusion_pytorch")
    out, xt, z = (u[:1, :, :1, :].reshape(1, 1, 1, -1) for u in draws(4, 3, SHAPE))  # [1, 1, 1, 2]
    for adapter, name in zip(factory_output("lucidrains")[2:4], ("x0_pred", "v_pred"), strict=True):
        t = adapter.schedule.T // 2
        variance = next(iter(adapter.variances))
        code = adapter.reproduction(f"reverse_step:{variance}", t, {
            name: out.flatten().tolist(), "xt": xt.flatten().tolist(), "z": z.flatten().tolist()})
        assert f"model.out = {name}" in code, code
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        printed = np.array(ast.literal_eval(done.stdout.strip()), dtype=np.float64)
        assert_allclose(printed, adapter.reverse_step(out, xt, t, z, variance).flatten().double().numpy(), **F32)


@pytest.mark.slow
def test_monai_ddim_snippets_match_the_adapter():
    """MONAI DDIMScheduler: the ddim_step snippet (default row) and the reverse_step snippets (default and v_prediction
    rows) print the adapter's own step as their last line; ddim_step's first line says where the loop goes next."""
    pytest.importorskip("monai")
    out, xt, z = (u[:1, :, :1, :].reshape(1, 1, 1, -1) for u in draws(4, 3, SHAPE))  # [1, 1, 1, 2]
    rows = factory_output("monai_schedulers")
    variance = next(iter(rows[1].variances))
    for adapter, operation, t, expected in (
            (rows[1], "ddim_step:0.5:50", 979, rows[1].ddim_step(out, xt, 979, 958, 0.5, z)),
            (rows[1], f"reverse_step:{variance}", 500, rows[1].reverse_step(out, xt, 500, z, variance)),
            (rows[9], f"reverse_step:{variance}", 500, rows[9].reverse_step(out, xt, 500, z, variance))):
        given = {adapter.output_name: out.flatten().tolist(), "xt": xt.flatten().tolist(), "z": z.flatten().tolist()}
        code = adapter.reproduction(operation, t, given)
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0, done.stderr
        lines = done.stdout.strip().splitlines()
        if operation.startswith("ddim_step"):
            assert "after t = 979 it visits 958" in lines[0] and "t - T // S = 959" in lines[0], lines[0]
        printed = np.array(ast.literal_eval(lines[-1]), dtype=np.float64)
        assert_allclose(printed, expected.flatten().double().numpy(), **F32, err_msg=f"{adapter.name} {operation}")


@pytest.mark.slow
def test_other_snippets_run():
    """The remaining operations' snippets run (one interpreter per library, each snippet in a fresh namespace)."""
    operations = {
        # The chain first: the step snippets replace diffusers' randn_tensor in the shared interpreter.
        "diffusers_ddpm": [("chain:DDPMScheduler.step loop (variance_type='fixed_large', num_inference_steps=100)", 0),
                           ("q_sample", 500), ("q_posterior", 500), ("strided_step:fixed_small:100", 990),
                           ("strided_step:learned_range:100", 0), ("schedule", 0)],
        "diffusers_ddim": [("q_sample", 500), ("ddim_step:0.0:50", 980), ("ddim_step:1.0:50", 0), ("schedule", 999)],
        "lucidrains": [("q_sample", 500), ("q_posterior", 500), ("training_loss", 500), ("schedule", 0)],
        # The chain first: the step snippets replace torch.randn in the shared interpreter.
        "monai_schedulers": [
            ("chain:DDPMScheduler.step loop (variance_type='fixed_small', num_inference_steps=100)", 0),
            ("q_sample", 500), ("q_posterior", 500), ("strided_step:fixed_large:100", 989),
            ("strided_step:learned:100", 0), ("schedule", 0), ("reverse_step:learned_range", 500)],
    }
    jobs = []
    for module, library in MODULES.items():
        if not _installed(library):
            continue
        adapter = factory_output(module)[0]
        snippets = [adapter.reproduction(op, t, {"eps": [0.1, -0.3, 0.2, 0.0]}) for op, t in operations[module]]
        assert all(snippets), f"{module}: an offered operation has no snippet"
        assert adapter.reproduction("chain:any", 0, {}) is None
        runner = f"for code in {snippets!r}:\n    exec(code, {{}})\n"
        jobs.append((module, subprocess.Popen([sys.executable, "-c", runner], stdout=subprocess.PIPE,
                                              stderr=subprocess.PIPE, text=True)))
    if not jobs:
        pytest.skip("none of diffusers, denoising_diffusion_pytorch and monai is installed")
    for module, process in jobs:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, f"{module}: a snippet failed\n{err}"
        assert len(out.strip().splitlines()) >= len(operations[module]), f"{module}: missing output\n{out}"


# -- chains ------------------------------------------------------------------------------------------------------


def test_chains_have_the_shape_and_are_reproducible(adapter):
    ab = torch.as_tensor(np.asarray(adapter.alpha_bars(), dtype=np.float64))

    def eps_star(x, t):  # exact eps for x_0 ~ N(0, I): sqrt(1 - alpha_bar_t) x_t
        return (1.0 - ab[t]).sqrt().reshape(-1, 1, 1, 1).to(x.dtype) * x

    global_state = torch.get_rng_state()
    for chain in adapter.chains():
        steps = list(chain.timesteps)
        assert steps == sorted(steps, reverse=True) and 0 <= steps[-1] and steps[0] < adapter.schedule.T, chain.label
        first = chain.run(eps_star, SHAPE, torch.Generator().manual_seed(5))
        again = chain.run(eps_star, SHAPE, torch.Generator().manual_seed(5))
        assert first.shape == SHAPE, chain.label
        assert_array_equal(first.numpy(), again.numpy(), err_msg=f"{chain.label}: same seed, same x_0")
    assert torch.equal(torch.get_rng_state(), global_state), "a chain changed the global RNG"


def _eps_star_of_standard_normal_data(adapter):
    ab = torch.as_tensor(np.asarray(adapter.alpha_bars(), dtype=np.float64))
    base = adapter.timestep_base

    def eps_star(x, t):  # exact eps for x_0 ~ N(0, I): sqrt(1 - alpha_bar_t) x_t
        return (1.0 - ab[t - base]).sqrt().reshape(-1, 1, 1, 1).to(x.dtype) * x

    return eps_star


@pytest.fixture(scope="module", params=[("reference", 0, "linear"), *CASES],
                ids=["reference-linear"] + [f"{m}-{label}" for m, _, label in CASES])
def any_adapter(request):
    module, index, _ = request.param
    if module == "reference":
        return importlib.import_module("ddpm.conformance.adapters.reference").ReferenceAdapter("linear", 100)
    pytest.importorskip(MODULES[module])
    return factory_output(module)[index]


def test_every_chain_resumes_and_replays_a_run_from_its_first_timestep(any_adapter):
    """resume(x_T, timesteps[0]) with the generator where a run stands after its initial draw is that run, draw for
    draw: the reference and diffusers draw x_T from the generator itself (advanced here by one draw), lucidrains
    from the global RNG seeded from it (its resume makes the same initial draw and discards it)."""
    eps_star = _eps_star_of_standard_normal_data(any_adapter)
    lucidrains = type(any_adapter).__module__.endswith("lucidrains")
    for chain in any_adapter.chains():
        assert chain.resume is not None, chain.label
        seen = []

        def recording(x, t, seen=seen):
            seen.append((int(t[0]), x.clone()))
            return eps_star(x, t)

        full = chain.run(recording, SHAPE, torch.Generator().manual_seed(5))
        assert [t for t, _ in seen] == list(chain.timesteps), chain.label
        g = torch.Generator().manual_seed(5)
        if not lucidrains:
            torch.randn(SHAPE, generator=g, dtype=seen[0][1].dtype)
        resumed = chain.resume(eps_star, seen[0][1], chain.timesteps[0], g)
        assert_array_equal(resumed.numpy(), full.numpy(), err_msg=chain.label)
        if chain.eta == 0.0:  # deterministic given x_t: resumed anywhere, it ends where the run ended
            t, x = seen[len(seen) // 2]
            assert_array_equal(chain.resume(eps_star, x, t, torch.Generator()).numpy(), full.numpy(), chain.label)


def test_resume_refuses_a_timestep_the_chain_does_not_visit(any_adapter):
    strided = [c for c in any_adapter.chains() if len(set(c.timesteps)) < any_adapter.schedule.T]
    if not strided:
        pytest.skip("every chain of this configuration visits every timestep")
    chain = strided[-1]
    missing = next(t for t in range(any_adapter.schedule.T) if t not in set(chain.timesteps))
    with pytest.raises(ValueError, match=f"t(art)? = {missing} is not a (visited )?timestep"):
        chain.resume(_eps_star_of_standard_normal_data(any_adapter), torch.zeros(SHAPE, dtype=any_adapter.dtype),
                     missing, torch.Generator())


def test_visited_timesteps():
    expected = {  # adapter (library) convention: paper t - 1
        "diffusers_ddpm": [list(range(999, -1, -1)), list(range(990, -1, -10))] * 4,
        "diffusers_ddim": [list(range(980, -1, -20))] * 2,
        "lucidrains": [list(range(999, -1, -1))] + [list(range(999, 18, -20))] * 2,
        # linspace(999, 0, 100).round(): 999 - k * 999 / 99 = 999 - 111 k / 11 is never a half
        "monai_schedulers": [list(range(999, -1, -1)), [round(999 - 111 * k / 11) for k in range(100)]],
    }
    tested = 0
    for module, library in MODULES.items():
        if not _installed(library):
            continue
        tested += 1
        assert [list(c.timesteps) for c in factory_output(module)[0].chains()] == expected[module], module
    if not tested:
        pytest.skip("none of diffusers, denoising_diffusion_pytorch and monai is installed")


# -- imports -----------------------------------------------------------------------------------------------------


def test_importing_the_adapters_imports_no_third_party_library():
    code = ("import sys\nimport ddpm.conformance.adapters.diffusers_ddpm, ddpm.conformance.adapters.diffusers_ddim, "
            "ddpm.conformance.adapters.lucidrains, ddpm.conformance.adapters.monai_schedulers\n"
            "loaded = [m for m in ('diffusers', 'denoising_diffusion_pytorch', 'monai') if m in sys.modules]\n"
            "assert not loaded, loaded\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


@pytest.mark.parametrize("module, library, hint", [
    ("diffusers_ddpm", "diffusers", "diffusers is not installed: pip install 'ddpm-verified[conformance]'"),
    ("diffusers_ddim", "diffusers", "diffusers is not installed: pip install 'ddpm-verified[conformance]'"),
    ("lucidrains", "denoising_diffusion_pytorch",
     "denoising-diffusion-pytorch is not installed: pip install 'ddpm-verified[conformance]'"),
    ("monai_schedulers", "monai", "monai is not installed: pip install 'ddpm-verified[conformance]'"),
])
def test_factory_without_the_library_raises_one_line_adapter_error(monkeypatch, module, library, hint):
    factory = importlib.import_module(f"ddpm.conformance.adapters.{module}").factory
    monkeypatch.setitem(sys.modules, library, None)  # `import library` now raises ImportError
    with pytest.raises(AdapterError) as info:
        factory()
    assert str(info.value) == hint
