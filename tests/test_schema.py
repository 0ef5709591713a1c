"""Bad configs fail even a dry run, with one message naming the key and the bad value."""

import pytest

from conftest import snakemake, tiny_study


def dry_run_error(tmp_path, study_file, config) -> str:
    result = snakemake(tmp_path, "-n", "--configfile", str(study_file(config)), check=False)
    assert result.returncode != 0, "the dry run should have failed"
    return result.stdout + result.stderr


@pytest.mark.parametrize("mutate, expected", [
    (lambda c: c.update(epochz=3), ["Additional properties are not allowed ('epochz' was unexpected)"]),
    (lambda c: c["grid"].update(batch_size=[32, 0]), ["0 is less than the minimum of 1", "['grid']['batch_size'][1]"]),
    (lambda c: c["grid"].update(lr="fast"), ["'fast' is not of type 'array'", "['grid']['lr']"]),
    (lambda c: c["grid"].update(model=["resnet18", "lenet"]), ["'lenet' is not one of", "['grid']['model'][1]"]),
    (lambda c: c["grid"].update(optimizer=["adagrad"]), ["'adagrad' is not one of", "['grid']['optimizer'][0]"]),
    (lambda c: c["datasets"]["digits-0to4"].update(source="mnist"), ["'mnist' is not one of", "['datasets']['digits-0to4']['source']"]),
    (lambda c: c["grid"].update(dataset=["digits-5to9", "cifar11"]), ["grid.dataset: unknown dataset 'cifar11'"]),
])
def test_bad_config_fails_dry_run_naming_key_and_value(tmp_path, study_file, mutate, expected):
    config = tiny_study()
    mutate(config)
    output = dry_run_error(tmp_path, study_file, config)
    for text in expected:
        assert text in output, output[-3000:]


def test_valid_config_passes(tmp_path, study_file):
    result = snakemake(tmp_path, "-n", "--configfile", str(study_file(tiny_study())))
    assert "This was a dry-run" in result.stdout
