"""Prepared data is found by what defines it, never by a dataset's name alone (issue 27): a definition that
differs in any key gets a folder of its own, and the same definition under two names, or in two studies, is
prepared once."""

import json
import os

import pytest

from conftest import load_study_file, snakemake, tiny_study, write_config
from workflow.core import paths
from workflow.study.config import check_config
from workflow.study.grid import build_study

DIGITS = {"source": "digits", "classes": [5, 6, 7, 8, 9]}
# One change of each key that changes the prepared files.
CHANGES = {"classes": [0, 1, 2], "per_class": {"train": 20}, "split": {"train": 0.6, "val": 0.2, "test": 0.2},
           "seed": 1, "resize": "crop", "shards": 2, "chunk_images": 32, "compression": "gzip"}


def study_of(datasets: dict, **keys):
    """A checked study training every dataset of `datasets` (at 16 px, one cell each)."""
    config = {"study": "ids", "datasets": datasets,
              "grid": {"dataset": list(datasets), "model": ["resnet18"], "resolution": [16], "batch_size": [32],
                       "lr": [0.01], "optimizer": ["adam"], "weights": ["none"]}, **keys}
    check_config(config)
    return build_study(config)


@pytest.mark.parametrize("key", sorted(CHANGES))
def test_definitions_that_differ_in_one_key_are_prepared_apart(key):
    study = study_of({"a": DIGITS, "b": {**DIGITS, key: CHANGES[key]}})
    assert study.data_key("a") != study.data_key("b")
    assert study.manifest_path("a", 16).parent != study.manifest_path("b", 16).parent
    assert study.plan_path("a") != study.plan_path("b")


def test_one_definition_under_two_names_or_in_two_studies_is_prepared_once():
    study = study_of({"digits-5to9": DIGITS, "high-digits": dict(DIGITS)})
    key = study.data_key("digits-5to9")
    assert key == study.data_key("high-digits") and key.startswith("digits-") and "5to9" not in key
    assert study.manifest_path("digits-5to9", 16) == study.manifest_path("high-digits", 16) == \
        study.data_dir / key / "r16.json"
    assert study.prepared_as(key) == "digits-5to9"  # the plan job's dataset: the first name with that key
    other = study_of({"mine": {**DIGITS, "seed": 0}}, study="other")  # a default spelt out is the same entry
    assert other.data_key("mine") == key
    with pytest.raises(ValueError, match=f"no dataset of study 'other' is prepared as 'digits-0'.*mine as {key}"):
        other.prepared_as("digits-0")


def test_a_folder_of_ones_own_is_known_by_where_it_is(tmp_path, monkeypatch):
    """Relative paths count from the working folder: `imgs` of two working folders that share a data folder
    are two datasets; one folder spelt two ways is one; a project moved with its data keeps its keys."""
    for work in ("w1", "w2"):
        (tmp_path / work / "imgs").mkdir(parents=True)
    shared = str(tmp_path / "data")
    keys = {}
    for work, spelling in (("w1", "imgs"), ("w1", "./sub/../imgs"), ("w2", "imgs")):
        monkeypatch.chdir(tmp_path / work)
        study = study_of({"own": {"source": "imagefolder", "path": spelling}}, data_dir=shared)
        keys[work, spelling] = study.data_key("own")
    assert keys["w1", "imgs"] == keys["w1", "./sub/../imgs"] != keys["w2", "imgs"]
    assert study.definitions["own"]["spec"]["path"] == os.path.join("..", "w2", "imgs")
    moved = {}
    for work in ("w1", "w2"):  # each with its own data folder inside it: as if w1 were moved to w2
        monkeypatch.chdir(tmp_path / work)
        moved[work] = study_of({"own": {"source": "imagefolder", "path": "imgs"}}).data_key("own")
    assert moved["w1"] == moved["w2"]


def test_a_downloaded_source_is_known_by_its_raw_folder_too(tmp_path):
    keys = {raw: study_of({"c": {"source": "cifar10"}}, raw_dir=raw, data_dir="results/data").data_key("c")
            for raw in ("results/raw", "results/raw/", "/elsewhere/raw")}
    assert keys["results/raw"] == keys["results/raw/"] != keys["/elsewhere/raw"]


def test_the_data_paths_are_the_rules_patterns_with_the_key():
    study = study_of({"digits-5to9": DIGITS})
    key = study.data_key("digits-5to9")
    assert paths.manifest_file("{data}", "{key}", "{resolution}").format(data=study.data_dir, key=key, resolution=16) \
        == str(study.manifest_path("digits-5to9", 16))
    assert paths.dataset_shards("results/data", key, 16, 2) == [
        f"results/data/{key}/r16/shard-0-of-2.h5", f"results/data/{key}/r16/shard-1-of-2.h5"]
    assert paths.definition_file("results/data", key) == f"results/data/{key}/definition.json"
