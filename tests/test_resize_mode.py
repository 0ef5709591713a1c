"""The per-dataset resize mode: plain stretch, or shorter side + centre crop as torchvision's presets."""

import csv
import json

import h5py
import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.datasets import load_sample_images
from torchvision import transforms

from conftest import make_cell
from workflow.data.datasets import resolve_dataset
from workflow.data.prepare import make_plan, prepare_dataset, prepare_files
from workflow.data.resize import CROP_METHOD, RESIZE_METHOD, resize_batch
from workflow.export.export import export_model
from workflow.export.predict import class_scores, predict_images
from workflow.export.runners import open_export
from workflow.train.cell import train_cell


@pytest.fixture(scope="module")
def photos():
    """scikit-learn's two bundled photographs (427 x 640, landscape) and their portrait transposes."""
    images = load_sample_images().images
    return [*images, *(np.ascontiguousarray(image.transpose(1, 0, 2)) for image in images)]


@pytest.mark.parametrize("size", [32, 57])
def test_crop_matches_torchvision_resize_and_center_crop(photos, size):
    preset = transforms.Compose([transforms.Resize(size), transforms.CenterCrop(size)])
    for photo in photos:
        ours = resize_batch(photo[None], size, "crop")[0].astype(int)
        theirs = np.asarray(preset(Image.fromarray(photo))).astype(int)
        assert ours.shape == theirs.shape == (size, size, 3)
        assert np.abs(ours - theirs).max() <= 1
        stretched = resize_batch(photo[None], size)[0].astype(int)
        assert np.abs(stretched - theirs).max() > 1  # the modes differ on a non-square image


def test_unknown_mode_is_a_clear_error(photos):
    with pytest.raises(ValueError, match="'fill'"):
        resize_batch(photos[0][None], 16, "fill")


def write_folder(root, photo):
    """An image folder of two classes, each of ten non-square crops of a photograph."""
    for label, name in enumerate(("a", "b")):
        (root / name).mkdir(parents=True)
        for i in range(10):
            Image.fromarray(photo[10 * i:10 * i + 300, 20 * label:20 * label + 400]).save(root / name / f"{i}.png")


@pytest.mark.parametrize("mode, method", [(None, RESIZE_METHOD), ("stretch", RESIZE_METHOD), ("crop", CROP_METHOD)])
def test_non_square_images_through_plan_and_shard(tmp_path, photos, mode, method):
    write_folder(tmp_path / "images", photos[0])
    spec = resolve_dataset("own", {"source": "imagefolder", "path": str(tmp_path / "images"),
                                   **({"resize": mode} if mode else {})})
    assert ("resize" in spec) == (mode is not None)  # not filled when unset: existing plans unchanged
    manifest = prepare_dataset("own", spec, 24, tmp_path / "r24.h5", tmp_path / "r24.json")
    assert manifest["resize_method"] == method
    plan = make_plan("own", spec, None)
    with h5py.File(tmp_path / "r24.h5", "r") as f:
        assert f.attrs["resize_method"] == method
        for split, entry in plan["splits"].items():
            paths = [tmp_path / "images" / key for key in entry["keys"]]
            expected = np.stack([resize_batch(np.asarray(Image.open(p).convert("RGB"))[None], 24, mode or "stretch")[0]
                                 for p in paths]).reshape(-1, 24, 24, 3)
            np.testing.assert_array_equal(f[split]["images"][...], expected)
            images, _, _ = prepare_files(paths, 24, mode or "stretch")
            np.testing.assert_array_equal(images, expected)
    assert json.loads((tmp_path / "r24.json").read_text())["resize_method"] == method


def test_checkpoint_export_and_predict_use_the_datasets_resize_mode(tmp_path, photos):
    write_folder(tmp_path / "images", photos[0])
    spec = resolve_dataset("own", {"source": "imagefolder", "path": str(tmp_path / "images"), "resize": "crop"})
    prepare_dataset("own", spec, 16, tmp_path / "r16.h5", tmp_path / "r16.json")
    cell = make_cell(training={"stages": [{"name": "all", "train": "all", "epochs": 1, "lr_factor": 1.0}]},
                     dataset="own", batch_size=8, lr=0.001)
    train_cell(cell, tmp_path / "r16.json", tmp_path / "out", log=lambda _: None)
    assert torch.load(tmp_path / "out/best.pt", weights_only=False)["resize_method"] == CROP_METHOD
    export_model(tmp_path / "out/best.pt", tmp_path / "export", log=lambda _: None)
    preprocess = json.loads((tmp_path / "export/preprocess.json").read_text())
    assert preprocess["resize"]["method"] == CROP_METHOD and preprocess["resize"]["mode"] == "crop"
    paths = sorted(str(p) for p in (tmp_path / "images").rglob("*.png"))
    predict_images(tmp_path / "export", tmp_path / "images", tmp_path / "p.csv", top_k=2, device="cpu",
                   log=lambda _: None)
    runner, preprocess = open_export(tmp_path / "export")
    with open(tmp_path / "p.csv") as f:
        rows = {row["path"]: row for row in csv.DictReader(f)}
    for mode, same in (("crop", True), ("stretch", False)):
        scores = class_scores(runner, preprocess, prepare_files(paths, 16, mode)[0])
        top = [float(rows[p]["probability_1"]) for p in paths]
        assert np.allclose(top, scores.max(1), atol=1e-5) == same
