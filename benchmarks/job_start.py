"""A training job's start: the seconds its imports take beyond `import torch, torchvision`.

What `python -m workflow train` imports before it trains: workflow.cli and the modules cmd_train (and
the CLI functions it calls) import, read from workflow/cli.py. Each set is imported in a fresh
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
    """workflow.cli and the workflow modules cmd_train and the cli functions it calls import."""
    tree = ast.parse((repo / "workflow" / "cli.py").read_text())
    functions = {node.name: node for node in tree.body if isinstance(node, ast.FunctionDef)}
    seen, todo, modules = set(), ["cmd_train"], {"workflow.cli"}
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        for node in ast.walk(functions[name]):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("workflow"):
                modules.add(node.module)
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id in functions:
                todo.append(node.func.id)
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
