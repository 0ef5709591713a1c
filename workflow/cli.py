"""Command line entry points the rules call: ``python -m workflow <command> ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def log(message: str) -> None:
    print(message, flush=True)


def cmd_download(args) -> None:
    from workflow.data.download import download

    print(download(args.url, args.dest, md5=args.md5))


def cmd_plan(args) -> None:
    from workflow.atomic import write_json
    from workflow.data.prepare import make_plan

    plan = make_plan(args.dataset, json.loads(args.spec), args.raw_dir)
    write_json(args.out, plan)
    print(json.dumps({split: len(entry["indices"]) for split, entry in plan["splits"].items()}))


def cmd_shard(args) -> None:
    import torch

    from workflow.data.prepare import write_shard

    torch.set_num_threads(args.threads)
    plan = json.loads(Path(args.plan).read_text())
    write_shard(plan, args.resolution, args.part, args.parts, args.out, log=log)


def cmd_manifest(args) -> None:
    from workflow.data.prepare import write_manifest

    manifest = write_manifest(json.loads(Path(args.plan).read_text()), args.resolution, args.shards, args.out)
    print(json.dumps({"counts": manifest["counts"], "skipped": manifest["skipped_count"]}, indent=1))


def cmd_train(args) -> None:
    from workflow.gpu.devices import cap_memory, claim_gpu
    from workflow.gpu.slots import SlotSettings, memory_fraction

    cell = json.loads(args.cell)
    slots = SlotSettings(per_gpu=args.slots_per_gpu, headroom=args.gpu_headroom)
    need = args.gpu_slots  # the job's gpu_slots resource: what the scheduler reserved for it
    if slots.per_gpu > 1:
        log(f"needs {need} of the {slots.per_gpu} slots of a GPU")
    gpu = claim_gpu(log=log, slots=need, slots_per_gpu=slots.per_gpu)  # before torch initialises CUDA
    if gpu is not None and need < slots.per_gpu:
        cap_memory(memory_fraction(need, slots), log=log)
    from workflow.testing import injected_faults
    from workflow.train.cell import run_job

    with injected_faults():  # nothing unless a test sets TLSWEEP_INJECT_OOM_* or TLSWEEP_SIGNAL_AT_STEP
        status = run_job(cell, args.manifest, args.out, init=args.init, threads=args.threads, log=log,
                         until_epoch=getattr(args, "until_epoch", None))
    if status:  # stopped by a signal: a retry resumes it
        sys.exit(status)


def cmd_probe(args) -> None:
    from workflow.atomic import write_json
    from workflow.gpu.devices import claim_gpu

    claim_gpu(log=log)  # the whole device, before torch initialises CUDA
    from workflow.gpu.probe import probe

    write_json(args.out, probe(json.loads(args.spec), steps=args.steps, log=log))


def cmd_train_rung(args) -> None:
    from workflow.sweep.halving import finish_rung, start_rung

    start_rung(args.out, args.previous, log=log)  # CPU only: CUDA is not touched before cmd_train claims a GPU
    cmd_train(args)
    finish_rung(args.out, args.rung, args.until_epoch, log=log)


def cmd_rank_rung(args) -> None:
    from workflow.atomic import write_json
    from workflow.study.search import Halving
    from workflow.sweep.halving import rank_rung

    ranking = rank_rung(args.metrics, Halving.from_dict(json.loads(args.search)), args.rung)
    write_json(args.out, ranking)
    for entry in ranking["cells"]:
        print(f"{entry['rank']:>3}/{entry['of']:<3} {'goes on ' if entry['survives'] else 'pruned  '}"
              f"{entry['value']!s:>22} {entry['status']:>8}  {entry['cell']}")


def cmd_finish_cell(args) -> None:
    from workflow.study.search import Halving
    from workflow.sweep.halving import finish_cell

    metrics = finish_cell(args.cell, args.rankings, args.out, Halving.from_dict(json.loads(args.search)))
    print(f"{args.cell}: stopped at rung {metrics['rung']} ({metrics['budget_epochs']} epochs), "
          f"{'pruned' if metrics['pruned'] else 'a finalist'}")


def cmd_fetch_weights(args) -> None:
    from workflow.train.weights import fetch_weights

    print(fetch_weights(args.url, args.out))


def load_study(args):
    """The study of `--config` (JSON the rules pass, validated by the Snakefile) or `--configfile` (YAML)."""
    from workflow.study.config import load_config
    from workflow.study.grid import build_study

    try:
        return build_study(json.loads(args.config) if args.config else load_config(args.configfile))
    except ValueError as error:  # a bad study file: a message naming the key, not a traceback
        sys.exit(f"error: {error}")


def cmd_aggregate(args) -> None:
    from workflow.results.publish import aggregate_study
    from workflow.study.config import load_config

    study = load_study(args)  # a bad config exits here with a message
    config = json.loads(args.config) if args.config else load_config(args.configfile)
    aggregate_study(study, args.out_dir, selection=config.get("selection"), log=log)


def cmd_charts(args) -> None:
    import pandas as pd

    from workflow.results.charts import draw_charts
    from workflow.study import paths
    from workflow.study.outputs import study_charts

    study = load_study(args)
    names = study_charts(study)
    summary = pd.read_parquet(args.summary or paths.table_file(study.out, "summary", "parquet"))
    histories = pd.read_parquet(args.histories or paths.table_file(study.out, "histories", "parquet"))
    draw_charts(names, summary, histories, Path(args.out_dir or paths.charts_folder(study.out)))
    print(f"drew {', '.join(names) or 'no charts'}")


def cmd_cells(args) -> None:
    from workflow.sweep.progress import cell_table, study_summary

    study = load_study(args)
    table = cell_table(study)
    if args.trainable:
        from workflow.train.trainable import trainable_column

        counts, assumed = trainable_column(study)
        table.insert(table.columns.get_loc("done") + 1, "trainable parameters", table["cell"].map(counts))
    print(table.to_string(index=False))
    print(f"\n{study_summary(study, table)}")
    if args.trainable and assumed:
        print("trainable parameters of datasets not yet planned (an image folder) assume 2 classes")


def study_args(p: argparse.ArgumentParser) -> None:
    """--config or --configfile: the study a results command works on."""
    group = p.add_mutually_exclusive_group(required=True)
    group.add_argument("--config", help="the validated study config as JSON (what the rules pass)")
    group.add_argument("--configfile", help="a study YAML file, e.g. studies/digits-demo.yaml")


def add_data_commands(sub) -> None:
    """download, plan, shard, manifest: a dataset from its source to the manifest training reads."""
    p = sub.add_parser("download", help="download one file, resuming, and check its md5")
    p.add_argument("--url", required=True)
    p.add_argument("--dest", required=True)
    p.add_argument("--md5", help="the expected md5 (none: not checked)")
    p.set_defaults(func=cmd_download)

    p = sub.add_parser("plan", help="check and list a dataset's source and assign its splits")
    p.add_argument("--dataset", required=True, help="dataset name in the study config")
    p.add_argument("--spec", required=True, help="the dataset's config entry as JSON")
    p.add_argument("--raw-dir", help="the folder holding the source's files")
    p.add_argument("--out", required=True, help="the plan (JSON)")
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
    p.add_argument("--cell", required=True, help="the resolved cell as JSON (workflow.study.grid.Cell.to_dict)")
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest (or one shard file)")
    p.add_argument("--out", required=True, help=out)
    p.add_argument("--init", help="checkpoint whose backbone starts the cell")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--gpu-slots", type=int, default=1, help="slots of a GPU the job holds (its gpu_slots resource)")
    p.add_argument("--slots-per-gpu", type=int, default=1, help="slots per GPU: resources.gpu_slots (K)")
    p.add_argument("--gpu-headroom", type=float, default=0.9, help="share of a GPU's memory its slots split")


def add_training_commands(sub) -> None:
    """train, probe, fetch-weights: one cell's training and what it needs first."""
    p = sub.add_parser("train", help="train one cell")
    train_args(p, "the cell's folder")
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("probe", help="measure the peak GPU memory of a few training steps of one combination")
    p.add_argument("--spec", required=True, help="what to probe as JSON (workflow.gpu.slots.probe_spec)")
    p.add_argument("--out", required=True, help="the record (JSON)")
    p.add_argument("--steps", type=int, default=3, help="training steps before the evaluation pass")
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("fetch-weights", help="download a torchvision weights file into torch's cache")
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True, help="the cached file: $TORCH_HOME/hub/checkpoints/<name in the URL>")
    p.set_defaults(func=cmd_fetch_weights)


