# Cached backbone features (docs/training.md, "Head stages from cached features"): a backbone's pooled
# features of a prepared dataset's splits, computed once per data key, model, resolution and starting weights,
# for the head stages of every cell (and study) that trains on them (workflow.train.head_input).
from workflow.core.backbones import model_folder
from workflow.train.head_input import FEATURES, needs_features


def pretrain_weights_tag(upstream):
    """The features' weights tag of a pretrain cell's best.pt, `pretrain-<its SHA-256>`: known once it is trained
    (the pretrain_tag checkpoint), so that the features of another best.pt are another file."""
    record = checkpoints.pretrain_tag.get(cell=upstream).output.tag
    with open(record) as f:
        return json.load(f)["weights_tag"]


def features_files(study, dataset, model, resolution, weights, upstream=None):
    """The features file (.h5) and its record (.json) of a dataset's splits at a resolution from a backbone's
    starting weights (`upstream`: the pretrain cell of `pretrain:` weights)."""
    tag = pretrain_weights_tag(upstream) if upstream else paths.features_weights_tag(model, weights)
    h5 = paths.features_file(DATA, study.data_key(dataset), model_folder(model), resolution, tag)
    return h5, paths.features_record(h5)


def trained_from_images(cell):
    """Whether a finished cell trained every stage from the images (its metrics.json records no features: a cell
    finished before features were cached), so that its inputs stay as they were and it is not trained again."""
    metrics = os.path.join(SWEEP.study.cell_dir(cell.id), paths.METRICS_JSON)
    if not os.path.exists(metrics):
        return False
    try:
        with open(metrics) as f:
            stages = json.load(f).get("stages") or []
    except ValueError:
        return False
    return not any(stage.get("input") == FEATURES for stage in stages)


def get_features_inputs(cell):
    """A training job's features inputs when a stage of `cell` trains on them ({} otherwise): ancient, since
    their path says what they hold; until a pretrain cell's tag is known, that tag."""
    if not needs_features(cell) or trained_from_images(cell):
        return {}
    try:
        h5, record = features_files(SWEEP.study, cell.dataset, cell.model, cell.resolution, cell.weights,
                                    cell.upstream)
    except IncompleteCheckpointException as pending:  # the pretrain cell's tag: the job is planned again after it
        return {"pretrain_tag": pending.targetfile}
    return {"features": ancient(h5), "features_record": ancient(record)}


def get_features_arg(wildcards, input):
    return f"--features {shlex.quote(input.features)}" if "features" in input.keys() else ""


def features_cell(wildcards):
    """The first cell (by id) that trains on the features a features job writes: it says the model, starting
    weights, head and precision."""
    study = SWEEP.study
    scored = {cell.id for cell in study.candidate_cells}  # `rank`: every candidate model's features (rules/rank.smk)
    for cell in sorted({**study.cells, **{cell.id: cell for cell in study.candidate_cells}}.values(),
                       key=lambda cell: cell.id):
        if ((needs_features(cell) or cell.id in scored) and study.data_key(cell.dataset) == wildcards.data_key
                and model_folder(cell.model) == wildcards.model and str(cell.resolution) == wildcards.resolution
                and wildcards.weights.startswith("pretrain-") == bool(cell.upstream)):
            h5, _ = features_files(study, cell.dataset, cell.model, cell.resolution, cell.weights, cell.upstream)
            if h5.endswith(f"/{wildcards.weights}.h5"):
                return cell
    raise WorkflowError(f"no cell of study {study.name!r} trains on the features {wildcards.weights} of "
                        f"{wildcards.model} at r{wildcards.resolution} of {wildcards.data_key}")


def get_features_job_inputs(wildcards):
    cell = features_cell(wildcards)
    inputs = SWEEP.study.train_inputs(cell, IMAGENET)
    return {key: value for key, value in inputs.items() if key != "probe"}


def get_features_job_cell(wildcards, output):
    """--cell of a features job: a params function of the output (not recorded), so that studies share the job."""
    return features_cell(wildcards).id


rule features:
    """A backbone's pooled features of a dataset's splits at one resolution, from its starting weights."""
    input:
        unpack(get_features_job_inputs),
    output:
        h5=paths.features_file(DATA, "{data_key}", "{model}", "{resolution}", "{weights}"),
        record=paths.features_record(paths.features_file(DATA, "{data_key}", "{model}", "{resolution}", "{weights}")),
    wildcard_constraints:
        model=r"[A-Za-z0-9_.-]+",
        weights=r"imagenet|none|(timm|pretrain|file)-[A-Za-z0-9_.]+",
    params:
        study=get_study_file,
        cell=get_features_job_cell,
        init=get_init_arg,
    log:
        paths.log_file(DATA, "features", "{data_key}", "{model}", "r{resolution}", "{weights}"),
    threads: RES["train_threads"]
    resources:
        gpu=RES["train_gpus"],
        mem_mb=RES["train_mem_mb"],
        runtime=get_train_runtime,
    conda:
        ENV
    shell:
        "TLSWEEP_ERROR_FD=3 python -m workflow features --configfile {params.study:q} --cell {params.cell:q}"
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
