"""Features, once (issue 28): a backbone's pooled features (or what a head of layers pools) computed once per
dataset, model, resolution, starting weights and pooling, and the head stages that train on them. Equivalence is the test: the same cell and seed
trained with and without the cache give the same history and the same test predictions."""

import csv
import dataclasses
import json
import subprocess
import sys

import h5py
import numpy as np
import pytest
import torch

from conftest import REPO, digits_shard, load_study_file, make_cell, snakemake, tiny_study, write_config
from test_models import place_cached_weights
from test_timm_models import place_hub_weights
from workflow.core import paths
from workflow.core.cell import TrainingSettings
from workflow.data.augment import Augment
from workflow.data.features import read_features, read_record
from workflow.integrity import DamagedFileError
from workflow.train import features as features_module
from workflow.train.cell import train_cell
from workflow.train.features import CachedFeatures, compute_features, mismatch
from workflow.train.head_input import (AUGMENTS, FEATURES, IMAGES, features_pooling, features_source,
                                       head_stage_path, input_notes, stage_paths)

# What a history row holds that is a result (not a timing).
RESULTS = ("epoch", "stage", "train", "lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy")
STAGES = {"stages": [{"name": "head", "train": "head", "epochs": 2, "lr_factor": 1.0},
                     {"name": "finetune", "train": "cell", "epochs": 1, "lr_factor": 0.1}]}


def quiet(*_):
    pass


def history(folder):
    with open(folder / "history.csv") as f:
        return [{key: row[key] for key in RESULTS} for row in csv.DictReader(f)]


def assert_same_history(images, features, rtol):
    """Every epoch's stage, learning rate, losses and accuracies agree within `rtol` (relative)."""
    assert len(images) == len(features) > 0
    for a, b in zip(images, features):
        assert (a["epoch"], a["stage"], a["train"]) == (b["epoch"], b["stage"], b["train"])
        for key in ("lr", "train_loss", "train_accuracy", "val_loss", "val_accuracy"):
            assert float(a[key]) == pytest.approx(float(b[key]), rel=rtol, abs=1e-12), (a["epoch"], key)


def assert_same_predictions(images_dir, features_dir, atol):
    a, b = np.load(images_dir / "predictions.npz"), np.load(features_dir / "predictions.npz")
    for split in ("val", "test"):
        assert np.array_equal(a[f"{split}_scores"].argmax(1), b[f"{split}_scores"].argmax(1)), split
        assert np.abs(a[f"{split}_scores"] - b[f"{split}_scores"]).max() <= atol, split


@pytest.fixture(scope="module")
def digits_32(tmp_path_factory):
    """Digits 0-2 at 32x32, with its manifest."""
    shard = digits_shard(tmp_path_factory.mktemp("data32"), 32)
    return shard.with_suffix(".json")


@pytest.fixture(scope="module")
def digits_64(tmp_path_factory):
    """Digits 0-2 at 64x64 (mobilenet_v2's feature map is 2 x 2 there), with its manifest."""
    shard = digits_shard(tmp_path_factory.mktemp("data64"), 64)
    return shard.with_suffix(".json")


@pytest.fixture(scope="module")
def pretrained(digits_32, tmp_path_factory):
    """A pretrain cell's best.pt: resnet18 trained from scratch for one epoch on digits 0-2."""
    out = tmp_path_factory.mktemp("upstream")
    train_cell(make_cell(resolution=32, training={"stages": [{"name": "all", "train": "all", "epochs": 1}]}),
               digits_32, out, log=quiet)
    return out / "best.pt"


def weights_for(kind, tmp_path, monkeypatch, pretrained):
    """(model, weights, init) of a torchvision CNN with ImageNet weights, a timm model with its pretrained tag's
    weights (both randomly initialised files placed in the caches, offline), or a pretrain cell's backbone."""
    if kind == "torchvision":
        monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
        place_cached_weights(tmp_path / "torch", "mobilenet_v2")
        return "mobilenet_v2", "imagenet", None
    if kind == "timm":
        monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
        monkeypatch.setenv("HF_HUB_OFFLINE", "1")
        monkeypatch.delenv("HF_HUB_CACHE", raising=False)
        place_hub_weights(tmp_path / "hf", "timm:resnet10t")
        return "timm:resnet10t", "imagenet", None
    return "resnet18", "pretrain:up", pretrained


