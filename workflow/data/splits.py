"""Stratified, seeded train/val/test assignment."""

from __future__ import annotations

import numpy as np

SPLITS = ("train", "val", "test")


def stratified_split(labels: np.ndarray, fractions: dict[str, float], seed: int) -> dict[str, np.ndarray]:
    """Split indices of `labels` so that each class is divided by `fractions`.

    Returns sorted index arrays for "train", "val" and "test". Every class gets
    at least one training image; rounding leftovers go to test.
    """
    rng = np.random.default_rng(seed)
    parts: dict[str, list[np.ndarray]] = {name: [] for name in SPLITS}
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        n_train = max(1, round(len(members) * fractions["train"]))
        n_val = round(len(members) * fractions["val"])
        parts["train"].append(members[:n_train])
        parts["val"].append(members[n_train:n_train + n_val])
        parts["test"].append(members[n_train + n_val:])
    return {name: np.sort(np.concatenate(chunks)) for name, chunks in parts.items()}


def carve(labels: np.ndarray, fraction: float, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Indices of `labels` as (kept, carved): round(fraction x n) of each class carved out, seeded."""
    rng = np.random.default_rng(seed)
    kept, carved = [], []
    for label in np.unique(labels):
        members = rng.permutation(np.flatnonzero(labels == label))
        k = round(len(members) * fraction)
        carved.append(members[:k])
        kept.append(members[k:])
    return np.sort(np.concatenate(kept)), np.sort(np.concatenate(carved))


def by_group(labels: np.ndarray, groups: np.ndarray, assign) -> dict[str, np.ndarray]:
    """`assign(group labels)` applied to whole groups (each labelled by its most common class, so the
    fractions stratify groups), mapped back to image indices: no group lands in two splits."""
    names, group_of = np.unique(groups, return_inverse=True)
    majority = np.array([np.bincount(labels[group_of == g]).argmax() for g in range(len(names))], np.int64)
    return {split: np.flatnonzero(np.isin(group_of, chosen)) for split, chosen in assign(majority).items()}


def assign_splits(labels: np.ndarray, source_splits: np.ndarray, spec: dict, where: str,
                  groups: np.ndarray | None = None) -> dict[str, np.ndarray]:
    """Indices per split: the source's own split, `val_fraction` carved out of train where the
    source has train and test only, or `split` fractions where it has none; with `groups`, the
    fractions and the carving move whole groups. `where` names the dataset in errors."""
    present = set(np.unique(source_splits).tolist()) if len(source_splits) else set()
    if groups is not None and present <= {""}:
        return by_group(labels, groups, lambda group_labels: stratified_split(group_labels, spec["split"], spec["seed"]))
    if groups is not None and present == {"train", "test"}:
        train = np.flatnonzero(source_splits == "train")
        carved = by_group(labels[train], groups[train], lambda group_labels: dict(zip(
            ("train", "val"), carve(group_labels, spec["val_fraction"], spec["seed"]))))
        return {"train": train[carved["train"]], "val": train[carved["val"]],
                "test": np.flatnonzero(source_splits == "test")}
    return own_or_drawn(labels, source_splits, present, spec, where)


def own_or_drawn(labels: np.ndarray, source_splits: np.ndarray, present: set, spec: dict,
                 where: str) -> dict[str, np.ndarray]:
    """assign_splits without groups."""
    if present <= {""}:
        return stratified_split(labels, spec["split"], spec["seed"])
    if present == set(SPLITS):
        return {name: np.flatnonzero(source_splits == name) for name in SPLITS}
    if present == {"train", "test"}:
        train = np.flatnonzero(source_splits == "train")
        kept, carved = carve(labels[train], spec["val_fraction"], spec["seed"])
        return {"train": train[kept], "val": train[carved], "test": np.flatnonzero(source_splits == "test")}
    raise ValueError(f"{where}: the source has the splits {sorted(present)}; it needs train, val and test, "
                     "or train and test (val is then carved out of train), or none")
