# Ranking the candidate models from their cached features (`rank`, docs/ranking.md, workflow/results/ranking.py):
# each candidate (dataset, model, resolution, starting weights) is scored by LogME and a linear probe from its
# features (rules/features.smk) into the `models` table. With `rank.keep`, a checkpoint chooses the best models
# and only theirs enter the grid (rank-then-tune, workflow/sweep/model_choice.py).
if RANKING:
    print(RANKING.describe(STUDY.models_chosen), file=sys.stderr)

    rule rank_model:
        """Score one candidate model from its features: LogME of the train split, and a linear probe whose
        regularisation is chosen on validation and whose test accuracy is reported with a Wilson interval."""
        input:
            unpack(get_rank_model_inputs),
        output:
            paths.score_file(OUT, "{candidate}"),
        wildcard_constraints:
            candidate=CELL_ID,
        params:
            features=get_scored_features_arg,
        log:
            paths.log_file(OUT, "rank_model", "{candidate}"),
        threads: 1
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 python -m workflow rank-model {params.features} --out {output:q}"
            " 3>&2 > {log:q} 2>&1"


if RANKING and RANKING.keep:

    localrules:
        choose_models,

    checkpoint choose_models:
        """Choose the best rank.keep models of each dataset, resolution and weights by rank.by: theirs are
        the grid's cells."""
        input:
            score_files,
        output:
            choice_path(OUT, RANKING),
        params:
            study=get_study_file,
        log:
            paths.log_file(OUT, "choose_models"),
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 python -m workflow choose-models --configfile {params.study:q} --out {output:q}"
            " 3>&2 > {log:q} 2>&1"
