"""Task `classification`: a sequence-classification head on an encoder (BERT, KcBERT) or a decoder (Llama).

The model predicts the label from its head instead of generating it, which is what encoder models
need and is often cheaper for decoders too.
"""

from __future__ import annotations

import torch
from datasets import Dataset
from transformers import AutoModelForSequenceClassification, PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.errors import DomaintuneError


def load_classifier(source: str, labels: list[str], revision: str | None = None) -> PreTrainedModel:
    """The model with a fresh (or, for a fine-tuned folder, its saved) head for `labels`."""
    try:
        model = AutoModelForSequenceClassification.from_pretrained(
            source,
            revision=revision,
            num_labels=len(labels),
            id2label=dict(enumerate(labels)),
            label2id={label: i for i, label in enumerate(labels)},
            dtype=torch.float32,
        )
    except (OSError, ValueError) as exc:
        raise DomaintuneError(f"could not load '{source}' for classification: {str(exc).splitlines()[0]}; "
                              "see docs/troubleshooting.md#model-not-found") from None
    return model


def set_pad_token(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase) -> None:
    # Decoder classifiers read the last non-pad token, so the model must know which id is padding.
    if model.config.pad_token_id is None:
        model.config.pad_token_id = tokenizer.pad_token_id


def encode_classification(
    rows: list[dict], tokenizer: PreTrainedTokenizerBase, labels: list[str], max_length: int
) -> Dataset:
    index = {label: i for i, label in enumerate(labels)}
    encoded = []
    for row in rows:
        if row["label"] not in index:
            raise DomaintuneError(f"row {row['id']}: label '{row['label']}' is not among the labels {labels}")
        ids = tokenizer(row["text"], truncation=True, max_length=max_length)["input_ids"]
        encoded.append({"input_ids": ids, "labels": index[row["label"]], "length": len(ids)})
    return Dataset.from_list(encoded)


@torch.no_grad()
def label_logits(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    texts: list[str],
    max_length: int,
    batch_size: int,
) -> torch.Tensor:
    """The head's logits, shape (texts, labels) in the head's label order; the prediction is each row's
    argmax, and the rows are kept whole for predictions.jsonl.

    Batches hold texts of similar length, so a batch pads to little more than its own rows: reviews run
    from a few tokens to `max_length`, and batches in file order padded every row to about the longest
    of eight. Each row's logits go back to its text's place.
    """
    lengths = [len(ids) for ids in tokenizer(texts, truncation=True, max_length=max_length)["input_ids"]]
    order = sorted(range(len(texts)), key=lengths.__getitem__)
    logits = torch.zeros(len(texts), model.config.num_labels)
    for start in range(0, len(order), batch_size):
        rows = order[start : start + batch_size]
        batch = tokenizer([texts[i] for i in rows], truncation=True, max_length=max_length, padding=True,
                          return_tensors="pt")
        logits[rows] = model(**batch).logits.float()
    return logits
