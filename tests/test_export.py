"""Self-describing checkpoints, rebuilding them, TorchScript and ONNX exports that match PyTorch,
the export index from the best table, the `weights:` file check (in-process), and the export rules' dry run."""

import json
import os
import re
import subprocess
import sys

import numpy as np
import onnx
import pytest
import torch
import torchvision
import yaml

from conftest import REPO, load_study_file, make_cell, study_error, tiny_study
from fakecells import summary_frame
from workflow.export.checkpoint import CheckpointError, load_model
from workflow.export.export import TOLERANCE, export_model
from workflow.export.index import export_entries, export_id, export_ids, read_export_index
from workflow.export.predict import class_scores
from workflow.export.runners import OnnxRunner, open_export, open_model
from workflow.export.weights_check import WeightsFileError, check_weights_file
from workflow.results.tables import build_tables
from workflow.train.cell import record_failure
from workflow.train.models import build_classifier
from workflow.train.state import CHECKPOINT_FORMAT, save_checkpoint

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated, still supported

CLASSES = ["cat", "dog", "bird"]


def saved_model(path, name="resnet18", head="gap", resolution=32, seed=0):
    """A randomly initialised model with random batch-norm statistics (so its logits differ between
    images), saved as a cell's checkpoint; returns the model in eval mode."""
    torch.manual_seed(seed)
    model, normalization = build_classifier(name, len(CLASSES), "none", head=head, resolution=resolution)
    for module in model.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.running_mean.uniform_(-0.1, 0.1)
            module.running_var.uniform_(0.5, 1.5)
    cell = make_cell(model=name, resolution=resolution, training={"head": head})
    save_checkpoint(path, model, cell, normalization, epoch=3, class_names=CLASSES)
    return model.eval()


