"""How many parameters each stage of a cell trains, counted on its model before any training."""

from __future__ import annotations

import json
from dataclasses import dataclass

from torch import nn

from workflow.core.cell import Cell
from workflow.data.datasets import configured_classes
from workflow.train.errors import CellError
from workflow.train.keras_depth import keras_counterpart
from workflow.train.models import build_classifier, set_trainable


def stage_trainable_parameters(cell: Cell, num_classes: int) -> dict[str, int]:
    """Trainable parameters per stage name of a cell, its model built with its head, dropout and
    resolution but random weights (the counts do not depend on them)."""
    return {stage: count.total for stage, count in stage_counts(cell, num_classes).items()}


@dataclass(frozen=True)
class StageCount:
    """A stage's trainable parameters (`total`), of them InceptionV3's auxiliary classifier's (`auxiliary`,
    which Keras's InceptionV3 does not have) and the batch-norm scales Keras's InceptionV3 lacks (its batch
    norms have `scale=False`): `total - auxiliary - unscaled` is Keras's count of the same model."""

    total: int
    auxiliary: int = 0
    unscaled: int = 0

    def __str__(self) -> str:
        if not (self.auxiliary or self.unscaled):
            return f"{self.total:,}"
        auxiliary = f" + {self.auxiliary:,} auxiliary" if self.auxiliary else ""
        return f"{self.total - self.auxiliary:,}{auxiliary} (Keras {self.total - self.auxiliary - self.unscaled:,})"


def stage_counts(cell: Cell, num_classes: int) -> dict[str, StageCount]:
    """Each stage's `StageCount`, on the cell's model with random weights (`stage_trainable_parameters`)."""
    model, _ = build_classifier(cell.model, num_classes, "none", cell.training.dropout, head=cell.training.head,
                                resolution=cell.resolution)
    inception = keras_counterpart(model.backbone) == "inception_v3"
    counts = {}
    for stage in cell.stages():
        set_trainable(model, stage["train"])
        trainable = {name: p.numel() for name, p in model.named_parameters() if p.requires_grad}
        auxiliary = sum(n for name, n in trainable.items() if name.startswith(AUXILIARY))
        unscaled = sum(module.weight.numel() for name, module in model.backbone.named_modules()
                       if inception and isinstance(module, nn.BatchNorm2d) and module.weight.requires_grad
                       and not f"backbone.{name}".startswith(AUXILIARY))
        counts[stage["name"]] = StageCount(sum(trainable.values()), auxiliary, unscaled)
    return counts


AUXILIARY = "backbone.AuxLogits."  # InceptionV3's auxiliary classifier


def dataset_classes(study, name: str) -> int | None:
    """How many classes a dataset has: from its plan once planned, else from its config; None when only
    its files can tell (an image folder not yet planned)."""
    plan = study.plan_path(name)
    if plan.exists():
        return len(json.loads(plan.read_text())["class_names"])
    return configured_classes(study.dataset(name))


def trainable_column(study) -> tuple[dict[str, str], bool]:
    """Per cell id its trainable parameters per stage (`head 12,810 / finetune 11,181,642`; InceptionV3's
    as `StageCount` writes them: auxiliary classifier apart, Keras's count beside), and whether
    some counts assume 2 classes (a dataset whose classes are not known before it is planned)."""
    counted: dict[tuple, dict[str, StageCount] | CellError] = {}
    column, assumed = {}, False
    for cell in study.cells.values():
        classes = dataset_classes(study, cell.dataset)
        assumed = assumed or classes is None
        key = (cell.model, cell.resolution, cell.train, cell.optimizer, classes or 2,
               json.dumps(cell.training.as_mapping(), sort_keys=True, default=str))
        if key not in counted:
            try:
                counted[key] = stage_counts(cell, classes or 2)
            except CellError as error:  # a cell its job would record as failed: a head its model cannot take
                counted[key] = error
        found = counted[key]
        column[cell.id] = (f"cannot train: {found}" if isinstance(found, CellError)
                           else " / ".join(f"{stage} {count}" for stage, count in found.items()))
    return column, assumed
