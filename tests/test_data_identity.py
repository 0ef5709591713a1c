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


def test_cells_names_the_folder_each_dataset_is_prepared_in(study_file, capsys):
    from workflow.cli import main

    configfile = study_file(tiny_study())
    main(["cells", "--configfile", str(configfile), "--no-trainable"])
    study = load_study_file(configfile)
    out = capsys.readouterr().out
    for name in ("digits-0to4", "digits-5to9"):
        assert f"data of {name}: results/data/{study.data_key(name)}\n" in out


def one_dataset_study(name: str, classes: list, data_dir, dataset: str = "digits-5to9") -> dict:
    """A one-cell study (one epoch at 16 px, Adam at 1e-3: at 1e-2 its loss explodes, and an `unstable` cell
    fails the run) on digits of `classes`, called `dataset`, preparing into `data_dir`."""
    config = tiny_study(name)
    config.pop("pretrain")
    config["datasets"] = {dataset: {"source": "digits", "classes": classes}}
    config["grid"].update({"dataset": [dataset], "batch_size": [64], "lr": [0.001], "optimizer": ["adam"],
                           "weights": ["none"]})
    config["training"] = {"stages": [{"name": "all", "train": "all", "epochs": 1}]}
    return {**config, "data_dir": str(data_dir)}


@pytest.mark.pipeline
def test_two_studies_sharing_a_data_folder_each_train_on_their_own_definition(tmp_path):
    """Issue 27's done-when: `digits-5to9` is classes 5-9 in one study and 0-2 in another, run from two working
    folders on one data folder; each trains and tests on its own classes, and neither prepares or trains again."""
    from test_workflow import job_counts

    data = tmp_path / "data"
    runs = {"high": ([5, 6, 7, 8, 9], ["5", "6", "7", "8", "9"]), "low": ([0, 1, 2], ["0", "1", "2"])}
    keys = set()
    for name, (classes, class_names) in runs.items():
        work = tmp_path / name
        work.mkdir()
        configfile = write_config(work / "study.yaml", one_dataset_study(name, classes, data))
        snakemake(work, "--cores", "2", "--configfile", str(configfile))
        study = load_study_file(configfile)
        key = study.data_key("digits-5to9")
        keys.add(key)
        plan = json.loads(study.plan_path("digits-5to9").read_text())
        manifest = json.loads(study.manifest_path("digits-5to9", 16).read_text())
        (cell,) = study.grid_cells
        metrics = json.loads((work / study.cell_dir(cell.id) / paths.METRICS_JSON).read_text())
        assert plan["class_names"] == manifest["class_names"] == class_names
        assert sorted(metrics["per_class"]) == class_names and metrics["status"] == "ok"
        assert json.loads((data / key / "definition.json").read_text()) == study.definitions["digits-5to9"]
    assert len(keys) == 2
    for name in runs:
        result = snakemake(tmp_path / name, "-n", "--configfile", str(tmp_path / name / "study.yaml"))
        assert "Nothing to be done" in result.stdout + result.stderr, result.stdout[-3000:]
    # a third study, in the first one's folder, names the first definition otherwise: it prepares nothing new
    configfile = write_config(tmp_path / "high/third.yaml",
                              one_dataset_study("third", [5, 6, 7, 8, 9], data, dataset="high-digits"))
    assert load_study_file(configfile).data_key("high-digits") in keys
    result = snakemake(tmp_path / "high", "-n", "--configfile", str(configfile))
    counts = job_counts(result.stdout)
    assert counts["train"] == 1 and not {"plan", "shard", "manifest"} & set(counts), result.stdout[-3000:]
    assert sorted(p.name for p in data.iterdir() if p.name != "logs") == sorted(keys)
