"""Heads of layers (`training.head: {layers: [...], output: ...}`): built on every backbone family, their
trainable parameters checked against hand arithmetic with Keras's rules, the papers' counts reproduced.

Keras's rules: Dense(units) on `w` inputs holds w x units + units parameters; a BatchNormalization over `w`
features holds 4 x w, of which 2 x w (scale and shift) train; a sigmoid output is Dense(1).
"""

import copy

import pytest
import torch
import torchvision
import yaml
from snakemake.utils import validate
from torch import nn
from torch.nn import functional as F

from conftest import REPO, tiny_study
from workflow.core.backbones import get_backbone, train_error
from workflow.core.cell import Cell, TrainingSettings
from workflow.core.heads import ACTIVATIONS, head_parameterised_layers
from workflow.export.checkpoint import model_card, read_checkpoint, rebuild
from workflow.study.config import ConfigError
from workflow.study.grid import build_study
from workflow.train.errors import HeadError
from workflow.train.keras_depth import keras_layers
from workflow.train.metrics import classification_report
from workflow.train.models import build_classifier, num_classes_of, parameterised_layers, set_trainable
from workflow.train.state import save_checkpoint
from workflow.train.trainable import stage_counts

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")

# Seed 004 (DenseNet121 on CIFAR-10 at 155 x 155): the paper's three trainable counts.
PLAIN, OPTIMISED, TRANSFER = 6_964_106, 7_252_746, 4_262_026
# The heads that reproduce them exactly (the study files write the same lists).
PLAIN_HEAD = {"layers": ["gap"]}
OPTIMISED_HEAD = {"layers": ["gap", "batch_norm", {"dense": 256, "activation": "relu"},
                             {"dense": 128, "activation": "relu"}, "batch_norm", {"dropout": 0.2}]}
TRANSFER_HEAD = {"layers": ["flatten", "batch_norm", {"dense": 256, "activation": "relu"}, "batch_norm",
                            {"dense": 128, "activation": "relu"}, {"dropout": 0.2}]}
SMALL_HEAD = {"layers": [None, {"dense": 8, "activation": "relu"}, "batch_norm", {"dropout": 0.1}]}


def dense(inputs: int, units: int) -> int:
    return inputs * units + units


def batch_norm(width: int) -> int:
    return 2 * width  # scale and shift train; the moving mean and variance do not


def trainable(model) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad)


def meta_classifier(name: str, classes: int, head, resolution: int, train: str = "all"):
    """The classifier on the meta device (no memory, no initialisation), with `train` set."""
    with torch.device("meta"):
        model, _ = build_classifier(name, classes, "none", head=head, resolution=resolution)
    set_trainable(model, train)
    return model


def small_head(pooling: str) -> dict:
    head = copy.deepcopy(SMALL_HEAD)
    head["layers"][0] = pooling
    return head


def small_head_count(width: int, classes: int) -> int:
    return dense(width, 8) + batch_norm(8) + dense(8, classes)


def densenet121_base() -> int:
    """Keras's DenseNet121 without its top, trainable: torchvision's DenseNet121 less its 1000-class
    classifier (conv layers without biases in both; torchvision's batch-norm statistics are buffers, which
    Keras counts as non-trainable weights)."""
    with torch.device("meta"):
        model = torchvision.models.densenet121()
    return sum(p.numel() for p in model.parameters()) - dense(1024, 1000)


def test_seed_004_counts_are_the_papers():
    base = densenet121_base()
    assert base == 6_953_856  # Keras's DenseNet121(include_top=False): 6,953,856 trainable of 7,037,504
    assert base + dense(1024, 10) == PLAIN
    # GAP -> batch norm (1024) -> dense 256 -> dense 128 -> batch norm (128) -> dropout -> softmax 10: the only
    # placement of two batch norms that gives the paper's count (2 x (1024 + 128) = 2,304 trainable).
    assert base + batch_norm(1024) + dense(1024, 256) + dense(256, 128) + batch_norm(128) + dense(128, 10) == OPTIMISED
    # The transfer regime: the base frozen, a head on the flattened 4 x 4 x 1024 map of a 155 x 155 image.
    flat = 1024 * 4 * 4
    assert batch_norm(flat) + dense(flat, 256) + batch_norm(256) + dense(256, 128) + dense(128, 10) == TRANSFER
    for head, train, count in ((PLAIN_HEAD, "all", PLAIN), (OPTIMISED_HEAD, "all", OPTIMISED),
                               (TRANSFER_HEAD, "head", TRANSFER)):
        assert trainable(meta_classifier("densenet121", 10, head, 155, train)) == count


