# A TPE search (`search: {method: tpe}`, workflow/sweep/tpe.py): round 0's cells are drawn at random;
# a checkpoint rule asks Optuna for each later round given every finished cell before it, and the round's
# cells train as ordinary grid cells (rule train). Optuna's journal and the rounds are under search/.
if TPE:
    print(TPE.describe(), file=sys.stderr)

    localrules:
        tpe_round,

    checkpoint tpe_round:
        """Ask Optuna's TPE sampler for one round's configurations per combination of the grid's axes,
        telling it every finished cell of the rounds before it (failed, out of memory or diverged ones
        as failures)."""
        input:
            metrics=get_tpe_round_inputs,
        output:
            paths.round_file(paths.search_folder(OUT), "{round}"),
        wildcard_constraints:
            round=r"[1-9]\d*",
        params:
            study=get_study_file,
            config=json.dumps(config),  # not on the command line: a changed study re-chooses (params trigger)
        log:
            paths.log_file(OUT, "tpe_round", "round-{round}"),
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 python -m workflow tpe-round --configfile {params.study:q} --round {wildcards.round} --out {output:q}"
            " 3>&2 > {log:q} 2>&1"
