"""`predict` with a trained digits cell: from the manifest's stored images, from its test images
written losslessly as PNG files at the source's own size (decoded and resized by the code that
prepared them), from an export folder and from best.pt, with a corrupt file that is skipped and listed."""

import argparse
import csv
import io
import json
import os
import resource
import shutil
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import REPO, copy_of_finished_tiny_study, make_cell, snakemake
from workflow.cli_export import add_export_commands
from workflow.data.datasets import resolve_dataset
from workflow.data.prepare import make_plan, prepare_dataset, prepare_files
from workflow.data.shards import read_split
from workflow.data.sources import get_source
from workflow.integrity import StorageError
from workflow.export.checkpoint import CheckpointError
from workflow.export.checksums import REEXPORT
from workflow.export.export import export_model
from workflow.export.predict import class_scores, list_images, prediction_table_columns, write_prediction_table
from workflow.export.runners import OnnxRunner, open_export, open_model
from workflow.train.cell import train_cell
from workflow.train.predictions import read_predictions

pytestmark = pytest.mark.filterwarnings("ignore:`torch.jit:FutureWarning")  # deprecated, still supported

SPEC = {"source": "digits", "classes": [0, 1, 2], "split": {"train": 0.6, "val": 0.2, "test": 0.2}, "seed": 0}


def run_command(argv: list[str]) -> None:
    """Run one of the export commands as `python -m workflow` would."""
    top = argparse.ArgumentParser()
    add_export_commands(top.add_subparsers(dest="command", required=True))
    args = top.parse_args(argv)
    args.func(args)


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """Digits 0-2 prepared at 16 x 16, a resnet18 cell trained on them for 3 epochs, and its export."""
    folder = tmp_path_factory.mktemp("cell")
    prepare_dataset("digits-012", SPEC, 16, folder / "r16.h5", folder / "r16.json")
    cell = make_cell(training={"stages": [{"name": "all", "train": "all", "epochs": 3, "lr_factor": 1.0}]}, lr=0.001)
    metrics = train_cell(cell, folder / "r16.json", folder / "out", log=lambda _: None)
    export_model(folder / "out/best.pt", folder / "export", log=lambda _: None)
    return {"folder": folder, "metrics": metrics, "manifest": folder / "r16.json", "best": folder / "out/best.pt",
            "export": folder / "export"}


@pytest.fixture(scope="module")
def test_pngs(trained):
    """The test split's digits as 8 x 8 RGB PNG files (lossless, at the source's size), in the
    split's order, and their labels."""
    spec = resolve_dataset("digits-012", SPEC)
    plan = make_plan("digits-012", spec, None)
    catalogue = get_source("digits").open_catalogue(None, spec)
    folder = trained["folder"] / "pngs"
    (folder / "sub").mkdir(parents=True)
    paths = []
    for n, (index, image) in enumerate(zip(plan["splits"]["test"]["indices"],
                                           catalogue.read(plan["splits"]["test"]["indices"]))):
        paths.append(folder / ("sub" if n % 2 else "") / f"{n:04d}-digit{index}.png")
        Image.fromarray(image).save(paths[-1])
    return paths, np.asarray(plan["splits"]["test"]["labels"])


def test_the_trained_checkpoint_describes_its_data(trained):
    assert trained["metrics"]["test_accuracy"] > 0.5  # a model that has learnt something: its predictions mean something
    _, preprocess = open_model(trained["best"])
    assert preprocess["class_names"] == ["0", "1", "2"] and preprocess["input"]["size"] == 16
    assert preprocess["cell"] == trained["metrics"]["cell"]
    assert preprocess["resize"]["method"] == json.loads(trained["manifest"].read_text())["resize_method"]
    assert set(preprocess["versions"]) >= {"tlsweep", "torch", "torchvision"}