def keras_depth_counts(model) -> list[int]:
    """Trainable backbone parameters of `keras:N` for N = 1, 2, ... (the head left out)."""
    counts, total = [], 0
    for _, module in reversed(keras_layers(model.backbone)):
        total += 0 if module is None else sum(p.numel() for p in model.backbone.get_submodule(module).parameters())
        counts.append(total)
    return counts


def test_seed_004_transfer_is_no_gap_head_on_a_partly_trained_base():
    """The other reading of the transfer regime (some base layers train, the classifier on GAP) gives no
    `keras:N` with the paper's count; its nearest, `keras:178` (the last 178 of DenseNet121's 427 Keras layers)
    with the optimised head, is 0.6 % below it."""
    model = meta_classifier("densenet121", 10, OPTIMISED_HEAD, 155)
    depths = keras_depth_counts(model)
    optimised_head = OPTIMISED - densenet121_base()
    for head in (dense(1024, 10), optimised_head):
        assert TRANSFER - head not in depths
    set_trainable(model, "keras:178")
    assert trainable(model) == depths[177] + optimised_head == 4_234_634
    assert abs(trainable(model) - TRANSFER) / TRANSFER < 0.01


# One model of each torchvision family in the catalogue, and timm's, at a size each takes.
FAMILIES = {"alexnet": 64, "convnext_tiny": 64, "densenet121": 64, "efficientnet_b0": 64, "efficientnet_v2_s": 64,
            "googlenet": 64, "inception_v3": 299, "maxvit_t": 224, "mnasnet0_5": 64, "mobilenet_v2": 64,
            "mobilenet_v3_small": 64, "regnet_x_400mf": 64, "resnet18": 64, "resnext50_32x4d": 64,
            "shufflenet_v2_x0_5": 64, "squeezenet1_0": 64, "swin_t": 224, "vgg11": 64, "vit_b_16": 224,
            "wide_resnet50_2": 64, "timm:resnet10t": 64, "timm:convnext_atto": 64}
ON_CPU = {"regnet_x_400mf"}  # its initialisation reads tensor values, which the meta device has none of


def classifier(name: str, classes: int, head, resolution: int, train: str = "all"):
    if name not in ON_CPU:
        return meta_classifier(name, classes, head, resolution, train)
    model, _ = build_classifier(name, classes, "none", head=head, resolution=resolution)
    set_trainable(model, train)
    return model


@pytest.mark.parametrize("name", sorted(FAMILIES))
def test_a_head_of_layers_on_every_family(name):
    resolution, classes = FAMILIES[name], 3
    head = small_head("gap")
    model = classifier(name, classes, head, resolution, "head")
    width = model.backbone.num_features if name.startswith("timm:") else get_backbone(name).features
    assert trainable(model) == small_head_count(width, classes)
    set_trainable(model, "all")
    gap = classifier(name, classes, "gap", resolution)
    assert trainable(model) - trainable(gap) == small_head_count(width, classes) - dense(width, classes)
    device = next(model.parameters()).device
    model.eval()
    assert model(torch.zeros(2, 3, resolution, resolution, device=device)).shape == (2, classes)
    # `last:N` counts the head's dense layers, batch norms and output layer after the backbone's layers
    backbone_layers = len(parameterised_layers(gap)) - 1
    assert len(parameterised_layers(model)) == backbone_layers + head_parameterised_layers(head) == backbone_layers + 3
    if not name.startswith("timm:"):
        layers = len(parameterised_layers(model))
        with_aux = backbone_layers + 1 != get_backbone(name).layers["gap"]
        if not with_aux:
            assert train_error(name, f"last:{layers}", head, resolution) is None
            assert train_error(name, f"last:{layers + 1}", head, resolution)


