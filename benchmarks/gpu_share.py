"""Benchmark: total cells per hour with 1, 2 and 4 cells per GPU (`resources.slots_per_gpu`).

The cells are the default study's CIFAR-10 cells (config.yaml: MobileNetV2 at
160x160, RMSprop, batch sizes 32 to 512, the new head and then every layer),
made short: each stage runs `--epochs` epochs over a generated CIFAR-10-shaped
set (`--images` random 32x32 images packed as cifar-10-python.tar.gz and
prepared by the workflow's own steps into shards at the resolution), from
random weights (no download; memory and time are those of ImageNet's weights),
`--seeds` cells per batch size. Every cell is a real training job
(`python -m workflow train`) and every combination gets a real memory probe
first (`python -m workflow probe`, as the probe_memory rule runs it).

For each K in `--per-gpu`, all cells run through a small scheduler that does
what `snakemake --resources gpu_slots=<GPUs x K>` does: it starts a waiting
cell (first fit, in the study's order) as soon as the slots it needs
(workflow.gpu.slots.cell_slots, the train rule's `gpu_slots`) are free; each job
then claims its slots through the real device locks and caps its memory to
its share. Cells per hour = cells / wall time from the first start to the
last end. K = 1 is the workflow without slots: one cell per GPU.

    python benchmarks/gpu_share.py [--per-gpu 1 2 4] [--images 12000] [--epochs 1] [--seeds 2] [--json out.json]

On a machine without a GPU it runs too (tests/test_benchmark.py runs a tiny
version with fake devices), but the probes measure nothing there, so every
cell takes a whole (fake) device.
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow.study.config import load_config  # noqa: E402
from workflow.gpu.devices import GPU_LIST_ENV, LOCK_DIR_ENV, local_gpus  # noqa: E402
from workflow.data.download import file_digest  # noqa: E402
from workflow.data.prepare import prepare_dataset  # noqa: E402
from workflow.gpu.slots import SlotSettings, cell_slots, probe_name, probe_spec  # noqa: E402
from workflow.study.grid import build_study  # noqa: E402


def generated_cifar10(folder: Path, images: int) -> dict:
    """A CIFAR-10 python tarball of random images (benchmarks/loader.py's) and the dataset entry that reads it."""
    spec = importlib.util.spec_from_file_location("tlsweep_bench_loader", REPO / "benchmarks" / "loader.py")
    loader = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(loader)
    raw = folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    tarball = raw / "cifar-10-python.tar.gz"
    loader.cifar_tarball(tarball, images)
    return {"source": "cifar10", "path": str(raw), "checksums": {tarball.name: file_digest(tarball, "md5")},
            "shards": 1}


def bench_cells(args, dataset: dict, folder: Path) -> tuple[Path, list]:
    """The default study's CIFAR-10 cells, short and from random weights: the study file jobs are given,
    and its cells."""
    config = yaml.safe_load((REPO / "config.yaml").read_text())
    config["datasets"] = {"cifar10": dataset}
    config["grid"].update(dataset=["cifar10"], resolution=[args.resolution], weights=["none"],
                          seed=list(range(args.seeds)))
    if args.batch_sizes:
        config["grid"]["batch_size"] = args.batch_sizes
    for stage in config["training"]["stages"]:
        stage["epochs"] = args.epochs
    config.update(study="gpu-share", results_dir=str(folder / "results"), data_dir=str(folder / "data"))
    path = folder / "study.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path, build_study(load_config(path)).grid_cells


def job_env(args, locks: Path) -> dict:
    env = {k: v for k, v in os.environ.items() if k != "CUDA_VISIBLE_DEVICES"}
    env.update({GPU_LIST_ENV: ",".join(args.gpus), LOCK_DIR_ENV: str(locks),
                "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))})
    return env


def run_probes(study_file: Path, cells: list, probes: Path, env: dict, log) -> dict:
    """One real probe per combination the cells need; returns {probe name: record}."""
    records = {}
    for cell in cells:
        spec = probe_spec(cell)
        name = probe_name(spec)
        if name in records:
            continue
        out = probes / f"{name}.json"
        subprocess.run([sys.executable, "-m", "workflow", "probe", "--configfile", str(study_file), "--probe", name,
                        "--out", str(out)], env=env, check=True, capture_output=True, text=True)
        records[name] = json.loads(out.read_text())
        log(f"  probe {name}: peak {records[name]['peak_mb']} MB of {records[name]['device_mb']} MB "
            f"({records[name]['device']})")
    return records


def run_cells(study_file: Path, cells: list, shard: Path, per_gpu: int, args, probes: Path, out: Path, log) -> dict:
    """Every cell as a training job, at most GPUs x `per_gpu` slots at once; what it took."""
    settings = SlotSettings(per_gpu=per_gpu, headroom=args.headroom, probe_dir=probes)
    env = job_env(args, out / "locks")
    capacity = per_gpu * len(args.gpus)
    waiting = [(cell, cell_slots(cell, shard, settings)) for cell in cells]
    running, done = [], []
    started = time.perf_counter()
    while waiting or running:
        for job in [job for job in running if job["process"].poll() is not None]:
            running.remove(job)
            job["seconds"] = time.perf_counter() - job["start"]
            job["log"].close()
            done.append(job)
        for cell, slots in list(waiting):
            if slots <= capacity - sum(job["slots"] for job in running):
                cell_dir = out / "cells" / cell.id
                cell_dir.mkdir(parents=True, exist_ok=True)
                handle = open(cell_dir / "train.log", "w")
                process = subprocess.Popen(
                    [sys.executable, "-m", "workflow", "train", "--configfile", str(study_file), "--cell", cell.id,
                     "--manifest", str(shard),
                     "--out", str(cell_dir), "--threads", str(args.threads), "--gpu-slots", str(slots),
                     "--slots-per-gpu", str(per_gpu), "--gpu-headroom", repr(args.headroom)],
                    env=env, stdout=handle, stderr=subprocess.STDOUT)
                running.append({"cell": cell, "slots": slots, "process": process, "start": time.perf_counter(),
                                "log": handle, "dir": cell_dir})
                waiting.remove((cell, slots))
        time.sleep(0.1)
    wall = time.perf_counter() - started
    statuses, slots_by_batch = {}, {}
    for job in done:
        metrics_path = job["dir"] / "metrics.json"
        if metrics_path.exists():
            status = json.loads(metrics_path.read_text())["status"]
        else:
            status = f"exit {job['process'].returncode}"
        statuses[status] = statuses.get(status, 0) + 1
        slots_by_batch[job["cell"].batch_size] = job["slots"]
    result = {"per_gpu": per_gpu, "gpus": len(args.gpus), "cells": len(done), "wall_s": round(wall, 1),
              "cells_per_hour": round(len(done) / wall * 3600, 1),
              "median_cell_s": round(statistics.median(job["seconds"] for job in done), 1),
              "slots_by_batch_size": dict(sorted(slots_by_batch.items())), "statuses": statuses}
    log(f"  K={per_gpu}: {result['cells']} cells in {result['wall_s']} s = {result['cells_per_hour']} cells/hour "
        f"(median cell {result['median_cell_s']} s; slots by batch size {result['slots_by_batch_size']}; {statuses})")
    return result


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--per-gpu", type=int, nargs="+", default=[1, 2, 4], help="slots per GPU (K) to compare")
    parser.add_argument("--images", type=int, default=12000, help="generated 32x32 images (5/6 train, 1/6 test)")
    parser.add_argument("--resolution", type=int, default=160)
    parser.add_argument("--batch-sizes", type=int, nargs="+", help="default: the default study's (32 ... 512)")
    parser.add_argument("--epochs", type=int, default=1, help="epochs of each of the two stages")
    parser.add_argument("--seeds", type=int, default=2, help="cells per batch size")
    parser.add_argument("--gpus", help="comma-separated GPU indices (default: every local GPU)")
    parser.add_argument("--headroom", type=float, default=0.9, help="resources.gpu_headroom")
    parser.add_argument("--threads", type=int, default=2, help="CPU threads per training job")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="where data and cells go (removed after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    args.gpus = args.gpus.split(",") if args.gpus else local_gpus()
    if not args.gpus:
        parser.error("no GPU found; name fake devices with --gpus 0 to try it on the CPU")
    return args


def main(argv=None) -> dict:
    args = parse_args(argv)
    log = lambda message: print(message, flush=True)  # noqa: E731
    folder = Path(tempfile.mkdtemp(prefix="tlsweep-gpu-share-", dir=args.tmp))
    try:
        dataset = generated_cifar10(folder, args.images)
        study_file, cells = bench_cells(args, dataset, folder)
        shard = folder / "data" / "cifar10" / f"r{args.resolution}.json"
        start = time.perf_counter()
        manifest = prepare_dataset("cifar10", dataset, args.resolution, shard.with_suffix("") / "shard-0-of-1.h5",
                                   shard, raw_dir=dataset["path"])
        log(f"prepared {manifest['totals']} images at {args.resolution}x{args.resolution} in "
            f"{time.perf_counter() - start:.0f} s; {len(cells)} cells, GPUs {args.gpus}")
        probes = folder / "probes"
        records = run_probes(study_file, cells, probes, job_env(args, folder / "locks"), log)
        device = next(iter(records.values()))["device"]
        import torch

        result = {"device": device, "torch": torch.__version__, "python": platform.python_version(),
                  "resolution": args.resolution, "images": manifest["totals"], "epochs_per_stage": args.epochs,
                  "probes": {name: {k: r[k] for k in ("peak_mb", "reserved_mb", "device_mb")}
                             for name, r in records.items()},
                  "runs": [run_cells(study_file, cells, shard, k, args, probes, folder / f"k{k}", log) for k in args.per_gpu]}
        print(f"\n{device}, {len(args.gpus)} GPU(s), {len(cells)} cells, {args.epochs} epoch(s) per stage")
        print("| cells per GPU (K) | cells | wall (s) | cells/hour | median cell (s) | slots by batch size "
              "| statuses |")
        print("| ---: | ---: | ---: | ---: | ---: | --- | --- |")
        for run in result["runs"]:
            print(f"| {run['per_gpu']} | {run['cells']} | {run['wall_s']} | {run['cells_per_hour']} | "
                  f"{run['median_cell_s']} | {run['slots_by_batch_size']} | {run['statuses']} |")
        if args.json:
            args.json.write_text(json.dumps(result, indent=2) + "\n")
        return result
    finally:
        shutil.rmtree(folder)


if __name__ == "__main__":
    main()
