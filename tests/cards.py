"""Complete, valid cards for tests that fake a run folder or a prepared-data folder: every required field
filled with a plausible value, any of them overridden by keyword."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from domaintune.core.data_card import DataCard
from domaintune.core.run_card import RunCard

MEMORY_PLAN = {
    "method": "lora", "batch_size": 2, "max_length": 64, "precision": "fp32", "device": "cpu", "recompute": False,
    "decided_by": "auto", "components_bytes": {"weights": 100}, "total_bytes": 100, "other_total_bytes": 90,
    "budget_bytes": 1000, "scored_per_row": 64, "fits": True,
}


def run_card_fields(**fields: Any) -> dict[str, Any]:
    card = {
        "method": "lora", "task": "sft", "base_model": "smollm2-135m", "base_weights_fingerprint": None,
        "data_fingerprint": "0" * 16, "labels": None, "seed": 0, "precision": "fp32",
        "gradient_checkpointing": False, "memory_plan": MEMORY_PLAN, "resumed_from_step": None,
        "hardware": {"device": "cpu"},
        "versions": {"domaintune": "0"}, "git_commit": None, "train_rows": 10, "steps": 2,
        "train_wall_seconds": 1.0, "train_tokens": 100, "train_tokens_per_second": 100.0, "train_loss": 2.0,
        "val_loss": None, "val_accuracy": None, "val_macro_f1": None, "select_by": "val_loss",
        "best_val_value": None, "best_val_step": None, "best_checkpoint_step": None, "peak_rss_bytes": 1,
        "rss_before_train_bytes": 1,
        "peak_cuda_bytes": None, "trainable_parameters": 1, "total_parameters": 2, "weights_bytes": 4,
        "warnings": [],
    }
    return {**card, **fields}


def baseline_card_fields(**fields: Any) -> dict[str, Any]:
    selection = {"features": "word", "C": 1.0, "class_weight": None, "metric": "macro_f1", "score": 0.5,
                 "selected_on": "val", "fallback_reason": None, "fitted_on": "train", "candidates": []}
    card = {"method": "tfidf-logreg", "base_model": None, "train_rows": 10, "train_wall_seconds": 0.1,
            "trainable_parameters": 3, "total_parameters": 3, "weights_bytes": 100, "vocabulary_size": 5,
            "selection_wall_seconds": 0.2, "selection": selection}
    return {**card, **fields}


def fake_run_card(**fields: Any) -> RunCard:
    return RunCard(**run_card_fields(**fields))


def write_fake_run(folder: Path, **fields: Any) -> Path:
    """A folder holding only a valid run_card.json."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "run_card.json").write_text(json.dumps(run_card_fields(**fields)))
    return folder


def data_card_fields(**fields: Any) -> dict[str, Any]:
    card = {
        "format": "classification", "sources": {}, "config_fingerprint": "1" * 16, "fingerprint": "2" * 16,
        "bad_rows": {"count": 0, "by_reason": {}, "rows": []}, "steps": [], "removed_examples": {},
        "dedup": {"exact": 0, "near": 0, "threshold": 0.8, "shingle": "auto"},
        "leakage": {"exact": {"train": 0, "val": 0}, "near": {"train": 0, "val": 0}, "removed": True},
        "leaked_rows_removed": {"train": 0, "val": 0}, "rows": {"train": 8, "val": 1, "test": 1},
        "augmented_rows": 0, "augmentation": None, "labels": ["negative", "positive"], "label_distribution": None,
        "garbled_rows": {"rows": 0, "examples": []}, "token_lengths": {"error": "not measured in tests"},
    }
    return {**card, **fields}


def fake_data_card(**fields: Any) -> DataCard:
    return DataCard(**data_card_fields(**fields))
