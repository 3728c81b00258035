"""Intervals and paired tests: each checked against an independent computation (scikit-learn, a binomial
sum by hand, the normal approximation) rather than against itself."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.metrics import f1_score

from domaintune.core.errors import DomaintuneError
from domaintune.evaluation.predictions import Prediction, paired, read_predictions, write_predictions
from domaintune.evaluation.uncertainty import (
    intervals,
    macro_f1_statistic,
    mcnemar_p_value,
    paired_tests,
    perplexity_statistic,
    proportion_interval,
    resample_indices,
)

LABELS = ["negative", "neutral", "positive"]


def labelled(gold: list[str], predicted: list[str]) -> list[Prediction]:
    return [Prediction("test", f"r{i}", g, p) for i, (g, p) in enumerate(zip(gold, predicted, strict=True))]


def random_labels(n: int, seed: int, accuracy: float) -> tuple[list[str], list[str]]:
    rng = np.random.default_rng(seed)
    gold = list(rng.choice(LABELS, size=n, p=[0.25, 0.1, 0.65]))
    predicted = [g if rng.random() < accuracy else str(rng.choice(LABELS)) for g in gold]
    return gold, predicted


def test_macro_f1_matches_scikit_learn_on_every_resample():
    # "unknown" is a prediction outside the labels (a generated answer that is no label): a miss.
    gold, predicted = random_labels(200, 0, 0.6)
    predicted[:5] = ["unknown"] * 5
    idx = resample_indices(len(gold), 20, seed=1)
    ours = macro_f1_statistic(gold, predicted, LABELS)(idx)
    theirs = [f1_score([gold[i] for i in row], [predicted[i] for i in row], labels=LABELS, average="macro",
                       zero_division=0) for row in idx]
    np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-12)  # both float64 sums of counts


def test_accuracy_interval_agrees_with_the_normal_approximation():
    # n = 2,000 keeps the normal approximation close; 4,000 resamples put the Monte Carlo error of a 2.5%
    # quantile near 3% of the half-width, so 10% separates a correct bootstrap from a wrong one (a
    # bootstrap that forgot to resample would give a zero width, one over the wrong n a width off by sqrt).
    gold, predicted = random_labels(2000, 2, 0.75)
    ci = intervals(labelled(gold, predicted), LABELS, resamples=4000, seed=3)["accuracy_ci"]
    p = np.mean([g == q for g, q in zip(gold, predicted, strict=True)])
    half_width = 1.959964 * math.sqrt(p * (1 - p) / len(gold))
    assert ci[0] < p < ci[1]
    assert (ci[1] - ci[0]) / 2 == pytest.approx(half_width, rel=0.10)


def test_intervals_are_reproduced_by_the_seed():
    gold, predicted = random_labels(100, 4, 0.7)
    rows = labelled(gold, predicted)
    assert intervals(rows, LABELS, 1000, seed=5) == intervals(rows, LABELS, 1000, seed=5)
    assert intervals(rows, LABELS, 1000, seed=5) != intervals(rows, LABELS, 1000, seed=6)


def test_perplexity_is_token_weighted_over_documents():
    nll, tokens = [10.0, 40.0, 5.0], [5, 10, 5]
    observed = perplexity_statistic(nll, tokens)(resample_indices(3, 1, 0))[0]
    assert observed == pytest.approx(math.exp(55 / 20), rel=1e-12)
    rows = [Prediction("test", str(i), nll=n, tokens=t) for i, (n, t) in enumerate(zip(nll, tokens, strict=True))]
    low, high = intervals(rows, None, 1000, seed=0)["perplexity_ci"]
    # Each resample's perplexity lies between the documents' own; the bounds are written to 5 decimals.
    assert math.exp(5 / 5) - 5e-6 <= low <= math.exp(55 / 20) <= high <= math.exp(40 / 10) + 5e-6


def test_a_document_with_no_scored_token_keeps_the_interval():
    # A one-token document: evaluate scores nothing in it (its token has no context) but keeps its row.
    rows = [Prediction("test", str(i), nll=n, tokens=t) for i, (n, t) in enumerate([(10.0, 5), (0.0, 0), (40.0, 10)])]
    low, high = intervals(rows, None, 1000, seed=0)["perplexity_ci"]
    assert low <= math.exp(50 / 15) <= high


def test_mcnemar_exact_p_value_by_hand():
    # 10 examples only the first model gets right, 2 only the second: p = 2 * P(X <= 2), X ~ Bin(12, 1/2).
    first = [True] * 10 + [False] * 2 + [True] * 30
    second = [False] * 10 + [True] * 2 + [True] * 30
    assert mcnemar_p_value(first, second) == pytest.approx(2 * (1 + 12 + 66) / 4096, rel=1e-12)
    assert mcnemar_p_value(first, first) == 1.0


def test_paired_tests_separate_a_real_difference_from_none():
    gold, weak = random_labels(300, 7, 0.45)
    strong = [g if i % 10 else weak[i] for i, g in enumerate(gold)]  # right on 90% and on every other row
    same = paired_tests(labelled(gold, weak), labelled(gold, weak), LABELS, 1000, seed=0)
    assert same["accuracy"]["p_value"] == 1.0 and same["macro_f1"]["p_value"] == 1.0
    assert not same["macro_f1"]["significant"]
    better = paired_tests(labelled(gold, strong), labelled(gold, weak), LABELS, 1000, seed=0)
    assert better["accuracy"]["test"] == "McNemar exact" and better["accuracy"]["significant"]
    assert better["macro_f1"]["difference"] > 0 and better["macro_f1"]["difference_ci"][0] > 0
    assert better["macro_f1"]["significant"]
    worse = paired_tests(labelled(gold, weak), labelled(gold, strong), LABELS, 1000, seed=0)
    assert worse["macro_f1"]["difference"] == -better["macro_f1"]["difference"]


def test_pairing_needs_the_same_examples(tmp_path):
    a = labelled(["positive", "negative"], ["positive", "positive"])
    b = list(reversed(a))
    assert [r.id for r in paired(a, b, "a", "b")[1]] == ["r0", "r1"]
    with pytest.raises(DomaintuneError, match="different examples .1 only in the first, 0 only in the second"):
        paired(a, a[:1], "runs/a", "runs/b")


def test_predictions_round_trip_and_missing_file(tmp_path):
    rows = [*labelled(["positive"], ["negative"]), Prediction("general", "g0", nll=3.5, tokens=4)]
    write_predictions(tmp_path, rows)
    assert read_predictions(tmp_path) == rows[:1]
    assert read_predictions(tmp_path, "general") == rows[1:]
    with pytest.raises(DomaintuneError, match="predictions.jsonl is missing: evaluate"):
        read_predictions(tmp_path / "old-run")
    (tmp_path / "predictions.jsonl").write_text('{"set": "test", "idx": 1}\n')
    with pytest.raises(DomaintuneError, match="line 1 is not a prediction"):
        read_predictions(tmp_path)


def test_wilson_interval():
    # Wilson's interval for 8 of 10, z = 1.96: (0.490, 0.943) by the textbook formula.
    low, high = proportion_interval(8, 10)
    z, p, n = 1.959964, 0.8, 10
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    spread = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    assert (low, high) == pytest.approx((centre - spread, centre + spread), abs=1e-5)
    assert proportion_interval(0, 0) is None
