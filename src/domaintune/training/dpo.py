"""`train.method: dpo`: a LoRA adapter trained with TRL's DPOTrainer on reviewers' preferences.

Input: `train.dpo.data`, the preference.jsonl that `domaintune feedback export` writes. Repeated
(prompt, chosen, rejected) triples are read once, and pairs whose prompt is a test row (drawn from the
test split, or repeating a row of `data.output_dir`'s test split exactly or nearly) are dropped and
counted in the run card, so the next evaluation is not trained on. Each pair is
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

from domaintune.core.config import Config, TrainConfig, save_config
from domaintune.core.errors import DomaintuneError, warn
from domaintune.core.io import atomic_write_json, atomic_write_text, folder_bytes
from domaintune.core.outputs import staged_output
from domaintune.core.process import config_threads
from domaintune.core.runtime import (
    PeakRss,
    git_commit,
    hardware,
    library_versions,
    resolve_precision,
)
from domaintune.data.feedback_leaks import drop_test_leaks
from domaintune.modeling import methods
from domaintune.modeling.methods.lora import lora_config
from domaintune.modeling.models import count_parameters, load_base
from domaintune.modeling.render import truncate_tokens
from domaintune.training.progress import ProgressCallback

END_OF_TURN_ALLOWANCE = 4  # tokens the chat template closes an answer with (e.g. "<|im_end|>\n")


def read_preferences(path: str | Path) -> tuple[list[dict], int]:
    """Rows with non-empty string `prompt`, `chosen`, `rejected` (and `source_split` when given), each
    triple once, and how many repeats were dropped; pairs with equal answers carry no signal."""
    path = Path(path)
    if not path.is_file():
        raise DomaintuneError(f"train.dpo.data: {path} not found (write it with `domaintune feedback export`)")
    rows: dict[tuple[str, str, str], dict] = {}
    repeats = 0
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
            triple = (row["prompt"], row["chosen"], row["rejected"])
            if row["chosen"] == row["rejected"]:
                continue
            if triple in rows:  # one ballot cast twice must not weigh twice
                repeats += 1
                continue
            rows[triple] = {"prompt": triple[0], "chosen": triple[1], "rejected": triple[2],
                            "source_split": row.get("source_split")}
    if not rows:
        raise DomaintuneError(f"{path}: no preference pairs with two different answers; collect votes first")
    return list(rows.values()), repeats


def training_pairs(cfg: Config) -> tuple[list[dict], dict]:
    """The pairs DPO trains on, and what was dropped on the way (repeats, test leaks)."""
    data_path = Path(cfg.train.dpo.data)
    rows, repeats = read_preferences(data_path)
    rows, leaks = drop_test_leaks(rows, cfg.data.output_dir, cfg.prompt.instruction, cfg.data.dedup)
    leaked = sum(leaks.values())
    if leaked:
        warn(f"train.dpo.data: dropped {leaked} preference pairs whose prompt is a test row of "
             f"{cfg.data.output_dir} (from the test split {leaks['test_split']}, exact {leaks['exact']}, "
             f"near {leaks['near']})")
    if not rows:
        raise DomaintuneError(f"{data_path}: every preference pair's prompt is a test row of {cfg.data.output_dir}; "
                              "collect votes on review or val prompts")
    return rows[: cfg.train.max_train_rows], {"duplicate_pairs_dropped": repeats, "test_leaks_dropped": leaks}


def template_tokens(tokenizer: PreTrainedTokenizerBase, head: list[dict]) -> int:
    """Tokens the chat template puts around an empty user turn, a default system prompt included
    (SmolLM2's adds 30): measured, because TRL drops every pair whose rendered prompt fills max_length."""
    text = tokenizer.apply_chat_template(head + [{"role": "user", "content": ""}], tokenize=False,
                                         add_generation_prompt=True)
    return len(tokenizer(text, add_special_tokens=False)["input_ids"])


def conversational(rows: list[dict], tokenizer: PreTrainedTokenizerBase, system: str | None,
                   max_length: int) -> Dataset:
    """TRL's conversational preference format, with each prompt cut so that both answers still fit."""
    head = [{"role": "system", "content": system}] if system else []
    items = []
    around = template_tokens(tokenizer, head) + END_OF_TURN_ALLOWANCE
    for row in rows:
        longest = max(len(tokenizer(row[k], add_special_tokens=False)["input_ids"]) for k in ("chosen", "rejected"))
        budget = max_length - longest - around
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
        learning_rate=t.learning_rate or methods.get("dpo").default_learning_rate,
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


@config_threads
def run_train_dpo(cfg: Config, overwrite: bool = False) -> Path:
    """Train a LoRA adapter on `cfg.model` by DPO on `cfg.train.dpo.data`; returns the run folder."""
    t = cfg.train
    set_seed(cfg.seed)
    precision = resolve_precision(t.precision)
    data_path = Path(t.dpo.data)
    rows, dropped = training_pairs(cfg)
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
            **dropped,
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

