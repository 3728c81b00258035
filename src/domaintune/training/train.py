"""Stage 2, train: prepared splits -> run folder with an adapter (LoRA and its kin) or a full model.

Run folder layout (the contract with evaluate and compare):
    adapter/           PEFT adapter (safetensors) + tokenizer       (methods that save an adapter: lora, ...)
    model/             full HF model (safetensors) + tokenizer      (methods that save a model: full, freeze)
    run_card.json      how to reproduce the run and what it cost; written last
    metrics.jsonl      the trainer's log history, one record per line
    loss_curve.png     train (and val) loss against step
    tensorboard/       the same metrics as TensorBoard event files
    config.yaml        the resolved config
The loop itself is transformers' Trainer, set up, run and saved by pipeline.py (which DPO shares); the
methods differ only in their registry entry (`modeling/methods/`).
"""

from __future__ import annotations

from pathlib import Path

import torch
from datasets import Dataset
from transformers import (
    DataCollatorWithPadding,
    PreTrainedTokenizerBase,
    TrainerCallback,
    TrainingArguments,
)

from domaintune.core.data_card import read_data_card
from domaintune.core.errors import DomaintuneError
from domaintune.core.outputs import check_output, config_inputs
from domaintune.core.process import config_threads
from domaintune.core.runtime import freed_memory_policy
from domaintune.core.schema import Config, TrainConfig
from domaintune.data.prepare import read_split
from domaintune.modeling import methods
from domaintune.modeling.methods import check_method_supported
from domaintune.modeling.models import load_causal_lm, load_tokenizer, resolve_model, weights_fingerprint
from domaintune.modeling.render import encode_messages, encode_sft, encode_text
from domaintune.modeling.seqcls import encode_classification, load_classifier, set_pad_token
from domaintune.training.balance import BalancedLabelSampler, WeightedHeadLoss, balanced_class_weights
from domaintune.training.batching import (
    LossPositionsCollator,
    drop_mask_for_packed_rows,
    pack_rows,
    takes_loss_positions,
)
from domaintune.training.memory_plan import MemoryPlan, run_plan
from domaintune.training.pipeline import (
    RunStart,
    add_callbacks,
    final_val_metrics,
    finish_run,
    run_card,
    shared_arguments,
    start_run,
    train_guarded,
)
from domaintune.training.task_trainer import TaskTrainer, metric_for_best_model, val_predictor


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
    check_method_supported(t)
    # Before anything is loaded: a step that cannot fit stops here, and `auto` recomputes only when needed.
    plan = run_plan(cfg)
    print(plan.summary(), flush=True)
    plan.check_fits()
    # glibc's allocator setting is process-wide (one malloc per process): chosen for this run's memory
    # profile and put back after, so a program that trains and then does other work keeps what it had.
    on_cpu = not torch.cuda.is_available()
    with freed_memory_policy(plan.recompute if on_cpu else None):
        if method.trains_on == "preferences":
            from domaintune.training.dpo import train_dpo  # the same pipeline around TRL's DPOTrainer

            return train_dpo(cfg, method, resume, callbacks, overwrite, plan)
        return _train(cfg, method, resume, callbacks, overwrite, plan)


