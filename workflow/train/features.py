"""Backbone features, once: a backbone's output as the new head's first layer reads it (its pooled features, or
what a head of layers pools: `head_input.features_pooling`) for a dataset's splits at one resolution, from
given starting weights, computed as training's head stage computes them (backbone in eval mode, no
augmentation, the precision training runs in) and stored as HDF5 beside the shards (workflow.data.features reads them back); and, for a training job, the features
as splits that serve batches in the same seeded order as the images.

Stored as float16 when computed in bf16 or fp16 (the head then sees the same values: bf16's 8-bit mantissa
fits fp16's 10 bits), and as float32 when computed in fp32, so that the head trains on exactly the values
the images give it (fp16 would round them by up to 2^-11 relative).
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from workflow.atomic import atomic_path, write_json
from workflow.core.cell import Cell
from workflow.core.paths import POOLED, features_record
from workflow.data.batches import load_splits
from workflow.data.device_split import DeviceSplit
from workflow.data.features import SPLITS, check_features, read_features
from workflow.data.normalize import Normalizer
from workflow.data.shards import read_class_names
from workflow.integrity import sha256_of
from workflow.train.head_input import FEATURES, IMAGES, features_pooling, stage_paths
from workflow.train.models import build_classifier
from workflow.train.runtime import Precision, configure_backends, pick_device, seed_everything

STORED_AS = {"fp32": np.float32, "bf16": np.float16, "fp16": np.float16}


@torch.inference_mode()
def backbone_features(backbone, split, normalize: Normalizer, batch_size: int, precision: Precision):
    """(features as float32 on the CPU, N x what the backbone outputs per image: D, or a feature map C x H x W;
    labels; the dtype the backbone output them in) of a split, in order."""
    backbone.eval()
    chunks, labels, dtype = [], [], None
    for images, batch_labels in split.batches(batch_size):
        with precision.autocast():
            out = backbone(normalize(images))
        dtype = str(out.dtype).removeprefix("torch.")
        chunks.append(out.float().cpu())
        labels.append(batch_labels.cpu())
    return torch.cat(chunks).numpy(), torch.cat(labels).numpy(), dtype


def compute_features(cell: Cell, manifest: str | Path, out: str | Path, init: str | Path | None = None,
                     threads: int = 1, log=print) -> dict:
    """Compute `cell`'s backbone features (its model, resolution, starting weights, the features' pooling of its
    head and precision; the cell stands for every cell sharing them) of every split of `manifest`: the
    backbone's output as the cell's classifier hands it to the head, stored in its shape; write them to `out`
    (HDF5) and, last, the record beside it; return the record."""
    started = time.perf_counter()
    torch.set_num_threads(threads)
    device = pick_device()
    configure_backends(device, cell.training.deterministic)
    seed_everything(cell.seed)
    classes = read_class_names(manifest)
    model, normalization = build_classifier(cell.model, len(classes), cell.weights, cell.training.dropout, init,
                                            head=cell.training.head, resolution=cell.resolution)
    backbone = model.backbone.to(device, memory_format=torch.channels_last)
    precision = Precision(cell.training.precision, device)
    normalize = Normalizer(*normalization, device)
    stored = STORED_AS[precision.name]
    counts, shapes, output_dtype = {}, set(), None
    with atomic_path(out) as tmp, h5py.File(tmp, "w") as f:
        for name in SPLITS:
            split, = load_splits(manifest, (name,), device, cell.training.loader)
            features, labels, output_dtype = backbone_features(backbone, split, normalize,
                                                               cell.training.eval_batch_size, precision)
            group = f.create_group(name)
            group.create_dataset("features", data=features.astype(stored))
            group.create_dataset("labels", data=labels.astype(np.int64))
            counts[name], shapes = len(labels), shapes | {features.shape[1:]}
            log(f"{name}: {len(labels)} images -> features {' x '.join(map(str, features.shape[1:]))}")
        shape = shapes.pop()
        attrs = {"model": cell.model, "resolution": cell.resolution, "weights": cell.weights,
                 "pooling": features_pooling(cell), "precision": precision.name, "dim": int(np.prod(shape)),
                 "shape": list(shape), "output_dtype": output_dtype}
        f.attrs.update(attrs)
    seconds = time.perf_counter() - started
    record = {"sha256": sha256_of(out), "counts": counts, **attrs, "stored_as": np.dtype(stored).name,
              "device": str(device), "seconds": round(seconds, 3),
              "images_per_s": round(sum(counts.values()) / seconds, 1)}
    write_json(features_record(out), record)  # last: the features are complete
    return record


@dataclass
class FeatureSplit(DeviceSplit):
    """A split's features (N x what the head reads of one image) and labels on the device, served as DeviceSplit
    serves images: the same seeded order for the same generator, so that a head stage draws the batches the
    images would give."""

    def _batches(self, order: torch.Tensor | None, batch_size: int, skip: int):
        for start in range(skip * batch_size, len(self), batch_size):
            index = slice(start, start + batch_size) if order is None else order[start:start + batch_size]
            yield self.images[index], self.labels[index]


@dataclass
class CachedFeatures:
    """The features of a job's three splits, on its device, in the dtype the backbone outputs them in."""

    train: FeatureSplit
    val: FeatureSplit
    test: FeatureSplit
    record: dict


