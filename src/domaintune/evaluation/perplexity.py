"""Each document's summed negative log-likelihood, over all of its tokens in overlapping windows.

A document longer than `evaluate.max_length` is read in windows of max_length tokens whose starts are
`stride` apart (the strided evaluation of the Hugging Face perplexity guide): a later window's first
`max_length - stride` tokens are context only, already scored by the window before, so every token after
the document's first is scored exactly once and (except near the start) with at least that much context.
`first_window` scores only the first window, as evaluate did before documents were read whole.

The window plan is written here because transformers has no evaluation helper for it (the guide is a
loop over one document at a time); windows of many documents are batched by length, as label scoring is.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.evaluation.scoring import length_sorted_batches, progress, right_pad
from domaintune.modeling.render import encode_text


@dataclass(frozen=True)
class Window:
    document: int
    begin: int  # the window is the document's tokens [begin, end)
    end: int
    first_scored: int  # tokens [first_scored, end) are scored; those before are context only


@dataclass
class DocumentLosses:
    """Per document: summed NLL in nats of its scored tokens, how many were scored, and its length."""

    nll: list[float]
    tokens: list[int]
    lengths: list[int]


def windows(document: int, length: int, max_length: int, stride: int, whole_document: bool = True) -> list[Window]:
    """The windows that score a document of `length` tokens; none when no token has context."""
    found = []
    begin, scored_to = 0, 1  # the first token has no context, so nothing predicts it
    while True:
        end = min(begin + max_length, length)
        first = max(scored_to, begin + 1)  # a window's own first token has no context in it either
        if first < end:
            found.append(Window(document, begin, end, first))
        if end >= length or not whole_document:
            return found
        begin, scored_to = begin + stride, end


def encode_documents(tokenizer: PreTrainedTokenizerBase, texts: list[str]) -> list[list[int]]:
    return [encode_text(tokenizer, text, None).input_ids for text in texts]


@torch.no_grad()
def document_losses(
    model: PreTrainedModel, pad_id: int, documents: list[list[int]], max_length: int, batch_size: int,
    stride: int, whole_document: bool = True,
) -> DocumentLosses:
    plan = [w for i, ids in enumerate(documents)
            for w in windows(i, len(ids), max_length, stride, whole_document)]
    nll, tokens = [0.0] * len(documents), [0] * len(documents)
    for batch in progress(length_sorted_batches([w.end - w.begin for w in plan], batch_size), "perplexity"):
        chosen = [plan[i] for i in batch]
        ids, mask = right_pad([documents[w.document][w.begin : w.end] for w in chosen], pad_id)
        logits = model(input_ids=ids, attention_mask=mask).logits[:, :-1].float()
        scored = torch.zeros(ids.shape[0], ids.shape[1] - 1, dtype=torch.bool)
        for row, w in enumerate(chosen):  # target j is the window's token j + 1
            scored[row, w.first_scored - w.begin - 1 : w.end - w.begin - 1] = True
        # One row per scored position: over a (batch, vocab, length) view, cross_entropy's float32 sum
        # runs along a strided vocabulary and lost 1.4e-4 nats per token against float64 on SmolLM2's
        # 49k vocabulary; rows of contiguous logits stay within 1e-5. Per-document sums in float64.
        losses = torch.nn.functional.cross_entropy(logits[scored], ids[:, 1:][scored], reduction="none")
        per_row = torch.zeros(len(chosen), dtype=torch.float64).index_add_(
            0, scored.nonzero()[:, 0], losses.double())
        for row, w in enumerate(chosen):
            nll[w.document] += per_row[row].item()
            tokens[w.document] += w.end - w.first_scored
    return DocumentLosses(nll, tokens, [len(ids) for ids in documents])


def text_losses(model: PreTrainedModel, tokenizer: PreTrainedTokenizerBase, texts: list[str], max_length: int,
                batch_size: int, stride: int | None = None, scope: str = "whole_document") -> DocumentLosses:
    """`document_losses` of raw texts; `stride` unset: max_length // 2, as `evaluate.stride`."""
    return document_losses(model, tokenizer.pad_token_id, encode_documents(tokenizer, texts), max_length,
                           batch_size, stride or max_length // 2, scope == "whole_document")
