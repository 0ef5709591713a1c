rule plan:
    """Check a dataset's source files, list them and assign every kept image to a split."""
    input:
        get_source_inputs,
    output:
        plan=paths.plan_file(DATA, "{dataset}"),
    params:
        study=get_study_file,
        spec=get_dataset_json,  # not on the command line: a changed dataset entry re-plans (params trigger)
        raw_dir=get_source_args,
    log:
        paths.log_file(DATA, "plan", "{dataset}"),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow plan --configfile {params.study:q} --dataset {wildcards.dataset}"
        " {params.raw_dir} --out {output.plan:q} 3>&2 > {log:q} 2>&1"


rule shard:
    """Decode, resize and write one shard (part PART of PARTS of every split) of a planned dataset."""
    input:
        get_source_inputs,
        plan=paths.plan_file(DATA, "{dataset}"),
    output:
        shard=paths.shard_file(DATA, "{dataset}", "{resolution}", "{part}", "{parts}"),
    log:
        paths.log_file(DATA, "shard", paths.shard_key("{dataset}", "{resolution}", "{part}", "{parts}")),
    threads: 1
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow shard --plan {input.plan:q} --resolution {wildcards.resolution}"
        " --part {wildcards.part} --parts {wildcards.parts} --out {output.shard:q} --threads {threads} 3>&2 > {log:q} 2>&1"


rule manifest:
    """Check a dataset's shards at one resolution and write the manifest that joins them (what training reads)."""
    input:
        plan=paths.plan_file(DATA, "{dataset}"),
        shards=get_shards,
    output:
        manifest=paths.manifest_file(DATA, "{dataset}", "{resolution}"),
    log:
        paths.log_file(DATA, "manifest", paths.manifest_key("{dataset}", "{resolution}")),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow manifest --plan {input.plan:q} --resolution {wildcards.resolution}"
        " --shards {input.shards:q} --out {output.manifest:q} 3>&2 > {log:q} 2>&1"