def add_halving_commands(sub) -> None:
    """train-rung, rank-rung, finish-cell: successive halving."""
    halving = "the study's halving settings as JSON (workflow.study.search.Halving)"
    p = sub.add_parser("train-rung", help="train one grid cell to a rung's budget (successive halving), "
                                          "continuing from its previous rung")
    train_args(p, "the rung's folder: <cell folder>/rung-<k>")
    p.add_argument("--rung", required=True, type=int, help="the rung's index, from 0")
    p.add_argument("--until-epoch", required=True, type=int, help="the rung's budget: epochs, all stages together")
    p.add_argument("--previous", help="the previous rung's folder (its state.pt and best.pt); none for rung 0")
    p.set_defaults(func=cmd_train_rung)

    p = sub.add_parser("rank-rung", help="rank the cells that reached a rung; the best go on (successive halving)")
    p.add_argument("--rung", required=True, type=int)
    p.add_argument("--search", required=True, help=halving)
    p.add_argument("--metrics", required=True, nargs="+", help="the rung's metrics.json of every cell that reached it")
    p.add_argument("--out", required=True, help="the ranking (JSON)")
    p.set_defaults(func=cmd_rank_rung)

    p = sub.add_parser("finish-cell", help="a halved grid cell's results: those of the rung where it stopped")
    p.add_argument("--cell", required=True, help="the cell's id")
    p.add_argument("--search", required=True, help=halving)
    p.add_argument("--rankings", required=True, help="the folder of the rankings: rung-<k>.json")
    p.add_argument("--out", required=True, help="the cell's folder (holding its rung-<k> folders)")
    p.set_defaults(func=cmd_finish_cell)


