"""Training images/s per backbone: synthetic on-device batches (the ceiling) vs the real data path.

The ceiling times `train_step` on one uint8 batch that already sits on the
device (normalised each step, as in training). The pipeline times
`train_one_epoch` on a real prepared shard (scikit-learn's digits, resized to
the resolution by workflow.data.prepare), loaded whole on the device
(`--loader memory`, `DeviceSplit`) or streamed from the shard
(`--loader stream`, `StreamSplit`), so it pays for everything a training job
does per epoch: reading, shuffling, batching, normalising, the partial last
batch and the end-of-epoch sync. 1 - ratio is the share of a training step
spent on loading. Both use the same model,
optimizer, precision (training.precision) and channels-last settings as a training job.
Each is timed `--repeats` times, alternating, and the best run of each counts.

    python benchmarks/train_step.py --models mobilenet_v2 resnet50 --resolutions 160 224 --batch-size 128
    python benchmarks/train_step.py --models convnext_tiny timm:efficientnet_b0 --resolutions 64 --precision fp16

Any model `model:` accepts (torchvision names, timm:<name>) works, from random weights.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from workflow.data.normalize import Normalizer  # noqa: E402
from workflow.data.prepare import prepare_dataset  # noqa: E402
from workflow.core.cell import DEFAULT_TRAINING, Cell, TrainingSettings, merge  # noqa: E402
from workflow.train.job import open_job  # noqa: E402
from workflow.train.loop import EpochPosition, train_one_epoch, train_step  # noqa: E402
from workflow.train.models import PLAIN_MEAN, PLAIN_STD, build_classifier, set_trainable  # noqa: E402
from workflow.train.objective import Objective  # noqa: E402
from workflow.train.optim import Stage  # noqa: E402
from workflow.train.runtime import PRECISIONS, Precision, configure_backends, pick_device  # noqa: E402

DIGITS_SPLIT = {"train": 0.8, "val": 0.1, "test": 0.1}


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def bench_stage(model, args) -> Stage:
    """The benchmark's stage for `model`: what trains, its optimizer, as a training job sets them."""
    set_trainable(model, args.train)
    settings = TrainingSettings().stage({"name": "bench", "train": args.train, "epochs": 1}, args.optimizer, args.train)
    return Stage.start(model, settings, 1e-3)


def bench_cell(name: str, resolution: int, args) -> Cell:
    """A cell with the benchmark's settings (random weights), for the pipeline's training job."""
    training = merge(DEFAULT_TRAINING, {
        "head": args.head, "compile": args.compile, "precision": args.precision, "augment": {"hflip": args.hflip},
        "loader": {"memory_share": 1.0 if args.loader == "memory" else 0.0, "workers": 0, "buffer_chunks": 4},
    })
    return Cell(dataset="bench", model=name, resolution=resolution, batch_size=args.batch_size, lr=1e-3,
                optimizer=args.optimizer, train=args.train, seed=0, weights="none",
                training=TrainingSettings.from_mapping(training))


def ceiling(name: str, resolution: int, device: torch.device, precision: Precision, args):
    """A timer of training steps on one synthetic batch kept on the device: each call returns images/s."""
    model, _ = build_classifier(name, args.classes, "none", head=args.head, resolution=resolution)
    model = model.to(device, memory_format=torch.channels_last)
    if args.compile:
        model.compile()
    optimizer, objective = bench_stage(model, args).optimizer, Objective(TrainingSettings(), seed=0)
    model.train()
    normalize = Normalizer(PLAIN_MEAN, PLAIN_STD, device)
    images = torch.randint(0, 256, (args.batch_size, 3, resolution, resolution), dtype=torch.uint8, device=device)
    labels = torch.randint(0, args.classes, (args.batch_size,), device=device)

    def steps(count: int) -> float:
        sync(device)
        start = time.perf_counter()
        for _ in range(count):
            train_step(model, normalize(images), labels, objective, optimizer, precision)
        sync(device)
        return count * args.batch_size / (time.perf_counter() - start)

    steps(args.warmup)
    return lambda: steps(args.steps)


