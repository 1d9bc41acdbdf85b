"""The project's legal and citation files agree with pyproject.toml and with each other.

LICENSE is the MIT text pyproject.toml names; CITATION.cff carries pyproject's version and cites the papers the code
implements by their arXiv identifiers; docs/references.md lists every paper CITATION.cff cites; CHANGELOG.md has a
section for the work not yet released. The files are read as text: the verify environment has no YAML parser, so
CITATION.cff is read line by line for the few keys checked here (a full parse runs where PyYAML is installed).
"""

from __future__ import annotations

import re

from testkit.paths import REPO

# The papers the code implements or tests against (docs/references.md says what each is used for).
CORE_ARXIV_IDS = {
    "2006.11239",  # Ho, Jain & Abbeel 2020: DDPM
    "2102.09672",  # Nichol & Dhariwal 2021: improved DDPM (cosine schedule, learned variance)
    "2010.02502",  # Song, Meng & Ermon 2021: DDIM
    "2201.06503",  # Bao, Li, Zhu & Zhang 2022: Analytic-DPM
    "2202.00512",  # Salimans & Ho 2022: the v parameterisation
    "2305.08891",  # Lin, Liu, Li & Yang 2023: zero terminal SNR
    "1804.06788",  # Talts et al. 2018: simulation-based calibration
}
ARXIV_ID = re.compile(r"arXiv:(\d{4}\.\d{4,5})")
# The MIT license's grant and disclaimer, as the Open Source Initiative publishes them (whitespace normalised).
MIT_GRANT = ("Permission is hereby granted, free of charge, to any person obtaining a copy of this software and "
             "associated documentation files (the \"Software\"), to deal in the Software without restriction")
MIT_CONDITION = ("The above copyright notice and this permission notice shall be included in all copies or "
                 "substantial portions of the Software.")
MIT_DISCLAIMER = "THE SOFTWARE IS PROVIDED \"AS IS\", WITHOUT WARRANTY OF ANY KIND"


def _text(name: str) -> str:
    path = REPO / name
    assert path.is_file(), f"{name} is missing"
    return path.read_text(encoding="utf-8")


def _words(text: str) -> str:
    return " ".join(text.split())


def _project_value(key: str) -> str:
    """A string value of pyproject.toml's [project] table (`key = "..."` or `key = { text = "..." }`)."""
    project = _text("pyproject.toml").split("[project]", 1)[1].split("\n[", 1)[0]
    match = re.search(rf'^{re.escape(key)}\s*=\s*(?:\{{\s*text\s*=\s*)?"([^"]+)"', project, re.MULTILINE)
    assert match, f"pyproject.toml's [project] has no {key}"
    return match.group(1)


def _cff_top_level(key: str) -> str:
    """The value of a top-level `key: value` line of CITATION.cff, quotes removed."""
    match = re.search(rf"^{re.escape(key)}:\s*(.+?)\s*$", _text("CITATION.cff"), re.MULTILINE)
    assert match, f"CITATION.cff has no top-level {key}"
    return match.group(1).strip("\"'")


def _cff_arxiv_ids() -> set[str]:
    references = _text("CITATION.cff").split("\nreferences:\n", 1)
    assert len(references) == 2, "CITATION.cff has no top-level references"
    return set(ARXIV_ID.findall(references[1]))


def test_license_is_mit_as_pyproject_says() -> None:
    assert _project_value("license") == "MIT"
    text = _words(_text("LICENSE"))
    assert text.startswith("MIT License")
    assert re.search(r"Copyright \(c\) \d{4} \S", text), "LICENSE names no year and holder"
    for clause in (MIT_GRANT, MIT_CONDITION, MIT_DISCLAIMER):
        assert clause in text


def test_citation_matches_pyproject() -> None:
    assert _cff_top_level("cff-version") == "1.2.0"
    assert _cff_top_level("version") == _project_value("version")
    assert _cff_top_level("license") == _project_value("license")


def test_citation_cites_the_papers_the_code_implements() -> None:
    missing = CORE_ARXIV_IDS - _cff_arxiv_ids()
    assert not missing, f"CITATION.cff's references lack arXiv:{sorted(missing)}"


def test_every_cited_paper_is_in_docs_references() -> None:
    cited = _cff_arxiv_ids()
    listed = set(ARXIV_ID.findall(_text("docs/references.md")))
    assert cited, "CITATION.cff cites no arXiv identifier"
    assert not cited - listed, f"docs/references.md lacks arXiv:{sorted(cited - listed)}"


def test_changelog_has_an_unreleased_section() -> None:
    headings = re.findall(r"^##\s+\[?([^\]\n]+)", _text("CHANGELOG.md"), re.MULTILINE)
    assert headings and headings[0].strip() == "Unreleased", f"CHANGELOG.md's first section is {headings[:1]}"
