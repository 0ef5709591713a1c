"""The cached-features commands: ``python -m workflow features | pretrain-tag`` (docs/training.md, "Head
stages from cached features")."""

from __future__ import annotations

import sys

from workflow.cli_common import log, study_arg, study_entry, sweep_of


def cmd_features(args) -> None:
    """`features`: a backbone's pooled features (or what a head of layers pools) of a prepared dataset's splits,
    for every cell sharing them."""
    from workflow.gpu.devices import claim_gpu
    from workflow.train.head_input import features_source

    study = sweep_of(args).study
    scored = {cell.id: cell for cell in study.candidate_cells}  # `rank`: a candidate model's, chosen or not
    cell = scored.get(args.cell) or study_entry(study.cell, args.cell)
    if not features_source(cell, ranked=cell.id in scored):
        sys.exit(f"error: cell {cell.id} reads no cached features (its 'own' head, or weights drawn by seed or "
                 f"read from a file)")
    claim_gpu(log=log)  # before torch initialises CUDA
    from workflow.train.features import compute_features

    record = compute_features(cell, args.manifest, args.out, init=args.init, threads=args.threads, log=log)
    log(f"{args.out}: {record['counts']} images, {record['dim']} features ({record['pooling']}) in "
        f"{record['precision']}, {record['seconds']:.1f} s ({record['images_per_s']:.0f} images/s on {record['device']})")


def cmd_pretrain_tag(args) -> None:
    """`pretrain-tag`: the features' weights tag of a pretrain cell's best.pt (by its SHA-256)."""
    from workflow.atomic import write_json
    from workflow.core.cell import PRETRAIN_PREFIX
    from workflow.core.paths import features_weights_tag
    from workflow.integrity import sha256_of

    digest = sha256_of(args.checkpoint)
    write_json(args.out, {"checkpoint": args.checkpoint, "sha256": digest,
                          "weights_tag": features_weights_tag("", PRETRAIN_PREFIX, digest)})


def add_features_commands(sub) -> None:
    p = sub.add_parser("features", help="compute a backbone's features of a dataset's splits once (the input of "
                                        "the new head), for the head stages of the cells that share them")
    study_arg(p)
    p.add_argument("--cell", required=True, help="a cell that trains on these features (model, weights, precision)")
    p.add_argument("--manifest", required=True, help="the prepared dataset's manifest")
    p.add_argument("--init", help="the checkpoint the backbone starts from (a pretrain cell's best.pt)")
    p.add_argument("--out", required=True, help="the features file (HDF5); its record (.json) is written last")
    p.add_argument("--threads", type=int, default=1)
    p.set_defaults(func=cmd_features)

    p = sub.add_parser("pretrain-tag", help="the features' tag of a pretrain cell's best.pt (by its SHA-256)")
    p.add_argument("--checkpoint", required=True, help="the pretrain cell's best.pt")
    p.add_argument("--out", required=True, help="the tag's record (JSON)")
    p.set_defaults(func=cmd_pretrain_tag)
