"""The demo's head stage over its grid: today's path (every epoch runs the frozen backbone over every training
and validation image) vs features once (the backbone's features computed once per model, then every cell's
head trained on them), in CPU seconds of this process (`time.process_time`: all its threads).

The grid is studies/digits-demo.yaml's (digits 5-9 at 32x32; mobilenet_v2 and resnet18; batch sizes 16 and 64;
SGD, Adam and RMSprop; each cell's `head` stage: 5 epochs), each cell trained through its head stage only
(`run_stages` to the stage's last epoch: training, validation, last.pt, history; the job's set-up and the final
evaluation, the same on both paths, are left out). The backbone starts from a checkpoint standing in for the
pretrain cell's best.pt (random weights: the cost does not depend on their values). Features once counts each
model's whole features job (`compute_features`: model built, three splits read, forward passes, file written)
plus every cell's head stage on the features. Both paths must give the same history (checked here).

    PYTHONPATH=. python benchmarks/features.py                     # the demo's grid, 12 cells
    PYTHONPATH=. python benchmarks/features.py --resolution 64     # the same grid on 64x64 images
    PYTHONPATH=. python benchmarks/features.py --models resnet18 --batch-sizes 64 --optimizers adam --epochs 1
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import shutil
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from workflow.core.cell import TrainingSettings  # noqa: E402
from workflow.data.prepare import prepare_dataset  # noqa: E402
from workflow.study.config import load_config  # noqa: E402
from workflow.study.grid import build_study  # noqa: E402
from workflow.train import epoch as epoch_module  # noqa: E402
from workflow.train.cell import run_stages  # noqa: E402
from workflow.train.features import compute_features  # noqa: E402
from workflow.train.job import open_job  # noqa: E402
from workflow.train.models import build_classifier  # noqa: E402
from workflow.train.state import resume_run, save_checkpoint  # noqa: E402

DEMO = REPO / "studies" / "digits-demo.yaml"


def quiet(*_):
    pass


def head_cells(args) -> list:
    """The demo's grid cells (those the arguments keep), each with its head stage alone (`--epochs` of it)."""
    cells = []
    for cell in build_study(load_config(DEMO)).grid_cells:
        if cell.model in args.models and cell.batch_size in args.batch_sizes and cell.optimizer in args.optimizers:
            head = {**cell.training.stages[0], "epochs": args.epochs or cell.training.stages[0]["epochs"]}
            training = TrainingSettings.from_mapping({**cell.training.as_mapping(), "stages": [head]})
            cells.append(dataclasses.replace(cell, training=training, resolution=args.resolution))
    return cells


WRITES = ("save_last", "save_checkpoint", "write_history")  # what an epoch writes: last.pt, best-so-far.pt, history


