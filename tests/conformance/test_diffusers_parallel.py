"""The diffusers parallel (batched) scheduler adapters: protocol, the batched path's plumbing (which S, which rows,
the learned-variance channels), reproduction snippets.

Skipped where diffusers is absent (`nox -s verify` does not install it); the values themselves are checked against
the oracle by the conformance suite. Here the batched path is compared with the same library's single-step path
row by row.
"""

from __future__ import annotations

import ast
import importlib
import importlib.metadata
import subprocess
import sys

import numpy as np
import pytest
import torch
from numpy.testing import assert_allclose

from ddpm.conformance.protocol import AdapterError, check_adapter
from testkit import tolerances
from testkit.shipped_adapters import draws, factory_output

F32 = tolerances.FLOAT32.kwargs()
SHAPE = (4, 1, 2, 2)  # [B, C, H, W], as the suite feeds them



@pytest.fixture(scope="module")
def parallel():
    """[DDPMParallel (leading), DDIMParallel, DDPMParallel (linspace)]."""
    pytest.importorskip("diffusers", reason="the diffusers adapters need diffusers (the conformance extra)")
    return factory_output("diffusers_parallel")



def _rows(pairs) -> tuple[torch.Tensor, torch.Tensor]:
    t = torch.tensor([t for t, _ in pairs], dtype=torch.int64)  # [B]
    return t, torch.tensor([s for _, s in pairs], dtype=torch.int64)


# -- protocol ----------------------------------------------------------------------------------------------------


def test_adapters_satisfy_the_protocol_and_name_their_scheduler(parallel):
    version = f"diffusers {importlib.metadata.version('diffusers')}"
    for adapter in parallel:
        assert check_adapter(adapter) is adapter
        assert adapter.family == "parallel" and adapter.version == version and adapter.timestep_base == 0
        module = sys.modules[type(adapter).__module__]
        assert f"Tested with diffusers {module.TESTED_VERSION}" in module.__doc__
    names = [a.name for a in parallel]
    assert names[0].startswith("diffusers DDPMParallelScheduler(linear, T=1000")
    assert names[1].startswith("diffusers DDIMParallelScheduler(linear, T=1000")
    assert "timestep_spacing='linspace'" in names[2] and "timestep_spacing='linspace'" not in names[0]
    assert [hasattr(a, "batched_mean") for a in parallel] == [True, False, True]
    assert [hasattr(a, "batched_ddim") for a in parallel] == [False, True, False]


def test_parallel_chains_drive_the_parallel_schedulers(parallel):
    ddpm, ddim, linspace = parallel
    assert {c.label.split(".")[0] for c in ddpm.chains()} == {"DDPMParallelScheduler"}
    assert [(c.variance, len(c.timesteps)) for c in ddpm.chains()] == [
        ("fixed_small", 1000), ("fixed_small", 100), ("fixed_large", 1000), ("fixed_large", 100)]
    assert {c.label.split(".")[0] for c in ddim.chains()} == {"DDIMParallelScheduler"}
    assert linspace.chains() == []
    assert type(ddpm.scheduler("fixed_small")).__name__ == "DDPMParallelScheduler"
    assert type(ddim.scheduler(50)).__name__ == "DDIMParallelScheduler"
    assert linspace.scheduler("fixed_small", 100).config.timestep_spacing == "linspace"


# -- the batched path against the same library's step() --------------------------------------------------------


@pytest.mark.parametrize("variance", ["fixed_small", "learned_range"])
def test_batched_mean_is_step_without_noise_row_by_row(parallel, variance):
    """Rows at different t (one step each, then respaced S = 100 rows): batch_step_no_noise equals step() with z = 0."""
    ddpm = parallel[0]
    eps, xt, v = draws(2, 3, SHAPE)
    v = v.clamp(-1, 1) if variance == "learned_range" else None
    for pairs in ([(999, 998), (0, -1), (500, 499), (37, 36)], [(990, 980), (0, -1), (500, 490), (10, 0)]):
        t, s = _rows(pairs)
        batched = ddpm.batched_mean(eps, xt, t, s, variance, v)
        for b, (tb, sb) in enumerate(pairs):
            row = (slice(b, b + 1),)
            zero = torch.zeros_like(xt[row])
            vb = None if v is None else v[row]
            single = (ddpm.reverse_step(eps[row], xt[row], tb, zero, variance, vb) if sb == tb - 1
                      else ddpm.strided_step(eps[row], xt[row], tb, sb, zero, variance, vb))
            assert_allclose(batched[row].numpy(), single.numpy(), **F32, err_msg=f"row {b}: {tb} -> {sb}")


