"""A training progress bar that shows what a person watching a CPU run wants: loss, LR, tokens/s, ETA.

transformers' own bar shows steps only; its tokens/s figure appears once, at the end.
"""

from __future__ import annotations

import time

from tqdm.auto import tqdm
from transformers import TrainerCallback


class ProgressCallback(TrainerCallback):
    def __init__(self) -> None:
        self.bar: tqdm | None = None
        self.started = 0.0
        self.tokens_at_start = 0

    def on_train_begin(self, args, state, control, **kwargs):
        self.bar = tqdm(total=state.max_steps, desc="train", unit="step", dynamic_ncols=True)
        self.started = time.perf_counter()
        self.tokens_at_start = state.num_input_tokens_seen

    def on_step_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.update(state.global_step - self.bar.n)

    def on_log(self, args, state, control, logs=None, **kwargs):
        if self.bar is None or not logs or "loss" not in logs:
            return
        elapsed = max(time.perf_counter() - self.started, 1e-9)
        tokens_per_second = (state.num_input_tokens_seen - self.tokens_at_start) / elapsed
        logs["tokens_per_second"] = round(tokens_per_second, 1)
        self.bar.set_postfix(
            loss=f"{logs['loss']:.4f}", lr=f"{logs.get('learning_rate', 0):.2e}", tok_s=f"{tokens_per_second:.0f}"
        )

    def on_train_end(self, args, state, control, **kwargs):
        if self.bar is not None:
            self.bar.close()
            self.bar = None
