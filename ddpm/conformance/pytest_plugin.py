"""The conformance suite as pytest tests, for a project's own CI: one test per (configuration, case).

    pytest --pyargs ddpm.conformance --adapter mypkg.module:factory [--adapter ...] [--conformance-seed N]

The plugin is registered as a pytest11 entry point when ddpm-verified is installed (elsewhere: add
`-p ddpm.conformance.pytest_plugin`). It adds the options, runs the suite once at collection on every
configuration the factories return, and parametrises `ddpm/conformance/test_conformance.py` with the results:
a failing case fails its test with the deviation, where it occurs and the reproduction snippet; a case the
implementation does not offer (or a configuration its library rejects) is skipped with the reason. Without
`--adapter` the test is skipped. Bad input (a spec that does not import or an object that is not an adapter) is a
usage error with one line naming the problem. Only pytest is imported until a run asks for the suite.
"""

from __future__ import annotations

from typing import Any

import pytest

FIXTURE = "conformance_result"
# The suite's results, run once per session and kept on the config's stash.
_RESULTS = pytest.StashKey[list]()


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("ddpm-conformance", "DDPM conformance suite (ddpm-verified)")
    group.addoption("--adapter", action="append", default=[], metavar="SPEC",
                    help="package.module:factory returning DDPM adapters, or a shipped name; repeatable")
    group.addoption("--conformance-seed", type=int, default=0, help="seed of the suite's inputs (default 0)")


def pytest_configure(config: pytest.Config) -> None:
    """Bad adapter specs are a usage error (one line, exit 4) before anything is collected."""
    specs = config.getoption("adapter", default=None)
    if not specs:
        return
    from ddpm.conformance.protocol import AdapterError
    from ddpm.conformance.runner import load_adapters

    for spec in specs:
        try:
            load_adapters(spec)
        except AdapterError as error:
            raise pytest.UsageError(f"ddpm conformance: {error}") from None


def _results(config: pytest.Config) -> list[tuple[str, Any]]:
    """(test id, (description, CaseResult)) for every case of every configuration; the suite runs once per session."""
    if _RESULTS in config.stash:
        return config.stash[_RESULTS]
    from ddpm.conformance.cases import SuiteConfig
    from ddpm.conformance.protocol import AdapterError
    from ddpm.conformance.runner import run_suite

    try:
        runs, _ = run_suite(config.getoption("adapter"), SuiteConfig(seed=config.getoption("conformance_seed")),
                            run_reproductions=False, progress=False)
    except AdapterError as error:
        raise pytest.UsageError(f"ddpm conformance: {error}") from None
    results = [(f"{run.description.name}::{result.case}", (run.description, result))
               for run in runs for result in run.results]
    config.stash[_RESULTS] = results
    return results


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if FIXTURE not in metafunc.fixturenames:
        return
    if not metafunc.config.getoption("adapter"):
        metafunc.parametrize(FIXTURE, [pytest.param(None, marks=pytest.mark.skip(
            reason="no --adapter given: pytest --pyargs ddpm.conformance --adapter package.module:factory"))],
            ids=["no-adapter"])
        return
    results = _results(metafunc.config)
    metafunc.parametrize(FIXTURE, [value for _, value in results], ids=[test_id for test_id, _ in results])


def failure_message(description: Any, result: Any) -> str:
    """What a failing case's test says: the configuration, the case, its criterion and the reproduction."""
    lines = [f"{description.name} [{description.version}] fails {result.case}: {result.detail}"]
    if result.criterion:
        lines.append(f"criterion: {result.criterion}")
    if result.reproduction:
        lines += ["reproduction:", result.reproduction.rstrip()]
    return "\n".join(lines)


__all__ = ["FIXTURE", "failure_message", "pytest_addoption", "pytest_generate_tests"]
