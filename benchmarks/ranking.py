"""Benchmark: ranking candidate models from their features against fine-tuning them (docs/ranking.md).

Two parts, each a ratio of wall-clock seconds:

- `measured` (`--workdir`, `--configfile`): a finished study with `rank` (every candidate fine-tuned, e.g.
  studies/digits-rank.yaml with `rank.keep` at its number of models). Ranking a candidate costs its features
  (`feature_time_s`, the features' record) and its scores (`score_time_s`); fine-tuning it costs its grid
  cells' training (`train_time_s` of metrics.json, summed). Both are read from the models table.
- `per-image` (`--model`, `--resolution`): a backbone's seconds per image for a features pass (forward,
  eval mode, no gradients: what the `features` rule runs) and for a training step (forward, backward, SGD
  step, every layer training), timed on synthetic batches here, and LogME plus the probe timed on
  synthetic features of a dataset's shape. From these and the batch-size paper's study
  (studies/batch-size-cifar.yaml: CIFAR-10 and -100, five batch sizes, a head stage then fine-tuning every
  layer), an estimate of the same ratio for that study: an estimate, with its inputs printed.

    python benchmarks/ranking.py --workdir W --configfile studies/digits-rank.yaml
    python benchmarks/ranking.py --model mobilenet_v2 --resolution 160 --batch-size 64 --steps 5 --threads 2
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

# The batch-size paper's study: splits of CIFAR-10/100 as its sources cut them (a tenth of train as validation).
CIFAR = {"cifar10": {"train": 45_000, "val": 5_000, "test": 10_000, "classes": 10},
         "cifar100": {"train": 45_000, "val": 5_000, "test": 10_000, "classes": 100}}


def measured(workdir: Path, configfile: Path) -> dict:
    """Ranking against fine-tuning every candidate of a finished study with `rank`, from its models table."""
    from workflow.sweep.decisions import load_sweep

    study = load_sweep(configfile).study
    models = pd.read_csv(workdir / study.out / "tables" / "models.csv")
    ranking_s = float((models["feature_time_s"] + models["score_time_s"]).sum())
    tuned = models[models["fine_tuned_cells"] > 0]
    fine_tuning_s = float(tuned["fine_tuned_time_s"].sum())
    per_model = {row["model"]: {"rank_s": round(row["feature_time_s"] + row["score_time_s"], 2),
                                "fine_tune_s": round(row["fine_tuned_time_s"], 1), "cells": int(row["fine_tuned_cells"])}
                 for _, row in models.iterrows()}
    return {"candidates": len(models), "fine_tuned": len(tuned), "rank_s": round(ranking_s, 1),
            "rank_fine_tuned_s": round(float((tuned["feature_time_s"] + tuned["score_time_s"]).sum()), 1),
            "fine_tune_s": round(fine_tuning_s, 1),
            "ratio": round(float((tuned["feature_time_s"] + tuned["score_time_s"]).sum()) / fine_tuning_s, 4)
            if fine_tuning_s else None, "per_model": per_model}


def seconds_per_image(model: str, resolution: int, batch_size: int, steps: int, threads: int) -> dict:
    """A backbone's seconds per image: a features pass and a training step, each the best of `steps` batches."""
    import torch

    from workflow.train.models import build_classifier

    torch.set_num_threads(threads)
    classifier, _ = build_classifier(model, 10, "none", resolution=resolution)
    images = torch.randn(batch_size, 3, resolution, resolution)
    labels = torch.randint(0, 10, (batch_size,))
    optimizer = torch.optim.SGD(classifier.parameters(), lr=0.01)

    def best(step) -> float:
        step()  # warm-up
        times = []
        for _ in range(steps):
            started = time.perf_counter()
            step()
            times.append(time.perf_counter() - started)
        return min(times) / batch_size

    def forward():
        classifier.eval()
        with torch.inference_mode():
            classifier.backbone(images)

    def train():
        classifier.train()
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(classifier(images), labels).backward()
        optimizer.step()

    with torch.inference_mode():
        dim = classifier.eval().backbone(images[:2]).shape[1]
    return {"features_s_per_image": best(forward), "train_s_per_image": best(train), "dim": int(dim)}


