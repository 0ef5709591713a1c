"""`python -m workflow` commands of a search beyond training every cell: successive halving's rankings and a
halved cell's results, a TPE search's rounds."""

from __future__ import annotations

from workflow.cli_common import log, study_arg, study_entry, sweep_of


def cmd_rank_rung(args) -> None:
    from workflow.atomic import write_json
    from workflow.sweep.halving import rank_rung

    ranking = rank_rung(args.metrics, sweep_of(args).study.halving, args.rung)
    write_json(args.out, ranking)
    for entry in ranking["cells"]:
        print(f"{entry['rank']:>3}/{entry['of']:<3} {'goes on ' if entry['survives'] else 'pruned  '}"
              f"{entry['value']!s:>22} {entry['status']:>8}  {entry['cell']}")


def cmd_finish_cell(args) -> None:
    from workflow.sweep.halving import finish_cell

    study = sweep_of(args).study
    study_entry(study.cell, args.cell)
    rankings = study.rankings_dir(study.halving_round(args.cell))
    metrics = finish_cell(args.cell, rankings, args.out, study.halving)
    print(f"{args.cell}: stopped at rung {metrics['rung']} ({metrics['budget_epochs']} epochs), "
          f"{'pruned' if metrics['pruned'] else 'a finalist'}")


def cmd_tpe_round(args) -> None:
    from workflow.atomic import write_json
    from workflow.sweep.tpe import choose_round

    write_json(args.out, choose_round(sweep_of(args).study, args.round, log=log))


def add_search_commands(sub) -> None:
    """rank-rung, finish-cell: successive halving; tpe-round: a TPE search's next round."""
    p = sub.add_parser("rank-rung", help="rank the cells that reached a rung; the best go on (successive halving)")
    study_arg(p)
    p.add_argument("--rung", required=True, type=int)
    p.add_argument("--metrics", required=True, nargs="+", help="the rung's metrics.json of every cell that reached it")
    p.add_argument("--out", required=True, help="the ranking (JSON)")
    p.set_defaults(func=cmd_rank_rung)

    p = sub.add_parser("finish-cell", help="a halved grid cell's results: those of the rung where it stopped")
    study_arg(p)
    p.add_argument("--cell", required=True, help="the cell's id")
    p.add_argument("--out", required=True, help="the cell's folder (holding its rung-<k> folders)")
    p.set_defaults(func=cmd_finish_cell)

    p = sub.add_parser("tpe-round", help="ask Optuna's TPE sampler for a round's configurations, given every "
                                         "finished cell of the rounds before it")
    study_arg(p)
    p.add_argument("--round", required=True, type=int, help="the round, from 1 (round 0 is drawn at random)")
    p.add_argument("--out", required=True, help="the round's file: results/<study>/search/round-<r>.json")
    p.set_defaults(func=cmd_tpe_round)
