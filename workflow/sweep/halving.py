"""Successive halving (``search: halving``): grid cells train rung by rung, and only the best go on.

Each rung of a cell is a job of its own with its own folder (workflow.core.paths.rung_folder):
metrics.json, history.csv and best.pt as a whole cell has them, and state.pt, the resumable
checkpoint after the rung's budget. Rung k+1 starts from rung k's state.pt and best.pt, so its
history continues where rung k stopped. After each rung but the last a ranking file ranks the
cells that reached it within their groups; the best `keep` share goes on. A cell's results are
those of the rung where it stopped, with that rung and whether it was pruned.

Only files decide: the ranking of rung k reads rung k's metrics, the next rung's jobs read only
their own cell's state, so adding a cell re-ranks without retraining anyone, and a crashed rung
job continues its own last.pt.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path

import pandas as pd

from workflow.atomic import atomic_path, write_json
from workflow.core import paths
from workflow.sweep.decisions import load_ranking
from workflow.study.halving import BRACKET, HALVING_METRICS, Halving

def _load(path: Path) -> dict:
    """A checkpoint's small parts without reading its tensors into memory."""
    import torch  # torch only in the rung jobs: the Snakefile imports this module

    return torch.load(path, map_location="cpu", weights_only=False, mmap=True)


def _copy(source: Path, dest: Path) -> None:
    """Copy a file atomically (a fresh file with a fresh mtime, never a link)."""
    with atomic_path(dest) as tmp:
        shutil.copyfile(source, tmp)


def _in_progress(out_dir: Path, previous: dict) -> dict | None:
    """This rung's own last.pt when it can be continued: written for the same run as `previous` and at
    least as far along."""
    path = out_dir / paths.LAST_PT
    if not path.exists():
        return None
    try:
        current = _load(path)
    except Exception:  # unreadable: start over from the previous rung
        return None
    if current.get("fingerprint") != previous["fingerprint"] or \
            current.get("state", {}).get("epoch", -1) < previous["state"]["epoch"]:
        return None
    return current


def start_rung(out_dir: str | Path, previous: str | Path | None, log=print) -> None:
    """Put the checkpoint a rung continues from into its folder: the previous rung's state.pt as
    last.pt and its best.pt as best-so-far.pt (what training resumes from).

    A rung job that was stopped or killed left its own last.pt and best-so-far.pt (Snakemake deletes
    only declared outputs): those are kept when they continue the previous rung's run and are further
    along. The first rung has nothing to continue; training resumes its own last.pt, if any.
    """
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    if previous is None:
        return
    previous = Path(previous)
    state = previous / paths.STATE_PT
    before = _load(state)
    if "fingerprint" not in before:
        raise ValueError(f"{state} holds no resumable state (the cell ended as "
                         f"{before.get('status')!r}); such a cell does not go on to another rung")
    current = _in_progress(out_dir, before)
    if current is not None and (out_dir / paths.BEST_SO_FAR_PT).exists():
        log(f"continuing this rung's own {paths.LAST_PT} after epoch {current['state']['epoch']}")
        return
    _copy(previous / paths.BEST_PT, out_dir / paths.BEST_SO_FAR_PT)
    _copy(state, out_dir / paths.LAST_PT)
    log(f"continuing {state} after epoch {before['state']['epoch']}")


def finish_rung(out_dir: str | Path, rung: int, budget: int, log=print) -> dict:
    """After a rung's training: last.pt becomes the rung's state.pt, metrics.json gets the rung and budget.

    A cell whose status is not `ok` goes on to no other rung: its state.pt only says why.
    """
    import torch  # as in _load

    out_dir = Path(out_dir)
    metrics = json.loads((out_dir / paths.METRICS_JSON).read_text())
    last = out_dir / paths.LAST_PT
    if metrics["status"] == "ok" and last.exists():
        os.replace(last, out_dir / paths.STATE_PT)
        (out_dir / paths.BEST_SO_FAR_PT).unlink(missing_ok=True)  # best.pt holds the same weights
    else:
        with atomic_path(out_dir / paths.STATE_PT) as tmp:
            torch.save({"resumable": False, "status": metrics["status"], "cell": metrics["cell"]}, tmp)
        last.unlink(missing_ok=True)
        (out_dir / paths.BEST_SO_FAR_PT).unlink(missing_ok=True)
    metrics.update(rung=rung, budget_epochs=budget)
    write_json(out_dir / paths.METRICS_JSON, metrics)
    log(f"rung {rung} ({budget} epochs): {metrics['epochs_run']} epochs run, status {metrics['status']}")
    return metrics


