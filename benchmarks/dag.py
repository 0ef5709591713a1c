"""Dry-run time of the workflow for grids of 100, 1,000 and 10,000 cells.

Usage: python benchmarks/dag.py [--sizes 100 1000 10000]

Each grid is the digits dataset with (batch size x lr x seed) chosen to give
the requested number of cells; `snakemake -n` runs in an empty temporary
folder, so every job is planned. Target: under 10 s for 1,000 cells and
roughly linear growth.
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
SHAPES = {100: (5, 4, 5), 1000: (10, 10, 10), 10000: (10, 10, 100)}  # batch sizes, lrs, seeds


def study(cells: int) -> dict:
    batch_sizes, lrs, seeds = SHAPES[cells]
    return {
        "study": f"dag-{cells}",
        "datasets": {"digits": {"source": "digits"}},
        "grid": {
            "dataset": ["digits"], "model": ["resnet18"], "resolution": [32],
            "batch_size": [8 * (i + 1) for i in range(batch_sizes)],
            "lr": [10 ** -(1 + i / 4) for i in range(lrs)],
            "optimizer": ["sgd"], "seed": list(range(seeds)), "weights": ["none"],
        },
    }


def dry_run_seconds(cells: int) -> float:
    with tempfile.TemporaryDirectory() as tmp:
        configfile = Path(tmp) / "study.yaml"
        configfile.write_text(yaml.safe_dump(study(cells)))
        start = time.perf_counter()
        subprocess.run(
            [sys.executable, "-m", "snakemake", "-n", "--quiet", "all", "--snakefile", str(REPO / "Snakefile"),
             "--directory", tmp, "--configfile", str(configfile)],
            check=True, capture_output=True,
        )
        return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=sorted(SHAPES), choices=sorted(SHAPES))
    args = parser.parse_args()
    print("| cells | dry run (s) | s per 1,000 cells |")
    print("| ---: | ---: | ---: |")
    for cells in args.sizes:
        seconds = dry_run_seconds(cells)
        print(f"| {cells:,} | {seconds:.1f} | {seconds / cells * 1000:.1f} |", flush=True)


if __name__ == "__main__":
    main()
