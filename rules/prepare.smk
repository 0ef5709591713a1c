rule prepare:
    """Resize a dataset once to a resolution and write its HDF5 shard and manifest."""
    output:
        shard=f"{DATA}/{{dataset}}/r{{resolution}}.h5",
        manifest=f"{DATA}/{{dataset}}/r{{resolution}}.json",
    params:
        spec=get_dataset_json,
    log:
        f"{DATA}/logs/prepare/{{dataset}}-r{{resolution}}.log",
    conda:
        ENV
    shell:
        "python -m workflow prepare --dataset {wildcards.dataset} --spec {params.spec:q}"
        " --resolution {wildcards.resolution} --shard {output.shard} --manifest {output.manifest} > {log} 2>&1"
