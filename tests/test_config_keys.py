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


# Training defaults: defined in code, stated in the schema (`x-default`, or `default` where the schema fills
# it in), and the two must agree.

def training_defaults() -> dict:
    """The training defaults as the code defines them: the one place this test reads them from."""
    from workflow.study.settings import DEFAULT_TRAINING

    return DEFAULT_TRAINING


def _schema():
    from workflow.study.config import SCHEMA

    return yaml.safe_load(SCHEMA.read_text())


def _resolve(schema: dict, node: dict) -> dict:
    """A schema node with its $ref followed, its own keys (x-default, description) over the referenced ones."""
    while "$ref" in node:
        own = {key: value for key, value in node.items() if key != "$ref"}
        node = {**schema["$defs"][node["$ref"].rsplit("/", 1)[1]], **own}
    return node


def _stated(node: dict):
    for key in ("x-default", "default"):
        if key in node:
            return node[key]
    return KeyError


def schema_training_defaults(schema: dict) -> dict:
    """{key path under training: the default the schema states}, at the deepest level it states one."""
    stated = {}

    def walk(node, path):
        node = _resolve(schema, node)
        value = _stated(node)
        if value is not KeyError and path:
            stated[path] = value
        for key, sub in node.get("properties", {}).items():
            walk(sub, f"{path}.{key}" if path else key)

    walk(schema["$defs"]["training"], "")
    return stated


def leaves(value: dict, path: str = "") -> dict:
    """{key path: value} of a nested mapping's leaves (a list is a leaf)."""
    out = {}
    for key, item in value.items():
        where = f"{path}.{key}" if path else key
        out.update(leaves(item, where) if isinstance(item, dict) else {where: item})
    return out


def test_every_training_default_the_schema_states_is_the_codes():
    stated = schema_training_defaults(_schema())
    code = leaves(training_defaults())
    for path, value in stated.items():
        expected = {key[len(path) + 1:]: item for key, item in code.items() if key.startswith(path + ".")}
        if isinstance(value, dict):
            assert leaves(value) == expected, f"training.{path}: the schema says {value}, the code {expected}"
        else:
            assert path in code, f"training.{path}: a default in the schema but not in the code"
            assert value == code[path] and type(value) is type(code[path]), \
                f"training.{path}: the schema says {value!r}, the code {code[path]!r}"


def test_every_training_key_of_the_code_has_its_default_in_the_schema():
    stated = schema_training_defaults(_schema())
    for path in leaves(training_defaults()):
        parts = path.split(".")
        assert any(".".join(parts[:n]) in stated for n in range(1, len(parts) + 1)), \
            f"training.{path}: no default stated in the schema (add `x-default`)"


def test_every_training_key_of_the_schema_has_a_default_in_the_code():
    schema = _schema()
    for key in schema["$defs"]["training"]["properties"]:
        assert key in training_defaults(), f"training.{key}: in the schema but without a default in the code"


def test_a_default_a_description_names_is_the_stated_one():
    """`Default 0.9.` in a training key's description (or `Default 3 and 0.1.`) says what `x-default` says."""
    import re

    schema = _schema()
    code = training_defaults()
    for key, node in schema["$defs"]["training"]["properties"].items():
        node = _resolve(schema, node)
        text = " ".join(node.get("description", "").split())
        match = re.search(r"\bDefault:? (`?)([\w.-]*\w)`?(?: and ([\w.-]*\w))?(?=[\s.;,)]|$)", text)
        if match is None:
            continue
        quoted, words = match.group(1), [word for word in match.groups()[1:] if word is not None]
        said = [yaml.safe_load(word) for word in words]
        if not quoted and any(isinstance(word, str) for word in said):
            continue  # prose ("Default: the batch-size paper's ..."), not a value
        value = code[key]
        want = list(leaves(value).values()) if isinstance(value, dict) else [value]
        assert said == want, f"training.{key}: the description says default {said}, the code {want}"
