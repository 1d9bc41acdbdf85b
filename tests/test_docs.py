"""The user pages in docs/: their code runs and the output they show is what the code prints.

Every ```python block of a page runs in order in one namespace per page (a later block may use what an earlier one
of the same page defined; pages never share one), from the repository root (where a reader runs them), and none
may raise. The conformance guide's example adapter (the
block after its `<!-- example-adapter -->` marker) is saved as a module and run through `python -m ddpm conform`;
the lines the guide shows after `<!-- example-output -->` must be what that run prints, timings aside.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from ddpm import cli

DOCS = Path(__file__).resolve().parents[1] / "docs"
PAGES = sorted(DOCS.glob("*.md"))
BLOCK = re.compile(r"^```python\n(.*?)^```", re.MULTILINE | re.DOTALL)
SECONDS = re.compile(r"; \d+(\.\d+)? s\)$")  # the run's time at the end of a verdict line


def python_blocks(page: Path) -> list[str]:
    return BLOCK.findall(page.read_text())


def block_after(page: Path, marker: str, language: str) -> str:
    """The first ```language block after `marker` in the page."""
    text = page.read_text()
    assert marker in text, f"{page.name} has no {marker}"
    return text.split(marker, 1)[1].split(f"```{language}\n", 1)[1].split("```", 1)[0]


def test_the_pages_exist_and_have_examples():
    assert {p.name for p in PAGES} >= {"conventions.md", "reports.md", "conformance.md"}
    assert python_blocks(DOCS / "conventions.md") and python_blocks(DOCS / "conformance.md")


@pytest.mark.parametrize("page", PAGES, ids=[p.name for p in PAGES])
def test_python_blocks_run(page, monkeypatch):
    monkeypatch.chdir(DOCS.parent)
    namespace: dict = {"__name__": f"docs_{page.stem}"}
    for number, block in enumerate(python_blocks(page), start=1):
        code = compile(block, f"{page.name} (python block {number})", "exec")
        exec(code, namespace)  # noqa: S102  the page's own examples, run as a reader would


def test_conformance_example_output_matches_a_run(tmp_path, monkeypatch, capsys):
    page = DOCS / "conformance.md"
    (tmp_path / "my_ddpm_adapter.py").write_text(block_after(page, "<!-- example-adapter -->", "python"))
    monkeypatch.syspath_prepend(str(tmp_path))
    shown = block_after(page, "<!-- example-output -->", "text").strip().splitlines()
    command, *expected = shown
    assert command.startswith("$ python -m ddpm conform ")
    args = command.removeprefix("$ python -m ddpm ").split()
    assert "--no-progress" in args and "my_ddpm_adapter:factory" in args
    out_dir = tmp_path / "conformance"
    args = [str(out_dir) if a == "conformance/" else a for a in args]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == len(expected), printed
    for got, want in zip(printed, expected, strict=True):
        assert SECONDS.sub(")", got.replace(str(out_dir), "conformance")) == SECONDS.sub(")", want)
    assert (out_dir / "conformance.md").is_file()
