# Prepared data is found by its key, <source>-<digest of its definition> (workflow.study.grid.data_definition),
# never by a dataset's name: a changed entry is another key, and one definition is prepared once.
rule plan:
    """Check a dataset's source files, list them and assign every kept image to a split."""
    input:
        get_source_inputs,
    output:
        plan=paths.plan_file(DATA, "{data_key}"),
        definition=paths.definition_file(DATA, "{data_key}"),
    params:
        study=get_study_file,
        fingerprint=get_fingerprint_arg,
    log:
        paths.log_file(DATA, "plan", "{data_key}"),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow plan --configfile {params.study:q} --data-key {wildcards.data_key}"
        " {params.fingerprint} --out {output.plan:q} --definition {output.definition:q} 3>&2 > {log:q} 2>&1"


rule shard:
    """Decode, resize and write one shard (part PART of PARTS of every split) of a planned dataset."""
    input:
        get_source_inputs,
        plan=paths.plan_file(DATA, "{data_key}"),
    output:
        shard=paths.shard_file(DATA, "{data_key}", "{resolution}", "{part}", "{parts}"),
    log:
        paths.log_file(DATA, "shard", paths.shard_key("{data_key}", "{resolution}", "{part}", "{parts}")),
    threads: 1
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow shard --plan {input.plan:q} --resolution {wildcards.resolution}"
        " --part {wildcards.part} --parts {wildcards.parts} --out {output.shard:q} --threads {threads} 3>&2 > {log:q} 2>&1"


rule manifest:
    """Check a dataset's shards at one resolution and write the manifest that joins them (what training reads)."""
    input:
        plan=paths.plan_file(DATA, "{data_key}"),
        shards=get_shards,
    output:
        manifest=paths.manifest_file(DATA, "{data_key}", "{resolution}"),
    log:
        paths.log_file(DATA, "manifest", paths.manifest_key("{data_key}", "{resolution}")),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow manifest --plan {input.plan:q} --resolution {wildcards.resolution}"
        " --shards {input.shards:q} --out {output.manifest:q} 3>&2 > {log:q} 2>&1"
