# The study file every job reads its settings from (workflow/study/study_file.py). Written by this local
# rule, never while Snakemake builds the DAG (a dry run writes nothing), and only when the study changed
# (the params trigger). Jobs take it as an ancient input: rewriting it re-runs no job by itself; a job
# whose own settings changed re-runs through its own params.
localrules:
    study_file,


rule study_file:
    """Write the validated study (defaults filled in) that every job of the run reads."""
    output:
        STUDY_FILE,
    params:
        study=json.dumps(config, sort_keys=True),
    run:
        write_study_file(config, output[0])
