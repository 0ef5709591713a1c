"""Benchmark: ready training batches per second per CPU core, and preparing CIFAR-10-sized input.

1. Loader. The same generated 32x32 images are served as shuffled, flipped,
   normalised float batches at 160x160 (a) by our path, from 160x160 uint8
   HDF5 shards, streamed by shuffled blocks (StreamSplit) and loaded whole
   (DeviceSplit), then Normalizer; (b) by the usual torchvision pipeline: a
   Dataset of PIL images at source size with Resize(160),
   RandomHorizontalFlip, ToTensor and Normalize, in a DataLoader with one
   worker per core. Each is timed over whole epochs, alternating; the rate
   per core is images per CPU second (all threads and worker processes),
   which a machine shared with other jobs distorts less than wall time.
   The torchvision pipeline runs in a process of its own (started by spawn,
   epochs on request): its DataLoader forks its workers there, so our
   pipelines' memory is never marked copy-on-write by those forks, which
   would charge page faults to whichever of ours ran next.
2. Prepare. 60,000 generated 32x32 images packed as a CIFAR-10 python
   tarball go through the workflow's own steps (plan, one process per shard,
   index) into 160x160 shards.

    python benchmarks/loader.py [--cores N] [--images 8192] [--prepare-images 60000]
"""

from __future__ import annotations

import argparse
import io
import json
import os
import pickle
import platform
import resource
import shutil
import statistics
import tarfile
import tempfile
import time
import multiprocessing
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import torch

MEAN, STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)


