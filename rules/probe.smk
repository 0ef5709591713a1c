# Several cells per GPU (resources.slots_per_gpu > 1): the peak GPU memory of each combination that drives
# it, measured once and shared by every study (workflow/gpu/slots.py, workflow/gpu/probe.py). Training
# waits for its cell's probe through checkpoints.probe_memory (rules/common.smk, get_train_inputs).
if SLOTS.probe_dir:

    checkpoint probe_memory:
        """Measure the peak GPU memory of a few training steps and an evaluation pass of one combination
        (model, resolution, batch size, head, optimizer state, precision, eval batch size) on a whole GPU."""
        output:
            paths.probe_file(SLOTS.probe_dir, "{combo}"),
        params:
            study=get_study_file,
            spec=get_probe_json,
        log:
            paths.log_file(SLOTS.probe_dir, "{combo}"),
        wildcard_constraints:
            combo=PROBE_NAME,  # a later TPE round may add combinations (rules/common.smk, read_round)
        threads: 1
        resources:
            gpu=RES["train_gpus"],
            gpu_slots=SLOTS.per_gpu,
            mem_mb=RES["train_mem_mb"],
            runtime=30,
        conda:
            ENV
        shell:
            "TLSWEEP_ERROR_FD=3 python -m workflow probe --configfile {params.study:q} --probe {wildcards.combo} --out {output:q} 3>&2 > {log:q} 2>&1"
