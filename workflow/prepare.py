"""Prepare a dataset once per resolution: load, split, resize, write a shard and a manifest."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import numpy as np

from workflow.atomic import write_json
from workflow.resize import RESIZE_METHOD, resize_batch
from workflow.shards import write_shard
from workflow.splits import stratified_split

RESIZE_BLOCK = 1024


def load_digits_source() -> tuple[np.ndarray, np.ndarray, str]:
    """scikit-learn's bundled digits as uint8 8x8 images, labels, and the data file's SHA-256."""
    import sklearn.datasets

    digits = sklearn.datasets.load_digits()
    images = np.round(digits.images * (255.0 / 16.0)).astype(np.uint8)
    data_file = Path(sklearn.datasets.__file__).parent / "data" / "digits.csv.gz"
    return images, digits.target.astype(np.int64), hashlib.sha256(data_file.read_bytes()).hexdigest()


def select_classes(images: np.ndarray, labels: np.ndarray, classes: list[int]):
    """Keep the given source labels, relabelled 0..len(classes)-1 in the given order."""
    missing = sorted(set(classes) - set(np.unique(labels).tolist()))
    if missing:
        raise ValueError(f"classes {missing} do not exist in the source (labels {sorted(set(labels.tolist()))})")
    keep = np.isin(labels, classes)
    remap = {c: i for i, c in enumerate(classes)}
    return images[keep], np.array([remap[c] for c in labels[keep]], dtype=np.int64)


def resize_all(images: np.ndarray, resolution: int) -> np.ndarray:
    """Resize every image to resolution x resolution RGB, in blocks."""
    blocks = [resize_batch(images[i:i + RESIZE_BLOCK], resolution) for i in range(0, len(images), RESIZE_BLOCK)]
    return np.concatenate(blocks)


def prepare_dataset(name: str, spec: dict, resolution: int, shard: str | os.PathLike, manifest: str | os.PathLike) -> dict:
    """Build the shard and manifest for dataset `name` at `resolution`; returns the manifest."""
    if spec["source"] != "digits":
        raise NotImplementedError(f"datasets.{name}.source: preparing {spec['source']!r} is not implemented yet")
    images, labels, source_sha256 = load_digits_source()
    classes = spec.get("classes") or sorted(np.unique(labels).tolist())
    images, labels = select_classes(images, labels, classes)
    class_names = [str(c) for c in classes]
    index = stratified_split(labels, spec["split"], spec.get("seed", 0))
    splits = {split: (resize_all(images[idx], resolution), labels[idx]) for split, idx in index.items()}
    write_shard(
        shard, splits, class_names,
        attrs={"dataset": name, "resolution": resolution, "resize_method": RESIZE_METHOD},
    )
    result = {
        "dataset": name,
        "source": spec["source"],
        "source_sha256": source_sha256,
        "resolution": resolution,
        "resize_method": RESIZE_METHOD,
        "class_names": class_names,
        "counts": {
            split: {class_names[c]: int(n) for c, n in zip(*np.unique(split_labels, return_counts=True))}
            for split, (_, split_labels) in splits.items()
        },
        "skipped": [],
        "spec": spec,
    }
    write_json(manifest, result)
    return result