def epoch(batches) -> tuple[int, float, float]:
    """Images, wall seconds and CPU seconds (this process's threads and its finished child
    processes, e.g. DataLoader workers) of one whole epoch."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    wall, cpu, seen = time.perf_counter(), time.process_time(), 0
    for images, _ in batches:
        seen += len(images)
    done = resource.getrusage(resource.RUSAGE_CHILDREN)
    child_cpu = done.ru_utime + done.ru_stime - children.ru_utime - children.ru_stime
    return seen, time.perf_counter() - wall, time.process_time() - cpu + child_cpu


def ours(split, normalize, batch_size: int, seed: int):
    """Our batches: shuffled, flipped and normalised float tensors, channels-last."""
    generator = torch.Generator().manual_seed(seed)
    for images, labels in split.batches(batch_size, generator):
        yield normalize(images, generator), labels


def torchvision_loader(images: np.ndarray, size: int, batch_size: int, workers: int):
    """The usual pipeline: per-image PIL transforms in DataLoader workers."""
    import torchvision.transforms as T
    from PIL import Image

    class Images(torch.utils.data.Dataset):
        def __init__(self):
            self.images = [Image.fromarray(image) for image in images]
            self.transform = T.Compose([T.Resize(size), T.RandomHorizontalFlip(), T.ToTensor(), T.Normalize(MEAN, STD)])

        def __len__(self):
            return len(self.images)

        def __getitem__(self, i):
            return self.transform(self.images[i]), 0

    return torch.utils.data.DataLoader(Images(), batch_size=batch_size, shuffle=True, num_workers=workers,
                                       persistent_workers=False, multiprocessing_context="fork")


def serve_torchvision_epochs(conn, images: np.ndarray, size: int, batch_size: int, workers: int) -> None:
    """In a process of its own: time one torchvision epoch per request on `conn` until it sends None."""
    loader = torchvision_loader(images, size, batch_size, workers)
    while conn.recv() is not None:
        conn.send(epoch(loader))


class TorchvisionEpochs:
    """The torchvision pipeline in a spawned process; each call times one epoch there."""

    def __init__(self, images: np.ndarray, size: int, batch_size: int, workers: int):
        context = multiprocessing.get_context("spawn")
        self.conn, child = context.Pipe()
        self.process = context.Process(target=serve_torchvision_epochs, args=(child, images, size, batch_size, workers))
        self.process.start()

    def __call__(self) -> tuple[int, float, float]:
        self.conn.send(True)
        return self.conn.recv()

    def close(self) -> None:
        self.conn.send(None)
        self.process.join()


def write_shards(images: np.ndarray, size: int, folder: Path) -> Path:
    """Our shard layout for the loader benchmark: one shard, all images in train, and its index."""
    from workflow.data.resize import resize_batch
    from workflow.data.shards import shard_writer

    path = folder / "r160" / "shard-0-of-1.h5"
    attrs = {"class_names": json.dumps([str(i) for i in range(10)])}
    with shard_writer(path, {"train": len(images)}, size, attrs) as writers:
        for start in range(0, len(images), 1024):
            block = images[start:start + 1024]
            writers["train"].add(resize_batch(block, size), np.arange(start, start + len(block)) % 10)
    index = folder / "r160.json"
    index.write_text(json.dumps({"class_names": [str(i) for i in range(10)], "shards": [{"file": "r160/shard-0-of-1.h5"}]}))
    return index


def bench_loader(args, folder: Path) -> dict:
    """{pipeline: [(images, wall s, cpu s) per epoch]}, epochs of the pipelines alternating."""
    from workflow.data.batches import load_splits
    from workflow.data.normalize import Normalizer

    images = np.random.default_rng(0).integers(0, 256, (args.images, 32, 32, 3), dtype=np.uint8)
    index = write_shards(images, args.size, folder)
    torch.set_num_threads(1)  # our path: one thread converts, one background thread reads
    cpu = torch.device("cpu")
    normalize = Normalizer(MEAN, STD, cpu, {"hflip": True})
    loader = {"workers": 0, "buffer_chunks": 4}
    (streamed,) = load_splits(index, ["train"], cpu, {**loader, "memory_share": 0.0})
    (in_memory,) = load_splits(index, ["train"], cpu, {**loader, "memory_share": 1.0})
    splits = {"streamed shards": streamed, "in memory": in_memory}
    baseline = TorchvisionEpochs(images, args.size, args.batch_size, args.cores)
    runs = {"torchvision": [], **{name: [] for name in splits}}
    try:
        for repeat in range(args.repeats):
            runs["torchvision"].append(baseline())
            for name, split in splits.items():
                runs[name].append(epoch(ours(split, normalize, args.batch_size, repeat)))
            last = ", ".join(f"{name} {v[-1][0] / v[-1][2]:,.0f}" for name, v in runs.items())
            print(f"  epoch {repeat + 1}: {last} images per CPU second", flush=True)
    finally:
        baseline.close()
    return runs


def cifar_tarball(path: Path, n: int) -> None:
    """A CIFAR-10 python tarball of `n` generated images: 5/6 in five train batches, 1/6 test."""
    rng = np.random.default_rng(1)
    n_test = n // 6
    sizes = [(f"data_batch_{i + 1}", (n - n_test) // 5) for i in range(5)] + [("test_batch", n_test)]
    with tarfile.open(path, "w:gz", compresslevel=1) as tar:
        members = {"batches.meta": {b"label_names": [f"class{i}".encode() for i in range(10)]}}
        for name, count in sizes:
            members[name] = {b"data": rng.integers(0, 256, (count, 3072), dtype=np.uint8),
                             b"labels": rng.integers(0, 10, count).tolist()}
        for name, content in members.items():
            data = pickle.dumps(content, protocol=4)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))


def _shard_job(plan_path: str, size: int, part: int, parts: int, out: str) -> None:
    from workflow.data.prepare import write_shard

    torch.set_num_threads(1)
    write_shard(json.loads(Path(plan_path).read_text()), size, part, parts, out, log=lambda m: None)


def bench_prepare(args, folder: Path) -> dict:
    from workflow.atomic import write_json
    from workflow.data.download import file_digest
    from workflow.data.prepare import make_plan, write_manifest

    raw = folder / "raw"
    raw.mkdir(parents=True)
    tarball = raw / "cifar-10-python.tar.gz"
    cifar_tarball(tarball, args.prepare_images)
    spec = {"source": "cifar10", "path": str(raw), "checksums": {tarball.name: file_digest(tarball, "md5")},
            "shards": args.cores}
    times = {}
    start = time.perf_counter()
    plan = make_plan("cifar10-sized", spec, raw)
    write_json(folder / "plan.json", plan)
    times["plan"] = time.perf_counter() - start
    shards = [str(folder / "r160" / f"shard-{i}-of-{args.cores}.h5") for i in range(args.cores)]
    start = time.perf_counter()
    with ProcessPoolExecutor(args.cores) as pool:
        for future in [pool.submit(_shard_job, str(folder / "plan.json"), args.size, i, args.cores, shards[i])
                       for i in range(args.cores)]:
            future.result()
    times["shards"] = time.perf_counter() - start
    start = time.perf_counter()
    manifest = write_manifest(plan, args.size, shards, folder / "r160.json")
    times["index"] = time.perf_counter() - start
    times["total"] = sum(times.values())
    times["images"] = sum(manifest["totals"].values())
    times["bytes"] = sum(Path(s).stat().st_size for s in shards)
    return times


def main(argv=None) -> dict:
    """Run both benchmarks; returns {"loader": {pipeline: median images/CPU-s}, "prepare": times or None}."""
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cores", type=int, default=len(os.sched_getaffinity(0)))
    parser.add_argument("--images", type=int, default=8192, help="images in the loader benchmark")
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=9, help="epochs of each pipeline, alternating (the first ones warm up)")
    parser.add_argument("--prepare-images", type=int, default=60000, help="0 skips the prepare benchmark")
    parser.add_argument("--tmp", default=tempfile.gettempdir(), help="where the shards go (removed after)")
    parser.add_argument("--json", type=Path, help="also write the results here")
    args = parser.parse_args(argv)

    print(f"machine: {platform.processor() or platform.machine()}, {args.cores} cores used, "
          f"torch {torch.__version__}, {args.size}x{args.size}, batch {args.batch_size}")
    folder = Path(tempfile.mkdtemp(prefix="tlsweep-bench-", dir=args.tmp))
    try:
        print(f"loader: {args.images} images, {args.repeats} epochs each; torchvision with {args.cores} workers")
        runs = bench_loader(args, folder / "loader")
        per_cpu = {name: statistics.median(n / c for n, _, c in epochs) for name, epochs in runs.items()}
        per_wall = {name: statistics.median(n / w for n, w, _ in epochs) for name, epochs in runs.items()}
        print(f"  {'pipeline':16s} {'images/CPU-s':>13s} {'images/s wall':>14s}   (medians)")
        for name in runs:
            print(f"  {name:16s} {per_cpu[name]:13,.0f} {per_wall[name]:14,.0f}")
        for name in ("streamed shards", "in memory"):
            print(f"  per core, {name} / torchvision: {per_cpu[name] / per_cpu['torchvision']:.1f}x")
        times = None
        if args.prepare_images:
            times = bench_prepare(args, folder / "prepare")
            print(f"prepare: {times['images']:,} images 32x32 -> {args.size}x{args.size}, {args.cores} shard jobs, "
                  f"{times['bytes'] / 1e9:.1f} GB of shards")
            print(f"  plan {times['plan']:.1f} s, shards {times['shards']:.1f} s, index {times['index']:.1f} s, "
                  f"total {times['total']:.1f} s = {times['images'] / times['total'] / args.cores:,.0f} images/s/core")
    finally:
        shutil.rmtree(folder)
    results = {"loader": per_cpu, "prepare": times}
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")
    return results


if __name__ == "__main__":
    main()
