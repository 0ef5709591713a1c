"""keras.applications.InceptionV3 (without its top) as Keras orders its layers, for `keras:N`.

The graph is transcribed from keras/src/applications/inception_v3.py (keras-team/keras
3422977a): every `conv2d_bn` is a Conv2D, a BatchNormalization and an Activation, unnamed layers
get Keras's automatic names (`conv2d`, `conv2d_1`, ...), each layer is mapped to the torchvision
Inception3 module that holds its weights (the BasicConv2d's `.conv` and `.bn`). torchvision's
blocks have the same branches and convolutions; they differ in weights-free details only (Keras's
batch norms have no scale, its "same" average pooling leaves the padding out of the mean) and in
torchvision's AuxLogits, which Keras has not. `model.layers` is not creation order: `map_graph` in
keras/src/ops/function.py sorts layers by depth (the most layers between a layer and the output
first) and a depth's layers by the order a depth-first walk from the output first meets them;
`keras_order` does the same.
"""

from __future__ import annotations

from collections import Counter, defaultdict


class _KerasGraph:
    """Layers in creation order: Keras name -> (input layers, torchvision module or None)."""

    def __init__(self) -> None:
        self.layers: dict[str, tuple[list[str], str | None]] = {}
        self._unnamed: Counter[str] = Counter()

    def add(self, kind: str, inputs: list[str], module: str | None = None, name: str | None = None) -> str:
        if name is None:
            count = self._unnamed[kind]
            self._unnamed[kind] += 1
            name = kind if count == 0 else f"{kind}_{count}"
        self.layers[name] = (inputs, module)
        return name

    def conv_bn(self, tensor: str, module: str) -> str:
        conv = self.add("conv2d", [tensor], f"{module}.conv")
        return self.add("activation", [self.add("batch_normalization", [conv], f"{module}.bn")])

    def chain(self, tensor: str, modules: list[str]) -> str:
        for module in modules:
            tensor = self.conv_bn(tensor, module)
        return tensor


def _block_a(graph: _KerasGraph, x: str, block: str, name: str) -> str:
    """mixed0..mixed2: torchvision's InceptionA."""
    branch1x1 = graph.conv_bn(x, f"{block}.branch1x1")
    branch5x5 = graph.chain(x, [f"{block}.branch5x5_{i}" for i in (1, 2)])
    branch3x3dbl = graph.chain(x, [f"{block}.branch3x3dbl_{i}" for i in (1, 2, 3)])
    branch_pool = graph.conv_bn(graph.add("average_pooling2d", [x]), f"{block}.branch_pool")
    return graph.add("concatenate", [branch1x1, branch5x5, branch3x3dbl, branch_pool], name=name)


def _block_b(graph: _KerasGraph, x: str) -> str:
    """mixed3: torchvision's InceptionB (Mixed_6a)."""
    branch3x3 = graph.conv_bn(x, "Mixed_6a.branch3x3")
    branch3x3dbl = graph.chain(x, [f"Mixed_6a.branch3x3dbl_{i}" for i in (1, 2, 3)])
    branch_pool = graph.add("max_pooling2d", [x])
    return graph.add("concatenate", [branch3x3, branch3x3dbl, branch_pool], name="mixed3")


def _block_c(graph: _KerasGraph, x: str, block: str, name: str) -> str:
    """mixed4..mixed7: torchvision's InceptionC."""
    branch1x1 = graph.conv_bn(x, f"{block}.branch1x1")
    branch7x7 = graph.chain(x, [f"{block}.branch7x7_{i}" for i in (1, 2, 3)])
    branch7x7dbl = graph.chain(x, [f"{block}.branch7x7dbl_{i}" for i in (1, 2, 3, 4, 5)])
    branch_pool = graph.conv_bn(graph.add("average_pooling2d", [x]), f"{block}.branch_pool")
    return graph.add("concatenate", [branch1x1, branch7x7, branch7x7dbl, branch_pool], name=name)


