"""What workflow.data may import: datasets and sources stay torch-free (the Snakefile imports them
when it parses), and nothing in it imports the training, results or GPU stages."""

import ast
import subprocess
import sys

from conftest import REPO

FORBIDDEN = ("workflow.train", "workflow.results", "workflow.gpu")


def test_datasets_and_sources_import_without_torch():
    code = ("import sys, workflow.data.datasets, workflow.data.sources; "
            "print(sorted(m for m in sys.modules if m == 'torch' or m.startswith('torch.')))")
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def imported_modules(tree: ast.Module):
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            yield from (alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.level == 0:
            yield node.module


def test_data_imports_no_later_stage():
    found = [f"{path.relative_to(REPO)}: {module}"
             for path in sorted((REPO / "workflow" / "data").rglob("*.py"))
             for module in imported_modules(ast.parse(path.read_text()))
             if any(module == stage or module.startswith(stage + ".") for stage in FORBIDDEN)]
    assert found == []
