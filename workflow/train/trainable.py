"""How many parameters each stage of a cell trains, counted on its model before any training."""

from __future__ import annotations

import json

from workflow.core.cell import Cell
from workflow.data.datasets import configured_classes
from workflow.train.models import build_classifier, set_trainable


def stage_trainable_parameters(cell: Cell, num_classes: int) -> dict[str, int]:
    """Trainable parameters per stage name of a cell, its model built with its head, dropout and
    resolution but random weights (the counts do not depend on them)."""
    model, _ = build_classifier(cell.model, num_classes, "none", cell.training.dropout, head=cell.training.head,
                                resolution=cell.resolution)
    counts = {}
    for stage in cell.stages():
        set_trainable(model, stage["train"])
        counts[stage["name"]] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts


def dataset_classes(study, name: str) -> int | None:
    """How many classes a dataset has: from its plan once planned, else from its config; None when only
    its files can tell (an image folder not yet planned)."""
    plan = study.plan_path(name)
    if plan.exists():
        return len(json.loads(plan.read_text())["class_names"])
    return configured_classes(study.dataset(name))


def trainable_column(study) -> tuple[dict[str, str], bool]:
    """Per cell id its trainable parameters per stage (`head 12,810 / finetune 11,181,642`), and whether
    some counts assume 2 classes (a dataset whose classes are not known before it is planned)."""
    counted: dict[tuple, dict[str, int]] = {}
    column, assumed = {}, False
    for cell in study.cells.values():
        classes = dataset_classes(study, cell.dataset)
        assumed = assumed or classes is None
        key = (cell.model, cell.resolution, cell.train, cell.optimizer, classes or 2,
               json.dumps(cell.training.as_mapping(), sort_keys=True, default=str))
        if key not in counted:
            counted[key] = stage_trainable_parameters(cell, classes or 2)
        column[cell.id] = " / ".join(f"{stage} {count:,}" for stage, count in counted[key].items())
    return column, assumed
