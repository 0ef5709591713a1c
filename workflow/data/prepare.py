"""Prepare a dataset in three steps, each a job of its own in the workflow.

1. plan: check the source files against their checksums, list the source,
   keep the configured classes, assign train/val/test (the source's split, val
   carved out of train, or stratified fractions), draw per-class subsets, and
   put each split in a seeded random order (so that reading blocks of
   consecutive images still gives mixed classes).
2. shard i of n: decode, resize and write the i-th slice of every split.
   Undecodable images are skipped and listed, never fatal.
3. manifest: check every shard against the plan and its checksums, and write
   the manifest that joins them (counts per class and split, skipped and ignored
   files, source checksums, resize method).

`prepare_files` decodes and resizes image files exactly as step 2 does, for images that a trained
model is to classify (workflow.export.predict).
"""

from __future__ import annotations

import hashlib
import json
import os
import time
from pathlib import Path

import numpy as np

from workflow.atomic import write_json
from workflow.data.datasets import resolve_dataset
from workflow.data.resize import RESIZE_METHOD, resize_images
from workflow.data.shards import shard_writer, verify_shard
from workflow.data.sources import Skipped, get_source
from workflow.data.sources.images import decode
from workflow.data.splits import SPLITS, assign_splits

RESIZE_BLOCK = 512  # images decoded and resized together


def select_classes(labels: np.ndarray, class_names: list[str], classes: list | None, where: str):
    """Positions to keep, their new labels 0..k-1 and the new class names, for `classes`
    given as source labels (int) or class names (str), in that order; None keeps all."""
    if classes is None:
        return np.arange(len(labels)), labels, list(class_names)
    wanted = [c if isinstance(c, int) else (class_names.index(c) if c in class_names else c) for c in classes]
    missing = [c for c in wanted if not isinstance(c, int) or not 0 <= c < len(class_names)]
    if missing:
        raise ValueError(f"{where}.classes: classes {missing} do not exist in the source (its classes: {class_names})")
    keep = np.flatnonzero(np.isin(labels, wanted))
    remap = np.zeros(len(class_names), np.int64)
    remap[wanted] = np.arange(len(wanted))
    return keep, remap[labels[keep]], [class_names[c] for c in wanted]


def take_per_class(catalog, indices: np.ndarray, labels: np.ndarray, n: int, rng, where: str, class_names):
    """At most `n` decodable images of each class, drawn in a seeded order; decoding checks
    the candidates so that undecodable ones are replaced. Returns indices, labels, skipped."""
    chosen, skipped = [], []
    for label in np.unique(labels):
        candidates = rng.permutation(indices[labels == label])
        good = []
        while len(good) < n and len(candidates):
            batch, candidates = candidates[:n - len(good)], candidates[n - len(good):]
            for index, image in zip(batch, catalog.read(batch)):
                if isinstance(image, Skipped):
                    skipped.append({"file": image.key, "reason": image.reason})
                else:
                    good.append(index)
        if len(good) < n:
            raise ValueError(f"{where}: class {class_names[label]!r} has {len(good)} decodable images, {n} requested")
        chosen.append(np.array(good, np.int64))
    kept = np.sort(np.concatenate(chosen))
    return kept, labels[np.searchsorted(indices, kept)], skipped


def make_plan(name: str, spec: dict, raw_dir: str | os.PathLike | None) -> dict:
    """Check and list the source and assign every kept image to a split, in storage order."""
    spec = resolve_dataset(name, spec)
    raw_dir = Path(raw_dir) if raw_dir is not None else None
    source = get_source(spec["source"])
    records = source.source_records(spec, raw_dir)  # checksums first: a bad file is not opened
    catalog = source.open_catalog(raw_dir, spec)
    keep, labels, class_names = select_classes(catalog.labels, catalog.class_names, spec["classes"],
                                               f"datasets.{name}")
    assigned = assign_splits(labels, catalog.splits[keep], spec, f"datasets.{name}")
    splits, skipped = {}, []
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([spec["seed"], i])
        indices, split_labels = keep[assigned[split]], labels[assigned[split]]
        cap = (spec["per_class"] or {}).get(split)
        if cap:
            indices, split_labels, bad = take_per_class(catalog, indices, split_labels, cap, rng,
                                                        f"datasets.{name}.per_class.{split}", class_names)
            skipped += [{**entry, "split": split} for entry in bad]
        if len(indices) == 0:
            raise ValueError(f"datasets.{name}: split {split!r} is empty ({len(keep)} images in all)")
        order = rng.permutation(len(indices))
        splits[split] = {"indices": indices[order].tolist(), "labels": split_labels[order].tolist()}
    return {
        "dataset": name, "spec": spec, "raw_dir": str(raw_dir) if raw_dir else None, "class_names": class_names,
        "splits": splits, "skipped": skipped, "ignored": catalog.ignored, "sources": records,
    }


