"""Freezing by module (`from:<module>`) and by Keras's layer count (`keras:N`) on every backbone."""

import pytest
import torchvision

from workflow.train.errors import TrainValueError
from workflow.train.keras_depth import keras_layers
from workflow.train.models import build_classifier, parameterised_layers, set_trainable

# keras.applications' layer counts without the top (len(model.layers), its input layer included).
KERAS_TOTALS = {"resnet50": 175, "vgg16": 19, "densenet121": 427, "mobilenet_v2": 154, "inception_v3": 311}


def trainable_layers(model) -> set[str]:
    return {name for name, layer in parameterised_layers(model) if all(p.requires_grad for p in layer.parameters(recurse=False))}


def frozen_layers(model) -> set[str]:
    return {name for name, layer in parameterised_layers(model) if not any(p.requires_grad for p in layer.parameters(recurse=False))}


@pytest.fixture(scope="module")
def models():
    built = {}

    def get(name):
        if name not in built:
            built[name] = build_classifier(name, num_classes=3, weights="none", resolution=75 if name == "inception_v3" else 64)[0]
        return built[name]

    return get


@pytest.mark.parametrize("name, total", sorted(KERAS_TOTALS.items()))
def test_keras_layer_lists_match_keras_and_cover_every_weight(name, total):
    backbone = getattr(torchvision.models, name)(weights=None)
    layers = keras_layers(backbone)
    assert len(layers) == total and len({keras for keras, _ in layers}) == total
    with_weights = [module for _, module in layers if module is not None]
    owners = [n for n, m in backbone.named_modules() if next(m.parameters(recurse=False), None) is not None]
    classifier = ("fc", "classifier", "AuxLogits")  # InceptionV3's auxiliary classifier: Keras has none
    assert sorted(with_weights) == sorted(n for n in owners if not n.startswith(classifier))


@pytest.mark.parametrize("name, train, expected", [
    # the last block of ResNet50's conv5: its three convolutions and batch norms (10 Keras layers)
    ("resnet50", "keras:10", {f"layer4.2.{kind}{i}" for kind in ("conv", "bn") for i in (1, 2, 3)}),
    # five more reach back into conv5_block2: its out, add, 3_bn, 3_conv, 2_relu
    ("resnet50", "keras:15", {f"layer4.2.{kind}{i}" for kind in ("conv", "bn") for i in (1, 2, 3)}
     | {"layer4.1.conv3", "layer4.1.bn3"}),
    ("vgg16", "keras:4", {"features.24", "features.26", "features.28"}),  # block5: 3 convolutions and its pool
    ("densenet121", "keras:2", {"features.norm5"}),  # the final bn and relu
    ("densenet121", "keras:9", {"features.norm5"} | {f"features.denseblock4.denselayer16.{m}"
                                                     for m in ("norm1", "conv1", "norm2", "conv2")}),
    ("mobilenet_v2", "keras:3", {"features.18.0", "features.18.1"}),  # Conv_1, Conv_1_bn, out_relu
    # InceptionV3's last 11: depth 0 mixed10; depth 1 its four inputs; depth 2 their six inputs, of which
    # only branch1x1's and branch_pool's batch norms hold weights (the other four are activations)
    ("inception_v3", "keras:11", {"Mixed_7c.branch1x1.bn", "Mixed_7c.branch_pool.bn"}),
])
def test_keras_depth_trains_the_last_n_keras_layers_and_the_head(models, name, train, expected):
    model = models(name)
    set_trainable(model, train)
    head = {n for n, _ in parameterised_layers(model) if n.startswith("head")}
    assert trainable_layers(model) == {f"backbone.{m}" for m in expected} | head
    assert frozen_layers(model) == {n for n, _ in parameterised_layers(model)} - trainable_layers(model)


