"""The optimizer settings of a study (momentum, RMSprop's rho, epsilons) reach the torch optimizer."""

import pytest
from torch import nn

from conftest import REPO
from workflow.core.cell import DEFAULT_TRAINING, TrainingSettings, merge
from workflow.train.optim import Stage


def started(training: dict, optimizer: str, stage_keys: dict | None = None):
    stage = {"name": "s", "train": "all", "epochs": 1, **(stage_keys or {})}
    settings = TrainingSettings.from_mapping(merge(DEFAULT_TRAINING, training)).stage(stage, optimizer, "all")
    return Stage.start(nn.Linear(3, 2), settings, 1e-3).optimizer


@pytest.mark.parametrize("optimizer, training, expected", [
    ("rmsprop", {"momentum": 0.0, "rho": 0.9, "eps": 1e-7}, {"momentum": 0.0, "alpha": 0.9, "eps": 1e-7}),
    ("rmsprop", {}, {"momentum": 0.9, "alpha": 0.99, "eps": 1e-8}),  # tlsweep's defaults (torch's rho and eps)
    ("adam", {"eps": 1e-7}, {"eps": 1e-7, "betas": (0.9, 0.999)}),
    ("adamw", {"eps": 1e-6}, {"eps": 1e-6}),
    ("sgd", {"momentum": 0.0}, {"momentum": 0.0, "nesterov": False}),
])
def test_settings_reach_the_optimizer(optimizer, training, expected):
    defaults = started(training, optimizer).defaults
    assert {key: defaults[key] for key in expected} == expected
    assert defaults["lr"] == 1e-3


def test_a_stage_sets_its_own_rho_and_eps():
    defaults = started({"rho": 0.9}, "rmsprop", {"rho": 0.95, "eps": 1e-3, "momentum": 0.5}).defaults
    assert (defaults["alpha"], defaults["eps"], defaults["momentum"]) == (0.95, 1e-3, 0.5)


def test_schema_checks_rho_and_eps():
    from snakemake.exceptions import WorkflowError
    from snakemake.utils import validate

    from conftest import tiny_study

    for bad in ({"rho": 1.0}, {"eps": 0}, {"eps": "small"}):
        config = tiny_study()
        config["training"].update(bad)
        with pytest.raises(WorkflowError):
            validate(config, str(REPO / "workflow/schemas/config.schema.yaml"))
