"""evaluate's predictions.jsonl and 95% intervals: each figure of metrics.json from the rows beside it."""

import json
import math
from importlib import resources

import numpy as np
import torch
from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification, AutoTokenizer

from conftest import make_reviews, write_csv
from domaintune import load_config, run_evaluate, run_prepare, run_train
from domaintune.data.prepare import read_split
from domaintune.evaluation.predictions import read_predictions
from domaintune.evaluation.uncertainty import intervals
from exactness import UNIT_ROUNDOFF
from independent import assert_same_perplexity, perplexity_by_hand

# A float64 sum of a few hundred losses is off by under 1e-13 relative; the figure is rounded to 4
# decimals, so exp(sum nll / sum tokens) from the rows lies within 5e-5 of it, plus that float64 error.
PERPLEXITY_ROUNDING = 5e-5


def _long_reviews_csv(folder):
    """60 reviews of four same-label tiny reviews each (about 80 tiny-tokenizer tokens): longer than the
    40-token windows below, which label scoring still fits in (its prompt takes 25)."""
    short = make_reviews(240)
    rows = []
    for k in range(60):
        first = (k // 3) * 12 + k % 3  # make_reviews cycles its labels, so every third row shares one
        group = [short[first + 3 * j] for j in range(4)]
        rows.append({**group[0], "review": " ".join(r["review"] for r in group)})
    return write_csv(folder / "long.csv", rows)


def _shipped_passages() -> list[str]:
    text = resources.files("domaintune").joinpath("data/general_text.txt").read_text(encoding="utf-8")
    return [line.strip() for line in text.splitlines() if line.strip()]


def _assert_reproduced(metrics: dict, rows, prefix: str = "") -> None:
    nll, tokens = sum(r.nll for r in rows), sum(r.tokens for r in rows)
    assert tokens == metrics[f"{prefix}tokens_scored"]
    assert abs(math.exp(nll / tokens) - metrics[f"{prefix}perplexity"]) <= PERPLEXITY_ROUNDING * (1 + 1e-12)
    low, high = metrics[f"{prefix}perplexity_ci"]
    assert low <= metrics[f"{prefix}perplexity"] <= high


def test_base_evaluation_keeps_every_example_and_its_interval(tiny_overrides, tmp_path):
    # Windows of 40 tokens cut every test review and general passage (96 to 146 tokens).
    cfg = load_config(None, [*tiny_overrides, f"data.source={_long_reviews_csv(tmp_path)}",
                             "evaluate.max_length=40", "evaluate.samples=0", "threads=1"])
    run_prepare(cfg)
    metrics = run_evaluate(cfg)
    folder = tmp_path / "runs" / "base"
    assert json.loads((folder / "metrics.json").read_text()) == metrics
    test_rows = read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]
    rows = read_predictions(folder)
    assert [r.id for r in rows] == [str(r["id"]) for r in test_rows]
    assert [r.gold for r in rows] == [r["label"] for r in test_rows]
    labels = json.loads((tmp_path / "prepared" / "data_card.json").read_text())["labels"]
    for row in rows:
        assert list(row.label_scores) == labels
        assert row.predicted == max(labels, key=row.label_scores.__getitem__)
    assert metrics["accuracy"] == round(np.mean([r.gold == r.predicted for r in rows]), 5)
    for figure in ("accuracy", "macro_f1"):
        low, high = metrics[f"{figure}_ci"]
        assert low <= metrics[figure] <= high

    model = AutoModelForCausalLM.from_pretrained(cfg.model.name).eval()
    tok = AutoTokenizer.from_pretrained(cfg.model.name)
    texts = [r["text"] for r in test_rows]
    assert metrics["tokens_in_split"] == sum(len(tok(t, add_special_tokens=False)["input_ids"]) for t in texts)
    assert metrics["tokens_scored"] == metrics["tokens_in_split"] - len(texts), "every token but each first"
    assert_same_perplexity(metrics, perplexity_by_hand(model, tok, texts, 40))
    _assert_reproduced(metrics, rows)

    general = read_predictions(folder, "general")
    assert [r.id for r in general] == [f"general-{i}" for i in range(len(_shipped_passages()))]
    assert all(r.gold is None and r.label_scores is None for r in general)
    assert_same_perplexity(metrics, perplexity_by_hand(model, tok, _shipped_passages(), 40), prefix="general_")
    _assert_reproduced(metrics, general, prefix="general_")

    # The intervals are the seeded bootstrap of these very rows: compare and a reader get the same.
    assert metrics["bootstrap_resamples"] == cfg.evaluate.bootstrap_resamples
    again = intervals(rows, labels, cfg.evaluate.bootstrap_resamples, cfg.seed)
    assert again == {k: metrics[k] for k in ("accuracy_ci", "macro_f1_ci", "perplexity_ci")}


def test_first_window_scope_keeps_the_old_figure(tiny_overrides, tmp_path):
    cfg = load_config(None, [*tiny_overrides, f"data.source={_long_reviews_csv(tmp_path)}",
                             "evaluate.max_length=40", "evaluate.samples=0", "threads=1",
                             "evaluate.perplexity_scope=first_window", "evaluate.general_text="])
    run_prepare(cfg)
    metrics = run_evaluate(cfg)
    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]]
    model = AutoModelForCausalLM.from_pretrained(cfg.model.name).eval()
    tok = AutoTokenizer.from_pretrained(cfg.model.name)
    assert metrics["tokens_scored"] == 39 * len(texts) < metrics["tokens_in_split"] - len(texts)
    assert_same_perplexity(metrics, perplexity_by_hand(model, tok, texts, 40, whole_document=False))


def test_classification_head_keeps_its_logits(tiny_overrides, tiny_model_dir, tmp_path):
    cfg = load_config(None, [*tiny_overrides, "train.task=classification", "train.method=full",
                             "train.max_steps=2", f"train.output_dir={tmp_path / 'cls'}"])
    run_prepare(cfg)
    run_dir = run_train(cfg)
    metrics = run_evaluate(cfg, str(run_dir))
    rows = read_predictions(run_dir)
    assert read_predictions(run_dir, "general") == [] and all(r.nll is None for r in rows)
    labels = json.loads((run_dir / "run_card.json").read_text())["labels"]
    model = AutoModelForSequenceClassification.from_pretrained(run_dir / "model").eval()
    tok = AutoTokenizer.from_pretrained(run_dir / "model")
    texts = [r["text"] for r in read_split(cfg.data.output_dir, "test")[: cfg.evaluate.max_examples]]
    for row, text in zip(rows, texts, strict=True):
        with torch.no_grad():
            logits = model(**tok(text, return_tensors="pt")).logits[0]
        # One text alone against a padded batch: the same float32 operations, whose reductions (64 terms at
        # most: the MLP width) a kernel may order differently, which moves a sum by at most 63 u times its
        # terms' magnitudes, of order 1 in this normalised model (logits under 0.3; measured: 3e-8 apart,
        # while the two largest logits of a row lie 0.03 apart or more).
        assert np.allclose([row.label_scores[label] for label in labels], logits.tolist(), rtol=0,
                           atol=63 * UNIT_ROUNDOFF["fp32"] * 2)
        assert row.predicted == labels[int(logits.argmax())]
    assert {"accuracy_ci", "macro_f1_ci", "bootstrap_resamples"} <= metrics.keys()
    assert "perplexity_ci" not in metrics
