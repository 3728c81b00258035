"""Watching a run: stop on a NaN/inf loss with a useful message, and draw the loss curve."""

from __future__ import annotations

import math
from pathlib import Path

from transformers import TrainerCallback

from .errors import DomaintuneError


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
        raise DomaintuneError(
            f"training loss became {loss} at step {state.global_step}: {hint}; "
            f"complete checkpoints so far stay in {self.checkpoints_dir}"
        )


def plot_loss_curve(log_history: list[dict], path: Path) -> Path | None:
    """Train and val loss against step as a PNG; None when nothing was logged."""
    train = [(r["step"], r["loss"]) for r in log_history if "loss" in r and "step" in r]
    val = [(r["step"], r["eval_loss"]) for r in log_history if "eval_loss" in r and "step" in r]
    if not train and not val:
        return None
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6, 3.5), dpi=100)
    for points, label in ((train, "train loss"), (val, "val loss")):
        if points:
            ax.plot(*zip(*points, strict=True), marker="o" if len(points) < 30 else None, label=label)
    ax.set_xlabel("optimizer step")
    ax.set_ylabel("loss")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path
