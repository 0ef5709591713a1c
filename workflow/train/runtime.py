"""Where and how a training process computes: the device, torch's backend settings, the seeds, and
the library versions a result was produced with."""

from __future__ import annotations

import os
import platform
import random

import numpy as np
import torch
import torchvision


def pick_device() -> torch.device:
    """The GPU when there is one, otherwise the CPU."""
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def configure_backends(device: torch.device, deterministic: bool) -> None:
    """Deterministic algorithms for repeatable runs; on a GPU otherwise cuDNN autotuning and TF32."""
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # before cuBLAS starts
    torch.use_deterministic_algorithms(deterministic, warn_only=True)
    if device.type == "cuda":
        torch.backends.cudnn.deterministic = deterministic
        torch.backends.cudnn.benchmark = not deterministic
        torch.set_float32_matmul_precision("highest" if deterministic else "high")


def seed_everything(seed: int) -> None:
    """Seed Python's, NumPy's and torch's global random generators."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def versions() -> dict:
    """The library versions a result was produced with."""
    return {
        "python": platform.python_version(), "torch": torch.__version__, "torchvision": torchvision.__version__,
        "numpy": np.__version__, "cuda": torch.version.cuda,
        "cudnn": torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else None,
    }


PRECISIONS = ("auto", "bf16", "fp16", "fp32")
AUTOCAST_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


def resolve_precision(setting: str, device: torch.device) -> str:
    """`training.precision` on `device`: `auto` is bf16 on a GPU that computes in bf16 natively
    (is_bf16_supported without emulation: not a V100 or T4), fp16 on other GPUs, fp32 on the CPU;
    bf16, fp16 and fp32 are taken as given."""
    if setting not in PRECISIONS:
        raise ValueError(f"training.precision: unknown value {setting!r}; choose one of {list(PRECISIONS)}")
    if setting != "auto":
        return setting
    if device.type != "cuda":
        return "fp32"
    return "bf16" if torch.cuda.is_bf16_supported(including_emulation=False) else "fp16"


class Precision:
    """A training process's arithmetic: autocast to bf16 or fp16 (fp16 with a GradScaler, whose steps
    with inf/NaN gradients are skipped), or plain fp32."""

    def __init__(self, setting: str, device: torch.device):
        self.name = resolve_precision(setting, device)
        self.device_type = device.type
        self.scaler = torch.amp.GradScaler(device.type) if self.name == "fp16" else None
        self.skipped_steps = 0  # fp16 steps the scaler skipped (inf/NaN gradients)

    def autocast(self):
        """The autocast context of this precision (disabled for fp32)."""
        return torch.autocast(self.device_type, dtype=AUTOCAST_DTYPES.get(self.name, torch.float32),
                              enabled=self.name in AUTOCAST_DTYPES)

    def backward(self, loss: torch.Tensor) -> None:
        (loss if self.scaler is None else self.scaler.scale(loss)).backward()

    def step(self, optimizer: torch.optim.Optimizer) -> bool:
        """Step the optimizer (through the scaler for fp16); False when the scaler skipped the step."""
        if self.scaler is None:
            optimizer.step()
            return True
        scale = self.scaler.get_scale()
        self.scaler.step(optimizer)
        self.scaler.update()
        skipped = self.scaler.get_scale() < scale  # the scale backs off exactly when inf/NaN was found
        self.skipped_steps += skipped
        return not skipped
