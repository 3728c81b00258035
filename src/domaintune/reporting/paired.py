"""Paired tests for compare: each model against the base and against the TF-IDF baseline, on the same examples.

Both folders' predictions.jsonl are paired by example id (evaluation/predictions.py) and tested with
evaluation/uncertainty.py: McNemar's exact test for accuracy, the paired bootstrap for macro-F1 and the
two perplexities (test split and general text). A folder evaluated before predictions were kept still
compares, without intervals or tests, and a note says to evaluate it again.
"""

from __future__ import annotations

from pathlib import Path

from domaintune.core.config import load_config
from domaintune.core.errors import DomaintuneError
from domaintune.evaluation.predictions import PREDICTIONS_FILE, paired, read_predictions
from domaintune.evaluation.uncertainty import paired_tests

REFERENCE_VARIANTS = ("base", "tfidf-logreg")  # what every model is tested against
SETS = {"test": "", "general": "general_"}  # predictions set -> prefix of the statistic's name


def has_predictions(row: dict) -> bool:
    """Whether the row's figures come from a folder that kept each example's score. A merged LoRA is
    evaluated in compare itself, from a folder that is gone by the time the tests run."""
    return row["variant"] != "lora-merged" and (Path(row["folder"]) / PREDICTIONS_FILE).is_file()


def bootstrap_settings(folder: str | Path) -> tuple[int, int]:
    """The resamples and seed the folder was evaluated with (its config.yaml), so that compare's tests use
    what the folder's own intervals used."""
    cfg = load_config(Path(folder) / "config.yaml")
    return cfg.evaluate.bootstrap_resamples, cfg.seed


def labels_of(row: dict) -> list[str] | None:
    return (row.get("confusion_matrix") or {}).get("labels")


def paired_result(row: dict, against: dict) -> dict:
    """`row` minus `against` on every statistic both folders' predictions hold, per set."""
    resamples, seed = bootstrap_settings(row["folder"])
    result: dict = {"model": row["name"], "against": against["name"], "against_variant": against["variant"],
                    "tests": {}}
    for which, prefix in SETS.items():
        ours = read_predictions(row["folder"], which)
        theirs = read_predictions(against["folder"], which)
        if not ours or not theirs:
            continue
        first, second = paired(ours, theirs, f"{row['name']} ({which})", f"{against['name']} ({which})")
        result[f"{prefix}examples"] = len(first)
        tests = paired_tests(first, second, labels_of(row), resamples, seed)
        result["tests"].update({prefix + name: test for name, test in tests.items()})
    return result


def paired_comparisons(rows: list[dict]) -> tuple[list[dict], list[str]]:
    """The paired tests of each model against the base and the baseline, and one note per folder or pair
    that could not be tested (no predictions.jsonl, or different examples)."""
    references = [next((r for r in rows if r["variant"] == v), None) for v in REFERENCE_VARIANTS]
    results, notes = [], []
    for row in rows:
        if row["variant"] == "lora-merged":
            continue  # its quality is re-evaluated from the merged weights: tested through its unmerged row
        if not has_predictions(row):
            notes.append(f"{row['name']}: no {PREDICTIONS_FILE} (evaluated by an older domaintune), so its figures "
                         f"have no intervals or paired tests; evaluate {row['folder']} again")
            continue
        for against in references:
            # The base is the reference of the baseline too, never the other way round (one test per pair).
            if against is None or against is row or row["variant"] == "base" or not has_predictions(against):
                continue
            try:
                results.append(paired_result(row, against))
            except DomaintuneError as exc:
                notes.append(f"{row['name']} vs {against['name']}: no paired test: {exc}")
    return results, notes


def significance_marks(results: list[dict]) -> dict[tuple[str, str], str]:
    """(model, statistic) -> "*" where it differs from the base at 5%, "†" where it does not."""
    return {(r["model"], name): "*" if test["significant"] else "†"
            for r in results if r["against_variant"] == "base" for name, test in r["tests"].items()}
