"""What the exactness tests share: each dtype's rounding unit, and a recorder of every optimizer step.

A test that compares two computations states the precision it runs in and derives its bound from that
precision's unit roundoff u (half the gap between 1 and the next number): fp32 keeps 24 significant bits,
bf16 keeps 8, so one rounding moves a value by at most u times itself.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch
from transformers import TrainerCallback

UNIT_ROUNDOFF = {"fp32": 2.0**-24, "bf16": 2.0**-8}


class StepRecorder(TrainerCallback):
    """Writes, for every optimizer step, the trainable parameters' gradients (after any all-reduce,
    before the update) to `folder/step-N.pt`, and counts the steps this process ran."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)
        self.steps_run = 0

    def on_pre_optimizer_step(self, args, state, control, model=None, **kwargs):
        if state.is_world_process_zero:
            self.folder.mkdir(parents=True, exist_ok=True)
            grads = {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.requires_grad}
            torch.save(grads, self.folder / f"step-{state.global_step + 1}.pt")

    def on_step_end(self, args, state, control, **kwargs):
        self.steps_run += 1


def recorded_gradients(folder: str | Path) -> dict[int, dict[str, torch.Tensor]]:
    return {int(p.stem.split("-")[1]): torch.load(p) for p in sorted(Path(folder).glob("step-*.pt"))}


def relative_l2(want: dict[str, torch.Tensor], got: dict[str, torch.Tensor]) -> float:
    """|got - want| / |want| over all tensors together (a direction and a scale error both show)."""
    assert want.keys() == got.keys()
    diff = sum(float(((got[k] - want[k]).double() ** 2).sum()) for k in want)
    norm = sum(float((want[k].double() ** 2).sum()) for k in want)
    return (diff / norm) ** 0.5


def logged_steps(run_dir: str | Path) -> dict[int, dict]:
    """The per-step training records (loss, grad_norm) of a run's metrics.jsonl."""
    rows = [json.loads(line) for line in (Path(run_dir) / "metrics.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in rows if "loss" in r and "grad_norm" in r}


def torchrun_cli_with_recorder(folder: str | Path) -> str:
    """Source of a script for torchrun: the domaintune CLI with a StepRecorder in every training."""
    return f"""
import functools, sys
import domaintune.api as api
from exactness import StepRecorder
api.run_train = functools.partial(api.run_train, callbacks=[StepRecorder({str(folder)!r})])
from domaintune.cli import main
sys.exit(main(sys.argv[1:]))
"""