@pytest.mark.parametrize("kind", ["torchvision", "timm", "pretrain"])
def test_a_cell_trains_the_same_with_and_without_the_cached_features(kind, digits_32, pretrained, tmp_path,
                                                                     monkeypatch):
    """In fp32 on the CPU the head reads the very values the backbone gives it, except that oneDNN computes a
    batch of a few images with other kernels than a batch of 256 (the features job's): a short last batch (2 of
    322 images at batch size 32) then differs in the last bits (3.6e-15 on mobilenet_v2's features of 1e-9),
    which the fine-tuning stage can grow to 1e-3 relative. At batch size 46, which divides the 322 training
    images, every batch is whole and the histories agree to the bit; the tolerance stays 1e-6."""
    model, weights, init = weights_for(kind, tmp_path, monkeypatch, pretrained)
    cell = make_cell(model=model, weights=weights, resolution=32, batch_size=46, training=STAGES)
    cached = tmp_path / "features.h5"
    record = compute_features(cell, digits_32, cached, init=init, log=quiet)
    assert record["stored_as"] == "float32" and record["precision"] == "fp32"  # fp32 training: fp32 features
    images = train_cell(cell, digits_32, tmp_path / "images", init=init, log=quiet)
    features = train_cell(cell, digits_32, tmp_path / "features", init=init, log=quiet, features=cached)
    assert [stage["input"] for stage in images["stages"]] == [IMAGES, IMAGES]
    assert "given no features file" in images["stages"][0]["input_reason"]
    assert [stage["input"] for stage in features["stages"]] == [FEATURES, IMAGES]
    assert_same_history(history(tmp_path / "images"), history(tmp_path / "features"), rtol=1e-6)
    assert_same_predictions(tmp_path / "images", tmp_path / "features", atol=1e-6)
    assert features["test_accuracy"] == images["test_accuracy"]


# The DenseNet121 paper's transfer classifier (studies/densenet-regimes.yaml) after each pooling.
PAPER_LAYERS = [{"dense": 16, "activation": "relu"}, "batch_norm", {"dense": 8, "activation": "relu"}, {"dropout": 0.2}]


