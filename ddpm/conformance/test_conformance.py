"""One test per (configuration, case) of the conformance suite: `pytest --pyargs ddpm.conformance --adapter SPEC`.

Parametrised by `ddpm.conformance.pytest_plugin` (see there); this file is the entry point a project's CI collects.
"""

from __future__ import annotations

import pytest

from ddpm.conformance.cases import Status
from ddpm.conformance.pytest_plugin import failure_message


def test_case(conformance_result):
    description, result = conformance_result
    if result.status is Status.NOT_APPLICABLE:
        pytest.skip(f"not applicable: {result.detail}")
    if result.status is Status.FAIL:
        pytest.fail(failure_message(description, result), pytrace=False)
