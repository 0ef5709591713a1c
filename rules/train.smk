# Training one cell in one job: pretrain cells always, grid cells unless the study searches
# by successive halving (rules/halving.smk). Both rules run the same command.
rule train_upstream:
    """Train one upstream (pretrain) cell, whose best checkpoint starts the grid cells that name it."""
    input:
        unpack(get_upstream_inputs),
    output:
        **paths.cell_outputs(paths.cell_folder(OUT, paths.UPSTREAM, "{cell}")),
    params:
        study=get_study_file,
        cell=get_cell_json,  # not on the command line: a changed cell config re-runs the job (params trigger)
        init=get_init_arg,
        features=get_features_arg,
        slots=SLOT_ARGS,
        out=lambda wildcards, output: os.path.dirname(output.metrics),
    log:
        paths.upstream_log(OUT, "{cell}"),
    benchmark:
        paths.benchmark_file(OUT, "train_upstream", "{cell}")
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
    # exec: no shell between Snakemake and the trainer, which checkpoints on SIGTERM (a shell would die of it);
    # fd 3 is Snakemake's stderr, where the error that ends a job goes too (readable when the log's disk is full)
    shell:
        "TLSWEEP_ERROR_FD=3 exec python -m workflow train --configfile {params.study:q} --cell {wildcards.cell}"
        " --manifest {input.manifest:q} {params.init} {params.features}"
        " --gpu-slots {resources.gpu_slots} {params.slots} --out {params.out:q} --threads {threads} 3>&2 > {log:q} 2>&1"


if not HALVING:

    use rule train_upstream as train with:
        input:
            unpack(get_grid_inputs),
        output:
            **paths.cell_outputs(paths.cell_folder(OUT, paths.GRID, "{cell}")),
        log:
            paths.cell_log(OUT, "{cell}"),
        benchmark:
            paths.benchmark_file(OUT, "train", "{cell}")
