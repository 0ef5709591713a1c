# Downloads run on the machine Snakemake runs on: on a cluster only the login node has internet.
localrules:
    download,


rule download:
    """Download one file of a source into the raw folder: resumed when interrupted, checked against its md5."""
    output:
        paths.raw_file(RAW, "{source}", "{filename}"),
    params:
        args=get_download_args,
    log:
        paths.log_file(RAW, "{source}", "{filename}"),
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow download {params.args} --dest {output:q} 3>&2 > {log:q} 2>&1"
