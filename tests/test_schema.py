"""Bad configs are refused before anything runs, with one message naming the key and the bad value.

The checks run in-process (conftest.study_error: what rules/common.smk does when Snakemake loads the
study); one dry run keeps the Snakemake path honest."""

import pytest

from conftest import REPO, load_study_file, snakemake, study_error, tiny_study


def dry_run_error(tmp_path, study_file, config) -> str:
    result = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)), check=False)
    assert result.returncode != 0, "the dry run should have failed"
    return result.stdout + result.stderr


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.update(epochz=3), ["Additional properties are not allowed ('epochz' was unexpected)"]),
    (lambda c: c["grid"].update(batch_size=[32, 0]), ["grid.batch_size[1]: 0 is less than the minimum of 1"]),
    (lambda c: c["grid"].update(lr="fast"), ["grid.lr: 'fast' is not of type 'array'"]),
    (lambda c: c["grid"].update(model=["resnet18", "resnet19"]),
     ["unknown model 'resnet19'; closest torchvision models: resnet18", "(cell digits-5to9/resnet19/r16/"]),
    (lambda c: c["grid"].update(optimizer=["adagrad"]), ["grid.optimizer[0]: 'adagrad' is not one of", "(allowed: sgd, adam, adamw, rmsprop)"]),
    (lambda c: c["datasets"]["digits-0to4"].update(source="mnist"), ["datasets.digits-0to4.source: 'mnist' is not one of"]),
    (lambda c: c["grid"].update(dataset=["digits-5to9", "cifar11"]), ["grid.dataset: unknown dataset 'cifar11'"]),
    (lambda c: c["grid"].update(freeze=["head"]), ["grid.freeze: `freeze` is now `train`"]),
    (lambda c: c["grid"].update(train=["none"]), ["grid.train: 'none' is gone: training from scratch is `weights: none`"]),
    (lambda c: c["resources"].update(train_runtime_min=5, train_warning_s=300),
     ["resources.train_warning_s (300) must be less than train_runtime_min (5) minutes"]),
])
def test_bad_config_is_refused_naming_key_and_value(study_file, mutate, expected):
    config = tiny_study()
    mutate(config)
    output = study_error(study_file(config))
    for text in expected:
        assert text in output, output


def test_valid_config_passes(study_file):
    study = load_study_file(study_file(tiny_study()))
    assert len(study.grid_cells) == 4 and len(study.cells) == 5


@pytest.mark.pipeline  # the one dry run of a bad study: Snakemake stops with the in-process checks' line
def test_a_schema_error_is_one_short_message_naming_the_file(tmp_path, study_file):
    config = tiny_study()
    config["grid"]["batch_size"] = [32, 0]
    path = study_file(config)
    output = dry_run_error(tmp_path, lambda _: path, config)
    error_lines = [line for line in output.splitlines() if "Invalid study config" in line]
    assert len(error_lines) == 1 and str(path) in error_lines[0], output[-3000:]
    assert "grid.batch_size[1]: 0 is less than the minimum of 1" in error_lines[0], output[-3000:]
    assert "$defs" not in output and "description" not in output  # no schema dump


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c["training"]["stages"][0].update(freeze=c["training"]["stages"][0].pop("train")),
     "training.stages[0].freeze: `freeze` is now `train`"),
    (lambda c: c["grid"]["include"].append({"freeze": "all"}), "grid.include[0].freeze: `freeze` is now `train`"),
    (lambda c: c["grid"].update(lr=["1e-3"]), "YAML reads '1e-3' as a string"),
    (lambda c: c.update(epochz=3), "(top level): Additional properties are not allowed ('epochz' was unexpected)"),
])
def test_check_config_says_the_key_and_how_to_write_it(mutate, expected):
    from workflow.study.config import ConfigError, check_config

    config = tiny_study()
    config["grid"].setdefault("include", [])
    mutate(config)
    with pytest.raises(ConfigError) as error:
        check_config(config)
    assert expected in str(error.value) and "\n" not in str(error.value)


@pytest.mark.parametrize("path", sorted(REPO.glob("studies/*.yaml")) + [REPO / "config.yaml"], ids=lambda p: p.name)
def test_check_config_fills_the_same_defaults_as_snakemakes_validate(path):

    import yaml
    from snakemake.utils import validate

    from workflow.study.config import SCHEMA, check_config

    ours, snakemakes = yaml.safe_load(path.read_text()), yaml.safe_load(path.read_text())
    check_config(ours)
    validate(snakemakes, str(SCHEMA))
    assert ours == snakemakes and ours != yaml.safe_load(path.read_text())


def test_a_repeated_key_is_refused_naming_both_lines(tmp_path):
    import yaml

    path = tmp_path / "study.yaml"
    text = yaml.safe_dump(tiny_study(), sort_keys=False)
    path.write_text(text + "grid: {}\n")  # `grid` again, at the end: safe_load keeps the last one
    first = next(i for i, line in enumerate(text.splitlines(), 1) if line.startswith("grid:"))
    last = len(text.splitlines()) + 1
    output = study_error(path)
    assert f"{path}, line {last}: key 'grid' repeats the key of line {first}" in output, output


def test_an_exclude_that_removes_every_cell_is_refused(study_file):
    config = tiny_study()
    config["grid"]["exclude"] = [{"model": "resnet18"}]
    output = study_error(study_file(config))
    assert "grid.exclude removes every cell of the grid" in output, output


def test_a_yaml_syntax_error_names_the_file_and_the_line(tmp_path):
    from workflow.study.config import ConfigError, load_config

    path = tmp_path / "study.yaml"
    path.write_text("study: broken\ngrid: [resnet18\n  model: x\n")
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}, line 3, column 8: not valid YAML: ") and "\n" not in str(error.value)
