"""The head language: a new classifier written as a list of layers, as a paper built it (torch-free).

`training.head` is `gap`, `mlp` or `own` (workflow.train.models builds those), or a mapping::

    head:
      layers:                             # after the backbone's feature map, in order
        - gap                             # the pooling, first and only there: gap | gmp | flatten
        - {dense: 256, activation: relu}  # a fully connected layer (activation default linear)
        - batch_norm                      # over the features before it
        - {dropout: 0.2}
        - {activation: relu}              # an activation on its own (after a batch norm)
      output: softmax                     # one unit per class (default), or sigmoid: one unit, two classes

The output layer is added after the listed ones. Counts follow Keras: a dense layer holds
in x units + units parameters, a batch norm 4 x width of which 2 x width (its scale and shift) train,
a sigmoid output is Dense(1) trained with binary cross-entropy. `canonical_head` gives the form a cell
records (activation and output written out), so two spellings of one head are one cell.
"""

from __future__ import annotations

import hashlib
import json

HEADS = ("gap", "mlp", "own")
POOLINGS = ("gap", "gmp", "flatten")
ACTIVATIONS = ("linear", "relu", "elu", "gelu", "selu", "silu", "swish", "tanh", "sigmoid", "softplus")
OUTPUTS = ("softmax", "sigmoid")


def head_error(head, where: str = "training.head") -> str | None:
    """Why `head` is no head (naming the key under `where`), or None."""
    if isinstance(head, str):
        return None if head in HEADS else f"{where}: unknown head {head!r}; choose {list(HEADS)} or a mapping of layers"
    if not isinstance(head, dict):
        return f"{where}: a head is {list(HEADS)} or a mapping with `layers` (and `output`)"
    unknown = sorted(set(head) - {"layers", "output"})
    if unknown:
        return f"{where}: unknown keys {unknown}; a head takes `layers` and `output`"
    if head.get("output", "softmax") not in OUTPUTS:
        return f"{where}.output: {head['output']!r} is none of {list(OUTPUTS)}"
    layers = head.get("layers")
    if not isinstance(layers, list) or not layers:
        return f"{where}.layers: a list of layers, the pooling ({' | '.join(POOLINGS)}) first"
    if layers[0] not in POOLINGS:
        return f"{where}.layers[0]: the first layer is the pooling, one of {list(POOLINGS)}, not {layers[0]!r}"
    for i, layer in enumerate(layers[1:], start=1):
        problem = _layer_error(layer)
        if problem:
            return f"{where}.layers[{i}]: {problem}"
    return None


def _layer_error(layer) -> str | None:
    if layer in POOLINGS:
        return f"{layer!r}: the pooling comes first and once"
    if layer == "batch_norm":
        return None
    if not isinstance(layer, dict) or not layer:
        return f"{layer!r} is no layer; write batch_norm, {{dense: N, activation: A}}, {{dropout: P}} or {{activation: A}}"
    kind = next(iter(layer)) if "dense" not in layer else "dense"
    allowed = {"dense": {"dense", "activation"}, "dropout": {"dropout"}, "activation": {"activation"}}.get(kind)
    if allowed is None or set(layer) - allowed:
        return f"{layer!r} is no layer; write batch_norm, {{dense: N, activation: A}}, {{dropout: P}} or {{activation: A}}"
    if kind == "dense" and not (isinstance(layer["dense"], int) and not isinstance(layer["dense"], bool)
                                and layer["dense"] >= 1):
        return f"dense: {layer['dense']!r} is not a whole number of units, at least 1"
    if kind == "dropout" and not (isinstance(layer["dropout"], (int, float)) and 0 <= layer["dropout"] < 1):
        return f"dropout: {layer['dropout']!r} is not a rate in [0, 1)"
    if layer.get("activation", "linear") not in ACTIVATIONS:
        return f"activation: {layer['activation']!r} is none of {list(ACTIVATIONS)}"
    return None


def canonical_head(head):
    """A named head as it is; a head of layers checked (ValueError naming the key) and written out in full:
    every dense layer with its activation, the output named."""
    problem = head_error(head)
    if problem:
        raise ValueError(problem)
    if isinstance(head, str):
        return head
    layers = [{"dense": layer["dense"], "activation": layer.get("activation", "linear")}
              if isinstance(layer, dict) and "dense" in layer else layer for layer in head["layers"]]
    return {"layers": layers, "output": head.get("output", "softmax")}


def head_parameterised_layers(head) -> int:
    """The layers a head of layers adds to what `train: last:N` counts: its dense layers, its batch norms
    and the output layer."""
    layers = canonical_head(head)["layers"]
    return 1 + sum(1 for layer in layers if layer == "batch_norm" or (isinstance(layer, dict) and "dense" in layer))


def output_classes_error(head, classes: int | None) -> str | None:
    """Why a head cannot score `classes` classes (a sigmoid output scores two), or None (also when unknown)."""
    if isinstance(head, dict) and head.get("output") == "sigmoid" and classes is not None and classes != 2:
        return f"a sigmoid output is one unit and scores two classes, not {classes}"
    return None


def head_name(head) -> str:
    """A short name of a head for file names and labels: the named head, or `layers<6 hex digits>`."""
    if isinstance(head, str):
        return head
    return "layers" + hashlib.sha1(json.dumps(canonical_head(head), sort_keys=True).encode()).hexdigest()[:6]
