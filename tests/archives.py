"""Shared test helpers: a Range-aware HTTP server and builders of small real archives."""

import gzip
import io
import pickle
import re
import tarfile
import threading
import zipfile
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image


class _Handler(BaseHTTPRequestHandler):
    """Serves `server.files`, honouring `bytes=N-` ranges unless told not to."""

    def do_GET(self):
        srv = self.server
        path = self.path.split("?")[0]
        srv.requests.append({"path": path, "range": self.headers.get("Range")})
        body = srv.files.get(path)
        if body is None:
            self.send_error(404)
            return
        start, status = 0, 200
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not srv.ignore_range:
            start, status = int(match[1]), 206
            if start >= len(body):
                self.send_response(416)
                self.send_header("Content-Range", f"bytes */{len(body)}")
                self.send_header("Content-Length", "0")
                self.end_headers()
                return
        self.send_response(status)
        if status == 206:
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        payload = body[start:]
        if srv.cut_after is not None:  # one interrupted answer, then normal again
            payload, srv.cut_after = payload[: srv.cut_after], None
        self.wfile.write(payload)

    def log_message(self, *args):
        pass


class FileServer(ThreadingHTTPServer):
    """An HTTP server on 127.0.0.1 that records every request it answers."""

    daemon_threads = True

    def __init__(self, files):
        super().__init__(("127.0.0.1", 0), _Handler)
        self.files = dict(files)
        self.requests = []
        self.ignore_range = False
        self.cut_after = None

    def url(self, path):
        return f"http://127.0.0.1:{self.server_port}{path}"


@pytest.fixture
def file_server():
    """A running FileServer; put bytes in `.files` under "/name"."""
    server = FileServer({})
    thread = threading.Thread(target=server.serve_forever, args=(0.02,), daemon=True)
    thread.start()
    yield server
    server.shutdown()
    server.server_close()
    thread.join()


def png_bytes(img: Image.Image) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def jpeg_bytes(img: Image.Image, **kwargs) -> bytes:
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=95, **kwargs)
    return buf.getvalue()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _cifar_rows(images: np.ndarray) -> np.ndarray:
    """(N, 32, 32, 3) images as CIFAR rows: 1024 red, 1024 green, 1024 blue bytes."""
    return images.transpose(0, 3, 1, 2).reshape(len(images), 3072)


def make_cifar10(path: Path, per_class=1, seed=0) -> dict:
    """Write a cifar-10-python.tar.gz layout; return the images and labels of each batch."""
    rng = np.random.default_rng(seed)
    names = ["data_batch_1", "data_batch_2", "data_batch_3", "data_batch_4", "data_batch_5", "test_batch"]
    written = {}
    with tarfile.open(path, "w:gz") as tar:
        meta = {b"label_names": [f"class{i}".encode() for i in range(10)], b"num_cases_per_batch": 10 * per_class}
        _add(tar, "cifar-10-batches-py/batches.meta", pickle.dumps(meta, protocol=2))
        for name in names:
            labels = rng.permutation(np.repeat(np.arange(10), per_class))
            images = rng.integers(0, 256, (len(labels), 32, 32, 3), dtype=np.uint8)
            batch = {
                b"batch_label": name.encode(),
                b"labels": labels.tolist(),
                b"data": _cifar_rows(images),
                b"filenames": [f"{name}_{i}.png".encode() for i in range(len(labels))],
            }
            _add(tar, f"cifar-10-batches-py/{name}", pickle.dumps(batch, protocol=2))
            written[name] = (images, labels)
        _add(tar, "cifar-10-batches-py/readme.html", b"<html></html>")
    return written


