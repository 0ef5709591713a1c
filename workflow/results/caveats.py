"""Warnings about how far a study's answer can be trusted, each with its numbers: the winner within
noise of the runner-up, no better than chance or than training the head alone, validation and test
disagreeing, splits too small to separate configurations, one seed only, cells that did not end ok
(`CellStatuses`, also what `study_statuses` gives any caller), unstable cells, cells without predictions.npz,
and a selection metric that could not be used.
"""

from __future__ import annotations

from dataclasses import dataclass

import pandas as pd

from workflow.results.aggregate import collect
from workflow.results.inference import wilson_interval
from workflow.results.stats import SELECTIONS, resolve_selection, scoped_name

SMALL_SPLIT = 100  # images: below this a split cannot separate configurations a few points apart
SMALL_CLASS = 20  # images of the smallest class
METRIC_WORDS = {"test_accuracy": "test accuracy", "test_auc": "test ROC AUC"}
NOT_OK = ("failed", "diverged", "oom", "unstable", "damaged")  # a grid cell's status other than ok


@dataclass(frozen=True)
class Caveat:
    """One warning: its kind, where it applies (a dataset, a scope, a cell or the study), the sentence
    with its numbers, and a few words for the report's landing page."""

    kind: str
    where: str
    message: str
    short: str

    def line(self) -> str:
        return f"{self.where}: {self.message}"


@dataclass(frozen=True)
class Failure:
    """A grid cell that did not end ok: its id, status and the first line of its error."""

    cell: str
    status: str
    error: str


@dataclass(frozen=True)
class CellStatuses:
    """How a study's grid cells ended: how many per status (`ok` and each of NOT_OK, zeros included)
    and each cell that did not end ok, in the summary's order."""

    counts: dict[str, int]
    failures: tuple[Failure, ...]

    def headline(self) -> str | None:
        """`4 of 12 cells did not end ok (2 failed, 1 diverged, 1 oom)`; None when every cell did."""
        if not self.failures:
            return None
        total = sum(self.counts.values())
        return f"{len(self.failures)} of {total} cells did not end ok ({self.by_status()})"

    def by_status(self) -> str:
        return ", ".join(f"{self.counts[status]} {status}" for status in NOT_OK if self.counts[status])


def first_line(text) -> str:
    """The first non-blank line of an error message ('' when there is none)."""
    lines = [] if text is None or pd.isna(text) else [line.strip() for line in str(text).splitlines() if line.strip()]
    return lines[0] if lines else ""


def summary_statuses(summary: pd.DataFrame) -> CellStatuses:
    """The CellStatuses of a summary's cells (workflow.results.aggregate.collect)."""
    counts = {status: int((summary["status"] == status).sum()) for status in ("ok", *NOT_OK)}
    failures = tuple(Failure(row["cell"], row["status"], first_line(row["error"]))
                     for _, row in summary[summary["status"] != "ok"].iterrows())
    return CellStatuses(counts, failures)


def study_statuses(study) -> CellStatuses:
    """How a study's grid cells ended, from their files (torch-free): counts by status, and each cell
    that did not end ok with the first line of its error."""
    return summary_statuses(collect(study)[0])


def failure_caveat(found: CellStatuses) -> Caveat | None:
    """Cells that did not end ok: left out of every mean and the recommendation."""
    if not found.failures:
        return None
    return Caveat("failed cells", "study", f"{found.headline()}: left out of every mean and the recommendation "
                  "(the summary's `error` column says why).",
                  f"{len(found.failures)} cells not ok")


def _number(value) -> str:
    return "n/a" if value is None or pd.isna(value) else f"{float(value):.4f}"


def _interval(low, high) -> str:
    return "" if pd.isna(low) or pd.isna(high) else f" [{float(low):.4f}, {float(high):.4f}]"


def _p(value) -> str:
    return "" if value is None or pd.isna(value) else f"p = {float(value):.3g}"


def scope_name(row: pd.Series) -> str:
    return f"{row['dataset']} (overall)" if row["scope"] == "overall" else f"{row['dataset']} / {row['model']}"


