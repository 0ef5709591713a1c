# The input functions of the cached features (rules/features.smk): which features a training job reads, and
# what a features job is given.
from workflow.core.backbones import model_folder
from workflow.train.head_input import features_pooling, features_source, needs_features


def pretrain_weights_tag(upstream):
    """The features' weights tag of a pretrain cell's best.pt, `pretrain-<its SHA-256>`: known once it is trained
    (the pretrain_tag checkpoint), so that the features of another best.pt are another file."""
    record = checkpoints.pretrain_tag.get(cell=upstream).output.tag
    with open(record) as f:
        return json.load(f)["weights_tag"]


def features_tag(model, weights, upstream=None):
    """The features' weights tag of a backbone's starting weights (`upstream`: the pretrain cell of `pretrain:`
    weights)."""
    return pretrain_weights_tag(upstream) if upstream else paths.features_weights_tag(model, weights)


def features_files(study, dataset, model, resolution, weights, upstream=None, pooling=paths.POOLED):
    """The features file (.h5) and its record (.json) of a dataset's splits at a resolution from a backbone's
    starting weights (`upstream`: the pretrain cell of `pretrain:` weights), as a head of `pooling` reads them
    (`features_pooling`)."""
    h5 = paths.features_file(DATA, study.data_key(dataset), model_folder(model), resolution,
                             features_tag(model, weights, upstream), pooling)
    return h5, paths.features_record(h5)


def trained_before_features(cell):
    """Whether a cell finished before features were cached (its metrics.json's stages say nothing of their input),
    so that its inputs stay as they were and it is not trained again for them."""
    metrics = os.path.join(SWEEP.study.cell_dir(cell.id), paths.METRICS_JSON)
    if not os.path.exists(metrics):
        return False
    try:
        with open(metrics) as f:
            stages = json.load(f).get("stages") or []
    except ValueError:
        return False
    return bool(stages) and not any(isinstance(stage, dict) and "input" in stage for stage in stages)


def get_features_inputs(cell):
    """A training job's features inputs when a stage of `cell` trains on them ({} otherwise): ancient, since
    their path says what they hold; until a pretrain cell's tag is known, that tag."""
    if not needs_features(cell) or trained_before_features(cell):
        return {}
    try:
        h5, record = features_files(SWEEP.study, cell.dataset, cell.model, cell.resolution, cell.weights,
                                    cell.upstream, features_pooling(cell))
    except IncompleteCheckpointException as pending:  # the pretrain cell's tag: the job is planned again after it
        return {} if until_run() else {"pretrain_tag": pending.targetfile}
    return {"features": ancient(h5), "features_record": ancient(record)}


def get_features_arg(wildcards, input):
    return f"--features {shlex.quote(input.features)}" if "features" in input.keys() else ""


def features_cell(wildcards):
    """The cell that says the model, starting weights, head (its features' pooling) and precision of the features
    a features job writes: the first (by id) that trains on them, else the first whose head reads them (features
    other rules ask for)."""
    study = SWEEP.study
    candidates = {cell.id: cell for cell in study.candidate_cells}  # `rank`: every candidate's (rules/rank.smk)
    cells = sorted({**study.cells, **candidates}.values(), key=lambda cell: (not needs_features(cell), cell.id))
    for cell in cells:
        pooling = features_pooling(cell)
        if (features_source(cell, ranked=cell.id in candidates)
                and study.data_key(cell.dataset) == wildcards.data_key and model_folder(cell.model) == wildcards.model and str(cell.resolution) == wildcards.resolution
                and wildcards.weights.startswith("pretrain-") == bool(cell.upstream)
                and paths.features_name(features_tag(cell.model, cell.weights, cell.upstream), pooling)
                == wildcards.weights):
            return cell
    raise WorkflowError(f"no cell of study {study.name!r} reads the features {wildcards.weights} of "
                        f"{wildcards.model} at r{wildcards.resolution} of {wildcards.data_key}")


def get_features_job_inputs(wildcards):
    cell = features_cell(wildcards)
    inputs = SWEEP.study.train_inputs(cell, IMAGENET)
    return {key: value for key, value in inputs.items() if key != "probe"}


def get_features_job_cell(wildcards, output):
    """--cell of a features job: a params function of the output (not recorded), so that studies share the job."""
    return features_cell(wildcards).id