class WriteClock:
    """CPU seconds spent in an epoch's writes (the whole model's last.pt and best-so-far.pt, history.csv),
    the same on both paths: counted apart so that what the features save shows too."""

    def __init__(self):
        self.seconds = 0.0
        for name in WRITES:
            setattr(epoch_module, name, self.timed(getattr(epoch_module, name)))

    def timed(self, write):
        def run(*args, **kwargs):
            started = time.process_time()
            try:
                return write(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - started
        return run


def head_stage(cell, manifest, init, out, threads: int, clock: WriteClock, features=None) -> dict:
    """A cell's head stage: its CPU seconds (`cpu_s`, of which `writes_s` writing), history and input."""
    job = open_job(cell, manifest, out, init, threads, log=quiet, features=features)
    state, _, _ = resume_run(job)
    writes, started = clock.seconds, time.process_time()
    run_stages(job, state)
    return {"cpu_s": time.process_time() - started, "writes_s": clock.seconds - writes, "history": state.history,
            "input": job.stage_inputs[cell.training.stages[0]["name"]]["input"]}


def max_difference(today: list, once: list) -> float:
    """The largest relative difference of any epoch's losses and accuracies between the two paths."""
    keys = ("train_loss", "train_accuracy", "val_loss", "val_accuracy")
    return max(abs(a[key] - b[key]) / max(abs(a[key]), 1e-12) for a, b in zip(today, once) for key in keys)


def main(argv=None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet18"])
    p.add_argument("--batch-sizes", nargs="+", type=int, default=[16, 64])
    p.add_argument("--optimizers", nargs="+", default=["sgd", "adam", "rmsprop"])
    p.add_argument("--epochs", type=int, help="the head stage's epochs (default: the demo's, 5)")
    p.add_argument("--resolution", type=int, default=32, help="the images' size (the demo's: 32)")
    p.add_argument("--threads", type=int, default=1, help="torch threads (the demo's train_threads: 1)")
    p.add_argument("--tmp", help="scratch folder (default: a temporary one, removed afterwards)")
    p.add_argument("--json", help="write the results here")
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    cells = head_cells(args)
    scratch = Path(tempfile.mkdtemp(dir=args.tmp))
    try:
        study = build_study(load_config(DEMO))
        manifest = scratch / f"r{args.resolution}.json"
        prepare_dataset("digits-5to9", study.datasets["digits-5to9"], args.resolution, scratch / "images.h5", manifest)
        inits, features, rows = {}, {}, []
        for model in sorted({cell.model for cell in cells}):  # a stand-in for the pretrain cell's best.pt
            net, normalization = build_classifier(model, 5, "none", resolution=args.resolution)
            inits[model] = scratch / f"{model}.pt"
            save_checkpoint(inits[model], net, study.cells[cells[0].upstream], normalization, 0)
            first = next(cell for cell in cells if cell.model == model)
            started = time.process_time()
            record = compute_features(first, manifest, scratch / f"{model}.h5", init=inits[model], threads=args.threads,
                                      log=quiet)
            features[model] = {"cpu_s": round(time.process_time() - started, 2), "images": sum(record["counts"].values())}
        clock = WriteClock()
        for index, cell in enumerate(cells):
            init = inits[cell.model]
            today = head_stage(cell, manifest, init, scratch / f"today-{index}", args.threads, clock)
            once = head_stage(cell, manifest, init, scratch / f"once-{index}", args.threads, clock,
                              features=scratch / f"{cell.model}.h5")
            assert (today["input"], once["input"]) == ("images", "features"), (today["input"], once["input"])
            rows.append({"cell": cell.id, "today_cpu_s": round(today["cpu_s"], 3),
                         "features_cpu_s": round(once["cpu_s"], 3), "today_writes_s": round(today["writes_s"], 3),
                         "features_writes_s": round(once["writes_s"], 3),
                         "max_relative_difference": max_difference(today["history"], once["history"])})
    finally:
        shutil.rmtree(scratch)
    today_total = sum(row["today_cpu_s"] for row in rows)
    jobs = sum(entry["cpu_s"] for entry in features.values())
    once_total = sum(row["features_cpu_s"] for row in rows) + jobs
    writes = {path: sum(row[f"{path}_writes_s"] for row in rows) for path in ("today", "features")}
    result = {"cells": rows, "features_jobs": features, "today_cpu_s": round(today_total, 2),
              "features_once_cpu_s": round(once_total, 2), "ratio": round(today_total / once_total, 1),
              "today_writes_s": round(writes["today"], 2), "features_writes_s": round(writes["features"], 2),
              "ratio_without_writes": round((today_total - writes["today"]) / (once_total - writes["features"]), 1),
              "resolution": args.resolution, "threads": args.threads, "torch": torch.__version__}
    print(f"| path | CPU s ({len(rows)} cells' head stage) | of which writing checkpoints and history |\n"
          f"| --- | ---: | ---: |\n| today: the backbone every epoch | {result['today_cpu_s']} | "
          f"{result['today_writes_s']} |\n| features once: {len(features)} features jobs + the heads | "
          f"{result['features_once_cpu_s']} | {result['features_writes_s']} |\n"
          f"ratio {result['ratio']}x ({result['ratio_without_writes']}x without the writes); largest relative "
          f"difference between the two paths' histories: {max(row['max_relative_difference'] for row in rows):.1e}")
    if args.json:
        Path(args.json).write_text(json.dumps(result, indent=1) + "\n")
    return result


if __name__ == "__main__":
    main()
