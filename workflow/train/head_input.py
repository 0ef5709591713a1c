"""What a stage trains on: cached backbone features or the images. Torch-free: the Snakefile (which
features a cell's job needs), `python -m workflow cells` and training all ask `head_stage_path`.

A stage that trains the head alone trains on the cached features (workflow.train.features) exactly when
that is what the images would give it: the backbone is frozen and in eval mode (`train: head`, no earlier
stage changed it), the head reads an output of the backbone a features file holds (`features_pooling`: the
pooled features of `gap`, `mlp` or a timm model's own linear head, or what a head of layers' first layer pools),
and nothing changes the input per epoch (no augmentation, no mixup); the backbone's starting weights are the
same for every seed (ImageNet's, a timm tag's or a pretrain cell's, never `none`'s random ones).
"""

from __future__ import annotations

from workflow.core.cell import PRETRAIN_PREFIX, Cell
from workflow.core.catalogue import timm_name
from workflow.core.paths import POOLED

FEATURES, IMAGES = "features", "images"
AUGMENTS = ("hflip", "vflip", "rot90", "crop", "shift", "zoom", "rotation", "shear")  # on when set (Augment.active)


def head_stage_path(cell: Cell, index: int) -> tuple[str, str]:
    """(FEATURES or IMAGES, why) for stage `index` of `cell`."""
    stages = cell.stages()
    stage, training = stages[index], cell.training
    if stage["train"] != "head":
        return IMAGES, f"trains {stage['train']!r}, not the head alone"
    changed = [earlier["name"] for earlier in stages[:index] if earlier["train"] != "head"]
    if changed:
        return IMAGES, f"stage {changed[0]!r} before it trains the backbone"
    if features_pooling(cell) is None:
        return IMAGES, "the 'own' head reads the model's own classifier input, not the pooled features"
    augments = [key for key in AUGMENTS if training.augment.get(key)]
    if augments:
        return IMAGES, f"training.augment ({', '.join(augments)}) changes the images every epoch"
    if training.mixup > 0:
        return IMAGES, "mixup blends the images of every batch"
    unfixed = unfixed_weights(cell)
    if unfixed:
        return IMAGES, unfixed
    return FEATURES, "frozen backbone in eval mode, no augmentation or mixup: the same features every epoch"


def features_pooling(cell: Cell) -> str | None:
    """What of the backbone's output the cell's head reads, as its features file says (`paths.features_name`):
    POOLED, the backbone's pooled features, for `gap`, `mlp`, a timm model's own linear head and a torchvision
    head of layers whose first layer is `gap` (`pool_backbone` keeps the model's own global average pool, as
    the named heads do); else a head of layers' first layer (`gap` on a timm model, which pools by average
    whatever its own pooling, `gmp`, `flatten`: the pooled or flattened output or the feature map the model
    hands on); None for a torchvision `own` head, which reads its own classifier's input."""
    head = cell.training.head
    if isinstance(head, dict):
        pooling = head["layers"][0]
        return POOLED if pooling == "gap" and timm_name(cell.model) is None else pooling
    return POOLED if head != "own" or timm_name(cell.model) is not None else None


def unfixed_weights(cell: Cell, ranked: bool = False) -> str | None:
    """Why no features file holds what `cell`'s backbone starts from (None when one does: ImageNet's, a timm
    tag's or a pretrain cell's weights, the same for every seed, or `weights: none` for a ranking's candidate,
    `ranked`: scored on one backbone drawn with its seed)."""
    if cell.weights == "none":
        return None if ranked else "weights: none draws the backbone's weights from the seed"
    if cell.weights != "imagenet" and not cell.weights.startswith(PRETRAIN_PREFIX):
        return "starting weights from a file: no cached features for them"
    return None


def features_source(cell: Cell, ranked: bool = False) -> bool:
    """Whether a features job can compute the features `cell`'s head reads: a head that reads them (not a
    torchvision `own` head) and starting weights it has features of (`unfixed_weights`)."""
    return features_pooling(cell) is not None and unfixed_weights(cell, ranked) is None


def stage_paths(cell: Cell) -> dict[str, tuple[str, str]]:
    """{stage name: (path, why)} of every stage of `cell`."""
    return {stage["name"]: head_stage_path(cell, index) for index, stage in enumerate(cell.stages())}


def needs_features(cell: Cell) -> bool:
    """Whether some stage of `cell` trains on cached features."""
    return any(path == FEATURES for path, _ in stage_paths(cell).values())


def features_summary(cell: Cell) -> str:
    """One short line for `cells`: each stage's input, `head: features, finetune: images`."""
    return ", ".join(f"{name}: {path}" for name, (path, _) in stage_paths(cell).items())


def input_notes(cells) -> list[str]:
    """Why each stage trains on what it does, once per distinct reason among `cells`: lines for `cells`."""
    notes = {}
    for cell in cells:
        for name, (path, reason) in stage_paths(cell).items():
            notes.setdefault(f"stage {name} on the {path}: {reason}", None)
    return list(notes)
