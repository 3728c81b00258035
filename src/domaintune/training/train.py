"""Stage 2, train: prepared splits -> run folder with an adapter (LoRA and its kin) or a full model.

Run folder layout (the contract with evaluate and compare):
    adapter/           PEFT adapter (safetensors) + tokenizer       (methods that save an adapter: lora, ...)
    model/             full HF model (safetensors) + tokenizer      (methods that save a model: full, freeze)
    run_card.json      how to reproduce the run and what it cost; written last
    metrics.jsonl      the trainer's log history, one record per line
    loss_curve.png     train (and val) loss against step
    tensorboard/       the same metrics as TensorBoard event files
    config.yaml        the resolved config
The loop itself is transformers' Trainer; the methods differ only in their registry entry (`modeling/methods/`).
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from accelerate import PartialState
from datasets import Dataset
from tensorboardX import SummaryWriter
from transformers import (
    DataCollatorWithPadding,
    EarlyStoppingCallback,
    PreTrainedTokenizerBase,
    Trainer,
    TrainerCallback,
    TrainingArguments,
    set_seed,
)
from transformers.integrations import TensorBoardCallback
from transformers.trainer_callback import PrinterCallback

from domaintune.core.config import Config, TrainConfig, save_config
from domaintune.core.errors import DomaintuneError
from domaintune.core.io import atomic_write_json, atomic_write_text, folder_bytes
from domaintune.core.outputs import check_output, config_inputs, replace_output
from domaintune.core.process import config_threads
from domaintune.core.runtime import (
    PeakRss,
    freed_memory_policy,
    git_commit,
    hardware,
    library_versions,
    resolve_precision,
)
from domaintune.data.prepare import read_data_card, read_split
from domaintune.modeling import methods
from domaintune.modeling.methods import check_method_supported, recomputes_activations
from domaintune.modeling.models import (
    count_parameters,
    load_causal_lm,
    load_tokenizer,
    resolve_model,
    weights_fingerprint,
)
from domaintune.modeling.render import encode_messages, encode_sft, encode_text
from domaintune.modeling.seqcls import encode_classification, load_classifier, set_pad_token
from domaintune.training.batching import (
    LossPositionsCollator,
    drop_mask_for_packed_rows,
    pack_rows,
    takes_loss_positions,
)
from domaintune.training.checkpoints import (
    MarkCompleteCallback,
    complete_checkpoints,
    last_complete_checkpoint,
    remove_incomplete,
    work_dir,
)
from domaintune.training.monitor import NonFiniteLossGuard, plot_loss_curve, warn_if_loss_stalled
from domaintune.training.progress import ProgressCallback


@config_threads
def run_train(cfg: Config, resume: bool = False, callbacks: list[TrainerCallback] | None = None,
              overwrite: bool = False) -> Path:
    """Train `cfg.model` on the prepared splits in `cfg.data.output_dir`; returns the run folder.

    With `resume`, continue from the last complete checkpoint of an interrupted run of the same folder.
    `callbacks` join the Trainer's own (the sweep's pruning callback watches val loss through them).
    An existing folder at `train.output_dir` is replaced only if it is a run, or with `overwrite` (outputs.py).
    """
    t = cfg.train
    method = methods.get(t.method)
    check_train_output(cfg, overwrite)
    if method.trains_on == "preferences":
        from domaintune.training.dpo import run_train_dpo  # preference training has its own loop (TRL's DPOTrainer)

        return run_train_dpo(cfg, overwrite)
    check_method_supported(t)
    # glibc's allocator setting is process-wide (one malloc per process): chosen for this run's memory
    # profile and put back after, so a program that trains and then does other work keeps what it had.
    on_cpu = not torch.cuda.is_available()
    with freed_memory_policy(recomputes_activations(t) if on_cpu else None):
        return _train(cfg, method, resume, callbacks, overwrite)


def _train(cfg: Config, method: methods.Method, resume: bool, callbacks: list[TrainerCallback] | None,
           overwrite: bool) -> Path:
    t = cfg.train
    set_seed(cfg.seed)
    precision = resolve_precision(t.precision)
    card = read_data_card(cfg.data.output_dir)
    if t.task == "classification" and not card.get("labels"):
        raise DomaintuneError("train.task=classification needs labelled data (data.format=classification)")
    if t.task == "sft" and card.get("labels") is None and card.get("format") not in ("instruction", "chat"):
        raise DomaintuneError(
            "train.task=sft needs labelled, instruction or chat data (data.format); for raw text use causal-lm"
        )
    work = work_dir(t.output_dir)
    # Under torchrun / accelerate launch this joins the process group (gloo on CPU); alone it is a no-op.
    processes = PartialState(cpu=not torch.cuda.is_available())
    if processes.is_main_process:
        _prepare_work_dir(work, resume)
    processes.wait_for_everyone()
    checkpoint = last_complete_checkpoint(work / "checkpoints") if resume else None

    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.revision)
    if t.task == "classification":
        model = load_classifier(source, card["labels"], cfg.model.revision)
        set_pad_token(model, tokenizer)
    else:
        model = (method.load_base or load_causal_lm)(source, cfg.model.revision)
    # Checked when the adapter is loaded again: PEFT would accept other base weights of the same shapes.
    # Taken before wrapping (PiSSA changes the base in memory; its saved adapter fits the original).
    unquantized_adapter = method.saves == "adapter" and method.load_base is None
    base_weights = weights_fingerprint(model) if unquantized_adapter else None
    model = method.wrap(model, t)
    train_rows = read_split(cfg.data.output_dir, "train")[: t.max_train_rows]
    val_rows = read_split(cfg.data.output_dir, "val")
    if t.task == "classification":
        train_set = encode_classification(train_rows, tokenizer, card["labels"], t.max_length)
        val_set = encode_classification(val_rows, tokenizer, card["labels"], t.max_length) if val_rows else None
        collator = DataCollatorWithPadding(tokenizer)
    else:
        train_set = encode_rows(train_rows, tokenizer, cfg)
        val_set = encode_rows(val_rows, tokenizer, cfg) if val_rows else None
        collator = LossPositionsCollator(tokenizer.pad_token_id, keep_logits=takes_loss_positions(model))
        model.register_forward_pre_hook(drop_mask_for_packed_rows, with_kwargs=True)
    learning_rate = t.learning_rate or method.default_learning_rate

    trainer = Trainer(
        model=model,
        args=training_arguments(t, cfg.seed, precision, learning_rate, work, has_val=val_set is not None),
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        processing_class=tokenizer,
    )
    trainer.remove_callback(PrinterCallback)
    trainer.add_callback(ProgressCallback())
    trainer.add_callback(MarkCompleteCallback())
    trainer.add_callback(NonFiniteLossGuard(learning_rate, precision, work / "checkpoints"))
    trainer.add_callback(TensorBoardCallback(tb_writer=SummaryWriter(logdir=str(work / "tensorboard"))))
    if t.early_stopping_patience:
        trainer.add_callback(EarlyStoppingCallback(early_stopping_patience=t.early_stopping_patience))
    for callback in callbacks or []:
        trainer.add_callback(callback)

    started = time.perf_counter()
    try:
        with PeakRss() as memory:
            result = trainer.train(resume_from_checkpoint=str(checkpoint) if checkpoint else None)
    except torch.cuda.OutOfMemoryError:
        if processes.is_main_process:
            _discard_if_nothing_to_resume(work)
        raise DomaintuneError(
            "out of GPU memory: lower train.batch_size (raise train.grad_accum to keep the batch), "
            "train.max_length, or set train.gradient_checkpointing=true / train.method=lora; "
            "see docs/troubleshooting.md#out-of-memory"
        ) from None
    except BaseException:
        if processes.is_main_process:
            _discard_if_nothing_to_resume(work)
        raise
    wall = time.perf_counter() - started
    val_loss = _final_val_loss(trainer) if val_set is not None else None
    if not processes.is_main_process:
        return Path(t.output_dir)

    weights_dir = work / method.saves
    method.save(model, weights_dir)
    tokenizer.save_pretrained(weights_dir)
    history = trainer.state.log_history
    atomic_write_text(work / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
    plot_loss_curve(history, work / "loss_curve.png")
    save_config(cfg, work)
    shutil.rmtree(work / "checkpoints", ignore_errors=True)
    tokens = int(trainer.state.num_input_tokens_seen)
    atomic_write_json(work / "run_card.json", {
        "method": t.method,
        "task": t.task,
        "base_model": cfg.model.name,
        "base_weights_fingerprint": base_weights,
        "data_fingerprint": card["fingerprint"],
        "labels": card.get("labels"),
        "seed": cfg.seed,
        "precision": precision,
        "gradient_checkpointing": recomputes_activations(t),
        "resumed_from_step": int(checkpoint.name.split("-")[-1]) if checkpoint else None,
        "hardware": hardware(),
        "versions": library_versions(),
        "git_commit": git_commit(),
        "train_rows": len(train_rows),
        "steps": trainer.state.global_step,
        "train_wall_seconds": round(wall, 2),
        "train_tokens": tokens,
        "train_tokens_per_second": round(tokens / wall, 1) if wall else None,
        "train_loss": round(result.training_loss, 5),
        "val_loss": round(val_loss, 5) if val_loss is not None else None,
        "best_checkpoint_step": _step_of(trainer.state.best_model_checkpoint),
        "peak_rss_bytes": memory.peak,
        "rss_before_train_bytes": memory.before,
        "peak_cuda_bytes": torch.cuda.max_memory_allocated() if torch.cuda.is_available() else None,
        "trainable_parameters": count_parameters(model, trainable_only=True),
        "total_parameters": count_parameters(model, trainable_only=False),
        "weights_bytes": folder_bytes(weights_dir, "*.safetensors"),
        "warnings": warn_if_loss_stalled(history),
    })
    return replace_output(work, t.output_dir, "run", overwrite)


def check_train_output(cfg: Config, overwrite: bool = False) -> Path:
    preferences = methods.get(cfg.train.method).trains_on == "preferences"
    data = cfg.train.dpo.data if preferences else cfg.data.output_dir
    return check_output(cfg.train.output_dir, "run", [*config_inputs(cfg), data], overwrite, "train.output_dir")


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


def _final_val_loss(trainer: Trainer) -> float:
    """Val loss of the weights being saved; an evaluation the loop already ran at the last step is reused."""
    last = next((r for r in reversed(trainer.state.log_history) if "eval_loss" in r), None)
    if last and last["step"] == trainer.state.global_step and not trainer.args.load_best_model_at_end:
        return last["eval_loss"]
    return trainer.evaluate()["eval_loss"]


def _step_of(checkpoint: str | None) -> int | None:
    return int(checkpoint.rsplit("-", 1)[-1]) if checkpoint else None


def encode_rows(rows: list[dict], tokenizer: PreTrainedTokenizerBase, cfg: Config) -> Dataset:
    t = cfg.train
    cache: dict[str, list[int]] = {}
    encoded = []
    for row in rows:
        if t.task == "sft" and row.get("messages"):
            item = encode_messages(tokenizer, _with_system(row["messages"], cfg), t.max_length, t.loss_on)
        elif t.task == "sft":
            item = encode_sft(tokenizer, cfg.prompt, row["text"], row["label"], t.max_length, t.loss_on, cache)
        else:  # packed documents are split into max_length pieces later, so none is cut here
            item = encode_text(tokenizer, row["text"], None if packs(t) else t.max_length)
        encoded.append({"input_ids": item.input_ids, "labels": item.labels, "length": len(item.input_ids)})
    dataset = Dataset.from_list(encoded)
    return pack_rows(dataset, t.max_length, split_long=t.task == "causal-lm") if packs(t) else dataset


def packs(t: TrainConfig) -> bool:
    return t.packing if t.packing is not None else t.task == "causal-lm"


def _with_system(messages: list[dict], cfg: Config) -> list[dict]:
    if cfg.prompt.system and not any(m.get("role") == "system" for m in messages):
        return [{"role": "system", "content": cfg.prompt.system}, *messages]
    return messages


def training_arguments(
    t: TrainConfig, seed: int, precision: str, learning_rate: float, work: Path, has_val: bool
) -> TrainingArguments:
    evaluating = has_val and t.eval_steps is not None
    saving = t.save_steps is not None
    return TrainingArguments(
        output_dir=str(work / "checkpoints"),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        activation_checkpointing=recomputes_activations(t),
        learning_rate=learning_rate,
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is read as a ratio of the total steps
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        logging_nan_inf_filter=False,  # NonFiniteLossGuard must see a NaN, not an average that hides it
        eval_strategy="steps" if evaluating else "no",
        eval_steps=t.eval_steps if evaluating else None,
        save_strategy="steps" if saving else "no",
        save_steps=t.save_steps,
        save_total_limit=t.save_total_limit,
        load_best_model_at_end=evaluating and saving,
        metric_for_best_model="eval_loss",
        greater_is_better=False,
        report_to="none",  # TensorBoard is added as a callback, to write inside the run folder
        seed=seed,
        data_seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        # group_by_length (the default) pads to the longest of similar-length rows, not to max_length.
        train_sampling_strategy=t.sampling,
        include_num_input_tokens_seen="non_padding",
        prediction_loss_only=True,  # evaluation needs the loss only; gathering every logit costs GBs
        # LossPositionsCollator picks its own columns and needs packed rows' `seq_lengths`.
        remove_unused_columns=t.task == "classification",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )
