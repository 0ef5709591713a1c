"""Per-cell training settings: `training` in grid.include entries and in grid.overrides' `set`."""

import json

import pytest
from snakemake.utils import validate

from conftest import REPO, tiny_study
from workflow.study.config import ConfigError
from workflow.study.grid import build_study

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def study(**grid):
    config = tiny_study()
    config["grid"].update(optimizer=["adam"], batch_size=[32], **grid)
    config["training"]["head"] = "mlp"
    validate(config, SCHEMA)
    return build_study(config)


def test_an_include_entry_trains_its_cells_with_its_own_settings():
    base = {cell.id for cell in study().grid_cells}
    plain = {"train": "all", "training": {"head": "gap", "dropout": 0.0, "augment": {"hflip": True}}}
    cells = {cell.id: cell for cell in study(include=[plain]).grid_cells}
    (new,) = set(cells) - base
    assert base < set(cells)  # the other cells keep their ids and settings
    cell = cells[new]
    assert new.startswith("digits-5to9/resnet18/r16/bs32-lr1e-2-adam-all-s0-wbase-")
    assert set(cell.params) == {"head", "dropout", "augment"} and "-headgap" in new and "-dropout0" in new
    assert cell.training.head == "gap" and cell.training.dropout == 0.0
    assert cell.training.augment["hflip"] and cell.training.augment["crop"] == 0  # deep-merged
    assert json.loads(cell.to_json())["training"]["head"] == "gap"  # what a job is given
    (old,) = base
    assert cells[old].training.head == "mlp" and cells[old].params == {}


def test_an_override_sets_training_for_the_cells_it_matches_and_later_rules_win():
    overrides = [
        {"when": {"train": "head"}, "set": {"training": {"dropout": 0.5, "rho": 0.9}}},
        {"when": {"train": "head", "optimizer": "adam"}, "set": {"training": {"dropout": 0.3}}},
    ]
    cells = {cell.train: cell for cell in study(train=["head", "all"], overrides=overrides).grid_cells}
    assert cells["head"].training.dropout == 0.3 and cells["head"].training.rho == 0.9
    assert cells["head"].params == {"dropout": 0.3, "rho": 0.9}
    assert cells["all"].training.dropout is None and cells["all"].params == {}
    assert cells["all"].id == "digits-5to9/resnet18/r16/bs32-lr1e-2-adam-all-s0-wbase"


def test_two_regimes_that_differ_only_in_training_get_two_cells():
    include = [{"weights": "none", "training": {"head": "gap"}}, {"weights": "none"}]
    ids = [cell.id for cell in study(include=include).grid_cells if cell.weights == "none"]
    assert len(ids) == 2 and len(set(ids)) == 2


def test_stages_of_an_include_entry_are_named_by_a_digest():
    stages = [{"name": "long", "train": "all", "epochs": 9}]
    (cell,) = [c for c in study(include=[{"weights": "none", "training": {"stages": stages}}]).grid_cells
               if c.weights == "none"]
    assert [s["name"] for s in cell.training.stages] == ["long"]
    tag = cell.id.rsplit("-stages", 1)[1]
    assert len(tag) == 6 and all(ch in "0123456789abcdef" for ch in tag)


def test_a_bad_per_cell_setting_names_the_cell():
    with pytest.raises(ConfigError, match=r"cell digits-5to9/resnet18/r16/bs32-lr1e-2-adam-all-s0-wbase-dropout0\.2"
                                          r"-headown: training\.dropout: the 'own' head"):
        study(include=[{"training": {"head": "own", "dropout": 0.2}}])
    config = tiny_study()
    config["grid"]["include"] = [{"training": {"head": "wide"}}]
    from snakemake.exceptions import WorkflowError
    with pytest.raises(WorkflowError):
        validate(config, SCHEMA)


def test_a_cell_with_its_own_settings_trains_with_them(shard, tmp_path):
    """End to end on real digits: an include entry's head, dropout and augmentation, Keras's RMSprop
    defaults and a Keras depth reach the trained cell."""
    from workflow.train.cell import train_cell
    from workflow.train.trainable import stage_trainable_parameters

    config = tiny_study()
    config.pop("pretrain")
    config["datasets"] = {"digits-012": {"source": "digits", "classes": [0, 1, 2]}}
    config["grid"].update(dataset=["digits-012"], model=["mobilenet_v2"], weights=["none"], optimizer=["rmsprop"],
                          batch_size=[32], train=["keras:12"], include=[{"training": {
                              "head": "gap", "dropout": 0.0, "augment": {"vflip": True, "rot90": True, "shear": 10}}}])
    config["training"].update(head="mlp", momentum=0.0, rho=0.9, eps=1e-7,
                              stages=[{"name": "head", "train": "head", "epochs": 1},
                                      {"name": "finetune", "train": "cell", "epochs": 1}])
    validate(config, SCHEMA)
    (cell,) = [c for c in build_study(config).grid_cells if c.params]
    metrics = train_cell(cell, shard, tmp_path, threads=1, log=lambda _: None)
    assert metrics["status"] == "ok" and metrics["run"]["head"] == "gap"
    head, finetune = metrics["stages"]
    assert (finetune["train"], finetune["rho"], finetune["eps"], finetune["momentum"]) == ("keras:12", 0.9, 1e-7, 0.0)
    counts = stage_trainable_parameters(cell, 3)
    assert (head["trainable_parameters"], finetune["trainable_parameters"]) == (counts["head"], counts["finetune"])
    assert head["trainable_parameters"] == 1280 * 3 + 3 < finetune["trainable_parameters"]