def noise_caveat(row: pd.Series) -> Caveat | None:
    """The winner is within noise of the runner-up: indistinguishable on test, tied on validation, or
    (untested) ahead on validation by less than the half-width of a validation accuracy's interval."""
    if row["runner_up"] is None or pd.isna(row["runner_up"]):
        return None
    words, metric = SELECTIONS[row["selection"]][2], METRIC_WORDS[row["metric"]]
    numbers = (f"{words} {_number(row['val_value'])} vs {_number(row['runner_up_val'])} (margin "
               f"{_number(row['val_margin'])}); {metric} {_number(row['mean'])}{_interval(row['test_low'], row['test_high'])}"
               f" vs {_number(row['runner_up_mean'])}{_interval(row['runner_up_low'], row['runner_up_high'])}")
    tests = f"; {row['runner_up_tests']} {_p(row['runner_up_p'])}" if row["runner_up_tests"] else ""
    if row["val_margin"] == 0:
        why = "tied on validation, chosen by the tie-break (lower validation loss, then shorter training)"
    elif row["runner_up_verdict"] == "indistinguishable":
        why = "statistically indistinguishable on the test images"
    elif row["runner_up_verdict"] == "untested" and row["selection"] == "val_accuracy" and not pd.isna(row["n_val"]):
        low, high = wilson_interval(round(row["val_value"] * row["n_val"]), int(row["n_val"]))
        if row["val_margin"] >= (high - low) / 2:
            return None
        why = (f"ahead on validation by less than the half-width of its 95 % interval ({(high - low) / 2:.4f} "
               f"with {int(row['n_val'])} validation images), and nothing could test it")
    else:
        return None
    return Caveat("within noise", scope_name(row), f"the winner ({row['config']}) is within noise of the runner-up "
                  f"({row['runner_up']}): {why}; {numbers}{tests}.", "winner within noise of the runner-up")


def chance_caveat(row: pd.Series) -> Caveat | None:
    """The winner's test metric is no better than chance: its interval reaches down to the majority-class
    rate (accuracy) or to 0.5 (AUC); without an interval, its value does."""
    chance = 0.5 if row["metric"] == "test_auc" else row["majority_rate"]
    if pd.isna(chance) or pd.isna(row["mean"]):
        return None
    bound = row["mean"] if pd.isna(row["test_low"]) else row["test_low"]
    if bound > chance:
        return None
    what = "0.5 (ranking at random)" if row["metric"] == "test_auc" else \
        f"{chance:.4f} (always answering the most common class)"
    return Caveat("chance", scope_name(row), f"the winner ({row['config']}) is no better than chance: "
                  f"{METRIC_WORDS[row['metric']]} {_number(row['mean'])}{_interval(row['test_low'], row['test_high'])}"
                  f" against chance {what}.", "winner no better than chance")


def head_caveat(row: pd.Series, configs: pd.DataFrame) -> Caveat | None:
    """The winner is no better than training the pretrained model's head alone (the `train: head`
    configurations of its dataset and model): indistinguishable or better on test."""
    if "train" not in configs or row.get("train") == "head":
        return None
    overall = row["scope"] == "overall"
    rank, verdict, p, tests = ("overall_rank", "overall_verdict", "overall_p", "overall_tests") if overall \
        else ("rank", "verdict", "p_vs_best", "tests")
    heads = configs[(configs["dataset"] == row["dataset"]) & (configs["model"] == row["model"])
                    & (configs["train"] == "head")].dropna(subset=[rank]).sort_values(rank)
    if heads.empty:
        return None
    head = heads.iloc[0]
    if head[verdict] not in ("indistinguishable", "better on test") and not (
            head[verdict] == "untested" and head["mean"] >= row["mean"]):
        return None
    name = scoped_name(head, overall and row["config"].startswith(f"{row['model']}: "))
    return Caveat("head only", scope_name(row), f"the winner ({row['config']}) is no better than training the head "
                  f"alone ({name}): {METRIC_WORDS[row['metric']]} {_number(row['mean'])}"
                  f"{_interval(row['test_low'], row['test_high'])} vs {_number(head['mean'])}"
                  f"{_interval(head['test_low'], head['test_high'])}; {head[tests] or 'no test'} {_p(head[p])}."
                  .replace(" .", "."), "no better than the head alone")


