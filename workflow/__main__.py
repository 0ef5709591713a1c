"""Command line entry points the rules call: ``python -m workflow <command> ...``."""

from __future__ import annotations

import argparse
import json
import sys


def cmd_prepare(args) -> None:
    from workflow.prepare import prepare_dataset

    manifest = prepare_dataset(args.dataset, json.loads(args.spec), args.resolution, args.shard, args.manifest)
    print(json.dumps(manifest["counts"], indent=1))


def cmd_train(args) -> None:
    from workflow.training import train_cell

    def log(message: str) -> None:
        print(message, flush=True)

    train_cell(json.loads(args.cell), args.shard, args.out, init=args.init, threads=args.threads, log=log)


def cmd_fetch_weights(args) -> None:
    from workflow.weights import fetch_weights

    print(fetch_weights(args.url, args.out))


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

    p = sub.add_parser("prepare", help="resize a dataset once and write its HDF5 shard and manifest")
    p.add_argument("--dataset", required=True, help="dataset name in the study config")
    p.add_argument("--spec", required=True, help="the dataset's config entry as JSON")
    p.add_argument("--resolution", required=True, type=int)
    p.add_argument("--shard", required=True)
    p.add_argument("--manifest", required=True)
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train one cell")
    p.add_argument("--cell", required=True, help="the resolved cell as JSON (workflow.study.Cell.to_dict)")
    p.add_argument("--shard", required=True, help="the prepared dataset")
    p.add_argument("--out", required=True, help="the cell's folder")
    p.add_argument("--init", help="checkpoint whose backbone starts the cell")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("fetch-weights", help="download a torchvision weights file into torch's cache")
    p.add_argument("--url", required=True)
    p.add_argument("--out", required=True, help="the cached file: $TORCH_HOME/hub/checkpoints/<name in the URL>")
    p.set_defaults(func=cmd_fetch_weights)

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
