"""Read a study config and check it against the schema, with one short message per problem.

Both the Snakefile (rules/common.smk) and the commands (``--configfile``) go
through `check_config`, so a bad study reads the same wherever it is loaded.
"""

from __future__ import annotations

import difflib
import math
from pathlib import Path

import yaml

SCHEMA = Path(__file__).parents[1] / "schemas" / "config.schema.yaml"
# Where a config may still spell the axis of what trains the old way (`freeze`).
OLD_SPELLING = (
    "`freeze` is now `train` and says what trains: `train: head | all | last:N | from:<module>`; "
    "training from scratch is `weights: none` with `train: all`"
)

# Study keys that were renamed or replaced: {old key path: what to write now}, checked before the schema so
# that an old study file is refused in one line naming its key and the new one. In a key path `*` stands for
# any name (a dataset, a pretrain cell) and `[]` for any list item. A value starting with a backtick is the
# whole advice; otherwise it is the new key path, its `*` and `[]` filled in order from the old key's.
RENAMED_KEYS = {
    "resources.gpu_slots": "resources.slots_per_gpu",
    **{f"{where}.freeze": OLD_SPELLING
       for where in ("grid", "grid.include[]", "grid.exclude[]", "pretrain.*", "training.stages[]")},
}


class ConfigError(ValueError):
    """A config that the schema or the study's own rules refuse; the message names the key."""


class StrictLoader(yaml.SafeLoader):
    """yaml.SafeLoader refusing a key that a mapping repeats (safe_load keeps the last one silently)."""


def _unique_mapping(loader: StrictLoader, node: yaml.MappingNode, deep: bool = False) -> dict:
    lines = {}
    for key_node, _ in node.value:
        key = loader.construct_object(key_node, deep=True)
        if key == "<<" or not isinstance(key, (str, int, float, bool)):
            continue  # a merge key or an unhashable one: left to yaml
        line = key_node.start_mark.line + 1
        if key in lines:
            raise ConfigError(f"line {line}: key {key!r} repeats the key of line {lines[key]} "
                              f"(YAML would keep only the last value); keep one")
        lines[key] = line
    return yaml.SafeLoader.construct_mapping(loader, node, deep)


StrictLoader.add_constructor(yaml.resolver.BaseResolver.DEFAULT_MAPPING_TAG, _unique_mapping)


def read_yaml(path: str | Path):
    """A YAML file's content; a syntax error or a repeated key is a ConfigError naming the file and line."""
    try:
        return yaml.load(Path(path).read_text(), Loader=StrictLoader)
    except ConfigError as error:
        raise ConfigError(f"{path}, {error}") from None
    except yaml.MarkedYAMLError as error:
        mark = error.problem_mark or error.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        context = f" ({error.context})" if error.context else ""
        raise ConfigError(f"{path}{where}: not valid YAML: {error.problem}{context}") from None
    except yaml.YAMLError as error:
        raise ConfigError(f"{path}: not valid YAML: {error}") from None


def check_config_files(paths) -> None:
    """Read each study file strictly (`read_yaml`): Snakemake's own loader lets a repeated key through."""
    for path in paths:
        read_yaml(path)


def load_config(path: str | Path) -> dict:
    """Read a study YAML file and check it (`check_config`), filling in the schema's defaults."""
    config = read_yaml(path)
    if not isinstance(config, dict):
        raise ConfigError(f"{path}: a study config must be a YAML mapping")
    try:
        check_config(config)
    except ConfigError as error:
        raise ConfigError(f"{path}: {error}") from None
    return config


def key_path(path) -> str:
    """A schema error's location as the user writes it: grid.batch_size[1]."""
    text = ""
    for part in path:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def _key_paths(value, path=()):
    """Every key path of a parsed YAML value, as tuples of keys (str) and list positions (int)."""
    if isinstance(value, dict):
        for key, item in value.items():
            yield (*path, key)
            yield from _key_paths(item, (*path, key))
    elif isinstance(value, list):
        for i, item in enumerate(value):
            yield from _key_paths(item, (*path, i))


def _pattern(path: str) -> tuple:
    """A RENAMED_KEYS key path as parts: `grid.include[].freeze` -> ("grid", "include", [], "freeze")."""
    parts = []
    for part in path.split("."):
        name, brackets = (part[:-2], True) if part.endswith("[]") else (part, False)
        parts += [name, []] if brackets else [name]
    return tuple(parts)


def _matches(path: tuple, pattern: tuple) -> bool:
    return len(path) == len(pattern) and all(
        isinstance(part, int) if want == [] else (want == "*" and isinstance(part, str)) or part == want
        for part, want in zip(path, pattern))


def _renamed_key(config: dict) -> str | None:
    """The first key `config` spells the old way (RENAMED_KEYS), in one line naming it and the new key."""
    patterns = [(_pattern(old), new) for old, new in RENAMED_KEYS.items()]
    for path in _key_paths(config):
        for pattern, new in patterns:
            if _matches(path, pattern):
                if new.startswith("`"):
                    return f"{key_path(path)}: {new}"
                matched = iter(part for part, want in zip(path, pattern) if want in ("*", []))
                new_path = [next(matched) if want in ("*", []) else want for want in _pattern(new)]
                return f"{key_path(path)}: renamed; write {key_path(new_path)} instead (same value)"
    return None


