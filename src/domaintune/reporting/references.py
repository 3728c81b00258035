"""What a model must beat, from the prepared data alone: always the majority label, and the label prior.

- `majority`: predicts the most frequent label of the prepared train split for every test row (a tie
  goes to the label listed first). Its figures are exact, with bootstrap intervals like any model's.
- `label prior`: draws each prediction at random from the train split's label shares q. Computed
  analytically, not simulated: with p the test rows' gold shares, its expected accuracy is sum_k p_k q_k,
  and class k's expected counts over n rows are n p_k q_k true positives, n q_k predictions and n p_k
  gold rows, so precision p_k, recall q_k and F1 2 p_k q_k / (p_k + q_k). The macro-F1 shown is that
  F1 of the expected counts averaged over classes (the mean F1 over random draws differs by O(1/n)).

Both are scored on the test rows the models were scored on: the first `test_rows` of the test split.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path

from domaintune.core.data_card import read_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from domaintune.evaluation.metrics import classification_metrics
from domaintune.evaluation.predictions import Prediction
from domaintune.evaluation.uncertainty import intervals
from domaintune.reporting.paired import bootstrap_settings, labels_of


def majority_row(train_labels: list[str], test_rows: list[dict], labels: list[str], resamples: int,
                 seed: int) -> dict:
    counts = Counter(train_labels)
    majority = max(labels, key=lambda label: (counts[label], -labels.index(label)))
    gold = [r["label"] for r in test_rows]
    row = {"name": "majority", "variant": "reference", "predicts": majority,
           **classification_metrics(gold, [majority] * len(gold), labels)}
    predictions = [Prediction("test", str(r.get("id", i)), r["label"], majority) for i, r in enumerate(test_rows)]
    return row | intervals(predictions, labels, resamples, seed) | {"test_rows": len(gold)}


def prior_row(train_labels: list[str], test_rows: list[dict], labels: list[str]) -> dict:
    train_counts, gold_counts = Counter(train_labels), Counter(r["label"] for r in test_rows)
    q = {label: train_counts[label] / len(train_labels) for label in labels}
    p = {label: gold_counts[label] / len(test_rows) for label in labels}
    f1 = {k: 2 * p[k] * q[k] / (p[k] + q[k]) if p[k] + q[k] else 0.0 for k in labels}
    per_class = {label: {"precision": round(p[label], 4), "recall": round(q[label], 4), "f1": round(f1[label], 4),
                         "support": gold_counts[label]} for label in labels}
    return {"name": "label prior", "variant": "reference", "computed": "analytic expectation",
            "train_label_shares": {label: round(q[label], 5) for label in labels},
            "accuracy": round(sum(p[k] * q[k] for k in labels), 5),
            "macro_f1": round(sum(f1.values()) / len(labels), 5), "per_class": per_class, "test_rows": len(test_rows)}


def reference_rows(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The majority and label-prior rows for the labelled rows' prepared data, or none and a note saying
    why not (no labels, the data moved or changed since the models were evaluated)."""
    labelled = next((r for r in rows if labels_of(r) and r.get("data_dir") and r.get("test_rows")), None)
    if labelled is None:
        return [], []
    data_dir = labelled["data_dir"]
    try:
        fingerprint = read_data_card(data_dir).fingerprint
        train, test = read_split(data_dir, "train"), read_split(data_dir, "test")[: labelled["test_rows"]]
    except DomaintuneError as exc:
        return [], [f"no majority or label-prior rows: {exc}"]
    if fingerprint != labelled.get("data_fingerprint"):
        return [], [f"no majority or label-prior rows: {data_dir} now holds other prepared data than "
                    f"{labelled['name']} was evaluated on"]
    if not train or not test:
        return [], [f"no majority or label-prior rows: {data_dir} has no train or no test rows"]
    labels = labels_of(labelled)
    train_labels = [r["label"] for r in train]
    resamples, seed = bootstrap_settings(labelled["folder"])
    found = [majority_row(train_labels, test, labels, resamples, seed), prior_row(train_labels, test, labels)]
    note = (f"reference rows from {Path(data_dir)}: label shares of its train split ({len(train)} rows), scored "
            f"on the first {len(test)} test rows; label prior = analytic expectation (no interval)")
    return found, [note]
