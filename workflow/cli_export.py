"""The export commands: ``python -m workflow export | export-index | predict``."""

from __future__ import annotations

import sys

from workflow.cli_common import log, study_arg, sweep_of
from workflow.core import paths


def cmd_export_index(args) -> None:
    """`export-index`: which cells a study exports, from its tables."""
    from workflow.export.index import export_settings, write_export_index

    sweep = sweep_of(args)
    tables = paths.tables_folder(sweep.study.out)
    plan = write_export_index(tables, args.out, cells=export_settings(sweep.config)["cells"])
    print("\n".join(f"{entry['id']}: {entry['cell']}" for entry in plan) or "nothing to export")


def cmd_export(args) -> None:
    """`export`: one checkpoint into an export folder: a study's export (--configfile and --id: the index
    says which cell, and what it was chosen on) or any best.pt (--model, --out)."""
    from workflow.export.export import export_model

    if args.configfile is None:
        if args.model is None or args.out is None:
            sys.exit("error: export needs --model and --out, or --configfile and --id")
        export_model(args.model, args.out, formats=args.formats, chosen=None, log=log)
        return
    from workflow.export.index import export_settings, read_export_index

    sweep = sweep_of(args)
    index = paths.export_index_file(sweep.study.out)
    try:
        entry = read_export_index(index).get(args.id)
    except ValueError as error:  # a damaged index
        sys.exit(f"error: {error}")
    if entry is None:
        sys.exit(f"error: {index} has no entry {args.id!r}")
    model = paths.cell_outputs(sweep.study.cell_dir(entry["cell"]))["checkpoint"]
    export_model(model, paths.export_folder(sweep.study.out, args.id), formats=export_settings(sweep.config)["formats"],
                 chosen=entry["chosen"], log=log)


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
    p.add_argument("--configfile", help="the study file: export the index's entry --id into its export folder")
    p.add_argument("--id", help="the export folder's id in the study's export index")
    p.add_argument("--model", help="without --configfile: any cell's checkpoint (best.pt)")
    p.add_argument("--out", help="without --configfile: the export folder")
    p.add_argument("--formats", nargs="+", default=["torchscript", "onnx"], choices=["torchscript", "onnx"],
                   help="without --configfile (a study says its own)")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser("export-index", help="list the cells a study exports, from its best and summary tables")
    study_arg(p)
    p.add_argument("--out", required=True, help="the index (JSON)")
    p.set_defaults(func=cmd_export_index)

    p = sub.add_parser("predict", help="classify images with an export folder or a cell's best.pt")
    p.add_argument("--model", required=True, help="an export folder or a cell's best.pt")
    p.add_argument("images", help="a folder of images (searched recursively) or a CSV file of image paths")
    p.add_argument("--out", required=True, help="the predictions (CSV)")
    p.add_argument("--top-k", type=int, default=5, help="classes per image, most probable first (default 5)")
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--device", help="cpu, cuda or cuda:N (default: the GPU when there is one)")
    p.set_defaults(func=cmd_predict)
