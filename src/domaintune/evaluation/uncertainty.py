"""95% intervals for every figure and paired tests between two models on the same examples.

Intervals are percentile bootstraps over examples (documents for perplexity), seeded, so a figure and
its interval are reproduced exactly from predictions.jsonl. Paired tests resample the same examples for
both models: the paired bootstrap for macro-F1 and perplexity (neither is a mean over examples, so no
closed form applies), and McNemar's exact test for accuracy (the discordant examples decide it).
scipy gives the binomial tail and the Wilson interval; the resampling is written here because it must
share one set of indices across both models and all three statistics, which no library call does.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import numpy as np
from scipy.stats import binomtest

from domaintune.evaluation.predictions import Prediction

CONFIDENCE = 0.95
ALPHA = 1 - CONFIDENCE
Statistic = Callable[[np.ndarray], np.ndarray]  # indices (resamples, n) -> one value per resample


def resample_indices(n: int, resamples: int, seed: int) -> np.ndarray:
    """Row r holds the examples drawn (with replacement) for resample r; row 0 is the identity, so the
    observed figure is the first value of every statistic."""
    rng = np.random.default_rng(seed)
    drawn = rng.integers(0, n, size=(resamples, n))
    return np.vstack([np.arange(n)[None, :], drawn])


def accuracy_statistic(gold: Sequence[str], predicted: Sequence[str]) -> Statistic:
    correct = np.array([g == p for g, p in zip(gold, predicted, strict=True)], dtype=np.float64)
    return lambda idx: correct[idx].mean(axis=1)


def macro_f1_statistic(gold: Sequence[str], predicted: Sequence[str], labels: Sequence[str]) -> Statistic:
    """Macro-F1 over `labels` as scikit-learn computes it with zero_division=0 (a label with no gold and no
    predicted example scores 0, and predictions outside `labels` count as misses)."""
    code = {label: i for i, label in enumerate(labels)}
    k = len(labels)
    gold_idx = np.array([code.get(g, k) for g in gold])
    pred_idx = np.array([code.get(p, k) for p in predicted])
    pair = gold_idx * (k + 1) + pred_idx

    def statistic(idx: np.ndarray) -> np.ndarray:
        # One bincount over all resamples at once: resample r's cells are offset by r * (k+1)^2.
        cells = (k + 1) ** 2
        offsets = np.arange(len(idx))[:, None] * cells
        counts = np.bincount((pair[idx] + offsets).ravel(), minlength=len(idx) * cells)
        counts = counts.reshape(len(idx), k + 1, k + 1)  # (resample, gold, predicted); index k: other
        tp = np.stack([counts[:, i, i] for i in range(k)], axis=1)
        gold_n = counts[:, :k, :].sum(axis=2)
        pred_n = counts[:, :, :k].sum(axis=1)
        denominator = gold_n + pred_n
        f1 = np.divide(2 * tp, denominator, out=np.zeros_like(denominator, dtype=np.float64),
                       where=denominator > 0)
        return f1.mean(axis=1)

    return statistic


def perplexity_statistic(nll: Sequence[float], tokens: Sequence[int]) -> Statistic:
    nll_arr, tok_arr = np.asarray(nll, dtype=np.float64), np.asarray(tokens, dtype=np.float64)
    return lambda idx: np.exp(nll_arr[idx].sum(axis=1) / np.maximum(tok_arr[idx].sum(axis=1), 1))


def interval(values: np.ndarray) -> list[float]:
    """The percentile interval of the resampled values (row 0, the observed figure, excluded)."""
    low, high = np.quantile(values[1:], [ALPHA / 2, 1 - ALPHA / 2])
    return [float(low), float(high)]


def statistics_of(rows: list[Prediction], labels: Sequence[str] | None) -> dict[str, Statistic]:
    """The statistics these rows support: accuracy and macro-F1 where they carry labels, perplexity where
    they carry token losses."""
    found: dict[str, Statistic] = {}
    if labels and rows and all(r.gold is not None and r.predicted is not None for r in rows):
        gold, predicted = [r.gold for r in rows], [r.predicted for r in rows]
        found["accuracy"] = accuracy_statistic(gold, predicted)
        found["macro_f1"] = macro_f1_statistic(gold, predicted, labels)
    # A one-token document has nothing scored (tokens 0) but is still one of the documents resampled.
    if rows and all(r.nll is not None and r.tokens is not None for r in rows):
        found["perplexity"] = perplexity_statistic([r.nll for r in rows], [r.tokens for r in rows])
    return found


def intervals(rows: list[Prediction], labels: Sequence[str] | None, resamples: int, seed: int) -> dict:
    """`{"accuracy_ci": [low, high], "macro_f1_ci": ..., "perplexity_ci": ...}` for what the rows hold."""
    if not rows:
        return {}
    idx = resample_indices(len(rows), resamples, seed)
    return {f"{name}_ci": [round(v, 5) for v in interval(stat(idx))]
            for name, stat in statistics_of(rows, labels).items()}


def paired_tests(first: list[Prediction], second: list[Prediction], labels: Sequence[str] | None,
                 resamples: int, seed: int) -> dict:
    """`first` minus `second` on each shared statistic, with an interval and a two-sided p-value; the rows
    must be in one example order (predictions.paired)."""
    idx = resample_indices(len(first), resamples, seed)
    ours, theirs = statistics_of(first, labels), statistics_of(second, labels)
    tests: dict[str, dict] = {}
    for name in ours.keys() & theirs.keys():
        difference = ours[name](idx) - theirs[name](idx)
        tests[name] = {"difference": round(float(difference[0]), 5),
                       "difference_ci": [round(v, 5) for v in interval(difference)],
                       "p_value": round(bootstrap_p_value(difference), 5), "test": "paired bootstrap"}
    if "accuracy" in tests:
        tests["accuracy"].update(
            p_value=round(mcnemar_p_value([r.gold == r.predicted for r in first],
                                          [r.gold == r.predicted for r in second]), 5),
            test="McNemar exact")
    for result in tests.values():
        result["significant"] = result["p_value"] < ALPHA
    return tests


def bootstrap_p_value(difference: np.ndarray) -> float:
    """Two-sided: twice the share of resampled differences on the far side of zero, with the observed
    resample counted once so that p is never 0 from a finite number of resamples."""
    resampled = difference[1:]
    tail = min((resampled <= 0).sum(), (resampled >= 0).sum())
    return min(1.0, 2 * (int(tail) + 1) / (len(resampled) + 1))  # a Python float: comparisons give a JSON bool


def mcnemar_p_value(first_correct: Sequence[bool], second_correct: Sequence[bool]) -> float:
    """Exact McNemar: among examples where exactly one model is right, is either side more often right
    than a fair coin would be?"""
    only_first = sum(a and not b for a, b in zip(first_correct, second_correct, strict=True))
    only_second = sum(b and not a for a, b in zip(first_correct, second_correct, strict=True))
    if only_first + only_second == 0:
        return 1.0
    return float(binomtest(only_first, only_first + only_second, 0.5).pvalue)


def proportion_interval(successes: int, trials: int) -> list[float] | None:
    """Wilson's 95% interval for a rate (a win rate from votes); None without trials."""
    if trials == 0:
        return None
    ci = binomtest(successes, trials).proportion_ci(confidence_level=CONFIDENCE, method="wilson")
    return [round(float(ci.low), 5), round(float(ci.high), 5)]
