"""A study's keys: old spellings refused in one line naming the new key, a misspelt key answered with the
closest known one. In-process (no Snakemake)."""

from __future__ import annotations

import pytest
import yaml

from conftest import tiny_study


def plant(config: dict, pattern: str, value) -> str:
    """Put `value` at a RENAMED_KEYS key path (`*`: a name, `[]`: list item 0) in `config`; its key path."""
    from workflow.study.config import _pattern, key_path

    parts = _pattern(pattern)
    where, path = config, []
    for part, following in zip(parts, parts[1:]):
        part = "x" if part == "*" else 0 if part == [] else part
        empty = [] if following == [] else {}
        if isinstance(where, list):
            if not where:
                where.append(empty)
            where = where[0]
        else:
            where = where.setdefault(part, empty)
        path.append(part)
    if isinstance(where, list):
        where.append({})
        where, path = where[-1], [*path, 0]
    where[parts[-1]] = value
    return key_path([*path, parts[-1]])


def test_a_renamed_study_key_is_refused_in_one_line_naming_the_new_key():
    from workflow.study.config import ConfigError, check_config

    config = tiny_study()
    config["resources"]["gpu_slots"] = 2
    with pytest.raises(ConfigError) as error:
        check_config(config)
    assert str(error.value) == "resources.gpu_slots: renamed; write resources.slots_per_gpu instead (same value)"


def test_a_renamed_key_names_the_study_file(tmp_path):
    from workflow.study.config import ConfigError, load_config

    config = tiny_study()
    config["resources"]["gpu_slots"] = 2
    path = tmp_path / "study.yaml"
    path.write_text(yaml.safe_dump(config))
    with pytest.raises(ConfigError) as error:
        load_config(path)
    assert str(error.value).startswith(f"{path}: resources.gpu_slots: ") and "resources.slots_per_gpu" in str(error.value)


def test_the_new_spelling_is_accepted():
    from workflow.gpu.slots import slot_settings
    from workflow.study.config import check_config

    config = tiny_study()
    config["resources"]["slots_per_gpu"] = 2
    check_config(config)
    assert slot_settings(config["resources"], "results").per_gpu == 2
    assert slot_settings({}, "results").per_gpu == 1


def _schema_has(schema: dict, pattern: str) -> bool:
    """Whether the schema describes a key path (`*`, `[]` as in RENAMED_KEYS), following $refs."""
    from workflow.study.config import _pattern

    node = schema
    for part in _pattern(pattern):
        while "$ref" in node:
            node = schema["$defs"][node["$ref"].rsplit("/", 1)[1]]
        if part == []:
            node = node.get("items", {})
        elif part == "*":
            node = node.get("additionalProperties", {})
        elif part in node.get("properties", {}):
            node = node["properties"][part]
        else:
            return False
    return True


def renamed():
    from workflow.study.config import RENAMED_KEYS

    return sorted(RENAMED_KEYS.items())


@pytest.mark.parametrize("old, new", renamed(), ids=[old for old, _ in renamed()])
def test_every_old_spelling_is_one_line_naming_its_key_and_the_new_one(old, new):
    from workflow.study.config import SCHEMA, ConfigError, check_config

    schema = yaml.safe_load(SCHEMA.read_text())
    assert not _schema_has(schema, old), f"{old} is still in the schema"
    config = tiny_study()
    where = plant(config, old, 1)
    with pytest.raises(ConfigError) as error:
        check_config(config)
    message = str(error.value)
    assert message.startswith(f"{where}: ") and "\n" not in message, message
    if not new.startswith("`"):
        assert _schema_has(schema, new), f"{new}: the new key of {old} is not in the schema"
        assert f"write {new.replace('*', 'x').replace('[]', '[0]')} instead" in message, message


@pytest.mark.parametrize("mutate, key, closest", [
    (lambda c: c.update(studdy="x"), "(top level)", "study"),
    (lambda c: c["grid"].update(batchsize=[32]), "grid", "batch_size"),
    (lambda c: c["resources"].update(slot_per_gpu=2), "resources", "slots_per_gpu"),
    (lambda c: c["training"].update(earlystopping={"patience": 3}), "training", "early_stopping"),
    (lambda c: c["training"]["stages"][0].update(epoch=3), "training.stages[0]", "epochs"),
])
def test_a_misspelt_key_names_the_closest_known_key(mutate, key, closest):
    from workflow.study.config import ConfigError, check_config

    config = tiny_study()
    mutate(config)
    with pytest.raises(ConfigError) as error:
        check_config(config)
    message = str(error.value)
    assert message.startswith(f"{key}: ") and f"did you mean {closest!r}?" in message and "\n" not in message


def test_a_key_close_to_none_gets_no_guess():
    from workflow.study.config import ConfigError, check_config

    config = tiny_study()
    config["zzz"] = 1
    with pytest.raises(ConfigError) as error:
        check_config(config)
    assert "did you mean" not in str(error.value) and "(allowed: " in str(error.value)
