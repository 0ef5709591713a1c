"""How many parameters each stage of a cell trains, counted on its model before any training."""

from __future__ import annotations

from workflow.study.settings import stage_settings
from workflow.train.models import build_classifier, set_trainable


def stage_trainable_parameters(cell: dict, num_classes: int) -> dict[str, int]:
    """Trainable parameters per stage name of a cell (`Cell.to_dict()`), its model built with its head,
    dropout and resolution but random weights (the counts do not depend on them)."""
    training = cell["training"]
    model, _ = build_classifier(cell["model"], num_classes, "none", training["dropout"], head=training["head"],
                                resolution=cell["resolution"])
    counts = {}
    for stage in training["stages"]:
        set_trainable(model, stage_settings(training, stage, cell["optimizer"], cell["train"])["train"])
        counts[stage["name"]] = sum(p.numel() for p in model.parameters() if p.requires_grad)
    return counts
