"""The TF-IDF baseline chooses its settings on val, never on test, and keeps each test row's prediction.

The data is written by hand so that the right choice is known: val and test hold word forms that train
never shows ("wonderfully" where train says "wonderful"), so only character grams carry the label over;
word grams see nothing but the shared filler words.
"""

from __future__ import annotations

import json
import math
import random
from pathlib import Path

import pytest

from cards import data_card_fields
from domaintune import load_config, run_baseline
from domaintune.cli.main import main
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import read_json
from domaintune.evaluation.baseline_search import select_settings
from domaintune.evaluation.predictions import read_predictions
from domaintune.evaluation.uncertainty import intervals

FILLER = "the a this drug pill dose week day night felt took started doctor".split()
LABELS = ["bad", "good"]
TRAIN_WORDS = {"good": "wonderful", "bad": "horrible"}
HELD_OUT_WORDS = {"good": "wonderfully", "bad": "horribly"}  # unseen as words, close in characters


def review(rng: random.Random, number: int, word: str, label: str) -> dict:
    filler = [rng.choice(FILLER) for _ in range(8)]
    return {"id": f"r{number}", "text": " ".join(filler[:4] + [word] + filler[4:]), "label": label}


def reviews(rng: random.Random, start: int, words: dict, per_label: int) -> list[dict]:
    return [review(rng, start + i, words[label], label) for i, label in enumerate(LABELS * per_label)]


