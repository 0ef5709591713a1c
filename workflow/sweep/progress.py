"""How far a study got, from its files: which cells are done and, with successive halving, the
rungs each grid cell finished and where a ranking stopped it (`python -m workflow cells`)."""

from __future__ import annotations

import pandas as pd

from workflow.core import paths
from workflow.sweep.halving import cell_rankings, first_rung, load_ranking, stopping_rung, survivors


def _written_ranking(study, rung: int, round_index: int | None) -> dict | None:
    path = study.ranking_path(rung, round_index)
    return load_ranking(path) if path.exists() else None


def progress(study, cell_id: str) -> dict:
    """How far a grid cell of a halving study got: the last rung it finished and, once the rankings
    say so, the rung where it stopped (None for either when there is none yet)."""
    halving = study.halving
    finished = [k for k in range(len(halving.rungs)) if (study.rung_dir(cell_id, k) / paths.METRICS_JSON).exists()]
    first = first_rung(study.cell(cell_id))
    round_index = study.halving_round(cell_id)
    rankings = cell_rankings(cell_id, first, halving.last, lambda k: _written_ranking(study, k, round_index))
    if rankings and cell_id not in {entry["cell"] for entry in rankings[-1]["cells"]}:
        rankings.pop()  # ranked before the cell reached that rung
    pruned = bool(rankings) and cell_id not in survivors(rankings[-1])
    stopped = stopping_rung(cell_id, rankings, first) if pruned or first + len(rankings) == halving.last else None
    return {"rung": max(finished) if finished else None, "stopped": stopped}


def _halving_columns(study, cell_id: str) -> dict:
    if cell_id not in study.grid_ids:
        return {"rungs": "", "stopped": ""}
    where = progress(study, cell_id)
    rungs = f"{0 if where['rung'] is None else where['rung'] + 1}/{len(study.halving.rungs)}"
    if where["stopped"] is None:
        return {"rungs": rungs, "stopped": ""}
    kind = "finalist" if where["stopped"] == study.halving.last else "pruned"
    return {"rungs": rungs, "stopped": f"rung {where['stopped']} ({kind})"}


def cell_table(study) -> pd.DataFrame:
    """One row per cell, grid and pretrain: its role, whether it is done and, in a halving study, the
    rungs it finished and where it stopped."""
    rows = []
    for cell in study.cells.values():
        done = (study.cell_dir(cell.id) / paths.METRICS_JSON).exists()
        row = {"cell": cell.id, "role": "grid" if cell.id in study.grid_ids else "pretrain",
               "done": "yes" if done else "no"}
        if study.halving:
            row.update(_halving_columns(study, cell.id))
        if study.halving and study.halving.brackets > 1:
            row["bracket"] = "" if cell.bracket is None else cell.bracket
        rows.append(row)
    return pd.DataFrame(rows)


def study_summary(study, table: pd.DataFrame) -> str:
    """The lines under the cell table: how many cells of each role, how many done, the search."""
    lines = [f"{len(study.grid_cells)} grid cells, {len(study.cells) - len(study.grid_cells)} pretrain cells, "
             f"{int((table['done'] == 'yes').sum())} done"]
    if study.halving:
        halving = study.halving
        lines.append(f"successive halving: rungs {list(halving.rungs)} epochs, keep {halving.keep:.3g} of each "
                     f"{' x '.join(halving.group_by) or 'study'} by {halving.metric}")
        if study.search_rounds:
            lines.append("each TPE round is halved on its own ladder: its cells are ranked among themselves "
                         "(halving/round-<r>/), and a cell a ranking stops is told to Optuna as pruned")
        if halving.brackets > 1:
            lines.append(f"Hyperband: {halving.brackets} brackets, bracket b starting at rung b, drawn in the "
                         f"proportions {halving.bracket_weights()}")
    return "\n".join(lines)
