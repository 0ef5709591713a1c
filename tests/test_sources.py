"""Tests of the dataset sources against small archives built here."""

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from archives import (
    CAT_COLOR,
    DOG_COLOR,
    PCAM_SIZES,
    file_server,  # noqa: F401  (fixture)
    make_cifar10,
    make_cifar100,
    make_imagefolder,
    make_pcam,
    make_petimages,
    png_bytes,
)
from workflow.data.download import download, file_digest
from workflow.data.sources import SOURCES, Skipped, get_source
from workflow.data.sources.pcam import MD5 as PCAM_MD5


def test_get_source_lists_known_names():
    assert get_source("pcam") is SOURCES["pcam"]
    with pytest.raises(ValueError, match="'mnist'.*cifar10, cifar100, cats_vs_dogs, pcam, imagefolder"):
        get_source("mnist")


def test_remote_files():
    (cifar10,) = get_source("cifar10").remote_files({})
    assert cifar10.url.endswith("/cifar-10-python.tar.gz") and cifar10.md5 == "c58f30108f718f92721af3b95e74349a"
    (cats,) = get_source("cats_vs_dogs").remote_files({})
    assert cats.filename == "kagglecatsanddogs_5340.zip" and cats.md5 is None
    pcam = get_source("pcam").remote_files({})
    assert sorted(f.filename for f in pcam) == sorted(
        f"camelyonpatch_level_2_split_{s}_{xy}.h5.gz" for s in ("train", "valid", "test") for xy in "xy"
    )
    assert all(f.url.startswith("https://zenodo.org/records/2546921/files/" + f.filename) for f in pcam)
    assert PCAM_MD5["camelyonpatch_level_2_split_valid_x.h5.gz"] == "d5b63470df7cfa627aeec8b9dc0c066e"
    assert get_source("imagefolder").remote_files({"path": "x"}) == []


def test_cifar10_downloaded_and_read(file_server, tmp_path):
    built = tmp_path / "built.tar.gz"
    written = make_cifar10(built, per_class=2)
    file_server.files["/c10.tar.gz"] = built.read_bytes()
    raw = tmp_path / "raw"
    download(file_server.url("/c10.tar.gz"), raw / "cifar-10-python.tar.gz", md5=file_digest(built, "md5"))

    catalogue = get_source("cifar10").open_catalogue(raw, {})
    assert catalogue.class_names == [f"class{i}" for i in range(10)]
    assert len(catalogue) == 6 * 20
    assert np.bincount(catalogue.labels).tolist() == [12] * 10
    assert (catalogue.splits == "train").sum() == 100 and (catalogue.splits == "test").sum() == 20
    assert catalogue.keys[:2] == ["data_batch_1[0]", "data_batch_1[1]"] and catalogue.keys[100] == "test_batch[0]"
    assert catalogue.labels.dtype == np.int64

    images = catalogue.read(range(20, 40))  # data_batch_2
    assert all(img.shape == (32, 32, 3) and img.dtype == np.uint8 for img in images)
    np.testing.assert_array_equal(np.stack(images), written["data_batch_2"][0])
    np.testing.assert_array_equal(catalogue.labels[20:40], written["data_batch_2"][1])
    np.testing.assert_array_equal(catalogue.read([119])[0], written["test_batch"][0][19])


