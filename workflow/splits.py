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
