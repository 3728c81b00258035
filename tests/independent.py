"""Evaluation figures worked out the plain way, to check evaluate's figures against.

Nothing here uses domaintune's scoring: one text per forward pass (no batching, no padding, no KV cache
shared between answers), prompts rendered straight from the tokenizer's chat template, metrics from
scikit-learn. evaluate batches by length, pads, and scores answers over a cached prompt; if any of that
changed a figure, the two would disagree.
"""

from __future__ import annotations

import math

import torch
from sklearn.metrics import accuracy_score, confusion_matrix, f1_score

# evaluate writes test_loss rounded to 5 decimals (up to 5e-6 off); batching and padding change the
# float32 sums by about 1e-7 relative, far below that. Perplexity is rounded to 4 decimals.
LOSS_TOLERANCE = 1e-5


@torch.no_grad()
def perplexity_by_hand(model, tokenizer, texts: list[str], max_length: int, stride: int | None = None,
                       whole_document: bool = True) -> dict:
    """Token-weighted mean negative log-likelihood of each text's own tokens from the second on, read as
    the Hugging Face perplexity guide reads a long text: windows of `max_length` tokens `stride` apart
    (default max_length // 2), one at a time, each scoring only the tokens the window before did not
    reach. `whole_document=False`: the first window only."""
    stride = stride or max_length // 2
    total, count = 0.0, 0
    for text in texts:
        ids = tokenizer(text, add_special_tokens=False, return_tensors="pt")["input_ids"]
        length, reached = ids.shape[1], 1
        for begin in range(0, length, stride):
            end = min(begin + max_length, length)
            window = ids[:, begin:end]
            logprobs = model(input_ids=window).logits[0, :-1].float().log_softmax(-1)
            token_logprobs = logprobs.gather(-1, window[0, 1:, None])[:, 0]  # entry j: token begin + j + 1
            new = end - max(reached, begin + 1)  # never negative: reached <= end, and begin < end
            total -= token_logprobs[len(token_logprobs) - new:].sum().item()
            count += new
            reached = end
            if end == length or not whole_document:
                break
    return {"test_loss": total / count, "perplexity": math.exp(total / count), "tokens_scored": count}


def assert_same_perplexity(metrics: dict, by_hand: dict, prefix: str = "", counted: bool = True):
    """`prefix` "general_" checks the forgetting figures (evaluate keeps no loss for them); without
    `counted` the figures carry no token count (compare's rows)."""
    if counted:
        assert metrics[f"{prefix}tokens_scored"] == by_hand["tokens_scored"]
    if not prefix:
        assert abs(metrics["test_loss"] - by_hand["test_loss"]) < LOSS_TOLERANCE, (metrics["test_loss"], by_hand)
    # exp() carries the loss's error over as a relative one; the 4-decimal rounding adds 5e-5 at most.
    assert math.isclose(metrics[f"{prefix}perplexity"], by_hand["perplexity"], rel_tol=LOSS_TOLERANCE,
                        abs_tol=5e-5), (metrics[f"{prefix}perplexity"], by_hand)


def _conversation(instruction: str, text: str, system: str | None) -> list[dict]:
    turns = [{"role": "system", "content": system}] if system else []
    return turns + [{"role": "user", "content": f"{instruction}\n\n{text}"}]


@torch.no_grad()
def answer_predictions_by_hand(model, tokenizer, instruction: str, texts: list[str], labels: list[str],
                               max_length: int, system: str | None = None) -> list[str]:
    """For each text, the label whose answer (up to end of turn) the model finds most likely after the
    chat-template prompt; prompt + answer run as one sequence, one at a time."""
    predicted = []
    for text in texts:
        messages = _conversation(instruction, text, system)
        head = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
        head_ids = tokenizer(head, add_special_tokens=False)["input_ids"]
        scores = []
        for label in labels:
            full = tokenizer.apply_chat_template(messages + [{"role": "assistant", "content": label}], tokenize=False)
            answer = full[len(head):]
            answer = answer[: answer.index(tokenizer.eos_token) + len(tokenizer.eos_token)]
            ids = tokenizer(head + answer, add_special_tokens=False)["input_ids"]
            assert ids[: len(head_ids)] == head_ids and len(ids) <= max_length, "scored as evaluate scores it"
            logprobs = model(input_ids=torch.tensor([ids])).logits[0, :-1].float().log_softmax(-1)
            targets = torch.tensor(ids[1:])
            scores.append(logprobs.gather(-1, targets[:, None])[len(head_ids) - 1:].sum().item())
        predicted.append(labels[max(range(len(labels)), key=scores.__getitem__)])
    return predicted


@torch.no_grad()
def head_predictions_by_hand(model, tokenizer, texts: list[str], labels: list[str], max_length: int) -> list[str]:
    """A sequence-classification head's argmax, one text at a time."""
    predicted = []
    for text in texts:
        batch = tokenizer(text, truncation=True, max_length=max_length, return_tensors="pt")
        predicted.append(labels[int(model(**batch).logits[0].argmax())])
    return predicted


def assert_same_classification(metrics: dict, gold: list[str], predicted: list[str], labels: list[str]):
    """The confusion matrix pins down which label each row got (accuracy alone cannot tell apart two
    wrong answers on balanced data); evaluate rounds accuracy and macro-F1 to 5 decimals."""
    assert metrics["confusion_matrix"] == {
        "labels": labels, "rows_gold_cols_predicted": confusion_matrix(gold, predicted, labels=labels).tolist()}
    assert metrics["accuracy"] == round(accuracy_score(gold, predicted), 5)
    assert metrics["macro_f1"] == round(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0), 5)
