"""Rank-then-tune's checkpoint (`rank.keep`, rules/rank.smk): from every candidate's scores, the best `keep`
models of each dataset, resolution and starting weights, written to the study's choice file. The study is
given the file by workflow.sweep.decisions, and its grid then holds the chosen models' cells alone.
"""

from __future__ import annotations

import math
from dataclasses import replace

from workflow.study.grid import Study
from workflow.study.model_ranking import Ranking, build_ranking, keep_chosen, read_score

SCORE_KEYS = {"logme": ("logme",), "probe": ("probe", "val_accuracy")}  # where a score file holds what chooses


def ranked_study(study: Study, config: dict, choice: tuple[str, dict] | None = None) -> Study:
    """The study (as build_study made it) with its `rank` settings over its grid's candidates and, once
    rank-then-tune's `choice` (its file and content) is made, the chosen models' grid cells alone (the
    pretrain cells of every candidate stay: their features were scored)."""
    ranking = build_ranking(config, study.grid_cells)
    if ranking is None:
        return study
    if choice is None or ranking.keep is None:
        return replace(study, ranking=ranking, candidate_cells=study.grid_cells)
    grid_cells = keep_chosen(study.grid_cells, choice[1], choice[0])
    dropped = {cell.id for cell in study.grid_cells} - {cell.id for cell in grid_cells}
    return replace(study, ranking=ranking, candidate_cells=study.grid_cells, grid_cells=grid_cells,
                   cells={cell_id: cell for cell_id, cell in study.cells.items() if cell_id not in dropped},
                   models_chosen=True)


def score_value(scores: dict, by: str) -> float:
    """The value that chooses (`rank.by`) from a candidate's score file's content; NaN when it has none."""
    value = scores
    for key in SCORE_KEYS[by]:
        value = value.get(key) if isinstance(value, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else math.nan


def choose(ranking: Ranking, scores: dict[str, dict]) -> dict:
    """The choice file's content: per group, its models best first (higher is better; ties by name; a score
    that is not finite last) and the first `keep` of them. `scores`: {candidate id: its score file's content}."""
    groups: dict[tuple, list] = {}
    for candidate in ranking.candidates:
        groups.setdefault(candidate.group, []).append(
            {"model": candidate.model, "score": score_value(scores[candidate.id], ranking.by)})
    out = []
    for (dataset, resolution, weights), models in groups.items():
        ranked = sorted(models, key=lambda entry: (math.isnan(entry["score"]), -entry["score"], entry["model"]))
        out.append({"dataset": dataset, "resolution": resolution, "weights": weights,
                    "ranked": [{**entry, "score": None if math.isnan(entry["score"]) else entry["score"]}
                               for entry in ranked],
                    "chosen": [entry["model"] for entry in ranked[:ranking.keep]]})
    return {"by": ranking.by, "keep": ranking.keep, "groups": out}


def choose_models(study: Study, log=print) -> dict:
    """The study's choice (`choose`) from its candidates' score files, each group's ranking logged."""
    choice = choose(study.ranking, {candidate.id: read_score(study.out, candidate.id)
                                    for candidate in study.ranking.candidates})
    for group in choice["groups"]:
        ranked = ", ".join(f"{entry['model']} {entry['score']:.4g}" if entry["score"] is not None
                           else f"{entry['model']} (no score)" for entry in group["ranked"])
        log(f"{group['dataset']} r{group['resolution']} {group['weights']}: by {choice['by']}: {ranked}; "
            f"chosen: {', '.join(group['chosen'])}")
    return choice
