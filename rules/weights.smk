# ImageNet weights: fetched once into the caches on the machine running
# Snakemake (a local rule: on a cluster, the login node), before any training
# job; training jobs only read the cached files. torchvision's go to
# $TORCH_HOME/hub/checkpoints, timm's to the Hugging Face hub cache ($HF_HOME/hub).
# On a cluster both must be on a file system that the compute nodes share.
FETCH = weight_downloads(IMAGENET)
if workflow.is_main_process and uncached_note(FETCH):  # a dry run says so too; a job's parse says nothing
    print(uncached_note(FETCH), file=sys.stderr)

if FETCH["torchvision"]:
    WEIGHTS_DIR, WEIGHT_URLS = FETCH["torchvision_dir"], FETCH["torchvision"]

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
            "TLSWEEP_ERROR_FD=3 python -m workflow fetch-weights --url {params.url:q} --out {output:q} 3>&2 > {log:q} 2>&1"


if FETCH["timm"]:
    HUB_CACHE, TIMM_WEIGHTS = FETCH["hub_cache"], FETCH["timm"]

    localrules:
        fetch_timm_weights,

    rule fetch_timm_weights:
        """Download a timm model's pretrained weights from the Hugging Face hub into its cache."""
        output:
            f"{HUB_CACHE}/models--{{repo}}/refs/main",
        params:
            model=lambda wildcards: TIMM_WEIGHTS[wildcards.repo],
        log:
            paths.log_file(OUT, "fetch_timm_weights", "{repo}"),
        wildcard_constraints:
            repo="|".join(map(re.escape, TIMM_WEIGHTS)),
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 python -m workflow fetch-weights --timm {params.model} 3>&2 > {log:q} 2>&1"
