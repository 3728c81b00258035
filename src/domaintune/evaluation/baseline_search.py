"""The TF-IDF baseline's settings, chosen on the val split by macro-F1, so that a language model is compared
with the best this simple model does on the data, not with one fixed guess.

Candidates: the features (word 1-2 grams, character 2-5 grams inside word boundaries, or both), the
inverse regularization strength C, and the class weights (none, or balanced: every label weighs alike in
the loss, which macro-F1 rewards where labels are skewed). Each candidate is fitted on the train split
only and scored on val; the chosen one is then fitted on train only as well, as the language models are
(they train on train and use val only to watch the loss and keep the best checkpoint), so every model of a
comparison has seen the same rows. Without a val split that holds every label of train, the candidates
are scored by stratified cross-validation on train instead. Test is never read here.
"""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass

import numpy as np
import scipy.sparse
from sklearn.feature_extraction.text import TfidfVectorizer
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import f1_score
from sklearn.model_selection import ParameterGrid, StratifiedKFold
from sklearn.pipeline import FeatureUnion
from threadpoolctl import threadpool_limits

from domaintune.core.errors import DomaintuneError

FEATURES = ("word", "char", "word+char")  # simplest first
C_GRID = tuple(round(float(c), 4) for c in np.logspace(-1, 2, 7))  # 0.1 .. 100, half a decade apart
CLASS_WEIGHTS = (None, "balanced")  # no reweighting first
CV_FOLDS = 5
FEATURE_NAMES = {"word": "word 1-2 grams", "char": "character 2-5 grams", "word+char": "word 1-2 + character 2-5 grams"}


def make_features(kind: str) -> TfidfVectorizer | FeatureUnion:
    # Sublinear term frequency: a word said five times is not five times the evidence.
    word = TfidfVectorizer(ngram_range=(1, 2), sublinear_tf=True)
    # char_wb: n-grams inside word boundaries, robust to misspellings and word forms (e.g. "nause-ous/-a").
    char = TfidfVectorizer(analyzer="char_wb", ngram_range=(2, 5), sublinear_tf=True)
    return {"word": word, "char": char, "word+char": FeatureUnion([("word", word), ("char", char)])}[kind]


def make_classifier(C: float, class_weight: str | None, seed: int) -> LogisticRegression:
    return LogisticRegression(C=C, class_weight=class_weight, max_iter=2000, random_state=seed)


def one_blas_thread() -> threadpool_limits:
    """Inside the block, BLAS on one thread, then the caller's setting again.

    The fits' dense steps are small (L-BFGS-B over at most a few hundred thousand coefficients), and a
    second thread only adds waiting: three fits on the drug reviews took 10x the wall time with two
    threads on a busy 2-core CPU.
    """
    return threadpool_limits(limits=1, user_api="blas")


@dataclass
class Selection:
    features: str
    C: float
    class_weight: str | None
    score: float  # val macro-F1 (or the cross-validated mean) of the chosen candidate
    selected_on: str  # "val" or "5-fold cross-validation on train"
    fallback_reason: str | None  # why val was not used; None where it was
    candidates: list[dict]  # every candidate with its score, best first

    @property
    def settings(self) -> dict:
        return {"features": self.features, "C": self.C, "class_weight": self.class_weight}

    def card(self) -> dict:
        """The run card's `selection` entry."""
        return {**self.settings, "metric": "macro_f1", "score": self.score, "selected_on": self.selected_on,
                "fallback_reason": self.fallback_reason, "fitted_on": "train", "candidates": self.candidates}


def describe(selection: dict) -> str:
    """One line for the CLI from a run card's `selection` entry."""
    where = "on val" if selection["selected_on"] == "val" else f"in {selection['selected_on']}"
    reason = f" ({selection['fallback_reason']})" if selection["fallback_reason"] else ""
    return (f"chose {FEATURE_NAMES[selection['features']]}, C={selection['C']}, "
            f"class_weight={selection['class_weight'] or 'none'}: macro-F1 {selection['score']} {where}{reason}, "
            f"the best of {len(selection['candidates'])} settings")


