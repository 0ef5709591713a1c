"""Grid expansion, cell ids and cross-reference checks of workflow.study."""

import pytest

from conftest import tiny_study
from workflow.study import ConfigError, build_study, format_lr


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
    assert [s["name"] for s in study.cells[upstream].training["stages"]] == ["scratch"]
    assert [s["name"] for s in study.grid_cells[0].training["stages"]] == ["head", "finetune"]


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
