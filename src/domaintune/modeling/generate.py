"""Generating answers from the base model or a run, with the same prompt rendering as training.

`generate_batch` is the one generation path: `domaintune generate` runs it on one prompt, paraphrase
augmentation (prep/paraphrase.py) on many.
"""

from __future__ import annotations

import torch
from transformers import PreTrainedModel, PreTrainedTokenizerBase

from domaintune.core.process import config_threads
from domaintune.core.schema import Config
from domaintune.modeling.render import prompt_ids
from domaintune.modeling.runs import BASE, load_run_model, run_config


@torch.no_grad()
def generate_batch(
    model: PreTrainedModel,
    tokenizer: PreTrainedTokenizerBase,
    prompts: list[list[int]],
    max_new_tokens: int,
    temperature: float = 0.0,
) -> list[tuple[list[int], bool]]:
    """Left-padded batched generation, greedy or (temperature > 0) sampled. Per prompt: the new token
    ids up to the end-of-sequence token, and whether it ended there (False: cut at `max_new_tokens`).

    Left padding keeps every prompt's last token in the last column, where generation continues; the
    attention mask hides the padding (and the model derives positions from it).
    """
    pad = tokenizer.pad_token_id
    width = max(len(p) for p in prompts)
    device = model.device
    input_ids = torch.tensor([[pad] * (width - len(p)) + p for p in prompts], device=device)
    attention = torch.tensor([[0] * (width - len(p)) + [1] * len(p) for p in prompts], device=device)
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    out = model.generate(input_ids=input_ids, attention_mask=attention, max_new_tokens=max_new_tokens,
                         pad_token_id=pad, **sampling)
    stops = model.generation_config.eos_token_id
    stops = set(stops if isinstance(stops, list) else [stops]) | {tokenizer.eos_token_id}
    results = []
    for row in out[:, width:].tolist():
        end = next((i for i, token in enumerate(row) if token in stops), None)
        results.append((row if end is None else row[:end], end is not None))
    return results


@config_threads
def run_generate(
    cfg: Config,
    text: str,
    target: str = BASE,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    raw: bool = False,
) -> str:
    """Answer `text` rendered as the task's user turn (or, with `raw`, `text` as a chat message)."""
    model_cfg = cfg if target == BASE else run_config(target)
    model, tokenizer = load_run_model(target, cfg)
    model.eval()
    if raw:
        rendered = tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )
        ids = tokenizer(rendered, add_special_tokens=False)["input_ids"]
    else:
        ids = prompt_ids(tokenizer, model_cfg.prompt, text, model_cfg.evaluate.max_length)
    [(new, _)] = generate_batch(model, tokenizer, [ids], max_new_tokens, temperature)
    return tokenizer.decode(new, skip_special_tokens=True).strip()
