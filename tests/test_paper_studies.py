"""Each ready study against its paper's protocol table in docs/studies.md, row by row.

A table's rows are `setting | paper says | study uses`. The `paper says` column is `not stated` or quotes
the paper ("..." fragments, each found word for word in its text in ../shared/seeds/). The `study uses`
column starts with a code span: the value the study resolves to, which ROWS below computes from the
study's cells (build_study; trainable parameters as `python -m workflow cells` counts them) and which
must be equal, character for character. Every row of every table has a computation, and every
computation a row.
"""

from __future__ import annotations

import functools
import re

import pytest

from conftest import REPO
from workflow.core.cell import format_lr
from workflow.study.config import load_config
from workflow.study.grid import build_study
from workflow.study.outputs import cell_records, study_charts, study_tables, sweep_groups

DOC = REPO / "docs" / "studies.md"
SEEDS = REPO.parent / "shared" / "seeds"
NOT_STATED = "not stated"


def cells(name: str):
    return build_study(load_config(REPO / "studies" / f"{name}.yaml"))


# How a value is written in the `study uses` column.
def number(value) -> str:
    """1e-4 for small numbers (learning rates, epsilons), else as Python's `g` format writes it."""
    if isinstance(value, float) and 0 < abs(value) < 1e-2:
        return format_lr(value)
    return f"{value:g}" if isinstance(value, (int, float)) and not isinstance(value, bool) else str(value)


def listed(values) -> str:
    """Distinct values, smallest first, comma-separated."""
    return ", ".join(number(value) for value in sorted(set(values)))


def per_cell(study, value) -> str:
    """What every grid cell gives (`value(cell)`), or the distinct values comma-separated."""
    return ", ".join(sorted({value(cell) for cell in study.grid_cells}))


ORDER = ("patience", "factor", "monitor", "min_delta")  # a schedule's or early stopping's keys, in this order


def settings(mapping: dict) -> str:
    """`key value, key value` of a mapping, in its order (ORDER's keys first)."""
    keys = [key for key in ORDER if key in mapping] + [key for key in mapping if key not in ORDER]
    return ", ".join(f"{key} {number(mapping[key])}" for key in keys)


def only_stage(cell) -> dict:
    (stage,) = cell.stages()
    return stage


def schedule(stage: dict) -> str:
    """A stage's LR schedule; `constant` where it cannot change the LR within the stage's epochs."""
    kind = stage["schedule"]
    if kind == "plateau" and stage["plateau"]["patience"] >= stage["epochs"]:
        return "constant"
    if kind == "step" and stage["step"]["every"] >= stage["epochs"]:
        return "constant"
    return f"{kind}, {settings(stage[kind])}"


def early_stopping(stage: dict) -> str:
    """A stage's early stopping; `none` where its patience outlasts the stage."""
    rule = stage["early_stopping"]
    return "none" if rule["patience"] >= stage["epochs"] else settings(rule)


def augmentation(cell) -> str:
    """The augmentations a cell draws (and how, e.g. the fill), or `none`."""
    augment = cell.training.augment
    active = {key: value for key, value in augment.items()
              if value not in (False, 0, 0.0) and not isinstance(value, str)}
    if not active:
        return "none"
    how = {key: value for key, value in augment.items() if isinstance(value, str)}
    return ", ".join([key if value is True else f"{key} {number(value)}" for key, value in active.items()]
                     + [f"{key} {value}" for key, value in how.items()])


def layer(layer) -> str:
    if isinstance(layer, str):
        return layer
    if "dense" in layer:
        return f"dense {layer['dense']} {layer['activation']}"
    return settings(layer)


def head(cell) -> str:
    """The new classifier: a named head and its dropout (the head's default where the study sets none), or
    a head of layers in order, its output last."""
    from workflow.core.heads import canonical_head
    from workflow.train.models import HEAD_DROPOUT

    own = cell.training.head
    if isinstance(own, dict):
        written = canonical_head(own)
        return " → ".join([*(layer(each) for each in written["layers"]), written["output"]])
    dropout = HEAD_DROPOUT[own] if cell.training.dropout is None else cell.training.dropout
    return f"{own}, dropout {number(dropout)}"


