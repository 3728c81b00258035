"""Does the TF-IDF baseline's choice on 59 val rows hold up? The same 42 candidates scored by stratified
k-fold cross-validation over train + val (every non-test row held out once), beside the choice on val.

A check on `domaintune baseline`'s selection rule (evaluation/baseline_search.py), not part of it: with few
val rows, one rare-class row moves val macro-F1 by several points, and picking the best of 42 candidates on
that can pick noise. If cross-validation picks the same setting, the rule is not what holds the baseline
back. Test is never read. Run (after `domaintune prepare -c configs/classification_recipe.yaml`):

    PYTHONPATH=src python bench/baseline_selection.py prepared/drugreviews
"""

from __future__ import annotations

import argparse
import time

import numpy as np
from sklearn.model_selection import StratifiedKFold

from domaintune.data.prepare import read_split
from domaintune.evaluation.baseline_search import _score_candidates, one_blas_thread, select_settings


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("prepared")
    parser.add_argument("--folds", type=int, default=5)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--top", type=int, default=5)
    args = parser.parse_args()
    train, val = read_split(args.prepared, "train"), read_split(args.prepared, "val")

    started = time.perf_counter()
    on_val = select_settings(train, val, args.seed)
    val_seconds = time.perf_counter() - started

    rows = train + val
    texts, gold = [r["text"] for r in rows], np.array([r["label"] for r in rows])
    folds = StratifiedKFold(args.folds, shuffle=True, random_state=args.seed)
    started = time.perf_counter()
    with one_blas_thread():
        scores = _score_candidates(texts, gold, sorted(set(gold)), list(folds.split(np.zeros(len(rows)), gold)),
                                   args.seed)
    cv_seconds = time.perf_counter() - started
    ranked = sorted(scores.items(), key=lambda item: -float(np.mean(item[1])))

    print(f"{len(train)} train + {len(val)} val rows; val choice in {val_seconds:.0f} s, "
          f"{args.folds}-fold CV in {cv_seconds:.0f} s")
    print(f"chosen on val: {on_val.features}, C={on_val.C}, class_weight={on_val.class_weight or 'none'} "
          f"(val macro-F1 {on_val.score:.3f})")
    print("\n| rank | features | C | class weight | CV macro-F1 mean | per fold | val macro-F1 |")
    print("|---|---|---|---|---|---|---|")
    val_scores = {(c["features"], c["C"], c["class_weight"]): c["macro_f1"] for c in on_val.candidates}
    for rank, (key, folds_scores) in enumerate(ranked[: args.top], start=1):
        kind, c, weight = key
        print(f"| {rank} | {kind} | {c} | {weight or 'none'} | {np.mean(folds_scores):.3f} | "
              f"{', '.join(f'{s:.3f}' for s in folds_scores)} | {val_scores[key]:.3f} |")


if __name__ == "__main__":
    main()