def rung_value(history: pd.DataFrame, metric: str) -> float | None:
    """The best value of `metric` so far in a history (None when it has no epoch)."""
    values = history[metric].dropna() if metric in history else pd.Series(dtype=float)
    return float(HALVING_METRICS[metric](values)) if len(values) else None


def read_rung(metrics_file: str | Path, halving: Halving) -> dict:
    """One cell's entry for a rung's ranking, from the rung's metrics.json and history.csv."""
    metrics_file = Path(metrics_file)
    metrics = json.loads(metrics_file.read_text())
    history_file = metrics_file.with_name(paths.HISTORY_CSV)
    history = pd.read_csv(history_file) if history_file.exists() and history_file.stat().st_size else pd.DataFrame()
    value = rung_value(history, halving.metric) if len(history) else None
    if value is not None and not math.isfinite(value):
        value = None
    return {"cell": metrics["cell"], "group": halving.group(metrics["config"]), "status": metrics["status"],
            "value": value, "epochs_run": metrics.get("epochs_run")}


def rank(entries: list[dict], halving: Halving) -> list[dict]:
    """Rank the cells of a rung within their groups: the best value first (highest accuracy, lowest loss),
    ties to the cell id that sorts first, cells without an `ok` status or a value last. The first
    ceil(keep x cells) of each group survive, except cells that are not `ok` or have no value."""
    sign = -1.0 if HALVING_METRICS[halving.metric] is max else 1.0

    def usable(entry: dict) -> bool:
        return entry["status"] == "ok" and entry["value"] is not None

    def order(entry: dict) -> tuple:
        return (0, sign * entry["value"], entry["cell"]) if usable(entry) else (1, 0.0, entry["cell"])

    groups: dict[str, list[dict]] = {}
    for entry in entries:
        groups.setdefault(json.dumps(entry["group"], sort_keys=True), []).append(entry)
    ranked = []
    for key in sorted(groups):
        members = sorted(groups[key], key=order)
        keep = halving.survivors(len(members))
        for position, entry in enumerate(members, start=1):
            ranked.append({**entry, "rank": position, "of": len(members),
                           "survives": position <= keep and usable(entry)})
    return ranked


def rank_rung(metrics_files: list[str | Path], halving: Halving, rung: int) -> dict:
    """The ranking file's content for one rung."""
    if not 0 <= rung < halving.last:
        raise ValueError(f"rung {rung}: only rungs 0 to {halving.last - 1} are ranked (the last has no next rung)")
    cells = rank([read_rung(path, halving) for path in metrics_files], halving)
    return {
        "rung": rung, "budget_epochs": halving.rungs[rung], "next_budget_epochs": halving.rungs[rung + 1],
        **halving.to_dict(), "cells": cells,
        "survivors": [entry["cell"] for entry in cells if entry["survives"]],
    }


def survivors(ranking: dict) -> list[str]:
    """The cells of a ranking that go on to the next rung."""
    return list(ranking["survivors"])


def cell_rankings(cell_id: str, first: int, last: int, read) -> list[dict]:
    """The rankings a cell met, from its first rung (its bracket's) up to the first that did not keep it
    (or the last ranked rung): `read(rung)` gives a rung's ranking, or None to stop where none is written yet."""
    rankings = []
    for rung in range(first, last):
        ranking = read(rung)
        if ranking is None:
            break
        rankings.append(ranking)
        if cell_id not in survivors(ranking):
            break
    return rankings


def stopping_rung(cell_id: str, rankings: list[dict], first: int = 0) -> int:
    """The rung where a cell stops, given the rankings from its first rung on: the first that prunes it,
    or the rung after the last ranking (the last rung) when it survives them all."""
    for rung, ranking in enumerate(rankings, start=first):
        entry = next((e for e in ranking["cells"] if e["cell"] == cell_id), None)
        if entry is None:
            raise ValueError(f"cell {cell_id} is not in the ranking of rung {rung}")
        if not entry["survives"]:
            return rung
    return first + len(rankings)


def trained_first_rung(out_dir: Path, halving: Halving) -> int:
    """The rung a cell started at, from its trained rungs: the bracket in the first one's config."""
    for rung in range(len(halving.rungs)):
        metrics_file = Path(paths.rung_folder(out_dir, rung)) / paths.METRICS_JSON
        if metrics_file.exists():
            return json.loads(metrics_file.read_text())["config"].get(BRACKET) or 0
    raise ValueError(f"{out_dir} holds no trained rung")


