"""Class imbalance: train.class_weights for a classification head, train.balanced_sampler for SFT."""

import json
import math
from collections import Counter

import pytest
import torch

from conftest import make_reviews, write_csv
from domaintune import load_config, run_prepare, run_train
from domaintune.core.errors import DomaintuneError
from domaintune.data.prepare import read_split
from domaintune.modeling.runs import load_run_model
from domaintune.training.balance import BalancedLabelSampler, WeightedHeadLoss, balanced_class_weights
from independent import head_predictions_by_hand

LABELS = ["negative", "neutral", "positive"]


def _imbalanced_csv(path):
    """50 positive, 20 negative and 8 neutral reviews: the drug reviews' imbalance, roughly."""
    keep = {"positive": 50, "negative": 20, "neutral": 8}
    rows = []
    for row in make_reviews(150):
        if keep[row["rating"]]:
            keep[row["rating"]] -= 1
            rows.append(row)
    return write_csv(path, rows)


def test_weighted_head_loss_matches_a_loop_by_hand():
    torch.manual_seed(0)
    logits, labels = torch.randn(6, 3), torch.tensor([0, 2, 2, 1, 2, 0])
    weights = torch.tensor([1.5, 4.0, 0.5])
    by_hand = sum(-weights[y] * math.log(math.exp(row[y]) / sum(math.exp(v) for v in row))
                  for row, y in zip(logits.double().tolist(), labels.tolist(), strict=True))
    loss = WeightedHeadLoss(weights)({"logits": logits}, labels)
    # float32 softmax against float64 by hand: a few units of float32's 1.2e-7 per term.
    assert loss.item() == pytest.approx(float(by_hand) / 6, rel=1e-6)
    # With grad accumulation the Trainer passes the rows of the whole accumulated batch, which divide the sum.
    assert WeightedHeadLoss(weights)({"logits": logits}, labels, num_items_in_batch=12).item() == pytest.approx(
        float(by_hand) / 12, rel=1e-6)


def test_balanced_weights_are_rows_over_classes_times_class_rows():
    rows = ["positive"] * 6 + ["negative"] * 3 + ["neutral"]
    assert balanced_class_weights(rows, LABELS).tolist() == pytest.approx([10 / 9, 10 / 3, 10 / 18])
    with pytest.raises(DomaintuneError, match=r"no training row has label\(s\) \['neutral'\]"):
        balanced_class_weights(["positive", "negative"], LABELS)


def test_class_weights_change_the_head_loss_as_by_hand(tiny_overrides, tiny_model_dir, tmp_path):
    cfg = load_config(None, [*tiny_overrides, f"data.source={_imbalanced_csv(tmp_path / 'skewed.csv')}",
                             "train.task=classification", "train.class_weights=balanced", "train.max_steps=3"])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    train_counts = Counter(r["label"] for r in read_split(cfg.data.output_dir, "train"))
    weights = [sum(train_counts.values()) / (3 * train_counts[label]) for label in LABELS]
    assert max(weights) / min(weights) > 3, "the data is imbalanced enough for weights to matter"

    model, tokenizer = load_run_model(str(run_dir), cfg)
    model.eval()
    val = read_split(cfg.data.output_dir, "val")
    weighted, plain = 0.0, 0.0
    with torch.no_grad():  # one review per forward pass, no padding
        for row in val:
            ids = tokenizer(row["text"], truncation=True, max_length=cfg.train.max_length, return_tensors="pt")
            nll = -torch.log_softmax(model(**ids).logits[0].double(), -1)[LABELS.index(row["label"])].item()
            weighted += weights[LABELS.index(row["label"])] * nll
            plain += nll
    history = [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines()]
    val_loss = next(r["eval_loss"] for r in reversed(history) if "eval_loss" in r)
    # float32 logits of a padded batch against one unpadded row: within 1e-5 of a loss near log 3.
    assert val_loss == pytest.approx(weighted / len(val), abs=1e-5)
    assert abs(plain - weighted) / len(val) > 1e-3, "weighting moved the loss by far more than the tolerance"

    # The head's val accuracy and macro-F1 in the run card are its argmax on val, as evaluate takes on test.
    from sklearn.metrics import accuracy_score, f1_score
    gold = [r["label"] for r in val]
    predicted = head_predictions_by_hand(model, tokenizer, [r["text"] for r in val], LABELS, cfg.train.max_length)
    card = json.loads((run_dir / "run_card.json").read_text())
    assert card["val_accuracy"] == round(accuracy_score(gold, predicted), 5)
    assert card["val_macro_f1"] == round(f1_score(gold, predicted, labels=LABELS, average="macro",
                                                  zero_division=0), 5)


def test_balanced_sampler_draws_each_label_equally_often():
    labels = ["positive"] * 600 + ["negative"] * 150 + ["neutral"] * 50
    sampler = BalancedLabelSampler(labels, seed=3)
    drawn = list(sampler)
    assert len(drawn) == len(labels), "an epoch draws as many rows as the split holds"
    counts = Counter(labels[i] for i in drawn)
    # Each draw is a label with probability 1/3: a binomial count, mean n/3, sd sqrt(n * 1/3 * 2/3) = 13.3.
    # 4 sd bounds it (a chance miss is 6e-5); the split's own shares would give 600, 150 and 50.
    sd = math.sqrt(len(labels) * (1 / 3) * (2 / 3))
    assert all(abs(count - len(labels) / 3) < 4 * sd for count in counts.values()), counts
    # Seeded per epoch: a resumed run draws what an uninterrupted one would.
    assert list(sampler) == drawn and list(BalancedLabelSampler(labels, seed=3)) == drawn
    sampler.set_epoch(1)
    next_epoch = list(sampler)
    assert next_epoch != drawn and list(sampler) == next_epoch


def test_sft_training_draws_from_the_balanced_sampler(tiny_overrides, tmp_path, monkeypatch):
    drawn: list[int] = []
    iterate = BalancedLabelSampler.__iter__

    def recording(self):
        for index in iterate(self):
            drawn.append(index)
            yield index

    monkeypatch.setattr(BalancedLabelSampler, "__iter__", recording)
    cfg = load_config(None, [*tiny_overrides, f"data.source={_imbalanced_csv(tmp_path / 'skewed.csv')}",
                             "train.balanced_sampler=true", "train.max_steps=3"])
    run_prepare(cfg)
    run_train(cfg)
    assert len(drawn) >= 3 * cfg.train.batch_size, "every training row came through the sampler"
