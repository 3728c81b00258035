"""Class imbalance: per-class loss weights for a classification head, a label-balanced sampler for SFT.

The drug reviews are 64% positive and 9% neutral; a plain loss can reach 70% accuracy without ever
answering "neutral", which macro-F1 punishes. `train.class_weights=balanced` weighs the head's loss by
scikit-learn's rule; `train.balanced_sampler` draws SFT rows so that each label is seen equally often.
"""

from __future__ import annotations

from collections import Counter

import numpy as np
import torch
from sklearn.utils.class_weight import compute_class_weight
from torch.utils.data import WeightedRandomSampler

from domaintune.core.errors import DomaintuneError


def balanced_class_weights(row_labels: list[str], labels: list[str]) -> torch.Tensor:
    """rows / (classes x rows of the class), in `labels` order; a label without training rows is an error,
    since no weight would make the head learn it."""
    missing = [label for label in labels if label not in set(row_labels)]
    if missing:
        raise DomaintuneError(f"train.class_weights=balanced: no training row has label(s) {missing}; "
                              "raise train.max_train_rows or set train.class_weights=none")
    weights = compute_class_weight("balanced", classes=np.array(labels), y=np.array(row_labels))
    return torch.tensor(weights, dtype=torch.float32)


class WeightedHeadLoss:
    """A Trainer `compute_loss_func`: cross-entropy with per-class weights, summed per row and divided by the
    rows of the (accumulated) batch.

    Dividing by rows rather than by the batch's summed weights keeps the Trainer's contract for
    `num_items_in_batch` (one normaliser for all gradient-accumulation steps), and since balanced weights
    average 1 over the training split the loss stays on the scale of the unweighted one.
    """

    def __init__(self, weights: torch.Tensor) -> None:
        self.weights = weights

    def __call__(self, outputs, labels: torch.Tensor, num_items_in_batch: torch.Tensor | int | None = None):
        logits = outputs["logits"] if isinstance(outputs, dict) else outputs[0]
        losses = torch.nn.functional.cross_entropy(
            logits.float(), labels.to(logits.device), weight=self.weights.to(logits.device), reduction="none"
        )
        rows = num_items_in_batch if num_items_in_batch is not None else labels.numel()
        return losses.sum() / rows


class BalancedLabelSampler(WeightedRandomSampler):
    """Rows drawn with replacement, each with probability 1 / (labels x rows of its label): every label is
    equally likely at every draw. An epoch draws as many rows as the split holds.

    Each epoch's draws depend only on seed + epoch (the Trainer calls `set_epoch`), not on the process's
    random state, so a resumed run draws the same rows as an uninterrupted one.
    """

    def __init__(self, row_labels: list[str], seed: int) -> None:
        counts = Counter(row_labels)
        weights = [1.0 / counts[label] for label in row_labels]
        super().__init__(weights, num_samples=len(row_labels), replacement=True, generator=torch.Generator())
        self.seed, self.epoch = seed, 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = epoch

    def __iter__(self):
        self.generator.manual_seed(self.seed + self.epoch)
        return super().__iter__()
