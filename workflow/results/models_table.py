"""The `models` table (study key `rank`): each candidate model's LogME score and linear probe from its cached
features, what computing them cost, and, where its grid cells were fine-tuned, their best validation accuracy
beside it with Kendall's tau between each ranking and the fine-tuned order (workflow.results.ranking).

One row per candidate (dataset, model, resolution, starting weights). Ranks and tau are within a group: the
candidates that share dataset, resolution and weights, the models a ranking compares. Tau is reported with
its p-value, over the models that have a fine-tuned result; it says how well the order agreed, not that it
is good: with a handful of models its p-value is large whatever the order.
"""

from __future__ import annotations

import math

import pandas as pd

from workflow.results.ranking import rank_agreement
from workflow.study.grid import Study
from workflow.study.model_ranking import candidate_of, read_score

MODEL_TABLES = ("models",)  # what `rank` adds to the study's tables (the chart: model_charts.MODEL_CHARTS)
GROUP = ["dataset", "resolution", "weights"]
RANKED_BY = {"logme": "logme", "probe": "probe_val_accuracy"}  # the column each ranking orders by


def score_row(study: Study, candidate, chosen: set | None) -> dict:
    """One candidate's row from its score file (before the fine-tuned columns)."""
    scores = read_score(study.out, candidate.id)
    probe, features = scores["probe"], scores.get("features", {})
    return {"dataset": candidate.dataset, "model": candidate.model, "resolution": candidate.resolution,
            "weights": candidate.weights, "logme": scores["logme"],
            "probe_val_accuracy": probe["val_accuracy"], "probe_c": probe["c"],
            "probe_test_accuracy": probe["test_accuracy"], "probe_test_low": probe["test_low"],
            "probe_test_high": probe["test_high"], "probe_test_n": probe["test_n"],
            "feature_time_s": features.get("seconds"), "feature_images_per_s": features.get("images_per_s"),
            "score_time_s": scores["logme_seconds"] + scores["probe_seconds"],
            "chosen": None if chosen is None else candidate in chosen}


def fine_tuned(summary: pd.DataFrame) -> pd.DataFrame:
    """Per dataset, model, resolution and weights: the best validation accuracy of its `ok` grid cells, how
    many there were and their training seconds all together."""
    ok = summary[summary["status"] == "ok"]
    keys = [*GROUP, "model"]
    if ok.empty:
        return pd.DataFrame(columns=[*keys, "fine_tuned_val_accuracy", "fine_tuned_cells", "fine_tuned_time_s"])
    return ok.groupby(keys).agg(fine_tuned_val_accuracy=("best_val_accuracy", "max"),
                                fine_tuned_cells=("cell", "count"),
                                fine_tuned_time_s=("train_time_s", "sum")).reset_index()


def with_agreement(table: pd.DataFrame) -> pd.DataFrame:
    """Each ranking's rank within its group (1: the best) and Kendall's tau (and p) of its scores against the
    fine-tuned best validation accuracy, on every row of the group."""
    parts = []
    for _, group in table.groupby(GROUP, sort=False):
        group = group.copy()
        for name, column in RANKED_BY.items():
            group[f"{name}_rank"] = group[column].rank(ascending=False, method="min").astype("Int64")
            agreement = rank_agreement(group[column], group["fine_tuned_val_accuracy"])
            group[f"{name}_tau"], group[f"{name}_tau_p"] = agreement.tau, agreement.p
        group["tau_models"] = agreement.models
        parts.append(group)
    return pd.concat(parts, ignore_index=True)


def models_table(study: Study, summary: pd.DataFrame) -> pd.DataFrame:
    """The `models` table of a study with `rank` (rank-then-tune's: whether each candidate was chosen)."""
    chosen = {candidate_of(cell) for cell in study.grid_cells} if study.models_chosen else None
    rows = [score_row(study, candidate, chosen) for candidate in study.ranking.candidates]
    table = pd.DataFrame(rows).merge(fine_tuned(summary), on=[*GROUP, "model"], how="left")
    table["fine_tuned_val_accuracy"] = table["fine_tuned_val_accuracy"].astype(float)
    table["fine_tuned_cells"] = table["fine_tuned_cells"].fillna(0).astype("Int64")
    if study.ranking.keep is None:
        table = table.drop(columns="chosen")
    return with_agreement(table)


def models_preamble(table: pd.DataFrame) -> tuple[str, str]:
    """The tau sentences above the table, as Markdown and HTML."""
    import html

    lines = tau_lines(table)
    return ("".join(f"{line}\n\n" for line in lines), "".join(f"<p>{html.escape(line)}</p>\n" for line in lines))


def tau_lines(table: pd.DataFrame) -> list[str]:
    """One sentence per group: each ranking's tau against the fine-tuned order, with its p-value."""
    lines = []
    for key, group in table.groupby(GROUP, sort=False):
        first = group.iloc[0]
        where = f"{key[0]} at r{key[1]}, weights {key[2]}"
        if not first["tau_models"] or first["tau_models"] < 2 or math.isnan(first["logme_tau"]):
            lines.append(f"{where}: fewer than two models fine-tuned, no rank agreement")
            continue
        lines.append(f"{where}: Kendall's tau against the fine-tuned best validation accuracy over "
                     f"{first['tau_models']} models: LogME {first['logme_tau']:.2f} (p = {first['logme_tau_p']:.2g}), "
                     f"linear probe {first['probe_tau']:.2f} (p = {first['probe_tau_p']:.2g})")
    return lines
