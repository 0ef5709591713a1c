# Successive halving (`search: halving`, workflow/sweep/halving.py): every grid cell trains to the first
# rung's budget; a checkpoint rule ranks the cells that reached a rung, and only the survivors train
# on to the next rung, each from its own previous rung's state. A rung's training job reads no ranking:
# re-ranking (e.g. after a cell is added) never makes Snakemake retrain a rung that is done.
if HALVING:

    localrules:
        rank_rung,
        finish_cell,

    rule train_rung:
        """Train one grid cell to a rung's budget (epochs, all stages together), continuing from its
        previous rung's state; a cell that stopped early or finished its stages carries over."""
        input:
            unpack(get_rung_inputs),
        output:
            **paths.rung_outputs(paths.rung_folder(paths.cell_folder(OUT, paths.GRID, "{cell}"), "{rung}")),
        params:
            study=get_study_file,
            cell=get_cell_json,  # not on the command line: a changed cell config re-runs the job (params trigger)
            init=get_init_arg,
            features=get_features_arg,
            slots=SLOT_ARGS,
            budget=lambda wildcards: HALVING.budget(int(wildcards.rung)),
            previous=get_previous_arg,
            out=lambda wildcards, output: os.path.dirname(output.metrics),
        log:
            paths.rung_log(OUT, "{cell}", "{rung}"),
        benchmark:
            paths.benchmark_file(OUT, "train", paths.rung_folder("{cell}", "{rung}"))
        threads: RES["train_threads"]
        resources:
            gpu=RES["train_gpus"],
            gpu_slots=get_gpu_slots,
            mem_mb=RES["train_mem_mb"],
            runtime=get_train_runtime,
            slurm_extra=TRAIN_SLURM_EXTRA,  # as rule train_upstream
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 exec python -m workflow train-rung --configfile {params.study:q} --cell {wildcards.cell}"
            " --manifest {input.manifest:q} {params.init} {params.features}"
            " --gpu-slots {resources.gpu_slots} {params.slots} --rung {wildcards.rung} --until-epoch {params.budget}"
            " {params.previous} --out {params.out:q} --threads {threads} 3>&2 > {log:q} 2>&1"

    checkpoint rank_rung:
        """Rank the cells that reached a rung by their validation metric within their group (in a TPE
        search, those of one round); the best share goes on to the next rung. Ties go to the cell id
        that sorts first."""
        input:
            unpack(get_rank_inputs),
        output:
            paths.ranking_file(RANKINGS, "{rung}"),
        params:
            study=get_study_file,
            halving=json.dumps(HALVING.to_dict()),  # not on the command line: changed settings re-rank (params trigger)
        log:
            paths.log_file(OUT, "rank_rung", *(["round-{round}"] if TPE else []), paths.rung_name("{rung}")),
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 python -m workflow rank-rung --configfile {params.study:q} --rung {wildcards.rung}"
            " --metrics {input.metrics:q} --out {output:q} 3>&2 > {log:q} 2>&1"

    rule finish_cell:
        """A halved grid cell's results: the metrics, history and best checkpoint of the rung where it
        stopped, with that rung and whether it was pruned."""
        input:
            unpack(get_finish_inputs),
        output:
            **paths.cell_outputs(paths.cell_folder(OUT, paths.GRID, "{cell}")),
        params:
            study=get_study_file,
            halving=json.dumps(HALVING.to_dict()),  # as rank_rung
            out=lambda wildcards, output: os.path.dirname(output.metrics),
        log:
            paths.log_file(OUT, "finish_cell", "{cell}"),
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 python -m workflow finish-cell --configfile {params.study:q} --cell {wildcards.cell}"
            " --out {params.out:q} 3>&2 > {log:q} 2>&1"