def _old_spelling(config: dict) -> str | None:
    """Where `config` uses a renamed key (RENAMED_KEYS) or the value `none` for what trains, or None."""
    renamed = _renamed_key(config)
    if renamed is not None:
        return renamed
    places = [("grid", config.get("grid", {}))]
    places += [(f"grid.{key}[{i}]", entry) for key in ("include", "exclude")
               for i, entry in enumerate(config.get("grid", {}).get(key, []) or [])]
    places += [(f"pretrain.{name}", spec) for name, spec in (config.get("pretrain") or {}).items()]
    stages = (config.get("training") or {}).get("stages") or []
    places += [(f"training.stages[{i}]", stage) for i, stage in enumerate(stages)]
    for where, mapping in places:
        if not isinstance(mapping, dict):
            continue
        values = mapping.get("train")
        if values == "none" or (isinstance(values, list) and "none" in values):
            return f"{where}.train: 'none' is gone: training from scratch is `weights: none` with `train: all`"
    return None


def _non_finite(value, path=()) -> str | None:
    """Where a parsed YAML value holds a number that is not finite (YAML's .nan, .inf, -.inf), or None."""
    if isinstance(value, float) and not math.isfinite(value):
        return f"{key_path(path)}: {value} is not a finite number; write a number"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    return next(filter(None, (_non_finite(item, (*path, key)) for key, item in items)), None)


def _schema_problem(config: dict, schema: dict) -> str | None:
    """The most relevant schema violation in one line, naming the key and what is allowed."""
    import jsonschema

    errors = list(jsonschema.Draft202012Validator(schema).iter_errors(config))
    error = jsonschema.exceptions.best_match(errors)
    if error is None:
        return None
    if error.validator == "required":
        unknown = _unknown_keys(errors, error.absolute_path)
        if unknown:
            return f"{key_path(error.absolute_path)}: {unknown} ({error.message})"
    allowed = ""
    if error.validator == "enum":
        allowed = f" (allowed: {', '.join(map(str, error.validator_value))})"
    elif error.validator == "additionalProperties":
        known = sorted(error.schema.get("properties", {}))
        allowed = _closest_keys(error.instance, known) + f" (allowed: {', '.join(known)})"
    elif error.validator == "pattern" and "x-pattern-help" in error.schema:
        allowed = f" ({error.schema['x-pattern-help']})"
    elif error.validator == "type" and isinstance(error.instance, str) and _is_number(error.instance):
        allowed = (f" (YAML reads {error.instance!r} as a string: write it with a decimal point and a signed "
                   f"exponent, e.g. 1.0e-3, or as 0.001)")
    message = error.message if len(error.message) < 300 else error.message[:300] + "..."
    return f"{key_path(error.absolute_path)}: {message}{allowed}"


def _unknown_keys(errors: list, path) -> str | None:
    """`'batchsize' is not a key; did you mean 'batch_size'?`: the keys the schema does not know in the
    mapping at `path` (a misspelt required key is both missing and unknown), or None."""
    for error in errors:
        if error.validator == "additionalProperties" and error.absolute_path == path:
            known = sorted(error.schema.get("properties", {}))
            unknown = [key for key in error.instance if key not in known]
            verb = "is not a key" if len(unknown) == 1 else "are not keys"
            return f"{', '.join(map(repr, unknown))} {verb}{_closest_keys(error.instance, known)}"
    return None


def _closest_keys(mapping, known: list[str]) -> str:
    """`; did you mean 'study'?`: the closest known key (difflib) to each key of `mapping` that the schema
    does not know, where one is close enough, or ''."""
    if not isinstance(mapping, dict):
        return ""
    hints = []
    for key in mapping:
        if isinstance(key, str) and key not in known:
            close = difflib.get_close_matches(key, known, n=1, cutoff=0.6)
            if close:
                hints.append((key, close[0]))
    if len(hints) == 1:
        return f"; did you mean {hints[0][1]!r}?"
    return f"; did you mean {', '.join(f'{new!r} for {key!r}' for key, new in hints)}?" if hints else ""


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def fill_defaults(config: dict, schema: dict) -> None:
    """Set every `default` the schema gives for a key the config leaves out (as Snakemake's
    `validate` does), at every level the config has."""
    import jsonschema

    base = jsonschema.Draft202012Validator
    properties = base.VALIDATORS["properties"]

    def with_defaults(validator, props, instance, schema):
        if isinstance(instance, dict):
            for key, sub in props.items():
                if "default" in sub:
                    instance.setdefault(key, sub["default"])
        yield from properties(validator, props, instance, schema)

    jsonschema.validators.extend(base, {"properties": with_defaults})(schema).validate(config)


def _resources_problem(resources: dict) -> str | None:
    """Rules across the `resources` keys that the schema cannot express."""
    if resources["train_warning_s"] >= resources["train_runtime_min"] * 60:
        return (f"resources.train_warning_s ({resources['train_warning_s']}) must be less than train_runtime_min "
                f"({resources['train_runtime_min']}) minutes, or 0 for no warning signal")
    return None


def check_config(config: dict) -> None:
    """Check a study config in place: the old spelling and the schema, each in one line; then fill
    in the schema's defaults and check the keys that depend on each other. Raises ConfigError."""
    schema = yaml.safe_load(SCHEMA.read_text())
    problem = _old_spelling(config) or _non_finite(config) or _schema_problem(config, schema)
    if problem is not None:
        raise ConfigError(problem)
    fill_defaults(config, schema)
    problem = _resources_problem(config["resources"])
    if problem is not None:
        raise ConfigError(problem)