def add_results_commands(sub) -> None:
    """aggregate, charts, cells: a study's tables, charts and progress."""
    p = sub.add_parser("aggregate", help="collect the cells' metrics into the study's tables (a cell without "
                                         "metrics.json counts as failed)")
    study_args(p)
    p.add_argument("--out-dir", help="default: <results_dir>/<study>/tables")
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("charts", help="draw the study's charts from its tables")
    study_args(p)
    p.add_argument("--summary", help="default: <results_dir>/<study>/tables/summary.parquet")
    p.add_argument("--histories", help="default: <results_dir>/<study>/tables/histories.parquet")
    p.add_argument("--out-dir", help="default: <results_dir>/<study>/charts")
    p.set_defaults(func=cmd_charts)

    p = sub.add_parser("cells", help="list a study's cells and how far each got")
    p.add_argument("--configfile", default="config.yaml", help="the study config (default: config.yaml)")
    p.add_argument("--no-trainable", dest="trainable", action="store_false",
                   help="leave out each cell's trainable parameters per stage (counting them builds its model)")
    p.set_defaults(func=cmd_cells, config=None)


def parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per rule."""
    top = argparse.ArgumentParser(prog="python -m workflow", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)
    add_data_commands(sub)
    add_training_commands(sub)
    add_halving_commands(sub)
    add_results_commands(sub)
    add_export_commands(sub)
    return top


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    args.func(args)
    return 0



def cmd_export(args) -> None:
    """`export`: one checkpoint into an export folder; `export-index`: which cells a study exports."""
    if args.command == "export-index":
        from workflow.export.plan import write_export_index

        plan = write_export_index(args.tables, args.out, cells=args.cells)
        print("\n".join(f"{entry['id']}: {entry['cell']}" for entry in plan) or "nothing to export")
        return
    from workflow.export.export import export_model

    export_model(args.model, args.out, formats=args.formats, chosen=json.loads(args.chosen) if args.chosen else None,
                 log=log)


def cmd_predict(args) -> None:
    from workflow.export.predict import predict_images

    try:
        predict_images(args.model, args.images, args.out, top_k=args.top_k, batch_size=args.batch_size,
                       device=args.device, log=log)
    except ValueError as error:  # a wrong model or input (CheckpointError is one): a message, not a traceback
        sys.exit(f"error: {error}")


def add_export_commands(sub) -> None:
    """The `export`, `export-index` and `predict` sub-commands."""
    p = sub.add_parser("export", help="export a cell's best.pt as TorchScript and ONNX with preprocess.json")
    p.add_argument("--model", required=True, help="the cell's checkpoint (best.pt)")
    p.add_argument("--out", required=True, help="the export folder")
    p.add_argument("--formats", nargs="+", default=["torchscript", "onnx"], choices=["torchscript", "onnx"])
    p.add_argument("--chosen", help="what the configuration was chosen on, as JSON (an entry of the export index)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-index", help="list the cells a study exports, from its best and summary tables")
    p.add_argument("--tables", required=True, help="the study's tables folder (best.parquet, summary.parquet)")
    p.add_argument("--cells", choices=["best", "all"], default="best",
                   help="best: the best table's recommended cells; all: every ok grid cell")
    p.add_argument("--out", required=True, help="the index (JSON)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("predict", help="classify images with an export folder or a cell's best.pt")
    p.add_argument("--model", required=True, help="an export folder or a cell's best.pt")
    p.add_argument("images", help="a folder of images (searched recursively) or a CSV file of image paths")
    p.add_argument("--out", required=True, help="the predictions (CSV)")
    p.add_argument("--top-k", type=int, default=5, help="classes per image, most probable first (default 5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one)")
    p.set_defaults(func=cmd_predict)