def plan_sha256(plan: dict) -> str:
    """A plan's identity, recorded in every shard written from it."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


def resize_block(block: list, resolution: int) -> tuple[np.ndarray, list[int], list[Skipped]]:
    """Resize a block of decoded images as a shard stores them, leaving out those that did not decode
    (Skipped): (uint8 images (n, resolution, resolution, 3), positions in `block` kept, the Skipped)."""
    good = [i for i, image in enumerate(block) if not isinstance(image, Skipped)]
    skipped = [image for image in block if isinstance(image, Skipped)]
    return resize_images([block[i] for i in good], resolution), good, skipped


def prepare_files(paths: list, resolution: int) -> tuple[np.ndarray, list[int], list[Skipped]]:
    """Decode image files and resize them as `write_shard` does a dataset's (`resize_block`); a file
    that does not decode is Skipped (keyed by its path as given), not an error."""
    return resize_block([decode(path, str(path)) for path in paths], resolution)


def write_shard(plan: dict, resolution: int, part: int, parts: int, out: str | os.PathLike, log=print) -> None:
    """Decode, resize and write the `part`-th of `parts` slices of every split into one shard file."""
    if not 0 <= part < parts:
        raise ValueError(f"shard {part} of {parts} does not exist")
    spec = plan["spec"]
    catalog = get_source(spec["source"]).open_catalog(plan["raw_dir"], spec)
    slices = {split: [np.array_split(np.asarray(entry[key], np.int64), parts)[part] for key in ("indices", "labels")]
              for split, entry in plan["splits"].items()}
    skipped = []
    attrs = {"dataset": plan["dataset"], "resolution": resolution, "resize_method": RESIZE_METHOD,
             "class_names": json.dumps(plan["class_names"]), "part": part, "parts": parts,
             "plan_sha256": plan_sha256(plan), "skipped": skipped}
    compression = None if spec["compression"] == "none" else spec["compression"]
    capacity = {split: len(indices) for split, (indices, _) in slices.items()}
    started = time.perf_counter()
    with shard_writer(out, capacity, resolution, attrs, spec["chunk_images"], compression) as writers:
        for split, (indices, labels) in slices.items():
            for start in range(0, len(indices), RESIZE_BLOCK):
                images, good, bad = resize_block(catalog.read(indices[start:start + RESIZE_BLOCK]), resolution)
                skipped += [{"file": image.key, "reason": image.reason, "split": split} for image in bad]
                writers[split].add(images, labels[start:start + RESIZE_BLOCK][good])
            log(f"{split}: {len(indices)} images read ({time.perf_counter() - started:.1f} s)")
    log(f"shard {part} of {parts}: {len(skipped)} skipped")


def write_manifest(plan: dict, resolution: int, shards: list[str | os.PathLike], out: str | os.PathLike) -> dict:
    """Check the shards (plan, order, checksums, counts) and write the manifest that joins them."""
    out = Path(out)
    class_names, digest = plan["class_names"], plan_sha256(plan)
    planned = {split: np.array_split(np.asarray(entry["indices"]), len(shards))
               for split, entry in plan["splits"].items()}
    totals = {split: np.zeros(len(class_names), np.int64) for split in SPLITS}
    listed, skipped = [], list(plan["skipped"])
    for part, shard in enumerate(shards):
        info = verify_shard(shard)
        attrs = info["attrs"]
        expected = {"plan_sha256": digest, "part": part, "parts": len(shards), "resolution": resolution}
        for key, value in expected.items():
            if attrs.get(key) != value:
                raise ValueError(f"{shard}: {key} is {attrs.get(key)!r}, expected {value!r}")
        for split in SPLITS:
            lost = sum(entry["split"] == split for entry in info["skipped"])
            if info["splits"][split]["count"] != len(planned[split][part]) - lost:
                raise ValueError(f"{shard}: {split} holds {info['splits'][split]['count']} images, expected "
                                 f"{len(planned[split][part])} planned minus {lost} skipped")
            counts = info["splits"][split]["label_counts"]
            totals[split][:len(counts)] += np.asarray(counts, np.int64)
        skipped += info["skipped"]
        listed.append({"file": os.path.relpath(shard, out.parent),
                       "counts": {split: info["splits"][split]["count"] for split in SPLITS},
                       "sha256": {split: info["splits"][split]["sha256"] for split in SPLITS}})
    for split in SPLITS:
        if totals[split].sum() == 0:
            raise ValueError(f"{plan['dataset']}: split {split!r} is empty after skipping undecodable images")
    spec = plan["spec"]
    manifest = {
        "dataset": plan["dataset"],
        "source": spec["source"],
        "resolution": resolution,
        "resize_method": RESIZE_METHOD,
        "class_names": class_names,
        "counts": {split: dict(zip(class_names, totals[split].tolist())) for split in SPLITS},
        "totals": {split: int(totals[split].sum()) for split in SPLITS},
        "shards": listed,
        "chunk_images": spec["chunk_images"],
        "compression": spec["compression"],
        "skipped_count": len(skipped),
        "skipped": skipped,
        "ignored_count": len(plan["ignored"]),
        "ignored": plan["ignored"],
        "sources": plan["sources"],
        "spec": spec,
    }
    write_json(out, manifest)
    return manifest


def prepare_dataset(name: str, spec: dict, resolution: int, shard: str | os.PathLike, manifest: str | os.PathLike,
                    raw_dir: str | os.PathLike | None = None) -> dict:
    """All three steps in one process, into a single shard file and its manifest; returns the manifest."""
    plan = make_plan(name, spec, raw_dir)
    write_shard(plan, resolution, 0, 1, shard, log=lambda message: None)
    return write_manifest(plan, resolution, [shard], manifest)
