"""A study that can only fail or write outside its folders is refused when it loads, in one line naming the key
(and the cell where there is one). In-process (conftest.study_error: what rules/common.smk does)."""

import time

import pytest

from conftest import study_error, tiny_study


def one_cell(**axes) -> dict:
    """The tiny study with one grid cell from ImageNet weights: `axes` replace its grid's values."""
    config = tiny_study()
    config["grid"].update(batch_size=[32], optimizer=["adam"], weights=["imagenet"], **axes)
    return config


@pytest.mark.parametrize("axes, expected", [
    ({"train": ["keras:15"]},
     "grid.train: 'keras:15': resnet18 has no Keras layer count (known for densenet121, inception_v3, mobilenet_v2, "
     "resnet50, resnext50_32x4d, vgg16, wide_resnet50_2); use last:N or from:<module> "
     "(cell digits-5to9/resnet18/r16/bs32-lr1e-2-adam-keras15-s0)"),
    ({"model": ["resnet50"], "resolution": [32], "train": ["keras:176"]},
     "grid.train: 'keras:176': resnet50 has only 175 layers as Keras counts them (cell digits-5to9/resnet50/r32/"),
    ({"train": ["last:42"]},
     "grid.train: 'last:42': resnet18 with the 'gap' head has only 41 layers at resolution 16 (cell "
     "digits-5to9/resnet18/r16/"),
    ({"model": ["inception_v3"], "resolution": [80], "train": ["last:190"]},
     "grid.train: 'last:190': inception_v3 with the 'gap' head has only 189 layers at resolution 80 (cell "),
    ({"model": ["inception_v3"], "resolution": [64]},
     "grid: inception_v3 needs a resolution of at least 75, not 64 (cell digits-5to9/inception_v3/r64/"),
])
def test_a_value_that_can_only_fail_at_training_is_refused_naming_the_key_and_the_cell(study_file, axes, expected):
    assert expected in study_error(study_file(one_cell(**axes)))


def test_a_stages_own_depth_is_checked_against_the_cells_model(study_file):
    config = one_cell(model=["resnet50"], resolution=[32])
    config["training"]["stages"][0]["train"] = "keras:500"
    assert study_error(study_file(config)).startswith(
        "training.stages[0].train: 'keras:500': resnet50 has only 175 layers as Keras counts them (cell ")


@pytest.mark.parametrize("model, depth, head, resolution", [
    ("resnet18", "last:41", "gap", 16), ("resnet18", "last:45", "mlp", 16), ("resnet50", "keras:175", "gap", 32),
    ("inception_v3", "last:194", "gap", 299)])
def test_the_deepest_depth_a_model_has_loads(study_file, model, depth, head, resolution):
    from conftest import load_study_file

    config = one_cell(model=[model], resolution=[resolution], train=[depth])
    config["training"]["head"] = head
    assert len(load_study_file(study_file(config)).grid_cells) == 1


@pytest.mark.parametrize("mutate, key", [
    (lambda c: c.update(study=".."), "study"),
    (lambda c: c.update(study="."), "study"),
    (lambda c: c["datasets"].update({"..": c["datasets"].pop("digits-5to9")}) or c["grid"].update(dataset=[".."]),
     "datasets"),
    (lambda c: c["pretrain"].update({"..": c["pretrain"].pop("base")}) or c["grid"].update(weights=["pretrain:.."]),
     "pretrain"),
    (lambda c: c.update(positive_class={"..": 1}), "positive_class"),
])
def test_a_name_that_would_leave_its_folder_is_refused_naming_the_key(study_file, mutate, key):
    config = tiny_study()
    mutate(config)
    error = study_error(study_file(config))
    assert error.startswith(f"{key}: ") and "not start with a dot" in error, error


@pytest.mark.parametrize("where, value", [("lr", float("nan")), ("lr", float("inf")), ("training", float("-inf"))])
def test_a_non_finite_number_is_refused_naming_the_key(study_file, where, value):
    config = tiny_study()
    if where == "lr":
        config["grid"]["lr"] = [0.01, value]
        key = "grid.lr[1]"
    else:
        config["training"]["weight_decay"] = value
        key = "training.weight_decay"
    assert study_error(study_file(config)) == f"{key}: {value} is not a finite number; write a number"


def test_a_huge_grid_is_refused_before_its_cells_are_built_with_its_count_and_axes(study_file):
    config = tiny_study()
    config["grid"].update(lr=[10.0 ** -k for k in range(1, 101)], seed=list(range(10_000)))
    started = time.monotonic()
    error = study_error(study_file(config))
    assert time.monotonic() - started < 10
    assert error.endswith(
        "grid: 4,000,000 cells, more than max_cells (10,000): optimizer 2 x batch_size 2 x lr 100 x seed 10000; "
        "make the grid smaller, or set max_cells to its size if you mean it"), error


def test_max_cells_raises_the_limit(study_file):
    import yaml

    from conftest import REPO, load_study_file
    from workflow.study.grid import MAX_CELLS

    schema = yaml.safe_load((REPO / "workflow/schemas/config.schema.yaml").read_text())
    assert schema["properties"]["max_cells"]["x-default"] == MAX_CELLS

    config = tiny_study()
    config["grid"]["seed"] = list(range(3))
    config["max_cells"] = 12
    assert len(load_study_file(study_file(config)).grid_cells) == 12
    config["max_cells"] = 11
    assert "grid: 12 cells, more than max_cells (11): optimizer 2 x batch_size 2 x seed 3;" in study_error(
        study_file(config))


def test_a_misspelt_required_key_names_the_misspelling_and_the_key():
    from workflow.study.config import ConfigError, check_config

    config = tiny_study()
    config["grid"]["batchsize"] = config["grid"].pop("batch_size")
    with pytest.raises(ConfigError) as error:
        check_config(config)
    message = str(error.value)
    assert message.startswith("grid: 'batchsize' is not a key; did you mean 'batch_size'? "), message
    assert "'batch_size' is a required property" in message, message


@pytest.mark.parametrize("name, resolution", [("resnet18", 32), ("vgg16", 32), ("inception_v3", 80),
                                              ("inception_v3", 299), ("squeezenet1_1", 32)])
def test_the_catalogues_layer_counts_are_the_built_models(name, resolution):
    """What the study checks at load (the catalogue's counts) is what training counts in the built model."""
    from workflow.core.backbones import get_backbone, train_error
    from workflow.train.keras_depth import keras_layers
    from workflow.core.heads import HEADS
    from workflow.train.models import build_classifier, parameterised_layers

    spec = get_backbone(name)
    for head in HEADS:
        model, _ = build_classifier(name, 3, "none", head=head, resolution=resolution)
        layers = len(parameterised_layers(model))
        assert train_error(name, f"last:{layers}", head, resolution) is None
        assert train_error(name, f"last:{layers + 1}", head, resolution) is not None
    assert spec.keras_layers == (len(keras_layers(model.backbone)) if spec.keras_layers else None)