@pytest.mark.parametrize("pooling, stored", [("flatten", [1280, 2, 2]), ("gap", [1280])])
def test_a_head_of_layers_trains_the_same_with_and_without_the_cached_features(pooling, stored, digits_64, tmp_path,
                                                                               monkeypatch):
    """A head of layers reads what `pool_backbone` makes the backbone hand on: mobilenet_v2's 2 x 2 feature map
    (stored as it is, the head flattens it) for `flatten`, its pooled features for `gap`, which are the very
    features the named heads read (the same file, the same values)."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    place_cached_weights(tmp_path / "torch", "mobilenet_v2")
    head = {"layers": [pooling, "batch_norm", *PAPER_LAYERS]}
    cell = make_cell(model="mobilenet_v2", weights="imagenet", resolution=64, batch_size=46,
                     training={**STAGES, "head": head})
    assert head_stage_path(cell, 0) == (FEATURES, "frozen backbone in eval mode, no augmentation or mixup: the same "
                                                  "features every epoch")
    cached = tmp_path / "features.h5"
    record = compute_features(cell, digits_64, cached, log=quiet)
    assert (record["pooling"], record["shape"]) == ({"flatten": "flatten", "gap": paths.POOLED}[pooling], stored)
    assert list(read_features(cached)["test"][0].shape[1:]) == stored
    if pooling == "gap":  # the named heads' features file, value for value
        named = make_cell(model="mobilenet_v2", weights="imagenet", resolution=64, training=STAGES)
        compute_features(named, digits_64, tmp_path / "named.h5", log=quiet)
        assert features_pooling(named) == features_pooling(cell) == paths.POOLED
        for split, (features, labels) in read_features(tmp_path / "named.h5").items():
            assert np.array_equal(features, read_features(cached)[split][0]), split
    images = train_cell(cell, digits_64, tmp_path / "images", log=quiet)
    features = train_cell(cell, digits_64, tmp_path / "features", log=quiet, features=cached)
    assert [stage["input"] for stage in features["stages"]] == [FEATURES, IMAGES]
    assert_same_history(history(tmp_path / "images"), history(tmp_path / "features"), rtol=1e-6)
    assert_same_predictions(tmp_path / "images", tmp_path / "features", atol=1e-6)
    assert features["test_accuracy"] == images["test_accuracy"]


def test_features_of_another_pooling_are_refused():
    flatten = make_cell(weights="imagenet", training={**STAGES, "head": {"layers": ["flatten", {"dense": 8}]}})
    record = {"model": flatten.model, "resolution": flatten.resolution, "weights": "imagenet", "precision": "fp32"}
    before = CachedFeatures(None, None, None, record)  # a file from before poolings were recorded: pooled
    assert mismatch(before, flatten, {}, "fp32") == "the features were computed with pooling pooled, the cell " \
                                                    "trains with flatten"
    pooled = CachedFeatures(None, None, None, {**record, "pooling": "flatten"})
    assert mismatch(pooled, make_cell(weights="imagenet", training=STAGES), {}, "fp32") == \
        "the features were computed with pooling flatten, the cell trains with pooled"


def test_bf16_features_are_stored_as_fp16_without_loss_and_train_the_same(digits_32, pretrained, tmp_path):
    """bf16 (on the CPU here, as a GPU trains by default): the backbone's bf16 outputs fit fp16 exactly, so the
    compact file gives the head the values the images give it."""
    cell = make_cell(weights="pretrain:up", resolution=32, training={**STAGES, "precision": "bf16"})
    cached = tmp_path / "features.h5"
    record = compute_features(cell, digits_32, cached, init=pretrained, log=quiet)
    assert (record["stored_as"], record["output_dtype"], record["precision"]) == ("float16", "bfloat16", "bf16")
    stored = read_features(cached)["train"][0]
    assert np.array_equal(torch.from_numpy(stored).bfloat16().float().numpy(), stored)  # bf16 values, exactly
    images = train_cell(cell, digits_32, tmp_path / "images", init=pretrained, log=quiet)
    features = train_cell(cell, digits_32, tmp_path / "features", init=pretrained, log=quiet, features=cached)
    assert features["stages"][0]["input"] == FEATURES
    assert_same_history(history(tmp_path / "images"), history(tmp_path / "features"), rtol=1e-6)
    assert_same_predictions(tmp_path / "images", tmp_path / "features", atol=1e-6)


def test_a_head_stage_resumed_from_last_pt_ends_as_one_never_stopped(digits_32, pretrained, tmp_path):
    cell = make_cell(weights="pretrain:up", resolution=32, training=STAGES)
    cached = tmp_path / "features.h5"
    compute_features(cell, digits_32, cached, init=pretrained, log=quiet)
    train_cell(cell, digits_32, tmp_path / "whole", init=pretrained, log=quiet, features=cached)
    train_cell(cell, digits_32, tmp_path / "resumed", init=pretrained, log=quiet, features=cached, until_epoch=1)
    assert (tmp_path / "resumed" / "last.pt").exists()  # stopped inside the head stage, resumable
    resumed = train_cell(cell, digits_32, tmp_path / "resumed", init=pretrained, log=quiet, features=cached)
    assert resumed["run"]["resumed_after_epochs"] == [1] and resumed["stages"][0]["input"] == FEATURES
    assert history(tmp_path / "whole") == history(tmp_path / "resumed")


def test_features_that_are_not_what_the_images_give_are_refused_for_the_images(digits_32, pretrained, tmp_path):
    cell = make_cell(weights="pretrain:up", resolution=32, training=STAGES)
    cached = tmp_path / "features.h5"
    compute_features(cell, digits_32, cached, init=pretrained, log=quiet)
    bf16 = dataclasses.replace(cell, training=TrainingSettings.from_mapping(
        {**cell.training.as_mapping(), "precision": "bf16"}))
    metrics = train_cell(bf16, digits_32, tmp_path / "cell", init=pretrained, log=quiet, features=cached)
    assert metrics["stages"][0]["input"] == IMAGES
    assert metrics["stages"][0]["input_reason"] == "the features were computed with precision fp32, the cell trains with bf16"


def test_a_damaged_features_file_is_moved_aside_and_named(digits_32, pretrained, tmp_path):
    cell = make_cell(weights="pretrain:up", resolution=32, training=STAGES)
    cached = tmp_path / "features.h5"
    compute_features(cell, digits_32, cached, init=pretrained, log=quiet)
    with h5py.File(cached, "r") as f:
        shapes = {split: f[split]["features"].shape for split in ("train", "val", "test")}
    assert shapes["train"][1] == 512 and read_record(cached)["counts"]["test"] == shapes["test"][0]
    data = bytearray(cached.read_bytes())
    data[-100] ^= 0xFF
    cached.write_bytes(bytes(data))
    with pytest.raises(DamagedFileError, match=rf"{cached} is damaged: its SHA-256 differs .* moved to {cached}\.damaged"):
        read_features(cached)
    assert not cached.exists() and not (tmp_path / "features.json").exists()
    with pytest.raises(DamagedFileError, match=r"features\.json cannot be read .* not complete"):
        read_features(cached)


def test_an_interrupted_computation_leaves_nothing_that_looks_complete(digits_32, pretrained, tmp_path, monkeypatch):
    cell = make_cell(weights="pretrain:up", resolution=32, training=STAGES)
    real = features_module.backbone_features
    calls = []

    def killed_at_the_test_split(*args):
        calls.append(1)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return real(*args)

    monkeypatch.setattr(features_module, "backbone_features", killed_at_the_test_split)
    with pytest.raises(KeyboardInterrupt):
        compute_features(cell, digits_32, tmp_path / "features.h5", init=pretrained, log=quiet)
    assert sorted(p.name for p in tmp_path.iterdir()) == []


def test_which_stages_train_on_features_and_why():
    cell = make_cell(weights="imagenet", training=STAGES)
    assert stage_paths(cell) == {
        "head": (FEATURES, "frozen backbone in eval mode, no augmentation or mixup: the same features every epoch"),
        "finetune": (IMAGES, "trains 'all', not the head alone")}
    assert head_stage_path(make_cell(weights="imagenet", train="head", training=STAGES), 1)[0] == FEATURES  # frozen
    refused = {
        "augment": ({"augment": {"hflip": True}}, {}, "training.augment (hflip) changes the images every epoch"),
        "mixup": ({"mixup": 0.2}, {}, "mixup blends the images of every batch"),
        "none": ({}, {"weights": "none"}, "weights: none draws the backbone's weights from the seed"),
        "own": ({"head": "own"}, {}, "the 'own' head reads the model's own classifier input, not the pooled features"),
        "layers": ({"head": {"layers": ["flatten", {"dense": 8}]}, "augment": {"crop": 2}}, {},
                   "training.augment (crop) changes the images every epoch"),
    }
    for training, axes, reason in refused.values():
        assert head_stage_path(make_cell(training={**STAGES, **training}, **{"weights": "imagenet", **axes}), 0) == (
            IMAGES, reason)
    after = make_cell(weights="imagenet", training={"stages": [{"name": "all", "train": "all", "epochs": 1},
                                                               {"name": "head", "train": "head", "epochs": 1}]})
    assert head_stage_path(after, 1) == (IMAGES, "stage 'all' before it trains the backbone")
    assert "stage head on the features: frozen backbone" in input_notes([cell])[0]
    poolings = {"gap": paths.POOLED, "mlp": paths.POOLED, "own": None, ("gap",): paths.POOLED,
                ("gmp",): "gmp", ("flatten",): "flatten"}
    for head, pooling in poolings.items():
        layered = make_cell(weights="imagenet", training={**STAGES, "head": head if isinstance(head, str) else
                                                          {"layers": [*head, {"dense": 8}]}})
        assert features_pooling(layered) == pooling, head
        assert stage_paths(layered)["head"][0] == (IMAGES if pooling is None else FEATURES), head
    timm = {"model": "timm:resnet10t", "weights": "imagenet"}
    assert features_pooling(make_cell(training={"head": "own"}, **timm)) == paths.POOLED  # its linear head
    assert features_pooling(make_cell(training={"head": {"layers": ["gap"]}}, **timm)) == "gap"  # avg, not its own


def test_a_features_job_computes_features_from_weights_every_seed_shares_and_a_candidates_random_ones():
    assert features_source(make_cell(weights="imagenet")) and features_source(make_cell(weights="pretrain:up"))
    assert not features_source(make_cell(weights="none")) and features_source(make_cell(weights="none"), ranked=True)
    assert not features_source(make_cell(weights="imagenet", training={"head": "own"}), ranked=True)


def test_the_augmentations_named_are_those_that_change_the_images():
    assert set(AUGMENTS) == {f.name for f in dataclasses.fields(Augment)} - {"fill", "zoom_axes"}  # zoom_axes only shapes a zoom
    on = {"hflip": True, "vflip": True, "rot90": True, "crop": 2, "shift": 0.1, "zoom": 0.1, "rotation": 5.0,
          "shear": 5.0}
    for key in AUGMENTS:
        assert Augment.from_config({key: on[key]}).active
    assert not Augment.from_config({}).active


def test_features_paths_and_weights_tags():
    assert paths.features_file("data", "digits-0123456789ab", "timm:resnet10t", 32, "timm-default") == \
        "data/digits-0123456789ab/features/timm-resnet10t/r32/timm-default.h5"
    assert paths.features_record("a/b/imagenet.h5") == "a/b/imagenet.json"
    assert paths.features_file("data", "k", "densenet121", 155, "imagenet", "flatten") == \
        "data/k/features/densenet121/r155/imagenet-flatten.h5"
    assert paths.features_file("data", "k", "resnet18", 32, "pretrain-abababababab", paths.POOLED) == \
        "data/k/features/resnet18/r32/pretrain-abababababab.h5"  # today's name: finished studies' files reused
    assert paths.features_weights_tag("resnet18", "imagenet") == "imagenet"
    assert paths.features_weights_tag("timm:resnet50.a1_in1k", "imagenet") == "timm-a1_in1k"
    assert paths.features_weights_tag("resnet18", "pretrain:up", "ab" * 32) == "pretrain-abababababab"
    with pytest.raises(ValueError, match="needs the SHA-256"):
        paths.features_weights_tag("resnet18", "pretrain:up")


@pytest.mark.pipeline
def test_the_two_stage_study_trains_its_head_stage_from_features_computed_once(finished_tiny_study):
    """The demo's shape (tiny_study): a pretrain cell, then grid cells whose head stage trains on the pretrain
    backbone's features, computed by one features job for the four cells; `cells` says so."""
    workdir, configfile, _ = finished_tiny_study
    study = load_study_file(configfile)
    records = sorted(workdir.glob("**/features/resnet18/r16/pretrain-*.json"))
    assert len(records) == 1 and read_record(records[0].with_suffix(".h5"))["counts"]["train"] > 0
    for cell in study.grid_cells:
        metrics = json.loads((workdir / study.cell_dir(cell.id) / "metrics.json").read_text())
        assert [stage["input"] for stage in metrics["stages"]] == [FEATURES, IMAGES], cell.id
    again = snakemake(workdir, "-n", "--configfile", str(configfile))
    assert "Nothing to be done" in again.stdout + again.stderr


