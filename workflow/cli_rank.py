"""The ranking commands (study key `rank`, rules/rank.smk): score one candidate's features, and choose the
models that enter the grid (rank-then-tune)."""

from __future__ import annotations

from workflow.cli_common import log, study_arg, sweep_of


def cmd_rank_model(args) -> None:
    from workflow.atomic import write_json
    from workflow.data.features import read_features, read_record
    from workflow.results.ranking import score_splits

    scores = score_splits(read_features(args.features))  # a damaged file: one line naming it
    scores["features"] = {key: value for key, value in read_record(args.features).items() if key != "sha256"}
    write_json(args.out, scores)
    log(f"{args.features}: LogME {scores['logme']:.4f}, linear probe val {scores['probe']['val_accuracy']:.4f} "
        f"test {scores['probe']['test_accuracy']:.4f} (C {scores['probe']['c']:g})")


def cmd_choose_models(args) -> None:
    from workflow.atomic import write_json
    from workflow.sweep.model_choice import choose_models

    study = sweep_of(args).study
    if study.ranking is None or study.ranking.keep is None:
        raise SystemExit(f"error: study {study.name!r} sets no rank.keep: there is nothing to choose")
    write_json(args.out, choose_models(study, log=log))


def add_rank_commands(sub) -> None:
    """rank-model, choose-models: candidate models ranked from their features (docs/ranking.md)."""
    p = sub.add_parser("rank-model", help="score one candidate's features: LogME and a linear probe")
    p.add_argument("--features", required=True, help="the features file (HDF5, its record beside it)")
    p.add_argument("--out", required=True, help="the scores: results/<study>/rank/<candidate>.json")
    p.set_defaults(func=cmd_rank_model)

    p = sub.add_parser("choose-models", help="rank-then-tune: the best rank.keep models of each dataset, "
                                             "resolution and weights, from their scores")
    study_arg(p)
    p.add_argument("--out", required=True, help="the choice: results/<study>/rank/chosen-*.json")
    p.set_defaults(func=cmd_choose_models)
