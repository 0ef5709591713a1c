"""Exporting a cell's trained model: TorchScript, ONNX and preprocess.json in one folder.

`export_model` rebuilds the model from its checkpoint (workflow.export.checkpoint.load_model),
traces it in eval mode to TorchScript (torchscript.pt, preprocess.json embedded as an extra file),
exports it to ONNX (model.onnx, opset ONNX_OPSET, input `images` N x 3 x H x W float with a dynamic
batch dimension, output `logits`), then runs both on a batch of another size than the one they were
made with and refuses them unless their logits equal PyTorch's within TOLERANCE (times the largest
logit where that is above 1). preprocess.json
says how to prepare an image (decode to RGB, resize method and size, normalisation), the class
names, the checks' results and, for a recommended configuration, what it was chosen on with its
test interval (`chosen`, from the `best` table). SHA256SUMS, the SHA-256 of every file, is removed
first and written last (workflow.export.checksums), so that an interrupted export is refused.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import torch

from workflow.atomic import write_json
from workflow.export.checkpoint import ModelCard, load_model
from workflow.export.checksums import CHECKSUMS, write_checksums
from workflow.export.runners import FILES, INPUT_NAME, OUTPUT_NAME, PREPROCESS, OnnxRunner, TorchRunner, \
    load_torchscript, preprocess_description

ONNX_OPSET = 20
TOLERANCE = 1e-4  # largest difference from PyTorch's logits an exported model may show (relative beyond 1)


class ExportError(RuntimeError):
    """An exported model whose logits differ from the PyTorch model's."""


def example_batch(card: ModelCard, size: int, seed: int = 0) -> torch.Tensor:
    """A reproducible batch of `size` images of random pixels, normalised as the model's input is."""
    generator = torch.Generator().manual_seed(seed)
    pixels = torch.randint(0, 256, (size, 3, card.resolution, card.resolution), generator=generator)
    mean, std = (torch.tensor(values).view(1, 3, 1, 1) for values in (card.mean, card.std))
    return (pixels / 255 - mean) / std


def export_torchscript(model, example: torch.Tensor, path: str | Path, preprocess: dict) -> None:
    """Trace the eval-mode model on `example` and save it with preprocess.json as an extra file."""
    with warnings.catch_warnings():  # torch.jit is deprecated in favour of torch.export, still supported
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(model.eval(), example)
        traced.save(str(path), _extra_files={PREPROCESS: json.dumps(preprocess)})


def export_onnx(model, example: torch.Tensor, path: str | Path) -> None:
    """Export the eval-mode model to one ONNX file whose batch dimension is dynamic."""
    batch = torch.export.Dim("batch", min=1)
    torch.onnx.export(model.eval(), (example,), str(path), input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                      dynamic_shapes=({0: batch},), opset_version=ONNX_OPSET, dynamo=True, external_data=False,
                      verbose=False)


def verify_exports(model, card: ModelCard, paths: dict[str, Path]) -> dict:
    """Run each exported model on a fresh batch (of another size than the traced one) and compare
    its logits with the PyTorch model's: {format: the largest absolute difference and what was
    allowed}. Allowed is TOLERANCE times the largest logit, at least TOLERANCE (float32 logits in
    the thousands differ in their last bits); ExportError beyond it."""
    batch = example_batch(card, 3, seed=1)
    reference = TorchRunner(model, torch.device("cpu"))(batch)
    allowed = TOLERANCE * max(1.0, reference.abs().max().item())
    runners = {"torchscript": load_torchscript, "onnx": OnnxRunner}
    checks = {}
    for fmt, path in paths.items():
        difference = (runners[fmt](path)(batch) - reference).abs().max().item()
        if not difference <= allowed:
            raise ExportError(f"{path}: its logits differ from the PyTorch model's by {difference:.3g} "
                              f"(at most {allowed:.3g} allowed)")
        checks[fmt] = {"batch": len(batch), "max_abs_logit_difference": difference, "allowed": allowed}
    return checks


def export_model(checkpoint: str | Path, out_dir: str | Path, formats=("torchscript", "onnx"),
                 chosen: dict | None = None, log=print) -> dict:
    """Export a cell's checkpoint into `out_dir` in `formats` (FILES) with preprocess.json; every
    exported model is checked against PyTorch's (`verify_exports`), then SHA256SUMS written. Returns
    preprocess.json's content."""
    unknown = sorted(set(formats) - set(FILES))
    if unknown:
        raise ValueError(f"unknown export formats {unknown}; choose from {list(FILES)}")
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for name in (CHECKSUMS, *FILES.values()):  # the sums first: until they are written again, the folder is refused
        (out_dir / name).unlink(missing_ok=True)
    model, card = load_model(checkpoint)
    files = {fmt: FILES[fmt] for fmt in FILES if fmt in formats}
    example = example_batch(card, 2)
    if "onnx" in files:
        export_onnx(model, example, out_dir / files["onnx"])
        log(f"wrote {out_dir / files['onnx']}")
    if "torchscript" in files:
        export_torchscript(model, example, out_dir / files["torchscript"], preprocess_description(card, chosen, files))
        log(f"wrote {out_dir / files['torchscript']}")
    checks = verify_exports(model, card, {fmt: out_dir / name for fmt, name in files.items()})
    for fmt, check in checks.items():
        log(f"{fmt}: logits within {check['max_abs_logit_difference']:.2g} of PyTorch's")
    preprocess = preprocess_description(card, chosen, files, checks)
    write_json(out_dir / PREPROCESS, preprocess)
    write_checksums(out_dir, [PREPROCESS, *files.values()])
    log(f"wrote {out_dir / CHECKSUMS}")
    return preprocess
