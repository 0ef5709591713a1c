rule plan:
    """Check a dataset's source files, list them and assign every kept image to a split."""
    input:
        get_source_inputs,
    output:
        plan=f"{DATA}/{{dataset}}/plan.json",
    params:
        spec=get_dataset_json,
        raw_dir=get_raw_dir_arg,
    log:
        f"{DATA}/logs/plan/{{dataset}}.log",
    conda:
        ENV
    shell:
        "python -m workflow plan --dataset {wildcards.dataset} --spec {params.spec:q} {params.raw_dir}"
        " --out {output.plan} > {log} 2>&1"


rule prepare_shard:
    """Decode, resize and write one shard (part PART of PARTS of every split) of a planned dataset."""
    input:
        get_source_inputs,
        plan=f"{DATA}/{{dataset}}/plan.json",
    output:
        shard=f"{DATA}/{{dataset}}/r{{resolution}}/shard-{{part}}-of-{{parts}}.h5",
    log:
        f"{DATA}/logs/prepare_shard/{{dataset}}-r{{resolution}}-{{part}}-of-{{parts}}.log",
    threads: 1
    conda:
        ENV
    shell:
        "python -m workflow shard --plan {input.plan} --resolution {wildcards.resolution}"
        " --part {wildcards.part} --parts {wildcards.parts} --out {output.shard} --threads {threads} > {log} 2>&1"


rule prepare:
    """Check a dataset's shards at one resolution and write the manifest that joins them (what training reads)."""
    input:
        plan=f"{DATA}/{{dataset}}/plan.json",
        shards=get_shards,
    output:
        manifest=f"{DATA}/{{dataset}}/r{{resolution}}.json",
    log:
        f"{DATA}/logs/prepare/{{dataset}}-r{{resolution}}.log",
    conda:
        ENV
    shell:
        "python -m workflow index --plan {input.plan} --resolution {wildcards.resolution}"
        " --shards {input.shards} --out {output.manifest} > {log} 2>&1"