def scoring_seconds(images: dict, classes: int, dim: int, fraction: float, seed: int = 0) -> dict:
    """LogME and the linear probe on synthetic features of a dataset's shape (`images`: per split; each class a
    Gaussian around its own mean), timed on `fraction` of its images and scaled by 1 / fraction (both grow
    linearly with the images once they outnumber the features' dimensions)."""
    from workflow.results.ranking import score_splits

    rng = np.random.default_rng(seed)
    means = rng.standard_normal((classes, dim))  # features with class structure, as a backbone's are
    splits = {}
    for split, n in images.items():
        labels = rng.integers(0, classes, max(int(n * fraction), classes))
        splits[split] = ((means[labels] + rng.standard_normal((len(labels), dim))).astype(np.float32), labels)
    scores = score_splits(splits)
    return {"logme_s": scores["logme_seconds"] / fraction, "probe_s": scores["probe_seconds"] / fraction}


def batch_size_study(costs: dict, score_s: dict, head_epochs: int, finetune_epochs: int, batch_sizes: int) -> dict:
    """The estimate for the batch-size paper's study, per candidate model: ranking (one features pass over
    every split of both datasets, and scoring) against fine-tuning its cells with the study's settings (per
    dataset and batch size: the head stage, forward passes only when its features are cached, and the
    fine-tuning stage's training steps; validation every epoch; the test once)."""
    forward, train = costs["features_s_per_image"], costs["train_s_per_image"]
    rank_s = sum(sum(n for key, n in sizes.items() if key != "classes") * forward + sum(score_s[name].values())
                 for name, sizes in CIFAR.items())
    cell_s = {name: head_epochs * sizes["train"] * forward + finetune_epochs * sizes["train"] * train
              + (head_epochs + finetune_epochs) * sizes["val"] * forward + sizes["test"] * forward
              for name, sizes in CIFAR.items()}
    fine_tune_s = batch_sizes * sum(cell_s.values())
    return {"head_epochs": head_epochs, "finetune_epochs": finetune_epochs, "cells": batch_sizes * len(CIFAR),
            "rank_s": round(rank_s, 1), "fine_tune_s": round(fine_tune_s, 1), "ratio": round(rank_s / fine_tune_s, 5)}


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--workdir", type=Path, help="a finished study's working folder (the measured ratio)")
    p.add_argument("--configfile", type=Path, help="its study file")
    p.add_argument("--model", help="per-image costs of this backbone (the estimate)")
    p.add_argument("--resolution", type=int, default=160)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--finetune-epochs", type=int, nargs="+", default=[100, 30],
                   help="fine-tuning epochs per cell: the study's most (100) and what early stopping may leave")
    p.add_argument("--score-fraction", type=float, default=0.1,
                   help="time LogME and the probe on this share of each split's images, scaled up linearly")
    p.add_argument("--json", type=Path)
    args = p.parse_args(argv)
    out: dict = {}
    if args.workdir:
        out["measured"] = measured(args.workdir, args.configfile)
    if args.model:
        costs = seconds_per_image(args.model, args.resolution, args.batch_size, args.steps, args.threads)
        score_s = {name: scoring_seconds({k: n for k, n in sizes.items() if k != "classes"}, sizes["classes"],
                                         costs["dim"], args.score_fraction) for name, sizes in CIFAR.items()}
        out["per_image"] = {"model": args.model, "resolution": args.resolution, "batch_size": args.batch_size,
                            **{key: float(f"{value:.4g}") if key != "dim" else value for key, value in costs.items()},
                            "score_fraction": args.score_fraction,
                            "score_s": {name: {key: round(value, 1) for key, value in parts.items()} for name, parts in score_s.items()}}
        out["batch_size_study"] = [batch_size_study(costs, score_s, 20, epochs, 5) for epochs in args.finetune_epochs]
    print(json.dumps(out, indent=2))
    if args.json:
        args.json.write_text(json.dumps(out, indent=2))
    return out


if __name__ == "__main__":
    main()