def test_cells_shows_each_stage_input_and_why():
    run = subprocess.run([sys.executable, "-m", "workflow", "cells", "--configfile", "studies/digits-demo.yaml",
                          "--no-trainable"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr
    lines = run.stdout.splitlines()
    grid = [line for line in lines if "-wdigits-0to4 " in line]
    assert len(grid) == 12 and all(line.endswith("head: features, finetune: images") for line in grid)
    assert sum(line.endswith("scratch: images") for line in lines) == 2  # the pretrain cells train every layer
    assert "stage head on the features: frozen backbone in eval mode, no augmentation or mixup: the same " \
           "features every epoch" in lines


@pytest.mark.pipeline
def test_a_run_until_train_trains_every_cell_on_the_images_before_the_features_tag_is_known(tmp_path):
    """`--until train`: Snakemake runs none of the jobs a checkpoint plans again (snakemake/snakemake#2824), so
    no training job waits on the pretrain cell's features tag; the head stages train on the images instead."""
    configfile = write_config(tmp_path / "tiny.yaml", tiny_study())
    snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile), "--until", "train")
    study = load_study_file(configfile)
    for cell in study.grid_cells:
        metrics = json.loads((tmp_path / study.cell_dir(cell.id) / "metrics.json").read_text())
        assert metrics["status"] == "ok" and [stage["input"] for stage in metrics["stages"]] == [IMAGES, IMAGES]


@pytest.mark.pipeline
def test_a_frozen_regime_trains_every_stage_on_the_features(tmp_path):
    """A frozen regime (`train: head` on the grid's axis): the new head is all that ever trains, so both stages
    train on the one features file, and the cell's test metrics come from its best weights on the images."""
    config = tiny_study()
    config["grid"].update(batch_size=[32], optimizer=["adam"], lr=[0.001], train=["head"])
    configfile = write_config(tmp_path / "frozen.yaml", config)
    snakemake(tmp_path, "--cores", "2", "--configfile", str(configfile))
    study = load_study_file(configfile)
    (cell,) = study.grid_cells
    metrics = json.loads((tmp_path / study.cell_dir(cell.id) / "metrics.json").read_text())
    assert metrics["status"] == "ok" and [stage["input"] for stage in metrics["stages"]] == [FEATURES, FEATURES]
    assert len(list(tmp_path.glob("**/features/resnet18/r16/pretrain-*.h5"))) == 1
    assert 0 < metrics["test_accuracy"] <= 1
