"""Classifying new images with an exported or trained model: the `predict` command.

The model is an export folder (its TorchScript or ONNX model and preprocess.json) or a cell's
best.pt; the images are a folder (searched recursively; hidden and non-image files are passed over)
or a CSV file of paths (its `path` column, or one path a line; relative paths are relative to the
CSV's folder). Images are decoded and resized by the function that prepared the training data
(workflow.data.prepare.prepare_files) and normalised by the one training used
(workflow.data.normalize.Normalizer), in batches, on the GPU when there is one. The output CSV has
one row per image: its path, the top-k classes with their probabilities, and `error`, which says
why a file that could not be decoded was skipped (its other columns are then empty). The CSV is
UTF-8, written under a temporary name and renamed when whole; a file name's bytes that are not
UTF-8 are written as `\\xNN` (`readable`).
"""

from __future__ import annotations

import csv
import re
from pathlib import Path

import numpy as np
import torch

from workflow.atomic import atomic_path
from workflow.data.normalize import Normalizer
from workflow.data.prepare import prepare_files
from workflow.data.resize import resize_mode_of
from workflow.data.sources.images import ignore_reason
from workflow.export.runners import open_model
from workflow.train.runtime import pick_device


def read_path_list(path: str | Path) -> list[str]:
    """The image paths a CSV file lists: its `path` column, or without a `path` header its first
    column, one path a line; relative paths are taken from the CSV file's folder."""
    path = Path(path)
    with open(path, newline="", encoding="utf-8", errors="surrogateescape") as f:  # names as the file system has them
        rows = [row for row in csv.reader(f) if row and row[0].strip()]
    header = [name.strip() for name in rows[0]] if rows else []
    column, body = (header.index("path"), rows[1:]) if "path" in header else (0, rows)
    return [str(path.parent / row[column].strip()) for row in body if len(row) > column and row[column].strip()]


def list_images(source: str | Path) -> list[str]:
    """The images to classify: an image folder's files (sorted, recursively) or a CSV file's paths."""
    source = Path(source)
    if source.is_dir():
        return [str(path) for path in sorted(source.rglob("*"))
                if path.is_file() and ignore_reason(path.relative_to(source).as_posix()) is None]
    if source.is_file() and source.suffix.lower() == ".csv":
        return read_path_list(source)
    raise ValueError(f"{source} is neither a folder of images nor a CSV file of image paths")


def class_scores(runner, preprocess: dict, images: np.ndarray, batch_size: int = 64) -> np.ndarray:
    """Class probabilities (N, classes) of prepared uint8 images (N, H, W, 3), as training's
    evaluation computes them: normalised by Normalizer, then the model, then softmax."""
    norm = preprocess["normalization"]
    device = getattr(runner, "device", torch.device("cpu"))
    normalize = Normalizer(norm["mean"], norm["std"], device)
    out = []
    for start in range(0, len(images), batch_size):
        batch = torch.from_numpy(np.ascontiguousarray(images[start:start + batch_size])).to(device)
        out.append(runner(normalize(batch.permute(0, 3, 1, 2))).float().softmax(1).cpu().numpy())
    return np.concatenate(out) if out else np.zeros((0, len(preprocess["class_names"])), np.float32)


def prediction_table_columns(k: int) -> list[str]:
    return ["path", *[f"{name}_{i}" for i in range(1, k + 1) for name in ("class", "probability")], "error"]


def top_k_row(path: str, scores: np.ndarray, class_names: list[str], k: int) -> dict:
    """One image's row: its k most probable classes, most probable first."""
    order = np.argsort(-scores, kind="stable")[:k]
    row = {"path": path, "error": ""}
    for i, label in enumerate(order, start=1):
        row[f"class_{i}"], row[f"probability_{i}"] = class_names[label], float(scores[label])
    return row


def classify_files(runner, preprocess: dict, paths: list[str], k: int, batch_size: int = 64) -> list[dict]:
    """Rows (`top_k_row`) for every path in order; a file that does not decode gets its reason in `error`."""
    size, names = preprocess["input"]["size"], preprocess["class_names"]
    mode = resize_mode_of(preprocess["resize"]["method"])  # the images prepared as the training data was
    rows = []
    for start in range(0, len(paths), batch_size):
        block = paths[start:start + batch_size]
        images, good, skipped = prepare_files(block, size, mode)
        scores = class_scores(runner, preprocess, images, batch_size)
        done = {position: top_k_row(block[position], scores[i], names, k) for i, position in enumerate(good)}
        reasons = iter(skipped)
        for position, path in enumerate(block):
            rows.append(done[position] if position in done else {"path": path, "error": next(reasons).reason})
    return rows


SURROGATE = re.compile("[\ud800-\udfff]")


def readable(text: str) -> str:
    """`text` as valid UTF-8: a file name's byte that is not UTF-8 (which Python holds as a surrogate
    escape, U+DC80-U+DCFF) as `\\xNN`, any other lone surrogate as `\\uNNNN`."""
    def escape(match):
        code = ord(match.group())
        return f"\\x{code - 0xDC00:02x}" if code >= 0xDC80 else f"\\u{code:04x}"

    return SURROGATE.sub(escape, text)


def write_prediction_table(rows: list[dict], out: str | Path, k: int) -> None:
    """The predictions CSV (UTF-8, `readable` text): prediction_table_columns(k), empty cells where a
    skipped file has none; written atomically, a failed write is a StorageError naming `out`."""
    with atomic_path(out) as tmp, open(tmp, "w", newline="", encoding="utf-8") as f:
        writer = csv.DictWriter(f, fieldnames=prediction_table_columns(k), restval="")
        writer.writeheader()
        writer.writerows({key: readable(value) if isinstance(value, str) else value for key, value in row.items()}
                         for row in rows)


def predict_images(model: str | Path, source: str | Path, out: str | Path, top_k: int = 5, batch_size: int = 64,
                   device: str | None = None, log=print) -> dict:
    """Classify the images of `source` with `model` (export folder or best.pt) into the CSV `out`;
    returns {"predicted": count, "skipped": [{"path", "error"}]} (skipped files are listed, not fatal)."""
    device = torch.device(device) if device else pick_device()
    runner, preprocess = open_model(model, device)
    paths = list_images(source)
    k = max(1, min(top_k, len(preprocess["class_names"])))
    log(readable(f"{len(paths)} images from {source}; model {preprocess['model']} ({preprocess.get('cell')}) on "
                 f"{device}, {preprocess['input']['size']} x {preprocess['input']['size']} input"))
    rows = classify_files(runner, preprocess, paths, k, batch_size)
    write_prediction_table(rows, out, k)
    skipped = [{"path": row["path"], "error": row["error"]} for row in rows if row["error"]]
    for entry in skipped:
        log(readable(f"skipped {entry['path']}: {entry['error']}"))
    log(readable(f"wrote {out}: {len(rows) - len(skipped)} images classified, {len(skipped)} skipped"))
    return {"predicted": len(rows) - len(skipped), "skipped": skipped}
