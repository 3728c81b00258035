"""Batches for causal-LM and SFT training: packed rows, and logits only where a loss is taken.

Two things make a CPU step cheaper without changing what is learned:
- Packing (`pack_rows`): whole examples share a row of `max_length` tokens, so no step pays for padding.
  Each example keeps its own positions (0, 1, ...) and attends only to itself: transformers builds that
  block-diagonal mask from `position_ids` when no `attention_mask` and no cache reach the model. A packed
  example's logits equal those of running it alone (tests/test_batching.py).
- Loss positions (`LossPositionsCollator`): the LM head (49,152 x 576 on SmolLM2) and its softmax run
  only at positions followed by a labelled token, through transformers' own `logits_to_keep` (a boolean
  mask) and `shift_labels`. For answer-only SFT that is a few positions per row instead of all of them;
  the loss and its gradients equal plain padding's.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from datasets import Dataset
from transformers import PreTrainedModel

from domaintune.modeling.render import IGNORE_INDEX


def pack_rows(dataset: Dataset, max_length: int, split_long: bool) -> Dataset:
    """Examples packed best-fit-decreasing into rows of at most `max_length` tokens (TRL's `pack_dataset`).

    `split_long` (causal-lm) cuts a longer document into `max_length` pieces, so no token is lost; without
    it (SFT, whose rows already fit) an example is never split from its answer.
    """
    from trl import pack_dataset

    packed = pack_dataset(
        dataset.select_columns(["input_ids", "labels"]), max_length, strategy="bfd_split" if split_long else "bfd"
    )
    return packed.map(lambda row: {"length": len(row["input_ids"])})


@dataclass
class LossPositionsCollator:
    """Pads a batch to its longest row and says where the loss is taken.

    Emits `shift_labels` (the next token's label at every position, -100 at the end of each packed
    example so that none predicts its neighbour's first token), and with `keep_logits` a boolean
    `logits_to_keep` that restricts the head to the labelled positions. Packed rows also get
    `position_ids` that restart at each example; `drop_mask_for_packed_rows` then keeps their
    `attention_mask` (which the Trainer counts real tokens from) away from the model, since with a
    mask transformers no longer separates the examples.
    """

    pad_token_id: int
    keep_logits: bool = True

    def __call__(self, features: list[dict]) -> dict[str, torch.Tensor | bool]:
        width = max(len(f["input_ids"]) for f in features)
        shape = (len(features), width)
        input_ids = torch.full(shape, self.pad_token_id, dtype=torch.long)
        labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        shift_labels = torch.full(shape, IGNORE_INDEX, dtype=torch.long)
        attention_mask = torch.zeros(shape, dtype=torch.long)
        position_ids = torch.zeros(shape, dtype=torch.long)
        packed = False
        for i, feature in enumerate(features):
            n = len(feature["input_ids"])
            input_ids[i, :n] = torch.tensor(feature["input_ids"])
            labels[i, :n] = torch.tensor(feature["labels"])
            attention_mask[i, :n] = 1
            segments = feature.get("seq_lengths") or [n]
            packed |= len(segments) > 1
            start = 0
            for length in [*segments, width - n]:  # the padding tail is a segment of its own
                position_ids[i, start:start + length] = torch.arange(length)
                shift_labels[i, start:start + length - 1] = labels[i, start + 1:start + length]
                start += length
        batch: dict[str, torch.Tensor | bool] = {
            "input_ids": input_ids,
            "labels": labels,
            "attention_mask": attention_mask,
            # A cache built during training makes transformers skip packed-sequence detection.
            "use_cache": False,
        }
        if packed:
            batch["position_ids"] = position_ids
        if self.keep_logits:
            keep = shift_labels != IGNORE_INDEX
            batch["logits_to_keep"] = keep
            batch["shift_labels"] = shift_labels[keep]
        else:
            batch["shift_labels"] = shift_labels
        return batch


def drop_mask_for_packed_rows(module: torch.nn.Module, args: tuple, kwargs: dict) -> tuple[tuple, dict]:
    """Forward pre-hook: a batch with `position_ids` (packed rows) reaches the model without its padding mask."""
    if kwargs.get("position_ids") is not None and "attention_mask" in kwargs:
        kwargs = {key: value for key, value in kwargs.items() if key != "attention_mask"}
    return args, kwargs


def takes_loss_positions(model: PreTrainedModel) -> bool:
    """Whether `model` accepts a boolean `logits_to_keep` with `shift_labels` (transformers' causal LMs do).

    Probed with one 4-token forward, so a model with its own head code falls back to full logits.
    """
    ids = torch.tensor([[1, 2, 3, 4]], device=model.device) % model.config.vocab_size
    keep = torch.tensor([[True, False, True, False]], device=model.device)
    try:
        with torch.no_grad():
            out = model(input_ids=ids, labels=ids, logits_to_keep=keep, shift_labels=ids[0, 1:3], use_cache=False)
    except (TypeError, ValueError, RuntimeError, IndexError):
        return False
    return tuple(out.logits.shape[:-1]) == (2,) and bool(torch.isfinite(out.loss))
