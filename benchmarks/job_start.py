"""A training job's start: the seconds its imports take beyond `import torch, torchvision`.

What `python -m workflow train` imports before it trains: workflow.cli and the modules cmd_train (and
the package's functions it calls) import, read from the source. Each set is imported in a fresh
interpreter `--repeats` times, alternating, and timed by wall clock and by CPU time (user + system,
which a busy machine disturbs less); the medians and their difference are printed.

    .venv/bin/python benchmarks/job_start.py [--repeats 7] [--repo PATH]
"""

from __future__ import annotations

import argparse
import ast
import json
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
TORCH = "import torch, torchvision"
CPU = "\nimport resource, sys\nr = resource.getrusage(resource.RUSAGE_SELF)\nprint(r.ru_utime + r.ru_stime, file=sys.stderr)"


def training_imports(repo: Path) -> list[str]:
    """workflow.cli and the workflow modules that cmd_train, and the package's functions it calls
    (workflow.cli's own and those it imports, such as cli_common's), import when a job runs."""
    trees: dict[str, ast.Module] = {}

    def tree_of(module: str) -> ast.Module:
        if module not in trees:
            trees[module] = ast.parse((repo / (module.replace(".", "/") + ".py")).read_text())
        return trees[module]

    def function(module: str, name: str):
        """(module, the def of `name`) where `module`'s `name` is defined: in it, or where it imports it from."""
        for node in tree_of(module).body:
            if isinstance(node, ast.FunctionDef) and node.name == name:
                return module, node
            imported = isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workflow")
            if imported and name in {alias.name for alias in node.names} \
                    and (repo / (node.module.replace(".", "/") + ".py")).is_file():
                return function(node.module, name)
        return None

    seen, todo, modules = set(), [("workflow.cli", "cmd_train")], {"workflow.cli"}
    while todo:
        found = function(*todo.pop())
        if found is None or (found[0], found[1].name) in seen:
            continue
        module, node = found
        seen.add((module, node.name))
        modules.add(module)
        for inner in ast.walk(node):
            if isinstance(inner, ast.ImportFrom) and (inner.module or "").startswith("workflow"):
                modules.add(inner.module)
            elif isinstance(inner, ast.Call) and isinstance(inner.func, ast.Name):
                todo.append((module, inner.func.id))
    return sorted(modules)


def timed(code: str, repo: Path) -> tuple[float, float]:
    """(wall seconds, CPU seconds) of a fresh interpreter running `code` in `repo`."""
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", code + CPU], cwd=repo, capture_output=True, text=True, check=True)
    return time.perf_counter() - start, float(done.stderr.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> dict:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--repo", type=Path, default=REPO, help="the checkout whose training imports are timed")
    args = parser.parse_args(argv)
    modules = training_imports(args.repo)
    train = "import " + ", ".join(modules)
    runs = {"torch": [], "train": []}
    for _ in range(args.repeats):
        runs["torch"].append(timed(TORCH, args.repo))
        runs["train"].append(timed(train, args.repo))
    result = {"modules": modules, "repeats": args.repeats}
    for index, clock in enumerate(("wall", "cpu")):
        torch_s = [run[index] for run in runs["torch"]]
        train_s = [run[index] for run in runs["train"]]
        result[clock] = {"torch_s": round(statistics.median(torch_s), 2), "train_s": round(statistics.median(train_s), 2),
                         "beyond_torch_s": round(statistics.median(b - a for a, b in zip(torch_s, train_s)), 2)}
        print(f"{clock}: import torch, torchvision {result[clock]['torch_s']:.2f} s; a training job's imports "
              f"{result[clock]['train_s']:.2f} s; beyond torch {result[clock]['beyond_torch_s']:.2f} s (medians)")
    print(json.dumps(result))
    return result


if __name__ == "__main__":
    main()
