"""Figures of the code's shape: modules per package, the longest functions, the widest signatures, private names
used across modules, and the import edges between packages.

    python tools/architecture.py            # a Markdown summary of ddpm/, derivations/ and tests/
    python tools/architecture.py --json     # the same figures as JSON

`tests/methods/test_architecture.py` holds the library to the limits CONTRIBUTING.md states, using the functions here.
"""

from __future__ import annotations

import argparse
import ast
import json
import sys
from collections import Counter
from dataclasses import asdict, dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


@dataclass(frozen=True)
class Function:
    """One function or method: where it is, how many lines its body spans, how many parameters it takes."""

    module: str
    name: str
    line: int
    lines: int
    parameters: int


@dataclass(frozen=True)
class PrivateUse:
    """A use of an underscored name that the using module does not define."""

    module: str
    line: int
    name: str


def module_name(path: Path) -> str:
    """'ddpm.core.samplers' for ROOT/ddpm/core/samplers.py (packages end without '.__init__')."""
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def python_files(top: str) -> list[Path]:
    return sorted(p for p in (ROOT / top).rglob("*.py") if "__pycache__" not in p.parts)


def _parameter_count(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    args = node.args
    names = [a.arg for a in args.posonlyargs + args.args + args.kwonlyargs]
    names += [a.arg for a in (args.vararg, args.kwarg) if a is not None]
    return len([n for n in names if n not in ("self", "cls")])


def functions(path: Path) -> list[Function]:
    """Every def in the file (nested ones too), with its line span from `def` to its last line."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    out = []
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            start = min([node.lineno] + [d.lineno for d in node.decorator_list])
            out.append(Function(module_name(path), node.name, start, node.end_lineno - start + 1,
                                _parameter_count(node)))
    return out


def _is_private(name: str) -> bool:
    return name.startswith("_") and not (name.startswith("__") and name.endswith("__"))


def _defined_names(tree: ast.AST) -> set[str]:
    """Names a module defines: functions, classes, assignments and attributes set on self/cls/objects."""
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, ast.Attribute) and isinstance(node.ctx, ast.Store):
            names.add(node.attr)
        elif isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name):
            names.add(node.target.id)
        elif isinstance(node, ast.arg):
            names.add(node.arg)
    return names


THIRD_PARTY = ("torch", "np", "numpy", "sp", "sympy", "sys", "os")


def _third_party(node: ast.expr) -> bool:
    """True for an attribute of a third-party or standard module (`torch._foreach_lerp_`): that library's own
    private API, a choice the using line explains, not a project module reaching into another."""
    while isinstance(node, ast.Attribute):
        node = node.value
    return isinstance(node, ast.Name) and node.id in THIRD_PARTY


def private_uses(path: Path) -> list[PrivateUse]:
    """Underscored names imported from another module, or reached as an attribute the module does not define.

    Attributes of third-party modules (`torch._foreach_lerp_`) are not counted: see `_third_party`.
    """
    tree = ast.parse(path.read_text(encoding="utf-8"))
    own = _defined_names(tree)
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            out += [PrivateUse(module_name(path), node.lineno, alias.name) for alias in node.names
                    if _is_private(alias.name)]
            if node.module and any(_is_private(part) for part in node.module.split(".")):
                out.append(PrivateUse(module_name(path), node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [PrivateUse(module_name(path), node.lineno, alias.name) for alias in node.names
                    if any(_is_private(part) for part in alias.name.split("."))]
        elif (isinstance(node, ast.Attribute) and _is_private(node.attr) and node.attr not in own
              and not _third_party(node.value)):
            out.append(PrivateUse(module_name(path), node.lineno, node.attr))
    return out


def explained(path: Path, use: PrivateUse, reach: int = 4) -> bool:
    """True when the line of `use`, or one of the `reach` lines above it, says why in a `# private` comment."""
    lines = path.read_text(encoding="utf-8").splitlines()
    return any("# private" in line for line in lines[max(0, use.line - 1 - reach):use.line])


def imports(path: Path) -> set[str]:
    """The modules a file imports, absolute (relative imports resolved)."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module_name(path).split(".")
    if path.name != "__init__.py":
        package = package[:-1]
    out = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out |= {alias.name for alias in node.names}
        elif isinstance(node, ast.ImportFrom):
            base = package[:len(package) - node.level + 1] if node.level else []
            target = ".".join(base + ([node.module] if node.module else []))
            out.add(target)
            out |= {f"{target}.{alias.name}" for alias in node.names}
    return out


def package_of(module: str, depth: int = 2) -> str:
    return ".".join(module.split(".")[:depth])


def summary(tops: tuple[str, ...] = ("ddpm", "derivations", "tests", "tools")) -> dict:
    files = [p for top in tops for p in python_files(top)]
    modules = Counter(package_of(module_name(p)) if len(module_name(p).split(".")) > 2 else
                      module_name(p).split(".")[0] for p in files)
    everything = [f for p in files for f in functions(p)]
    library = [f for f in everything if f.module.split(".")[0] in ("ddpm", "derivations")]
    private = [u for p in files if module_name(p).split(".")[0] in ("ddpm", "derivations") for u in private_uses(p)]
    test_private = [u for p in files if module_name(p).split(".")[0] == "tests" for u in private_uses(p)]
    unexplained = [u for p in files if module_name(p).split(".")[0] == "tests" for u in private_uses(p)
                   if not explained(p, u)]
    return {
        "modules_per_package": dict(sorted(modules.items())),
        "lines_per_top": {top: sum(len(p.read_text(encoding="utf-8").splitlines()) for p in python_files(top))
                          for top in tops},
        "longest_functions": [asdict(f) for f in sorted(library, key=lambda f: -f.lines)[:12]],
        "functions_over_60_lines": len([f for f in library if f.lines > 60]),
        "widest_signatures": [asdict(f) for f in sorted(library, key=lambda f: -f.parameters)[:12]],
        "functions_over_8_parameters": len([f for f in library if f.parameters > 8]),
        "private_uses_across_modules": [asdict(u) for u in private],
        "private_uses_in_tests": len(test_private),
        "private_uses_in_tests_unexplained": [asdict(u) for u in unexplained],
    }


def markdown(figures: dict) -> str:
    lines = ["| package | modules |", "|---|---|"]
    lines += [f"| {name} | {count} |" for name, count in figures["modules_per_package"].items()]
    lines += ["", "lines: " + ", ".join(f"{k} {v}" for k, v in figures["lines_per_top"].items()), ""]
    lines += [f"functions over 60 lines: {figures['functions_over_60_lines']}; longest:"]
    lines += [f"- {f['module']}.{f['name']}: {f['lines']} lines" for f in figures["longest_functions"]]
    lines += ["", f"functions over 8 parameters: {figures['functions_over_8_parameters']}; widest:"]
    lines += [f"- {f['module']}.{f['name']}: {f['parameters']} parameters" for f in figures["widest_signatures"]]
    uses = figures["private_uses_across_modules"]
    lines += ["", f"private names used across modules (ddpm/, derivations/): {len(uses)}"]
    lines += [f"- {u['module']}:{u['line']} {u['name']}" for u in uses[:40]]
    unexplained = figures["private_uses_in_tests_unexplained"]
    lines += ["", f"private names used in tests: {figures['private_uses_in_tests']}, {len(unexplained)} without a "
              "`# private: why` comment"]
    lines += [f"- {u['module']}:{u['line']} {u['name']}" for u in unexplained]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    figures = summary()
    print(json.dumps(figures, indent=1) if args.json else markdown(figures))
    return 0


if __name__ == "__main__":
    sys.exit(main())