# What `flatten` reads: the feature map, channels x side x side at the resolution given.
FLATTENED = {("resnet18", 64): 512 * 2 * 2, ("vgg11", 64): 512 * 2 * 2, ("densenet121", 155): 1024 * 4 * 4,
             ("mobilenet_v2", 64): 1280 * 2 * 2, ("efficientnet_b0", 64): 1280 * 2 * 2,
             ("inception_v3", 299): 2048 * 8 * 8, ("convnext_tiny", 64): 768 * 2 * 2,
             ("timm:resnet10t", 64): 512 * 2 * 2}


@pytest.mark.parametrize("name,resolution", sorted(FLATTENED))
def test_flatten_and_gmp_read_the_feature_map(name, resolution):
    width = FLATTENED[name, resolution]
    flat = meta_classifier(name, 3, small_head("flatten"), resolution, "head")
    assert trainable(flat) == small_head_count(width, 3)
    pooled = meta_classifier(name, 3, small_head("gmp"), resolution, "head")
    channels = pooled.backbone.num_features if name.startswith("timm:") else get_backbone(name).features
    assert trainable(pooled) == small_head_count(channels, 3)


def test_global_max_pool_takes_the_maximum():
    torch.manual_seed(0)
    gap, _ = build_classifier("mobilenet_v2", 3, "none", head={"layers": ["gap"]}, resolution=64)
    gmp, _ = build_classifier("mobilenet_v2", 3, "none", head={"layers": ["gmp"]}, resolution=64)
    gmp.backbone.load_state_dict(gap.backbone.state_dict())
    gmp.head[-1].load_state_dict(gap.head[-1].state_dict())  # MobileNetV2's gmp head begins with its pool
    x = torch.rand(2, 3, 64, 64)
    gap.eval(), gmp.eval()
    feature_map = gap.backbone.features(x)
    assert torch.allclose(gmp(x), gap.head(feature_map.amax(dim=(2, 3))), atol=1e-5)
    assert torch.allclose(gap(x), gap.head(feature_map.mean(dim=(2, 3))), atol=1e-5)


@pytest.mark.parametrize("name,resolution", [("vit_b_16", 224), ("squeezenet1_0", 64), ("shufflenet_v2_x0_5", 64)])
def test_pooling_a_model_without_a_reachable_feature_map_is_refused(name, resolution):
    with pytest.raises(HeadError, match=r"training\.head\.layers\[0\]: 'flatten' needs .*; use gap"):
        meta_classifier(name, 3, small_head("flatten"), resolution)


def test_a_sigmoid_output_is_one_unit_trained_with_binary_cross_entropy():
    torch.manual_seed(0)
    head = {"layers": ["gap", {"dropout": 0.3}], "output": "sigmoid"}
    model, _ = build_classifier("resnet18", 2, "none", head=head, resolution=32)
    set_trainable(model, "head")
    assert trainable(model) == dense(512, 1) and num_classes_of(model) == 2
    model.eval()
    logits = model(torch.rand(6, 3, 32, 32))
    z = model.head[:-1](model.backbone(torch.rand(1, 3, 32, 32)))
    assert z.shape == (1, 1)
    assert logits.shape == (6, 2) and torch.equal(logits[:, 0], torch.zeros(6))
    labels = torch.tensor([0, 1, 1, 0, 1, 0])
    bce = F.binary_cross_entropy_with_logits(logits[:, 1], labels.float())
    assert torch.allclose(F.cross_entropy(logits, labels), bce)
    scores = torch.softmax(logits, dim=1)
    assert torch.allclose(scores[:, 1], torch.sigmoid(logits[:, 1])) and torch.allclose(scores.sum(1), torch.ones(6))
    report = classification_report(scores.detach().numpy(), labels.numpy(), ["no", "yes"])
    assert set(report) >= {"roc_auc", "false_negative_rate", "accuracy"}
    with pytest.raises(HeadError, match=r"training\.head\.output: a sigmoid output .* two classes, not 3"):
        build_classifier("resnet18", 3, "none", head=head, resolution=32)