def optimizer_settings(cell) -> str:
    keys = {"sgd": ("momentum",), "adam": ("eps",), "rmsprop": ("momentum", "rho", "eps")}[cell.optimizer]
    return settings({key: getattr(cell.training, key) for key in keys})


def stages(cell) -> str:
    return "; ".join(f"{stage['train']} {stage['epochs']} epochs at lr {format_lr(cell.lr * stage['lr_factor'])}"
                     for stage in cell.stages())


def planned(study, names: str) -> str:
    """The outputs a row names, checked to be planned (each name a table or chart of the study)."""
    outputs = [*study_tables(study), *study_charts(study)]
    missing = [name for name in names.split(", ") if name not in outputs]
    return names if not missing else f"not planned: {missing}"


def outputs(names: str):
    return lambda study: planned(study, names)


def sweep(axis: str):
    """The study's sweep along `axis`: the values it keeps fixed, then the values it sweeps."""
    def value(study) -> str:
        records = cell_records(study)
        (members,) = sweep_groups(records, axis)
        varying = [key for key in records[0] if key not in (axis, "seed") and len({repr(r[key]) for r in records}) > 1]
        fixed = ", ".join(f"{key} {number(records[members[0]][key])}" for key in varying)
        swept = [records[i][axis] for i in members]
        if axis == "lr":
            shown = ", ".join(format_lr(lr) for lr in sorted(swept))
        elif axis == "train":  # head first, then by depth
            shown = ", ".join(sorted(swept, key=lambda train: int(train.split(":")[1]) if ":" in train else 0))
        else:
            shown = listed(swept)
        return f"{fixed}: {axis} {shown}"
    return value


def trainable(regime):
    """A DenseNet regime's settings and its trainable parameters as `cells` counts them."""
    def value(study) -> str:
        from workflow.train.trainable import trainable_column

        (cell,) = [cell for cell in study.grid_cells if regime(cell)]
        counts, _ = trainable_column(study)
        return f"weights {cell.weights}, train {cell.train}, head {head(cell)}: {counts[cell.id]}"
    return value


def datasets(study) -> str:
    return ", ".join(f"{study.dataset(name)['source']}" for name in sorted({c.dataset for c in study.grid_cells}))


def dataset_key(key: str):
    return lambda study: ", ".join(sorted({str(study.dataset(c.dataset)[key]) for c in study.grid_cells}))


def positive_class(study) -> str:
    return ", ".join(f"{name} {value}" for name, value in study.positive_classes.items()) or "unset"


def per_class(study) -> str:
    return settings(study.dataset("cats_vs_dogs")["per_class"])