def finish_cell(cell_id: str, rankings_dir: str | Path, out_dir: str | Path, halving: Halving) -> dict:
    """A grid cell's results in its folder `out_dir`: the outputs of the rung where it stopped (as the
    rankings in `rankings_dir` say, from its first rung on: its bracket's), with `rung`, `budget_epochs`,
    `pruned` and its place in each ranking it was in."""
    out_dir = Path(out_dir)
    first = trained_first_rung(out_dir, halving)
    ranked = cell_rankings(cell_id, first, halving.last, lambda k: load_ranking(paths.ranking_file(rankings_dir, k)))
    rung = stopping_rung(cell_id, ranked, first)
    rung_dir = Path(paths.rung_folder(out_dir, rung))
    metrics = json.loads((rung_dir / paths.METRICS_JSON).read_text())
    if metrics.get("rung") != rung or metrics["cell"] != cell_id:
        raise ValueError(f"{rung_dir} holds rung {metrics.get('rung')} of {metrics['cell']}, not rung {rung} of {cell_id}")
    for name in (paths.HISTORY_CSV, paths.BEST_PT):
        _copy(rung_dir / name, out_dir / name)
    if (rung_dir / paths.PREDICTIONS_NPZ).exists():  # a cell that got as far as testing its best weights
        _copy(rung_dir / paths.PREDICTIONS_NPZ, out_dir / paths.PREDICTIONS_NPZ)
    places = [{key: entry[key] for key in ("rank", "of", "value", "survives")} | {"rung": k}
              for k, ranking in enumerate(ranked, start=first) for entry in ranking["cells"] if entry["cell"] == cell_id]
    bracket = {BRACKET: first} if halving.brackets > 1 else {}
    metrics.update(rung=rung, budget_epochs=halving.rungs[rung], pruned=rung < halving.last, **bracket,
                   halving={**halving.to_dict(), "ranks": places})
    write_json(out_dir / paths.METRICS_JSON, metrics)  # last: its presence means the cell is complete
    return metrics


# What the rules' jobs read (rules/halving.smk); `read(rung)` gives a rung's ranking once it is done.


def previous_rung_inputs(study, cell_id: str, rung: int) -> dict[str, str]:
    """What a rung continues from: after the cell's first rung (its bracket's), the previous rung's state
    and best checkpoint."""
    first = first_rung(study.cell(cell_id, pretrain=False))  # only grid cells train by rungs
    study.halving.budget(rung)  # a rung of the ladder
    if rung < first:
        raise ValueError(f"cell {cell_id} starts at rung {first} (bracket {first}): it has no rung {rung}")
    if rung == first:
        return {}
    previous = paths.rung_outputs(study.rung_dir(cell_id, rung - 1))
    return {"state": previous["state"], "previous_best": previous["checkpoint"]}


def rank_inputs(study, rung: int, read, round_index: int | None = None) -> dict[str, list[str]]:
    """The rung's metrics and history of every cell that reached it: the grid cells that start there
    (every one at rung 0 without brackets; in a TPE search, those of round `round_index`) and the
    survivors of the previous ranking."""
    if not 0 <= rung < study.halving.last:
        raise ValueError(f"rung {rung}: only rungs 0 to {study.halving.last - 1} are ranked (the last has no next rung)")
    cells = [cell.id for cell in study.grid_cells
             if first_rung(cell) == rung and study.halving_round(cell.id) == round_index]
    cells += survivors(read(rung - 1)) if rung > 0 else []
    outputs = [paths.rung_outputs(study.rung_dir(cell_id, rung)) for cell_id in cells]
    return {name: [files[name] for files in outputs] for name in ("metrics", "history")}


def finish_inputs(study, cell_id: str, read) -> dict:
    """The outputs of the rung where a grid cell stopped, and the rankings that decided it (its TPE
    round's, in a TPE search: `read` reads that round's)."""
    first = first_rung(study.cell(cell_id, pretrain=False))
    for earlier in range(first):  # the rankings before its bracket's first decide who joins it there
        read(earlier)
    rankings = cell_rankings(cell_id, first, study.halving.last, read)
    outputs = paths.cell_outputs(study.rung_dir(cell_id, stopping_rung(cell_id, rankings, first)))
    round_index = study.halving_round(cell_id)
    return {"rankings": [str(study.ranking_path(k, round_index)) for k in range(first, first + len(rankings))],
            **outputs}


def first_rung(cell) -> int:
    """The rung a grid cell starts at: its Hyperband bracket's (rung 0 without brackets)."""
    return cell.bracket or 0