def disagreement_caveats(row: pd.Series, configs: pd.DataFrame) -> list[Caveat]:
    """Configurations significantly better than the winner on test: validation and test disagree."""
    verdict, p = ("overall_verdict", "overall_p") if row["scope"] == "overall" else ("verdict", "p_vs_best")
    scope = configs[configs["dataset"] == row["dataset"]]
    if row["scope"] != "overall":
        scope = scope[scope["model"] == row["model"]]
    with_model = row["scope"] == "overall" and row["config"].startswith(f"{row['model']}: ")
    return [Caveat("validation and test disagree", scope_name(row),
                   f"{scoped_name(other, with_model)} is better than the winner ({row['config']}) on test: "
                   f"{METRIC_WORDS[row['metric']]} {_number(other['mean'])} vs {_number(row['mean'])}, {_p(other[p])}; "
                   "the choice stands on validation, so read the test result as a warning that validation "
                   "picked poorly.", "validation and test disagree")
            for _, other in scope[scope[verdict] == "better on test"].iterrows()]


def split_caveats(summary: pd.DataFrame) -> list[Caveat]:
    """Per dataset: a validation or test split with fewer than SMALL_SPLIT images or SMALL_CLASS in its
    smallest class, with the width of a 95 % interval on accuracy it allows."""
    found = []
    ok = summary[summary["status"] == "ok"]
    for dataset, runs in ok.groupby("dataset", sort=True):
        for split, size, smallest in (("test", "n_test", "test_smallest_class"), ("validation", "n_val", "val_smallest_class")):
            n, least = runs[size].max(), runs[smallest].min()
            if pd.isna(n) or (n >= SMALL_SPLIT and (pd.isna(least) or least >= SMALL_CLASS)):
                continue
            accuracy = runs["test_accuracy"].median() if split == "test" else runs["best_val_accuracy"].median()
            accuracy = 0.5 if pd.isna(accuracy) else float(accuracy)
            low, high = wilson_interval(round(accuracy * n), int(n))
            found.append(Caveat("small split", dataset, f"the {split} split has {int(n)} images"
                                + ("" if pd.isna(least) else f", {int(least)} in its smallest class")
                                + f": too few to separate configurations (fewer than {SMALL_SPLIT} images or "
                                f"{SMALL_CLASS} per class); at accuracy {accuracy:.2f} a 95 % interval spans "
                                f"{low:.2f}–{high:.2f}.", f"{split} split of {int(n)} images"))
    return found


def study_caveats(summary: pd.DataFrame, configs: pd.DataFrame, selection: str | None) -> list[Caveat]:
    """The study-wide warnings: cells that did not end ok, the selection's fallback, one seed only, cells
    without predictions, and each unstable cell."""
    found = [caveat] if (caveat := failure_caveat(summary_statuses(summary))) else []
    note = resolve_selection(summary, selection).note
    if note:
        found.append(Caveat("selection", "study", f"{note}.", "selection fell back to validation accuracy"))
    ranked = configs.dropna(subset=["rank"])
    if len(ranked) and ranked["n_ok"].max() <= 1:
        found.append(Caveat("one seed", "study", "every configuration has one finished seed: the intervals and "
                            "tests cover the test images only, not the spread between training runs (add seeds "
                            "under grid.seed to measure it).", "one seed only"))
    ok = summary[summary["status"] == "ok"]
    missing = ok[ok["predictions"] != "yes"]
    if len(missing):
        reasons = sorted(set(missing["predictions"].fillna("missing")))
        found.append(Caveat("no predictions", "study", f"{len(missing)} of {len(ok)} ok cells have no readable "
                            f"predictions.npz ({'; '.join(reasons)}): their validation AUC, test AUC interval and "
                            "paired tests on the test images are blank.", f"{len(missing)} cells without predictions"))
    for _, cell in summary[summary["status"] == "unstable"].iterrows():
        found.append(Caveat("unstable", cell["cell"], f"{cell['error']}; left out of every mean and the "
                            "recommendation.", "an unstable cell"))
    return found


def caveats(summary: pd.DataFrame, configs: pd.DataFrame, best: pd.DataFrame, selection: str | None = None) -> list[Caveat]:
    """Every warning about the study's answer: study-wide, per dataset's splits, then per best row."""
    found = study_caveats(summary, configs, selection) + split_caveats(summary)
    for _, row in best.iterrows():
        found += [c for c in (noise_caveat(row), chance_caveat(row), head_caveat(row, configs)) if c]
        found += disagreement_caveats(row, configs)
    return found