def test_cifar100_fine_and_coarse(tmp_path):
    written = make_cifar100(tmp_path / "cifar-100-python.tar.gz")
    fine = get_source("cifar100").open_catalogue(tmp_path, {})
    assert fine.class_names == [f"fine{i}" for i in range(100)]
    assert len(fine) == 300 and (fine.splits == "test").sum() == 100
    np.testing.assert_array_equal(fine.labels[200:], written["test"][1])
    assert fine.keys[200] == "test[0]"
    np.testing.assert_array_equal(np.stack(fine.read([5, 3])), written["train"][0][[5, 3]])

    coarse = get_source("cifar100").open_catalogue(tmp_path, {"label_type": "coarse"})
    assert coarse.class_names == [f"coarse{i}" for i in range(20)]
    np.testing.assert_array_equal(coarse.labels, fine.labels // 5)
    with pytest.raises(ValueError, match="label_type 'superclass'.*coarse"):
        get_source("cifar100").open_catalogue(tmp_path, {"label_type": "superclass"})


def test_cats_vs_dogs_zip(tmp_path):
    make_petimages(tmp_path / "kagglecatsanddogs_5340.zip")
    catalogue = get_source("cats_vs_dogs").open_catalogue(tmp_path, {})
    assert catalogue.class_names == ["Cat", "Dog"]
    assert catalogue.keys == [
        "PetImages/Cat/0.jpg", "PetImages/Cat/1.jpg", "PetImages/Cat/2.jpg", "PetImages/Cat/666.jpg",
        "PetImages/Dog/0.jpg", "PetImages/Dog/1.jpg", "PetImages/Dog/2.png",
    ]  # fmt: skip
    assert catalogue.labels.tolist() == [0, 0, 0, 0, 1, 1, 1]
    assert set(catalogue.splits) == {""}
    assert catalogue.ignored == [
        {"file": "PetImages/Cat/Thumbs.db", "reason": "not an image file (.db)"},
        {"file": "PetImages/Dog/Thumbs.db", "reason": "not an image file (.db)"},
        {"file": "readme[1].txt", "reason": "outside PetImages/Cat and PetImages/Dog"},
    ]

    images = catalogue.read(range(len(catalogue)))
    skipped = [img for img in images if isinstance(img, Skipped)]
    assert [s.key for s in skipped] == ["PetImages/Cat/666.jpg", "PetImages/Dog/1.jpg"]
    assert "truncated" in skipped[1].reason
    cat0, cat1, cmyk, _, dog0, _, alpha = images
    assert cat0.shape == (10, 12, 3) and cat1.shape == (9, 7, 3) and dog0.shape == (8, 16, 3)
    assert np.abs(cat0.astype(int) - CAT_COLOR).max() <= 3
    assert np.abs(dog0.astype(int) - DOG_COLOR).max() <= 3
    assert cmyk.shape == (8, 8, 3) and np.abs(cmyk.astype(int) - (0, 255, 255)).max() <= 3
    assert alpha.dtype == np.uint8
    assert (alpha[:3] == (10, 20, 30)).all() and (alpha[3:] == 255).all()


def test_pcam_unpacks_once_and_reads_slices(tmp_path):
    written = make_pcam(tmp_path)
    catalogue = get_source("pcam").open_catalogue(tmp_path, {})
    assert sorted(p.name for p in tmp_path.glob("*.h5")) == sorted(n[:-3] for n in PCAM_MD5)
    assert not list(tmp_path.glob("*.partial"))
    assert catalogue.class_names == ["normal", "tumor"]
    n_train, n_val, n_test = PCAM_SIZES["train"], PCAM_SIZES["valid"], PCAM_SIZES["test"]
    assert catalogue.splits.tolist() == ["train"] * n_train + ["val"] * n_val + ["test"] * n_test
    expected_x = np.concatenate([written[s][0] for s in ("train", "valid", "test")])
    expected_y = np.concatenate([written[s][1] for s in ("train", "valid", "test")])
    np.testing.assert_array_equal(catalogue.labels, expected_y)
    assert catalogue.keys[n_train] == "camelyonpatch_level_2_split_valid_x.h5[0]"

    np.testing.assert_array_equal(np.stack(catalogue.read(range(len(catalogue)))), expected_x)
    order = [12, 3, 8, 3, 0, 13, 5]  # across files, unordered, repeated, sparse
    np.testing.assert_array_equal(np.stack(catalogue.read(order)), expected_x[order])

    h5 = tmp_path / "camelyonpatch_level_2_split_test_x.h5"
    mtime = h5.stat().st_mtime_ns
    get_source("pcam").open_catalogue(tmp_path, {})
    assert h5.stat().st_mtime_ns == mtime


def test_imagefolder_modes_exif_and_ignored(tmp_path):
    expected = make_imagefolder(tmp_path / "images")
    catalogue = get_source("imagefolder").open_catalogue(tmp_path / "raw", {"path": str(tmp_path / "images")})
    assert catalogue.class_names == ["cmyk", "gray", "la", "palette", "rgba", "rotated", "sixteen"]
    assert catalogue.labels.tolist() == list(range(7))
    assert set(catalogue.splits) == {""}
    assert sorted(catalogue.ignored, key=lambda d: d["file"]) == [
        {"file": ".DS_Store", "reason": "hidden file"},
        {"file": "README.md", "reason": "not in a class folder"},
        {"file": "gray/._a.png", "reason": "hidden file"},
        {"file": "gray/Thumbs.db", "reason": "not an image file (.db)"},
        {"file": "gray/notes.txt", "reason": "not an image file (.txt)"},
    ]

    images = dict(zip(catalogue.keys, catalogue.read(range(len(catalogue)))))
    for key, rgb in expected.items():
        assert images[key].dtype == np.uint8
        np.testing.assert_array_equal(images[key], rgb, err_msg=key)
    rotated = images["rotated/exif6.jpg"].astype(int)
    assert rotated.shape == (40, 20, 3)  # stored 20 high, 40 wide
    assert np.abs(rotated[:18] - (255, 0, 0)).max() <= 8  # left half ends up on top
    assert np.abs(rotated[22:] - (0, 0, 255)).max() <= 8


def test_imagefolder_half_transparent_pixel(tmp_path):
    img = Image.fromarray(np.array([[[0, 0, 0, 128]]], np.uint8), "RGBA")
    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.png").write_bytes(png_bytes(img))
    (pixel,) = get_source("imagefolder").open_catalogue(tmp_path, {"path": tmp_path}).read([0])
    assert abs(int(pixel[0, 0, 0]) - 127) <= 1 and (pixel == pixel[0, 0, 0]).all()


def test_imagefolder_with_split_folders(tmp_path):
    counts = {"train": (3, 2), "val": (1, 1), "test": (2, 1)}
    for split, (cats, dogs) in counts.items():
        for name, n in (("cat", cats), ("dog", dogs)):
            (tmp_path / split / name).mkdir(parents=True)
            for i in range(n):
                Image.new("RGB", (4, 3), (i, 0, 0)).save(tmp_path / split / name / f"{i}.png")
    catalogue = get_source("imagefolder").open_catalogue(tmp_path, {"path": tmp_path})
    assert catalogue.class_names == ["cat", "dog"]
    assert {s: int((catalogue.splits == s).sum()) for s in counts} == {"train": 5, "val": 2, "test": 3}
    assert np.bincount(catalogue.labels).tolist() == [6, 4]
    assert "val/dog/0.png" in catalogue.keys
    images = catalogue.read([catalogue.keys.index("train/cat/2.png")])
    np.testing.assert_array_equal(images[0], np.full((3, 4, 3), (2, 0, 0), np.uint8))


def test_imagefolder_errors_name_the_folder(tmp_path):
    (tmp_path / "a" / "cat").mkdir(parents=True)
    Image.new("RGB", (2, 2)).save(tmp_path / "a" / "cat" / "x.png")
    (tmp_path / "a" / "dog").mkdir()
    (tmp_path / "a" / "dog" / "Thumbs.db").write_bytes(b"\0")
    with pytest.raises(ValueError, match=f"class folder {tmp_path / 'a' / 'dog'} holds no image files"):
        get_source("imagefolder").open_catalogue(tmp_path, {"path": tmp_path / "a"})

    (tmp_path / "flat").mkdir()
    Image.new("RGB", (2, 2)).save(tmp_path / "flat" / "x.png")
    with pytest.raises(ValueError, match=f"{tmp_path / 'flat'} has no class sub-folders"):
        get_source("imagefolder").open_catalogue(tmp_path, {"path": tmp_path / "flat"})

    (tmp_path / "split" / "train").mkdir(parents=True)
    with pytest.raises(ValueError, match=f"{tmp_path / 'split' / 'train'} has no class sub-folders"):
        get_source("imagefolder").open_catalogue(tmp_path, {"path": tmp_path / "split"})


def test_read_rejects_out_of_range(tmp_path):
    make_cifar100(tmp_path / "cifar-100-python.tar.gz")
    catalogue = get_source("cifar100").open_catalogue(Path(tmp_path), {})
    assert catalogue.read([]) == []
    with pytest.raises(IndexError):
        catalogue.read([300])
    with pytest.raises(IndexError):
        catalogue.read([-1])
