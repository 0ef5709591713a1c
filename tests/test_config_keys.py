"""A study's keys: old spellings refused in one line naming the new key, a misspelt key answered with the
closest known one. In-process (no Snakemake)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import yaml

if __name__ == "__main__":  # run as a script: this checkout's package, not an installed one
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from conftest import REPO, tiny_study  # noqa: E402


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
    message = str(error.value)
    assert message.startswith(f"{path}: resources.gpu_slots: ") and "resources.slots_per_gpu" in message


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
    """The training defaults as the code defines them (TrainingSettings' fields): the one place this test
    reads them from."""
    from workflow.core.cell import TrainingSettings

    return TrainingSettings().as_mapping()


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


# The keys a user meets first, and the advanced ones (`x-advanced: true` in the schema), which docs/studies.md
# lists in a table generated from the schema: `python tests/test_config_keys.py` rewrites it.

STUDIES_DOC = REPO / "docs" / "studies.md"
BEGIN, END = "<!-- advanced keys: generated by `python tests/test_config_keys.py` -->", "<!-- end of advanced keys -->"


def schema_nodes(schema: dict, node: dict | None = None, path: str = ""):
    """(key path as a study writes it, schema node) of every key, in the schema's order: a named entry as
    `<name>`, a list's items as `[]`. Training keys are walked once, under the study's `training`."""
    node = schema if node is None else node
    ref = node.get("$ref", "")
    if ref.endswith("/training") and path != "training":
        return
    node = _resolve(schema, node)
    for key, sub in node.get("properties", {}).items():
        where = f"{path}.{key}" if path else key
        yield where, _resolve(schema, sub)
        yield from schema_nodes(schema, sub, where)
    if isinstance(node.get("additionalProperties"), dict) and path in ("datasets", "pretrain"):
        yield from schema_nodes(schema, node["additionalProperties"], f"{path}.<name>")
    if isinstance(node.get("items"), dict):
        yield from schema_nodes(schema, node["items"], f"{path}[]")


def advanced_keys(schema: dict) -> list[tuple[str, dict]]:
    """The keys marked `x-advanced: true`, outermost only (a marked section's own keys are not listed)."""
    keys = []
    for path, node in schema_nodes(schema):
        if node.get("x-advanced") and not any(path.startswith(f"{outer}.") for outer, _ in keys):
            keys.append((path, node))
    return keys


def _flow(value) -> str:
    return yaml.safe_dump(value, default_flow_style=True, sort_keys=False, width=1000).strip().removesuffix("\n...")


def _default_text(node: dict) -> str:
    value = _stated(node)
    if value is KeyError or value == {}:
        children = {key: _stated(sub) for key, sub in node.get("properties", {}).items()}
        children = {key: value for key, value in children.items() if value is not KeyError}
        if not children:
            return "—"
        value = children
    return f"`{_flow(value)}`"


def _first_sentence(text: str, most: int = 120) -> str:
    """A description's first sentence; a long one up to its first `: `, `; ` or ` (` past 30 characters."""
    import re

    text = " ".join(text.split())
    sentence = re.split(r"(?<=\.)\s+(?=[A-Z0-9`(])", text, maxsplit=1)[0]
    if len(sentence) > most:
        cuts = [i for i in (sentence.find(mark, 30) for mark in (": ", "; ", " (")) if i > 0]
        if cuts:
            sentence = sentence[:min(cuts)] + " ..."
    return sentence.replace("|", "\\|")


def advanced_table(schema: dict) -> str:
    rows = ["| key | default | what it does |", "| --- | --- | --- |"]
    for path, node in advanced_keys(schema):
        rows.append(f"| `{path}` | {_default_text(node)} | {_first_sentence(node.get('description', ''))} |")
    return "\n".join(rows)


def _documented_table(text: str) -> str:
    assert BEGIN in text and END in text, f"{STUDIES_DOC}: the advanced keys' table markers are missing"
    return text.split(BEGIN, 1)[1].split(END, 1)[0].strip()


def test_the_docs_list_every_advanced_key_as_the_schema_describes_it():
    assert _documented_table(STUDIES_DOC.read_text()) == advanced_table(_schema()), \
        "docs/studies.md's advanced keys differ from the schema: run python tests/test_config_keys.py"


def _opening_keys(text: str) -> list[str]:
    """The key paths of the table docs/studies.md opens with (its first section)."""
    import re

    first = text.split("\n## ", 2)
    assert first[1].startswith("The keys that matter"), "docs/studies.md opens with the keys that matter"
    keys = []
    for line in first[1].splitlines():
        if line.startswith("| `"):
            keys += re.findall(r"`([a-z_<>.]+)`", line.split("|")[1])
    return keys


def test_the_docs_open_with_a_dozen_keys_none_of_them_advanced():
    schema = _schema()
    advanced = {path for path, _ in advanced_keys(schema)}
    known = {path for path, _ in schema_nodes(schema)}
    keys = _opening_keys(STUDIES_DOC.read_text())
    assert 10 <= len(keys) <= 20, keys
    for key in keys:
        assert key in known, f"docs/studies.md: {key} is not a key of the schema"
        assert key not in advanced, f"docs/studies.md: {key} opens the docs but is marked x-advanced"


# Every shipped study reads in under 40 key paths.

def study_key_paths(value, path: str = "") -> set[str]:
    """A study file's leaf key paths; the items of a list of mappings count once per key
    (training.stages[].epochs), a list of values is one leaf."""
    found = set()
    if isinstance(value, dict):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            found |= study_key_paths(item, where) or {where}
    elif isinstance(value, list) and any(isinstance(item, dict) for item in value):
        for item in value:
            found |= study_key_paths(item, f"{path}[]")
    return found


SHIPPED = sorted(REPO.glob("studies/*.yaml")) + [REPO / "config.yaml"]


@pytest.mark.parametrize("path", SHIPPED, ids=lambda p: p.name)
def test_a_shipped_study_reads_in_under_40_key_paths(path):
    keys = study_key_paths(yaml.safe_load(path.read_text()))
    assert len(keys) < 40, f"{path.name}: {len(keys)} key paths: {sorted(keys)}"


def test_key_paths_count_a_list_of_mappings_once_per_key():
    study = {"study": "s", "grid": {"lr": [0.1, 0.01]},
             "training": {"stages": [{"name": "a", "epochs": 1}, {"name": "b", "epochs": 2, "lr_factor": 0.1}]}}
    assert study_key_paths(study) == {"study", "grid.lr", "training.stages[].name", "training.stages[].epochs",
                                      "training.stages[].lr_factor"}


if __name__ == "__main__":
    text = STUDIES_DOC.read_text()
    table = advanced_table(_schema())
    STUDIES_DOC.write_text(text.replace(_documented_table(text), table, 1))
    print(f"wrote the advanced keys' table of {STUDIES_DOC} ({table.count(chr(10)) - 1} keys)")


def test_the_defaults_kept_out_of_the_config_are_the_ones_the_schema_states():
    """Slots and export are not filled into the config (results made before them keep their config); the
    code's defaults for them are the schema's `x-default`."""
    from workflow.export.index import DEFAULTS
    from workflow.gpu.slots import SlotSettings

    schema = _schema()
    resources = schema["properties"]["resources"]["properties"]
    assert resources["slots_per_gpu"]["x-default"] == SlotSettings().per_gpu
    assert resources["gpu_headroom"]["x-default"] == SlotSettings().headroom
    assert schema["properties"]["export"]["x-default"] == DEFAULTS


def test_the_search_defaults_the_schema_states_are_the_codes():
    from workflow.study.halving import DEFAULT_HALVING
    from workflow.study.tpe_space import DEFAULT_ROUND

    search = next(option for option in _schema()["properties"]["search"]["oneOf"] if "properties" in option)
    stated = {key: node["x-default"] for key, node in search["properties"].items() if "x-default" in node}
    assert stated == {**DEFAULT_HALVING, "round": DEFAULT_ROUND}