def select_settings(train: list[dict], val: list[dict], seed: int) -> Selection:
    """Score every candidate on val (or by cross-validation on train) and pick the best by macro-F1."""
    texts = [r["text"] for r in train] + [r["text"] for r in val]
    gold = np.array([r["label"] for r in train] + [r["label"] for r in val])
    labels = sorted(set(gold[: len(train)]))
    reason = _val_unusable(val, labels)
    if reason is None:
        splits = [(np.arange(len(train)), np.arange(len(train), len(texts)))]
        selected_on = "val"
    else:
        smallest = min(int((gold[: len(train)] == label).sum()) for label in labels)
        folds = min(CV_FOLDS, smallest)
        if folds < 2:
            raise DomaintuneError(
                f"the baseline cannot choose its settings: {reason}, and a label has {smallest} training row, "
                "too few for cross-validation; add rows or a val split holding every label (data.val_fraction)"
            )
        cv = StratifiedKFold(n_splits=folds, shuffle=True, random_state=seed)
        splits = list(cv.split(np.zeros(len(train)), gold[: len(train)]))
        selected_on = f"{folds}-fold cross-validation on train"

    with one_blas_thread():
        scores = _score_candidates(texts, gold, labels, splits, seed)
    candidates = [{"features": kind, "C": c, "class_weight": weight, "macro_f1": round(float(np.mean(s)), 5)}
                  for (kind, c, weight), s in scores.items()]
    # Best macro-F1 first; ties (equal to 5 decimals) go to the simpler, more regularized candidate:
    # fewer kinds of features, no class reweighting, then the smallest C, since on equal evidence the
    # setting with fewer degrees of freedom is the one less fitted to the few val rows.
    candidates.sort(key=lambda c: (-c["macro_f1"], FEATURES.index(c["features"]),
                                   CLASS_WEIGHTS.index(c["class_weight"]), c["C"]))
    best = candidates[0]
    return Selection(best["features"], best["C"], best["class_weight"], best["macro_f1"], selected_on, reason,
                     candidates)


def _score_candidates(texts: list[str], gold: np.ndarray, labels: list[str], splits: list, seed: int
                      ) -> dict[tuple, list[float]]:
    """Each candidate's macro-F1 on the held-out rows of each split, fitted on the split's other rows."""
    scores: dict[tuple, list[float]] = defaultdict(list)
    for fit_rows, held_rows in splits:
        for kind, (fit_x, held_x) in _feature_matrices(texts, fit_rows, held_rows).items():
            for params in ParameterGrid({"C": C_GRID, "class_weight": CLASS_WEIGHTS}):
                model = make_classifier(params["C"], params["class_weight"], seed).fit(fit_x, gold[fit_rows])
                scores[(kind, params["C"], params["class_weight"])].append(float(f1_score(
                    gold[held_rows], model.predict(held_x), labels=labels, average="macro", zero_division=0)))
    return scores


def _val_unusable(val: list[dict], labels: list[str]) -> str | None:
    if not val:
        return "no val split"
    missing = sorted(set(labels) - {r["label"] for r in val})
    if missing:
        return f"the val split lacks label(s) {', '.join(missing)} of train"
    return None


def _feature_matrices(texts: list[str], fit_rows: np.ndarray, held_rows: np.ndarray) -> dict[str, tuple]:
    """Each feature kind's (fitted rows, held-out rows) matrices, the vectorizers fitted on the fitted rows.

    Written out rather than a GridSearchCV over the pipeline: the vectorizers are the slow part (a second
    for the character grams) and would be refitted for each of the 14 classifier settings, or cached
    through joblib's pickles. The union is the two parts side by side, exactly as FeatureUnion builds it.
    """
    fit_texts, held_texts = [texts[i] for i in fit_rows], [texts[i] for i in held_rows]
    matrices = {}
    for kind in ("word", "char"):
        vectorizer = make_features(kind)
        matrices[kind] = (vectorizer.fit_transform(fit_texts), vectorizer.transform(held_texts))
    matrices["word+char"] = tuple(scipy.sparse.hstack([w, c]).tocsr()
                                  for w, c in zip(matrices["word"], matrices["char"], strict=True))
    return matrices
