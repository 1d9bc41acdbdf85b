"""Shared pytest configuration: Hypothesis profiles, markers, seeds for statistical tests.

tests/ is deliberately not a package (torch-fidelity installs a top-level `tests` package that would
shadow ours); the helpers are the package `testkit` (tests/testkit), importable because pytest puts tests/ on
sys.path (`pythonpath` in pyproject.toml).
"""

from __future__ import annotations

import os

import pytest
from hypothesis import HealthCheck, settings

# `ci`: reproducible (derandomized) runs for `nox -s verify` and CI; `dev`: random, for exploration.
settings.register_profile(
    "ci",
    derandomize=True,
    deadline=None,
    print_blob=True,
    suppress_health_check=[HealthCheck.too_slow],
)
settings.register_profile("dev", deadline=None, max_examples=200)

# Statistical tests draw their local generators from this base seed. `nox -s sweep` reruns them with
# many different bases to measure the false-failure rate; the default run uses base 0.
SEED_BASE = int(os.environ.get("DDPM_TEST_SEED_BASE", "0"))


@pytest.fixture
def seed_base() -> int:
    """The base seed statistical tests add their own offset to (see `nox -s sweep`)."""
    return SEED_BASE


@pytest.fixture
def one_torch_thread():
    """The test runs with one torch thread, the previous count restored after it (`testkit.threads.one_thread`).
    Test files that make many small tensor ops or train the tiny preset use it for every test:
    `pytestmark = pytest.mark.usefixtures("one_torch_thread")`."""
    from testkit.threads import one_thread  # torch is imported here, not by the symbolic tests

    with one_thread():
        yield


def pytest_configure(config: pytest.Config) -> None:
    """Under pytest-xdist (`nox -s verify` runs one worker per core) each worker uses one torch thread, and so do the
    processes it starts: two workers with two threads each would fight over two cores."""
    if os.environ.get("PYTEST_XDIST_WORKER"):
        os.environ["OMP_NUM_THREADS"] = "1"
        import torch

        torch.set_num_threads(1)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo):
    """Recorded properties as plain Python values: pytest-xdist sends reports between processes and cannot send
    NumPy scalars (tests record np.float64 figures with record_property)."""
    outcome = yield
    report = outcome.get_result()
    report.user_properties = [(name, value.item() if hasattr(value, "item") and hasattr(value, "dtype") else value)
                              for name, value in report.user_properties]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """Skip `gpu` tests when CUDA is absent (they run on a machine that has it)."""
    try:
        import torch

        has_cuda = torch.cuda.is_available()
    except ImportError:  # the symbolic suite does not need torch
        has_cuda = False
    if has_cuda:
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)
