"""The diffusers DDIMInverseScheduler adapter: protocol, its timestep convention (step() names the target), the first
step with and without set_alpha_to_one, reproduction snippets.

Skipped where diffusers is absent (`nox -s verify` does not install it); the values themselves are checked against
the oracle by the conformance suite. Here the inversion is undone by diffusers' own DDIM step.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest
from numpy.testing import assert_allclose

from ddpm.conformance.cases import Context, Status, SuiteConfig
from ddpm.conformance.cases.inversion import case_inversion
from ddpm.conformance.protocol import AdapterError, NotOffered, Prediction, check_adapter
from testkit import tolerances
from testkit.shipped_adapters import draws, factory_output

F32 = tolerances.FLOAT32.kwargs()
SHAPE = (4, 1, 2, 2)  # [B, C, H, W], as the suite feeds them



@pytest.fixture(scope="module")
def inverse():
    """[set_alpha_to_one True, False, True with v, True with x_0 outputs]."""
    pytest.importorskip("diffusers", reason="the diffusers adapters need diffusers (the conformance extra)")
    return factory_output("diffusers_inverse")



def test_adapters_satisfy_the_protocol_and_name_their_configuration(inverse):
    version = f"diffusers {importlib.metadata.version('diffusers')}"
    for adapter in inverse:
        assert check_adapter(adapter) is adapter
        assert adapter.family == "inversion" and adapter.version == version and adapter.timestep_base == 0
    module = sys.modules[type(inverse[0]).__module__]
    assert f"Tested with diffusers {module.TESTED_VERSION}" in module.__doc__
    assert [a.prediction for a in inverse] == [Prediction.EPS, Prediction.EPS, Prediction.V, Prediction.X0]
    assert [a.options["set_alpha_to_one"] for a in inverse] == [True, False, True, True]
    assert "prediction_type='v_prediction'" in inverse[2].name and "prediction_type" not in inverse[0].name


def test_the_inverse_scheduler_offers_no_forward_operation(inverse):
    x, eps, z = draws(1, 3, SHAPE)
    adapter = inverse[0]
    for call in (lambda: adapter.q_sample(x, 10, eps), lambda: adapter.q_posterior(x, x, 10),
                 lambda: adapter.reverse_step(eps, x, 10, z, "none")):
        with pytest.raises(NotOffered):
            call()


def test_inversion_timesteps_are_leading_and_ascending(inverse):
    assert inverse[0].inversion_timesteps(50) == list(range(0, 1000, 20))
    assert inverse[0].inversion_timesteps(1000) == list(range(1000))
    with pytest.raises(ValueError, match="from s = 5 to t = 30"):
        inverse[0].inversion_step(*draws(6, 2, SHAPE), 5, 30)


def test_inversion_is_undone_by_diffusers_ddim_step():
    """DDIMInverseScheduler's step s -> t, then DDIMScheduler's step t -> s (eta 0, the same eps), returns x_s."""
    pytest.importorskip("diffusers", reason="the diffusers adapters need diffusers (the conformance extra)")
    inverse, ddim = factory_output("diffusers_inverse")[0], factory_output("diffusers_ddim")[0]
    eps, xs = draws(7, 2, SHAPE)
    for s, t in [(480, 500), (-1, 0), (0, 20)]:
        xt = inverse.inversion_step(eps, xs, s, t)
        back = ddim.ddim_step(eps, xt, t, s, 0.0, None)
        assert_allclose(back.numpy(), xs.numpy(), **F32, err_msg=f"{s} -> {t} -> {s}")


def test_without_set_alpha_to_one_the_first_step_is_the_identity(inverse):
    """diffusers 0.42.1, set_alpha_to_one=False: the step to t = 0 starts at alphas_cumprod[0] and ends there, so
    it returns its input (to float32 rounding); the adapter does not offer it as a step from x_0."""
    eps, x0 = draws(8, 2, SHAPE)
    library = inverse[1].scheduler(inverse[1].inversion_num_steps(-1, 0)).step(eps, 0, x0).prev_sample
    assert_allclose(library.numpy(), x0.numpy(), **F32)
    with pytest.raises(NotOffered, match="identity"):
        inverse[1].inversion_step(eps, x0, -1, 0)
    moved = inverse[0].inversion_step(eps, x0, -1, 0)  # set_alpha_to_one=True: x_0 -> x_1 moves by ~sqrt(beta_1)
    assert np.abs(moved.numpy() - x0.numpy()).max() > 1e-3


def test_the_inversion_case_on_each_configuration(inverse):
    """diffusers 0.42.1 conforms: from x_0 with set_alpha_to_one=True; without it the missing step from x_0 is a
    convention; with x_0 outputs the step from x_0 has no oracle value (eps_hat = 0 / 0) and is not compared."""
    results = [case_inversion(Context(adapter, SuiteConfig()), 50) for adapter in inverse]
    assert [r.status for r in results] == [Status.CONVENTION] * 4  # S = 50 never reaches t = T: a timesteps note
    assert all(r.ratio < 1 for r in results)
    assert any("no step from x_0 (s = -1)" in note for note in results[1].conventions)
    assert not any("no step from x_0" in note for r in (results[0], *results[2:]) for note in r.conventions)
    assert "s = -1 -> t = 0 not compared" in results[3].detail and "non-finite" in results[3].detail
    assert "not compared" not in results[0].detail + results[2].detail


@pytest.mark.slow
def test_inversion_snippets_run_and_match_the_adapters(inverse):
    eps, xs = (u[:1, :, :1, :].reshape(1, 1, 1, -1) for u in draws(9, 2, SHAPE))  # [1, 1, 1, 2]
    jobs = []
    for adapter in inverse[:3]:
        name = {Prediction.EPS: "eps", Prediction.V: "v_pred"}[adapter.prediction]
        inputs = {name: eps.flatten().tolist(), "xs": xs.flatten().tolist()}
        jobs.append((adapter.reproduction("inversion_step:50", 40, inputs), adapter.inversion_step(eps, xs, 20, 40)))
    runner = "".join(f"exec({code!r}, {{}})\n" for code, _ in jobs)
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [ast.literal_eval(line) for line in done.stdout.strip().splitlines() if line.startswith("[")]
    assert len(printed) == len(jobs)
    for (code, expected), values in zip(jobs, printed, strict=True):
        assert_allclose(np.array(values, dtype=np.float64), expected.flatten().double().numpy(), **F32, err_msg=code)


def test_importing_the_adapter_imports_no_diffusers():
    code = "import sys\nimport ddpm.conformance.adapters.diffusers_inverse\nassert 'diffusers' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_factory_without_diffusers_raises_one_line_adapter_error(monkeypatch):
    factory = importlib.import_module("ddpm.conformance.adapters.diffusers_inverse").factory
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    with pytest.raises(AdapterError) as info:
        factory()
    assert str(info.value) == "diffusers is not installed: pip install 'ddpm-verified[conformance]'"