def test_keras_depth_trains_the_whole_head_of_layers():
    head = small_head("flatten")
    layered = meta_classifier("densenet121", 10, head, 155, "keras:20")
    gap = meta_classifier("densenet121", 10, "gap", 155, "keras:20")
    assert trainable(layered) - trainable(gap) == small_head_count(1024 * 16, 10) - dense(1024, 10)


def test_a_checkpoint_rebuilds_its_head_of_layers(tmp_path):
    torch.manual_seed(0)
    head = {"layers": ["flatten", "batch_norm", {"dense": 4, "activation": "relu"}], "output": "sigmoid"}
    cell = Cell(dataset="d", model="resnet18", resolution=64, batch_size=8, lr=0.01, optimizer="adam", train="all",
                seed=0, weights="none", training=TrainingSettings(head=head))
    model, normalization = build_classifier("resnet18", 2, "none", head=cell.training.head, resolution=64)
    model.train()
    model(torch.rand(4, 3, 64, 64))  # batch-norm statistics that differ from a fresh model's
    save_checkpoint(tmp_path / "best.pt", model, cell, normalization, epoch=1, class_names=["a", "b"])
    card = model_card(read_checkpoint(tmp_path / "best.pt"), tmp_path / "best.pt")
    assert card.head == cell.training.head and card.num_classes == 2
    rebuilt = rebuild(card, model.state_dict())
    x = torch.rand(3, 3, 64, 64)
    assert torch.equal(rebuilt.eval()(x), model.eval()(x))


def test_a_head_of_layers_exports_to_torchscript_and_onnx(tmp_path):
    """MobileNetV2 ended at its feature map (gmp), a sigmoid output: both exports give PyTorch's logits."""
    from workflow.export.export import example_batch, export_onnx, export_torchscript, verify_exports

    torch.manual_seed(0)
    head = {"layers": ["gmp", "batch_norm", {"dense": 4, "activation": "gelu"}], "output": "sigmoid"}
    cell = Cell(dataset="d", model="mobilenet_v2", resolution=32, batch_size=8, lr=0.01, optimizer="adam",
                train="all", seed=0, weights="none", training=TrainingSettings(head=head))
    model, normalization = build_classifier("mobilenet_v2", 2, "none", head=cell.training.head, resolution=32)
    save_checkpoint(tmp_path / "best.pt", model, cell, normalization, epoch=1, class_names=["a", "b"])
    card = model_card(read_checkpoint(tmp_path / "best.pt"), tmp_path / "best.pt")
    rebuilt = rebuild(card, model.state_dict()).eval()
    paths = {"torchscript": tmp_path / "model.pt", "onnx": tmp_path / "model.onnx"}
    example = example_batch(card, 2)
    export_torchscript(rebuilt, example, paths["torchscript"], {"format": 1})
    export_onnx(rebuilt, example, paths["onnx"])
    assert set(verify_exports(rebuilt, card, paths)) == {"torchscript", "onnx"}


def inception_study_cell(resolution: int):
    return Cell(dataset="d", model="inception_v3", resolution=resolution, batch_size=10, lr=1e-3, optimizer="sgd",
                train="all", seed=0, weights="imagenet", training=TrainingSettings(
                    stages=[{"name": "finetune", "train": "cell", "epochs": 1}], head={"layers": ["gap"]}))


