"""The run card (`run_card.json` of a run folder): what a run was trained from, how to reproduce it and what
it cost. Written by training/pipeline.py (every training run, DPO's included) and evaluation/baseline.py (the
TF-IDF baseline's folder, `BaselineCard`); read here only, by `read_run_card`.

A new field is one line in `RunCard` (with a `Field(description=...)` if its name does not say it all),
required if every training run writes it, `X | None = None` if only some do; then set it where
training/pipeline.py's `run_card` builds the card (or where the run that has it adds its own fields).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from domaintune.core.card_io import CardModel, card_from_dict, read_json_object, write_card
from domaintune.core.errors import DomaintuneError

FILE = "run_card.json"
BASELINE_METHOD = "tfidf-logreg"
_REMEDY = "train the run again (`domaintune train`, or `domaintune baseline` for a baseline folder)"


class SweepTrial(CardModel):
    """Where a sweep trial's run stands in its study (workflows/sweep.py adds it after the run)."""

    study: str
    trial: int
    state: Literal["complete", "pruned"]
    pruned_at_step: int | None
    params: dict[str, Any]


class RunCardBase(CardModel):
    """What every run folder's card holds, the baseline's included (compare reads these for every row)."""

    method: str
    base_model: str | None
    train_rows: int
    train_wall_seconds: float
    trainable_parameters: int
    total_parameters: int
    weights_bytes: int


class BaselineSelection(CardModel):
    """The settings the baseline chose and how (evaluation/baseline_search.py)."""

    features: str
    C: float
    class_weight: str | None
    metric: str
    score: float
    selected_on: str
    fallback_reason: str | None
    fitted_on: str
    candidates: list[dict[str, Any]]  # every candidate setting with its score, best first


class BaselineCard(RunCardBase):
    """The TF-IDF + logistic regression baseline (evaluation/baseline.py)."""

    method: Literal["tfidf-logreg"]
    vocabulary_size: int
    selection_wall_seconds: float
    selection: BaselineSelection


class MemoryPlanCard(CardModel):
    """The memory estimate taken before training (training/memory_plan.py) and the recompute decision."""

    method: str
    batch_size: int
    max_length: int
    precision: str
    device: str
    recompute: bool
    decided_by: Literal["auto", "config"]
    components_bytes: dict[str, int]
    total_bytes: int
    other_total_bytes: int
    budget_bytes: int | None
    scored_per_row: int
    fits: bool


class RunCard(RunCardBase):
    """A training run: train.py's Trainer (sft, causal-lm, classification) or dpo.py's DPOTrainer."""

    task: Literal["sft", "causal-lm", "classification", "preference"]
    base_model: str
    base_weights_fingerprint: str | None
    data_fingerprint: str
    labels: list[str] | None
    seed: int
    precision: str
    gradient_checkpointing: bool
    memory_plan: MemoryPlanCard
    resumed_from_step: int | None
    hardware: dict[str, Any]
    versions: dict[str, str]
    git_commit: str | None
    steps: int
    train_tokens: int
    train_tokens_per_second: float | None
    train_loss: float
    val_loss: float | None
    val_accuracy: float | None  # label data only, from the closing val evaluation
    val_macro_f1: float | None
    select_by: str  # train.select_by: the val figure that picked the best checkpoint
    best_val_value: float | None
    best_val_step: int | None
    best_checkpoint_step: int | None
    peak_rss_bytes: int
    rss_before_train_bytes: int
    peak_cuda_bytes: int | None
    warnings: list[str]
    # task "preference" (DPO) only
    preference_data: str | None = None
    preference_pairs: int | None = None
    duplicate_pairs_dropped: int | None = None
    test_leaks_dropped: dict[str, int] | None = None
    beta: float | None = None
    final_reward_accuracy: float | None = None
    final_reward_margin: float | None = None
    # a sweep trial's run only
    sweep: SweepTrial | None = None


def write_run_card(folder: Path, card: RunCardBase) -> Path:
    return write_card(Path(folder) / FILE, card)


def read_run_card(run_dir: str | Path) -> RunCard | BaselineCard:
    """The card of a run folder; a folder without one is not a (complete) run folder."""
    path = Path(run_dir) / FILE
    if not Path(run_dir).is_dir():
        raise DomaintuneError(f"run folder not found: {run_dir}")
    if not path.is_file():
        raise DomaintuneError(f"{run_dir}: not a complete run folder ({FILE} is missing); "
                              "see docs/troubleshooting.md#stage-order")
    data = read_json_object(path, _REMEDY)
    kind = BaselineCard if data.get("method") == BASELINE_METHOD else RunCard
    return card_from_dict(data, kind, str(path), _REMEDY)


def read_training_run_card(run_dir: str | Path) -> RunCard:
    """The card of a training run; a baseline folder is refused (it holds no model to load)."""
    card = read_run_card(run_dir)
    if not isinstance(card, RunCard):
        raise DomaintuneError(f"{run_dir}: this folder is '{card.method}', not a training run")
    return card