def _train(cfg: Config, method: methods.Method, resume: bool, callbacks: list[TrainerCallback] | None,
           overwrite: bool, plan: MemoryPlan) -> Path:
    t = cfg.train
    card = read_data_card(cfg.data.output_dir)
    labels = card.labels
    if t.task == "classification" and not labels:
        raise DomaintuneError("train.task=classification needs labelled data (data.format=classification)")
    if t.task == "sft" and labels is None and card.format not in ("instruction", "chat"):
        raise DomaintuneError(
            "train.task=sft needs labelled, instruction or chat data (data.format); for raw text use causal-lm"
        )
    if t.select_by != "val_loss" and not labels:
        raise DomaintuneError(f"train.select_by={t.select_by} needs labelled data (data.format=classification) "
                              "to score val; use train.select_by=val_loss")
    if t.balanced_sampler and not labels:
        raise DomaintuneError("train.balanced_sampler needs labelled data (data.format=classification)")
    run = start_run(cfg, method, resume, plan)

    source = resolve_model(cfg.model.name)
    tokenizer = load_tokenizer(source, cfg.model.revision)
    if t.task == "classification":
        model = load_classifier(source, labels, cfg.model.revision)
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
        train_set = encode_classification(train_rows, tokenizer, labels, t.max_length)
        val_set = encode_classification(val_rows, tokenizer, labels, t.max_length) if val_rows else None
        collator = DataCollatorWithPadding(tokenizer)
    else:
        train_set = encode_rows(train_rows, tokenizer, cfg)
        val_set = encode_rows(val_rows, tokenizer, cfg) if val_rows else None
        collator = LossPositionsCollator(tokenizer.pad_token_id, keep_logits=takes_loss_positions(model))
        model.register_forward_pre_hook(drop_mask_for_packed_rows, with_kwargs=True)

    scored = bool(labels and val_rows)  # val gets accuracy and macro-F1 beside its loss
    trainer = TaskTrainer(
        model=model,
        args=training_arguments(run, has_val=val_set is not None),
        train_dataset=train_set,
        eval_dataset=val_set,
        data_collator=collator,
        processing_class=tokenizer,
        compute_loss_func=head_loss(t, train_rows, labels),
        val_predictor=val_predictor(cfg, tokenizer, val_rows, labels) if scored else None,
        val_gold=[row["label"] for row in val_rows] if scored else None,
        labels=labels,
        train_sampler=BalancedLabelSampler([row["label"] for row in train_rows], cfg.seed)
        if t.balanced_sampler else None,
    )
    add_callbacks(trainer, run, callbacks)
    trained = train_guarded(trainer, run)
    val = final_val_metrics(trainer) if val_set is not None else {}
    if not run.processes.is_main_process:
        return Path(t.output_dir)
    summary = run_card(run, trainer, trained, task=t.task, data_fingerprint=card.fingerprint,
                       labels=labels, train_rows=len(train_rows), base_weights=base_weights,
                       val_loss=val.get("eval_loss"), val_scores=val)
    return finish_run(run, trainer, trained, model, tokenizer, summary, overwrite)


def head_loss(t: TrainConfig, train_rows: list[dict], labels: list[str] | None) -> WeightedHeadLoss | None:
    """The classification head's loss when `train.class_weights` asks for one; None keeps the model's own."""
    if t.class_weights == "none":
        return None
    return WeightedHeadLoss(balanced_class_weights([row["label"] for row in train_rows], labels))


def check_train_output(cfg: Config, overwrite: bool = False) -> Path:
    preferences = methods.get(cfg.train.method).trains_on == "preferences"
    data = cfg.train.dpo.data if preferences else cfg.data.output_dir
    return check_output(cfg.train.output_dir, "run", [*config_inputs(cfg), data], overwrite, "train.output_dir")


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


def training_arguments(run: RunStart, has_val: bool) -> TrainingArguments:
    t = run.cfg.train
    evaluating = has_val and t.eval_steps is not None
    return TrainingArguments(
        **shared_arguments(run),
        eval_strategy="steps" if evaluating else "no",
        eval_steps=t.eval_steps if evaluating else None,
        load_best_model_at_end=evaluating and t.save_steps is not None,
        metric_for_best_model=metric_for_best_model(t.select_by)[0],
        greater_is_better=metric_for_best_model(t.select_by)[1],
        # group_by_length (the default) pads to the longest of similar-length rows, not to max_length.
        train_sampling_strategy=t.sampling,
        prediction_loss_only=True,  # evaluation needs the loss only; gathering every logit costs GBs
        # LossPositionsCollator picks its own columns and needs packed rows' `seq_lengths`.
        remove_unused_columns=t.task == "classification",
    )