def test_inception_counts_show_the_auxiliary_classifier_apart_and_keras_count():
    """Seed 001's InceptionV3: torchvision's auxiliary classifier (2,048 features -> 768 -> the classes) is
    no part of the Keras model, and Keras's batch norms there have no scale (`scale=False`)."""
    with torch.device("meta"):
        tv = torchvision.models.inception_v3(init_weights=False)
    auxiliary = sum(p.numel() for p in tv.AuxLogits.parameters()) - dense(768, 1000) + dense(768, 2)
    scales = sum(m.weight.numel() for n, m in tv.named_modules()
                 if isinstance(m, nn.BatchNorm2d) and not n.startswith("AuxLogits"))
    base = sum(p.numel() for p in tv.parameters()) - sum(p.numel() for p in tv.AuxLogits.parameters()) - dense(2048, 1000)
    assert base - scales == 21_768_352  # Keras's InceptionV3(include_top=False), trainable
    (count,) = stage_counts(inception_study_cell(299), 2).values()
    assert (count.total, count.auxiliary, count.unscaled) == (base + dense(2048, 2) + auxiliary, auxiliary, scales)
    assert str(count) == f"{base + dense(2048, 2):,} + {auxiliary:,} auxiliary (Keras {21_768_352 + dense(2048, 2):,})"
    (below,) = stage_counts(inception_study_cell(224), 2).values()
    assert below.auxiliary == 0 and str(below) == f"{base + dense(2048, 2):,} (Keras {21_768_352 + dense(2048, 2):,})"


def study_with_head(head, **training) -> dict:
    config = tiny_study()
    config.pop("pretrain")
    config["grid"].update(weights=["none"], optimizer=["adam"], batch_size=[32])
    config["training"].update(head=head, **training)
    validate(config, SCHEMA)  # the schema's defaults filled in, as a study file loads
    return config


def test_a_study_writes_a_head_of_layers_in_full_and_named_heads_as_before():
    written = {"layers": ["gap", {"dense": 16}, {"dropout": 0.3}]}
    config = study_with_head(written)
    (cell,) = build_study(config).grid_cells
    assert cell.training.head == {"layers": ["gap", {"dense": 16, "activation": "linear"}, {"dropout": 0.3}],
                                  "output": "softmax"}
    assert Cell.from_json(cell.to_json()) == cell and Cell.from_json(cell.to_json()).training == cell.training
    spelt_out = build_study(study_with_head(cell.training.head)).grid_cells[0]
    assert spelt_out.to_json() == cell.to_json()
    named = build_study(study_with_head("mlp")).grid_cells[0]
    assert '"head": "mlp"' in named.to_json()


@pytest.mark.parametrize("head,training,message", [
    ({"layers": ["gap"]}, {"dropout": 0.2}, r"^training\.dropout: a head of layers lists its own dropout"),
    ({"layers": ["gap", "gmp"]}, {}, r"^training\.head\.layers\[1\]: 'gmp': the pooling comes first and once"),
    ({"layers": [{"dense": 8}]}, {}, r"^training\.head\.layers\[0\]: the first layer is the pooling"),
    ({"layers": ["gap"], "output": "sigmoid"}, {}, r"^training\.head\.output: dataset 'digits-5to9': a sigmoid "
                                                  r"output is one unit and scores two classes, not 5"),
])
def test_a_head_that_cannot_be_built_is_refused_at_load(head, training, message):
    with pytest.raises(ConfigError, match=message):
        build_study(study_with_head(head, **training))


def test_a_sigmoid_output_loads_for_two_classes_and_a_swept_head_is_checked():
    config = study_with_head({"layers": ["gap"], "output": "sigmoid"})
    config["datasets"]["digits-5to9"]["classes"] = [5, 6]
    assert build_study(config).grid_cells[0].training.head["output"] == "sigmoid"
    config["grid"]["training"] = {"head": ["gap", {"layers": ["max"]}]}
    with pytest.raises(ConfigError, match=r"^grid\.training\.head\[1\]\.layers\[0\]: the first layer is the pooling"):
        build_study(config)


def test_the_schema_knows_the_head_language():
    schema = yaml.safe_load(open(SCHEMA))
    assert schema["$defs"]["head_activation"]["enum"] == list(ACTIVATIONS)
    for head in (PLAIN_HEAD, OPTIMISED_HEAD, TRANSFER_HEAD, {"layers": ["gmp", {"activation": "relu"}], "output": "sigmoid"}):
        study_with_head(head)
    with pytest.raises(Exception, match="head"):
        study_with_head({"layers": ["gap"], "output": "tanh"})


