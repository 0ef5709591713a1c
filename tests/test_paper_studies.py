"""Each ready study against its paper's protocol table (docs/studies.md): the resolved cells' values,
and where the paper reports them, the trainable parameter counts per regime."""

import pytest

from conftest import REPO
from workflow.study.config import load_config
from workflow.study.grid import build_study

KERAS_RMSPROP = {"momentum": 0.0, "rho": 0.9, "eps": 1e-7}  # Keras's RMSprop defaults (and Adam's epsilon)


def cells(name: str):
    return build_study(load_config(REPO / "studies" / f"{name}.yaml"))


def stages(cell):
    return cell.stages()


def test_batch_size_cifar_is_seed_000():
    study = cells("batch-size-cifar")
    assert sorted((c.dataset, c.batch_size) for c in study.grid_cells) == sorted(
        (d, b) for d in ("cifar10", "cifar100") for b in (32, 64, 128, 256, 512))
    assert {study.dataset(d)["val_fraction"] for d in ("cifar10", "cifar100")} == {0.1}  # 10 % of train as validation
    for cell in study.grid_cells:
        assert (cell.model, cell.resolution, cell.weights, cell.optimizer) == ("mobilenet_v2", 160, "imagenet", "rmsprop")
        assert (cell.training.head, cell.training.dropout) == ("gap", 0.5)  # GAP, dropout 0.5, dense
        head, finetune = stages(cell)
        assert (head["train"], head["epochs"], cell.lr * head["lr_factor"]) == ("head", 20, 1e-2)
        assert (finetune["train"], finetune["epochs"]) == ("all", 100)
        assert cell.lr * finetune["lr_factor"] == pytest.approx(1e-4)
        for stage in (head, finetune):
            assert stage["schedule"] == "plateau" and stage["plateau"]["factor"] == 0.1  # LR / 10 on a plateau
            assert {key: stage[key] for key in KERAS_RMSPROP} == KERAS_RMSPROP
        assert not any(value for key, value in cell.training.augment.items() if key != "fill")  # none
    assert load_config(REPO / "config.yaml") == load_config(REPO / "studies/batch-size-cifar.yaml")


def test_optimizers_cats_vs_dogs_is_seed_001():
    study = cells("optimizers-cats-vs-dogs")
    split = study.dataset("cats_vs_dogs")["per_class"]
    assert (split["train"], split["val"]) == (250, 50)
    assert sorted((c.model, c.optimizer, c.resolution) for c in study.grid_cells) == sorted(
        [(m, o, r) for m, r in (("resnet50", 224), ("inception_v3", 299)) for o in ("sgd", "adam", "rmsprop")])
    for cell in study.grid_cells:
        (stage,) = stages(cell)
        assert (cell.lr, cell.batch_size, stage["epochs"], stage["train"]) == (1e-3, 10, 50, "all")
        assert stage["early_stopping"]["patience"] >= 50 and stage["plateau"]["patience"] >= 50  # constant LR
        assert {key: stage[key] for key in KERAS_RMSPROP} == KERAS_RMSPROP
        assert cell.training.aux_loss_weight == 0 and cell.training.head == "mlp"


def test_pcam_batch_lr_is_seed_002():
    study = cells("pcam-batch-lr")
    assert sorted((c.optimizer, c.batch_size, c.lr) for c in study.grid_cells) == sorted(
        (o, b, lr) for o in ("sgd", "adam") for b in (16, 32, 64, 128, 256) for lr in (1e-3, 1e-4, 1e-5))
    for cell in study.grid_cells:
        (stage,) = stages(cell)
        assert (cell.model, cell.resolution, cell.train) == ("vgg16", 96, "from:features.17")  # block4 on
        assert stage["epochs"] == 50 and stage["early_stopping"]["patience"] >= 50
        assert (stage["momentum"], stage["eps"]) == (0.0, 1e-7)
        augment = cell.training.augment
        assert augment["hflip"] and augment["vflip"] and augment["rotation"] == 180
        assert augment["zoom"] > 0 and augment["shift"] > 0
    from workflow.data.sources.pcam import CLASS_NAMES

    assert study.positive_classes == {"pcam": "tumor"} and "tumor" in CLASS_NAMES  # tumour patches are positive


def test_freezing_imagefolder_is_seed_003():
    study = cells("freezing-imagefolder")
    assert sorted(int(c.train.split(":")[1]) for c in study.grid_cells) == [15, 25, 32, 40, 100, 150]
    assert all(c.train.startswith("keras:") for c in study.grid_cells)
    assert study.dataset("my-images")["split"] == {"train": 0.8, "val": 0.1, "test": 0.1}
    for cell in study.grid_cells:
        (stage,) = stages(cell)
        assert (cell.model, cell.lr, cell.batch_size, cell.optimizer) == ("resnet50", 1e-4, 64, "adam")
        assert (cell.training.head, cell.training.dropout) == ("gap", 0.3)
        assert stage["early_stopping"]["patience"] == 10
        augment = cell.training.augment
        assert augment["hflip"] and (augment["shear"], augment["zoom"]) == (0.2, 0.2)


# Seed 004's trainable parameters: the base model, the base model with its classifier, fine-tuned.
DENSENET_TRAINABLE = {"plain": 6_964_106, "optimized": 7_252_746, "transfer": 4_262_026}


def densenet_regime(cell) -> str:
    if cell.weights == "imagenet":
        return "transfer"
    return "plain" if cell.training.head == "gap" else "optimized"


def test_densenet_regimes_is_seed_004():
    from workflow.train.trainable import stage_trainable_parameters

    study = cells("densenet-regimes")
    regimes = {densenet_regime(cell): cell for cell in study.grid_cells}
    assert sorted(regimes) == sorted(DENSENET_TRAINABLE)
    for name, cell in regimes.items():
        (stage,) = stages(cell)
        assert (cell.model, cell.resolution, cell.batch_size, cell.optimizer, stage["epochs"]) == (
            "densenet121", 155, 128, "adam", 32)
        assert not any(value for key, value in cell.training.augment.items() if key != "fill")
        (count,) = stage_trainable_parameters(cell, num_classes=10).values()
        assert count == pytest.approx(DENSENET_TRAINABLE[name], rel=0.01), name
    assert regimes["plain"].training.dropout == 0 and regimes["transfer"].training.dropout == 0.2
    assert regimes["plain"].weights == regimes["optimized"].weights == "none"  # "without transfer learning"
