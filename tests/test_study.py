"""Grid expansion, cell ids and cross-reference checks of workflow.study.grid."""

import pytest

from conftest import tiny_study
from workflow.study.config import ConfigError
from workflow.core.cell import format_lr
from workflow.study.grid import build_study


def validated(config):
    """Apply the schema's defaults the way the Snakefile does."""
    from snakemake.utils import validate

    from conftest import REPO

    validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
    return config


@pytest.mark.parametrize("lr, text", [(1e-4, "1e-4"), (0.01, "1e-2"), (3e-4, "3e-4"), (0.1, "1e-1"), (2.5e-3, "2.5e-3"), (1.0, "1e0")])
def test_format_lr(lr, text):
    assert format_lr(lr) == text


def test_grid_cells_and_upstream_cells():
    study = build_study(validated(tiny_study()))
    assert len(study.grid_cells) == 4  # 2 batch sizes x 2 optimizers
    ids = [cell.id for cell in study.grid_cells]
    assert "digits-5to9/resnet18/r16/bs32-lr1e-2-sgd-all-s0-wbase" in ids
    upstream = "digits-0to4/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone"
    assert {cell.upstream for cell in study.grid_cells} == {upstream}
    assert set(study.cells) == set(ids) | {upstream}
    # the upstream cell uses its own schedule, the grid cells the study's
    assert [s["name"] for s in study.cells[upstream].training.stages] == ["scratch"]
    assert [s["name"] for s in study.grid_cells[0].training.stages] == ["head", "finetune"]


def test_adding_an_axis_value_keeps_existing_ids():
    before = {c.id for c in build_study(validated(tiny_study())).grid_cells}
    config = tiny_study()
    config["grid"]["batch_size"].append(128)
    config["grid"]["weights"].append("imagenet")
    after = {c.id for c in build_study(validated(config)).grid_cells}
    assert before < after and len(after) == 12


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["grid"].update(dataset=["nope"]), "grid.dataset: unknown dataset 'nope'"),
    (lambda c: c["grid"].update(weights=["pretrain:missing"]), "grid.weights: unknown pretrain cell 'missing'"),
    (lambda c: c["pretrain"]["base"].update(dataset="gone"), "pretrain.base.dataset: unknown dataset 'gone'"),
    (lambda c: c["datasets"]["digits-0to4"].update(split={"train": 0.5, "val": 0.2, "test": 0.2}),
     "datasets.digits-0to4.split: fractions add up to 0.9, not 1"),
])
def test_cross_reference_errors_name_the_key(mutate, message):
    config = tiny_study()
    mutate(config)
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        build_study(validated(config))


def grid_config(**grid):
    config = tiny_study()
    config["grid"] = {"dataset": ["digits-5to9"], "model": ["resnet18"], "resolution": [16],
                      "batch_size": [32], "lr": [0.01], "optimizer": ["sgd"], **grid}
    return validated(config)


def axis_tuples(study, *axes):
    return sorted(tuple(getattr(cell, axis) for axis in axes) for cell in study.grid_cells)


def test_exclude_drops_matching_cells():
    study = build_study(grid_config(model=["resnet18", "mobilenet_v2"], batch_size=[32, 512],
                                    exclude=[{"model": "mobilenet_v2", "batch_size": 512}]))
    assert axis_tuples(study, "model", "batch_size") == [("mobilenet_v2", 32), ("resnet18", 32), ("resnet18", 512)]


def test_include_adds_a_small_grid_of_its_own():
    study = build_study(grid_config(lr=[0.01, 0.001], include=[{"model": "mobilenet_v2", "batch_size": 8}]))
    assert axis_tuples(study, "model", "batch_size", "lr") == [
        ("mobilenet_v2", 8, 0.001), ("mobilenet_v2", 8, 0.01), ("resnet18", 32, 0.001), ("resnet18", 32, 0.01)]


def test_include_of_an_existing_cell_adds_nothing():
    study = build_study(grid_config(include=[{"batch_size": 32}]))
    assert len(study.grid_cells) == 1


def test_overrides_set_learning_rates_per_optimizer():
    study = build_study(grid_config(optimizer=["sgd", "adam"], lr=[0.001],
                                    overrides=[{"when": {"optimizer": "sgd"}, "set": {"lr": [0.1, 0.01]}}]))
    assert axis_tuples(study, "optimizer", "lr") == [("adam", 0.001), ("sgd", 0.01), ("sgd", 0.1)]


def test_override_on_a_later_axis_is_an_error():
    config = grid_config(overrides=[{"when": {"lr": 0.01}, "set": {"optimizer": ["adam"]}}])
    with pytest.raises(ConfigError, match=r"grid\.overrides\[0\]\.when: \['lr'\] do not come before \['optimizer'\]"):
        build_study(config)


def test_swept_training_keys_become_axes_with_stable_ids():
    base = {c.id for c in build_study(grid_config()).grid_cells}
    study = build_study(grid_config(training={"dropout": [None, 0.2]}))  # None: the study's (the head's default)
    ids = {c.id for c in study.grid_cells}
    assert base < ids and len(ids) == 2
    (extra,) = ids - base
    assert extra.endswith("-dropout0.2")
    cell = next(c for c in study.grid_cells if c.id == extra)
    assert cell.training.dropout == 0.2 and cell.params == {"dropout": 0.2}


def test_unknown_swept_training_key_is_an_error():
    with pytest.raises(ConfigError, match=r"grid\.training: unknown training keys \['dropuot'\]"):
        build_study(grid_config(training={"dropuot": [0.1]}))


def test_cells_command_lists_the_cells(tmp_path, study_file):
    import subprocess
    import sys

    from conftest import REPO

    result = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", str(study_file(tiny_study()))],
                            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode == 0, result.stderr
    assert "digits-5to9/resnet18/r16/bs64-lr1e-2-adam-all-s0-wbase     grid   no" in result.stdout
    assert "digits-0to4/resnet18/r16/bs64-lr1e-3-adam-all-s0-wnone pretrain   no" in result.stdout
    assert result.stdout.strip().endswith("4 grid cells, 1 pretrain cells, 0 done")


def test_cells_command_reports_a_bad_config(tmp_path, study_file):
    import subprocess
    import sys

    from conftest import REPO

    config = tiny_study()
    config["grid"]["batch_size"] = [0]
    result = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", str(study_file(config))],
                            capture_output=True, text=True, cwd=tmp_path, env={"PYTHONPATH": str(REPO), "PATH": ""})
    assert result.returncode != 0
    assert "grid.batch_size[0]: 0 is less than the minimum of 1" in result.stderr