def test_a_cell_with_a_sigmoid_output_trains_and_scores_two_classes(tmp_path):
    """End to end on real digits 0 and 1: the one-unit output trains, predictions hold (1 - p, p), and the
    test metrics include ROC AUC."""
    from workflow.data.prepare import prepare_dataset
    from workflow.train.cell import train_cell
    from workflow.train.predictions import read_predictions

    spec = {"source": "digits", "classes": [0, 1], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}
    prepare_dataset("digits-01", spec, 16, tmp_path / "r16.h5", tmp_path / "r16.json")
    head = {"layers": ["gap", {"dense": 16, "activation": "relu"}, "batch_norm", {"dropout": 0.3}], "output": "sigmoid"}
    cell = Cell(dataset="digits-01", model="resnet18", resolution=16, batch_size=32, lr=0.01, optimizer="adam",
                train="all", seed=0, weights="none", training=TrainingSettings(
                    head=head, stages=[{"name": "all", "train": "all", "epochs": 2}]))
    metrics = train_cell(cell, tmp_path / "r16.h5", tmp_path / "cell", threads=1, log=lambda _: None)
    assert metrics["status"] == "ok" and metrics["run"]["head"] == cell.training.head
    assert metrics["stages"][0]["trainable_parameters"] == stage_counts(cell, 2)["all"].total
    predictions = read_predictions(tmp_path / "cell")
    assert predictions.test_scores.shape[1] == 2
    assert abs(predictions.test_scores.sum(axis=1) - 1).max() < 1e-5
    assert metrics["test_auc"] is not None and metrics["test_accuracy"] > 0.5


def test_cells_says_which_cell_cannot_take_its_head():
    from workflow.train.trainable import trainable_column

    config = study_with_head({"layers": ["flatten", {"dense": 4}]})
    config["grid"].update(model=["resnet18", "squeezenet1_0"], resolution=[64])
    column, _ = trainable_column(build_study(config))
    by_model = {cell_id.split("/")[1]: text for cell_id, text in column.items()}
    assert by_model["squeezenet1_0"].startswith("cannot train: training.head.layers[0]: 'flatten' needs squeezenet1_0")
    flat = 512 * 2 * 2
    assert by_model["resnet18"].startswith(f"head {dense(flat, 4) + dense(4, 5):,} / finetune ")


def test_a_memory_probe_names_and_measures_a_head_of_layers():
    import re

    from workflow.gpu.probe import measure
    from workflow.gpu.slots import PROBE_NAME, probe_name, probe_spec

    head = {"layers": ["gap", {"dense": 8}], "output": "sigmoid"}
    cell = Cell(dataset="d", model="mobilenet_v2", resolution=32, batch_size=4, lr=0.01, optimizer="adam",
                train="all", seed=0, weights="none", training=TrainingSettings(head=head, eval_batch_size=8))
    spec = probe_spec(cell)
    other = probe_spec(Cell(**{**cell.__dict__, "training": TrainingSettings(head={**head, "output": "softmax"},
                                                                              eval_batch_size=8)}))
    assert re.fullmatch(PROBE_NAME, probe_name(spec)) and probe_name(spec) != probe_name(other)
    assert measure(spec, torch.device("cpu"), steps=1)["steps"] == 1


def test_an_include_replaces_the_studys_head_of_layers():
    config = study_with_head({"layers": ["gap", {"dropout": 0.3}], "output": "sigmoid"})
    config["datasets"]["digits-5to9"]["classes"] = [5, 6]
    config["grid"]["include"] = [{"training": {"head": {"layers": ["gmp"]}}}]
    validate(config, SCHEMA)
    heads = sorted(str(cell.training.head) for cell in build_study(config).grid_cells)
    assert heads == [str({"layers": ["gap", {"dropout": 0.3}], "output": "sigmoid"}),
                     str({"layers": ["gmp"], "output": "softmax"})]
