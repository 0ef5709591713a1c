"""The `training` config: stage settings, what trains in cell ids, and cross-key errors."""

import pytest
from snakemake.utils import validate

from conftest import REPO, tiny_study
from workflow.study.config import ConfigError
from workflow.study.grid import build_study
from workflow.core.cell import DEFAULT_TRAINING, TrainingSettings, merge

SCHEMA = str(REPO / "workflow/schemas/config.schema.yaml")


def study(mutate):
    config = tiny_study()
    mutate(config)
    validate(config, SCHEMA)
    return build_study(config)


def test_default_is_the_batch_size_papers_two_stages():
    head, finetune = (TrainingSettings().stage(s, "rmsprop", "all") for s in DEFAULT_TRAINING["stages"])
    assert (head["train"], head["epochs"], head["lr_factor"]) == ("head", 20, 1.0)
    assert (finetune["train"], finetune["epochs"], finetune["lr_factor"]) == ("all", 100, 0.01)
    for stage in (head, finetune):
        assert stage["optimizer"] == "rmsprop" and stage["schedule"] == "plateau"
        todays_rule = {"monitor": "val_accuracy", "min_delta": 0.0}  # what unset monitor and min_delta mean
        assert stage["plateau"] == {"patience": 3, "factor": 0.1, **todays_rule}
        assert stage["early_stopping"] == {"patience": 10, **todays_rule}
    assert DEFAULT_TRAINING["label_smoothing"] == 0 and DEFAULT_TRAINING["mixup"] == 0


def test_a_stage_overrides_only_what_it_sets():
    training = merge(DEFAULT_TRAINING, {"schedule": "cosine", "weight_decay": 1e-4, "plateau": {"patience": 5}})
    stage = {"name": "s", "train": "last:15", "epochs": 3, "optimizer": "sgd", "nesterov": True,
             "schedule": "step", "step": {"every": 2}, "early_stopping": {"patience": 2}}
    settings = TrainingSettings.from_mapping(training).stage(stage, "adam", "all")
    assert settings["optimizer"] == "sgd" and settings["nesterov"] and settings["train"] == "last:15"
    assert settings["schedule"] == "step" and settings["step"] == {"every": 2, "factor": 0.1}
    unset = {"monitor": "val_accuracy", "min_delta": 0.0}
    assert settings["weight_decay"] == 1e-4 and settings["plateau"] == {"patience": 5, "factor": 0.1, **unset}
    assert settings["early_stopping"] == {"patience": 2, **unset} and settings["lr_factor"] == 1.0
    cell_stage = TrainingSettings.from_mapping(training).stage({"name": "t", "train": "cell", "epochs": 1}, "adam", "none")
    assert cell_stage["optimizer"] == "adam" and cell_stage["train"] == "none" and cell_stage["schedule"] == "cosine"


def test_new_axis_values_keep_old_ids_and_render_last_n_without_a_colon():
    before = {c.id for c in study(lambda c: None).grid_cells}

    def more(c):
        c["grid"]["train"] = ["all", "last:15"]
        c["grid"]["optimizer"] += ["adamw"]
        c["grid"]["resolution"] = [16, 75]
        c["training"].update(head="mlp", schedule="cosine", warmup_epochs=1, mixup=0.2)

    after = {c.id for c in study(more).grid_cells}
    assert before < after
    assert "digits-5to9/resnet18/r16/bs32-lr1e-2-adamw-last15-s0-wbase" in after
    assert "digits-5to9/resnet18/r75/bs64-lr1e-2-sgd-all-s0-wbase" in after


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c["grid"].update(model=["inception_v3"]),
     "grid: inception_v3 needs a resolution of at least 75, not 16 (cell digits-5to9/inception_v3/r16/"),
    (lambda c: c["training"].update(head="own", dropout=0.3),
     "training.dropout: the 'own' head keeps the model's own dropout"),
    (lambda c: c["training"]["stages"].append({"name": "head", "train": "all", "epochs": 1}),
     "training.stages: stage names must differ; ['head'] repeat"),
    (lambda c: c["training"].update(nesterov=True, momentum=0),
     "training: stage 'head' asks for nesterov with momentum 0"),
    (lambda c: c["pretrain"]["base"]["training"].update(head="own", dropout=0.1),
     "pretrain.base.training.dropout: the 'own' head"),
    (lambda c: (c["training"].update(dropout=0.3), c["grid"].update(training={"head": ["gap", "own"]})),
     "cell digits-5to9/resnet18/r16/bs32-lr1e-2-sgd-all-s0-wbase-headown: training.dropout: the 'own' head"),
])
def test_cross_key_errors_name_the_key_and_the_cell(mutate, message):
    with pytest.raises(ConfigError) as error:
        study(mutate)
    assert message in str(error.value)


def test_schema_rejects_bad_training_values():
    from snakemake.exceptions import WorkflowError

    for mutate in (lambda c: c["grid"].update(train=["last:0"]),
                   lambda c: c["training"].update(schedule="onecycle"),
                   lambda c: c["training"]["stages"][0].update(train="none"),
                   lambda c: c["training"].update(head="deep")):
        config = tiny_study()
        mutate(config)
        with pytest.raises(WorkflowError):
            validate(config, SCHEMA)