ROWS = {
    "batch-size-cifar": {
        "datasets": datasets,
        "validation": dataset_key("val_fraction"),
        "resolution": lambda s: per_cell(s, lambda c: number(c.resolution)),
        "augmentation": lambda s: per_cell(s, augmentation),
        "model, weights": lambda s: per_cell(s, lambda c: f"{c.model}, {c.weights}"),
        "head": lambda s: per_cell(s, head),
        "stages": lambda s: per_cell(s, stages),
        "optimizer": lambda s: per_cell(s, lambda c: f"{c.optimizer}, {optimizer_settings(c)}"),
        "batch size": lambda s: listed(c.batch_size for c in s.grid_cells),
        "schedule": lambda s: per_cell(s, lambda c: " / ".join(dict.fromkeys(schedule(stage) for stage in c.stages()))),
        "early stopping": lambda s: per_cell(s, lambda c: " / ".join(dict.fromkeys(
            early_stopping(stage) for stage in c.stages()))),
        "outputs": outputs("batch_size, val_accuracy"),
    },
    "optimizers-cats-vs-dogs": {
        "data": lambda s: f"{datasets(s)}, per class {per_class(s)}",
        "resolution": lambda s: per_cell(s, lambda c: f"{c.model} {c.resolution}"),
        "augmentation": lambda s: per_cell(s, augmentation),
        "models, weights": lambda s: f"{listed(c.model for c in s.grid_cells)}; {per_cell(s, lambda c: c.weights)}",
        "head": lambda s: per_cell(s, head),
        "auxiliary classifier": lambda s: per_cell(
            s, lambda c: f"aux_loss_weight {number(c.training.aux_loss_weight)}"),
        "what trains": lambda s: per_cell(s, lambda c: only_stage(c)["train"]),
        "optimizers": lambda s: listed(c.optimizer for c in s.grid_cells),
        "optimizer settings": lambda s: per_cell(s, lambda c: settings(
            {key: getattr(c.training, key) for key in ("momentum", "rho", "eps")})),
        "learning rate": lambda s: per_cell(s, lambda c: format_lr(c.lr)),
        "batch size": lambda s: listed(c.batch_size for c in s.grid_cells),
        "epochs": lambda s: per_cell(s, lambda c: number(only_stage(c)["epochs"])),
        "schedule": lambda s: per_cell(s, lambda c: schedule(only_stage(c))),
        "early stopping": lambda s: per_cell(s, lambda c: early_stopping(only_stage(c))),
        "outputs": outputs("train_curves"),
    },
    "pcam-batch-lr": {
        "data": datasets,
        "split": lambda s: f"val_fraction {dataset_key('val_fraction')(s)}",
        "resolution": lambda s: per_cell(s, lambda c: number(c.resolution)),
        "augmentation": lambda s: per_cell(s, augmentation),
        "model, weights": lambda s: per_cell(s, lambda c: f"{c.model}, {c.weights}"),
        "what trains": lambda s: per_cell(s, lambda c: c.train),
        "head": lambda s: per_cell(s, head),
        "optimizers": lambda s: listed(c.optimizer for c in s.grid_cells),
        "optimizer settings": lambda s: per_cell(s, lambda c: settings(
            {key: getattr(c.training, key) for key in ("momentum", "eps")})),
        "batch size": lambda s: listed(c.batch_size for c in s.grid_cells),
        "learning rate": lambda s: ", ".join(format_lr(lr) for lr in sorted({c.lr for c in s.grid_cells})),
        "epochs": lambda s: per_cell(s, lambda c: number(only_stage(c)["epochs"])),
        "schedule": lambda s: per_cell(s, lambda c: schedule(only_stage(c))),
        "early stopping": lambda s: per_cell(s, lambda c: early_stopping(only_stage(c))),
        "positive class": positive_class,
        "outputs": outputs("batch_lr, lr_batch_heatmap"),
    },
    "freezing-imagefolder": {
        "data": lambda s: f"{datasets(s)}, split {settings(s.dataset('my-images')['split'])}",
        "resolution": lambda s: per_cell(s, lambda c: number(c.resolution)),
        "augmentation": lambda s: per_cell(s, augmentation),
        "model, weights": lambda s: per_cell(s, lambda c: f"{c.model}, {c.weights}"),
        "head": lambda s: per_cell(s, head),
        "optimizer": lambda s: per_cell(s, lambda c: f"{c.optimizer}, {optimizer_settings(c)}"),
        "epochs": lambda s: per_cell(s, lambda c: number(only_stage(c)["epochs"])),
        "schedule": lambda s: per_cell(s, lambda c: schedule(only_stage(c))),
        "early stopping": lambda s: per_cell(s, lambda c: early_stopping(only_stage(c))),
        "learning-rate sweep": sweep("lr"),
        "batch-size sweep": sweep("batch_size"),
        "freezing sweep": sweep("train"),
        "positive class": positive_class,
        "outputs": outputs("sweeps, trainable_layers"),
    },
    "densenet-regimes": {
        "data": lambda s: f"{datasets(s)}, val_fraction {dataset_key('val_fraction')(s)}",
        "resolution": lambda s: per_cell(s, lambda c: number(c.resolution)),
        "augmentation": lambda s: per_cell(s, augmentation),
        "model": lambda s: per_cell(s, lambda c: c.model),
        "plain": trainable(lambda c: c.weights == "none" and "dense" not in str(c.training.head)),
        "optimized": trainable(lambda c: c.weights == "none" and "dense" in str(c.training.head)),
        "transfer": trainable(lambda c: c.weights == "imagenet"),
        "optimizer": lambda s: per_cell(s, lambda c: f"{c.optimizer}, {optimizer_settings(c)}"),
        "learning rate": lambda s: per_cell(s, lambda c: format_lr(c.lr)),
        "batch size": lambda s: listed(c.batch_size for c in s.grid_cells),
        "epochs": lambda s: per_cell(s, lambda c: number(only_stage(c)["epochs"])),
        "schedule": lambda s: per_cell(s, lambda c: schedule(only_stage(c))),
        "early stopping": lambda s: per_cell(s, lambda c: early_stopping(only_stage(c))),
        "outputs": outputs("regimes, accuracy_vs_time, regime_curves"),
    },
}

