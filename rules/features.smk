# Cached backbone features (docs/training.md, "Head stages from cached features"): a backbone's pooled
# features (or what a head of layers pools) of a prepared dataset's splits, computed once per data key, model,
# resolution, starting weights and pooling, for the head stages of every cell (and study) that trains on them
# (workflow.train.head_input); the input functions are in rules/features_common.smk.
rule features:
    """A backbone's pooled features (or the output a head of layers pools) of a dataset's splits at one
    resolution, from its starting weights."""
    input:
        unpack(get_features_job_inputs),
    output:
        h5=paths.features_file(DATA, "{data_key}", "{model}", "{resolution}", "{weights}"),
        record=paths.features_record(paths.features_file(DATA, "{data_key}", "{model}", "{resolution}", "{weights}")),
    wildcard_constraints:
        model=r"[A-Za-z0-9_.-]+",
        weights=r"(imagenet|none|(timm|pretrain|file)-[A-Za-z0-9_.]+)(-(gap|gmp|flatten))?",  # paths.features_name
    params:
        study=get_study_file,
        cell=get_features_job_cell,
        init=get_init_arg,
    log:
        paths.log_file(DATA, "features", "{data_key}", "{model}", "r{resolution}", "{weights}"),
    threads: RES["train_threads"]
    resources:
        gpu=RES["train_gpus"],
        gpu_slots=SLOTS.per_gpu,  # a whole GPU, as a memory probe
        mem_mb=RES["train_mem_mb"],
        runtime=get_train_runtime,
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow features --configfile {params.study:q} --cell {params.cell}"
        " --manifest {input.manifest:q} {params.init} --out {output.h5:q} --threads {threads} 3>&2 > {log:q} 2>&1"


checkpoint pretrain_tag:
    """The features' weights tag of a pretrain cell's best.pt (by its SHA-256), read when a run plans its jobs."""
    input:
        checkpoint=paths.cell_outputs(paths.cell_folder(OUT, paths.UPSTREAM, "{cell}"))["checkpoint"],
    output:
        tag=paths.pretrain_tag_file(OUT, "{cell}"),
    log:
        paths.log_file(OUT, "pretrain_tag", "{cell}"),
    localrule: True
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow pretrain-tag --checkpoint {input.checkpoint:q} --out {output.tag:q}"
        " 3>&2 > {log:q} 2>&1"
