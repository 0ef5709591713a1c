# ImageNet weights: fetched once into torch's cache ($TORCH_HOME/hub/checkpoints)
# on the machine running Snakemake, before any training job; training jobs
# only read the cached file. On a cluster, TORCH_HOME must be on a file system
# that the compute nodes share.
if IMAGENET:
    WEIGHTS_DIR = os.path.dirname(next(iter(IMAGENET.values()))[0])
    WEIGHT_URLS = {os.path.basename(path): url for path, url in IMAGENET.values()}

    localrules:
        fetch_weights,

    rule fetch_weights:
        """Download one torchvision weights file and check it against the SHA-256 prefix in its name."""
        output:
            f"{WEIGHTS_DIR}/{{name}}",
        params:
            url=lambda wildcards: WEIGHT_URLS[wildcards.name],
        log:
            paths.log_file(OUT, "fetch_weights", "{name}"),
        wildcard_constraints:
            name="|".join(map(re.escape, WEIGHT_URLS)),
        conda:
            ENV
        shell:
            "python -m workflow fetch-weights --url {params.url} --out {output} > {log} 2>&1"