def write_prepared(folder: Path, train: list[dict], val: list[dict], test: list[dict]) -> Path:
    folder.mkdir(parents=True)
    for name, rows in (("train", train), ("val", val), ("test", test)):
        (folder / f"{name}.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    (folder / "data_card.json").write_text(json.dumps(data_card_fields(labels=LABELS)))
    return folder


def overrides(prepared: Path, out: Path) -> list[str]:
    return [f"data.output_dir={prepared}", f"evaluate.baseline_output_dir={out}", "seed=3"]


@pytest.fixture(scope="module")
def char_data():
    rng = random.Random(0)
    return (reviews(rng, 0, TRAIN_WORDS, 12), reviews(rng, 100, HELD_OUT_WORDS, 5),
            reviews(rng, 200, HELD_OUT_WORDS, 10))


@pytest.fixture(scope="module")
def fitted(char_data, tmp_path_factory):
    root = tmp_path_factory.mktemp("baseline")
    cfg = load_config(None, overrides(write_prepared(root / "prepared", *char_data), root / "tfidf"))
    return root / "tfidf", cfg, run_baseline(cfg)


def test_the_choice_follows_val_and_is_recorded(fitted):
    folder, _, metrics = fitted
    selection = read_json(folder / "run_card.json")["selection"]
    best_by_features = {kind: max(c["macro_f1"] for c in selection["candidates"] if c["features"] == kind)
                        for kind in ("word", "char", "word+char")}
    # The data does what it claims: on val, word grams alone cannot tell the labels apart.
    assert best_by_features["char"] == 1.0 > best_by_features["word"]
    # Character and word+character grams tie at 1.0; the tie goes to the simpler one, then to the least C.
    assert (selection["features"], selection["C"], selection["class_weight"]) == ("char", 0.1, None)
    assert selection["score"] == 1.0 and selection["selected_on"] == "val" and selection["fallback_reason"] is None
    assert len(selection["candidates"]) == 42 and selection["fitted_on"] == "train"
    assert metrics["accuracy"] == 1.0


def test_val_that_rewards_balanced_class_weights_gets_them():
    # "zzq" marks the rare label, but also a tenth of the common label's rows in train: unweighted, the
    # common label's prior wins on every zzq row; weighted, the rare label's 4 rows count as much as 40.
    rng = random.Random(1)
    filler = lambda: " ".join(rng.choice(FILLER) for _ in range(4))  # noqa: E731
    train = [{"id": f"a{i}", "text": f"{filler()} {'zzq ' if i % 10 == 0 else ''}{filler()}", "label": "a"}
             for i in range(40)]
    train += [{"id": f"b{i}", "text": f"{filler()} zzq {filler()}", "label": "b"} for i in range(4)]
    val = [{"id": f"va{i}", "text": f"{filler()} {filler()}", "label": "a"} for i in range(8)]
    val += [{"id": f"vb{i}", "text": f"{filler()} zzq {filler()}", "label": "b"} for i in range(3)]
    selection = select_settings(train, val, seed=0)
    unweighted = max(c["macro_f1"] for c in selection.candidates if c["class_weight"] is None)
    assert selection.class_weight == "balanced" and selection.score > unweighted


def test_test_rows_never_influence_the_choice(char_data, fitted, tmp_path):
    # Test now says the train words, which word grams would get right (and, simpler, win a tie on), and
    # its labels are swapped: a choice made on test would differ on both counts.
    folder, _, first_metrics = fitted
    train, val, _ = char_data
    flipped = [dict(r, label=LABELS[1 - LABELS.index(r["label"])]) for r in reviews(random.Random(2), 300,
                                                                                      TRAIN_WORDS, 10)]
    cfg = load_config(None, overrides(write_prepared(tmp_path / "prepared", train, val, flipped), tmp_path / "tfidf"))
    metrics = run_baseline(cfg)
    assert metrics["accuracy"] != first_metrics["accuracy"]  # test was read, after the choice
    assert read_json(tmp_path / "tfidf" / "run_card.json")["selection"] == \
        read_json(folder / "run_card.json")["selection"]


def test_predictions_round_trip_and_reproduce_the_metrics(fitted, char_data):
    folder, cfg, metrics = fitted
    rows = read_predictions(folder)
    assert [r.id for r in rows] == [r["id"] for r in char_data[2]]
    assert [r.gold for r in rows] == [r["label"] for r in char_data[2]]
    assert metrics["accuracy"] == round(sum(r.gold == r.predicted for r in rows) / len(rows), 5)
    assert {k: metrics[k] for k in ("accuracy_ci", "macro_f1_ci")} == intervals(
        rows, LABELS, cfg.evaluate.bootstrap_resamples, cfg.seed)
    assert metrics["bootstrap_resamples"] == cfg.evaluate.bootstrap_resamples
    for row in rows:
        # Log-probabilities of the two labels: their probabilities sum to 1 up to float64 round-off
        # (a few units of 2**-52 from exp and one addition).
        assert math.isclose(sum(math.exp(v) for v in row.label_scores.values()), 1.0, abs_tol=1e-12)
        assert max(row.label_scores, key=row.label_scores.get) == row.predicted


def test_without_a_val_split_it_cross_validates_on_train(char_data, tmp_path, capsys):
    train, val, test = char_data
    small_train = train[:6]  # three rows of each label: 3 folds, to keep the test quick
    assert main(["baseline", *overrides(write_prepared(tmp_path / "prepared", small_train, [], test),
                                        tmp_path / "tfidf")]) == 0
    selection = read_json(tmp_path / "tfidf" / "run_card.json")["selection"]
    assert selection["selected_on"] == "3-fold cross-validation on train"
    assert selection["fallback_reason"] == "no val split"
    printed = capsys.readouterr().out.splitlines()
    assert printed[0].startswith("chose ") and "in 3-fold cross-validation on train (no val split)" in printed[0]
    assert printed[1].startswith(f"{tmp_path / 'tfidf'}: accuracy ")

    one_label_val = [r for r in val if r["label"] == "good"]
    assert select_settings(small_train, one_label_val, seed=0).fallback_reason == (
        "the val split lacks label(s) bad of train")


def test_cross_validation_needs_two_rows_of_each_label(char_data):
    train = char_data[0][:3]  # bad, good, bad: "good" has one row
    with pytest.raises(DomaintuneError, match="no val split, and a label has 1 training row"):
        select_settings(train, [], seed=0)
