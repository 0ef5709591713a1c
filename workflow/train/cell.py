"""Train one cell: set up, resume, run its stages, evaluate the best weights, write the outputs; and
run it as a job (`run_job`): a stop signal exits with EXIT_STOPPED, a CellError is recorded as a
failed cell.

While a cell trains its best weights live in best-so-far.pt; best.pt, history.csv, predictions.npz
and, last, metrics.json are written once it is complete. last.pt then holds only the finished run state
and best-so-far.pt is best.pt's hard link, so that a job killed after writing them is finished again
without training (`write_outputs`); a job that trained to a budget (`until_epoch`, successive halving's
rungs) keeps the whole last.pt for a later job to continue.
"""

from __future__ import annotations

import json
import os
import shutil
import time
import traceback
from pathlib import Path

import torch

from workflow.atomic import atomic_path, write_json
from workflow.core.cell import Cell
from workflow.integrity import check_cell_file, console_note, file_stamp, load_torch
from workflow.core.paths import BEST_PT, HISTORY_CSV, METRICS_JSON
from workflow.train.epoch import predict_or_oom, run_epoch
from workflow.train.errors import CellError
from workflow.train.history import write_history
from workflow.train.job import Job, open_job
from workflow.train.loop import EpochPosition
from workflow.train.metrics import classification_report
from workflow.train.models import set_trainable
from workflow.train.optim import Stage
from workflow.train.predictions import PREDICTIONS, write_predictions
from workflow.train.runtime import versions
from workflow.train.signals import EXIT_STOPPED, StopFlag, Stopped
from workflow.train.state import BEST_SO_FAR, RunState, resume_run, save_checkpoint, save_finished, save_last, save_torch
from workflow.train.watcher import Unwatched, Watcher


def start_stage(job: Job, state: RunState, settings: dict, saved: dict | None = None) -> Stage:
    """Make the stage's layers trainable and start its optimizer, schedule and early stopping
    (from `saved`, when an earlier job stopped inside the stage)."""
    set_trainable(job.model, settings["train"])
    state.stage_trainable[settings["name"]] = sum(p.numel() for p in job.model.parameters() if p.requires_grad)
    stage = Stage.start(job.model, settings, job.cell.lr * settings["lr_factor"])
    if saved is not None:
        stage.load_state_dict(saved)
    return stage


def run_stages(job: Job, state: RunState, saved_stage: dict | None = None, position: EpochPosition | None = None,
               until_epoch: int | None = None) -> None:
    """Train through the cell's stages from where `state` (and `position`, inside an epoch) stands;
    with `until_epoch`, stop once that many epochs (all stages together) are done. A stop signal
    ends it with `Stopped` once last.pt is written."""
    stages = job.cell.stages()

    def going_on() -> bool:
        return state.stage_index < len(stages) and state.status == "ok" and (
            until_epoch is None or state.epoch < until_epoch)

    while going_on():
        index = state.stage_index
        inside = state.stage_epoch > 0 or position is not None  # the run stopped inside this stage
        stage = start_stage(job, state, stages[index], saved_stage if inside else None)
        saved_stage = None
        while state.stage_index == index and going_on():
            run_epoch(job, state, stage, position)
            position = None
            if job.stop.signal and state.status == "ok" and state.stage_index < len(stages):
                # the signal came while validating or checkpointing: stop at the epoch's end
                save_last(job, state, stage, stopped_by=job.stop.signal)
                raise Stopped(job.stop.signal, state.epoch)


def evaluate_best(job: Job, state: RunState) -> tuple[dict, float | None, dict | None]:
    """Load the best weights (the starting ones, saved as such, when no epoch finished) and score them
    on the validation and test splits: (test classification report, test loss, {split: scores}),
    ({}, None, None) after an out-of-memory error."""
    best_path = job.out_dir / BEST_SO_FAR
    if state.best_epoch is None and not best_path.exists():  # it exists when an earlier job finished
        save_checkpoint(best_path, job.model, job.cell, job.normalization, 0, class_names=job.class_names,
                        resize_method=job.resize_method)
    else:
        job.model.load_state_dict(load_torch(best_path, map_location=job.device, weights_only=False)["model"])
    if job.device.type == "cuda":
        torch.cuda.empty_cache()  # after an out-of-memory error, what the failed step held
    scores = {}
    for name, split in (("val", job.val), ("test", job.test)):
        predicted = predict_or_oom(job, state, split, name)
        if predicted is None:
            return {}, None, None
        scores[name], loss = predicted
    report = classification_report(scores["test"], job.test.labels.cpu().numpy(), job.class_names)
    return report, loss, scores


