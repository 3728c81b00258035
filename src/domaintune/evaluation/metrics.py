"""Classification metrics from gold and predicted labels, perplexity from document losses: pure functions,
no torch."""

from __future__ import annotations

import math

from sklearn.metrics import confusion_matrix, f1_score, precision_recall_fscore_support


def classification_metrics(gold: list[str], predicted: list[str], labels: list[str]) -> dict:
    precision, recall, f1, support = precision_recall_fscore_support(
        gold, predicted, labels=labels, zero_division=0
    )
    return {
        "accuracy": round(sum(g == p for g, p in zip(gold, predicted, strict=False)) / max(len(gold), 1), 5),
        "macro_f1": round(float(f1_score(gold, predicted, labels=labels, average="macro", zero_division=0)), 5),
        "per_class": {
            label: {"precision": round(float(p), 4), "recall": round(float(r), 4), "f1": round(float(f), 4),
                    "support": int(s)}
            for label, p, r, f, s in zip(labels, precision, recall, f1, support, strict=False)
        },
        "confusion_matrix": {"labels": labels, "rows_gold_cols_predicted":
                             confusion_matrix(gold, predicted, labels=labels).tolist()},
    }


def perplexity_metrics(nll: list[float], tokens: list[int], lengths: list[int]) -> dict:
    """Token-weighted: exp of the summed NLL over the summed scored tokens, so a long document weighs by
    its tokens; `tokens_in_split` counts every token, `tokens_scored` / `tokens_in_split` is the coverage."""
    scored = sum(tokens)
    loss = sum(nll) / max(scored, 1)
    return {"test_loss": round(loss, 5), "perplexity": round(math.exp(loss), 4), "tokens_scored": scored,
            "tokens_in_split": sum(lengths)}