SECTION = re.compile(r"^### `([a-z0-9-]+)`.*\bseed (\d{3})\b", re.MULTILINE)
HEADER = "| setting | paper says | study uses |"
CODE = re.compile(r"^`([^`]*)`")
QUOTE = re.compile(r'"([^"]+)"')


@functools.cache
def protocol_tables() -> dict[str, tuple[str, list[tuple[str, str, str]]]]:
    """Each study's protocol table in docs/studies.md: its seed and its rows (setting, paper says, study uses)."""
    text = DOC.read_text()
    found = {}
    for match in SECTION.finditer(text):
        lines = text[match.end():].splitlines()
        start = next(i for i, line in enumerate(lines) if line.strip() == HEADER)
        rows = []
        for line in lines[start + 2:]:
            if not line.startswith("|"):
                break
            setting, paper, uses = (cell.strip() for cell in line.strip().strip("|").split(" | "))
            rows.append((setting, paper, uses))
        found[match.group(1)] = (match.group(2), rows)
    return found


def test_every_ready_study_has_a_protocol_table():
    assert sorted(protocol_tables()) == sorted(ROWS)


@pytest.mark.parametrize("name", sorted(ROWS))
def test_every_row_says_what_the_study_resolves(name):
    study = cells(name)
    _, rows = protocol_tables()[name]
    assert [setting for setting, _, _ in rows] == list(ROWS[name]), "a row without its check or a check without its row"
    for setting, _, uses in rows:
        shown = CODE.match(uses)
        assert shown, f"{name}: {setting}: 'study uses' must start with the value as code"
        assert shown.group(1) == ROWS[name][setting](study), f"{name}: {setting}"


def words(text: str) -> str:
    return " ".join(text.split())


@pytest.mark.parametrize("name", sorted(ROWS))
def test_the_paper_column_quotes_the_paper_or_says_not_stated(name):
    seed, rows = protocol_tables()[name]
    if not SEEDS.is_dir():
        pytest.skip(f"the papers are not here ({SEEDS})")
    (paper_file,) = SEEDS.glob(f"{seed}_*.txt")
    paper = words(paper_file.read_text())
    for setting, says, _ in rows:
        quotes = QUOTE.findall(says)
        assert says.startswith(NOT_STATED) or quotes, f"{name}: {setting}: quote the paper or say '{NOT_STATED}'"
        for quote in quotes:
            assert words(quote) in paper, f"{name}: {setting}: {quote!r} is not in {paper_file.name}"


def test_config_yaml_is_the_batch_size_study():
    assert load_config(REPO / "config.yaml") == load_config(REPO / "studies/batch-size-cifar.yaml")


def test_the_pcam_positive_class_is_one_of_its_classes():
    from workflow.data.sources.pcam import CLASS_NAMES

    assert cells("pcam-batch-lr").positive_classes["pcam"] in CLASS_NAMES