def stage_summaries(cell: Cell, state: RunState, inputs: dict | None = None) -> list[dict]:
    """Each stage's resolved settings, epochs run, trainable parameters, wall time and, from `inputs`, what it
    trained on (`input`: features or images) and why (`input_reason`)."""
    rows = []
    for stage in cell.stages():
        name = stage["name"]
        given = (inputs or {}).get(name, {})
        rows.append({
            **stage, "lr": cell.lr * stage["lr_factor"],
            "epochs_run": sum(1 for row in state.history if row["stage"] == name),
            "trainable_parameters": state.stage_trainable.get(name),
            "wall_time_s": round(state.stage_seconds[name], 3) if name in state.stage_seconds else None,
            "input": given.get("input"), "input_reason": given.get("reason"),
        })
    return rows


def cell_metrics(job: Job, state: RunState, report: dict, test_loss: float | None, wall_time_s: float) -> dict:
    """metrics.json of a trained cell: status, test metrics, time, memory, stages and how it ran."""
    cell, device, training = job.cell, job.device, job.cell.training
    return {
        "cell": cell.id,
        "status": state.status,
        "diverged_epoch": state.diverged_epoch,
        "oom": state.oom,
        "test_accuracy": report.get("accuracy"),  # top-1
        "test_top5_accuracy": report.get("top5_accuracy"),
        "test_loss": test_loss,
        "test_macro_f1": report.get("macro_f1"),
        "test_auc": report.get("roc_auc"),
        "test_false_negative_rate": report.get("false_negative_rate"),
        "best_val_accuracy": state.best_val_accuracy if state.best_epoch else None,
        "epochs_run": len(state.history),
        "best_epoch": state.best_epoch,
        "wall_time_s": round(wall_time_s, 3),
        "train_time_s": round(state.train_seconds, 3),
        "time_to_best_s": None if state.time_to_best_s is None else round(state.time_to_best_s, 3),
        "images_per_s": round(state.train_images / state.train_seconds, 1) if state.train_seconds else None,
        "peak_memory_mb": round(torch.cuda.max_memory_allocated(device) / 2**20, 1)
        if device.type == "cuda" else None,
        "micro_batch_size": job.micro.size,  # training.oom_micro_batches; None: never split
        "device": str(device),
        "stages": stage_summaries(cell, state, job.stage_inputs),
        "per_class": report.get("per_class"),
        "confusion_matrix": report.get("confusion_matrix"),
        "versions": versions(),
        "run": {
            "head": job.model.head_kind,
            "normalization": {"mean": list(job.normalization[0]), "std": list(job.normalization[1])},
            "aux_classifier": getattr(job.model.backbone, "AuxLogits", None) is not None, "precision": job.amp.name,
            "skipped_fp16_steps": job.amp.skipped_steps,
            "compiled": training.compile, "deterministic": training.deterministic, "threads": job.threads,
            "resumed_after_epochs": state.resumed_after, "resumes": state.resumes,
            "micro_batches": job.micro.changes,
        },
        "config": json.loads(cell.to_json()),
    }


def write_outputs(job: Job, state: RunState, metrics: dict, scores: dict | None, keep_resumable: bool) -> None:
    """best.pt, history.csv, the best weights' predictions (when it got that far) and, last,
    metrics.json (its presence means the cell is complete, and it records best.pt's stamp). Unless
    `keep_resumable` (a budget: a later job trains on), last.pt first becomes the finished run state
    (`save_finished`) and best-so-far.pt stays as a hard link of best.pt: a rerun after a kill at any
    instant, its outputs deleted by Snakemake, writes them again without training."""
    best_so_far = job.out_dir / BEST_SO_FAR
    stamp = file_stamp(best_so_far) if keep_resumable else save_finished(job, state)
    with atomic_path(job.out_dir / BEST_PT) as tmp:
        link_or_copy(best_so_far, tmp)
    write_history(job.out_dir / HISTORY_CSV, state.history)
    (job.out_dir / PREDICTIONS).unlink(missing_ok=True)  # an earlier run's
    if scores is not None:
        write_predictions(job.out_dir / PREDICTIONS, scores["val"], job.val.labels.cpu().numpy(),
                          scores["test"], job.test.labels.cpu().numpy(), job.class_names)
    metrics["files"] = {BEST_PT: stamp}  # best.pt is best-so-far.pt, linked or copied
    write_json(job.out_dir / METRICS_JSON, metrics)


def link_or_copy(source: Path, dest: Path) -> None:
    """A hard link of `source` at `dest` (no second copy on disk), or a copy where links are refused."""
    try:
        os.link(source, dest)
    except OSError:
        shutil.copyfile(source, dest)


