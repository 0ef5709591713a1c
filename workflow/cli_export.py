"""The export commands: ``python -m workflow export | export-index | predict``."""

from __future__ import annotations

import functools
import sys

log = functools.partial(print, flush=True)  # as workflow.cli's log: this module imports nothing of cli


def cmd_export(args) -> None:
    """`export`: one checkpoint into an export folder; `export-index`: which cells a study exports."""
    if args.command == "export-index":
        from workflow.export.plan import write_export_index

        plan = write_export_index(args.tables, args.out, cells=args.cells)
        print("\n".join(f"{entry['id']}: {entry['cell']}" for entry in plan) or "nothing to export")
        return
    from workflow.export.export import export_model

    chosen = None
    if args.index:  # what the configuration was chosen on: its entry in the export index
        from workflow.export.plan import read_export_index

        entry = read_export_index(args.index).get(args.id)
        if entry is None:
            sys.exit(f"error: {args.index} has no entry {args.id!r}")
        chosen = entry["chosen"]
    export_model(args.model, args.out, formats=args.formats, chosen=chosen, log=log)


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
    p.add_argument("--index", help="the study's export index, whose entry --id says what the model was chosen on")
    p.add_argument("--id", help="the export folder's id in --index")
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