def _block_d(graph: _KerasGraph, x: str) -> str:
    """mixed8: torchvision's InceptionD (Mixed_7a)."""
    branch3x3 = graph.chain(x, [f"Mixed_7a.branch3x3_{i}" for i in (1, 2)])
    branch7x7x3 = graph.chain(x, [f"Mixed_7a.branch7x7x3_{i}" for i in (1, 2, 3, 4)])
    branch_pool = graph.add("max_pooling2d", [x])
    return graph.add("concatenate", [branch3x3, branch7x7x3, branch_pool], name="mixed8")


def _block_e(graph: _KerasGraph, x: str, block: str, index: int) -> str:
    """mixed9 and mixed10: torchvision's InceptionE (Mixed_7b, Mixed_7c)."""
    branch1x1 = graph.conv_bn(x, f"{block}.branch1x1")
    branch3x3 = graph.conv_bn(x, f"{block}.branch3x3_1")
    branch3x3 = graph.add("concatenate", [graph.conv_bn(branch3x3, f"{block}.branch3x3_2a"),
                                          graph.conv_bn(branch3x3, f"{block}.branch3x3_2b")], name=f"mixed9_{index}")
    branch3x3dbl = graph.chain(x, [f"{block}.branch3x3dbl_1", f"{block}.branch3x3dbl_2"])
    branch3x3dbl = graph.add("concatenate", [graph.conv_bn(branch3x3dbl, f"{block}.branch3x3dbl_3a"),
                                             graph.conv_bn(branch3x3dbl, f"{block}.branch3x3dbl_3b")])
    branch_pool = graph.conv_bn(graph.add("average_pooling2d", [x]), f"{block}.branch_pool")
    return graph.add("concatenate", [branch1x1, branch3x3, branch3x3dbl, branch_pool], name=f"mixed{9 + index}")


def inception_v3_graph() -> tuple[dict[str, tuple[list[str], str | None]], str]:
    """InceptionV3(include_top=False)'s layers in creation order (name -> inputs, module) and its output."""
    graph = _KerasGraph()
    x = graph.chain(graph.add("input_layer", [], name="input_1"), ["Conv2d_1a_3x3", "Conv2d_2a_3x3", "Conv2d_2b_3x3"])
    x = graph.chain(graph.add("max_pooling2d", [x]), ["Conv2d_3b_1x1", "Conv2d_4a_3x3"])
    x = graph.add("max_pooling2d", [x])
    for index, block in enumerate(["Mixed_5b", "Mixed_5c", "Mixed_5d"]):
        x = _block_a(graph, x, block, f"mixed{index}")
    x = _block_b(graph, x)
    for index, block in enumerate(["Mixed_6b", "Mixed_6c", "Mixed_6d", "Mixed_6e"]):
        x = _block_c(graph, x, block, f"mixed{4 + index}")
    x = _block_d(graph, x)
    for index, block in enumerate(["Mixed_7b", "Mixed_7c"]):
        x = _block_e(graph, x, block, index)
    return graph.layers, x


def keras_order(inputs: dict[str, list[str]], output: str) -> list[str]:
    """Layer names in `model.layers` order, as keras/src/ops/function.py's `map_graph` gives it."""
    traversal: dict[str, int] = {}  # operation_indices: where the walk from the output first meets a layer
    finished: list[str] = []  # nodes_in_decreasing_depth: post-order, inputs first

    def walk(layer: str) -> None:  # _build_map_helper (no shared layers here: one node per layer)
        if layer in finished:
            return
        traversal.setdefault(layer, len(traversal))
        for parent in inputs[layer]:
            walk(parent)
        finished.append(layer)

    walk(output)
    depths: dict[str, int] = {}
    for layer in reversed(finished):
        depth = depths.setdefault(layer, 0)
        for parent in inputs[layer]:
            depths[parent] = max(depth + 1, depths.get(parent, 0))
    by_depth: dict[int, list[str]] = defaultdict(list)
    for layer, depth in depths.items():
        by_depth[depth].append(layer)
    return [layer for depth in sorted(by_depth, reverse=True)
            for layer in sorted(by_depth[depth], key=traversal.__getitem__)]


def inception_v3_layers() -> list[tuple[str, str | None]]:
    """keras.applications.InceptionV3: 311 layers in Keras's order, each with its torchvision module."""
    layers, output = inception_v3_graph()
    return [(name, layers[name][1]) for name in keras_order({name: ins for name, (ins, _) in layers.items()}, output)]
