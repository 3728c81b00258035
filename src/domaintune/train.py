"""Stage 2, train: prepared splits -> run folder with an adapter (LoRA) or a full model.

Run folder layout (the contract with evaluate and compare):
    adapter/           PEFT adapter (safetensors) + tokenizer       (method: lora, dpo)
    model/             full HF model (safetensors) + tokenizer      (method: full)
    run_card.json      how to reproduce the run and what it cost
    metrics.jsonl      the trainer's log history, one record per line
    config.yaml        the resolved config
The loop itself is transformers' Trainer; full and LoRA differ only in `wrap_model`.
"""

from __future__ import annotations

import json
import shutil
import time
from pathlib import Path

import torch
from datasets import Dataset
from peft import LoraConfig, get_peft_model
from transformers import (
    DataCollatorForSeq2Seq,
    PreTrainedModel,
    PreTrainedTokenizerBase,
    Trainer,
    TrainingArguments,
    set_seed,
)
from transformers.trainer_callback import PrinterCallback

from .config import Config, TrainConfig, save_config
from .errors import DomaintuneError
from .io import atomic_write_json, atomic_write_text, staged_dir
from .models import load_base
from .prepare import read_data_card, read_split
from .progress import ProgressCallback
from .render import encode_sft, encode_text
from .runtime import configure_threads, git_commit, hardware, library_versions, peak_rss_bytes, resolve_precision

DEFAULT_LR = {"lora": 2e-4, "full": 2e-5, "dpo": 5e-5}


def run_train(cfg: Config) -> Path:
    """Train `cfg.model` on the prepared splits in `cfg.data.output_dir`; returns the run folder."""
    t = cfg.train
    if t.method == "dpo":
        from .train_dpo import run_train_dpo  # preference training has its own loop (TRL's DPOTrainer)

        return run_train_dpo(cfg)
    configure_threads(cfg.threads)
    set_seed(cfg.seed)
    precision = resolve_precision(t.precision)
    card = read_data_card(cfg.data.output_dir)
    train_rows = read_split(cfg.data.output_dir, "train")[: t.max_train_rows]
    val_rows = read_split(cfg.data.output_dir, "val")
    if t.task == "sft" and card.get("labels") is None:
        raise DomaintuneError("train.task=sft needs labelled data (data.format=classification); use causal-lm")

    model, tokenizer = load_base(cfg.model.name, cfg.model.revision)
    model = wrap_model(model, t)
    train_set = encode_rows(train_rows, tokenizer, cfg)
    val_set = encode_rows(val_rows, tokenizer, cfg) if val_rows else None

    with staged_dir(t.output_dir) as run_dir:
        args = training_arguments(t, cfg.seed, precision, run_dir / "checkpoints")
        trainer = Trainer(
            model=model,
            args=args,
            train_dataset=train_set,
            eval_dataset=val_set,
            data_collator=DataCollatorForSeq2Seq(tokenizer, padding=True, label_pad_token_id=-100),
            processing_class=tokenizer,
        )
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ProgressCallback())
        started = time.perf_counter()
        result = trainer.train()
        wall = time.perf_counter() - started
        val_loss = trainer.evaluate()["eval_loss"] if val_set is not None else None

        weights_dir = run_dir / ("adapter" if t.method == "lora" else "model")
        model.save_pretrained(weights_dir, safe_serialization=True)
        tokenizer.save_pretrained(weights_dir)
        history = "".join(json.dumps(r) + "\n" for r in trainer.state.log_history)
        atomic_write_text(run_dir / "metrics.jsonl", history)
        tokens = int(trainer.state.num_input_tokens_seen)
        atomic_write_json(run_dir / "run_card.json", {
            "method": t.method,
            "task": t.task,
            "base_model": cfg.model.name,
            "data_fingerprint": card["fingerprint"],
            "labels": card.get("labels"),
            "seed": cfg.seed,
            "precision": precision,
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
            "peak_rss_bytes": peak_rss_bytes(),
            "trainable_parameters": count_parameters(model, trainable_only=True),
            "total_parameters": count_parameters(model, trainable_only=False),
            "weights_bytes": folder_bytes(weights_dir, "*.safetensors"),
        })
        save_config(cfg, run_dir)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return Path(t.output_dir)


def wrap_model(model: PreTrainedModel, t: TrainConfig) -> PreTrainedModel:
    """The one place where full fine-tuning and LoRA differ."""
    if t.method == "full":
        model.requires_grad_(True)
        return model
    try:
        return get_peft_model(model, lora_config(t))
    except ValueError as exc:
        raise DomaintuneError(f"train.lora.target_modules: {exc}") from None


def lora_config(t: TrainConfig) -> LoraConfig:
    return LoraConfig(
        task_type="CAUSAL_LM",
        r=t.lora.r,
        lora_alpha=t.lora.alpha,
        lora_dropout=t.lora.dropout,
        target_modules=t.lora.target_modules,
    )


def encode_rows(rows: list[dict], tokenizer: PreTrainedTokenizerBase, cfg: Config) -> Dataset:
    t = cfg.train
    cache: dict[str, list[int]] = {}
    encoded = []
    for row in rows:
        if t.task == "sft":
            item = encode_sft(tokenizer, cfg.prompt, row["text"], row["label"], t.max_length, t.loss_on, cache)
        else:
            item = encode_text(tokenizer, row["text"], t.max_length)
        encoded.append({"input_ids": item.input_ids, "labels": item.labels, "length": len(item.input_ids)})
    return Dataset.from_list(encoded)


def training_arguments(t: TrainConfig, seed: int, precision: str, scratch: Path) -> TrainingArguments:
    return TrainingArguments(
        output_dir=str(scratch),
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        per_device_eval_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate or DEFAULT_LR[t.method],
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is read as a ratio of the total steps
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        eval_strategy="no",
        save_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        use_cpu=not torch.cuda.is_available(),
        # Padding to the longest in a batch of similar lengths instead of to max_length.
        train_sampling_strategy="group_by_length",
        include_num_input_tokens_seen="non_padding",
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def count_parameters(model: torch.nn.Module, trainable_only: bool) -> int:
    return sum(p.numel() for p in model.parameters() if p.requires_grad or not trainable_only)


def folder_bytes(folder: Path, pattern: str = "*") -> int:
    return sum(f.stat().st_size for f in Path(folder).glob(pattern) if f.is_file())
