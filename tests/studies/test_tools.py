"""The study tools run as modules (`nox -s sweep`, `nox -s mutants`, `nox -s conformance_power`), and the mutation
notes name tests that exist.

ddpm.studies.sweep reruns the statistical tests over many seed bases; ddpm.studies.mutants runs mutmut and confirms,
for each survivor its notes say a later test kills, that this test kills it: a note naming a test id that no longer
exists would make that confirmation fail silently (pytest exits with a usage error, not a test failure).
"""

from __future__ import annotations

import ast
import os
import subprocess
import sys

import pytest

from ddpm.studies import mutants
from testkit.paths import REPO


@pytest.mark.parametrize("module", ["ddpm.studies.sweep", "ddpm.studies.mutants",
                                    "ddpm.studies.conformance_power"])
def test_runs_as_a_module(module):
    completed = subprocess.run([sys.executable, "-m", module, "--help"], cwd=REPO, capture_output=True, text=True,
                               env={**os.environ, "PYTHONPATH": str(REPO)}, timeout=120)
    assert completed.returncode == 0, completed.stderr
    assert completed.stdout.startswith(f"usage: python -m {module}")


def test_every_killed_by_note_names_an_existing_test():
    notes = mutants.load_notes()["killed_by"]
    assert notes
    for mutant, test_id in notes.items():
        path, sep, name = test_id.partition("::")
        assert sep and path.startswith("tests/"), f"{mutant}: {test_id!r} is not a test id under tests/"
        file = REPO / path
        assert file.is_file(), f"{mutant}: {path} does not exist"
        tree = ast.parse(file.read_text(encoding="utf-8"))
        defined = {node.name for node in ast.walk(tree) if isinstance(node, ast.FunctionDef)}
        assert name.split("[")[0] in defined, f"{mutant}: {path} has no test {name}"


def test_every_noted_mutant_names_a_module_that_exists():
    """mutmut names a mutant <module path>.<mangled function>__mutmut_<n>: the module must be a file of ddpm/."""
    for section in mutants.load_notes().values():
        for name in section:
            module = REPO.joinpath(*name.split(".")[:-1]).with_suffix(".py")
            assert module.is_file() and name.startswith("ddpm."), f"{name}: no module {module.relative_to(REPO)}"