def test_batched_ddim_is_ddim_step_at_eta_0_row_by_row(parallel):
    ddim = parallel[1]
    eps, xt = draws(3, 2, SHAPE)
    for pairs in ([(999, 998), (0, -1), (500, 499), (37, 36)], [(980, 960), (0, -1), (500, 480), (20, 0)]):
        t, s = _rows(pairs)
        batched = ddim.batched_ddim(eps, xt, t, s)
        for b, (tb, sb) in enumerate(pairs):
            single = ddim.ddim_step(eps[b:b + 1], xt[b:b + 1], tb, sb, 0.0, None)
            assert_allclose(batched[b:b + 1].numpy(), single.numpy(), **F32, err_msg=f"row {b}: {tb} -> {sb}")


def test_a_batch_no_single_S_can_take_raises(parallel):
    eps, xt = draws(4, 2, SHAPE)
    t, s = _rows([(990, 980), (500, 480), (300, 299), (10, 0)])  # strides 10, 20 and 1 in one call
    with pytest.raises(ValueError, match="no set_timesteps"):
        parallel[0].batched_mean(eps, xt, t, s, "fixed_small")
    with pytest.raises(ValueError, match="no set_timesteps"):
        parallel[1].batched_ddim(eps, xt, t, s)


def test_diffusers_batched_step_ignores_the_linspace_list(parallel):
    """diffusers 0.42.1: batch_step_no_noise steps t -> t - T // S; with timestep_spacing='linspace' the visited list
    is not evenly spaced (S = 100: ..., 949, 938, ...), so the batched row 949 -> 938 differs from step()'s."""
    linspace = parallel[2]
    assert linspace.strided_timesteps(100)[4:7] == [959, 949, 938]
    eps, xt = draws(5, 2, SHAPE)
    t, s = _rows([(959, 949), (949, 938), (10, 0), (0, -1)])
    batched = linspace.batched_mean(eps, xt, t, s, "fixed_small")
    zero = torch.zeros_like(xt[:1])
    stepped = [linspace.strided_step(eps[b:b + 1], xt[b:b + 1], int(t[b]), int(s[b]), zero, "fixed_small")
               for b in range(4)]
    assert_allclose(batched[0:1].numpy(), stepped[0].numpy(), **F32, err_msg="a gap of T // S = 10 agrees")
    assert np.abs(batched[1:2].numpy() - stepped[1].numpy()).max() > 1e-3, "949 -> 938: the gap is 11, not 10"


# -- reproduction snippets ---------------------------------------------------------------------------------------


def _run_snippets(snippets: list[str]) -> list[list[float]]:
    runner = "".join(f"exec({code!r}, {{}})\n" for code in snippets)
    done = subprocess.run([sys.executable, "-c", runner], capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    printed = [line for line in done.stdout.strip().splitlines() if line.startswith("[")]
    return [ast.literal_eval(line.replace("nan", "None")) for line in printed]


@pytest.mark.slow
def test_batched_snippets_run_and_match_the_adapters(parallel):
    ddpm, ddim, _ = parallel
    eps, xt = draws(9, 2, SHAPE)
    jobs = []
    for adapter, operation, pairs in [(ddpm, "batched_mean:fixed_small", [(990, 980), (0, -1), (500, 490)]),
                                      (ddpm, "batched_mean:fixed_small", [(999, 998), (0, -1), (500, 499)]),
                                      (ddim, "batched_ddim", [(980, 960), (0, -1), (500, 480)])]:
        t, s = _rows(pairs)
        e, x = eps[:3], xt[:3]
        inputs = {"eps": e.flatten().tolist(), "xt": x.flatten().tolist(), "t": t.tolist(), "s": s.tolist()}
        expected = (adapter.batched_mean(e, x, t, s, "fixed_small") if operation.startswith("batched_mean")
                    else adapter.batched_ddim(e, x, t, s))
        jobs.append((adapter.reproduction(operation, int(t[0]), inputs), expected))
    printed = _run_snippets([code for code, _ in jobs])
    assert len(printed) == len(jobs)
    for (code, expected), values in zip(jobs, printed, strict=True):
        assert_allclose(np.array(values, dtype=np.float64), expected.flatten().double().numpy(), **F32, err_msg=code)


# -- imports -----------------------------------------------------------------------------------------------------


def test_importing_the_adapters_imports_no_diffusers():
    code = "import sys\nimport ddpm.conformance.adapters.diffusers_parallel\nassert 'diffusers' not in sys.modules\n"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def test_factory_without_diffusers_raises_one_line_adapter_error(monkeypatch):
    factory = importlib.import_module("ddpm.conformance.adapters.diffusers_parallel").factory
    monkeypatch.setitem(sys.modules, "diffusers", None)  # `import diffusers` now raises ImportError
    with pytest.raises(AdapterError) as info:
        factory()
    assert str(info.value) == "diffusers is not installed: pip install 'ddpm-verified[conformance]'"
