# Successive halving (`search: halving`, workflow/halving.py): every grid cell trains to the first
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
            metrics=f"{OUT}/cells/{{cell}}/rung-{{rung}}/metrics.json",
            history=f"{OUT}/cells/{{cell}}/rung-{{rung}}/history.csv",
            checkpoint=f"{OUT}/cells/{{cell}}/rung-{{rung}}/best.pt",
            state=f"{OUT}/cells/{{cell}}/rung-{{rung}}/state.pt",
        params:
            cell=get_cell_json,
            init=get_init_arg,
            budget=lambda wildcards: HALVING.rungs[rung_index(wildcards)],
            previous=get_previous_arg,
            out=lambda wildcards, output: os.path.dirname(output.metrics),
        log:
            f"{OUT}/logs/train/{{cell}}/rung-{{rung}}.log",
        benchmark:
            f"{OUT}/benchmarks/train/{{cell}}/rung-{{rung}}.tsv"
        threads: RES["train_threads"]
        resources:
            gpu=RES["train_gpus"],
            gpu_slots=get_gpu_slots,
            mem_mb=RES["train_mem_mb"],
            runtime=get_train_runtime,
            slurm_extra=TRAIN_SLURM_EXTRA,  # as rule train
        conda:
            ENV
        shell:
            "exec python -m workflow train-rung --cell {params.cell:q} --shard {input.shard} {params.init}"
            " --rung {wildcards.rung} --until-epoch {params.budget} {params.previous}"
            " --out {params.out} --threads {threads} > {log} 2>&1"

    checkpoint rank_rung:
        """Rank the cells that reached a rung by their validation metric within their group; the best
        share goes on to the next rung. Ties go to the cell id that sorts first."""
        input:
            unpack(get_rank_inputs),
        output:
            f"{OUT}/halving/rung-{{rung}}.json",
        params:
            search=json.dumps(HALVING.to_dict()),
        log:
            f"{OUT}/logs/rank_rung/rung-{{rung}}.log",
        conda:
            ENV
        shell:
            "python -m workflow rank-rung --rung {wildcards.rung} --search {params.search:q}"
            " --metrics {input.metrics} --out {output} > {log} 2>&1"

    rule finish_cell:
        """A halved grid cell's results: the metrics, history and best checkpoint of the rung where it
        stopped, with that rung and whether it was pruned."""
        input:
            unpack(get_finish_inputs),
        output:
            metrics=f"{OUT}/cells/{{cell}}/metrics.json",
            history=f"{OUT}/cells/{{cell}}/history.csv",
            checkpoint=f"{OUT}/cells/{{cell}}/best.pt",
        params:
            search=json.dumps(HALVING.to_dict()),
            rankings=f"{OUT}/halving",
            out=lambda wildcards, output: os.path.dirname(output.metrics),
        wildcard_constraints:
            cell=halved_cells(),
        log:
            f"{OUT}/logs/finish_cell/{{cell}}.log",
        conda:
            ENV
        shell:
            "python -m workflow finish-cell --cell {wildcards.cell} --search {params.search:q}"
            " --rankings {params.rankings} --out {params.out} > {log} 2>&1"