def pipeline(name: str, resolution: int, shard: Path, device: torch.device, args):
    """A timer of whole training epochs through the data path and train_one_epoch: each call returns images/s."""
    job = open_job(bench_cell(name, resolution, args), shard, shard.parent, threads=args.threads, log=lambda _: None)
    stage = bench_stage(job.model, args)

    def epochs(images_wanted: int) -> float:
        sync(device)
        images, start = 0, time.perf_counter()
        while images < images_wanted:
            images += train_one_epoch(job, stage, EpochPosition(epoch=1)).images
        sync(device)
        return images / (time.perf_counter() - start)

    epochs(1)  # one epoch of warm-up: every batch shape seen once
    return lambda: epochs(args.steps * args.batch_size)


def parse_args(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", nargs="+", default=["mobilenet_v2", "resnet50"])
    parser.add_argument("--resolutions", nargs="+", type=int, default=[160, 224],
                        help="one per model, or one for all")
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--steps", type=int, default=30, help="timed steps (the pipeline runs whole epochs)")
    parser.add_argument("--warmup", type=int, default=5, help="untimed steps before the ceiling's timing")
    parser.add_argument("--repeats", type=int, default=3,
                        help="timed runs of each, alternating; the best of each is reported")
    parser.add_argument("--loader", default="memory", choices=["memory", "stream"],
                        help="the pipeline's split: loaded whole on the device, or streamed from the shard")
    parser.add_argument("--head", default="gap", choices=["gap", "mlp", "own"])
    parser.add_argument("--train", default="all", help="what trains: head, all, last:N or from:<module>")
    parser.add_argument("--optimizer", default="sgd")
    parser.add_argument("--hflip", action="store_true", help="random flips in the pipeline, as training.augment.hflip")
    parser.add_argument("--precision", default="auto", choices=list(PRECISIONS),
                        help="as training.precision (auto: bf16 on GPUs that have it, fp16 on older ones, fp32 on the CPU)")
    parser.add_argument("--compile", action="store_true", help="torch.compile the model")
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--data-dir", type=Path, help="where the digits shards go (default: a temporary folder)")
    parser.add_argument("--classes", type=int, default=10,
                        help="digits 0..N-1 in the shard (fewer: shorter epochs; 10 is about 1,400 training images)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)
    if len(args.resolutions) not in (1, len(args.models)):
        parser.error("give one resolution, or one per model")
    return args


def main(argv=None) -> list[dict]:
    args = parse_args(argv)
    torch.set_num_threads(args.threads)
    device = pick_device()
    configure_backends(device, deterministic=False)
    precision = Precision(args.precision, device)
    resolutions = args.resolutions * len(args.models) if len(args.resolutions) == 1 else args.resolutions
    where = torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({args.threads} threads)"
    print(f"device: {where}; batch size {args.batch_size}; precision {precision.name}; loader {args.loader}; torch {torch.__version__}")
    print(f"{'model':<28}{'res':>5}{'ceiling img/s':>16}{'pipeline img/s':>17}{'ratio':>8}")
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data_dir or Path(tmp)
        for name, resolution in zip(args.models, resolutions):
            shard = data / f"digits{args.classes}-r{resolution}.h5"
            if not shard.exists():
                spec = {"source": "digits", "classes": list(range(args.classes)), "split": DIGITS_SPLIT, "seed": 0}
                prepare_dataset("digits", spec, resolution, shard, shard.with_suffix(".json"))
            timers = ceiling(name, resolution, device, precision, args), pipeline(name, resolution, shard, device, args)
            runs = [[timer() for timer in timers] for _ in range(args.repeats)]
            top, real = (max(column) for column in zip(*runs))
            results.append({"model": name, "resolution": resolution, "batch_size": args.batch_size,
                            "device": where, "precision": precision.name, "loader": args.loader, "ceiling_images_per_s": round(top, 1),
                            "pipeline_images_per_s": round(real, 1), "ratio": round(real / top, 3)})
            print(f"{name:<28}{resolution:>5}{top:>16.1f}{real:>17.1f}{real / top:>8.1%}", flush=True)
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
