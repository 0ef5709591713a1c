"""Prepare a dataset in three steps, each a job of its own in the workflow.

1. plan (workflow.data.plan): check the source files against their checksums,
   list the source, keep the configured classes and (for sources whose files
   may not decode) the images that decode, assign train/val/test (the source's
   split, val carved out of train, or stratified fractions; groups kept in one
   split), draw per-class subsets, and put each split in a seeded random order
   (so that reading blocks of consecutive images still gives mixed classes).
2. shard i of n: decode, resize and write the i-th slice of every split, the
   plan's images read by key (never by position in a fresh listing).
   Undecodable images are skipped and listed, never fatal.
3. manifest: check every shard against the plan and its checksums, and write
   the manifest that joins them (counts per class and split, skipped and ignored
   files, source checksums, resize method).

`prepare_files` decodes and resizes image files exactly as step 2 does, for images that a trained
model is to classify (workflow.export.predict).
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path

import numpy as np

from workflow.atomic import write_json
from workflow.data.plan import make_plan, plan_sha256
from workflow.data.resize import RESIZE_METHODS, resize_images
from workflow.data.shards import shard_writer, verify_shard
from workflow.data.sources import Skipped, get_source
from workflow.data.sources.images import decode
from workflow.data.splits import SPLITS

__all__ = ["make_plan", "prepare_dataset", "prepare_files", "resize_block", "resize_mode", "write_manifest", "write_shard"]

RESIZE_BLOCK = 512  # images decoded and resized together


def resize_mode(spec: dict) -> str:
    """A dataset's resize mode: its `resize` key, stretch when not set (it is not filled by default,
    so that the plans of datasets without it stay as they were)."""
    return spec.get("resize") or "stretch"


def resize_block(block: list, resolution: int, mode: str = "stretch") -> tuple[np.ndarray, list[int], list[Skipped]]:
    """Resize a block of decoded images as a shard stores them (`mode` stretch or crop), leaving out those that
    did not decode (Skipped): (uint8 images (n, resolution, resolution, 3), positions in `block` kept, the Skipped)."""
    good = [i for i, image in enumerate(block) if not isinstance(image, Skipped)]
    skipped = [image for image in block if isinstance(image, Skipped)]
    return resize_images([block[i] for i in good], resolution, mode), good, skipped


def prepare_files(paths: list, resolution: int, mode: str = "stretch") -> tuple[np.ndarray, list[int], list[Skipped]]:
    """Decode image files and resize them as `write_shard` does a dataset's (`resize_block`, `mode` as
    its manifest's); a file that does not decode is Skipped (keyed by its path as given), not an error."""
    return resize_block([decode(path, str(path)) for path in paths], resolution, mode)


def write_shard(plan: dict, resolution: int, part: int, parts: int, out: str | os.PathLike, log=print,
                here: dict | None = None) -> list[dict]:
    """Decode, resize and write the `part`-th of `parts` slices of every split into one shard file; returns
    the files it skipped (they do not decode, or vanished since the plan). `here`: the plan's `spec` and
    `raw_dir` usable from the working folder, where the plan records them as its data folder sees them
    (workflow.study.grid.definition_here)."""
    if not 0 <= part < parts:
        raise ValueError(f"shard {part} of {parts} does not exist")
    spec = plan["spec"]
    read = get_source(spec["source"]).plan_reader({**plan, **(here or {})})  # the plan's images by key
    # a plan from before keys were recorded (a downloaded source's, never re-planned) holds catalogue positions
    slices = {split: (np.array_split(np.asarray(entry.get("keys", entry["indices"]), object), parts)[part],
                      np.array_split(np.asarray(entry["labels"], np.int64), parts)[part])
              for split, entry in plan["splits"].items()}
    skipped, mode = [], resize_mode(spec)
    attrs = {"dataset": plan["dataset"], "resolution": resolution, "resize_method": RESIZE_METHODS[mode],
             "class_names": json.dumps(plan["class_names"]), "part": part, "parts": parts,
             "plan_sha256": plan_sha256(plan), "skipped": skipped}
    compression = None if spec["compression"] == "none" else spec["compression"]
    capacity = {split: len(keys) for split, (keys, _) in slices.items()}
    started = time.perf_counter()
    with shard_writer(out, capacity, resolution, attrs, spec["chunk_images"], compression) as writers:
        for split, (keys, labels) in slices.items():
            for start in range(0, len(keys), RESIZE_BLOCK):
                images, good, bad = resize_block(read(list(keys[start:start + RESIZE_BLOCK])), resolution, mode)
                skipped += [{"file": image.key, "reason": image.reason, "split": split} for image in bad]
                writers[split].add(images, labels[start:start + RESIZE_BLOCK][good])
            log(f"{split}: {len(keys)} images read ({time.perf_counter() - started:.1f} s)")
    log(f"shard {part} of {parts}: {len(skipped)} skipped")
    return skipped


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
        "resize_method": RESIZE_METHODS[resize_mode(spec)],
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
        "sources": [{key: value for key, value in record.items() if key != "stats"} for record in plan["sources"]],
        "groups": plan.get("groups"),
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