@pytest.mark.parametrize("which", ["best.pt", "torchscript", "onnx"])
def test_the_manifests_test_images_reproduce_the_cells_test_accuracy(trained, which):
    if which == "onnx":
        runner, preprocess = open_export(trained["export"], fmt="onnx")
        assert isinstance(runner, OnnxRunner)
    else:
        runner, preprocess = open_model(trained["best"] if which == "best.pt" else trained["export"])
    images, labels = read_split(trained["manifest"], "test")
    scores = class_scores(runner, preprocess, images, batch_size=17)
    assert float(np.mean(scores.argmax(1) == labels)) == trained["metrics"]["test_accuracy"]
    stored = read_predictions(trained["folder"] / "out")
    assert np.array_equal(scores.argmax(1), stored.test_scores.argmax(1))
    assert np.allclose(scores, stored.test_scores, atol=1e-5)


def test_png_files_decode_and_resize_to_the_manifests_images(trained, test_pngs):
    paths, _ = test_pngs
    images, good, skipped = prepare_files(paths, 16)
    assert good == list(range(len(paths))) and not skipped
    assert np.array_equal(images, read_split(trained["manifest"], "test")[0])


def read_rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_predict_on_a_folder_reproduces_the_test_accuracy_and_lists_a_corrupt_file(trained, test_pngs, capsys):
    paths, labels = test_pngs
    folder = paths[0].parent
    (folder / "sub/broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "notes.txt").write_text("not an image")
    out = trained["folder"] / "predictions.csv"
    run_command(["predict", "--model", str(trained["export"]), str(folder), "--out", str(out), "--top-k", "2"])
    rows = read_rows(out)
    assert list(rows[0]) == prediction_table_columns(2)
    assert len(rows) == len(paths) + 1 and not any(row["path"].endswith("notes.txt") for row in rows)
    (broken,) = [row for row in rows if row["error"]]
    assert broken["path"].endswith("broken.png") and broken["class_1"] == "" and "UnidentifiedImageError" in broken["error"]
    predicted = {row["path"]: row["class_1"] for row in rows if not row["error"]}
    correct = [predicted[str(path)] == str(label) for path, label in zip(paths, labels)]
    assert float(np.mean(correct)) == trained["metrics"]["test_accuracy"]
    ok = [row for row in rows if not row["error"]]
    assert all(float(r["probability_1"]) >= float(r["probability_2"]) and r["class_1"] != r["class_2"] for r in ok)
    logged = capsys.readouterr().out
    assert "broken.png" in logged and f"{len(paths)} images classified, 1 skipped" in logged


def test_predict_from_best_pt_on_a_csv_of_paths(trained, test_pngs):
    paths, labels = test_pngs
    listing = trained["folder"] / "pngs/list.csv"
    listing.write_text("path,note\n" + "".join(f"{p.relative_to(listing.parent)},x\n" for p in paths[:10])
                       + "missing.png,x\n")
    assert list_images(listing)[:10] == [str(p) for p in paths[:10]]
    out = trained["folder"] / "from-best.csv"
    run_command(["predict", "--model", str(trained["best"]), str(listing), "--out", str(out), "--top-k", "9"])
    rows = read_rows(out)
    assert list(rows[0]) == prediction_table_columns(3)  # at most the number of classes
    assert [row["path"] for row in rows[:10]] == [str(p) for p in paths[:10]]
    assert rows[10]["path"].endswith("missing.png") and "FileNotFoundError" in rows[10]["error"]
    assert all(abs(sum(float(r[f"probability_{i}"]) for i in (1, 2, 3)) - 1) < 1e-5 for r in rows[:10])


def test_predict_refuses_what_is_no_model(trained, tmp_path):
    with pytest.raises(SystemExit, match="is not an export folder"):
        run_command(["predict", "--model", str(tmp_path), str(trained["folder"] / "pngs"), "--out",
                     str(tmp_path / "p.csv")])


def test_a_file_name_that_is_not_utf8_is_classified_and_written_escaped(trained, test_pngs, tmp_path, capsys):
    paths, _ = test_pngs
    folder = tmp_path / "odd"
    folder.mkdir()
    png = paths[0].read_bytes()
    with open(os.fsencode(folder) + b"/caf\xe9.png", "wb") as f:  # Latin-1 bytes: no UTF-8 name
        f.write(png)
    (folder / "good.png").write_bytes(png)
    (folder / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    (folder / "truncated.png").write_bytes(paths[1].read_bytes()[:60])
    out = tmp_path / "predictions.csv"
    run_command(["predict", "--model", str(trained["export"]), str(folder), "--out", str(out), "--top-k", "2"])
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8"))))  # valid UTF-8 throughout
    by_name = {row["path"].rsplit("/", 1)[1]: row for row in rows}
    assert sorted(by_name) == ["broken.png", "caf\\xe9.png", "good.png", "truncated.png"]
    assert by_name["caf\\xe9.png"]["path"] == f"{folder}/caf\\xe9.png"  # the byte that is not UTF-8 as \xNN
    odd, good = by_name["caf\\xe9.png"], by_name["good.png"]
    assert not odd["error"] and (odd["class_1"], odd["probability_1"]) == (good["class_1"], good["probability_1"])
    assert by_name["broken.png"]["error"] and by_name["truncated.png"]["error"]
    assert by_name["broken.png"]["class_1"] == by_name["truncated.png"]["class_1"] == ""
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []  # no temporary file left
    assert "2 images classified, 2 skipped" in capsys.readouterr().out


def test_a_csv_of_paths_that_are_not_utf8_finds_its_files_and_lists_the_missing_one(trained, test_pngs, tmp_path):
    paths, _ = test_pngs
    with open(os.fsencode(tmp_path) + b"/na\xefve.png", "wb") as f:
        f.write(paths[0].read_bytes())
    (tmp_path / "list.csv").write_bytes(b"path\nna\xefve.png\nmissing-\xff.png\n")
    out = tmp_path / "predictions.csv"
    run_command(["predict", "--model", str(trained["best"]), str(tmp_path / "list.csv"), "--out", str(out)])
    rows = list(csv.DictReader(io.StringIO(out.read_bytes().decode("utf-8"))))
    assert [row["path"] for row in rows] == [f"{tmp_path}/na\\xefve.png", f"{tmp_path}/missing-\\xff.png"]
    assert not rows[0]["error"] and rows[0]["class_1"] in {"0", "1", "2"}
    assert "FileNotFoundError" in rows[1]["error"] and rows[1]["class_1"] == ""


def test_a_failed_write_leaves_the_earlier_predictions_whole(tmp_path):
    out = tmp_path / "predictions.csv"
    out.write_text("path,error\nearlier.png,\n")
    rows = [{"path": f"image-{n:05d}.png", "error": "", "class_1": "0", "probability_1": 0.5} for n in range(2000)]
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (4096, hard))  # Python ignores SIGXFSZ: a write fails with EFBIG
    try:
        with pytest.raises(StorageError, match=f"cannot write {out}: File too large"):
            write_prediction_table(rows, out, 1)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    assert out.read_text() == "path,error\nearlier.png,\n" and sorted(p.name for p in tmp_path.iterdir()) == [out.name]


def edit_preprocess(change):
    """A tampering: preprocess.json rewritten after `change(content)`."""
    def tamper(folder):
        content = json.loads((folder / "preprocess.json").read_text())
        change(content)
        (folder / "preprocess.json").write_text(json.dumps(content, indent=2))
    return tamper


def flip_bytes(name):
    def tamper(folder):
        data = bytearray((folder / name).read_bytes())
        data[len(data) // 2:len(data) // 2 + 8] = bytes(255 - b for b in data[len(data) // 2:len(data) // 2 + 8])
        (folder / name).write_bytes(bytes(data))
    return tamper


def truncate(name):
    def tamper(folder):
        (folder / name).write_bytes((folder / name).read_bytes()[:(folder / name).stat().st_size // 2])
    return tamper


TAMPERINGS = {  # what is done to an export folder: (the tampering, the file the refusal names, what it says)
    "class names reversed": (edit_preprocess(lambda p: p["class_names"].reverse()), "preprocess.json",
                             "does not match its SHA-256 in"),
    "input size changed": (edit_preprocess(lambda p: p["input"].update(size=32)), "preprocess.json",
                           "does not match its SHA-256 in"),
    "torchscript bytes flipped": (flip_bytes("torchscript.pt"), "torchscript.pt", "does not match its SHA-256 in"),
    "onnx bytes flipped": (flip_bytes("model.onnx"), "model.onnx", "does not match its SHA-256 in"),
    "torchscript truncated": (truncate("torchscript.pt"), "torchscript.pt", "does not match its SHA-256 in"),
    "onnx deleted": (lambda folder: (folder / "model.onnx").unlink(), "model.onnx", "is missing"),
    "a key deleted": (edit_preprocess(lambda p: p["normalization"].pop("mean")), "preprocess.json",
                      "normalization.mean is missing"),
    "a key of the wrong type": (edit_preprocess(lambda p: p["input"].update(size="16")), "preprocess.json",
                                "input.size is \"16\", not a positive whole number"),
    "preprocess.json truncated": (truncate("preprocess.json"), "preprocess.json", "is not valid JSON"),
    "checksums truncated": (lambda folder: (folder / "SHA256SUMS").write_text(
        (folder / "SHA256SUMS").read_text().splitlines()[0] + "\n"), "SHA256SUMS", "lists no"),
    "checksums cut mid-line": (lambda folder: (folder / "SHA256SUMS").write_text(
        (folder / "SHA256SUMS").read_text()[:100]), "SHA256SUMS", "line 2: not '<SHA-256>  <file name>'"),
    "no checksums (exported before they were recorded)": (lambda folder: (folder / "SHA256SUMS").unlink(),
                                                           "SHA256SUMS", "has no SHA256SUMS"),
}


@pytest.mark.parametrize("tampering", list(TAMPERINGS))
def test_predict_refuses_a_tampered_export_naming_the_file(trained, test_pngs, tmp_path, tampering):
    tamper, named, says = TAMPERINGS[tampering]
    folder = tmp_path / "export"
    shutil.copytree(trained["export"], folder)
    tamper(folder)
    out = tmp_path / "predictions.csv"
    with pytest.raises(SystemExit) as refused:
        run_command(["predict", "--model", str(folder), str(test_pngs[0][0].parent), "--out", str(out)])
    message = str(refused.value)
    assert message.startswith("error: ") and "\n" not in message and says in message, message
    assert str(folder / named) in message or (named == "SHA256SUMS" and str(folder) in message), message
    assert "re-export" in message and not out.exists()


def test_an_untampered_copy_of_an_export_predicts_what_its_checkpoint_does(trained, test_pngs, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(trained["export"], folder)
    for model, out in ((folder, tmp_path / "export.csv"), (trained["best"], tmp_path / "best.csv")):
        run_command(["predict", "--model", str(model), str(test_pngs[0][0].parent), "--out", str(out), "--top-k", "3"])
    from_export, from_best = read_rows(tmp_path / "export.csv"), read_rows(tmp_path / "best.csv")
    assert [row["class_1"] for row in from_export] == [row["class_1"] for row in from_best]
    assert all(abs(float(a[f"probability_{i}"]) - float(b[f"probability_{i}"])) < 1e-5
               for a, b in zip(from_export, from_best) for i in (1, 2, 3) if not a["error"])


def test_an_interrupted_export_does_not_look_complete(trained, test_pngs, tmp_path):
    folder = tmp_path / "export"
    shutil.copytree(trained["export"], folder)  # a complete export, then a re-export that fails midway
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (1 << 16, hard))  # the model files cannot be written
    try:
        with pytest.raises((OSError, RuntimeError)):  # a write failed: torch's own error or an OSError
            export_model(trained["best"], folder, log=lambda _: None)
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))
    with pytest.raises(SystemExit, match="has no SHA256SUMS"):
        run_command(["predict", "--model", str(folder), str(test_pngs[0][0].parent), "--out", str(tmp_path / "p.csv")])


def test_predict_and_export_refuse_a_best_pt_that_is_not_what_its_metrics_recorded(trained, test_pngs, tmp_path):
    cell = tmp_path / "cell"
    shutil.copytree(trained["folder"] / "out", cell)
    flip_bytes("best.pt")(cell)  # tensor bytes: torch.load still reads the file
    with pytest.raises(SystemExit) as refused:
        run_command(["predict", "--model", str(cell / "best.pt"), str(test_pngs[0][0].parent), "--out",
                     str(tmp_path / "p.csv")])
    message = str(refused.value)
    assert f"{cell / 'best.pt'} is damaged" in message and "\n" not in message and (cell / "best.pt").exists()
    with pytest.raises(CheckpointError, match="best.pt is damaged"):  # nor is it exported
        export_model(cell / "best.pt", tmp_path / "export", log=lambda _: None)


@pytest.mark.pipeline
def test_a_studys_export_passes_the_checks_and_the_way_out_the_refusal_names_works(finished_tiny_study, tmp_path):
    workdir, configfile, _ = copy_of_finished_tiny_study(finished_tiny_study, tmp_path / "study")
    entries = json.loads((workdir / "results/tiny/export/index.json").read_text())["exports"]
    folder = workdir / "results/tiny/export" / entries[0]["id"]
    images = tmp_path / "images"
    images.mkdir()
    for n in range(3):
        pixels = np.random.default_rng(n).integers(0, 256, (20, 20, 3), dtype=np.uint8)
        Image.fromarray(pixels).save(images / f"{n}.png")
    (folder / "SHA256SUMS").unlink()  # as an export made before checksums were recorded
    with pytest.raises(SystemExit, match="has no SHA256SUMS.*--forcerun export"):
        run_command(["predict", "--model", str(folder), str(images), "--out", str(tmp_path / "p.csv")])
    snakemake(workdir, "--cores", "2", "--configfile", str(configfile), "--forcerun", "export")
    run_command(["predict", "--model", str(folder), str(images), "--out", str(tmp_path / "p.csv")])
    rows = read_rows(tmp_path / "p.csv")
    assert len(rows) == 3 and all(row["class_1"] in {"5", "6", "7", "8", "9"} and not row["error"] for row in rows)


def test_python_m_workflow_predict_names_a_tampered_file_in_one_line_and_handles_odd_names(trained, test_pngs,
                                                                                            tmp_path):
    folder, images = tmp_path / "export", tmp_path / "images"
    shutil.copytree(trained["export"], folder)
    images.mkdir()
    with open(os.fsencode(images) + b"/\xff.png", "wb") as f:
        f.write(test_pngs[0][0].read_bytes())
    env = dict(os.environ, PYTHONPATH=str(REPO))
    command = [sys.executable, "-m", "workflow", "predict", "--model", str(folder), str(images), "--out",
               str(tmp_path / "p.csv"), "--device", "cpu"]
    done = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_rows(tmp_path / "p.csv")[0]["path"] == f"{images}/\\xff.png"
    edit_preprocess(lambda p: p["class_names"].reverse())(folder)
    refused = subprocess.run(command, capture_output=True, text=True, env=env, timeout=300)
    assert refused.returncode == 1 and "Traceback" not in refused.stderr
    assert refused.stderr.strip().splitlines() == [
        f"error: {folder / 'preprocess.json'} does not match its SHA-256 in {folder / 'SHA256SUMS'}: it was changed "
        "or truncated after it was exported; " + REEXPORT]
