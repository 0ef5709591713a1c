"""Freezing depth as Keras counts it: `train: keras:N` trains the last N layers of the model's
`keras.applications` counterpart (without its top), plus the new head.

Keras counts every layer of its functional model: the input, paddings, poolings, activations,
additions and concatenations as well as the convolutions and batch norms that hold weights. A paper
that froze "all but the last N layers" in Keras (seed 003: N = 15 ... 150 of ResNet50) means these
layers. Each function below lists a backbone's Keras layers in Keras's order (`model.layers`), each
with the torchvision module that holds its weights, or None for a layer without weights; the last N
are mapped to torchvision's modules; which Keras model a backbone is, its architecture says. InceptionV3's
parallel branches are ordered by Keras's own graph sort (`keras_inception.py`). Backbones without a
Keras counterpart (ResNet18, AlexNet) are an error.
"""

from __future__ import annotations

from torch import nn

from workflow.train.errors import TrainValueError
from workflow.train.keras_inception import inception_v3_layers

KERAS_PREFIX = "keras:"


def _resnet50(backbone: nn.Module) -> list[tuple[str, str | None]]:
    """keras.applications.ResNet50: 175 layers."""
    layers = [("input_1", None), ("conv1_pad", None), ("conv1_conv", "conv1"), ("conv1_bn", "bn1"),
              ("conv1_relu", None), ("pool1_pad", None), ("pool1_pool", None)]
    for stage in range(1, 5):
        for index, block in enumerate(getattr(backbone, f"layer{stage}")):
            keras, torch = f"conv{stage + 1}_block{index + 1}", f"layer{stage}.{index}"
            layers += [(f"{keras}_1_conv", f"{torch}.conv1"), (f"{keras}_1_bn", f"{torch}.bn1"), (f"{keras}_1_relu", None),
                       (f"{keras}_2_conv", f"{torch}.conv2"), (f"{keras}_2_bn", f"{torch}.bn2"), (f"{keras}_2_relu", None)]
            if block.downsample is not None:
                layers += [(f"{keras}_0_conv", f"{torch}.downsample.0"), (f"{keras}_3_conv", f"{torch}.conv3"),
                           (f"{keras}_0_bn", f"{torch}.downsample.1"), (f"{keras}_3_bn", f"{torch}.bn3")]
            else:
                layers += [(f"{keras}_3_conv", f"{torch}.conv3"), (f"{keras}_3_bn", f"{torch}.bn3")]
            layers += [(f"{keras}_add", None), (f"{keras}_out", None)]
    return layers


def _vgg16(backbone: nn.Module) -> list[tuple[str, str | None]]:
    """keras.applications.VGG16: 19 layers (its convolutions hold their ReLU)."""
    layers, block, conv = [("input_1", None)], 1, 1
    for index, module in enumerate(backbone.features):
        if isinstance(module, nn.Conv2d):
            layers.append((f"block{block}_conv{conv}", f"features.{index}"))
            conv += 1
        elif isinstance(module, nn.MaxPool2d):
            layers.append((f"block{block}_pool", None))
            block, conv = block + 1, 1
    return layers


def _densenet121(backbone: nn.Module) -> list[tuple[str, str | None]]:
    """keras.applications.DenseNet121: 427 layers."""
    layers = [("input_1", None), ("zero_padding2d", None), ("conv1/conv", "features.conv0"),
              ("conv1/bn", "features.norm0"), ("conv1/relu", None), ("zero_padding2d_1", None), ("pool1", None)]
    for block in range(1, 5):
        dense = getattr(backbone.features, f"denseblock{block}")
        for index in range(1, len(dense) + 1):
            keras, torch = f"conv{block + 1}_block{index}", f"features.denseblock{block}.denselayer{index}"
            layers += [(f"{keras}_0_bn", f"{torch}.norm1"), (f"{keras}_0_relu", None),
                       (f"{keras}_1_conv", f"{torch}.conv1"), (f"{keras}_1_bn", f"{torch}.norm2"),
                       (f"{keras}_1_relu", None), (f"{keras}_2_conv", f"{torch}.conv2"), (f"{keras}_concat", None)]
        if block < 4:
            torch = f"features.transition{block}"
            layers += [(f"pool{block + 1}_bn", f"{torch}.norm"), (f"pool{block + 1}_relu", None),
                       (f"pool{block + 1}_conv", f"{torch}.conv"), (f"pool{block + 1}_pool", None)]
    return layers + [("bn", "features.norm5"), ("relu", None)]


