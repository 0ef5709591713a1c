"""The layering docs/architecture.md draws is the layering the code has.

The subpackage table of docs/architecture.md is the one source: every `workflow.…` name in backticks
in a row's "may import" cell is what the modules of that row may import (a subpackage, or one module
of it), "everything" lets a row import anything, and nothing else is allowed. The tests read that
table and check it against the code both ways: statically, every import of every module (at the top
or inside a function) against its row, and every name of a row used by some import; and in a fresh
interpreter per subpackage, importing every module of it, the `workflow` packages it pulls in
against what its row allows, directly or through the rows of what it may import. Besides: the
imports form no cycle (an import inside a function is there to keep a heavy library lazy, never to
dodge a cycle), `workflow.study` imports no torch, pandas or snakemake, the results no torch, and a
training job (`python -m workflow train`) no pandas, pyarrow, scipy or mlflow.
"""

from __future__ import annotations

import ast
import importlib.util
import json
import re
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import REPO

DOC = REPO / "docs" / "architecture.md"
PACKAGE = REPO / "workflow"
HEADER = "| subpackage | owns | may import |"
# Third-party packages a part must never load, on top of the table (whose names are workflow's own).
NEVER = {
    "workflow.study": {"torch", "torchvision", "pandas", "snakemake"},  # the Snakefile parses fast
    "workflow.results": {"torch", "torchvision"},
    "workflow.core": {"torch", "torchvision", "pandas", "numpy"},
}
NOT_IN_TRAINING = {"pandas", "pyarrow", "scipy", "mlflow", "sklearn", "optuna", "altair", "snakemake"}


def module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


MODULES = {module_name(path): path for path in sorted(PACKAGE.rglob("*.py"))}


def unit_of(module: str) -> str:
    """The part of the package a module belongs to: its subpackage (workflow.train) or itself (workflow.atomic)."""
    return ".".join(module.split(".")[:2])


UNITS = sorted({unit_of(module) for module in MODULES if module != "workflow"})


def documented_rows() -> list[tuple[list[str], list[str] | None]]:
    """(the parts a row names, the names they may import (None: everything)) for every row of the
    subpackage table of docs/architecture.md."""
    lines = DOC.read_text().splitlines()
    rows = []
    for line in lines[lines.index(HEADER) + 2:]:
        if not line.startswith("|"):
            break
        cells = [cell.strip() for cell in re.split(r"\s\|\s", line.strip().strip("|"))]
        assert len(cells) == 3, f"a row of the subpackage table has {len(cells)} cells: {line[:80]}"
        where, _, may = cells
        parts = ["workflow." + path.removeprefix("workflow/").removesuffix("/").removesuffix(".py").replace("/", ".")
                 for path in re.findall(r"`([\w/]+(?:\.py|/))`", where)]
        rows.append((parts, None if "everything" in may else re.findall(r"`(workflow(?:\.\w+)+)`", may)))
    return rows


ROWS = documented_rows()
TABLE = {part: allowed for parts, allowed in ROWS for part in parts}


def permitted(name: str, allowed: list[str] | None) -> bool:
    return allowed is None or any(name == entry or name.startswith(entry + ".") for entry in allowed)


def imports(module: str, with_type_checking: bool = True) -> list[tuple[str, bool]]:
    """(workflow module or package, inside a function) for every import of `module`."""
    path = MODULES[module]
    package = module if path.name == "__init__.py" else module.rsplit(".", 1)[0]
    found = []

    def visit(node, in_function: bool) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and "TYPE_CHECKING" in ast.unparse(child.test) and not with_type_checking:
                continue
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef))
            if isinstance(child, ast.Import):
                found.extend((alias.name, inner) for alias in child.names if alias.name.startswith("workflow"))
            elif isinstance(child, ast.ImportFrom):
                base = child.module or ""
                if child.level:
                    parts = package.split(".")[:len(package.split(".")) - child.level + 1]
                    base = ".".join(parts + ([base] if base else []))
                if base.startswith("workflow"):
                    found.extend((f"{base}.{alias.name}" if f"{base}.{alias.name}" in MODULES else base, inner)
                                 for alias in child.names)
            visit(child, inner)

    visit(ast.parse(path.read_text()), False)
    return found


