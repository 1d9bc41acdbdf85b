"""`ddpm conform` on a broken setup: exit 2 with one line naming the spec and the problem, never exit 1 ("a case
failed") and never a traceback unless --traceback; adapter modules in the current folder are found by both
`python -m ddpm` and the `ddpm` console script (which does not put the current folder on sys.path)."""

from __future__ import annotations

import importlib.util
import os
import subprocess
import sys

import pytest

from ddpm.cli import main
from testkit.paths import REPO

# A module in the current folder whose one configuration its library "rejected": the run is one not-applicable row,
# instant and conformant, so exit 0 proves the module was found.
LOCAL_ADAPTER = """
from ddpm.conformance.protocol import RejectedConfiguration

def factory():
    return [RejectedConfiguration("local adapter found", "0.1", "ValueError: nothing to run")]
"""

# (module name, its source or None, spec, what the one-line message must say)
BAD_SETUPS = {
    "not a factory": (None, None, "json:loads", ["'json:loads'", "calling loads() raised TypeError"]),
    "syntax error": ("conform_bad_syntax", "x = 1\ndef factory(:\n    pass\n", "conform_bad_syntax:factory",
                     ["does not import", "SyntaxError", "conform_bad_syntax.py:2"]),
    "name error at import": ("conform_bad_name", "x = 1\ny = undefined_name\n", "conform_bad_name:factory",
                             ["does not import", "NameError", "undefined_name", "conform_bad_name.py:2"]),
    "factory raises": ("conform_bad_raises", "def factory():\n    raise RuntimeError('no scheduler here')\n",
                       "conform_bad_raises:factory",
                       ["calling factory() raised RuntimeError: no scheduler here", "conform_bad_raises.py:2"]),
    "factory returns [42]": ("conform_bad_items", "def factory():\n    return [42]\n", "conform_bad_items:factory",
                             ["item 0 (42)", "is not an adapter", "no attribute 'name'"]),
    "unknown short name": (None, None, "difusers",
                           ["'difusers' is not a shipped adapter", "reference", "diffusers-ddpm", "monai",
                            "did you mean 'diffusers-ddpm'?", "must look like package.module:factory"]),
    "missing method": (None, None, "testkit.broken_adapters:missing_posterior",
                       ["'testkit.broken_adapters:missing_posterior'", "not an adapter", "no method q_posterior"]),
}


@pytest.fixture
def console_script_cwd(tmp_path, monkeypatch):
    """cwd = tmp_path and sys.path as the console script has it: its bin folder first, no current folder."""
    monkeypatch.chdir(tmp_path)
    here = str(tmp_path)
    path = [os.path.dirname(sys.executable)] + [p for p in sys.path if p and os.path.abspath(p) != here]
    monkeypatch.setattr(sys, "path", path)
    written: list[str] = []
    yield written
    for name in written:  # the modules that imported stay cached; the next test must not see them
        sys.modules.pop(name, None)


@pytest.mark.parametrize("case", list(BAD_SETUPS))
def test_bad_setup_is_one_line_and_exit_2(case, console_script_cwd, tmp_path, capsys):
    module, source, spec, fragments = BAD_SETUPS[case]
    if module is not None:
        (tmp_path / f"{module}.py").write_text(source)
        console_script_cwd.append(module)
    jobs = ["--jobs", "2"] if case == "factory raises" else []  # reported before any worker starts
    assert main(["conform", "--adapter", spec, "--no-progress", *jobs]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert captured.err.startswith("ddpm: error: ") and captured.err.count("\n") == 1, captured.err
    assert "Traceback" not in captured.err
    for fragment in fragments:
        assert fragment in captured.err, (fragment, captured.err)


def test_traceback_flag_shows_the_adapters_own_trace(console_script_cwd, tmp_path, capsys):
    (tmp_path / "conform_trace_raises.py").write_text("def factory():\n    raise RuntimeError('deep inside')\n")
    console_script_cwd.append("conform_trace_raises")
    assert main(["conform", "--adapter", "conform_trace_raises:factory", "--no-progress", "--traceback"]) == 2
    err = capsys.readouterr().err
    assert err.startswith("Traceback") and "RuntimeError: deep inside" in err
    assert "conform_trace_raises.py\", line 2, in factory" in err and "AdapterError: adapter" in err


def test_console_script_entry_finds_an_adapter_module_in_the_current_folder(console_script_cwd, tmp_path, capsys):
    (tmp_path / "conform_local_adapter.py").write_text(LOCAL_ADAPTER)
    console_script_cwd.append("conform_local_adapter")
    assert importlib.util.find_spec("conform_local_adapter") is None  # not importable from sys.path as it stands
    assert main(["conform", "--adapter", "conform_local_adapter:factory", "--no-progress"]) == 0
    assert "local adapter found [0.1]: conformant" in capsys.readouterr().out


def _python_m_ddpm(cwd, *args: str) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return subprocess.run([sys.executable, "-m", "ddpm", "conform", "--no-progress", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=120)


def test_python_m_ddpm_finds_a_local_adapter_and_reports_a_non_factory_in_one_line(tmp_path):
    (tmp_path / "conform_local_adapter.py").write_text(LOCAL_ADAPTER)
    done = _python_m_ddpm(tmp_path, "--adapter", "conform_local_adapter:factory", "--adapter", "json:loads")
    # Specs load in order, all before any case runs: the local module loaded (else its error would come first) and
    # the broken spec stops the run with one line; nothing is reported as conformant or failed.
    assert done.returncode == 2 and done.stdout == "", done
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr, done.stderr
    assert "adapter 'json:loads': calling loads() raised TypeError" in done.stderr
    assert "conform_local_adapter" not in done.stderr


def test_the_default_run_skips_only_an_adapter_that_is_not_installed(console_script_cwd, tmp_path):
    """`skip_missing` (the default `conform` run over the shipped adapters) skips a module that does not import, with
    a note naming it, but raises for an adapter whose factory crashes: a broken adapter is never just "skipped"."""
    from ddpm.conformance.protocol import AdapterError
    from ddpm.conformance.runner import AdapterUnavailable, run_suite

    (tmp_path / "conform_skip_raises.py").write_text("def factory():\n    raise KeyError('api changed')\n")
    console_script_cwd.append("conform_skip_raises")
    runs, skipped = run_suite(["no_such_module_xyz:factory"], progress=False, skip_missing=True)
    assert runs == [] and len(skipped) == 1 and "'no_such_module_xyz:factory'" in skipped[0]
    with pytest.raises(AdapterError, match="calling factory\\(\\) raised KeyError: 'api changed'") as raised:
        run_suite(["conform_skip_raises:factory"], progress=False, skip_missing=True)
    assert not isinstance(raised.value, AdapterUnavailable)