@pytest.mark.parametrize("name", sorted(KERAS_TOTALS))
def test_keras_depth_of_the_whole_model_trains_everything(models, name):
    model = models(name)
    set_trainable(model, f"keras:{KERAS_TOTALS[name]}")
    assert all(p.requires_grad for p in model.parameters())
    with pytest.raises(TrainValueError, match=f"train 'keras:{KERAS_TOTALS[name] + 1}': Keras's {name} has only"):
        set_trainable(model, f"keras:{KERAS_TOTALS[name] + 1}")


def modules_of(model, blocks):
    return {n for n, _ in parameterised_layers(model) if n.split(".")[1] in blocks}


# Each Keras mixedK block ends in its concatenate, the only path to the next block, so the last N layers
# end exactly at a block: mixed9 and mixed10 are 9 conv2d_bn (3 layers each), a pooling and 3
# concatenates; mixed8 6 conv2d_bn, a pooling and 1; mixed7 10, a pooling and 1. Keras's InceptionV3
# fine-tuning example (keras.io/api/applications) freezes the first 249 of 311 layers to train the top
# two inception blocks: keras:62.
@pytest.mark.parametrize("train, blocks", [
    ("keras:31", ["Mixed_7c"]), ("keras:62", ["Mixed_7b", "Mixed_7c"]), ("keras:63", ["Mixed_7b", "Mixed_7c"]),
    ("keras:82", ["Mixed_7a", "Mixed_7b", "Mixed_7c"]), ("keras:114", ["Mixed_6e", "Mixed_7a", "Mixed_7b", "Mixed_7c"]),
])
def test_keras_depth_on_inception_v3_ends_at_its_blocks(models, train, blocks):
    model = models("inception_v3")
    set_trainable(model, train)
    assert trainable_layers(model) == modules_of(model, blocks) | {n for n, _ in parameterised_layers(model) if n.startswith("head")}
    assert modules_of(model, blocks) and frozen_layers(model) == {n for n, _ in parameterised_layers(model)} - trainable_layers(model)


@pytest.mark.parametrize("train, extra", [
    ("keras:66", set()),  # mixed8 and its three inputs: two activations and the max pooling
    ("keras:67", {"Mixed_7a.branch7x7x3_4.bn"}),  # then the batch norms below those activations, in the order the
    ("keras:68", {"Mixed_7a.branch7x7x3_4.bn", "Mixed_7a.branch3x3_2.bn"}),  # walk from the output meets them
])
def test_keras_depth_on_inception_v3_interleaves_branches_by_depth(models, train, extra):
    model = models("inception_v3")
    set_trainable(model, train)
    head = {n for n, _ in parameterised_layers(model) if n.startswith("head")}
    assert trainable_layers(model) == modules_of(model, ["Mixed_7b", "Mixed_7c"]) | {f"backbone.{m}" for m in extra} | head


@pytest.mark.parametrize("name", ["resnet18", "alexnet"])
def test_keras_depth_without_a_keras_counterpart_is_a_clear_error(models, name):
    with pytest.raises(TrainValueError, match="has no keras.applications counterpart that tlsweep counts"):
        set_trainable(models(name), "keras:5")


@pytest.mark.parametrize("name, module", [
    ("resnet18", "layer4"), ("resnet50", "layer4"), ("inception_v3", "Mixed_7a"), ("vgg16", "features.17"),
    ("densenet121", "features.denseblock4"), ("mobilenet_v2", "features.17"), ("alexnet", "features.6"),
])
def test_from_a_module_trains_it_and_what_follows_on_every_backbone(models, name, module):
    model = models(name)
    set_trainable(model, f"from:{module}")
    layers = [n for n, _ in parameterised_layers(model)]
    first = next(i for i, n in enumerate(layers) if n == f"backbone.{module}" or n.startswith(f"backbone.{module}."))
    assert trainable_layers(model) == set(layers[first:]) and frozen_layers(model) == set(layers[:first])
    assert first > 0 and any(n.startswith("head") for n in layers[first:])
