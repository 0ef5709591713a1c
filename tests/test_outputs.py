"""Which tables and charts each kind of study plans, from its config alone."""

import re

import pytest

from conftest import REPO, tiny_study
from fakecells import make_study, study_config
from workflow.study.config import load_config
from workflow.study.outputs import regime, study_charts, study_tables, trainable_layers
from workflow.study.grid import build_study


def plan(study):
    return study_tables(study), study_charts(study)


def test_default_study_batch_size_on_cifar():
    tables, charts = plan(build_study(load_config(REPO / "config.yaml")))
    assert tables == ["summary", "best", "batch_size"]
    assert charts == ["val_accuracy", "test_accuracy", "accuracy_vs_time"]


def test_tiny_and_demo_studies_compare_optimizers_too(study_file):
    expected = (["summary", "best", "batch_size"], ["val_accuracy", "test_accuracy", "train_curves", "accuracy_vs_time"])
    assert plan(build_study(load_config(REPO / "studies/digits-demo.yaml"))) == expected
    assert plan(build_study(load_config(study_file(tiny_study())))) == expected


def test_pcam_study_batch_size_by_learning_rate_per_optimizer(tmp_path):
    tables, charts = plan(make_study(tmp_path, model=["vgg16"], resolution=[96], batch_size=[16, 32, 64, 128, 256],
                                     lr=[1e-3, 1e-4], optimizer=["sgd", "adam"]))
    assert tables == ["summary", "best", "batch_size", "batch_lr"]
    assert charts == ["val_accuracy", "test_accuracy", "train_curves", "lr_batch_heatmap", "accuracy_vs_time"]


def test_freezing_study_and_densenet_regimes(tmp_path):
    tables, charts = plan(make_study(tmp_path, model=["resnet50"], batch_size=[64], lr=[1e-4],
                                     train=["last:15", "last:50", "last:100"]))
    assert "trainable_layers" in charts and "regimes" in tables
    tables, charts = plan(make_study(tmp_path, model=["densenet121"], resolution=[32], weights=["imagenet", "none"],
                                     train=["head", "all"]))
    # head = 0 layers, all = unknown: no layer comparison; three regimes: their curves
    assert "regimes" in tables and charts == ["accuracy_vs_time", "regime_curves"]
    tables, charts = plan(make_study(tmp_path, train=["head", "last:15"]))
    assert "trainable_layers" in charts


def test_seeds_add_the_replicate_table_and_chart(tmp_path):
    tables, charts = plan(make_study(tmp_path, seed=[0, 1, 2]))
    assert tables == ["summary", "best", "configs"]
    assert charts == ["accuracy_vs_time", "configs"]


def test_a_single_cell_gets_tables_but_no_chart(tmp_path):
    assert plan(make_study(tmp_path)) == (["summary", "best"], [])


@pytest.mark.parametrize("train, layers", [("head", 0), ("last:15", 15), ("last:150", 150), ("all", None),
                                           ("from:layer4", None)])
def test_trainable_layers_from_train_values(train, layers):
    assert trainable_layers(train) == layers


@pytest.mark.parametrize("weights, train, name", [
    ("none", "all", "from scratch"), ("none", "head", "from scratch"), ("imagenet", "head", "frozen"),
    ("pretrain:base", "all", "fine-tuned"), ("imagenet", "last:2", "last 2 layers"),
    ("imagenet", "from:features.denseblock4", "from features.denseblock4")])
def test_training_regimes(weights, train, name):
    assert regime(weights, train) == name


def test_every_table_and_chart_has_a_report_caption(tmp_path):
    from workflow.results.charts import CHARTS
    from workflow.results.model_charts import MODEL_CHARTS
    from workflow.results.models_table import MODEL_TABLES
    from workflow.results.search_charts import SEARCH_CHARTS, SEARCH_TABLES
    from workflow.results.tables import TABLES

    config = study_config(tmp_path, batch_size=[16, 64], lr=[1e-3, 1e-2], optimizer=["sgd", "adam"],
                          train=["head", "last:2", "all"], weights=["imagenet", "none"], seed=[0, 1],
                          include=[{"batch_size": 32, "lr": 1e-3, "optimizer": "sgd", "train": "head",
                                    "weights": "imagenet", "seed": 0}])  # not every combination: the sweeps table too
    study = build_study({**config, "search": "halving"})
    assert plan(study) == (list(TABLES), list(CHARTS))
    assert sorted(p.stem for p in (REPO / "report/tables").glob("*.rst")) == sorted([*TABLES, *SEARCH_TABLES, *MODEL_TABLES])
    assert sorted(p.stem for p in (REPO / "report/charts").glob("*.rst")) == sorted([*CHARTS, *SEARCH_CHARTS, *MODEL_CHARTS])


def test_halving_adds_its_table_and_chart(tmp_path):
    grid = plan(make_study(tmp_path, batch_size=[16, 64]))
    halving = plan(build_study({**study_config(tmp_path, batch_size=[16, 64]), "search": {"method": "halving"}}))
    assert halving == (grid[0] + ["halving"], grid[1] + ["halving"])
    assert plan(build_study({**study_config(tmp_path, batch_size=[16, 64]), "search": "grid"})) == grid


def test_every_rule_is_described_in_the_report():
    rules = re.findall(r"^\s*(?:rule|checkpoint) (\w+):", "".join(p.read_text() for p in (REPO / "rules").glob("*.smk")),
                       re.M)
    description = (REPO / "report/workflow.rst").read_text()
    assert rules and all(f"``{rule}``" in description for rule in rules)
