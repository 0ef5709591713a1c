"""A study's training settings: a cell's, from the study's `training`, its swept values and its own, and the
rules across training keys that the schema cannot express (the keys and defaults: workflow.core.cell)."""

from __future__ import annotations

from workflow.core.cell import DEFAULT_TRAINING, TrainingSettings, merge
from workflow.core.heads import head_error
from workflow.study.config import ConfigError


def check_training(training: dict, where: str) -> None:
    """Rules across training keys that the schema cannot express; `where` names the key in errors."""
    names = [stage["name"] for stage in training["stages"]]
    repeated = sorted({name for name in names if names.count(name) > 1})
    if repeated:
        raise ConfigError(f"{where}.stages: stage names must differ; {repeated} repeat")
    problem = head_error(training["head"], f"{where}.head")
    if problem:
        raise ConfigError(problem)
    if training["head"] == "own" and training["dropout"] is not None:
        raise ConfigError(f"{where}.dropout: the 'own' head keeps the model's own dropout; leave dropout unset")
    if isinstance(training["head"], dict) and training["dropout"] is not None:
        raise ConfigError(f"{where}.dropout: a head of layers lists its own dropout layers; leave dropout unset")
    typed = TrainingSettings.from_mapping(training)
    for stage in typed.stages:
        settings = typed.stage(stage, "sgd", "all")
        if settings["nesterov"] and settings["momentum"] == 0:
            raise ConfigError(f"{where}: stage {stage['name']!r} asks for nesterov with momentum 0")


def cell_training(training: dict, swept: dict, own: dict) -> tuple[dict, dict]:
    """A cell's training settings and the top-level keys where they differ from the study's `training`:
    the study's, with the cell's swept values (grid.training) and its own settings (from `include`
    and `overrides`, deep-merged) on top."""
    resolved = merge(merge(training, swept), own)
    differ = {key: resolved[key] for key in resolved if resolved[key] != training[key]}
    return resolved, differ


def check_swept_keys(swept: dict) -> None:
    """The training keys a grid sweeps (grid.training) must be training keys."""
    unknown = sorted(set(swept) - set(DEFAULT_TRAINING))
    if unknown:
        raise ConfigError(f"grid.training: unknown training keys {unknown}; known: {sorted(DEFAULT_TRAINING)}")
    for i, head in enumerate(swept.get("head", [])):
        problem = head_error(head, f"grid.training.head[{i}]")
        if problem:
            raise ConfigError(problem)