def make_cifar100(path: Path, seed=1) -> dict:
    """Write a cifar-100-python.tar.gz layout (coarse label = fine // 5); return what was written."""
    rng = np.random.default_rng(seed)
    written = {}
    with tarfile.open(path, "w:gz") as tar:
        meta = {
            b"fine_label_names": [f"fine{i}".encode() for i in range(100)],
            b"coarse_label_names": [f"coarse{i}".encode() for i in range(20)],
        }
        _add(tar, "cifar-100-python/meta", pickle.dumps(meta, protocol=2))
        for name, per_class in (("train", 2), ("test", 1)):
            fine = rng.permutation(np.repeat(np.arange(100), per_class))
            images = rng.integers(0, 256, (len(fine), 32, 32, 3), dtype=np.uint8)
            batch = {
                b"batch_label": name.encode(),
                b"fine_labels": fine.tolist(),
                b"coarse_labels": (fine // 5).tolist(),
                b"data": _cifar_rows(images),
                b"filenames": [f"{name}_{i}.png".encode() for i in range(len(fine))],
            }
            _add(tar, f"cifar-100-python/{name}", pickle.dumps(batch, protocol=2))
            written[name] = (images, fine)
    return written


CAT_COLOR, DOG_COLOR = (200, 30, 30), (30, 30, 200)


def make_petimages(path: Path) -> dict:
    """Write a kagglecatsanddogs-style zip with good, broken, odd-mode and non-image members."""
    noise = np.random.default_rng(2).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    truncated = jpeg_bytes(Image.fromarray(noise))
    alpha = np.zeros((6, 5, 4), np.uint8)
    alpha[..., :3] = (10, 20, 30)
    alpha[:3, :, 3] = 255  # top half opaque, bottom half transparent
    members = {
        "PetImages/Cat/0.jpg": jpeg_bytes(Image.new("RGB", (12, 10), CAT_COLOR)),
        "PetImages/Cat/1.jpg": jpeg_bytes(Image.new("RGB", (7, 9), CAT_COLOR)),
        "PetImages/Cat/2.jpg": jpeg_bytes(Image.new("CMYK", (8, 8), (255, 0, 0, 0))),
        "PetImages/Cat/666.jpg": b"",
        "PetImages/Cat/Thumbs.db": b"\xd0\xcf\x11\xe0 not an image",
        "PetImages/Dog/0.jpg": jpeg_bytes(Image.new("RGB", (16, 8), DOG_COLOR)),
        "PetImages/Dog/1.jpg": truncated[: len(truncated) // 2],
        "PetImages/Dog/2.png": png_bytes(Image.fromarray(alpha, "RGBA")),
        "PetImages/Dog/Thumbs.db": b"\xd0\xcf\x11\xe0 not an image",
        "readme[1].txt": b"Kaggle cats and dogs",
    }
    with zipfile.ZipFile(path, "w") as zf:
        for folder in ("PetImages/", "PetImages/Cat/", "PetImages/Dog/"):
            zf.writestr(folder, b"")
        for name, data in members.items():
            zf.writestr(name, data)
    return members


PCAM_SIZES = {"train": 7, "valid": 3, "test": 4}


def make_pcam(folder: Path, seed=3, sizes=None) -> dict:
    """Write the six PCam .h5.gz files with tiny 8x8 patches (`sizes`: patches per file part, default
    PCAM_SIZES); return {split: (x, y)}."""
    rng = np.random.default_rng(seed)
    written = {}
    for split, n in (sizes or PCAM_SIZES).items():
        x = rng.integers(0, 256, (n, 8, 8, 3), dtype=np.uint8)
        y = rng.integers(0, 2, (n, 1, 1, 1), dtype=np.uint8)
        for suffix, key, data in (("x", "x", x), ("y", "y", y)):
            buf = io.BytesIO()
            with h5py.File(buf, "w") as h5:
                h5.create_dataset(key, data=data)
            name = f"camelyonpatch_level_2_split_{split}_{suffix}.h5.gz"
            (folder / name).write_bytes(gzip.compress(buf.getvalue(), compresslevel=1))
        written[split] = (x, y.reshape(-1))
    return written


def make_imagefolder(root: Path) -> dict:
    """Write one class folder per odd image mode, plus files to ignore.

    Returns {key: expected RGB array} for the exactly decodable images;
    "rotated/exif6.jpg" (a 40 wide, 20 high JPEG tagged orientation 6,
    left half red, right half blue) is checked separately.
    """
    expected = {}

    def put(key, img, rgb, fmt="PNG", **kwargs):
        path = root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        img.save(path, fmt, **kwargs)
        if rgb is not None:
            expected[key] = np.asarray(rgb, dtype=np.uint8)

    gray = np.array([[0, 50], [200, 255]], np.uint8)
    put("gray/a.png", Image.fromarray(gray, "L"), np.repeat(gray[:, :, None], 3, axis=2))

    palette = Image.fromarray(np.array([[0, 1], [2, 1]], np.uint8), "P")
    palette.putpalette([255, 0, 0, 0, 255, 0, 0, 0, 255])
    put("palette/a.png", palette, [[[255, 255, 255], [0, 255, 0]], [[0, 0, 255], [0, 255, 0]]], transparency=0)

    rgba = np.array([[[10, 20, 30, 255], [10, 20, 30, 0]]], np.uint8)
    put("rgba/a.png", Image.fromarray(rgba, "RGBA"), [[[10, 20, 30], [255, 255, 255]]])

    la = np.array([[[0, 255], [0, 0], [90, 255]]], np.uint8)
    put("la/a.png", Image.fromarray(la, "LA"), [[[0, 0, 0], [255, 255, 255], [90, 90, 90]]])

    cmyk = Image.new("CMYK", (3, 1))
    cmyk.putdata([(255, 0, 0, 0), (0, 0, 0, 255), (0, 0, 0, 0)])
    put("cmyk/a.tif", cmyk, [[[0, 255, 255], [0, 0, 0], [255, 255, 255]]], fmt="TIFF")

    sixteen = np.array([[0, 1000, 25700, 65280, 65535]], np.uint16)  # -> 0, 3.9, 100, 254.0, 255
    put("sixteen/a.png", Image.fromarray(sixteen), np.repeat(np.array([[0, 4, 100, 254, 255]])[:, :, None], 3, axis=2))

    landscape = np.zeros((20, 40, 3), np.uint8)
    landscape[:, :20] = (255, 0, 0)
    landscape[:, 20:] = (0, 0, 255)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees clockwise to display
    put("rotated/exif6.jpg", Image.fromarray(landscape), None, fmt="JPEG", exif=exif.tobytes(), quality=95)

    (root / "gray" / "notes.txt").write_text("not an image")
    (root / "gray" / "Thumbs.db").write_bytes(b"\xd0\xcf\x11\xe0")
    (root / "gray" / "._a.png").write_bytes(b"AppleDouble")
    (root / ".DS_Store").write_bytes(b"\0")
    (root / "README.md").write_text("loose file")
    return expected