def test_the_table_names_every_part_of_the_package():
    assert sorted(TABLE) == UNITS
    unknown = [name for allowed in TABLE.values() for name in allowed or () if name not in MODULES]
    assert unknown == []  # every name in the table is a module or subpackage that exists


def test_every_import_is_one_the_table_allows_and_the_table_allows_no_more():
    wrong, used = [], set()
    for module in MODULES:
        if module == "workflow":
            continue
        unit = unit_of(module)
        for name, _ in imports(module):
            if unit_of(name) == unit:
                continue
            if not permitted(name, TABLE[unit]):
                wrong.append(f"{module} imports {name}, which the row of {unit} does not name")
            used.update((unit, entry) for entry in TABLE[unit] or () if permitted(name, [entry]))
    assert wrong == []
    unused = [f"{', '.join(parts)} may import {entry}, but nothing there does" for parts, allowed in ROWS
              for entry in allowed or () if not any((part, entry) in used for part in parts)]
    assert unused == []


def test_no_import_cycle_not_even_through_an_import_inside_a_function():
    graph = {module: {name for name, _ in imports(module, with_type_checking=False)} - {module}
             for module in MODULES}
    cycles, done, path = [], set(), []

    def visit(module: str) -> None:
        if module in path:
            cycles.append(" -> ".join(path[path.index(module):] + [module]))
            return
        if module in done:
            return
        path.append(module)
        for name in sorted(graph.get(module, ())):
            visit(name)
        path.pop()
        done.add(module)

    for module in sorted(graph):
        visit(module)
    assert cycles == []


def reachable(unit: str) -> set[str]:
    """The parts `unit` may pull in: itself, and through the table what its rows may import."""
    seen, todo = set(), [unit]
    while todo:
        current = todo.pop()
        if current in seen:
            continue
        seen.add(current)
        allowed = TABLE[current]
        todo.extend(UNITS if allowed is None else {unit_of(name) for name in allowed})
    return seen


def loaded_by(modules: list[str]) -> dict[str, list[str]]:
    """What importing `modules` in a fresh interpreter loads: workflow's modules and other top packages."""
    code = ("import importlib, json, sys\n"
            f"for name in {modules!r}:\n"
            "    importlib.import_module(name)\n"
            "names = sorted(sys.modules)\n"
            "print(json.dumps({'workflow': [n for n in names if n.startswith('workflow.')],\n"
            "                  'top': sorted({n.split('.')[0] for n in names})}))")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


@pytest.mark.parametrize("unit", [unit for unit in UNITS if TABLE.get(unit, []) is not None])
def test_a_part_imported_alone_pulls_in_only_what_its_row_allows(unit):
    modules = [module for module in MODULES if unit_of(module) == unit]
    loaded = loaded_by(modules)
    outside = sorted({unit_of(name) for name in loaded["workflow"]} - reachable(unit))
    assert outside == [], f"importing {unit} pulls in {outside}"
    assert sorted(NEVER.get(unit, set()) & set(loaded["top"])) == []


def test_a_training_job_imports_no_pandas_scipy_or_mlflow():
    """What `python -m workflow train` imports (benchmarks/job_start.py reads it from the source: the CLI
    and what cmd_train and the functions it calls import); tracking loads mlflow only once it is asked
    for, inside the trackers' methods."""
    spec = importlib.util.spec_from_file_location("job_start", REPO / "benchmarks" / "job_start.py")
    job_start = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(job_start)
    modules = job_start.training_imports(REPO)
    assert {"workflow.cli", "workflow.train.cell", "workflow.track.watch"} <= set(modules)
    loaded = loaded_by(modules)
    assert sorted(NOT_IN_TRAINING & set(loaded["top"])) == []
    assert not any(unit_of(name) == "workflow.results" for name in loaded["workflow"])
