"""Generating answers from the base model or a run, with the same prompt rendering as training."""

from __future__ import annotations

import torch

from .config import Config
from .render import prompt_ids
from .runs import BASE, load_run_model, run_config
from .runtime import configure_threads


def run_generate(
    cfg: Config,
    text: str,
    target: str = BASE,
    max_new_tokens: int = 64,
    temperature: float = 0.0,
    raw: bool = False,
) -> str:
    """Answer `text` rendered as the task's user turn (or, with `raw`, `text` as a chat message)."""
    configure_threads(cfg.threads)
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
    inputs = torch.tensor([ids])
    sampling = {"do_sample": True, "temperature": temperature} if temperature > 0 else {"do_sample": False}
    with torch.no_grad():
        out = model.generate(
            input_ids=inputs,
            attention_mask=torch.ones_like(inputs),
            max_new_tokens=max_new_tokens,
            pad_token_id=tokenizer.pad_token_id,
            **sampling,
        )
    return tokenizer.decode(out[0, inputs.shape[1]:], skip_special_tokens=True).strip()