def train_cell(cell: Cell, manifest: str | Path, out_dir: str | Path, init: str | Path | None = None,
               threads: int = 1, log=print, stop: StopFlag | None = None, until_epoch: int | None = None,
               watch: Watcher | None = None, features: str | Path | None = None) -> dict:
    """Train one cell (resuming last.pt if it fits); writes metrics.json,
    history.csv and best.pt, and returns the metrics. A set `stop` flag ends it early with `Stopped`,
    last.pt and no outputs. With `until_epoch` (a budget, all stages together) it stops after that many
    epochs and keeps last.pt and best-so-far.pt for a later call with a larger budget. `watch` is told
    how it goes (default: nobody). `features`: the backbone's cached features its head stages may train on."""
    started = time.perf_counter()
    job = open_job(cell, manifest, out_dir, init, threads, log, stop, features)
    state, saved_stage, position = resume_run(job)
    written_again = state.wall_time_s is not None  # an earlier job finished it: nothing is trained
    job.watch = watch or Unwatched()
    job.watch.start(job, state)
    log(f"cell {cell.id} on {job.device}: {len(job.train)} train / {len(job.val)} val / "
        f"{len(job.test)} test images")
    for name, given in job.stage_inputs.items():
        log(f"stage {name} trains on the {given['input']}: {given['reason']}")
    run_stages(job, state, saved_stage, position, until_epoch)
    report, test_loss, scores = evaluate_best(job, state)
    metrics = cell_metrics(job, state, report, test_loss,
                           state.wall_time_s if written_again else time.perf_counter() - started)
    metrics["run"]["written_again"] = written_again
    if until_epoch is None:
        state.wall_time_s = metrics["wall_time_s"]  # kept in the finished last.pt
    write_outputs(job, state, metrics, scores, keep_resumable=until_epoch is not None)
    log(f"done: status {state.status}, test accuracy {metrics['test_accuracy']}, best epoch {state.best_epoch}")
    job.watch.end("done", metrics=metrics, status=state.status)
    return metrics


def record_failure(cell: Cell, out_dir: str | Path, error: BaseException) -> dict:
    """Write a failed cell's outputs: metrics.json with status `failed` and the error, an empty
    history.csv and a best.pt that says it holds no weights (so seeded cells fail clearly too)."""
    out_dir = Path(out_dir)
    message = f"{type(error).__name__}: {error}"
    save_torch({"failed": True, "cell": cell.id, "error": message}, out_dir / BEST_PT)
    write_history(out_dir / "history.csv", [])
    metrics = {"cell": cell.id, "status": "failed", "error": message, "versions": versions(),
               "config": json.loads(cell.to_json())}
    write_json(out_dir / "metrics.json", metrics)  # last, as for a finished cell
    return metrics


def end_line(metrics: dict) -> str:
    """A finished job's line on the run's console: its cell, status, best validation and test accuracy, time."""
    if metrics["status"] == "failed":
        return f"cell {metrics['cell']}: failed ({metrics['error'].splitlines()[0]})"
    seconds = int(round(metrics["wall_time_s"]))
    accuracy = {key: "n/a" if metrics[key] is None else f"{metrics[key]:.4f}"
                for key in ("best_val_accuracy", "test_accuracy")}
    return (f"cell {metrics['cell']}: {metrics['status']}, best val_accuracy {accuracy['best_val_accuracy']} "
            f"(epoch {metrics['best_epoch']}), test_accuracy {accuracy['test_accuracy']}, "
            + (f"{seconds // 60}m{seconds % 60:02d}s" if seconds >= 60 else f"{seconds}s")
            + (", written again without training" if metrics.get("run", {}).get("written_again") else ""))


def run_job(cell: Cell, manifest: str | Path, out_dir: str | Path, init: str | Path | None = None,
            threads: int = 1, log=print, until_epoch: int | None = None, watch: Watcher | None = None,
            stop: StopFlag | None = None, features: str | Path | None = None) -> int:
    """Train one cell as a job and return its exit status. Stop signals set a flag (`stop`, installed
    here if not given): a stopped run returns EXIT_STOPPED, and a retry resumes it. A CellError is recorded
    as a failed cell (status 0: the sweep goes on); any other exception (a bug, a missing file, the
    machine) propagates, among them a DamagedFileError when `init`, an upstream cell's best.pt, is not the
    file that cell wrote. `watch`: told how the job goes (`python -m workflow train` hands it its Watch)."""
    stop = stop or StopFlag().install()
    if init is not None:
        check_cell_file(init, always=True)
    watch = watch or Unwatched()
    try:
        metrics = train_cell(cell, manifest, out_dir, init=init, threads=threads, log=log, stop=stop,
                             until_epoch=until_epoch, watch=watch, features=features)
    except Stopped as stopped:  # not a result: the retry resumes from last.pt
        log(str(stopped))
        watch.end("stopped", signal=stopped.signal, epoch=stopped.epochs,
                  batch=stopped.position.batches if stopped.position else 0)
        return EXIT_STOPPED
    except CellError as error:  # the cell itself cannot train: record it, let the sweep go on
        traceback.print_exc()
        metrics = record_failure(cell, out_dir, error)
        log(f"done: status failed ({type(error).__name__}: {error})")
        watch.end("failed", error=f"{type(error).__name__}: {error}")
    except Exception as error:
        watch.end("failed", error=f"{type(error).__name__}: {error}")
        raise
    console_note(end_line(metrics))
    return 0