def load_cached(path: str | Path, device: torch.device) -> CachedFeatures:
    """A checked features file's splits on `device` (DamagedFileError when it is not the file its record says)."""
    record = check_features(path)
    dtype = getattr(torch, record["output_dtype"])
    splits = {name: FeatureSplit(torch.from_numpy(features).to(device, dtype), torch.from_numpy(labels).to(device))
              for name, (features, labels) in read_features(path).items()}
    return CachedFeatures(**splits, record=record)


def mismatch(cached: CachedFeatures, cell: Cell, images: dict[str, DeviceSplit], precision: str) -> str | None:
    """Why the cached features are not what the job's images would give its head (None when they are):
    another model, resolution, pooling (a file from before poolings were recorded holds the pooled features),
    starting weights or precision, other labels or order, or a training split streamed from disk (whose
    block-shuffled order the features cannot follow)."""
    record = {"pooling": POOLED, **cached.record}
    for key, value in (("model", cell.model), ("resolution", cell.resolution),
                       ("pooling", features_pooling(cell)), ("precision", precision)):
        if record[key] != value:
            return f"the features were computed with {key} {record[key]}, the cell trains with {value}"
    if record["weights"] != cell.weights and not cell.weights.startswith("pretrain:"):
        return f"the features were computed from weights {record['weights']}, the cell starts from {cell.weights}"
    if not isinstance(images["train"], DeviceSplit):
        return "the training split streams from disk in block-shuffled order"
    for name, split in images.items():
        labels = getattr(cached, name).labels
        if len(labels) != len(split) or not torch.equal(labels.cpu(), split.labels.cpu()):
            return f"the features' {name} labels are not the manifest's"
    return None


def stage_inputs(cell: Cell, path: str | Path | None, images: dict[str, DeviceSplit], precision: str,
                 device: torch.device) -> tuple[dict[str, dict], CachedFeatures | None]:
    """({stage: {"input": features or images, "reason": why}}, the cached features when a stage trains on
    them): a stage `head_stage_path` sends to the features trains on the images when the job was given no
    features file or one that is not what the images would give (`mismatch`)."""
    planned = stage_paths(cell)
    wanted = any(source == FEATURES for source, _ in planned.values())
    cached, refused = None, None
    if wanted and path is None:
        refused = "this job was given no features file (python -m workflow train --features)"
    elif wanted:
        cached = load_cached(path, device)
        refused = mismatch(cached, cell, images, precision)
        cached = None if refused else cached
    inputs = {}
    for name, (source, reason) in planned.items():
        if source == FEATURES and refused:
            source, reason = IMAGES, refused
        inputs[name] = {"input": source, "reason": reason}
    return inputs, cached
