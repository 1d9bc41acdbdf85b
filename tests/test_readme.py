"""The README's results table: each value equals the committed report's figure named beside it, at the precision shown.

A row of the table under "## Results" whose last cell names a report file and a key (`reports/...json`: `a.b.c`, the
key a dotted path into the JSON) is checked: the value cell's number must be the file's value formatted with as many
decimals as the README shows. A rerun that changes a report without the README (or the other way round) fails here.
"""

from __future__ import annotations

import json
import re

import pytest

from testkit.paths import REPO

SOURCE = re.compile(r"`(reports/[^`]+\.json)`: `([^`]+)`")
NUMBER = re.compile(r"-?\d+(?:\.\d+)?")


def _results_rows() -> list[tuple[str, str, str, str]]:
    """(label, shown value, file, key) for each sourced row of the README's Results table."""
    text = (REPO / "README.md").read_text(encoding="utf-8")
    section = text.split("\n## Results\n", 1)[1].split("\n## ", 1)[0]
    rows = []
    for line in section.splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) < 3 or not (match := SOURCE.search(cells[-1])):
            continue
        rows.append((cells[0], cells[1], match.group(1), match.group(2)))
    return rows


def _lookup(path: str, key: str) -> float:
    value = json.loads((REPO / path).read_text(encoding="utf-8"))
    for part in key.split("."):
        value = value[part]
    return float(value)


def _formatted(value: float, shown: str) -> str:
    decimals = len(shown.split(".", 1)[1]) if "." in shown else 0
    return f"{value:.{decimals}f}"


ROWS = _results_rows()


def test_the_results_table_has_sourced_rows():
    rows = ROWS
    assert len(rows) >= 8
    assert {path for _, _, path, _ in rows} >= {"reports/train_small/metrics.json", "reports/bench/bench.json"}


@pytest.mark.parametrize("label, shown, path, key", ROWS, ids=[key for _, _, _, key in ROWS])
def test_each_headline_number_is_the_reports(label, shown, path, key):
    number = NUMBER.search(shown)
    assert number, f"{label}: no number in {shown!r}"
    assert _formatted(_lookup(path, key), number.group(0)) == number.group(0), f"{label}: README {shown}, {path} {key}"


def test_a_stale_number_is_caught():
    assert _formatted(3.1473, "3.147") == "3.147"
    assert _formatted(3.1489, "3.147") != "3.147"
    assert _formatted(750.6, "751") == "751"
