"""The redesign's safety net: the tiny runs' golden record (`tools/golden.py`) reproduces bit for bit.

The record hashes the bytes of trained weights, samples, bounds and a conformance run; any change of behaviour,
however small, changes a hash. Bitwise equality is only defined for the torch build and CPU instruction set the
record was made with, so on another machine the test says so and skips. After a deliberate change of behaviour,
rewrite the record (`python tools/golden.py --write tests/golden/tiny_runs.json`) in the same commit and say why.
"""

from __future__ import annotations

import importlib.util
import json

import pytest

from testkit.paths import REPO, TESTS

RECORD = TESTS / "golden" / "tiny_runs.json"


def _golden_tool():
    """tools/golden.py, loaded from its file: tools/ is not a package (it is not part of the library)."""
    spec = importlib.util.spec_from_file_location("golden_tool", REPO / "tools" / "golden.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_tiny_runs_reproduce_the_golden_record_bit_for_bit():
    golden = _golden_tool()
    stored = json.loads(RECORD.read_text(encoding="utf-8"))
    if stored["machine"] != golden.machine():
        pytest.skip(f"the record was made with {stored['machine']}, this machine is {golden.machine()}: "
                    "bitwise equality is not defined across builds")
    current = json.loads(json.dumps(golden.record()))
    found = golden.differences(stored, current)
    assert not found, f"{len(found)} values changed, first: " + "; ".join(found[:5])


def test_differences_names_every_changed_leaf():
    golden = _golden_tool()
    stored = {"a": {"b": 1.0, "c": [1, 2]}, "d": "x"}
    assert golden.differences(stored, stored) == []
    changed = {"a": {"b": 1.0000000000000002, "c": [1, 2]}, "e": "x"}
    assert golden.differences(stored, changed) == [
        "/a/b: 1.0 != 1.0000000000000002", "/d: only in the record", "/e: only in this run"]
