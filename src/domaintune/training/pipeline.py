"""What every training run shares, whichever trainer it builds (train.py's Trainer, dpo.py's DPOTrainer).

A run: `start_run` (seed, the process group, the `.NAME.partial` work folder fresh or resumed; precision
and recomputation come from the memory plan made before it), the trainer arguments every run has
(`shared_arguments`), the callbacks (`add_callbacks`: progress, checkpoint markers, the non-finite-loss
guard, TensorBoard), the loop under `train_guarded` (peak memory, a folder with nothing to resume removed on
failure), and `finish_run`: weights, tokenizer, metrics.jsonl, loss curve, config.yaml and the run card (one
builder, `run_card`, with the keys every run has), after
which the folder is moved into place. A trainer and its data are all a method brings of its own.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from accelerate import PartialState
from tensorboardX import SummaryWriter
from transformers import (
    EarlyStoppingCallback,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback

from domaintune.core.config import save_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_text, folder_bytes
from domaintune.core.outputs import replace_output
from domaintune.core.run_card import RunCard, write_run_card
from domaintune.core.runtime import PeakRss, git_commit, hardware, library_versions
from domaintune.core.schema import Config
from domaintune.modeling.methods import Method
from domaintune.modeling.models import count_parameters
from domaintune.training.checkpoints import (
    MarkCompleteCallback,
    complete_checkpoints,
    last_complete_checkpoint,
    remove_incomplete,
    work_dir,
)
from domaintune.training.memory_plan import MemoryPlan
from domaintune.training.monitor import NonFiniteLossGuard, plot_loss_curve, warn_if_loss_stalled
from domaintune.training.progress import ProgressCallback


@dataclass(frozen=True)
class RunStart:
    cfg: Config
    method: Method
    work: Path  # `.NAME.partial` beside train.output_dir, renamed into place when the run is complete
    checkpoint: Path | None  # the complete checkpoint a resumed run continues from
    processes: PartialState
    plan: MemoryPlan  # the precision, whether activations are recomputed, and the estimate behind it
    learning_rate: float

    @property
    def precision(self) -> str:
        return self.plan.precision


@dataclass(frozen=True)
class Trained:
    result: Any  # the trainer's TrainOutput
    wall_seconds: float
    memory: PeakRss


def start_run(cfg: Config, method: Method, resume: bool, plan: MemoryPlan) -> RunStart:
    set_seed(cfg.seed)
    work = work_dir(cfg.train.output_dir)
    # Under torchrun / accelerate launch this joins the process group (gloo on CPU); alone it is a no-op.
    processes = PartialState(cpu=not torch.cuda.is_available())
    if processes.is_main_process:
        _prepare_work_dir(work, resume)
    processes.wait_for_everyone()
    checkpoint = last_complete_checkpoint(work / "checkpoints") if resume else None
    return RunStart(cfg, method, work, checkpoint, processes, plan,
                    cfg.train.learning_rate or method.default_learning_rate)


def shared_arguments(run: RunStart) -> dict:
    """The TrainingArguments fields every run sets the same way (DPOConfig is a TrainingArguments too)."""
    t, seed = run.cfg.train, run.cfg.seed
    return dict(
        output_dir=str(run.work / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        activation_checkpointing=run.plan.recompute,
        learning_rate=run.learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is read as a ratio of the total steps
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # NonFiniteLossGuard must see a NaN, not an average that hides it
        save_strategy="steps" if t.save_steps is not None else "no",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        report_to="none",  # TensorBoard is added as a callback, to write inside the run folder
        seed=seed,
        data_seed=seed,
        bf16=run.precision == "bf16",
        fp16=run.precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def add_callbacks(trainer: Trainer, run: RunStart, callbacks: list[TrainerCallback] | None) -> None:
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressCallback())
    trainer.add_callback(MarkCompleteCallback())
    trainer.add_callback(NonFiniteLossGuard(run.learning_rate, run.precision, run.work / "checkpoints"))
    trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(logdir=str(run.work / "tensorboard"))))
    if run.cfg.train.early_stopping_patience:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=run.cfg.train.early_stopping_patience))
    for callback in callbacks or []:
        trainer.add_callback(callback)


def train_guarded(trainer: Trainer, run: RunStart) -> Trained:
    """`trainer.train()` from the run's checkpoint; on any failure a work folder without a complete
    checkpoint is removed (nothing half-trained is left), and running out of GPU memory is explained."""
    started = time.perf_counter()
    try:
        with PeakRss() as memory:
            result = trainer.train(resume_from_checkpoint=str(run.checkpoint) if run.checkpoint else None)
    except torch.cuda.OutOfMemoryError:
        if run.processes.is_main_process:
            _discard_if_nothing_to_resume(run.work)
        raise DomaintuneError(
            "out of GPU memory: lower train.batch_size (raise train.grad_accum to keep the batch), "
            "train.max_length, or set train.gradient_checkpointing=true / train.method=lora; "
            "see docs/troubleshooting.md#out-of-memory"
        ) from None
    except BaseException:
        if run.processes.is_main_process:
            _discard_if_nothing_to_resume(run.work)
        raise
    return Trained(result, time.perf_counter() - started, memory)


def finish_run(run: RunStart, trainer: Trainer, trained: Trained, model: PreTrainedModel,
               tokenizer: PreTrainedTokenizerBase, card: dict[str, Any], overwrite: bool) -> Path:
    """Main process only: write the run folder, the run card (`card`: `run_card`'s fields and the method's own)
    last, and move it into place."""
    weights_dir = run.work / run.method.saves
    run.method.save(model, weights_dir)
    tokenizer.save_pretrained(weights_dir)
    history = trainer.state.log_history
    atomic_write_text(run.work / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    plot_loss_curve(history, run.work / "loss_curve.png")
    save_config(run.cfg, run.work)
    shutil.rmtree(run.work / "checkpoints", ignore_errors=True)
    write_run_card(run.work, RunCard(
        **card,
        trainable_parameters=count_parameters(model, trainable_only=True),
        total_parameters=count_parameters(model, trainable_only=False),
        weights_bytes=folder_bytes(weights_dir, "*.safetensors"),
        warnings=warn_if_loss_stalled(history),
    ))
    return replace_output(run.work, run.cfg.train.output_dir, "run", overwrite)


def run_card(run: RunStart, trainer: Trainer, trained: Trained, *, task: str, data_fingerprint: str,
             labels: list[str] | None, train_rows: int, base_weights: str | None, val_loss: float | None,
             val_scores: dict | None = None) -> dict[str, Any]:
    """The fields of `core.run_card.RunCard` every training run fills this way; `finish_run` adds the
    weights' (a new field goes into RunCard and here).

    `val_scores`: the closing evaluation's record (`final_val_metrics`), whose label metrics become
    val_accuracy and val_macro_f1. `best_val_value` is the best `train.select_by` figure of the evaluations
    during training, at `best_val_step`; `best_checkpoint_step` says whether those weights were restored.
    """
    t, state = run.cfg.train, trainer.state
    val_scores = val_scores or {}
    tokens = int(state.num_input_tokens_seen)
    wall = trained.wall_seconds
    return {
        "method": t.method,
        "task": task,
        "base_model": run.cfg.model.name,
        "base_weights_fingerprint": base_weights,
        "data_fingerprint": data_fingerprint,
        "labels": labels,
        "seed": run.cfg.seed,
        "precision": run.precision,
        "gradient_checkpointing": run.plan.recompute,
        "memory_plan": run.plan.as_dict(),
        "resumed_from_step": int(run.checkpoint.name.split("-")[-1]) if run.checkpoint else None,
        "hardware": hardware(),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "train_rows": train_rows,
        "steps": state.global_step,
        "train_wall_seconds": round(wall, 2),
        "train_tokens": tokens,
        "train_tokens_per_second": round(tokens / wall, 1) if wall else None,
        "train_loss": round(trained.result.training_loss, 5),
        "val_loss": round(val_loss, 5) if val_loss is not None else None,
        "val_accuracy": val_scores.get("eval_accuracy"),
        "val_macro_f1": val_scores.get("eval_macro_f1"),
        "select_by": t.select_by,
        "best_val_value": round(state.best_metric, 5) if state.best_metric is not None else None,
        "best_val_step": _step_with(state.log_history, trainer.args.metric_for_best_model, state.best_metric),
        "best_checkpoint_step": _step_of(state.best_model_checkpoint),
        "peak_rss_bytes": trained.memory.peak,
        "rss_before_train_bytes": trained.memory.before,
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
    }


def final_val_metrics(trainer: Trainer) -> dict:
    """The val figures (`eval_loss`, and `eval_accuracy`, `eval_macro_f1` for labelled data) of the weights
    being saved; an evaluation the loop already ran at the last step is reused."""
    last = next((r for r in reversed(trainer.state.log_history) if "eval_loss" in r), None)
    if last and last["step"] == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return last
    return trainer.evaluate()


def _prepare_work_dir(work: Path, resume: bool) -> None:
    """A fresh run starts from an empty work folder; a resumed one from its last complete checkpoint."""
    if resume:
        remove_incomplete(work / "checkpoints")
        if last_complete_checkpoint(work / "checkpoints") is None:
            raise DomaintuneError(f"nothing to resume: {work} holds no complete checkpoint (set train.save_steps)")
        return
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)


def _discard_if_nothing_to_resume(work: Path) -> None:
    if not complete_checkpoints(work / "checkpoints"):
        shutil.rmtree(work, ignore_errors=True)


def _step_with(history: list[dict], metric: str | None, value: float | None) -> int | None:
    """The first evaluation that reached `value` (the Trainer keeps the value of the best, not its step
    when no checkpoints are saved)."""
    return next((r["step"] for r in history if value is not None and r.get(metric) == value), None)


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None

