"""`train.method: dpo`: a LoRA adapter trained with TRL's DPOTrainer on reviewers' preferences.

Input: `train.dpo.data`, the preference.jsonl that `domaintune feedback export` writes. Repeated
(prompt, chosen, rejected) triples are read once, and pairs whose prompt is a test row (drawn from the
test split, or repeating a row of `data.output_dir`'s test split exactly or nearly) are dropped and
counted in the run card, so the next evaluation is not trained on. Each pair is
turned into TRL's conversational form (the user turn as the review page showed it, the two answers as
assistant turns), so the chat template renders it exactly as `serve` and `evaluate` do. The reference
model is the base with the adapter switched off, which TRL does itself when handed a `peft_config`.
The run goes through the same pipeline as every other (training/pipeline.py: resume, marked checkpoints,
the non-finite-loss guard, TensorBoard, the loss curve, one run card); only the trainer and its arguments
are DPO's own. The output is an ordinary run folder, so evaluate, compare and serve read it like any LoRA run.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from datasets import Dataset
from transformers import PreTrainedTokenizerBase, TrainerCallback
from trl import DPOConfig, DPOTrainer

from domaintune.core.errors import DomaintuneError, warn
from domaintune.core.schema import Config
from domaintune.data.feedback_leaks import drop_test_leaks
from domaintune.modeling.methods import Method
from domaintune.modeling.methods.lora import lora_config
from domaintune.modeling.models import load_base, weights_fingerprint
from domaintune.modeling.render import truncate_tokens
from domaintune.training.memory_plan import MemoryPlan
from domaintune.training.pipeline import (
    RunStart,
    add_callbacks,
    finish_run,
    run_card,
    shared_arguments,
    start_run,
    train_guarded,
)

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


def dpo_arguments(run: RunStart) -> DPOConfig:
    # No val loss: DPO trains on every pair it has (there is no val split of preferences).
    return DPOConfig(**shared_arguments(run), beta=run.cfg.train.dpo.beta, max_length=run.cfg.train.max_length,
                     eval_strategy="no")


def train_dpo(cfg: Config, method: Method, resume: bool, callbacks: list[TrainerCallback] | None,
              overwrite: bool, plan: MemoryPlan) -> Path:
    """Train a LoRA adapter on `cfg.model` by DPO on `cfg.train.dpo.data`; returns the run folder."""
    t = cfg.train
    if t.early_stopping_patience or t.select_by != "val_loss":
        raise DomaintuneError("train.early_stopping_patience and train.select_by watch val, which DPO does not "
                              "evaluate; unset them")
    if t.balanced_sampler:
        raise DomaintuneError("train.balanced_sampler draws labelled rows; DPO trains on preference pairs: unset it")
    data_path = Path(t.dpo.data)
    rows, dropped = training_pairs(cfg)
    run = start_run(cfg, method, resume, plan)
    model, tokenizer = load_base(cfg.model.name, cfg.model.revision)
    base_weights = weights_fingerprint(model)  # before TRL wraps it in PEFT, as train.py takes LoRA's
    trainer = DPOTrainer(
        model=model,
        args=dpo_arguments(run),
        train_dataset=conversational(rows, tokenizer, cfg.prompt.system, t.max_length),
        processing_class=tokenizer,
        peft_config=lora_config(t),
    )
    add_callbacks(trainer, run, callbacks)
    trained = train_guarded(trainer, run)
    if not run.processes.is_main_process:
        return Path(t.output_dir)
    last = next((r for r in reversed(trainer.state.log_history) if "rewards/accuracies" in r), {})
    card = run_card(run, trainer, trained, task="preference",
                    data_fingerprint=hashlib.sha256(data_path.read_bytes()).hexdigest()[:16],
                    labels=None, train_rows=len(rows), base_weights=base_weights, val_loss=None)
    card.update({
        "preference_data": str(data_path.resolve()),
        "preference_pairs": len(rows),
        **dropped,
        "beta": t.dpo.beta,
        "final_reward_accuracy": last.get("rewards/accuracies"),
        "final_reward_margin": last.get("rewards/margins"),
    })
    return finish_run(run, trainer, trained, trainer.model, tokenizer, card, overwrite)
