"""The layering CONTRIBUTING.md states, checked on the source: imports only go down, no module reaches another's
private names, derivations/ never imports torch or ddpm, and the application layers' functions stay small.

The figures come from `tools/architecture.py` (loaded from its file: tools/ is not part of the library).
"""

from __future__ import annotations

import ast
import importlib.util
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
while not (ROOT / "pyproject.toml").exists():  # the repository root, wherever this file sits under tests/
    ROOT = ROOT.parent

# CONTRIBUTING.md, "Layout and layers": a module may import its own layer and the ones below.
LAYERS = {"ddpm.runtime": 0, "ddpm.core": 1, "ddpm.images": 2, "ddpm.training": 3, "ddpm.evaluation": 4,
          "ddpm.conformance": 5, "ddpm.studies": 6, "ddpm.cli": 7, "ddpm.__main__": 7, "ddpm": 0}
APPLICATION = ("ddpm.runtime", "ddpm.images", "ddpm.training", "ddpm.evaluation", "ddpm.studies", "ddpm.cli")
MAX_LINES, MAX_PARAMETERS = 60, 8


def _tool():
    spec = importlib.util.spec_from_file_location("architecture_tool", ROOT / "tools" / "architecture.py")
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def layer(module: str) -> int | None:
    """The layer of a ddpm module (its longest matching package prefix), None outside ddpm."""
    parts = module.split(".")
    for n in range(len(parts), 0, -1):
        prefix = ".".join(parts[:n])
        if prefix in LAYERS:
            return LAYERS[prefix]
    return None


def test_layer_of_names_the_package():
    assert layer("ddpm.core.samplers") == 1 and layer("ddpm.studies.bench") == 6 and layer("ddpm") == 0
    assert layer("numpy") is None


def test_imports_only_go_down():
    tool = _tool()
    upward = []
    for path in tool.python_files("ddpm"):
        own = layer(tool.module_name(path))
        for target in tool.imports(path):
            other = layer(target) if target.startswith("ddpm") else None
            if other is not None and own is not None and other > own:
                upward.append(f"{tool.module_name(path)} (layer {own}) imports {target} (layer {other})")
    assert not upward, "\n".join(sorted(set(upward)))


def test_only_the_conformance_suite_imports_derivations_and_derivations_import_no_torch():
    tool = _tool()
    wrong = [f"{tool.module_name(p)} imports derivations" for p in tool.python_files("ddpm")
             if not tool.module_name(p).startswith("ddpm.conformance")
             and any(name.split(".")[0] == "derivations" for name in tool.imports(p))]
    wrong += [f"{tool.module_name(p)} imports {name}" for p in tool.python_files("derivations")
              for name in tool.imports(p) if name.split(".")[0] in ("torch", "ddpm")]
    assert not wrong, "\n".join(wrong)


def test_no_module_uses_another_modules_private_names():
    tool = _tool()
    uses = [use for top in ("ddpm", "derivations") for path in tool.python_files(top)
            for use in tool.private_uses(path)]
    assert not uses, "\n".join(f"{u.module}:{u.line} {u.name}" for u in uses)


def test_tests_say_why_they_reach_a_private_name():
    tool = _tool()
    silent = [f"{tool.module_name(p)}:{u.line} {u.name}" for p in tool.python_files("tests")
              for u in tool.private_uses(p) if not tool.explained(p, u)]
    assert not silent, "a test reaches a private name without a `# private: why` comment:\n" + "\n".join(silent)


def test_private_uses_finds_an_import_and_an_attribute(tmp_path, monkeypatch):
    tool = _tool()
    source = tmp_path / "ddpm" / "demo.py"
    source.parent.mkdir()
    source.write_text("from ddpm.other import _hidden\nimport torch\n\n\ndef f(d):\n"
                      "    torch._foreach_add_([], 1)\n    return d._secret + _hidden\n")
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    assert [(u.line, u.name) for u in tool.private_uses(source)] == [(1, "_hidden"), (7, "_secret")]


@pytest.mark.parametrize("limit", ["lines", "parameters"])
def test_application_functions_are_small(limit):
    tool = _tool()
    found = []
    for path in tool.python_files("ddpm"):
        if not tool.module_name(path).startswith(APPLICATION):
            continue
        for f in tool.functions(path):
            value, cap = (f.lines, MAX_LINES) if limit == "lines" else (f.parameters, MAX_PARAMETERS)
            if value > cap:
                found.append(f"{f.module}.{f.name} (line {f.line}): {value} {limit}")
    assert not found, f"over {MAX_LINES} lines / {MAX_PARAMETERS} parameters (CONTRIBUTING.md, Orchestrators):\n" + \
        "\n".join(found)


def test_functions_measures_span_and_parameters(tmp_path, monkeypatch):
    tool = _tool()
    source = tmp_path / "ddpm" / "demo.py"
    source.parent.mkdir()
    source.write_text("class A:\n    @staticmethod\n    def f(a, b, *c, d=1, **e):\n        return a\n")
    monkeypatch.setattr(tool, "ROOT", tmp_path)
    (f,) = tool.functions(source)
    assert (f.module, f.name, f.line, f.lines, f.parameters) == ("ddpm.demo", "f", 2, 3, 5)
    assert ast.parse(source.read_text()) is not None
