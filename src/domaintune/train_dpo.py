"""`train.method: dpo`: a LoRA adapter trained with TRL's DPOTrainer on reviewers' preferences.

Input: `train.dpo.data`, the preference.jsonl that `domaintune feedback export` writes. Each pair is
turned into TRL's conversational form (the user turn as the review page showed it, the two answers as
assistant turns), so the chat template renders it exactly as `serve` and `evaluate` do. The reference
model is the base with the adapter switched off, which TRL does itself when handed a `peft_config`.
The output is an ordinary run folder (adapter/, run_card.json, metrics.jsonl, config.yaml), so
evaluate, compare and serve read it like any LoRA run.
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from pathlib import Path

import torch
from datasets import Dataset
from transformers import PreTrainedTokenizerBase, set_seed
from transformers.trainer_callback import PrinterCallback
from trl import DPOConfig, DPOTrainer

from .config import Config, TrainConfig, save_config
from .errors import DomaintuneError
from .io import atomic_write_json, atomic_write_text
from .methods import DEFAULT_LR, lora_config
from .models import load_base
from .outputs import staged_output
from .progress import ProgressCallback
from .render import truncate_tokens
from .runtime import PeakRss, configure_threads, git_commit, hardware, library_versions, resolve_precision
from .train import count_parameters, folder_bytes

TEMPLATE_ALLOWANCE = 16  # tokens the chat template adds around the turns (role headers, end-of-turn)


def read_preferences(path: str | Path) -> list[dict]:
    """Rows with non-empty string `prompt`, `chosen`, `rejected`; pairs with equal answers carry no signal."""
    path = Path(path)
    if not path.is_file():
        raise DomaintuneError(f"train.dpo.data: {path} not found (write it with `domaintune feedback export`)")
    rows = []
    with path.open(encoding="utf-8") as handle:
        for number, line in enumerate(handle, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DomaintuneError(f"{path}:{number}: not valid JSON ({exc.msg})") from None
            for key in ("prompt", "chosen", "rejected"):
                if not isinstance(row.get(key), str) or not row[key].strip():
                    raise DomaintuneError(f"{path}:{number}: '{key}' must be a non-empty string")
            if row["chosen"] != row["rejected"]:
                rows.append({k: row[k] for k in ("prompt", "chosen", "rejected")})
    if not rows:
        raise DomaintuneError(f"{path}: no preference pairs with two different answers; collect votes first")
    return rows


def conversational(rows: list[dict], tokenizer: PreTrainedTokenizerBase, system: str | None,
                   max_length: int) -> Dataset:
    """TRL's conversational preference format, with each prompt cut so that both answers still fit."""
    head = [{"role": "system", "content": system}] if system else []
    items = []
    for row in rows:
        longest = max(len(tokenizer(row[k], add_special_tokens=False)["input_ids"]) for k in ("chosen", "rejected"))
        budget = max_length - longest - TEMPLATE_ALLOWANCE * (2 if system else 1)
        if budget < 8:
            raise DomaintuneError(
                f"train.max_length {max_length} leaves no room for a prompt beside an answer of {longest} tokens; "
                "raise train.max_length"
            )
        items.append({
            "prompt": head + [{"role": "user", "content": truncate_tokens(tokenizer, row["prompt"], budget)}],
            "chosen": [{"role": "assistant", "content": row["chosen"]}],
            "rejected": [{"role": "assistant", "content": row["rejected"]}],
        })
    return Dataset.from_list(items)


def dpo_arguments(t: TrainConfig, seed: int, precision: str, scratch: Path) -> DPOConfig:
    return DPOConfig(
        output_dir=str(scratch),
        beta=t.dpo.beta,
        max_length=t.max_length,
        num_train_epochs=t.epochs,
        max_steps=t.max_steps,
        per_device_train_batch_size=t.batch_size,
        gradient_accumulation_steps=t.grad_accum,
        learning_rate=t.learning_rate or DEFAULT_LR["dpo"],
        lr_scheduler_type=t.lr_scheduler,
        warmup_steps=t.warmup_ratio,  # a float below 1 is read as a ratio of the total steps
        weight_decay=t.weight_decay,
        logging_steps=t.logging_steps,
        save_strategy="no",
        eval_strategy="no",
        report_to="none",
        seed=seed,
        data_seed=seed,
        # DPOConfig turns bf16 and gradient checkpointing on by default; both are slow on a CPU.
        bf16=precision == "bf16",
        fp16=precision == "fp16",
        gradient_checkpointing=False,
        use_cpu=not torch.cuda.is_available(),
        dataloader_num_workers=0,
        disable_tqdm=True,
    )


def run_train_dpo(cfg: Config, overwrite: bool = False) -> Path:
    """Train a LoRA adapter on `cfg.model` by DPO on `cfg.train.dpo.data`; returns the run folder."""
    t = cfg.train
    configure_threads(cfg.threads)
    set_seed(cfg.seed)
    precision = resolve_precision(t.precision)
    data_path = Path(t.dpo.data)
    rows = read_preferences(data_path)[: t.max_train_rows]
    model, tokenizer = load_base(cfg.model.name, cfg.model.revision)
    dataset = conversational(rows, tokenizer, cfg.prompt.system, t.max_length)

    with staged_output(t.output_dir, "run", overwrite) as run_dir:
        trainer = DPOTrainer(
            model=model,
            args=dpo_arguments(t, cfg.seed, precision, run_dir / "checkpoints"),
            train_dataset=dataset,
            processing_class=tokenizer,
            peft_config=lora_config(t),
        )
        trainer.remove_callback(PrinterCallback)
        trainer.add_callback(ProgressCallback())
        started = time.perf_counter()
        with PeakRss() as memory:
            result = trainer.train()
        wall = time.perf_counter() - started

        weights_dir = run_dir / "adapter"
        trainer.model.save_pretrained(weights_dir, safe_serialization=True)
        tokenizer.save_pretrained(weights_dir)
        history = trainer.state.log_history
        atomic_write_text(run_dir / "metrics.jsonl", "".join(json.dumps(r) + "\n" for r in history))
        last = next((r for r in reversed(history) if "rewards/accuracies" in r), {})
        atomic_write_json(run_dir / "run_card.json", {
            "method": "dpo",
            "task": "preference",
            "base_model": cfg.model.name,
            "data_fingerprint": hashlib.sha256(data_path.read_bytes()).hexdigest()[:16],
            "preference_data": str(data_path.resolve()),
            "preference_pairs": len(rows),
            "beta": t.dpo.beta,
            "seed": cfg.seed,
            "precision": precision,
            "hardware": hardware(),
            "versions": library_versions(),
            "git_commit": git_commit(),
            "train_rows": len(rows),
            "steps": trainer.state.global_step,
            "train_wall_seconds": round(wall, 2),
            "train_loss": round(result.training_loss, 5),
            "final_reward_accuracy": last.get("rewards/accuracies"),
            "final_reward_margin": last.get("rewards/margins"),
            "peak_rss_bytes": memory.peak,
            "rss_before_train_bytes": memory.before,
            "trainable_parameters": count_parameters(trainer.model, trainable_only=True),
            "total_parameters": count_parameters(trainer.model, trainable_only=False),
            "weights_bytes": folder_bytes(weights_dir, "*.safetensors"),
        })
        save_config(cfg, run_dir)
        shutil.rmtree(run_dir / "checkpoints", ignore_errors=True)
    return Path(t.output_dir)

