"""Command line entry points the rules call: ``python -m workflow <command> ...``."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_download(args) -> None:
    from workflow.download import download

    print(download(args.url, args.dest, md5=args.md5))


def cmd_plan(args) -> None:
    from workflow.atomic import write_json
    from workflow.prepare import make_plan

    plan = make_plan(args.dataset, json.loads(args.spec), args.raw_dir)
    write_json(args.out, plan)
    print(json.dumps({split: len(entry["indices"]) for split, entry in plan["splits"].items()}))


def cmd_shard(args) -> None:
    import torch

    from workflow.prepare import write_shard

    torch.set_num_threads(args.threads)
    plan = json.loads(Path(args.plan).read_text())
    write_shard(plan, args.resolution, args.part, args.parts, args.out, log=lambda m: print(m, flush=True))


def cmd_index(args) -> None:
    from workflow.prepare import write_index

    manifest = write_index(json.loads(Path(args.plan).read_text()), args.resolution, args.shards, args.out)
    print(json.dumps({"counts": manifest["counts"], "skipped": manifest["skipped_count"]}, indent=1))


def cmd_train(args) -> None:
    from workflow.training import train_cell

    def log(message: str) -> None:
        print(message, flush=True)

    train_cell(json.loads(args.cell), args.shard, args.out, init=args.init, threads=args.threads, log=log)


def cmd_aggregate(args) -> None:
    from workflow.aggregate import collect, write_csv

    summary, histories = collect(args.metrics)
    write_csv(summary, args.summary)
    write_csv(histories, args.histories)
    print(summary.to_string(index=False))


def cmd_charts(args) -> None:
    import pandas as pd

    from workflow.charts import save_chart, test_accuracy_bars, validation_curves

    summary = pd.read_csv(args.summary)
    histories = pd.read_csv(args.histories)
    save_chart(validation_curves(histories), args.out_dir + "/val_accuracy.html", args.out_dir + "/val_accuracy.png")
    save_chart(test_accuracy_bars(summary), args.out_dir + "/test_accuracy.html", args.out_dir + "/test_accuracy.png")


def parser() -> argparse.ArgumentParser:
    """The argument parser: one sub-command per rule."""
    top = argparse.ArgumentParser(prog="python -m workflow", description=__doc__)
    sub = top.add_subparsers(dest="command", required=True)

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

    p = sub.add_parser("index", help="check a dataset's shards and write the manifest that joins them")
    p.add_argument("--plan", required=True)
    p.add_argument("--resolution", required=True, type=int)
    p.add_argument("--shards", required=True, nargs="+", help="the shard files, in order")
    p.add_argument("--out", required=True)
    p.set_defaults(func=cmd_index)

    p = sub.add_parser("train", help="train one cell")
    p.add_argument("--cell", required=True, help="the resolved cell as JSON (workflow.study.Cell.to_dict)")
    p.add_argument("--shard", required=True, help="the prepared dataset: its index JSON or one shard file")
    p.add_argument("--out", required=True, help="the cell's folder")
    p.add_argument("--init", help="checkpoint whose backbone starts the cell")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("aggregate", help="collect cells' metrics into tables")
    p.add_argument("--metrics", nargs="+", required=True)
    p.add_argument("--summary", required=True)
    p.add_argument("--histories", required=True)
    p.set_defaults(func=cmd_aggregate)

    p = sub.add_parser("charts", help="draw the study's charts")
    p.add_argument("--summary", required=True)
    p.add_argument("--histories", required=True)
    p.add_argument("--out-dir", required=True)
    p.set_defaults(func=cmd_charts)
    return top


def main(argv: list[str] | None = None) -> None:
    args = parser().parse_args(argv)
    args.func(args)


if __name__ == "__main__":
    sys.exit(main())