def _mobilenet_v2(backbone: nn.Module) -> list[tuple[str, str | None]]:
    """keras.applications.MobileNetV2 (alpha 1): 154 layers."""
    layers = [("input_1", None), ("Conv1", "features.0.0"), ("bn_Conv1", "features.0.1"), ("Conv1_relu", None),
              ("expanded_conv_depthwise", "features.1.conv.0.0"), ("expanded_conv_depthwise_BN", "features.1.conv.0.1"),
              ("expanded_conv_depthwise_relu", None), ("expanded_conv_project", "features.1.conv.1"),
              ("expanded_conv_project_BN", "features.1.conv.2")]
    for block in range(1, 17):
        keras, torch = f"block_{block}", f"features.{block + 1}"
        residual = backbone.features[block + 1]
        layers += [(f"{keras}_expand", f"{torch}.conv.0.0"), (f"{keras}_expand_BN", f"{torch}.conv.0.1"),
                   (f"{keras}_expand_relu", None)]
        if residual.stride == 2:
            layers.append((f"{keras}_pad", None))
        layers += [(f"{keras}_depthwise", f"{torch}.conv.1.0"), (f"{keras}_depthwise_BN", f"{torch}.conv.1.1"),
                   (f"{keras}_depthwise_relu", None), (f"{keras}_project", f"{torch}.conv.2"),
                   (f"{keras}_project_BN", f"{torch}.conv.3")]
        if residual.use_res_connect:
            layers.append((f"{keras}_add", None))
    return layers + [("Conv_1", "features.18.0"), ("Conv_1_bn", "features.18.1"), ("out_relu", None)]


KERAS_LAYERS = {"resnet50": _resnet50, "vgg16": _vgg16, "densenet121": _densenet121, "mobilenet_v2": _mobilenet_v2,
                "inception_v3": lambda backbone: inception_v3_layers()}


def keras_counterpart(backbone: nn.Module) -> str | None:
    """Which Keras application a torchvision backbone is (by its architecture), or None."""
    kind = next(c.__name__ for c in type(backbone).__mro__ if c.__module__.startswith(("torchvision.", "torch.")))
    if kind == "ResNet" and type(backbone.layer1[0]).__name__ == "Bottleneck":
        return "resnet50" if [len(getattr(backbone, f"layer{i}")) for i in range(1, 5)] == [3, 4, 6, 3] else None
    if kind == "VGG":
        layers = list(backbone.features)
        convs = sum(isinstance(m, nn.Conv2d) for m in layers)
        return "vgg16" if convs == 13 and not any(isinstance(m, nn.BatchNorm2d) for m in layers) else None
    if kind == "DenseNet":
        blocks = [len(getattr(backbone.features, f"denseblock{i}")) for i in range(1, 5)]
        return "densenet121" if blocks == [6, 12, 24, 16] else None
    if kind == "MobileNetV2" and len(backbone.features) == 19:
        return "mobilenet_v2"
    if kind == "Inception3":
        return "inception_v3"
    return None


def keras_layers(backbone: nn.Module) -> list[tuple[str, str | None]]:
    """The Keras layers of a backbone in Keras's order, each with the backbone module holding its weights."""
    name = keras_counterpart(backbone)
    if name is None:
        raise TrainValueError(f"train 'keras:N': this {type(backbone).__name__} has no keras.applications "
                              f"counterpart that tlsweep counts; Keras depths are known for {sorted(KERAS_LAYERS)}")
    return KERAS_LAYERS[name](backbone)


def keras_trainable(backbone: nn.Module, train: str) -> list[str]:
    """The backbone modules (torchvision names) that hold the weights of the last N Keras layers."""
    depth = train[len(KERAS_PREFIX):]
    if not depth.isdigit() or int(depth) < 1:
        raise TrainValueError(f"train {train!r}: N must be a whole number of layers, at least 1")
    layers = keras_layers(backbone)
    if int(depth) > len(layers):
        raise TrainValueError(f"train {train!r}: Keras's {keras_counterpart(backbone)} has only {len(layers)} layers")
    return [module for _, module in layers[-int(depth):] if module is not None]
