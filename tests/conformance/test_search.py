"""The search cases (`ddpm.conformance.cases.search`): what they find depends on the seed, not on what the process
imported before, and both ends of the timestep range are always tried."""

from __future__ import annotations

import dataclasses
import importlib.util
import sys

import pytest

from ddpm.conformance.adapters.reference import ReferenceAdapter
from ddpm.conformance.cases import Status, SuiteConfig
from ddpm.conformance.runner import run_adapter
from testkit import broken_adapters

pytest.importorskip("hypothesis")

CONFIG = SuiteConfig(strided_steps=broken_adapters.S, ddim_steps=broken_adapters.S, search_examples=60, seed=5)
SEARCHES = {"search[beta]", "search[beta_tilde]", "search[ddim]"}


def _found(adapter) -> dict[str, tuple]:
    run = run_adapter(adapter, CONFIG, progress=False, only=SEARCHES)
    return {r.case: (r.status, r.ratio, r.deviation, r.t, r.where) for r in run.results}


def _import_module_full_of_constants(tmp_path) -> None:
    """A module outside site-packages with many integers in 1..T and floats in the searched ranges: the constants
    Hypothesis would otherwise mix into its draws."""
    path = tmp_path / "constants_for_the_search.py"
    values = [f"C{i} = {i * 7 + 3}\nF{i} = {i * 0.731 - 20:.3f}" for i in range(40)]
    path.write_text("\n".join(values) + "\n", encoding="utf-8")
    spec = importlib.util.spec_from_file_location(path.stem, path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[path.stem] = module
    spec.loader.exec_module(module)


def test_what_the_search_finds_does_not_depend_on_the_modules_imported_before(tmp_path):
    adapter = ReferenceAdapter("linear", 300)
    before = _found(adapter)
    try:
        _import_module_full_of_constants(tmp_path)
        after = _found(adapter)
    finally:
        sys.modules.pop("constants_for_the_search", None)
    assert set(before) == SEARCHES
    assert after == before


def test_a_different_seed_searches_differently():
    """The comparison above can fail: the found worst case is a function of the seed."""
    adapter = ReferenceAdapter("linear", 300)
    first = run_adapter(adapter, CONFIG, progress=False, only={"search[beta]"}).results[0]
    other = run_adapter(adapter, dataclasses.replace(CONFIG, seed=6), progress=False, only={"search[beta]"}).results[0]
    assert first.status is other.status is Status.PASS
    assert (first.deviation, first.t, first.where) != (other.deviation, other.t, other.where)


@pytest.mark.parametrize("bug", ["eps_form_at_zero_snr", "ddim_stops_at_t_one"])
def test_a_bug_at_an_end_of_the_timestep_range_is_found_in_the_first_examples(bug):
    """Both ends are explicit examples: a bug there is found whatever the search draws (two examples are enough)."""
    (adapter,) = getattr(broken_adapters, bug)()
    run = run_adapter(adapter, dataclasses.replace(CONFIG, search_examples=2), progress=False, only=SEARCHES)
    failed = {r.case for r in run.results if r.status is Status.FAIL}
    assert failed == broken_adapters.EXPECTED_FAILURES[bug] & SEARCHES
