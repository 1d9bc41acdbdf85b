"""The map of the seed tutorial's chain (`derivations.seed_map`): every letter it names exists, every derivation has
a place in it, and the report opens with it."""

from __future__ import annotations

import pytest

from derivations import all_derivations
from derivations.report import render
from derivations.seed_map import BEYOND_THE_SEED, SEED_CHAIN, render_map

pytestmark = pytest.mark.symbolic


def _keys() -> set[str]:
    return {d.key for d in all_derivations()}


def test_every_result_named_exists_and_every_derivation_has_a_place():
    named = {k for link in SEED_CHAIN for k in link.results} | {k for k, _ in BEYOND_THE_SEED}
    assert named - _keys() == set(), "the map names results that do not exist"
    assert _keys() - named == set(), "derivations the map does not place"


def test_the_tutorials_questions_and_its_two_ends_are_links():
    claims = [link.claim for link in SEED_CHAIN]
    assert claims[0].startswith("Maximum likelihood")
    assert any(c.startswith("First question") and "one step" in c for c in claims)
    assert any(c.startswith("Second question") and "sigma_t z" in c for c in claims)
    assert any("decoder" in c for c in claims)


def test_a_special_case_says_which():
    for link in SEED_CHAIN:
        assert link.scope and link.results
        assert link.general or "only" in link.scope, link.claim


def test_the_map_links_to_existing_sections_and_the_report_opens_with_it():
    text = render()
    titles = {d.key: d.title for d in all_derivations()}
    shown = render_map(titles)
    assert text.index("## Map: the seed tutorial's chain") < text.index("## (a) ")
    assert shown.count("**special case**") == sum(not link.general for link in SEED_CHAIN)
    for key, title in titles.items():
        heading = f"## ({key}) {title}"
        assert heading in text
        anchor = shown.split(f"[({key})](#", 1)[1].split(")", 1)[0]
        assert anchor.startswith(f"{key}-") and " " not in anchor
