"""Watching a run: stop on a NaN/inf loss with a useful message, and draw the loss curve."""

from __future__ import annotations

import math
from pathlib import Path

from transformers import TrainerCallback

from domaintune.core.errors import DomaintuneError, warn
from domaintune.training.checkpoints import complete_checkpoints


class NonFiniteLossGuard(TrainerCallback):
    """Stops training when the logged loss is NaN or infinite.

    Needs `logging_nan_inf_filter=False`: by default the Trainer quietly drops such losses from its
    averages, and a diverged run goes on to save garbage weights.
    """

    def __init__(self, learning_rate: float, precision: str, checkpoints_dir: Path) -> None:
        self.learning_rate = learning_rate
        self.precision = precision
        self.checkpoints_dir = checkpoints_dir

    def on_log(self, args, state, control, logs=None, **kwargs):
        loss = (logs or {}).get("loss")
        if loss is None or math.isfinite(loss):
            return
        hint = f"lower train.learning_rate (now {self.learning_rate:g})"
        if self.precision == "fp16":
            hint += " or use train.precision=bf16/fp32 (fp16 overflows)"
        kept = f"; complete checkpoints so far stay in {self.checkpoints_dir}" \
            if complete_checkpoints(self.checkpoints_dir) else ""
        raise DomaintuneError(f"training loss became {loss} at step {state.global_step}: {hint}{kept}; "
                              "see docs/troubleshooting.md#nan-loss")


def loss_stalled(log_history: list[dict], min_points: int = 4, min_drop: float = 0.02) -> str | None:
    """A warning when the logged training loss fell by less than `min_drop` (relative) from the first
    third of the logged steps to the last third; None when it fell, or when too few steps were logged
    to tell (fewer than `min_points`). Thirds, not single points, because one batch's loss is noisy."""
    points = [(r["step"], r["loss"]) for r in log_history if "loss" in r and "step" in r]
    points = [(step, loss) for step, loss in points if math.isfinite(loss)]
    if len(points) < min_points:
        return None
    third = len(points) // 3
    first = sum(loss for _, loss in points[:third]) / third
    last = sum(loss for _, loss in points[-third:]) / third
    if last < first * (1 - min_drop):
        return None
    return (f"training loss did not fall: {first:.4g} over steps {points[0][0]}-{points[third - 1][0]}, "
            f"{last:.4g} over steps {points[-third][0]}-{points[-1][0]}; the model may have learnt nothing "
            "(raise train.learning_rate or train longer); see docs/troubleshooting.md#loss-does-not-fall")


def warn_if_loss_stalled(log_history: list[dict]) -> list[str]:
    """Warn about a stalled loss; returns the warnings for the run card."""
    message = loss_stalled(log_history)
    if message:
        warn(message)
    return [message] if message else []


def plot_loss_curve(log_history: list[dict], path: Path) -> Path | None:
    """Train and val loss against step as a PNG; None when nothing was logged."""
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r and "step" in r]
    val = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r and "step" in r]
    if not train and not val:
        return None
    from matplotlib.figure import Figure  # not pyplot: no backend to select, nothing global to close

    fig = Figure(figsize=(6, 3.5), dpi=100)
    ax = fig.subplots()
    for points, label in ((train, "train loss"), (val, "val loss")):
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    return path