def test_a_checkpoint_describes_itself_and_rebuilds_in_one_call(tmp_path):
    model = saved_model(tmp_path / "best.pt", "mobilenet_v2", "mlp", 16)
    stored = torch.load(tmp_path / "best.pt", weights_only=False)
    assert stored["format"] == CHECKPOINT_FORMAT
    assert (stored["model_name"], stored["head"], stored["num_classes"], stored["resolution"]) == (
        "mobilenet_v2", "mlp", 3, 16)
    assert stored["class_names"] == CLASSES and stored["cell"]["id"] == make_cell(model="mobilenet_v2", training={"head": "mlp"}).id
    assert "bilinear" in stored["resize_method"] and len(stored["normalization"][0]) == 3
    assert set(stored["versions"]) >= {"tlsweep", "torch", "torchvision"}
    rebuilt, card = load_model(tmp_path / "best.pt")
    assert not rebuilt.training and card.class_names == tuple(CLASSES) and card.resolution == 16
    x = torch.randn(4, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(rebuilt(x), model(x))


def test_a_checkpoint_of_another_model_is_refused_naming_the_file(tmp_path):
    saved_model(tmp_path / "best.pt", "resnet18", resolution=16)
    with pytest.raises(CheckpointError, match=r"best\.pt holds a 'resnet18' model, not the 'mobilenet_v2' asked for"):
        load_model(tmp_path / "best.pt", model="mobilenet_v2")
    failed = make_cell()
    record_failure(failed, tmp_path, ValueError("no"))  # a failed cell's marker best.pt
    with pytest.raises(CheckpointError, match=rf"best\.pt holds no weights: cell {failed.id} failed"):
        load_model(tmp_path / "best.pt")
    torch.save({"something": 1}, tmp_path / "other.pt")
    with pytest.raises(CheckpointError, match=r"other\.pt is not a tlsweep checkpoint"):
        load_model(tmp_path / "other.pt")


@pytest.mark.parametrize("name,head", [("resnet18", "gap"), ("mobilenet_v2", "gap"), ("resnet18", "own"),
                                       ("mobilenet_v2", "mlp"), ("timm:resnet10t", "gap"), ("timm:resnet10t", "mlp")])
def test_torchscript_and_onnx_logits_equal_pytorchs(tmp_path, name, head):
    model = saved_model(tmp_path / "best.pt", name, head, resolution=32)
    preprocess = export_model(tmp_path / "best.pt", tmp_path / "export", log=lambda _: None)
    batch = torch.randn(5, 3, 32, 32, generator=torch.Generator().manual_seed(7))  # 5: neither traced size
    with torch.no_grad():
        reference = model(batch)
    assert reference.std() > 1e-3  # logits that differ: the comparison means something
    for fmt in ("torchscript", "onnx"):
        runner = open_export(tmp_path / "export", fmt=fmt)[0]
        assert (runner(batch) - reference).abs().max().item() <= TOLERANCE
        assert runner(batch[:1]).shape == (1, 3)  # the batch dimension is dynamic
    assert all(check["max_abs_logit_difference"] <= TOLERANCE for check in preprocess["checks"].values())
    assert set(preprocess["checks"]) == {"torchscript", "onnx"}
    graph = onnx.load(str(tmp_path / "export/model.onnx")).graph
    assert graph.input[0].type.tensor_type.shape.dim[0].dim_param  # a named, dynamic batch dimension
    on_disk = json.loads((tmp_path / "export/preprocess.json").read_text())
    assert on_disk == json.loads(json.dumps(preprocess))
    assert on_disk["input"]["size"] == 32 and on_disk["class_names"] == CLASSES
    assert on_disk["normalization"] == {**on_disk["normalization"], "mean": [0.5] * 3, "std": [0.5] * 3}  # weights none
    extra = {"preprocess.json": ""}
    torch.jit.load(str(tmp_path / "export/torchscript.pt"), _extra_files=extra)
    assert json.loads(extra["preprocess.json"])["class_names"] == CLASSES


def test_a_timm_models_export_predicts_what_its_checkpoint_predicts(tmp_path):
    saved_model(tmp_path / "best.pt", "timm:resnet10t", "gap", resolution=32)
    export_model(tmp_path / "best.pt", tmp_path / "export", log=lambda _: None)
    images = np.random.default_rng(3).integers(0, 256, (6, 32, 32, 3), dtype=np.uint8)
    from_checkpoint = class_scores(*open_model(tmp_path / "best.pt"), images)
    for folder in (tmp_path / "export", tmp_path / "onnx-only"):
        if folder.name == "onnx-only":
            export_model(tmp_path / "best.pt", folder, formats=["onnx"], log=lambda _: None)
        runner, preprocess = open_export(folder)
        assert preprocess["model"] == "timm:resnet10t"
        scores = class_scores(runner, preprocess, images)
        assert scores.shape == (6, 3) and np.allclose(scores.sum(axis=1), 1, atol=1e-5)
        assert np.abs(scores - from_checkpoint).max() <= 1e-4
    assert from_checkpoint.std() > 1e-3  # scores that differ between images: the comparison means something


def test_export_in_one_format_records_what_it_was_chosen_on(tmp_path):
    saved_model(tmp_path / "best.pt", "resnet18", resolution=16)
    chosen = {"selection": {"metric": "val_accuracy"}, "test": {"metric": "test_accuracy", "low": 0.8, "high": 0.9}}
    export_model(tmp_path / "best.pt", tmp_path / "export", formats=["onnx"], chosen=chosen, log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == ["SHA256SUMS", "model.onnx", "preprocess.json"]
    runner, preprocess = open_export(tmp_path / "export")
    assert isinstance(runner, OnnxRunner) and preprocess["chosen"] == chosen
    assert preprocess["files"] == {"onnx": "model.onnx"}
    with pytest.raises(CheckpointError, match=r"export holds no torchscript model \(it has model\.onnx\)"):
        open_export(tmp_path / "export", fmt="torchscript")


def test_the_checksums_cover_every_file_and_sha256sum_checks_them(tmp_path):
    saved_model(tmp_path / "best.pt", "resnet18", resolution=16)
    export_model(tmp_path / "best.pt", tmp_path / "export", formats=["onnx"], log=lambda _: None)
    export_model(tmp_path / "best.pt", tmp_path / "export", formats=["torchscript"], log=lambda _: None)
    assert sorted(p.name for p in (tmp_path / "export").iterdir()) == [  # the other format's file is gone
        "SHA256SUMS", "preprocess.json", "torchscript.pt"]
    assert [line.split("  ")[1] for line in (tmp_path / "export/SHA256SUMS").read_text().splitlines()] == [
        "preprocess.json", "torchscript.pt"]
    checked = subprocess.run(["sha256sum", "-c", "SHA256SUMS"], cwd=tmp_path / "export", capture_output=True, text=True)
    assert checked.returncode == 0 and checked.stdout.count(": OK") == 2, checked.stdout + checked.stderr


def test_weights_file_of_an_incompatible_model_is_refused(tmp_path):
    saved_model(tmp_path / "best.pt", "resnet18", resolution=16)
    check_weights_file(tmp_path / "best.pt", "resnet18")
    check_weights_file(tmp_path / "best.pt", "resnet18", head="own", resolution=16)
    with pytest.raises(WeightsFileError, match=r"best\.pt \(tlsweep checkpoint\) does not fit model 'mobilenet_v2': "
                                               r"it holds a 'resnet18' model"):
        check_weights_file(tmp_path / "best.pt", "mobilenet_v2")
    torch.save(torchvision.models.resnet18(weights=None).state_dict(), tmp_path / "resnet18.pth")
    check_weights_file(tmp_path / "resnet18.pth", "resnet18")
    with pytest.raises(WeightsFileError, match=r"resnet18\.pth \(torchvision state dict\) does not fit model "
                                               r"'resnet50': \d+ weights missing"):
        check_weights_file(tmp_path / "resnet18.pth", "resnet50")
    with pytest.raises(WeightsFileError, match="does not exist"):
        check_weights_file(tmp_path / "nothing.pt", "resnet18")
    record_failure(make_cell(), tmp_path, ValueError("no"))
    with pytest.raises(WeightsFileError, match="holds no weights"):
        check_weights_file(tmp_path / "best.pt", "resnet18")


def two_model_summary():
    rows = [{"model": model, "batch_size": batch, "seed": seed, "test_accuracy": 0.6 + batch / 1000 + seed / 100,
             "best_val_accuracy": 0.5 + batch / 1000 + seed / 50 + (model == "resnet18") / 10, "best_val_loss": 1.0,
             "train_time_s": 1.0, "n_val": 50, "n_test": 50, "test_majority_rate": 0.3}
            for model in ("resnet18", "mobilenet_v2") for batch in (16, 64) for seed in (0, 1)]
    rows[0]["status"] = "failed"
    return summary_frame(rows)


def test_export_index_holds_each_recommended_configurations_best_seed_once():
    summary = two_model_summary()
    best = build_tables(["best"], summary)["best"]
    entries = export_entries(best, summary)
    cell_of = dict(zip(zip(summary["model"], summary["batch_size"], summary["seed"]), summary["cell"]))
    # overall and per model: resnet18 bs 64 (seed 1 has the better validation accuracy); per model: mobilenet_v2 bs 64
    assert [entry["cell"] for entry in entries] == [cell_of["resnet18", 64, 1], cell_of["mobilenet_v2", 64, 1]]
    first = entries[0]["chosen"]
    assert [row["scope"] for row in first["recommended_as"]] == ["overall", "per model"]
    assert first["selection"]["metric"] == "val_accuracy" and first["selection"]["ok_seeds"] == 2
    assert first["selection"]["cell_value"] == pytest.approx(0.5 + 0.064 + 0.02 + 0.1)
    assert first["test"]["metric"] == "test_accuracy" and first["test"]["low"] < first["test"]["mean"] < \
        first["test"]["high"]
    json.dumps(entries, allow_nan=False)  # no NaN: plain JSON
    every = export_entries(best, summary, cells="all")
    assert len(every) == 7 and [entry["cell"] for entry in every[:2]] == [entry["cell"] for entry in entries]
    assert all(entry["chosen"] is None for entry in every[2:]) and summary["cell"][0] not in {e["cell"] for e in every}


def test_export_folder_ids_are_safe_and_distinct():
    assert export_id("digits-5to9/resnet18/r16/bs32-lr1e-2") == "digits-5to9__resnet18__r16__bs32-lr1e-2"
    with pytest.raises(ValueError, match="would both export to"):
        export_ids(["a__b/m/r1/x", "a/b__m/r1/x"])


def small_study(tmp_path, export=None, **grid):
    """The tiny study (one grid cell, unless `grid` says otherwise) written to tmp_path/study.yaml."""
    config = tiny_study()
    config["grid"].update(batch_size=[32], optimizer=["adam"], **grid)
    if "pretrain:base" not in config["grid"]["weights"]:
        del config["pretrain"]
    if export is not None:
        config["export"] = export
    (tmp_path / "study.yaml").write_text(yaml.safe_dump(config))
    return tmp_path / "study.yaml"


def run_study(tmp_path, *args, export=None, check=True, **grid):
    """Snakemake on the tiny study (one grid cell, unless `grid` says otherwise)."""
    small_study(tmp_path, export, **grid)
    env = dict(os.environ, PYTHONPATH=str(REPO))
    result = subprocess.run([sys.executable, "-m", "snakemake", *args, "--snakefile", str(REPO / "Snakefile"),
                             "--directory", str(tmp_path / "work"), "--configfile", str(tmp_path / "study.yaml")],
                            capture_output=True, text=True, timeout=300, env=env)
    assert result.returncode == 0 or not check, result.stderr[-3000:]
    return result


@pytest.mark.pipeline
@pytest.mark.parametrize("export,planned", [(None, 1), ({"enabled": False}, 0), ({"cells": "all"}, 1)])
def test_dry_run_plans_the_export_index_unless_export_is_off(tmp_path, export, planned):
    result = run_study(tmp_path, "-n", export=export)
    table = result.stdout.split("Job stats:")[1].split("Reasons:")[0]
    counts = {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, re.M)}
    assert counts.get("export_index", 0) == planned and counts["train"] == 1 and counts["all"] == 1


@pytest.mark.pipeline
def test_the_export_rules_pass_the_linter(tmp_path):
    result = run_study(tmp_path, "--lint")
    assert "Lints for" not in result.stdout + result.stderr


def test_a_weights_file_of_another_model_refuses_the_study(tmp_path):
    saved_model(tmp_path / "resnet.pt", "resnet18", resolution=16)
    weights = [str(tmp_path / "resnet.pt")]
    output = study_error(small_study(tmp_path, weights=weights, model=["resnet18", "mobilenet_v2"]))
    assert "resnet.pt (tlsweep checkpoint) does not fit model 'mobilenet_v2': it holds a 'resnet18' model" in output
    assert len(load_study_file(small_study(tmp_path, weights=weights)).grid_cells) == 1


@pytest.mark.parametrize("content,says", [
    ('{"cells": "best", "exports": [{"id": "a", "cell"', " is not valid JSON"),
    ('{"cells": "best"}', ": exports is missing or not a list"),
    ('{"cells": "best", "exports": [{"id": "a", "cell": "a"}, {"cell": "b"}]}', r": exports\[1\] has no id or no cell"),
])
def test_a_damaged_export_index_is_refused_in_one_line_naming_it(tmp_path, content, says):
    index = tmp_path / "index.json"
    index.write_text(content)
    with pytest.raises(ValueError, match=rf"^{re.escape(str(index))}{says}.*--forcerun export_index\)$"):
        read_export_index(index)
