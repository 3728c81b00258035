"""What a sweep ranks its trials by: the val figure `train.select_by` names, in its direction.

A trial's value is the run card's figure for the weights the run kept (the checkpoint select_by chose, when
save_steps restores one), so the sweep and each of its runs judge by one rule; the pruner sees the same
figure at every evaluation. The default, val loss, is minimized; val accuracy and val macro-F1 are maximized.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import optuna
from transformers import TrainerCallback

from domaintune.core.errors import DomaintuneError
from domaintune.core.schema import Config
from domaintune.training.task_trainer import metric_for_best_model

LABELS = {"val_loss": "val loss", "val_accuracy": "val accuracy", "val_macro_f1": "val macro-F1"}
T = TypeVar("T")


@dataclass(frozen=True)
class SweepObjective:
    key: str  # train.select_by, which is also the run card's field: val_loss, val_accuracy, val_macro_f1
    metric: str  # the Trainer's name for it at an evaluation: eval_loss, eval_accuracy, eval_macro_f1
    maximize: bool

    @property
    def direction(self) -> str:
        return "maximize" if self.maximize else "minimize"

    @property
    def label(self) -> str:
        return LABELS[self.key]

    def best(self, items: Iterable[T], value: Callable[[T], Any]) -> T:
        """The best item (the first of equals, as min and max keep it)."""
        return (max if self.maximize else min)(items, key=value)


def objective_of(cfg: Config) -> SweepObjective:
    metric, maximize = metric_for_best_model(cfg.train.select_by)
    return SweepObjective(cfg.train.select_by, metric, maximize)


def check_same_objective(study: optuna.Study, objective: SweepObjective, folder: Path) -> None:
    """A resumed study must rank by the rule it started with: Optuna loads a stored study with its own
    direction whatever create_study was told, and values of two rules do not compare."""
    scored_by = study.user_attrs.get("objective")
    if scored_by is None:
        # No record: a sweep started before the objective followed select_by (val loss), or a new study.
        scored_by = "val_loss" if "config" in study.user_attrs else objective.key
    direction = study.direction.name.lower()
    if scored_by != objective.key or direction != objective.direction:
        raise DomaintuneError(
            f"{folder}: this sweep's trials were scored by {scored_by} ({direction}), and "
            f"train.select_by={objective.key} would score by {objective.key} ({objective.direction}): keep "
            f"train.select_by={scored_by} to resume, or set a new sweep.output_dir for a new search")
    study.set_user_attr("objective", objective.key)


class PruneOnObjective(TrainerCallback):
    """Reports the objective at each evaluation to the trial and stops training, as EarlyStoppingCallback
    does, when Optuna prunes (the study's direction tells Optuna which way is better)."""

    def __init__(self, trial: optuna.Trial, objective: SweepObjective) -> None:
        self.trial, self.objective = trial, objective
        self.reported: set[int] = set()
        self.pruned_at: int | None = None

    def on_evaluate(self, args, state, control, metrics=None, **kwargs):
        value = (metrics or {}).get(self.objective.metric)
        step = state.global_step
        if value is None or step in self.reported or self.pruned_at is not None:
            return  # run_train's closing evaluation repeats the last step's; it is not news
        self.reported.add(step)
        self.trial.report(value, step)
        if step < state.max_steps and self.trial.should_prune():
            self.pruned_at = step
            control.should_training_stop = True
