"""What the trainer held in memory when training ended, for comparing with what was saved."""

from __future__ import annotations

import torch
from transformers import TrainerCallback


class LogitsAtTrainEnd(TrainerCallback):
    """Logits of the trainer's model on fixed `inputs`, and a copy of its trainable parameters, taken in
    `on_train_end`: after the last step and before run_train saves anything, so a saved folder can be
    checked against the model that trained.

    Under bf16 mixed precision accelerate leaves the model's forward wrapped in autocast, so its logits
    are bf16 ones; the parameters are the float32 master weights whatever the precision."""

    def __init__(self, inputs: dict[str, torch.Tensor]):
        self.inputs = inputs
        self.logits: torch.Tensor | None = None
        self.trainable: dict[str, torch.Tensor] = {}

    def on_train_end(self, args, state, control, model=None, **kwargs):
        self.trainable = {name: p.detach().clone() for name, p in model.named_parameters() if p.requires_grad}
        was_training = model.training
        model.eval()  # dropout off, as in the loaded model the logits are compared with
        with torch.no_grad():
            self.logits = model(**self.inputs).logits.detach().clone()
        model.train(was_training)
