"""Where every cell of a study stands (`python -m workflow status`), from its files only: so it works
while Snakemake runs, on a login node while SLURM runs the jobs, and afterwards.

A cell is *waiting* (nothing yet), *running* (its job's progress.json says so and the job is alive),
*stopped* (by a signal, or killed: last.pt waits for a retry), *done* (metrics.json), *failed*, *damaged*
(a metrics.json that cannot be read: the note names it and what to do) or, in a halving study, *pruned*
(ranked out at a rung). ETAs come from the epoch times measured so far.
Imports no torch."""

from __future__ import annotations

import os
import socket
import time
from pathlib import Path

import pandas as pd

from workflow.core import paths
from workflow.integrity import read_metrics
from workflow.sweep.halving import first_rung
from workflow.sweep.progress import progress as halving_progress
from workflow.track.attempts import read_progress
from workflow.track.watch import planned_epochs

STALE_S = 3600  # a job whose progress.json was not rewritten for this long counts as killed
FINISHED = ("done", "failed", "damaged", "pruned")  # nothing changes them until a run or the user does


def job_alive(record: dict, now: float) -> bool:
    """Whether the job that writes `record` still runs: its process, on this machine; else a recent write."""
    if now - record.get("updated", 0) > STALE_S:
        return False
    if record.get("host") != socket.gethostname():
        return True
    try:
        os.kill(record["pid"], 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # someone else's process
        return True
    return True


def job_state(folder: Path, now: float) -> tuple[str, str, dict | None, dict | None]:
    """(state, note, metrics, progress) of the job that trains into `folder` (a cell's or a rung's)."""
    metrics, damage = read_metrics(folder)
    record = read_progress(folder)
    if damage:
        return "damaged", damage, None, record
    if metrics is not None:
        failed = metrics.get("status") == "failed"
        note = metrics.get("error", "") if failed else ("" if metrics.get("status") == "ok" else metrics["status"])
        return ("failed" if failed else "done"), note, metrics, record
    if record is not None:
        state = record.get("state")
        if state == "running":
            return ("running", "", None, record) if job_alive(record, now) else ("stopped", "killed", None, record)
        if state == "failed":
            return "failed", record.get("error", ""), None, record
        return "stopped", f"by {record.get('signal')}" if record.get("signal") else str(state), None, record
    if (folder / paths.LAST_PT).exists():
        return "stopped", "", None, None
    return "waiting", "", None, None


def halving_folder(study, cell) -> tuple[Path, int | None, str | None]:
    """A halved grid cell's folder to read (its own once finished, else its current rung's), the
    rung's budget, and 'pruned' when a ranking stopped it before finish_cell ran."""
    if (study.cell_dir(cell.id) / paths.METRICS_JSON).exists():
        return study.cell_dir(cell.id), None, None
    where = halving_progress(study, cell.id)
    if where["stopped"] is not None and where["stopped"] < study.halving.last:  # ranked out
        return study.rung_dir(cell.id, where["stopped"]), study.halving.budget(where["stopped"]), "pruned"
    rung = min(first_rung(cell) if where["rung"] is None else where["rung"] + 1, study.halving.last)
    return study.rung_dir(cell.id, rung), study.halving.budget(rung), None


def cell_row(study, cell, now: float) -> dict:
    """One cell's line of the status table (times in seconds; None: not known)."""
    folder, budget, pruned = study.cell_dir(cell.id), None, None
    if study.halving and cell.id in study.grid_ids:
        folder, budget, pruned = halving_folder(study, cell)
    state, note, metrics, record = job_state(folder, now)
    if metrics is not None and metrics.get("pruned"):
        state, note = "pruned", f"rung {metrics.get('rung')}"
    elif pruned and state == "done":
        state, note = "pruned", f"rung {folder.name.split('-')[-1]}"
    record = record or {}
    planned = record.get("planned_epochs") or planned_epochs(cell, budget)
    if metrics is not None:
        epoch, elapsed = metrics.get("epochs_run") or 0, metrics.get("wall_time_s")
        accuracy, speed = metrics.get("best_val_accuracy"), metrics.get("images_per_s")
        planned = epoch if state in FINISHED else planned
    else:
        epoch, accuracy, speed = record.get("epoch", 0), record.get("val_accuracy"), record.get("images_per_s")
        elapsed = record.get("elapsed_s")
    per_epoch = elapsed / epoch if elapsed and epoch else None
    if state == "running" and elapsed is not None:
        elapsed += now - record.get("since", now)
    return {"cell": cell.id, "state": state, "stage": record.get("stage") or "", "epoch": epoch, "planned": planned,
            "val_accuracy": accuracy, "images_per_s": speed, "elapsed_s": elapsed, "per_epoch_s": per_epoch,
            "note": note}


def status_table(study, now: float | None = None) -> pd.DataFrame:
    """Every cell's row (pretrain cells first, as they train first), with an ETA each."""
    now = time.time() if now is None else now
    cells = sorted(study.cells.values(), key=lambda c: c.id in study.grid_ids)
    table = pd.DataFrame([cell_row(study, cell, now) for cell in cells])
    measured = table["per_epoch_s"].dropna()
    typical = measured.mean() if len(measured) else None
    remaining = (table["planned"] - table["epoch"]).clip(lower=0)
    per_epoch = table["per_epoch_s"].fillna(typical) if typical is not None else table["per_epoch_s"]
    table["eta_s"] = (remaining * per_epoch).where(~table["state"].isin(FINISHED), 0.0)
    return table


def duration(seconds) -> str:
    """Seconds as 1h02m, 3m05s or 12s ('' when not known)."""
    if seconds is None or pd.isna(seconds):
        return ""
    seconds = int(round(seconds))
    if seconds >= 3600:
        return f"{seconds // 3600}h{seconds % 3600 // 60:02d}m"
    return f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s"


def study_line(study, table: pd.DataFrame) -> str:
    """Cells finished of all, by state, and an ETA: the remaining epochs at the measured epoch times,
    shared by the jobs running now (at least one)."""
    counts = table["state"].value_counts()
    finished = int(counts.reindex(list(FINISHED)).fillna(0).sum())
    by_state = ", ".join(f"{int(counts[s])} {s}" for s in ("running", "waiting", "stopped", "failed", "damaged", "pruned")
                         if s in counts)
    line = f"{study.name}: {finished}/{len(table)} cells finished ({by_state or 'all done'})"
    if finished < len(table):
        eta = table["eta_s"].sum(min_count=1)
        running = max(int(counts.get("running", 0)), 1)
        line += f"; ETA {duration(eta / running) or 'not known yet'}"
        if not pd.isna(eta):
            line += f" at {running} job{'s' if running > 1 else ''} at a time"
    return line


def format_status(study, table: pd.DataFrame) -> str:
    """The table as `python -m workflow status` prints it, with the study's line under it."""
    shown = pd.DataFrame({
        "cell": table["cell"], "state": table["state"], "stage": table["stage"],
        "epoch": [f"{e}/{p}" for e, p in zip(table["epoch"], table["planned"])],
        "val_acc": [f"{a:.4f}" if a is not None and not pd.isna(a) else "" for a in table["val_accuracy"]],
        "img/s": [f"{s:.0f}" if s is not None and not pd.isna(s) else "" for s in table["images_per_s"]],
        "elapsed": table["elapsed_s"].map(duration), "eta": table["eta_s"].map(
            lambda s: duration(s) if s else ""), "note": table["note"].str.slice(0, 60),
    })
    return f"{shown.to_string(index=False)}\n\n{study_line(study, table)}"
