rule train:
    """Train one cell of the grid (or an upstream cell) and evaluate its best checkpoint."""
    input:
        unpack(get_train_inputs),
    output:
        metrics=f"{OUT}/cells/{{cell}}/metrics.json",
        history=f"{OUT}/cells/{{cell}}/history.csv",
        checkpoint=f"{OUT}/cells/{{cell}}/best.pt",
    params:
        cell=get_cell_json,
        init=get_init_arg,
        out=lambda wildcards: f"{OUT}/cells/{wildcards.cell}",
    wildcard_constraints:
        cell=trained_cells(),
    log:
        f"{OUT}/logs/train/{{cell}}.log",
    benchmark:
        f"{OUT}/benchmarks/train/{{cell}}.tsv"
    threads: RES["train_threads"]
    resources:
        gpu=RES["train_gpus"],
        gpu_slots=get_gpu_slots,
        mem_mb=RES["train_mem_mb"],
        runtime=get_train_runtime,
        # SLURM: SIGURG train_warning_s before the time limit (profiles/README.md)
        slurm_extra=TRAIN_SLURM_EXTRA,
    conda:
        ENV
    # exec: no shell between Snakemake and the trainer, which checkpoints on SIGTERM (a shell would die of it)
    shell:
        "exec python -m workflow train --cell {params.cell:q} --shard {input.shard} {params.init}"
        " --out {params.out} --threads {threads} > {log} 2>&1"
