"""Checking a `weights:` file against the model of the cells it starts, when the config loads.

A cell whose `weights` names a file (a tlsweep checkpoint or a torchvision-format state dict) would
otherwise learn only at training time that the file holds another model. `check_weights_file` builds
the model on the meta device (no memory, no initialisation) and compares names and shapes the way
training loads them (workflow.train.models.build_classifier). Importing this module loads no torch;
calling the check does.
"""

from __future__ import annotations

import json
from pathlib import Path


class WeightsFileError(ValueError):
    """A `weights:` file that cannot start the model of a cell; the message names the file and model."""


def shape_problems(expected: dict, found: dict) -> list[str]:
    """How `found` {name: shape} differs from `expected`: missing names, then shapes that differ."""
    missing = [name for name in expected if name not in found]
    shapes = [f"{name} is {found[name]}, not {shape}" for name, shape in expected.items()
              if name in found and found[name] != shape]
    problems = [f"{len(missing)} weights missing, e.g. {missing[:3]}"] if missing else []
    return problems + ([f"{len(shapes)} of other shapes, e.g. {shapes[:2]}"] if shapes else [])


def shapes_of(state: dict) -> dict:
    return {name: tuple(tensor.shape) for name, tensor in state.items()}


def torchvision_problems(state: dict, model: str) -> list[str]:
    """How a torchvision-format state dict fails to load strictly into torchvision's `model`."""
    import torch
    import torchvision

    with torch.device("meta"):
        expected = shapes_of(getattr(torchvision.models, model)(weights=None).state_dict())
    found = shapes_of(state)
    extra = [name for name in found if name not in expected]
    return shape_problems(expected, found) + ([f"{len(extra)} unexpected, e.g. {extra[:3]}"] if extra else [])


def checkpoint_problems(checkpoint: dict, model: str, head: str | dict, resolution: int | None) -> list[str]:
    """How a tlsweep checkpoint fails to start `model` with `head`: every layer but the fresh ones
    (the head, unless both heads are `own`, and always its last layer) must be there, shaped alike."""
    import torch  # torch and the models only when a file is checked: the Snakefile imports this module

    from workflow.train.models import build_classifier

    if checkpoint["model_name"] != model:
        return [f"it holds a {checkpoint['model_name']!r} model"]
    try:
        with torch.device("meta"):  # shapes only, no memory
            target, _ = build_classifier(model, 2, "none", head=head, resolution=resolution)
    except NotImplementedError:  # a model whose constructor reads tensor values (RegNet's widths)
        target, _ = build_classifier(model, 2, "none", head=head, resolution=resolution)
    fresh = target.new_layers + (() if checkpoint.get("head") == head == "own" else ("head",))
    skip = tuple(layer + "." for layer in fresh)
    expected = {name: shape for name, shape in shapes_of(target.state_dict()).items() if not name.startswith(skip)}
    return shape_problems(expected, shapes_of(checkpoint["model"]))


def check_weights_file(path: str | Path, model: str, head: str | dict = "gap", resolution: int | None = None) -> None:
    """Refuse a `weights:` file that cannot start `model` (with `head`, at `resolution`): a missing
    file, a failed cell's marker, a file that is neither a tlsweep checkpoint nor a torchvision state
    dict, or one of another model. Raises WeightsFileError naming the file and the model."""
    from workflow.train.errors import StartingWeightsError
    from workflow.train.models import read_weights_file  # torch: only when there is a file to check

    if not Path(path).is_file():
        raise WeightsFileError(f"weights file {path} (for model {model!r}) does not exist")
    try:
        loaded = read_weights_file(path)
    except StartingWeightsError as error:
        raise WeightsFileError(f"weights file {path} cannot start model {model!r}: {error}") from None
    except Exception as error:  # torch.load's errors for a file that is no checkpoint at all
        raise WeightsFileError(f"weights file {path} is not a readable checkpoint ({error})") from None
    if "state_dict" in loaded:
        problems = torchvision_problems(loaded["state_dict"], model)
        kind = "torchvision state dict"
    else:
        problems = checkpoint_problems(loaded, model, head, resolution)
        kind = "tlsweep checkpoint"
    if problems:
        raise WeightsFileError(f"weights file {path} ({kind}) does not fit model {model!r}: {'; '.join(problems)}")


def check_study_weights(cells) -> None:
    """`check_weights_file` for every cell (workflow.study.grid.Cell) whose `weights` names a file
    (a pretrain cell's checkpoint does not exist yet), once per file, model, head and resolution."""
    checks = {(cell.weights, cell.model, json.dumps(cell.training.head, sort_keys=True), cell.resolution)
              for cell in cells if cell.weights not in ("imagenet", "none") and cell.upstream is None}
    for path, model, head, resolution in sorted(checks):  # a head of layers is a mapping: compared as JSON
        check_weights_file(path, model, head=json.loads(head), resolution=resolution)
