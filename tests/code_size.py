"""Measure the package: modules over 400 lines, functions over 60, and function names defined twice.

    python tests/code_size.py [folder ...]      (default: workflow/)

Prints one line per finding and exits 1 if there is any.
"""

from __future__ import annotations

import ast
import sys
from collections import defaultdict
from pathlib import Path

MAX_MODULE_LINES = 400
MAX_FUNCTION_LINES = 60
REPO = Path(__file__).resolve().parents[1]


def shown(path: Path) -> str:
    return str(path.relative_to(REPO)) if path.is_relative_to(REPO) else str(path)


def python_files(folders: list[Path]) -> list[Path]:
    return sorted(path for folder in folders for path in folder.rglob("*.py"))


def long_modules(files: list[Path]) -> list[str]:
    """Modules longer than MAX_MODULE_LINES."""
    found = []
    for path in files:
        lines = len(path.read_text().splitlines())
        if lines > MAX_MODULE_LINES:
            found.append(f"{shown(path)}: module of {lines} lines (at most {MAX_MODULE_LINES})")
    return found


def functions(path: Path):
    """(node, is a module-level function) for every function and method of a module."""
    tree = ast.parse(path.read_text())
    top = {id(node) for node in tree.body}
    for node in ast.walk(tree):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            yield node, id(node) in top


def long_functions(files: list[Path]) -> list[str]:
    """Functions and methods longer than MAX_FUNCTION_LINES, from `def` to their last line."""
    found = []
    for path in files:
        for node, _ in functions(path):
            lines = node.end_lineno - node.lineno + 1
            if lines > MAX_FUNCTION_LINES:
                found.append(f"{shown(path)}:{node.lineno}: {node.name} has {lines} lines "
                             f"(at most {MAX_FUNCTION_LINES})")
    return found


def shared_names(files: list[Path]) -> list[str]:
    """Public module-level function names defined in more than one module, except where the modules
    are siblings of one folder implementing one interface (each data source's `open_catalogue`)."""
    where = defaultdict(list)
    for path in files:
        for node, top_level in functions(path):
            if top_level and not node.name.startswith("_"):
                where[node.name].append(path)
    return [f"{name}: defined in {', '.join(shown(p) for p in paths)}"
            for name, paths in sorted(where.items()) if len({p.parent for p in paths}) > 1]


def findings(folders: list[Path]) -> list[str]:
    files = python_files(folders)
    return long_modules(files) + long_functions(files) + shared_names(files)


def main(argv: list[str]) -> int:
    folders = [Path(arg).resolve() for arg in argv] or [REPO / "workflow"]
    problems = findings(folders)
    print("\n".join(problems) if problems else f"{len(python_files(folders))} modules: none over "
          f"{MAX_MODULE_LINES} lines, no function over {MAX_FUNCTION_LINES}, no function name defined twice")
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
