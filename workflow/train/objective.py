"""The training loss: cross-entropy with label smoothing, InceptionV3's auxiliary loss, and mixup.

A sigmoid output (a head of layers with `output: sigmoid`) hands on its logit z as the two classes'
logits (0, z) (workflow.train.layered_heads.TwoClassLogits), whose cross-entropy is the binary
cross-entropy of z: Keras's loss for that output, with no loss of its own here."""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from workflow.core.cell import TrainingSettings


class Objective:
    """The training loss: cross-entropy with label smoothing, InceptionV3's auxiliary share, mixup."""

    def __init__(self, training: TrainingSettings, seed: int):
        self.criterion = nn.CrossEntropyLoss(label_smoothing=training.label_smoothing)
        self.aux_weight = training.aux_loss_weight
        self.mixup = training.mixup
        self.rng = np.random.default_rng(seed)  # mixup's draws; its state is checkpointed

    def loss(self, output, labels: torch.Tensor) -> torch.Tensor:
        if isinstance(output, tuple):  # (logits, auxiliary logits)
            return self.criterion(output[0].float(), labels) + self.aux_weight * self.criterion(output[1].float(), labels)
        return self.criterion(output.float(), labels)

    def mix(self, x: torch.Tensor, labels: torch.Tensor):
        """(what the model sees, targets): mixup blends the batch with a shuffled copy of itself,
        drawn here once per batch (so micro-batches share it); without mixup, the batch itself."""
        if self.mixup > 0:
            lam = float(self.rng.beta(self.mixup, self.mixup))
            perm = torch.from_numpy(self.rng.permutation(len(labels))).to(labels.device)
            return lam * x + (1 - lam) * x[perm], (labels, labels[perm], lam)
        return x, (labels, None, 1.0)

    def score(self, output, targets, part: slice = slice(None)) -> torch.Tensor:
        """The mean loss of `output` against the images `part` of `targets` (from `mix`)."""
        labels, mixed_with, lam = targets
        if mixed_with is None:
            return self.loss(output, labels[part])
        return lam * self.loss(output, labels[part]) + (1 - lam) * self.loss(output, mixed_with[part])


def logits_of(output) -> torch.Tensor:
    """The main logits of a model's output ((logits, auxiliary logits) in training, for InceptionV3)."""
    return output[0] if isinstance(output, tuple) else output
