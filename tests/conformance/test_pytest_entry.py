"""The conformance suite as pytest tests (ddpm/conformance/pytest_plugin.py): one test per (configuration, case),
run in a fresh pytest process the way a project's CI would run it."""

from __future__ import annotations

import importlib.metadata
import os
import subprocess
import sys

import pytest

from testkit.paths import REPO, TESTS


def _pytest(tmp_path, *args: str) -> subprocess.CompletedProcess:
    installed = any(e.value == "ddpm.conformance.pytest_plugin"
                    for e in importlib.metadata.entry_points(group="pytest11"))
    plugin = [] if installed else ["-p", "ddpm.conformance.pytest_plugin"]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS), os.environ.get("PYTHONPATH", "")])}
    return subprocess.run([sys.executable, "-m", "pytest", *plugin, "--pyargs", "ddpm.conformance", "-q", "-rfs",
                           "-p", "no:cacheprovider", "-p", "no:randomly", *args],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=900)


@pytest.mark.slow
def test_a_broken_adapter_fails_exactly_its_cases_as_tests(tmp_path):
    done = _pytest(tmp_path, "--adapter", "testkit.broken_adapters:wrong_variance")
    assert done.returncode == 1, done.stdout[-3000:] + done.stderr[-3000:]
    failed = sorted(line.split("::")[-1] for line in done.stdout.splitlines() if line.startswith("FAILED"))
    assert [f.split(" - ")[0] for f in failed] == ["edges[beta_tilde]]", "reverse_step[beta_tilde]]",
                                                   "search[beta_tilde]]"], failed
    assert "3 failed, " in done.stdout and " error" not in done.stdout
    assert "fails reverse_step[beta_tilde]" in done.stdout and "reproduction:" in done.stdout
    assert "a.reverse_step(eps, xt, t, z, 'beta_tilde')" in done.stdout


@pytest.mark.slow
def test_a_conformant_adapter_passes_and_skips_what_it_lacks(tmp_path):
    done = _pytest(tmp_path, "--adapter", "testkit.broken_adapters:zero_snr_textbook")
    assert done.returncode == 0, done.stdout[-3000:]
    assert " passed" in done.stdout and "not applicable: the adapter has no strided_step()" in done.stdout


def test_without_an_adapter_the_test_is_skipped_and_a_bad_spec_is_one_line(tmp_path):
    done = _pytest(tmp_path)
    assert done.returncode == 0 and "1 skipped" in done.stdout and "no --adapter given" in done.stdout
    done = _pytest(tmp_path, "--adapter", "no_such_module_xyz:factory")
    assert done.returncode == 4, done.stdout + done.stderr
    assert "ddpm conformance: adapter 'no_such_module_xyz:factory': module 'no_such_module_xyz' does not import" \
        in done.stderr
    assert "Traceback" not in done.stderr
