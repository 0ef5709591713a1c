"""A dataset's plan: its checked and listed source, the kept classes, the images known to decode, and
each one's split, by key (what shards read), in a seeded storage order."""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from pathlib import Path

import numpy as np

from workflow.data.datasets import resolve_dataset
from workflow.data.sources import Skipped, get_source
from workflow.data.splits import SPLITS, assign_splits

DECODE_BLOCK = 512  # images decoded together when the plan checks them


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


def take_per_class(catalogue, indices: np.ndarray, labels: np.ndarray, n: int, rng, where: str, class_names):
    """At most `n` decodable images of each class, drawn in a seeded order; decoding checks
    the candidates so that undecodable ones are replaced. Returns indices, labels, skipped."""
    chosen, skipped = [], []
    for label in np.unique(labels):
        candidates = rng.permutation(indices[labels == label])
        good = []
        while len(good) < n and len(candidates):
            batch, candidates = candidates[:n - len(good)], candidates[n - len(good):]
            for index, image in zip(batch, catalogue.read(batch)):
                if isinstance(image, Skipped):
                    skipped.append({"file": image.key, "reason": image.reason})
                else:
                    good.append(index)
        if len(good) < n:
            raise ValueError(f"{where}: class {class_names[label]!r} has {len(good)} decodable images, {n} requested")
        chosen.append(np.array(good, np.int64))
    kept = np.sort(np.concatenate(chosen))
    return kept, labels[np.searchsorted(indices, kept)], skipped


def drop_undecodable(catalogue, keep: np.ndarray, labels: np.ndarray):
    """The positions of `keep` whose images decode, their labels, and the Skipped ones as records."""
    good, skipped = np.ones(len(keep), bool), []
    for start in range(0, len(keep), DECODE_BLOCK):
        for offset, image in enumerate(catalogue.read(keep[start:start + DECODE_BLOCK])):
            if isinstance(image, Skipped):
                good[start + offset] = False
                skipped.append({"file": image.key, "reason": image.reason})
    return keep[good], labels[good], skipped


def group_record(spec: dict, groups: np.ndarray | None, assigned: dict) -> dict | None:
    """How many groups (of `group_column`) each split holds, or None without groups."""
    if groups is None:
        return None
    return {"column": spec.get("group_column"),
            "counts": {split: len(np.unique(groups[assigned[split]])) for split in SPLITS}}


def make_plan(name: str, spec: dict, raw_dir: str | os.PathLike | None, fingerprint: str | None = None) -> dict:
    """Check and list the source, keep the images that decode and assign each to a split, in storage order;
    `fingerprint`, where given, must be that of the files listed (else they changed since Snakemake looked)."""
    spec = resolve_dataset(name, spec)
    raw_dir = Path(raw_dir) if raw_dir is not None else None
    source = get_source(spec["source"])
    records = source.source_records(spec, raw_dir)  # checksums first: a bad file is not opened
    catalogue = source.open_catalogue(raw_dir, spec)
    listed = [record["fingerprint"] for record in catalogue.sources]
    if fingerprint and listed != [fingerprint]:
        raise ValueError(f"datasets.{name}.path: {spec['path']} changed while it was being planned; run again")
    keep, labels, class_names = select_classes(catalogue.labels, catalogue.class_names, spec["classes"],
                                               f"datasets.{name}")
    skipped = []
    if source.DECODES:  # splits are drawn from the images known to decode (so skipping cannot unbalance them)
        keep, labels, skipped = drop_undecodable(catalogue, keep, labels)
    groups = None if catalogue.groups is None else catalogue.groups[keep]
    assigned = assign_splits(labels, catalogue.splits[keep], spec, f"datasets.{name}", groups)
    splits = {}
    for i, split in enumerate(SPLITS):
        rng = np.random.default_rng([spec["seed"], i])
        indices, split_labels = keep[assigned[split]], labels[assigned[split]]
        cap = (spec["per_class"] or {}).get(split)
        if cap:
            indices, split_labels, bad = take_per_class(catalogue, indices, split_labels, cap, rng,
                                                        f"datasets.{name}.per_class.{split}", class_names)
            skipped += [{**entry, "split": split} for entry in bad]
        if len(indices) == 0:
            raise ValueError(f"datasets.{name}: split {split!r} is empty ({len(keep)} images in all)")
        order = rng.permutation(len(indices))
        splits[split] = {"indices": indices[order].tolist(), "labels": split_labels[order].tolist(),
                         "keys": [catalogue.keys[i] for i in indices[order]]}
    return {
        "dataset": name, "spec": spec, "raw_dir": str(raw_dir) if raw_dir else None, "class_names": class_names,
        "splits": splits, "skipped": skipped, "ignored": catalogue.ignored, "sources": records + catalogue.sources,
        "groups": group_record(spec, groups, assigned),
    }


def plan_sha256(plan: dict) -> str:
    """A plan's identity, recorded in every shard written from it."""
    return hashlib.sha256(json.dumps(plan, sort_keys=True).encode()).hexdigest()


NEVER = {"train": "trained on", "val": "validated", "test": "tested"}
NOT_READ = ("not a regular file", "a link to nothing", "cannot be read")  # ignored entries that are skipped files


def skip_kind(reason: str) -> str:
    """How a skipped file's reason is counted on the console: truncated, not a regular file, or unreadable."""
    if "truncated" in reason or "broken data stream" in reason:
        return "truncated"
    if "not a regular file" in reason or reason.startswith("a link to nothing"):
        return "not a regular file"
    return "unreadable"


def skipped_note(dataset: str, skipped: list[dict], listed_in) -> str | None:
    """One console line counting `skipped` files by kind (`skip_kind`) and saying where they are listed
    (`listed_in`), or None when none was skipped."""
    if not skipped:
        return None
    kinds = Counter(skip_kind(entry["reason"]) for entry in skipped)
    counts = ", ".join(f"{kind} {n}" for kind, n in sorted(kinds.items(), key=lambda item: (-item[1], item[0])))
    return f"{dataset}: {len(skipped)} image{'s' * (len(skipped) != 1)} skipped ({counts}); {listed_in}"


def plan_notes(plan: dict, plan_file) -> list[str]:
    """What the plan job says on Snakemake's console: how many files it skipped (undecodable, special or
    unreadable ones; `plan_file` lists them), and each class that some split holds no image of."""
    skipped = plan["skipped"] + [entry for entry in plan["ignored"] if entry["reason"].startswith(NOT_READ)]
    notes = [note] if (note := skipped_note(plan["dataset"], skipped, f"list: {plan_file}")) else []
    counts = {split: np.bincount(entry["labels"], minlength=len(plan["class_names"]))
              for split, entry in plan["splits"].items()}
    for label, name in enumerate(plan["class_names"]):
        held = {split: int(counts[split][label]) for split in SPLITS}
        if 0 in held.values():
            total = sum(held.values())
            never = " or ".join(NEVER[split] for split in SPLITS if not held[split])
            notes.append(f"datasets.{plan['dataset']}: class {name!r} has {total} image{'s' * (total != 1)} ("
                         + ", ".join(f"{split} {n}" for split, n in held.items())
                         + f"): it is never {never}; add images, or leave it out with `classes`")
    return notes
