"""Command line entry points the rules call: ``python -m workflow <command> ...``.

Every job is given the study file (`--configfile`: results/<study>/study.yaml, or a study YAML by hand) and
the key of what it works on (`--cell`, `--data-key`, `--probe`, `--rung`, `--round`, `--id`), and resolves
its settings from them (`sweep_of`): one way in for every job kind. Each command imports what it needs
when it runs, so that a training job never loads the results code (pandas, scipy).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from workflow.cli_common import log, study_arg, study_entry, sweep_of
from workflow.cli_export import add_export_commands
from workflow.cli_features import add_features_commands
from workflow.cli_rank import add_rank_commands
from workflow.cli_search import add_search_commands


def cmd_download(args) -> None:
    from workflow.data.download import download

    print(download(args.url, args.dest, md5=args.md5))


def cmd_plan(args) -> None:
    from workflow.atomic import write_json
    from workflow.data.plan import plan_notes
    from workflow.data.prepare import make_plan
    from workflow.integrity import console_note

    study = sweep_of(args).study
    name = study_entry(study.prepared_as, args.data_key)  # the first of the study's datasets defined so
    here = study.definition_here(name)
    plan = make_plan(name, here["spec"], here["raw_dir"], fingerprint=args.fingerprint)
    write_json(args.out, {**plan, **study.definitions[name]})  # files and folders as the data folder sees them
    write_json(args.definition, study.definitions[name])
    print(json.dumps({split: len(entry["indices"]) for split, entry in plan["splits"].items()}))
    for note in plan_notes(plan, args.out):
        console_note(note)


def cmd_shard(args) -> None:
    import torch

    from workflow.data.plan import skipped_note
    from workflow.data.prepare import write_shard
    from workflow.integrity import console_note
    from workflow.study.grid import definition_here

    torch.set_num_threads(args.threads)
    plan = json.loads(Path(args.plan).read_text())
    here = definition_here(plan, Path(args.plan).parents[1])  # the plan lies in <data_dir>/<key>/
    skipped = write_shard(plan, args.resolution, args.part, args.parts, args.out, log=log, here=here)
    if note := skipped_note(plan["dataset"], skipped, f"shard {args.part} of {args.parts} at r{args.resolution}, "
                                                      "listed in its manifest"):
        console_note(note)


def cmd_manifest(args) -> None:
    from workflow.data.prepare import write_manifest

    manifest = write_manifest(json.loads(Path(args.plan).read_text()), args.resolution, args.shards, args.out)
    print(json.dumps({"counts": manifest["counts"], "skipped": manifest["skipped_count"]}, indent=1))


def cmd_train(args) -> None:
    from workflow.train.signals import StopFlag

    stop = StopFlag().install()  # first: Ctrl-C while torch loads is no KeyboardInterrupt either
    from workflow.gpu.devices import cap_memory, claim_gpu
    from workflow.gpu.slots import SlotSettings, memory_fraction

    from workflow.study.study_file import job_tracking

    sweep = sweep_of(args)
    cell = study_entry(sweep.study.cell, args.cell)
    tracking = job_tracking(sweep.study, sweep.config.get("tracking"))
    slots = SlotSettings(per_gpu=args.slots_per_gpu, headroom=args.gpu_headroom)
    need = args.gpu_slots  # the job's gpu_slots resource: what the scheduler reserved for it
    if slots.per_gpu > 1:
        log(f"needs {need} of the {slots.per_gpu} slots of a GPU")
    gpu = claim_gpu(log=log, slots=need, slots_per_gpu=slots.per_gpu)  # before torch initialises CUDA
    if gpu is not None and need < slots.per_gpu:
        cap_memory(memory_fraction(need, slots), log=log)
    from workflow.testing import injected_faults
    from workflow.track.attempts import attempt_log
    from workflow.track.watch import Watch
    from workflow.train.cell import run_job

    until_epoch = getattr(args, "until_epoch", None)
    # injected faults: nothing unless a test sets TLSWEEP_INJECT_OOM_* or TLSWEEP_SIGNAL_AT_STEP
    with injected_faults(), attempt_log(args.out):  # the job folder's train.log: every attempt's lines
        watch = Watch(args.out, cell, tracking, log=log, until_epoch=until_epoch)  # progress.json, lines, tracking
        status = run_job(cell, args.manifest, args.out, init=args.init, threads=args.threads, log=log,
                         until_epoch=until_epoch, watch=watch, stop=stop, features=args.features)
    stop.uninstall()  # for a caller in the same process (tests)
    if status:  # stopped by a signal: a retry resumes it
        sys.exit(status)


def cmd_probe(args) -> None:
    from workflow.atomic import write_json
    from workflow.gpu.devices import claim_gpu
    from workflow.gpu.slots import probe_table

    specs = probe_table(sweep_of(args).study.cells.values())[1]
    if args.probe not in specs:
        sys.exit(f"error: no cell of the study is measured by probe {args.probe!r}")
    claim_gpu(log=log)  # the whole device, before torch initialises CUDA
    from workflow.gpu.probe import probe

    write_json(args.out, probe(specs[args.probe], steps=args.steps, log=log))


def cmd_train_rung(args) -> None:
    from workflow.sweep.halving import finish_rung, start_rung

    start_rung(args.out, args.previous, log=log)  # CPU only: CUDA is not touched before cmd_train claims a GPU
    cmd_train(args)
    finish_rung(args.out, args.rung, args.until_epoch, log=log)


def cmd_fetch_weights(args) -> None:
    from workflow.train.weights import fetch_any_weights

    print(fetch_any_weights(args.url, args.out, args.timm))


def cmd_aggregate(args) -> None:
    from workflow.results.publish import aggregate_study

    sweep = sweep_of(args)  # a bad study file exits here with a message
    aggregate_study(sweep.study, args.out_dir, selection=sweep.config.get("selection"), log=log)


def cmd_charts(args) -> None:
    import pandas as pd

    from workflow.results.charts import draw_charts
    from workflow.results.model_charts import model_charts
    from workflow.results.search_charts import search_charts
    from workflow.core import paths
    from workflow.study.outputs import study_charts
    from workflow.track.study_run import log_study_artifacts

    sweep = sweep_of(args)
    study = sweep.study
    names = study_charts(study)
    summary = pd.read_parquet(args.summary or paths.table_file(study.out, "summary", "parquet"))
    histories = pd.read_parquet(args.histories or paths.table_file(study.out, "histories", "parquet"))
    charts = Path(args.out_dir or paths.charts_folder(study.out))
    tables = Path(args.summary or paths.table_file(study.out, "summary", "parquet")).parent
    draw_charts(names, summary, histories, charts, study_charts={**search_charts(study), **model_charts(study, tables)})
    print(f"drew {', '.join(names) or 'no charts'}")
    log_study_artifacts(study, sweep.config.get("tracking"), {"charts": charts, "tables": tables})


def checked_study(args):
    """The study of --configfile, checked as the Snakefile checks it (`load_checked_study`); a refused one
    exits with its one line."""
    from workflow.sweep.decisions import load_checked_study

    try:
        return load_checked_study([args.configfile]).study
    except ValueError as error:  # StudyError, or a TPE round file that cannot be read
        sys.exit(f"error: {error}")


def cmd_cells(args) -> None:
    from workflow.sweep.progress import cell_table, study_summary

    study = checked_study(args)
    table = cell_table(study)
    if args.trainable:
        from workflow.train.trainable import trainable_column

        counts, assumed = trainable_column(study)
        table.insert(table.columns.get_loc("done") + 1, "trainable parameters", table["cell"].map(counts))
    from workflow.train.head_input import features_summary, input_notes

    inputs = table["cell"].map(lambda cell_id: features_summary(study.cell(cell_id)))
    table.insert(table.columns.get_loc("done") + 1, "stage inputs", inputs)
    print(table.to_string(index=False) + "\n" + "\n".join(input_notes(study.cells.values())) + "\n")
    for name in sorted(study.datasets):  # the folder its definition is prepared in (docs/own-data.md)
        print(f"data of {name}: {study.plan_path(name).parent}")
    print(study_summary(study, table))
    if study.sampling is not None:
        print(study.sampling.describe())
    if study.ranking is not None:  # `rank` (docs/ranking.md)
        print(study.ranking.describe(study.models_chosen))
    if args.trainable and assumed:
        print("trainable parameters of datasets not yet planned (an image folder) assume 2 classes")


def cmd_status(args) -> None:
    import time

    from workflow.track.status import FINISHED, format_status, status_table

    study = checked_study(args)
    while True:
        table = status_table(study)
        print(("\033[H\033[J" if args.watch else "") + format_status(study, table), flush=True)
        if not args.watch or table["state"].isin(FINISHED).all():
            return
        try:
            time.sleep(args.watch)
        except KeyboardInterrupt:  # the way to leave --watch
            return


def add_data_commands(sub) -> None:
    """download, plan, shard, manifest: a dataset from its source to the manifest training reads."""
    p = sub.add_parser("download", help="download one file, resuming, and check its md5")
    p.add_argument("--url", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--md5", help="the expected md5 (none: not checked)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("plan", help="check and list a dataset's source and assign its splits")
    study_arg(p)
    p.add_argument("--data-key", required=True, help="the prepared data's key: <source>-<digest of its definition> "
                                                     "(its folder under the data folder)")
    p.add_argument("--fingerprint", help="the digest of the user's files the dry run saw (checked)")
    p.add_argument("--out", required=True, help="the plan (JSON)")
    p.add_argument("--definition", required=True, help="the definition the key digests (JSON), beside the plan")
    p.set_defaults(func=cmd_plan)

    p = sub.add_parser("shard", help="decode, resize and write shard PART of PARTS of a planned dataset")
    p.add_argument("--plan", required=True)
    p.add_argument("--resolution", required=True, type=int)
    p.add_argument("--part", required=True, type=int)
    p.add_argument("--parts", required=True, type=int)
    p.add_argument("--out", required=True)
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_shard)

    p = sub.add_parser("manifest", help="check a dataset's shards and write the manifest that joins them")
    p.add_argument("--plan", required=True)
    p.add_argument("--resolution", required=True, type=int)
    p.add_argument("--shards", required=True, nargs="+", help="the shard files, in order")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_manifest)


def train_args(p: argparse.ArgumentParser, out: str) -> None:
    """What a training job takes: the cell, its data and weights, and its share of a GPU."""
    study_arg(p)
    p.add_argument("--cell", required=True, help="the cell's id in the study")
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest (or one shard file)")
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--init", help="checkpoint whose backbone starts the cell")
    p.add_argument("--features", help="the backbone's cached features its head stages train on (rule features)")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gpu-slots", type=int, default=1, help="slots of a GPU the job holds (its gpu_slots resource)")
    p.add_argument("--slots-per-gpu", type=int, default=1, help="slots per GPU: resources.slots_per_gpu (K)")
    p.add_argument("--gpu-headroom", type=float, default=0.9, help="share of a GPU's memory its slots split")


def add_training_commands(sub) -> None:
    """train, probe, fetch-weights: one cell's training and what it needs first."""
    p = sub.add_parser("train", help="train one cell")
    train_args(p, "the cell's folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("probe", help="measure the peak GPU memory of a few training steps of one combination")
    study_arg(p)
    p.add_argument("--probe", required=True, help="the probe's name (workflow.gpu.slots.probe_name)")
    p.add_argument("--out", required=True, help="the record (JSON)")
    p.add_argument("--steps", type=int, default=3, help="training steps before the evaluation pass")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("fetch-weights", help="download a torchvision weights file into torch's cache, or a timm "
                                             "model's into the Hugging Face cache")
    p.add_argument("--url", help="a torchvision weights file's URL (with --out)")
    p.add_argument("--out", help="the cached file: $TORCH_HOME/hub/checkpoints/<name in the URL>")
    p.add_argument("--timm", metavar="MODEL", help="a timm model, timm:<name>[.<tag>] (instead of --url, --out)")
    p.set_defaults(func=cmd_fetch_weights)


def add_halving_commands(sub) -> None:
    """train-rung: successive halving's training (rank-rung and finish-cell: workflow/cli_search.py)."""
    p = sub.add_parser("train-rung", help="train one grid cell to a rung's budget (successive halving), "
                                          "continuing from its previous rung")
    train_args(p, "the rung's folder: <cell folder>/rung-<k>")
    p.add_argument("--rung", required=True, type=int, help="the rung's index, from 0")
    p.add_argument("--until-epoch", required=True, type=int, help="the rung's budget: epochs, all stages together")
    p.add_argument("--previous", help="the previous rung's folder (its state.pt and best.pt); none for rung 0")
    p.set_defaults(func=cmd_train_rung)



def add_results_commands(sub) -> None:
    """aggregate, charts, cells: a study's tables, charts and progress."""
    p = sub.add_parser("aggregate", help="collect the cells' metrics into the study's tables (a cell without "
                                         "metrics.json counts as failed)")
    study_arg(p)
    p.add_argument("--out-dir", help="default: <results_dir>/<study>/tables")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("charts", help="draw the study's charts from its tables")
    study_arg(p)
    p.add_argument("--summary", help="default: <results_dir>/<study>/tables/summary.parquet")
    p.add_argument("--histories", help="default: <results_dir>/<study>/tables/histories.parquet")
    p.add_argument("--out-dir", help="default: <results_dir>/<study>/charts")
    p.set_defaults(func=cmd_charts)

    p = sub.add_parser("cells", help="list a study's cells and how far each got")
    study_arg(p, default="config.yaml")
    p.add_argument("--no-trainable", dest="trainable", action="store_false",
                   help="leave out each cell's trainable parameters per stage (counting them builds its model)")
    p.set_defaults(func=cmd_cells)

    p = sub.add_parser("status", help="where each cell stands (state, stage, epoch, speed, ETA), from its files")
    study_arg(p, default="config.yaml")
    p.add_argument("--watch", type=float, metavar="SECONDS", help="refresh every SECONDS until every cell is finished")
    p.set_defaults(func=cmd_status)


def parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per rule."""
    top = argparse.ArgumentParser(prog="python -m workflow", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    add_data_commands(sub)
    add_training_commands(sub)
    add_halving_commands(sub)
    add_search_commands(sub)  # workflow/cli_search.py
    add_results_commands(sub)
    add_export_commands(sub)  # workflow/cli_export.py
    add_features_commands(sub)  # workflow/cli_features.py
    add_rank_commands(sub)  # workflow/cli_rank.py
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.func(args)
    return 0


def run(argv: list[str] | None = None) -> int:
    """`python -m workflow`: main(), with the error that ends a job as one line on its log and on Snakemake's
    stderr ($TLSWEEP_ERROR_FD), naming the file it wrote (--out, --out-dir, --dest) when the error names none."""
    from workflow.data.download import ChecksumError, DownloadError
    from workflow.integrity import exit_status

    args = parser().parse_args(argv)
    where = next((value for value in (getattr(args, key, None) for key in ("out", "out_dir", "dest")) if value), None)
    return exit_status(lambda: args.func(args), where, expected=(DownloadError, ChecksumError))
